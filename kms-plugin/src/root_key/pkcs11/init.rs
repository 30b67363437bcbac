//! First-time setup: create the first root key version in an initialised token.

use super::{keys, record};
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
    /// The token already held versions and a primary record; nothing was changed. This is the
    /// primary one.
    Existing(KeyId),
    /// The token held versions but no primary record (an earlier release set it up): the
    /// highest usable version, this one, is now recorded as primary.
    Recorded(KeyId),
}

impl InitOutcome {
    /// The primary key id after the call.
    pub fn key_id(&self) -> &KeyId {
        match self {
            Self::Created(id) | Self::Existing(id) | Self::Recorded(id) => id,
        }
    }
}

/// Creates the first root key version (AES-256, sensitive, non-extractable) in the token named
/// by `config` and records it as primary, unless one already exists (a token an earlier release
/// set up gets its highest version recorded). Idempotent; the token itself must already be
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
        let label = &config.key_label;
        let existing = keys::list(&session, label)?;
        match (existing.primary(), &existing.recorded) {
            (Some(primary), Some(_)) => return Ok(InitOutcome::Existing(primary.key_id.clone())),
            (Some(primary), None) => {
                record::write(&session, label, &primary.id)?;
                tracing::info!(key_id = %primary.key_id, "recorded the highest PKCS#11 root key version as primary");
                return Ok(InitOutcome::Recorded(primary.key_id.clone()));
            }
            // Never a new key where the record says one should exist.
            (None, Some(id)) => return Err(keys::recorded_missing(label, id)),
            (None, None) => {}
        }
        let id = keys::generate(&session, label, &existing)?;
        record::write(&session, label, &id)?;
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
