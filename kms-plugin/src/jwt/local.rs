//! A signing key read from a PEM file, as kubeadm writes `sa.key`.

use super::key::{JwsAlgorithm, SigningKey, SigningKeyError};
use async_trait::async_trait;
use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{self, EcdsaKeyPair, KeyPair, RsaKeyPair};
use std::path::Path;
use zeroize::Zeroizing;

/// Largest signing key file read: an RSA-4096 key in PEM is about 3.3 KB.
pub const MAX_KEY_FILE_LEN: usize = 64 * 1024;

enum Inner {
    Rsa(RsaKeyPair),
    Ec(EcdsaKeyPair),
}

/// A private key loaded from PEM: RSA (PKCS#1 or PKCS#8) or ECDSA P-256/P-384 (SEC1 or PKCS#8).
pub struct FileSigningKey {
    inner: Inner,
    algorithm: JwsAlgorithm,
    public_der: Vec<u8>,
    rng: SystemRandom,
}

impl FileSigningKey {
    /// Loads the first private key in `path`, a file only its owner may read (as kubeadm
    /// writes `sa.key`), of at most [`MAX_KEY_FILE_LEN`] bytes.
    pub fn load(path: &Path) -> Result<Self, SigningKeyError> {
        let text = keystore::private_file::read_private(path, "signing key file", MAX_KEY_FILE_LEN)
            .map_err(SigningKeyError::Load)?;
        Self::from_pem(&text).map_err(|e| SigningKeyError::Load(format!("{}: {e}", path.display())))
    }

    /// A loaded key pair signing with `algorithm`, with the DER of its public key.
    fn from_pair(inner: Inner, algorithm: JwsAlgorithm) -> Result<Self, String> {
        let public = match &inner {
            Inner::Rsa(pair) => pair.public_key().as_der(),
            Inner::Ec(pair) => pair.public_key().as_der(),
        };
        let public_der = public
            .map_err(|_| "cannot encode the public key")?
            .as_ref()
            .to_vec();
        Ok(Self {
            inner,
            algorithm,
            public_der,
            rng: SystemRandom::new(),
        })
    }

    /// Parses a PEM private key.
    pub fn from_pem(text: &[u8]) -> Result<Self, String> {
        // Every decoded block's bytes are zeroized once parsed, the key's and any other's.
        let blocks: Vec<(String, Zeroizing<Vec<u8>>)> = pem::parse_many(text)
            .map_err(|e| format!("not PEM: {e}"))?
            .into_iter()
            .map(|block| {
                (
                    block.tag().to_owned(),
                    Zeroizing::new(block.into_contents()),
                )
            })
            .collect();
        let (tag, der) = blocks
            .iter()
            .find(|(tag, _)| tag.ends_with("PRIVATE KEY"))
            .ok_or("no private key block")?;
        let rsa = || match tag.as_str() {
            "RSA PRIVATE KEY" => RsaKeyPair::from_der(der).ok(),
            "PRIVATE KEY" => RsaKeyPair::from_pkcs8(der).ok(),
            _ => None,
        };
        if let Some(pair) = rsa() {
            if pair.public_modulus_len() < 256 {
                return Err("RSA keys below 2048 bits are refused".into());
            }
            return Self::from_pair(Inner::Rsa(pair), JwsAlgorithm::Rs256);
        }
        for (alg, jws) in [
            (
                &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
                JwsAlgorithm::Es256,
            ),
            (
                &signature::ECDSA_P384_SHA384_FIXED_SIGNING,
                JwsAlgorithm::Es384,
            ),
        ] {
            if let Ok(pair) = EcdsaKeyPair::from_private_key_der(alg, der) {
                return Self::from_pair(Inner::Ec(pair), jws);
            }
        }
        Err(format!(
            "unsupported private key ({tag}): expected RSA ≥ 2048 bits or ECDSA P-256/P-384"
        ))
    }
}

#[async_trait]
impl SigningKey for FileSigningKey {
    fn algorithm(&self) -> JwsAlgorithm {
        self.algorithm
    }

    fn public_key_der(&self) -> &[u8] {
        &self.public_der
    }

    async fn sign(&self, message: &[u8]) -> Result<Vec<u8>, SigningKeyError> {
        match &self.inner {
            Inner::Rsa(pair) => {
                let mut out = vec![0u8; pair.public_modulus_len()];
                pair.sign(&signature::RSA_PKCS1_SHA256, &self.rng, message, &mut out)
                    .map_err(|_| SigningKeyError::Sign("RSA signing failed".into()))?;
                Ok(out)
            }
            Inner::Ec(pair) => pair
                .sign(&self.rng, message)
                .map(|s| s.as_ref().to_vec())
                .map_err(|_| SigningKeyError::Sign("ECDSA signing failed".into())),
        }
    }
}
