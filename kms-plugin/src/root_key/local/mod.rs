//! The embedded default backend: versioned AES-256 root keys in a local state directory.
//!
//! Layout of the state directory (0700; every file 0600, written atomically):
//! - `root-key-v<N>.key`: 32 raw key bytes of version N;
//! - `primary`: the version number new data is wrapped under.
//!
//! A version that exists but is not primary decrypts only: that is how a new version is carried
//! to every control-plane node before any node encrypts with it.
//!
//! [`state_dir`] owns the files (strict names, the lock, the owner of new files), `keyring` the
//! loaded versions, `admin` the commands that change the directory (each under the lock).

mod admin;
mod keyring;
pub mod state_dir;

pub use keyring::{Keyring, KeyringError, VersionInfo};

use super::miss_throttle::MissThrottle;
use super::{KeyId, RootKey, RootKeyError, WrappedKey};
use crate::secret::AesKey;
use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use async_trait::async_trait;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

const NONCE_LEN: usize = 12;
const WRAP_AAD_PREFIX: &[u8] = b"kms-plugin local root wrap v1\0";

/// The local key file backend, reloading the state directory when it changes.
///
/// A reload that finds the keyring changed underneath the plugin (the directory removed or
/// emptied, `primary` naming a missing file, a loaded version whose key is different now) keeps
/// the keyring in memory, so Decrypt goes on working, and reports [`RootKeyError::Changed`] from
/// every later refresh, key state check and wrap until the directory matches it again. Nothing is
/// ever written to replace what is gone.
pub struct LocalRootKey {
    dir: PathBuf,
    poll_interval: Duration,
    keyring: RwLock<Arc<Keyring>>,
    changed: RwLock<Option<String>>,
    misses: MissThrottle,
}

impl LocalRootKey {
    /// Opens the keyring in an existing state directory; refuses a missing or empty one (naming
    /// `kms-plugin init`), never creating a key.
    pub fn open(dir: &Path, poll_interval: Duration) -> Result<Self, RootKeyError> {
        Self::with(dir, poll_interval, Keyring::load(dir))
    }

    /// Like [`LocalRootKey::open`], but creates the directory and a first key if it holds none:
    /// only for the zero-configuration development command.
    pub fn open_or_init(dir: &Path, poll_interval: Duration) -> Result<Self, RootKeyError> {
        Self::with(dir, poll_interval, Keyring::open_or_init(dir))
    }

    fn with(
        dir: &Path,
        poll_interval: Duration,
        keyring: Result<Keyring, KeyringError>,
    ) -> Result<Self, RootKeyError> {
        let keyring = keyring.map_err(|e| RootKeyError::Backend(e.to_string()))?;
        Ok(Self {
            dir: dir.to_owned(),
            poll_interval,
            keyring: RwLock::new(Arc::new(keyring)),
            changed: RwLock::new(None),
            misses: MissThrottle::default(),
        })
    }

    /// Why the keyring no longer matches the state directory, if it does not.
    fn changed(&self) -> Result<(), RootKeyError> {
        let guard = match self.changed.read() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        match guard.as_ref() {
            Some(reason) => Err(RootKeyError::Changed(reason.clone())),
            None => Ok(()),
        }
    }

    fn set_changed(&self, reason: Option<String>) {
        let mut guard = match self.changed.write() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        match (&*guard, &reason) {
            (None, Some(reason)) => tracing::error!(
                state_dir = %self.dir.display(),
                %reason,
                "the local keyring changed underneath the plugin: Encrypt stops, Decrypt goes on from memory, nothing is written; restore the state directory"
            ),
            (Some(_), None) => tracing::info!(
                state_dir = %self.dir.display(),
                "the state directory matches the keyring again; Encrypt resumes"
            ),
            _ => {}
        }
        *guard = reason;
    }

    fn current(&self) -> Arc<Keyring> {
        match self.keyring.read() {
            Ok(guard) => guard.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    fn reload(&self) -> Result<(), RootKeyError> {
        let current = self.current();
        let verdict = match current.reloaded(&self.dir) {
            Ok(None) => Ok(None),
            Ok(Some(fresh)) => match current.replaced_in(&fresh) {
                Some(reason) => Err(reason),
                None => Ok(Some(fresh)),
            },
            Err(error) => Err(error.to_string()),
        };
        match verdict {
            Ok(fresh) => {
                self.set_changed(None);
                if let Some(fresh) = fresh {
                    let mut guard = match self.keyring.write() {
                        Ok(guard) => guard,
                        Err(poisoned) => poisoned.into_inner(),
                    };
                    *guard = Arc::new(fresh);
                }
                Ok(())
            }
            Err(reason) => {
                self.set_changed(Some(reason));
                self.changed()
            }
        }
    }
}

fn wrap_aad(key_id: &KeyId) -> Vec<u8> {
    [WRAP_AAD_PREFIX, key_id.as_str().as_bytes()].concat()
}

#[async_trait]
impl RootKey for LocalRootKey {
    fn kind(&self) -> &'static str {
        "local"
    }

    fn primary_key_id(&self) -> KeyId {
        self.current().primary().key_id.clone()
    }

    async fn wrap_kek(&self, key: &AesKey) -> Result<WrappedKey, RootKeyError> {
        self.changed()?;
        let keyring = self.current();
        let primary = keyring.primary();
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::fill(&mut nonce).map_err(|e| RootKeyError::Backend(e.to_string()))?;
        let aad = wrap_aad(&primary.key_id);
        let sealed = primary
            .cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: key.expose(),
                    aad: &aad,
                },
            )
            .map_err(|_| RootKeyError::Backend("AES-GCM seal failed".into()))?;
        Ok(WrappedKey {
            key_id: primary.key_id.clone(),
            ciphertext: [nonce.as_slice(), &sealed].concat(),
        })
    }

    async fn unwrap_kek(&self, key_id: &KeyId, wrapped: &[u8]) -> Result<AesKey, RootKeyError> {
        let mut keyring = self.current();
        if keyring.find(key_id).is_none() && self.misses.allow() {
            // A version carried over from another node may have arrived since the last poll.
            self.reload()?;
            keyring = self.current();
        }
        let version = keyring
            .find(key_id)
            .ok_or_else(|| RootKeyError::UnknownKey(key_id.to_string()))?;
        if wrapped.len() != NONCE_LEN + 32 + 16 {
            return Err(RootKeyError::Integrity(key_id.to_string()));
        }
        let (nonce, sealed) = wrapped.split_at(NONCE_LEN);
        let aad = wrap_aad(key_id);
        let opened = zeroize::Zeroizing::new(
            version
                .cipher
                .decrypt(
                    Nonce::from_slice(nonce),
                    Payload {
                        msg: sealed,
                        aad: &aad,
                    },
                )
                .map_err(|_| RootKeyError::Integrity(key_id.to_string()))?,
        );
        AesKey::from_slice(&opened).ok_or_else(|| RootKeyError::Integrity(key_id.to_string()))
    }

    async fn refresh(&self) -> Result<(), RootKeyError> {
        self.reload()
    }

    async fn key_state(&self) -> Result<(), RootKeyError> {
        self.changed()
    }

    fn refresh_interval(&self) -> Duration {
        self.poll_interval
    }

    fn holds(&self, key_id: &KeyId) -> Option<bool> {
        Some(self.current().find(key_id).is_some())
    }

    async fn rotate(&self) -> Result<KeyId, RootKeyError> {
        self.changed()?;
        let info = Keyring::rotate(&self.dir).map_err(|e| RootKeyError::Backend(e.to_string()))?;
        self.reload()?;
        Ok(info.key_id)
    }
}

/// Builds the AES-GCM cipher of one root key version.
fn cipher_for(key: &AesKey) -> Aes256Gcm {
    Aes256Gcm::new(key.expose().into())
}
