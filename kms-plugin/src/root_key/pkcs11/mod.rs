//! The PKCS#11 backend: a non-extractable AES-256 key in an HSM wraps local KEKs.
//!
//! - The token is found by its label (slot ids are not stable); the user PIN comes from
//!   `pin_file` or `pin_env` and is held zeroized.
//! - Root key versions share `key_label` and differ by `CKA_ID`. Versions created here get a
//!   16-byte `CKA_ID`: the version number as 8 big-endian bytes, then 8 random bytes (two hosts
//!   rotating at once still get distinct ids). Key ids read `pkcs11:<key_label>:<hex CKA_ID>`;
//!   a new version always gets a new one, and none is ever reused.
//! - Only keys the token generated and never let out (`CKA_LOCAL`, `CKA_NEVER_EXTRACTABLE`) with
//!   such an id are used; an object imported under the same label is ignored with a warning. The
//!   primary version is the one a record in the token names, written only by `hsm init` and
//!   `rotate`: a key that appears in the token never becomes primary by itself.
//! - A local KEK is wrapped with CKM_AES_GCM inside the token: a 12-byte IV drawn by the plugin,
//!   AAD = a fixed label and the key id, the KEK as the data to C_Encrypt. Wrapped form:
//!   `IV || ciphertext || tag` (60 bytes).
//! - The connection is the `keystore` crate's [`Token`]: every PKCS#11 call runs on a worker
//!   thread, at most `max_sessions` at once, each on a pooled session. A session the token
//!   dropped (`CKR_SESSION_HANDLE_INVALID`, `CKR_USER_NOT_LOGGED_IN`, `CKR_DEVICE_REMOVED`, ...)
//!   is reopened, logged in again, the key handles re-listed here, and the call retried once; a
//!   module that stops listing the token is re-initialised at most once a second. This module
//!   adds the root key's own part: its key versions, the AES-GCM wrap, and the mapping of
//!   [`KeyStoreError`] into [`RootKeyError`].
//! - Each root key call that reaches the token logs one `debug` line with target
//!   `kms_plugin::root_key::remote`, so remote calls can be counted from the logs.
//!
//! # Setting up (SoftHSM2 shown; use the HSM vendor's tools elsewhere)
//!
//! ```text
//! softhsm2-util --init-token --free --label kms --so-pin "$SO_PIN" --pin "$USER_PIN"
//! softhsm2-util --show-slots      # the token and its slot id (which may change: we use the label)
//! install -m 0400 /dev/stdin /etc/kms-plugin/hsm-pin <<<"$USER_PIN"
//! kms-plugin hsm init --config /etc/kms-plugin/config.yaml   # creates version 1 if none exists
//! kms-plugin rotate --config /etc/kms-plugin/config.yaml     # adds a version and makes it primary
//! ```
//!
//! with a configuration like
//!
//! ```yaml
//! backend:
//!   kind: pkcs11
//!   pkcs11:
//!     module: /usr/lib/softhsm/libsofthsm2.so
//!     token_label: kms
//!     pin_file: /etc/kms-plugin/hsm-pin
//!     key_label: kms-plugin-root
//!     max_sessions: 4
//!     refresh_interval: 30s
//! ```
//!
//! A running plugin picks up a rotation made by another process on its next refresh or on
//! SIGHUP. Versions are never deleted by the plugin: delete an old one in the token only once
//! no stored data is wrapped under it any more.

mod gcm;
mod init;
mod keys;
mod record;

pub use init::{InitOutcome, init_root_key};

use super::miss_throttle::MissThrottle;
use super::{KeyId, RootKey, RootKeyError, WrappedKey};
use crate::secret::AesKey;
use async_trait::async_trait;
use cryptoki::mechanism::MechanismType;
use cryptoki::session::Session;
use keys::KeySet;
use keystore::pkcs11::{Token, Workers, blocking};
use keystore::{ErrorKind, KeyStoreError};
use kms_config::Pkcs11Backend;
use std::sync::{Arc, RwLock};
use std::time::Duration;

/// Root keys held in a PKCS#11 token.
pub struct Pkcs11RootKey {
    inner: Arc<Inner>,
    workers: Workers,
    refresh_interval: Duration,
}

struct Inner {
    token: Token,
    key_label: String,
    current: RwLock<Arc<Current>>,
    /// Unwraps naming an unknown version re-list the token at most once a second.
    misses: MissThrottle,
}

/// The versions last listed, with the primary one picked out (never an empty set).
struct Current {
    keys: KeySet,
    primary: Primary,
}

/// The primary version: its key id and `CKA_ID`.
#[derive(Clone)]
struct Primary {
    key_id: KeyId,
    id: Vec<u8>,
}

impl Current {
    fn new(keys: KeySet, label: &str) -> Result<Self, KeyStoreError> {
        let primary = match (keys.primary(), &keys.recorded) {
            (Some(version), _) => Primary {
                key_id: version.key_id.clone(),
                id: version.id.clone(),
            },
            (None, Some(id)) => return Err(keys::recorded_missing(label, id)),
            (None, None) => return Err(keys::no_root_key(label)),
        };
        Ok(Self { keys, primary })
    }
}

impl Inner {
    fn current(&self) -> Arc<Current> {
        match self.current.read() {
            Ok(guard) => guard.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Lists the versions in the token and makes them current (an empty list is refused).
    fn relist(&self, session: &Session) -> Result<Arc<Current>, KeyStoreError> {
        let fresh = Arc::new(Current::new(
            keys::list(session, &self.key_label)?,
            &self.key_label,
        )?);
        let mut guard = match self.current.write() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        *guard = fresh.clone();
        Ok(fresh)
    }

    /// Runs `op` on a pooled session with the current versions; when the token dropped the
    /// session, re-lists the versions (their handles may have changed) before the one retry.
    fn with_session<T>(
        &self,
        op: impl Fn(&Session, &KeySet) -> Result<T, KeyStoreError>,
    ) -> Result<T, KeyStoreError> {
        self.token.with_session(
            |session| op(session, &self.current().keys),
            |session| self.relist(session).map(drop),
        )
    }
}

impl Pkcs11RootKey {
    /// Opens the token, logs in and lists the root key versions; fails when there is none.
    pub async fn open(config: &Pkcs11Backend) -> Result<Self, RootKeyError> {
        let inner = open_inner(config).await?;
        Ok(Self {
            inner: Arc::new(inner),
            workers: Workers::new(config.max_sessions),
            refresh_interval: config.refresh_interval.get(),
        })
    }

    /// Runs blocking token work on a worker thread, at most `max_sessions` at a time.
    async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Inner) -> Result<T, RootKeyError> + Send + 'static,
    ) -> Result<T, RootKeyError> {
        let inner = self.inner.clone();
        self.workers.run(move || work(&inner)).await
    }

    fn primary(&self) -> Primary {
        self.inner.current().primary.clone()
    }
}

/// Loads the module, opens the token and lists the keys, on a blocking thread.
async fn open_inner(config: &Pkcs11Backend) -> Result<Inner, RootKeyError> {
    let config = config.clone();
    blocking(move || {
        let token = Token::open_for(&config, &[(MechanismType::AES_GCM, "CKM_AES_GCM")])?;
        let session = token.take()?;
        let current = Current::new(keys::list(&session, &config.key_label)?, &config.key_label)?;
        token.give_back(session);
        if current.keys.recorded.is_none() {
            tracing::warn!(
                key_id = %current.primary.key_id,
                "the token has no primary record (set up by an earlier release): the highest \
                 version is primary until `kms-plugin hsm init` records it"
            );
        }
        Ok::<_, KeyStoreError>(Inner {
            token,
            key_label: config.key_label.clone(),
            current: RwLock::new(Arc::new(current)),
            misses: MissThrottle::default(),
        })
    })
    .await
    .map_err(RootKeyError::from)
}

#[async_trait]
impl RootKey for Pkcs11RootKey {
    fn kind(&self) -> &'static str {
        "pkcs11"
    }

    fn primary_key_id(&self) -> KeyId {
        self.primary().key_id
    }

    async fn wrap_kek(&self, key: &AesKey) -> Result<WrappedKey, RootKeyError> {
        let primary = self.primary();
        let key = AesKey::from_slice(key.expose())
            .ok_or_else(|| RootKeyError::Backend("bad KEK length".into()))?;
        self.blocking(move |inner| {
            let ciphertext = inner
                .with_session(|session, keys| {
                    let version = keys
                        .get(&primary.id)
                        .ok_or_else(|| keys::no_root_key(primary.key_id.as_str()))?;
                    gcm::seal(session, version.handle, &primary.key_id, &key)
                })
                .map_err(|e| match e.kind() {
                    ErrorKind::NotFound => RootKeyError::UnknownKey(primary.key_id.to_string()),
                    _ => e.into(),
                })?;
            Ok(WrappedKey {
                key_id: primary.key_id,
                ciphertext,
            })
        })
        .await
    }

    async fn unwrap_kek(&self, key_id: &KeyId, wrapped: &[u8]) -> Result<AesKey, RootKeyError> {
        let id = keys::parse_key_id(&self.inner.key_label, key_id)
            .ok_or_else(|| RootKeyError::UnknownKey(key_id.to_string()))?;
        if wrapped.len() != gcm::WRAPPED_LEN {
            return Err(RootKeyError::Integrity(key_id.to_string()));
        }
        let key_id = key_id.clone();
        let wrapped = wrapped.to_vec();
        self.blocking(move |inner| {
            if inner.current().keys.get(&id).is_none() && inner.misses.allow() {
                // A version created by another process since the last refresh.
                inner.with_session(|session, _| inner.relist(session).map(drop))?;
            }
            let opened = inner.with_session(|session, keys| match keys.get(&id) {
                Some(version) => gcm::open(session, version.handle, &key_id, &wrapped).map(Some),
                None => Ok(None),
            });
            match opened {
                Ok(Some(Some(key))) => Ok(key),
                Ok(Some(None)) => Err(RootKeyError::Integrity(key_id.to_string())),
                Ok(None) => Err(RootKeyError::UnknownKey(key_id.to_string())),
                Err(error) if error.kind() == ErrorKind::Integrity => {
                    Err(RootKeyError::Integrity(key_id.to_string()))
                }
                Err(error) => Err(error.into()),
            }
        })
        .await
    }

    async fn refresh(&self) -> Result<(), RootKeyError> {
        self.blocking(|inner| {
            inner.with_session(|session, _| inner.relist(session).map(drop))?;
            Ok(())
        })
        .await
    }

    fn refresh_interval(&self) -> Duration {
        self.refresh_interval
    }

    async fn rotate(&self) -> Result<KeyId, RootKeyError> {
        let key_id = self
            .blocking(|inner| {
                let current = inner.with_session(|session, _| {
                    let listed = keys::list(session, &inner.key_label)?;
                    let id = keys::generate(session, &inner.key_label, &listed)?;
                    record::write(session, &inner.key_label, &id)?;
                    inner.relist(session)
                })?;
                Ok(current.primary.key_id.clone())
            })
            .await?;
        tracing::info!(key_id = %key_id, "created a new PKCS#11 root key version; it is primary");
        Ok(key_id)
    }
}
