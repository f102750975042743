//! Checks that make the gateway accept exactly what the OpenAPI schema allows, where the release
//! service alone would accept a little more (it trims names, reads `vv1.2.3` as `1.2.3`, accepts
//! upper-case digests…) or could not say it as precisely. Each mirrors a `pattern` of the schema.

use crate::problem::Problem;

fn invalid(field: &str, what: &str) -> Problem {
    Problem::validation(format!("{field} {what}"))
}

/// `^[a-z0-9][a-z0-9-]{0,61}[a-z0-9]$`
pub fn slug(field: &str, value: &str) -> Result<(), Problem> {
    let bytes = value.as_bytes();
    let inner = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-';
    let ok = (2..=63).contains(&bytes.len())
        && bytes.iter().all(inner)
        && bytes[0] != b'-'
        && bytes[bytes.len() - 1] != b'-';
    if ok { Ok(()) } else { Err(invalid(field, "must be 2-63 lowercase letters, digits and inner dashes")) }
}

/// At most `max` characters, none of them a control character (`^[^\u0000-\u001f\u007f-\u009f]*$`);
/// with `multiline`, tabs and line breaks are allowed.
pub fn text(field: &str, value: &str, max: usize, multiline: bool) -> Result<(), Problem> {
    if value.chars().count() > max {
        return Err(invalid(field, &format!("must be at most {max} characters")));
    }
    let allowed = |c: char| multiline && matches!(c, '\n' | '\r' | '\t');
    if value.chars().any(|c| c.is_control() && !allowed(c)) {
        return Err(invalid(field, "must not contain control characters"));
    }
    Ok(())
}

/// A quality check name: 1-100 printable ASCII characters, no leading or trailing space
/// (`^[!-~]([ -~]{0,98}[!-~])?$`).
pub fn check_name(field: &str, value: &str) -> Result<(), Problem> {
    let bytes = value.as_bytes();
    let ok = (1..=100).contains(&bytes.len())
        && bytes.iter().all(|b| (b' '..=b'~').contains(b))
        && bytes[0] != b' '
        && bytes[bytes.len() - 1] != b' ';
    if ok {
        Ok(())
    } else {
        Err(invalid(field, "must be 1-100 printable ASCII characters without leading or trailing spaces"))
    }
}

/// `lo..=hi`.
pub fn range(field: &str, value: i64, lo: i64, hi: i64) -> Result<(), Problem> {
    if (lo..=hi).contains(&value) {
        Ok(())
    } else {
        Err(invalid(field, &format!("must be between {lo} and {hi}, not {value}")))
    }
}

fn numeric(text: &str, max_digits: usize) -> bool {
    !text.is_empty()
        && text.len() <= max_digits
        && text.bytes().all(|b| b.is_ascii_digit())
        && (text == "0" || !text.starts_with('0'))
}

fn alphanumeric_or_dash(text: &str) -> bool {
    !text.is_empty() && text.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

/// A semantic-version pre-release identifier: `0|[1-9][0-9]*|[0-9]*[A-Za-z-][0-9A-Za-z-]*`.
fn prerelease_identifier(text: &str) -> bool {
    alphanumeric_or_dash(text) && (!text.bytes().all(|b| b.is_ascii_digit()) || numeric(text, usize::MAX))
}

/// `SEMVER` in `release.rs`: an optional `v`, then a semantic version whose numbers have at most
/// 19 digits.
pub fn semver(field: &str, value: &str) -> Result<(), Problem> {
    let text = value.strip_prefix('v').unwrap_or(value);
    let (text, build) = match text.split_once('+') {
        Some((text, build)) => (text, Some(build)),
        None => (text, None),
    };
    let (core, pre) = match text.split_once('-') {
        Some((core, pre)) => (core, Some(pre)),
        None => (text, None),
    };
    let parts: Vec<&str> = core.split('.').collect();
    let ok = parts.len() == 3
        && parts.iter().all(|p| numeric(p, 19))
        && pre.is_none_or(|pre| pre.split('.').all(prerelease_identifier))
        && build.is_none_or(|build| build.split('.').all(alphanumeric_or_dash));
    if ok {
        Ok(())
    } else {
        Err(invalid(field, &format!("{value:?} is not a semantic version (MAJOR.MINOR.PATCH[-PRE][+BUILD])")))
    }
}

/// A pre-release identifier for computed versions (`rc`, `beta`, `0`).
pub fn pre_release(field: &str, value: &str) -> Result<(), Problem> {
    if prerelease_identifier(value) {
        Ok(())
    } else {
        Err(invalid(field, "must be letters, digits and dashes (a number without leading zeros)"))
    }
}

/// `^(sha256:[0-9a-f]{64})?$`
pub fn digest(field: &str, value: &str) -> Result<(), Problem> {
    let ok = value.is_empty()
        || value.strip_prefix("sha256:").is_some_and(|hex| {
            hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        });
    if ok { Ok(()) } else { Err(invalid(field, "must be sha256:<64 lowercase hex characters>")) }
}

fn ipv4(host: &str) -> bool {
    let parts: Vec<&str> = host.split('.').collect();
    parts.len() == 4 && parts.iter().all(|p| numeric(p, 3) && p.parse::<u16>().is_ok_and(|n| n <= 255))
}

fn label(text: &str) -> bool {
    let bytes = text.as_bytes();
    (1..=63).contains(&bytes.len())
        && bytes.iter().all(|b| b.is_ascii_alphanumeric() || *b == b'-')
        && bytes[0] != b'-'
        && bytes[bytes.len() - 1] != b'-'
}

/// Labels joined by dots, the last one starting with a letter (so it is no IP address).
fn domain(host: &str) -> bool {
    let labels: Vec<&str> = host.split('.').collect();
    labels.iter().all(|l| label(l)) && labels.last().is_some_and(|l| l.as_bytes()[0].is_ascii_alphabetic())
}

/// `WEBHOOK_URL` in `release.rs`: `http(s)://host[:port][/…]`, host a domain name or an IPv4
/// address, the rest printable ASCII.
pub fn webhook_url(field: &str, value: &str) -> Result<(), Problem> {
    let bad =
        || invalid(field, "must be an http(s) URL with a domain name or IPv4 address (printable ASCII)");
    if value.chars().count() > 2000 {
        return Err(invalid(field, "must be at most 2000 characters"));
    }
    let rest = value.strip_prefix("https://").or_else(|| value.strip_prefix("http://")).ok_or_else(bad)?;
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let (host, port) = match authority.split_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (authority, None),
    };
    let ok = (ipv4(host) || domain(host))
        && port.is_none_or(|p| numeric(p, 5) && p.parse::<u32>().is_ok_and(|n| n <= 65535))
        && tail.bytes().all(|b| (b'!'..=b'~').contains(&b));
    if ok { Ok(()) } else { Err(bad()) }
}

/// `^[!-~]{1,200}$`: the `Idempotency-Key` and similar header values.
pub fn token(field: &str, value: &str, max: usize) -> Result<(), Problem> {
    let ok = (1..=max).contains(&value.len()) && value.bytes().all(|b| (b'!'..=b'~').contains(&b));
    if ok { Ok(()) } else { Err(invalid(field, &format!("must be 1-{max} visible ASCII characters"))) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn semantic_versions() {
        for good in [
            "1.2.3",
            "v0.1.0",
            "1.0.0-rc.1",
            "1.0.0-0.3.7",
            "1.0.0-x-y.7z.92",
            "1.0.0+20130313144700",
            "1.0.0-beta+exp.sha.5114f85",
        ] {
            assert!(semver("v", good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "1",
            "1.2",
            "01.2.3",
            "1.2.3-01",
            "1.2.3-",
            "1.2.3+",
            "1.2.3-a..b",
            "vv1.2.3",
            " 1.2.3",
            "1.2.3 ",
            "1.2.3-ä",
            "12345678901234567890.0.0",
        ] {
            assert!(semver("v", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn webhook_urls() {
        for good in [
            "http://127.0.0.1:8080/deploy",
            "https://deployer.example.com",
            "https://a/x?y=1#z",
            "http://localhost:0",
            "http://a-1.b2.c",
        ] {
            assert!(webhook_url("url", good).is_ok(), "{good}");
        }
        for bad in [
            "ftp://x",
            "http://",
            "http://1.2.3",
            "http://256.1.1.1",
            "http://a.1",
            "http://-a.b",
            "http://a:65536",
            "http://a:080",
            "http://a/ b",
            "HTTP://a",
            "http://user@a",
        ] {
            assert!(webhook_url("url", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn names_and_digests() {
        assert!(slug("n", "prod-eu").is_ok());
        for bad in ["p", "-p", "p-", "Prod", " prod", "prod\n"] {
            assert!(slug("n", bad).is_err(), "{bad}");
        }
        assert!(check_name("c", "coverage").is_ok() && check_name("c", " coverage").is_err());
        assert!(check_name("c", &"x".repeat(101)).is_err() && check_name("c", "é").is_err());
        assert!(digest("d", "").is_ok() && digest("d", &format!("sha256:{}", "a".repeat(64))).is_ok());
        assert!(digest("d", &format!("sha256:{}", "A".repeat(64))).is_err());
        assert!(
            pre_release("p", "rc").is_ok()
                && pre_release("p", "01").is_err()
                && pre_release("p", "a.b").is_err()
        );
    }
}
