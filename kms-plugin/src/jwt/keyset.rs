//! The keys FetchKeys publishes, reloaded from their files when they change.

use super::key::{SigningKey, SigningKeyError, kid_for};
use aws_lc_rs::encoding::AsDer;
use kms_config::VerifyOnlyKey;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

/// One public key as published.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublishedKey {
    /// kube-apiserver's key id for this key.
    pub kid: String,
    /// DER SubjectPublicKeyInfo.
    pub der: Vec<u8>,
    /// Whether the key is hidden from OIDC discovery (legacy keys).
    pub exclude_from_oidc_discovery: bool,
}

/// The signing key and every key published beside it.
pub struct KeySet {
    /// The current signer.
    pub signer: Arc<dyn SigningKey>,
    /// The signer's key id.
    pub signer_kid: String,
    /// Every published key, the signer first, without duplicates.
    pub keys: Vec<PublishedKey>,
    /// When this set was assembled (FetchKeys' `data_timestamp`).
    pub loaded_at: SystemTime,
}

/// Reads every public key in a PEM file: `PUBLIC KEY` (SPKI), `RSA PUBLIC KEY` (PKCS#1) or
/// certificates' keys are not accepted here.
pub fn read_public_keys(path: &Path) -> Result<Vec<Vec<u8>>, SigningKeyError> {
    let text = std::fs::read(path)
        .map_err(|e| SigningKeyError::Load(format!("{}: {e}", path.display())))?;
    let blocks = pem::parse_many(&text)
        .map_err(|e| SigningKeyError::Load(format!("{}: not PEM: {e}", path.display())))?;
    let mut keys = Vec::new();
    for block in blocks {
        match block.tag() {
            "PUBLIC KEY" => {
                check_public_key(block.contents()).map_err(|reason| {
                    SigningKeyError::Load(format!("{}: PUBLIC KEY {reason}", path.display()))
                })?;
                keys.push(block.contents().to_vec());
            }
            "RSA PUBLIC KEY" => {
                let key = aws_lc_rs::rsa::PublicEncryptingKey::from_der(block.contents()).map_err(
                    |_| SigningKeyError::Load(format!("{}: bad RSA PUBLIC KEY", path.display())),
                )?;
                let der = key.as_der().map_err(|_| {
                    SigningKeyError::Load(format!("{}: cannot re-encode RSA key", path.display()))
                })?;
                check_public_key(der.as_ref()).map_err(|reason| {
                    SigningKeyError::Load(format!("{}: RSA PUBLIC KEY {reason}", path.display()))
                })?;
                keys.push(der.as_ref().to_vec());
            }
            other => {
                return Err(SigningKeyError::Load(format!(
                    "{}: unexpected PEM block {other:?}",
                    path.display()
                )));
            }
        }
    }
    if keys.is_empty() {
        return Err(SigningKeyError::Load(format!(
            "{}: no public key",
            path.display()
        )));
    }
    Ok(keys)
}

/// Smallest RSA modulus accepted for a published key, in bytes (2048 bits).
const MIN_RSA_BYTES: usize = 256;

/// Checks that `spki` is a DER `SubjectPublicKeyInfo` of a key kube-apiserver can verify
/// tokens with: RSA of at least 2048 bits, or ECDSA on P-256 or P-384.
fn check_public_key(spki: &[u8]) -> Result<(), &'static str> {
    use aws_lc_rs::signature::{self, ParsedPublicKey};
    // aws-lc refuses RSA moduli below 2048 bits itself; the size check keeps that explicit.
    if let Ok(rsa) = aws_lc_rs::rsa::PublicEncryptingKey::from_der(spki)
        && rsa.key_size_bytes() >= MIN_RSA_BYTES
    {
        return Ok(());
    }
    for curve in [
        &signature::ECDSA_P256_SHA256_ASN1,
        &signature::ECDSA_P384_SHA384_ASN1,
    ] {
        if ParsedPublicKey::new(curve, spki).is_ok() && spki.first() == Some(&0x30) {
            return Ok(());
        }
    }
    Err(
        "is neither an RSA key of at least 2048 bits nor a P-256 or P-384 key (SubjectPublicKeyInfo)",
    )
}

impl KeySet {
    /// Assembles the set from the signer and the verify-only key files.
    pub fn assemble(
        signer: Arc<dyn SigningKey>,
        verify_only: &[VerifyOnlyKey],
    ) -> Result<Self, SigningKeyError> {
        let signer_kid = kid_for(signer.public_key_der());
        let mut keys = vec![PublishedKey {
            kid: signer_kid.clone(),
            der: signer.public_key_der().to_vec(),
            exclude_from_oidc_discovery: false,
        }];
        for entry in verify_only {
            for der in read_public_keys(entry.path())? {
                let kid = kid_for(&der);
                if keys.iter().all(|k| k.kid != kid) {
                    keys.push(PublishedKey {
                        kid,
                        der,
                        exclude_from_oidc_discovery: entry.excluded_from_discovery(),
                    });
                }
            }
        }
        Ok(Self {
            signer,
            signer_kid,
            keys,
            loaded_at: SystemTime::now(),
        })
    }
}

/// Files whose changes trigger a reload, with their last modification times.
pub fn watched_state(files: &[PathBuf]) -> Vec<Option<SystemTime>> {
    files
        .iter()
        .map(|f| std::fs::metadata(f).and_then(|m| m.modified()).ok())
        .collect()
}
