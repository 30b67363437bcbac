//! The two-tier envelope: local KEKs, wrapped once by the root key, seal kube-apiserver's seeds.
//!
//! Encrypt uses the current local KEK ([`kek::KekManager`]) and waits for no root key call while
//! that KEK may still be used; a new KEK is proven ([`proof`]) before its first use. Decrypt
//! finds the local KEK by its wrapped form in a bounded cache ([`cache::UnwrapCache`]);
//! concurrent misses for one wrapped KEK share one root key unwrap. Opened seeds are zeroized
//! in every buffer the plugin owns.

mod cache;
pub mod format;
mod kek;
mod proof;

pub use cache::UnwrapCache;
pub use kek::{KekManager, KekPolicy};

use crate::health::Health;
use crate::root_key::{KeyId, RootKey, RootKeyError};
use format::FormatError;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use zeroize::Zeroizing;

/// Why Encrypt or Decrypt failed. Logged precisely; mapped to an opaque status on the wire.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EnvelopeError {
    /// The request breaks a documented limit (the message says which).
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// The envelope is malformed or failed authentication.
    #[error(transparent)]
    Format(#[from] FormatError),
    /// The root key refused or failed the operation.
    #[error(transparent)]
    RootKey(#[from] RootKeyError),
    /// The root key did not answer within the backend deadline.
    #[error("root key backend did not answer within {0:?}")]
    Timeout(Duration),
}

/// A sealed seed as returned to kube-apiserver.
#[derive(Debug)]
pub struct Sealed {
    /// Nonce and AES-GCM ciphertext (at most 1024 bytes).
    pub ciphertext: Vec<u8>,
    /// The root key id that wrapped the local KEK.
    pub key_id: KeyId,
    /// The wrapped KEK and format version.
    pub annotations: HashMap<String, Vec<u8>>,
}

/// Encrypts and decrypts seeds with local KEKs under a root key.
pub struct Envelope {
    root: Arc<dyn RootKey>,
    keks: KekManager,
    unwraps: Arc<UnwrapCache>,
    health: Arc<Health>,
}

impl Envelope {
    /// An envelope over `root` with the given KEK policy and unwrap cache; a new KEK that fails
    /// its proof turns `health` unhealthy until one passes.
    pub fn new(
        root: Arc<dyn RootKey>,
        policy: KekPolicy,
        unwraps: UnwrapCache,
        health: Arc<Health>,
    ) -> Self {
        let unwraps = Arc::new(unwraps);
        let keks = KekManager::new(root.clone(), policy, unwraps.clone(), health.clone());
        Self {
            root,
            keks,
            unwraps,
            health,
        }
    }

    /// The root key backend.
    pub fn root(&self) -> &Arc<dyn RootKey> {
        &self.root
    }

    /// The local KEK manager (for metrics and tests).
    pub fn keks(&self) -> &KekManager {
        &self.keks
    }

    /// What Status reports: the root key's health with the outage policy applied to what the
    /// current local KEK can still seal (see [`Health::report`]).
    pub fn status(&self) -> crate::health::HealthState {
        self.health.report(self.keks.seal_until())
    }

    /// The unwrap cache (for metrics, the health probe and tests).
    pub fn unwraps(&self) -> &Arc<UnwrapCache> {
        &self.unwraps
    }

    /// Seals a seed.
    pub async fn encrypt(&self, plaintext: &[u8]) -> Result<Sealed, EnvelopeError> {
        if plaintext.is_empty() || plaintext.len() > format::MAX_PLAINTEXT_LEN {
            return Err(EnvelopeError::InvalidRequest(format!(
                "plaintext must be 1 to {} bytes, got {}",
                format::MAX_PLAINTEXT_LEN,
                plaintext.len()
            )));
        }
        let kek = self.keks.for_encrypt().await?;
        let mut nonce = [0u8; format::NONCE_LEN];
        getrandom::fill(&mut nonce)
            .map_err(|e| RootKeyError::Backend(format!("no randomness: {e}")))?;
        let ciphertext = format::seal(
            &kek.cipher,
            &nonce,
            kek.key_id.as_str(),
            &kek.wrapped,
            plaintext,
        );
        Ok(Sealed {
            ciphertext,
            key_id: kek.key_id.clone(),
            annotations: format::build_annotations(&kek.wrapped),
        })
    }

    /// Opens a seed sealed by [`Envelope::encrypt`] (on this or any node sharing the root key).
    /// The seed is zeroized when the returned buffer is dropped.
    pub async fn decrypt(
        &self,
        ciphertext: &[u8],
        key_id: &str,
        annotations: &HashMap<String, Vec<u8>>,
    ) -> Result<Zeroizing<Vec<u8>>, EnvelopeError> {
        let key_id = KeyId::new(key_id).ok_or_else(|| {
            EnvelopeError::InvalidRequest(format!(
                "key_id must be 1 to 1024 bytes, got {}",
                key_id.len()
            ))
        })?;
        let annotations_len: usize = annotations.iter().map(|(k, v)| k.len() + v.len()).sum();
        if annotations_len > format::MAX_ANNOTATIONS_LEN {
            return Err(EnvelopeError::InvalidRequest(format!(
                "annotations total {annotations_len} bytes, more than {}",
                format::MAX_ANNOTATIONS_LEN
            )));
        }
        if self.health.is_revoked(&key_id) {
            return Err(revoked(&key_id).into());
        }
        let parsed = format::parse_annotations(annotations)?;
        if ciphertext.len() < format::NONCE_LEN + format::TAG_LEN + 1
            || ciphertext.len() > format::MAX_CIPHERTEXT_LEN
        {
            return Err(FormatError::CiphertextLength(ciphertext.len()).into());
        }
        let kek = self
            .unwraps
            .get_or_unwrap(&self.root, &key_id, parsed.wrapped_kek)
            .await?;
        Ok(format::open(
            &kek,
            key_id.as_str(),
            parsed.wrapped_kek,
            ciphertext,
        )?)
    }
}

/// The error of a call under a root key the backend reported revoked.
fn revoked(key_id: &KeyId) -> RootKeyError {
    RootKeyError::Denied(format!(
        "root key {key_id} is revoked (disabled, deleted or access denied)"
    ))
}

/// Rebuilds an owned error for a caller that shared someone else's failed root key call.
fn shared_error(error: &EnvelopeError) -> EnvelopeError {
    match error {
        EnvelopeError::Timeout(after) => EnvelopeError::Timeout(*after),
        EnvelopeError::RootKey(RootKeyError::UnknownKey(id)) => {
            RootKeyError::UnknownKey(id.clone()).into()
        }
        EnvelopeError::RootKey(RootKeyError::Integrity(id)) => {
            RootKeyError::Integrity(id.clone()).into()
        }
        EnvelopeError::RootKey(RootKeyError::Unavailable(why)) => {
            RootKeyError::Unavailable(why.clone()).into()
        }
        EnvelopeError::RootKey(RootKeyError::Denied(why)) => {
            RootKeyError::Denied(why.clone()).into()
        }
        EnvelopeError::RootKey(RootKeyError::Backend(why)) => {
            RootKeyError::Backend(why.clone()).into()
        }
        other => RootKeyError::Backend(other.to_string()).into(),
    }
}

#[cfg(test)]
mod tests;
