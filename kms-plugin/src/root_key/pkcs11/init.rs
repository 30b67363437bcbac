//! First-time setup: create the first root key version in an initialised token.

use super::keys;
use crate::root_key::{KeyId, RootKeyError};
use cryptoki::mechanism::MechanismType;
use keystore::KeyStoreError;
use keystore::pkcs11::{Token, blocking};
use kms_config::Pkcs11Backend;

/// What [`init_root_key`] found or did.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum InitOutcome {
    /// The token held no version of `key_label`; this one was created and is primary.
    Created(KeyId),
    /// The token already held versions; nothing was changed. This is the primary one.
    Existing(KeyId),
}

impl InitOutcome {
    /// The primary key id after the call.
    pub fn key_id(&self) -> &KeyId {
        match self {
            Self::Created(id) | Self::Existing(id) => id,
        }
    }
}

/// Creates the first root key version (AES-256, sensitive, non-extractable) in the token named
/// by `config` unless one already exists. Idempotent; the token itself must already be
/// initialised (`softhsm2-util --init-token ...` or the HSM vendor's tool).
pub async fn init_root_key(config: &Pkcs11Backend) -> Result<InitOutcome, RootKeyError> {
    let config = config.clone();
    blocking(move || {
        let token = Token::open_for(
            &config,
            &[
                (MechanismType::AES_KEY_GEN, "CKM_AES_KEY_GEN"),
                (MechanismType::AES_GCM, "CKM_AES_GCM"),
            ],
        )?;
        let session = token.take()?;
        let existing = keys::list(&session, &config.key_label)?;
        if let Some(primary) = existing.primary() {
            return Ok(InitOutcome::Existing(primary.key_id.clone()));
        }
        keys::generate(&session, &config.key_label, &existing)?;
        let created = keys::list(&session, &config.key_label)?;
        let primary = created
            .primary()
            .ok_or_else(|| keys::no_root_key(&config.key_label))?;
        tracing::info!(key_id = %primary.key_id, "created the first PKCS#11 root key");
        Ok::<_, KeyStoreError>(InitOutcome::Created(primary.key_id.clone()))
    })
    .await
    .map_err(RootKeyError::from)
}
