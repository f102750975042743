//! Channel secrets at rest, sealed with XChaCha20-Poly1305 under the notifier's key (the channel
//! id is the associated data, so a sealed blob cannot be moved to another channel), and the
//! signed tokens of acknowledge links (HMAC-SHA256 under a key derived for that purpose only).

use base64::{
    Engine as _,
    engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD},
};
use chacha20poly1305::{
    XChaCha20Poly1305, XNonce,
    aead::{Aead, KeyInit, Payload},
};
use hmac::{Hmac, Mac};
use rand::RngCore as _;
use sha2::{Digest, Sha256};
use uuid::Uuid;

const FORMAT: &str = "v1";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CryptoError {
    #[error(
        "sealed with key {found}, but this notifier has key {expected}: configure the same notifier.secret_key on every replica"
    )]
    WrongKey { found: String, expected: String },
    #[error("sealed secret is malformed")]
    Malformed,
    #[error("sealed secret does not authenticate (tampered, or sealed for another channel)")]
    Tampered,
}

/// The notifier's secret key.
#[derive(Clone)]
pub struct SecretKey {
    cipher_key: [u8; 32],
    link_key: [u8; 32],
    kid: String,
}

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SecretKey({})", self.kid)
    }
}

fn derive(material: &[u8], purpose: &str) -> [u8; 32] {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(material).expect("hmac takes any key length");
    mac.update(purpose.as_bytes());
    mac.finalize().into_bytes().into()
}

impl SecretKey {
    /// Derives the keys from configured key material (at least 32 characters of randomness).
    pub fn from_material(material: &str) -> Self {
        let root: [u8; 32] = Sha256::digest(material.trim().as_bytes()).into();
        let kid = hex::encode(&Sha256::digest(derive(&root, "release-pilot notifier key id"))[..4]);
        Self {
            cipher_key: derive(&root, "release-pilot notifier secrets"),
            link_key: derive(&root, "release-pilot notifier acknowledge links"),
            kid,
        }
    }

    /// Fresh key material for a key file.
    pub fn generate_material() -> String {
        let mut bytes = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        STANDARD.encode(bytes)
    }

    /// Short public identifier of the key (not secret).
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// `v1.<kid>.<nonce>.<ciphertext>` of `plaintext`, bound to `context`.
    pub fn seal(&self, plaintext: &[u8], context: &[u8]) -> String {
        let cipher = XChaCha20Poly1305::new((&self.cipher_key).into());
        let mut nonce = [0u8; 24];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let sealed = cipher
            .encrypt(&XNonce::from(nonce), Payload { msg: plaintext, aad: context })
            .expect("encryption with a valid key cannot fail");
        format!("{FORMAT}.{}.{}.{}", self.kid, URL_SAFE_NO_PAD.encode(nonce), URL_SAFE_NO_PAD.encode(sealed))
    }

    pub fn open(&self, sealed: &str, context: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let mut parts = sealed.split('.');
        let (Some(FORMAT), Some(kid), Some(nonce), Some(body), None) =
            (parts.next(), parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(CryptoError::Malformed);
        };
        if kid != self.kid {
            return Err(CryptoError::WrongKey { found: kid.to_owned(), expected: self.kid.clone() });
        }
        let nonce = URL_SAFE_NO_PAD.decode(nonce).map_err(|_| CryptoError::Malformed)?;
        let body = URL_SAFE_NO_PAD.decode(body).map_err(|_| CryptoError::Malformed)?;
        let nonce: [u8; 24] = nonce.try_into().map_err(|_| CryptoError::Malformed)?;
        let cipher = XChaCha20Poly1305::new((&self.cipher_key).into());
        cipher
            .decrypt(&XNonce::from(nonce), Payload { msg: &body, aad: context })
            .map_err(|_| CryptoError::Tampered)
    }

    /// The token of an escalation's acknowledge link: the id and a MAC over it.
    pub fn ack_token(&self, escalation_id: Uuid) -> String {
        let mac = self.link_mac(escalation_id);
        format!("{}.{}", URL_SAFE_NO_PAD.encode(escalation_id.as_bytes()), URL_SAFE_NO_PAD.encode(&mac[..20]))
    }

    /// The escalation a token acknowledges, when its MAC is right.
    pub fn verify_ack_token(&self, token: &str) -> Option<Uuid> {
        let (id, mac) = token.trim().split_once('.')?;
        let id = Uuid::from_slice(&URL_SAFE_NO_PAD.decode(id).ok()?).ok()?;
        let given = URL_SAFE_NO_PAD.decode(mac).ok()?;
        let expected = self.link_mac(id);
        let same = given.len() == 20
            && given.iter().zip(&expected[..20]).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0;
        same.then_some(id)
    }

    fn link_mac(&self, escalation_id: Uuid) -> [u8; 32] {
        let mut mac =
            <Hmac<Sha256> as Mac>::new_from_slice(&self.link_key).expect("hmac takes any key length");
        mac.update(b"ack:");
        mac.update(escalation_id.as_bytes());
        mac.finalize().into_bytes().into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_secrets_open_only_with_the_key_and_context() {
        let key = SecretKey::from_material("a key of at least thirty-two characters!!");
        let sealed = key.seal(b"xoxb-secret", b"channel-1");
        assert!(!sealed.contains("xoxb"));
        assert!(sealed.starts_with(&format!("v1.{}.", key.kid())));
        assert_eq!(key.open(&sealed, b"channel-1").unwrap(), b"xoxb-secret");
        assert_eq!(key.open(&sealed, b"channel-2"), Err(CryptoError::Tampered));
        assert_ne!(key.seal(b"xoxb-secret", b"channel-1"), sealed, "nonces are random");
        let other = SecretKey::from_material("another key of at least thirty-two chars");
        assert!(matches!(other.open(&sealed, b"channel-1"), Err(CryptoError::WrongKey { .. })));
        let mut tampered = sealed.clone();
        tampered.pop();
        tampered.push(if sealed.ends_with('A') { 'B' } else { 'A' });
        assert!(key.open(&tampered, b"channel-1").is_err());
        assert_eq!(key.open("garbage", b""), Err(CryptoError::Malformed));
    }

    #[test]
    fn ack_tokens_verify_and_resist_forgery() {
        let key = SecretKey::from_material(&SecretKey::generate_material());
        let id = Uuid::now_v7();
        let token = key.ack_token(id);
        assert_eq!(key.verify_ack_token(&token), Some(id));
        let (_, mac) = token.split_once('.').unwrap();
        let forged = format!("{}.{mac}", URL_SAFE_NO_PAD.encode(Uuid::now_v7().as_bytes()));
        assert_eq!(key.verify_ack_token(&forged), None);
        assert_eq!(key.verify_ack_token("x.y"), None);
        let other = SecretKey::from_material(&SecretKey::generate_material());
        assert_eq!(other.verify_ack_token(&token), None);
    }
}
