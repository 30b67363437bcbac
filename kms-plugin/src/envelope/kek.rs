//! The local KEK used by Encrypt, and when it is replaced.

use super::{EnvelopeError, UnwrapCache};
use crate::root_key::{KeyId, RootKey};
use crate::secret::AesKey;
use aes_gcm::{Aes256Gcm, KeyInit};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

/// When a local KEK is replaced.
#[derive(Clone, Copy, Debug)]
pub struct KekPolicy {
    /// Hard limit of encryptions under one KEK (kept far below GCM's 2^32 random-nonce bound).
    pub max_uses: u64,
    /// Soft age limit: a fresh KEK is made after it, but the old one stays in use while the root
    /// key cannot wrap a new one.
    pub max_age: Duration,
    /// Deadline of the root key wrap that installs a new KEK.
    pub wrap_timeout: Duration,
}

/// A local KEK in use for encryption.
pub struct CurrentKek {
    /// The root key id that wrapped this KEK.
    pub key_id: KeyId,
    /// The KEK's cipher.
    pub cipher: Arc<Aes256Gcm>,
    /// The KEK as wrapped by the root key (sent in annotations).
    pub wrapped: Arc<[u8]>,
    created: Instant,
    uses: AtomicU64,
}

impl CurrentKek {
    /// Encryptions performed under this KEK so far.
    pub fn uses(&self) -> u64 {
        self.uses.load(Ordering::Relaxed)
    }

    /// Time since this KEK was made.
    pub fn age(&self) -> Duration {
        self.created.elapsed()
    }
}

/// Holds the current local KEK and replaces it by use count, age, or root key change.
pub struct KekManager {
    root: Arc<dyn RootKey>,
    policy: KekPolicy,
    current: RwLock<Option<Arc<CurrentKek>>>,
    rotation: tokio::sync::Mutex<()>,
    wraps: AtomicU64,
}

impl KekManager {
    /// A manager that wraps new KEKs with `root`.
    pub fn new(root: Arc<dyn RootKey>, policy: KekPolicy) -> Self {
        Self {
            root,
            policy,
            current: RwLock::new(None),
            rotation: tokio::sync::Mutex::new(()),
            wraps: AtomicU64::new(0),
        }
    }

    /// The KEK currently used for encryption, if one was made.
    pub fn current(&self) -> Option<Arc<CurrentKek>> {
        match self.current.read() {
            Ok(guard) => guard.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Root key wraps performed to install new KEKs.
    pub fn wraps(&self) -> u64 {
        self.wraps.load(Ordering::Relaxed)
    }

    fn usable(&self, kek: &CurrentKek, primary: &KeyId) -> bool {
        &kek.key_id == primary
            && kek.age() < self.policy.max_age
            && kek.uses() < self.policy.max_uses
    }

    /// Reserves one use of the current KEK, replacing it first when it must or should be.
    pub async fn for_encrypt(
        &self,
        unwraps: &UnwrapCache,
    ) -> Result<Arc<CurrentKek>, EnvelopeError> {
        let primary = self.root.primary_key_id();
        if let Some(kek) = self.current()
            && self.usable(&kek, &primary)
            && kek.uses.fetch_add(1, Ordering::Relaxed) < self.policy.max_uses
        {
            return Ok(kek);
        }
        let _rotating = self.rotation.lock().await;
        let primary = self.root.primary_key_id();
        let existing = self.current();
        if let Some(kek) = &existing
            && self.usable(kek, &primary)
            && kek.uses.fetch_add(1, Ordering::Relaxed) < self.policy.max_uses
        {
            return Ok(kek.clone());
        }
        match self.install(unwraps).await {
            Ok(kek) => Ok(kek),
            Err(error) => {
                // Past its age but within its use limit and still under the primary root key,
                // the old KEK keeps serving while the root key is unreachable.
                if let Some(kek) = existing
                    && kek.key_id == primary
                    && kek.uses.fetch_add(1, Ordering::Relaxed) < self.policy.max_uses
                {
                    tracing::warn!(%error, key_id = %kek.key_id, "could not replace an aged local KEK; keeping it in use");
                    return Ok(kek);
                }
                Err(error)
            }
        }
    }

    async fn install(&self, unwraps: &UnwrapCache) -> Result<Arc<CurrentKek>, EnvelopeError> {
        let key = AesKey::generate()
            .map_err(|e| crate::root_key::RootKeyError::Backend(format!("no randomness: {e}")))?;
        let timeout = self.policy.wrap_timeout;
        self.wraps.fetch_add(1, Ordering::Relaxed);
        let wrapped = tokio::time::timeout(timeout, self.root.wrap_kek(&key))
            .await
            .map_err(|_| EnvelopeError::Timeout(timeout))??;
        let cipher = Arc::new(Aes256Gcm::new(key.expose().into()));
        let wrapped_bytes: Arc<[u8]> = Arc::from(wrapped.ciphertext);
        unwraps
            .insert(
                wrapped.key_id.clone(),
                wrapped_bytes.clone(),
                cipher.clone(),
            )
            .await;
        let kek = Arc::new(CurrentKek {
            key_id: wrapped.key_id,
            cipher,
            wrapped: wrapped_bytes,
            created: Instant::now(),
            uses: AtomicU64::new(1),
        });
        tracing::info!(key_id = %kek.key_id, "installed a new local KEK");
        let mut guard = match self.current.write() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        *guard = Some(kek.clone());
        Ok(kek)
    }
}
