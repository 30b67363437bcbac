//! The signing key abstraction and the key id kube-apiserver computes for a public key.

use async_trait::async_trait;
use base64::Engine;
use sha2::{Digest, Sha256};

/// JWS algorithms kube-apiserver accepts from an external signer that this plugin produces.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JwsAlgorithm {
    /// RSASSA-PKCS1-v1_5 with SHA-256.
    Rs256,
    /// ECDSA P-256 with SHA-256, signature `r || s` (64 bytes).
    Es256,
    /// ECDSA P-384 with SHA-384, signature `r || s` (96 bytes).
    Es384,
}

impl JwsAlgorithm {
    /// The `alg` header value.
    pub fn name(self) -> &'static str {
        match self {
            Self::Rs256 => "RS256",
            Self::Es256 => "ES256",
            Self::Es384 => "ES384",
        }
    }
}

/// Why signing failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SigningKeyError {
    /// The key could not be loaded or is of an unsupported kind.
    #[error("signing key: {0}")]
    Load(String),
    /// The key store is unreachable or timed out.
    #[error("signing key unavailable: {0}")]
    Unavailable(String),
    /// The key store refused or failed the signature.
    #[error("signing failed: {0}")]
    Sign(String),
}

/// A private key that signs JWTs without revealing itself.
#[async_trait]
pub trait SigningKey: Send + Sync + 'static {
    /// The JWS algorithm of this key.
    fn algorithm(&self) -> JwsAlgorithm;

    /// The public key as DER `SubjectPublicKeyInfo`.
    fn public_key_der(&self) -> &[u8];

    /// Signs `message` (the JWS signing input), returning the JWS signature bytes.
    async fn sign(&self, message: &[u8]) -> Result<Vec<u8>, SigningKeyError>;
}

/// kube-apiserver's key id: unpadded base64url of the SHA-256 of the DER public key.
pub fn kid_for(public_key_der: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(public_key_der))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kid_is_unpadded_base64url_of_sha256() {
        // SHA-256("abc") = ba7816bf 8f01cfea 414140de 5dae2223 b00361a3 96177a9c b410ff61 f20015ad
        assert_eq!(
            kid_for(b"abc"),
            "ungWv48Bz-pBQUDeXa4iI7ADYaOWF3qctBD_YfIAFa0"
        );
    }
}
