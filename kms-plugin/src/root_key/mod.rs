//! Root keys (KEKs) that never leave their backend.
//!
//! [`RootKey`] is the one trait every backend implements; [`build`] is the one place that turns
//! configuration into a backend. The envelope only ever sees `Arc<dyn RootKey>`.

#[cfg(feature = "aws")]
pub mod aws;
mod error;
mod factory;
#[cfg(test)]
pub mod fake;
pub mod instrumented;
mod key_id;
pub mod local;
mod miss_throttle;
#[cfg(feature = "pkcs11")]
pub mod pkcs11;

pub use error::RootKeyError;
pub use factory::build;
pub use key_id::KeyId;

use crate::secret::AesKey;
use async_trait::async_trait;
use std::time::Duration;

/// A local KEK wrapped by a root key: opaque bytes plus the key id of the root key that wrapped it.
#[derive(Clone, Debug)]
pub struct WrappedKey {
    /// The root key that wrapped `ciphertext`; reported to kube-apiserver as `key_id`.
    pub key_id: KeyId,
    /// The backend's wrapped form of the local KEK.
    pub ciphertext: Vec<u8>,
}

/// A root key backend: wraps and unwraps local KEKs without ever exposing the root key.
#[async_trait]
pub trait RootKey: Send + Sync + 'static {
    /// Short name for logs and metrics: `local`, `pkcs11` or `aws`.
    fn kind(&self) -> &'static str;

    /// The key id new local KEKs are wrapped under. Answers from memory, never a remote call.
    fn primary_key_id(&self) -> KeyId;

    /// Wraps the local KEK `key` under the primary root key.
    async fn wrap_kek(&self, key: &AesKey) -> Result<WrappedKey, RootKeyError>;

    /// Unwraps the local KEK that [`RootKey::wrap_kek`] produced under `key_id`.
    async fn unwrap_kek(&self, key_id: &KeyId, wrapped: &[u8]) -> Result<AesKey, RootKeyError>;

    /// Re-reads what can change outside the process: a promoted root key version, an alias that
    /// points at a new key. Called every [`RootKey::refresh_interval`] and on SIGHUP.
    async fn refresh(&self) -> Result<(), RootKeyError> {
        Ok(())
    }

    /// Asks the backend whether the primary key is still usable where a wrap alone may not
    /// tell (AWS: DescribeKey's `KeyState`). A disabled, deleted or refused key is
    /// [`RootKeyError::Denied`] or [`RootKeyError::UnknownKey`]. Called by the health probe.
    async fn key_state(&self) -> Result<(), RootKeyError> {
        Ok(())
    }

    /// Asks the backend whether the older (non-primary) version `key_id` is still usable (AWS:
    /// DescribeKey's `KeyState` of that key); a revoked one is [`RootKeyError::Denied`] or
    /// [`RootKeyError::UnknownKey`]. Called at each refresh for versions with cached unwraps,
    /// so less often than the primary's probe.
    async fn version_state(&self, _key_id: &KeyId) -> Result<(), RootKeyError> {
        Ok(())
    }

    /// Whether the version `key_id` names is still held, when this root key can tell from
    /// memory (the local keyring after a refresh); `None`: only the backend can tell. A version
    /// that is no longer held loses its cached unwraps, so this process refuses its data as a
    /// restarted one would.
    fn holds(&self, _key_id: &KeyId) -> Option<bool> {
        None
    }

    /// How often [`RootKey::refresh`] should run.
    fn refresh_interval(&self) -> Duration {
        Duration::from_secs(60)
    }

    /// Creates a new root key version and makes it primary; older versions keep unwrapping.
    async fn rotate(&self) -> Result<KeyId, RootKeyError> {
        Err(RootKeyError::Unsupported(format!(
            "the {} backend rotates outside the plugin",
            self.kind()
        )))
    }
}
