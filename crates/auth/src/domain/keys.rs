//! Ed25519 signing keys and the JWKS built from them.

use base64::{
    Engine as _,
    engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD},
};
use ed25519_dalek::{SigningKey, pkcs8::EncodePrivateKey as _};
use jsonwebtoken::jwk::{
    AlgorithmParameters, CommonParameters, EllipticCurve, Jwk, JwkSet, KeyAlgorithm, OctetKeyPairParameters,
    OctetKeyPairType, PublicKeyUse,
};
use sha2::{Digest, Sha256};

pub const ALGORITHM: &str = "EdDSA";

/// A freshly generated key pair, ready to store.
pub struct GeneratedKey {
    pub kid: String,
    /// PKCS#8 DER, base64.
    pub private_key: String,
    /// Raw public key, base64url.
    pub public_key: String,
}

pub fn generate() -> GeneratedKey {
    let signing = SigningKey::generate(&mut rand::rngs::OsRng);
    let public = signing.verifying_key().to_bytes();
    let der = signing.to_pkcs8_der().expect("an ed25519 key always encodes");
    // RFC 7638-style thumbprint prefix: stable, unique, reveals nothing.
    let kid = hex::encode(&Sha256::digest(public)[..12]);
    GeneratedKey {
        kid,
        private_key: STANDARD.encode(der.as_bytes()),
        public_key: URL_SAFE_NO_PAD.encode(public),
    }
}

pub fn encoding_key(private_key_b64: &str) -> Result<jsonwebtoken::EncodingKey, String> {
    let der = STANDARD.decode(private_key_b64).map_err(|e| e.to_string())?;
    Ok(jsonwebtoken::EncodingKey::from_ed_der(&der))
}

pub fn jwk(kid: &str, public_key_b64url: &str) -> Jwk {
    Jwk {
        common: CommonParameters {
            public_key_use: Some(PublicKeyUse::Signature),
            key_algorithm: Some(KeyAlgorithm::EdDSA),
            key_id: Some(kid.to_owned()),
            ..Default::default()
        },
        algorithm: AlgorithmParameters::OctetKeyPair(OctetKeyPairParameters {
            key_type: OctetKeyPairType::OctetKeyPair,
            curve: EllipticCurve::Ed25519,
            x: public_key_b64url.to_owned(),
        }),
    }
}

pub fn jwks<'a>(keys: impl IntoIterator<Item = (&'a str, &'a str)>) -> JwkSet {
    JwkSet { keys: keys.into_iter().map(|(kid, public)| jwk(kid, public)).collect() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_key_signs_tokens_its_jwk_verifies() {
        let key = generate();
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA);
        header.kid = Some(key.kid.clone());
        let claims = serde_json::json!({"sub": "u1", "exp": 4_102_444_800u64});
        let token = jsonwebtoken::encode(&header, &claims, &encoding_key(&key.private_key).unwrap()).unwrap();
        let set = jwks([(key.kid.as_str(), key.public_key.as_str())]);
        let decoding = jsonwebtoken::DecodingKey::from_jwk(set.find(&key.kid).unwrap()).unwrap();
        let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::EdDSA);
        validation.required_spec_claims.clear();
        validation.validate_aud = false;
        let decoded = jsonwebtoken::decode::<serde_json::Value>(&token, &decoding, &validation).unwrap();
        assert_eq!(decoded.claims["sub"], "u1");
        let other = generate();
        let wrong = jsonwebtoken::DecodingKey::from_jwk(&jwk(&other.kid, &other.public_key)).unwrap();
        assert!(jsonwebtoken::decode::<serde_json::Value>(&token, &wrong, &validation).is_err());
    }
}
