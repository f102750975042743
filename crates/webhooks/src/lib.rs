//! [Standard Webhooks](https://www.standardwebhooks.com/) signatures: `webhook-id`,
//! `webhook-timestamp` and `webhook-signature: v1,<base64 HMAC-SHA256(id.timestamp.body)>`, keyed
//! with a `whsec_<base64>` secret. Several signatures (space-separated) allow key rotation.

use base64::{Engine as _, engine::general_purpose::STANDARD};
use hmac::{Hmac, Mac};
use rand::RngCore as _;
use sha2::Sha256;

pub const HEADER_ID: &str = "webhook-id";
pub const HEADER_TIMESTAMP: &str = "webhook-timestamp";
pub const HEADER_SIGNATURE: &str = "webhook-signature";
const SECRET_PREFIX: &str = "whsec_";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("webhook secret must be whsec_ followed by base64")]
    BadSecret,
    #[error("no signature matches")]
    Mismatch,
    #[error("timestamp outside the tolerance")]
    Stale,
}

/// A new random secret (192 bits).
pub fn generate_secret() -> String {
    let mut bytes = [0u8; 24];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    format!("{SECRET_PREFIX}{}", STANDARD.encode(bytes))
}

fn key(secret: &str) -> Result<Vec<u8>, SignatureError> {
    let encoded = secret.strip_prefix(SECRET_PREFIX).unwrap_or(secret);
    STANDARD
        .decode(encoded)
        .map_err(|_| SignatureError::BadSecret)
        .and_then(|k| if k.is_empty() { Err(SignatureError::BadSecret) } else { Ok(k) })
}

/// Checks that a secret can sign.
pub fn validate_secret(secret: &str) -> Result<(), SignatureError> {
    key(secret).map(|_| ())
}

/// The `webhook-signature` value (`v1,<base64>`) for one secret.
pub fn sign(secret: &str, id: &str, timestamp: i64, body: &[u8]) -> Result<String, SignatureError> {
    let mut mac = Hmac::<Sha256>::new_from_slice(&key(secret)?).map_err(|_| SignatureError::BadSecret)?;
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    Ok(format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes())))
}

/// Signs with every secret (newest first during a rotation): receivers accept any match.
pub fn sign_all(secrets: &[&str], id: &str, timestamp: i64, body: &[u8]) -> Result<String, SignatureError> {
    let signatures: Result<Vec<String>, _> = secrets.iter().map(|s| sign(s, id, timestamp, body)).collect();
    Ok(signatures?.join(" "))
}

/// Verifies a `webhook-signature` header against `secret`, with a timestamp tolerance.
pub fn verify(
    secret: &str,
    id: &str,
    timestamp: i64,
    body: &[u8],
    header: &str,
    now: i64,
    tolerance_secs: i64,
) -> Result<(), SignatureError> {
    if (now - timestamp).abs() > tolerance_secs {
        return Err(SignatureError::Stale);
    }
    let expected = sign(secret, id, timestamp, body)?;
    let expected = expected.as_bytes();
    let matches = header.split(' ').any(|candidate| {
        // Constant-time comparison.
        candidate.len() == expected.len()
            && candidate.bytes().zip(expected.iter()).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
    });
    if matches { Ok(()) } else { Err(SignatureError::Mismatch) }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The test vector published with the Standard Webhooks specification.
    #[test]
    fn matches_the_specification_test_vector() {
        let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let id = "msg_p5jXN8AQM9LWM0D4loKWxJek";
        let timestamp = 1614265330;
        let body = br#"{"test": 2432232314}"#;
        assert_eq!(
            sign(secret, id, timestamp, body).unwrap(),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
        assert!(
            verify(
                secret,
                id,
                timestamp,
                body,
                "v1,bogus v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
                timestamp,
                300
            )
            .is_ok()
        );
        assert_eq!(
            verify(
                secret,
                id,
                timestamp,
                b"{}",
                "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
                timestamp,
                300
            ),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(verify(secret, id, timestamp, body, "", timestamp + 301, 300), Err(SignatureError::Stale));
    }

    #[test]
    fn rotation_signs_with_every_secret() {
        let (old, new) = (generate_secret(), generate_secret());
        let header = sign_all(&[&new, &old], "id", 1, b"x").unwrap();
        assert!(verify(&old, "id", 1, b"x", &header, 1, 5).is_ok());
        assert!(verify(&new, "id", 1, b"x", &header, 1, 5).is_ok());
        assert_eq!(validate_secret("whsec_!!"), Err(SignatureError::BadSecret));
    }
}
