//! Random secrets (refresh tokens, API tokens, generated passwords) and their stored digests.

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use rand::RngCore as _;
use sha2::{Digest, Sha256};

/// 256 random bits, base64url.
pub fn random_secret() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// An API token: `rp_` + 256 random bits. The prefix lets every service tell it from a JWT, and
/// lets secret scanners recognise a leaked token.
pub fn api_token() -> String {
    format!("{}{}", rp_identity::API_TOKEN_PREFIX, random_secret())
}

/// How a token is stored: SHA-256, hex. Tokens carry 256 bits of entropy, so a fast hash is
/// enough (no dictionary to attack), and lookups stay an indexed equality.
pub fn digest(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// A generated password for the bootstrap admin: 24 characters from an unambiguous alphabet.
pub fn generate_password() -> String {
    const ALPHABET: &[u8] = b"abcdefghijkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    let mut bytes = [0u8; 24];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    bytes.iter().map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_unique_and_digests_stable() {
        assert_ne!(random_secret(), random_secret());
        let token = api_token();
        assert!(token.starts_with("rp_") && token.len() == 46, "{token}");
        assert_eq!(digest("abc"), digest("abc"));
        assert_eq!(digest("abc").len(), 64);
        assert_eq!(generate_password().len(), 24);
    }
}
