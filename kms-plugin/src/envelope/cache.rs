//! Decrypt-side cache of unwrapped local KEKs, keyed by their wrapped form.
//!
//! The KEK this process wrapped last also sits in a one-entry slot checked before the cache:
//! most Decrypt calls open what this node sealed recently, and the slot answers them with one
//! comparison instead of a hashed lookup. The slot obeys the same time to live and the same
//! [`UnwrapCache::forget`].
//!
//! Unwraps that failed for good (the wrapped bytes did not authenticate, or the key id names no
//! root key) are remembered for [`FAILURE_TTL`], by key id and a hash of the wrapped bytes, so a
//! bogus ciphertext sent again costs no root key call (a KMS request, a token call or a state
//! directory rescan). Outages are never remembered: the next call tries again.

use super::{EnvelopeError, shared_error};
use crate::root_key::{KeyId, RootKey, RootKeyError};
use aes_gcm::{Aes256Gcm, KeyInit};
use moka::future::Cache;
use sha2::{Digest, Sha256};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

/// Cache key: the root key id and the wrapped KEK bytes.
type Entry = (KeyId, Arc<[u8]>);
/// Failure key: the root key id and the SHA-256 of the wrapped bytes.
type Failure = (KeyId, [u8; 32]);

/// How long a failed unwrap is remembered.
pub(super) const FAILURE_TTL: Duration = Duration::from_secs(5);
/// Most failed unwraps remembered at once (each holds a key id of at most 1 KiB and a hash).
const MAX_FAILURES: u64 = 1024;

/// An unwrap failure that says the data is bad, not that the root key is unreachable.
#[derive(Clone, Copy)]
enum Definitive {
    UnknownKey,
    Integrity,
}

impl Definitive {
    fn of(error: &EnvelopeError) -> Option<Self> {
        match error {
            EnvelopeError::RootKey(RootKeyError::UnknownKey(_)) => Some(Self::UnknownKey),
            EnvelopeError::RootKey(RootKeyError::Integrity(_)) => Some(Self::Integrity),
            _ => None,
        }
    }

    fn error(self, key_id: &KeyId) -> EnvelopeError {
        let id = key_id.to_string();
        match self {
            Self::UnknownKey => RootKeyError::UnknownKey(id).into(),
            Self::Integrity => RootKeyError::Integrity(id).into(),
        }
    }
}

/// The KEK this process wrapped last, and when it was put in the slot.
struct Newest {
    key_id: KeyId,
    wrapped: Arc<[u8]>,
    cipher: Arc<Aes256Gcm>,
    inserted: Instant,
}

/// Bounded, expiring cache of unwrapped local KEKs with single-flight misses.
pub struct UnwrapCache {
    entries: Cache<Entry, Arc<Aes256Gcm>>,
    failures: Cache<Failure, Definitive>,
    newest: RwLock<Option<Arc<Newest>>>,
    ttl: Duration,
    timeout: Duration,
    hits: AtomicU64,
    misses: AtomicU64,
}

impl UnwrapCache {
    /// A cache holding at most `max_entries` KEKs for at most `ttl`; root key unwraps give up
    /// after `timeout`.
    pub fn new(max_entries: u64, ttl: Duration, timeout: Duration) -> Self {
        Self {
            entries: Cache::builder()
                .max_capacity(max_entries)
                .time_to_live(ttl)
                .build(),
            failures: Cache::builder()
                .max_capacity(MAX_FAILURES)
                .time_to_live(FAILURE_TTL)
                .build(),
            newest: RwLock::new(None),
            ttl,
            timeout,
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    /// Remembers a KEK this process wrapped itself, so its own ciphertexts need no unwrap.
    pub async fn insert(&self, key_id: KeyId, wrapped: Arc<[u8]>, cipher: Arc<Aes256Gcm>) {
        *self.newest_slot() = Some(Arc::new(Newest {
            key_id: key_id.clone(),
            wrapped: wrapped.clone(),
            cipher: cipher.clone(),
            inserted: Instant::now(),
        }));
        self.entries.insert((key_id, wrapped), cipher).await;
    }

    fn newest_slot(&self) -> std::sync::RwLockWriteGuard<'_, Option<Arc<Newest>>> {
        self.newest
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The newest KEK's cipher when it is the one asked for and younger than the time to live.
    fn newest_if(&self, key_id: &str, wrapped: &[u8]) -> Option<Arc<Aes256Gcm>> {
        let newest = self.newest.read().unwrap_or_else(|p| p.into_inner());
        let newest = newest.as_ref()?;
        (newest.key_id.as_str() == key_id
            && *newest.wrapped == *wrapped
            && newest.inserted.elapsed() < self.ttl)
            .then(|| newest.cipher.clone())
    }

    /// The cipher of the KEK `wrapped` under `key_id`, unwrapping it through `root` on a miss.
    /// Concurrent misses for the same entry wait on one unwrap; a definitive failure is
    /// remembered for [`FAILURE_TTL`].
    pub async fn get_or_unwrap(
        &self,
        root: &Arc<dyn RootKey>,
        key_id: &KeyId,
        wrapped: &[u8],
    ) -> Result<Arc<Aes256Gcm>, EnvelopeError> {
        if let Some(cipher) = self.newest_if(key_id.as_str(), wrapped) {
            self.hits.fetch_add(1, Ordering::Relaxed);
            return Ok(cipher);
        }
        let entry: Entry = (key_id.clone(), Arc::from(wrapped));
        if let Some(cipher) = self.entries.get(&entry).await {
            self.hits.fetch_add(1, Ordering::Relaxed);
            return Ok(cipher);
        }
        let failure: Failure = (key_id.clone(), Sha256::digest(wrapped).into());
        if let Some(known) = self.failures.get(&failure).await {
            return Err(known.error(key_id));
        }
        let timeout = self.timeout;
        let result = self
            .entries
            .try_get_with(entry, async {
                self.misses.fetch_add(1, Ordering::Relaxed);
                let key = tokio::time::timeout(timeout, root.unwrap_kek(key_id, wrapped))
                    .await
                    .map_err(|_| EnvelopeError::Timeout(timeout))??;
                Ok::<_, EnvelopeError>(Arc::new(Aes256Gcm::new(key.expose().into())))
            })
            .await;
        let error = match result {
            Ok(cipher) => return Ok(cipher),
            Err(shared) => match Arc::try_unwrap(shared) {
                Ok(error) => error,
                Err(shared) => shared_error(&shared),
            },
        };
        if let Some(definitive) = Definitive::of(&error) {
            self.failures.insert(failure, definitive).await;
        }
        Err(error)
    }

    /// The root key versions the cached KEKs were unwrapped under, each once.
    pub fn key_ids(&self) -> Vec<KeyId> {
        let mut ids: Vec<KeyId> = Vec::new();
        for (entry, _) in self.entries.iter() {
            if !ids.contains(&entry.0) {
                ids.push(entry.0.clone());
            }
        }
        ids
    }

    /// Drops every cached KEK wrapped under `key_id`; returns how many were dropped.
    pub async fn forget(&self, key_id: &KeyId) -> usize {
        {
            let mut newest = self.newest_slot();
            if newest.as_ref().is_some_and(|n| n.key_id == *key_id) {
                *newest = None;
            }
        }
        let doomed: Vec<Arc<Entry>> = self
            .entries
            .iter()
            .filter(|(entry, _)| entry.0 == *key_id)
            .map(|(entry, _)| entry)
            .collect();
        for entry in &doomed {
            self.entries.invalidate(entry.as_ref()).await;
        }
        doomed.len()
    }

    /// Forgets every remembered failure (the root key's versions changed: a version that was
    /// unknown may exist now).
    pub fn forget_failures(&self) {
        self.failures.invalidate_all();
    }

    /// Applies pending bookkeeping so [`UnwrapCache::len`] is exact (for metrics scrapes).
    pub async fn sync(&self) {
        self.entries.run_pending_tasks().await;
    }

    /// KEKs currently cached (may lag behind inserts until [`UnwrapCache::sync`]).
    pub fn len(&self) -> u64 {
        self.entries.entry_count()
    }

    /// True when nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Lookups answered from the cache.
    pub fn hits(&self) -> u64 {
        self.hits.load(Ordering::Relaxed)
    }

    /// Lookups that needed a root key unwrap (shared misses count once).
    pub fn misses(&self) -> u64 {
        self.misses.load(Ordering::Relaxed)
    }
}
