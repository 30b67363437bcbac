//! The local KEK used by Encrypt, and when it is replaced.
//!
//! Encrypt never waits for the root key while a usable KEK exists:
//! - A KEK past `max_age` (a soft limit) keeps serving while one background task wraps its
//!   successor. After a failed attempt the next one starts no sooner than `retry_interval` later
//!   (the health probe interval), with the first Encrypt after that.
//! - Only when no KEK may be used does Encrypt wait: none made yet, `max_uses` reached (a hard
//!   limit), or the root key id changed. A key id change is treated as a hard limit too: once
//!   Status reports the new key id, no Encrypt seals under the old one, so an operator who has
//!   seen the new id and migrated the data may retire the old key. Waiting callers share the one
//!   replacement in flight and each waits at most `wrap_timeout`; the replacement itself goes on
//!   in the background if they give up.
//!
//! A replacement installs a KEK only after its [proof](super::proof) passed. Nothing is sealed
//! while the health probe reports the primary root key revoked.

use super::proof::{self, Proof};
use super::{EnvelopeError, UnwrapCache, shared_error};
use crate::health::Health;
use crate::root_key::{KeyId, RootKey, RootKeyError};
use crate::secret::AesKey;
use aes_gcm::{Aes256Gcm, KeyInit};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// When a local KEK is replaced.
#[derive(Clone, Copy, Debug)]
pub struct KekPolicy {
    /// Hard limit of encryptions under one KEK (kept far below GCM's 2^32 random-nonce bound).
    pub max_uses: u64,
    /// Soft age limit: a fresh KEK is made in the background after it, and the old one stays in
    /// use until the fresh one is installed.
    pub max_age: Duration,
    /// Deadline of each root key call of a replacement (the wrap, then the proof's unwrap), and
    /// the longest an Encrypt waits for a replacement when no KEK may be used.
    pub wrap_timeout: Duration,
    /// Least time between a failed background replacement and the next one.
    pub retry_interval: Duration,
}

/// The error of an Encrypt whose new KEK failed its proof (details are in the log).
const PROOF_FAILED: &str = "the root key could not unwrap a new local KEK to itself";

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

/// What a finished replacement hands to the callers waiting for it.
type Outcome = Result<Arc<CurrentKek>, Arc<EnvelopeError>>;

/// The replacement in flight, if any, and when the last one failed.
#[derive(Default)]
struct Flight {
    running: Option<watch::Receiver<Option<Outcome>>>,
    failed_at: Option<Instant>,
}

/// Holds the current local KEK and replaces it by use count, age, or root key change.
pub struct KekManager {
    inner: Arc<Inner>,
}

struct Inner {
    root: Arc<dyn RootKey>,
    unwraps: Arc<UnwrapCache>,
    health: Arc<Health>,
    policy: KekPolicy,
    current: RwLock<Option<Arc<CurrentKek>>>,
    flight: Mutex<Flight>,
    wraps: AtomicU64,
    proof_failures: AtomicU64,
}

impl KekManager {
    /// A manager that wraps new KEKs with `root`, remembers them in `unwraps` so this process's
    /// own ciphertexts need no unwrap, and reports failed proofs to `health`.
    pub fn new(
        root: Arc<dyn RootKey>,
        policy: KekPolicy,
        unwraps: Arc<UnwrapCache>,
        health: Arc<Health>,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                root,
                unwraps,
                health,
                policy,
                current: RwLock::new(None),
                flight: Mutex::new(Flight::default()),
                wraps: AtomicU64::new(0),
                proof_failures: AtomicU64::new(0),
            }),
        }
    }

    /// The KEK currently used for encryption, if one was made.
    pub fn current(&self) -> Option<Arc<CurrentKek>> {
        self.inner.current()
    }

    /// Until when the current KEK may seal without the root key: its `max_age` (as a wall-clock
    /// time); `None` when it cannot seal at all (none made, `max_uses` reached, or made under
    /// another root key than the primary).
    pub fn seal_until(&self) -> Option<std::time::SystemTime> {
        let kek = self.inner.current()?;
        if !self.inner.usable() {
            return None;
        }
        let left = self.inner.policy.max_age.saturating_sub(kek.age());
        Some(std::time::SystemTime::now() + left)
    }

    /// Starts the replacement of a current KEK that is due (past `max_age`, or made under another
    /// root key than the primary) now, without waiting for an Encrypt or for the back-off of a
    /// replacement that failed: for the health probe once the root key answers again, so a
    /// rotation held up by an outage resumes within seconds of its end. Does nothing without a
    /// current KEK, or while a replacement runs.
    pub fn resume_replacement(&self) {
        let Some(kek) = self.inner.current() else {
            return;
        };
        if kek.age() < self.inner.policy.max_age && self.inner.usable() {
            return;
        }
        let mut flight = self.inner.flight();
        if flight.failed_at.take().is_some() {
            tracing::info!("the root key answers again: resuming the local KEK replacement");
        }
        drop(flight);
        self.inner.replace_soon();
    }

    /// Root key wraps performed to make new KEKs.
    pub fn wraps(&self) -> u64 {
        self.inner.wraps.load(Ordering::Relaxed)
    }

    /// New KEKs discarded because the root key could not unwrap them to themselves.
    pub fn proof_failures(&self) -> u64 {
        self.inner.proof_failures.load(Ordering::Relaxed)
    }

    /// Reserves one use of a usable KEK. Starts a background replacement of an aged one; waits
    /// (sharing one replacement with every other waiting caller) only when none may be used.
    pub async fn for_encrypt(&self) -> Result<Arc<CurrentKek>, EnvelopeError> {
        let wait = self.inner.policy.wrap_timeout;
        let deadline = tokio::time::Instant::now() + wait;
        let mut off_primary = 0;
        let primary = self.inner.root.primary_key_id();
        if self.inner.health.is_revoked(&primary) {
            return Err(super::revoked(&primary).into());
        }
        if self.inner.health.keyring_changed() {
            return Err(RootKeyError::Changed(
                "the keyring changed underneath the plugin; Encrypt stopped".into(),
            )
            .into());
        }
        loop {
            if let Some(kek) = self.reserve() {
                return Ok(kek);
            }
            // A replacement that finished between `reserve` and here installed a usable KEK:
            // take it instead of wrapping another.
            let Some(mut done) = self.inner.replacement() else {
                continue;
            };
            let outcome =
                match tokio::time::timeout_at(deadline, done.wait_for(Option::is_some)).await {
                    Err(_) => return Err(EnvelopeError::Timeout(wait)),
                    Ok(Err(_)) => {
                        return Err(RootKeyError::Backend(
                            "the local KEK replacement ended without an answer".into(),
                        )
                        .into());
                    }
                    Ok(Ok(outcome)) => outcome.clone(),
                };
            match outcome {
                Some(Err(error)) => return Err(shared_error(&error)),
                // Once is a race with a root key rotation; twice is a backend whose wraps do not
                // name its primary key, and retrying would only spend wraps.
                Some(Ok(kek)) if kek.key_id != self.inner.root.primary_key_id() => {
                    off_primary += 1;
                    if off_primary == 2 {
                        return Err(RootKeyError::Backend(format!(
                            "new local KEKs are wrapped under {} but the primary root key is {}",
                            kek.key_id,
                            self.inner.root.primary_key_id()
                        ))
                        .into());
                    }
                }
                _ => {}
            }
        }
    }

    /// One use of the current KEK if it may still be used; an aged one also gets a background
    /// replacement started (or not, while a failed one is still recent).
    fn reserve(&self) -> Option<Arc<CurrentKek>> {
        let kek = self.inner.current()?;
        if kek.key_id != self.inner.root.primary_key_id()
            || kek.uses.fetch_add(1, Ordering::Relaxed) >= self.inner.policy.max_uses
        {
            return None;
        }
        if kek.age() >= self.inner.policy.max_age {
            self.inner.replace_soon();
        }
        Some(kek)
    }
}

/// False once the replacement's task ended without an answer (it cannot any more).
fn is_live(running: &watch::Receiver<Option<Outcome>>) -> bool {
    running.has_changed().is_ok()
}

impl Inner {
    fn current(&self) -> Option<Arc<CurrentKek>> {
        match self.current.read() {
            Ok(guard) => guard.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    fn flight(&self) -> MutexGuard<'_, Flight> {
        match self.flight.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// The replacement in flight, or a new one; `None` when none runs and a usable KEK is
    /// installed (a replacement installs its KEK before it leaves the flight, so under the
    /// flight's lock this cannot miss one that just finished).
    fn replacement(self: &Arc<Self>) -> Option<watch::Receiver<Option<Outcome>>> {
        let flight = self.flight();
        let running = flight.running.as_ref().is_some_and(is_live);
        if !running && self.usable() {
            return None;
        }
        Some(self.join_or_spawn(flight))
    }

    /// Whether the current KEK is under the primary root key and below its use limit.
    fn usable(&self) -> bool {
        self.current().is_some_and(|kek| {
            kek.key_id == self.root.primary_key_id()
                && kek.uses.load(Ordering::Relaxed) < self.policy.max_uses
        })
    }

    /// Starts a background replacement unless one runs or one failed within `retry_interval`.
    fn replace_soon(self: &Arc<Self>) {
        let flight = self.flight();
        let running = flight.running.as_ref().is_some_and(is_live);
        let backing_off = flight
            .failed_at
            .is_some_and(|at| at.elapsed() < self.policy.retry_interval);
        if !running && !backing_off {
            self.join_or_spawn(flight);
        }
    }

    fn join_or_spawn(
        self: &Arc<Self>,
        mut flight: MutexGuard<'_, Flight>,
    ) -> watch::Receiver<Option<Outcome>> {
        if let Some(running) = flight.running.as_ref().filter(|r| is_live(r)) {
            return running.clone();
        }
        let (done, running) = watch::channel(None);
        flight.running = Some(running.clone());
        drop(flight);
        let inner = self.clone();
        tokio::spawn(async move {
            let outcome = inner.replace().await.map_err(Arc::new);
            if let Err(error) = &outcome {
                tracing::warn!(%error, retry_after = ?inner.policy.retry_interval, "could not make a new local KEK; a current one stays in use while its limits allow");
            }
            let mut flight = inner.flight();
            flight.running = None;
            flight.failed_at = outcome.is_err().then(Instant::now);
            drop(flight);
            let _ = done.send(Some(outcome));
        });
        running
    }

    /// Wraps a fresh KEK, proves it, and installs it as the current one.
    async fn replace(&self) -> Result<Arc<CurrentKek>, EnvelopeError> {
        let key =
            AesKey::generate().map_err(|e| RootKeyError::Backend(format!("no randomness: {e}")))?;
        let timeout = self.policy.wrap_timeout;
        self.wraps.fetch_add(1, Ordering::Relaxed);
        let wrapped = tokio::time::timeout(timeout, self.root.wrap_kek(&key))
            .await
            .map_err(|_| EnvelopeError::Timeout(timeout))??;
        match proof::prove(self.root.as_ref(), &key, &wrapped, timeout).await {
            Proof::Passed => self.health.set_kek_proof(true),
            Proof::Outage(error) => return Err(error),
            Proof::Failed(reason) => {
                self.proof_failures.fetch_add(1, Ordering::Relaxed);
                self.health.set_kek_proof(false);
                tracing::error!(key_id = %wrapped.key_id, %reason, "a new local KEK failed its proof and was discarded; nothing was sealed under it");
                return Err(RootKeyError::Backend(PROOF_FAILED.into()).into());
            }
        }
        let cipher = Arc::new(Aes256Gcm::new(key.expose().into()));
        let wrapped_bytes: Arc<[u8]> = Arc::from(wrapped.ciphertext);
        self.unwraps
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
            uses: AtomicU64::new(0),
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
