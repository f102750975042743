//! Values that must never reach logs or `config dump`.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

const REDACTED: &str = "[redacted]";

/// A secret string: `Debug` and `Serialize` print `[redacted]`; read it with [`Secret::expose`].
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(REDACTED)
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(Secret)
    }
}

/// A URL that may carry a password (`postgres://user:pw@host/db`): shown with the password masked.
#[derive(Clone, PartialEq, Eq)]
pub struct UrlWithCredentials(String);

impl UrlWithCredentials {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The URL with any password replaced by `***`.
    pub fn masked(&self) -> String {
        let Some((scheme, rest)) = self.0.split_once("://") else {
            return self.0.clone();
        };
        // Userinfo ends at the last '@' before the first '/'.
        let authority_end = rest.find('/').unwrap_or(rest.len());
        let authority = &rest[..authority_end];
        match authority.rfind('@') {
            Some(at) => {
                let userinfo = &authority[..at];
                let user = userinfo.split_once(':').map_or(userinfo, |(user, _)| user);
                let masked_info =
                    if userinfo.contains(':') { format!("{user}:***") } else { user.to_owned() };
                format!("{scheme}://{masked_info}{}", &rest[at..])
            }
            None => self.0.clone(),
        }
    }
}

impl fmt::Debug for UrlWithCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.masked())
    }
}

impl fmt::Display for UrlWithCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.masked())
    }
}

impl Serialize for UrlWithCredentials {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.masked())
    }
}

impl<'de> Deserialize<'de> for UrlWithCredentials {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(UrlWithCredentials)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_only_the_password() {
        let cases = [
            ("postgres://rp:pw@db:5432/rp", "postgres://rp:***@db:5432/rp"),
            ("postgres://rp@db/rp", "postgres://rp@db/rp"),
            ("nats://127.0.0.1:4222", "nats://127.0.0.1:4222"),
            ("postgres://u:p@ss@host/db?x=@", "postgres://u:***@host/db?x=@"),
        ];
        for (input, expected) in cases {
            assert_eq!(UrlWithCredentials::new(input).masked(), expected, "{input}");
        }
    }

    #[test]
    fn secret_never_prints() {
        let secret = Secret::new("hunter2hunter2");
        assert_eq!(format!("{secret:?}"), "[redacted]");
        assert_eq!(serde_json_like(&secret), "\"[redacted]\"");
    }

    fn serde_json_like(secret: &Secret) -> String {
        toml::Value::try_from(secret).map(|v| v.to_string()).unwrap()
    }
}
