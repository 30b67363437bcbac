//! Root key health, probed in the background so Status answers from memory at once.
//!
//! A new local KEK that failed its proof (see the envelope) also makes the plugin unhealthy,
//! with [`KEK_PROOF_FAILED`] as the reason, until a later new KEK passes its proof.
//!
//! `healthz` is `ok` or one of the fixed reasons below: it reaches `/healthz`, `/readyz` and
//! Status, so the backend's own error text (ARNs, accounts, module paths) goes to the log only.
//!
//! Revocation is told apart from an outage: when the probe hears from the backend that the
//! primary key is disabled, deleted or refused (not that it is unreachable), that key is marked
//! revoked (unless `revoked_key_stops_encrypt` is off): Status reports [`ROOT_KEY_REVOKED`],
//! its cached unwraps are dropped, and the envelope neither seals nor opens under it, until a
//! probe succeeds again. An unreachable backend only makes Status unhealthy; the current KEK
//! and the cache keep serving.

use crate::envelope::UnwrapCache;
use crate::root_key::{KeyId, RootKey, RootKeyError};
use crate::secret::AesKey;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};
use tokio::sync::watch;

/// What the last probe found.
#[derive(Clone, Debug)]
pub struct HealthState {
    /// True when the last root key round trip succeeded.
    pub healthy: bool,
    /// `"ok"`, or a short reason kube-apiserver shows in its health checks.
    pub healthz: String,
    /// When a root key round trip last succeeded.
    pub last_success: Option<SystemTime>,
}

/// The `healthz` reason while the latest new local KEK failed its proof.
pub const KEK_PROOF_FAILED: &str =
    "local KEK proof failed: the root key did not unwrap a new KEK to itself";

/// The `healthz` reason before the first probe has answered.
pub const STARTING: &str = "starting: first root key probe pending";
/// The `healthz` reason while the root key does not answer a probe within its deadline.
pub const PROBE_TIMED_OUT: &str = "root key probe timed out";
/// The `healthz` reason while the root key answers a probe with an error (details in the log).
pub const PROBE_FAILED: &str = "root key probe failed";
/// The `healthz` reason while the root key unwraps a probe key to different bytes.
pub const PROBE_WRONG_KEY: &str = "root key probe returned a different key";
/// The `healthz` reason while the backend reports the primary root key revoked.
pub const ROOT_KEY_REVOKED: &str =
    "root key revoked: the backend reports it disabled, deleted or access denied";

/// The `healthz` reason while the local keyring changed underneath the plugin (state directory
/// removed or emptied, primary naming a missing file, a key file replaced): Encrypt stops,
/// Decrypt goes on from memory.
pub const KEYRING_CHANGED: &str =
    "root key state changed underneath the plugin: Encrypt stopped, restore the state directory";

/// Why a probe failed: a fixed reason for `healthz`, the details for the log only, and whether
/// the backend said the key itself is unusable.
#[derive(Debug)]
pub struct ProbeFailure {
    /// One of the fixed reasons of this module.
    pub reason: &'static str,
    /// The backend's own error text; never leaves the process except in the log.
    pub detail: String,
    /// True when the backend answered that the key is disabled, deleted or refused.
    pub revoked: bool,
}

impl ProbeFailure {
    fn new(reason: &'static str, detail: String) -> Self {
        Self {
            reason,
            detail,
            revoked: false,
        }
    }

    fn of(root: &dyn RootKey, step: &str, error: &RootKeyError) -> Self {
        // A revocation reads ROOT_KEY_REVOKED (from `Health::get`) only while it stops Encrypt;
        // with `revoked_key_stops_encrypt` off it is an ordinary failed probe.
        let reason = match error {
            RootKeyError::Changed(_) => KEYRING_CHANGED,
            _ => PROBE_FAILED,
        };
        Self {
            reason,
            detail: format!("{} root key: {step} failed: {error}", root.kind()),
            revoked: error.is_revocation(),
        }
    }
}

/// Shared, cheaply readable health of the root key.
pub struct Health {
    state: RwLock<HealthState>,
    kek_proof_failed: AtomicBool,
    keyring_changed: AtomicBool,
    revocation_stops_encrypt: bool,
    revoked: RwLock<Option<KeyId>>,
}

impl Default for Health {
    fn default() -> Self {
        Self::new(true)
    }
}

impl Health {
    /// Health that marks a revoked key (see the module docs) when `revocation_stops_encrypt`.
    pub fn new(revocation_stops_encrypt: bool) -> Self {
        Self {
            state: RwLock::new(HealthState {
                healthy: false,
                healthz: STARTING.into(),
                last_success: None,
            }),
            kek_proof_failed: AtomicBool::new(false),
            keyring_changed: AtomicBool::new(false),
            revocation_stops_encrypt,
            revoked: RwLock::new(None),
        }
    }

    /// The latest state: the last probe's, unless the latest new local KEK failed its proof.
    pub fn get(&self) -> HealthState {
        let mut state = match self.state.read() {
            Ok(state) => state.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        };
        if self.kek_proof_failed.load(Ordering::Relaxed) {
            state.healthy = false;
            state.healthz = KEK_PROOF_FAILED.into();
        }
        if self.revoked_key().is_some() {
            state.healthy = false;
            state.healthz = ROOT_KEY_REVOKED.into();
        }
        if self.keyring_changed() {
            state.healthy = false;
            state.healthz = KEYRING_CHANGED.into();
        }
        state
    }

    /// True while the root key's state changed underneath the plugin: nothing new is sealed.
    pub fn keyring_changed(&self) -> bool {
        self.keyring_changed.load(Ordering::Relaxed)
    }

    /// Records what the latest refresh found: whether the keyring changed underneath.
    pub fn set_keyring_changed(&self, changed: bool) {
        self.keyring_changed.store(changed, Ordering::Relaxed);
    }

    /// The root key the backend reported revoked, while no probe has succeeded since.
    pub fn revoked_key(&self) -> Option<KeyId> {
        match self.revoked.read() {
            Ok(guard) => guard.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// True when `key_id` is the revoked root key: nothing is sealed or opened under it.
    pub fn is_revoked(&self, key_id: &KeyId) -> bool {
        self.revoked_key().as_ref() == Some(key_id)
    }

    /// Records a probe of `key_id`; returns true when it newly marked that key revoked.
    fn record(&self, key_id: KeyId, result: Result<(), ProbeFailure>) -> bool {
        let mut newly_revoked = false;
        let mut revoked = match self.revoked.write() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        match &result {
            Ok(()) => {
                if let Some(was) = revoked.take() {
                    tracing::info!(key_id = %was, "the root key answers again; no longer revoked");
                }
            }
            Err(failure) if failure.revoked && self.revocation_stops_encrypt => {
                if revoked.as_ref() != Some(&key_id) {
                    tracing::error!(%key_id, reason = failure.reason, detail = %failure.detail, "the backend reports the root key revoked: Encrypt stops under it and its cached unwraps are dropped");
                    newly_revoked = true;
                }
                *revoked = Some(key_id);
            }
            Err(_) => {}
        }
        drop(revoked);
        self.set(result);
        newly_revoked
    }

    /// Records whether the latest new local KEK passed its proof.
    pub fn set_kek_proof(&self, passed: bool) {
        let failed_before = self.kek_proof_failed.swap(!passed, Ordering::Relaxed);
        if failed_before && passed {
            tracing::info!("a new local KEK passed its proof; no longer unhealthy for that");
        } else if !failed_before && !passed {
            tracing::warn!(reason = KEK_PROOF_FAILED, "reporting unhealthy");
        }
    }

    fn set(&self, result: Result<(), ProbeFailure>) {
        let mut state = match self.state.write() {
            Ok(state) => state,
            Err(poisoned) => poisoned.into_inner(),
        };
        match result {
            Ok(()) => {
                if !state.healthy {
                    tracing::info!("root key probe succeeded; reporting healthy");
                }
                state.healthy = true;
                state.healthz = "ok".into();
                state.last_success = Some(SystemTime::now());
            }
            Err(ProbeFailure { reason, detail, .. }) => {
                if state.healthy || state.healthz != reason {
                    tracing::warn!(reason, %detail, "root key probe failed; reporting unhealthy");
                }
                state.healthy = false;
                state.healthz = reason.into();
            }
        }
    }
}

/// The key state check, then one wrap and unwrap of a throwaway key through the root key, each
/// bounded by `timeout`.
pub async fn probe(root: &dyn RootKey, timeout: Duration) -> Result<(), ProbeFailure> {
    let timed_out = |step: &str| {
        ProbeFailure::new(
            PROBE_TIMED_OUT,
            format!(
                "{} root key: {step} timed out after {timeout:?}",
                root.kind()
            ),
        )
    };
    tokio::time::timeout(timeout, root.key_state())
        .await
        .map_err(|_| timed_out("key state"))?
        .map_err(|e| ProbeFailure::of(root, "key state", &e))?;
    let key = AesKey::generate()
        .map_err(|e| ProbeFailure::new(PROBE_FAILED, format!("no randomness: {e}")))?;
    let wrapped = tokio::time::timeout(timeout, root.wrap_kek(&key))
        .await
        .map_err(|_| timed_out("wrap"))?
        .map_err(|e| ProbeFailure::of(root, "wrap", &e))?;
    let unwrapped = tokio::time::timeout(
        timeout,
        root.unwrap_kek(&wrapped.key_id, &wrapped.ciphertext),
    )
    .await
    .map_err(|_| timed_out("unwrap"))?
    .map_err(|e| ProbeFailure::of(root, "unwrap", &e))?;
    if !unwrapped.ct_eq(&key) {
        return Err(ProbeFailure::new(
            PROBE_WRONG_KEY,
            format!("{} root key: unwrap returned a different key", root.kind()),
        ));
    }
    Ok(())
}

/// One probe, recorded in `health`; a newly revoked key's cached unwraps are dropped. Returns
/// whether it passed.
async fn probe_and_record(
    root: &dyn RootKey,
    health: &Health,
    unwraps: &UnwrapCache,
    timeout: Duration,
) -> bool {
    let key_id = root.primary_key_id();
    let result = probe(root, timeout).await;
    let passed = result.is_ok();
    if health.record(key_id.clone(), result) {
        let dropped = unwraps.forget(&key_id).await;
        tracing::warn!(%key_id, dropped, "dropped the cached unwraps of the revoked root key");
    }
    passed
}

/// The first retry after a failed probe; each further failure doubles it, up to [`LAST_RETRY`].
const FIRST_RETRY: Duration = Duration::from_secs(1);
/// The longest wait between probes while they fail: a backend that returns, after an outage of
/// any length, is seen healthy (and a pending KEK replacement resumes) within about this long.
const LAST_RETRY: Duration = Duration::from_secs(4);

/// When to probe next: `interval` after a success; after failures 1 s, 2 s, then every 4 s (never
/// longer than `interval`), so a backend that returns is seen healthy within seconds, not a
/// whole interval.
#[derive(Debug)]
struct ProbeSchedule {
    interval: Duration,
    retry: Duration,
}

impl ProbeSchedule {
    fn new(interval: Duration) -> Self {
        Self {
            interval,
            retry: FIRST_RETRY.min(interval),
        }
    }

    /// The wait before the next probe, given whether the last one passed.
    fn after(&mut self, passed: bool) -> Duration {
        if passed {
            self.retry = FIRST_RETRY.min(self.interval);
            return self.interval;
        }
        let wait = self.retry;
        self.retry = (self.retry * 2).min(LAST_RETRY).min(self.interval);
        wait
    }
}

/// Probes the root key every `interval` (sooner while it fails, see [`ProbeSchedule`]) and
/// refreshes it every `root.refresh_interval()` (and
/// whenever `refresh_now` fires, e.g. on SIGHUP) until `stop` turns true; a revoked key's
/// entries leave `unwraps`.
pub fn spawn_background(
    root: Arc<dyn RootKey>,
    health: Arc<Health>,
    unwraps: Arc<UnwrapCache>,
    interval: Duration,
    timeout: Duration,
    mut refresh_now: watch::Receiver<u64>,
    mut stop: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut schedule = ProbeSchedule::new(interval);
        let next_probe = tokio::time::sleep(Duration::ZERO);
        tokio::pin!(next_probe);
        let mut refresh_tick = tokio::time::interval(root.refresh_interval());
        refresh_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        refresh_tick.tick().await;
        loop {
            tokio::select! {
                _ = &mut next_probe => {
                    let passed = probe_and_record(root.as_ref(), &health, &unwraps, timeout).await;
                    next_probe.as_mut().reset(tokio::time::Instant::now() + schedule.after(passed));
                }
                _ = refresh_tick.tick() => refresh(root.as_ref(), &health, timeout).await,
                changed = refresh_now.changed() => {
                    if changed.is_err() { break; }
                    refresh(root.as_ref(), &health, timeout).await;
                }
                _ = stop.changed() => break,
            }
        }
    })
}

async fn refresh(root: &dyn RootKey, health: &Health, timeout: Duration) {
    let before = root.primary_key_id();
    let outcome = tokio::time::timeout(timeout, root.refresh()).await;
    match &outcome {
        Ok(Err(RootKeyError::Changed(_))) => health.set_keyring_changed(true),
        Ok(Ok(())) => health.set_keyring_changed(false),
        _ => {}
    }
    match outcome {
        Ok(Err(RootKeyError::Changed(_))) => {}
        Ok(Ok(())) => {
            let after = root.primary_key_id();
            if after != before {
                tracing::info!(old_key_id = %before, new_key_id = %after, "root key rotated; new data uses the new key id");
            }
        }
        Ok(Err(error)) => tracing::warn!(%error, "root key refresh failed"),
        Err(_) => tracing::warn!(?timeout, "root key refresh timed out"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::root_key::fake::FakeRootKey;
    use std::sync::atomic::Ordering;

    /// The background task over `fake`, probing every `interval` with `timeout`.
    struct Probing {
        health: Arc<Health>,
        _refresh: watch::Sender<u64>,
        stop: watch::Sender<bool>,
        task: tokio::task::JoinHandle<()>,
    }

    impl Probing {
        fn start(fake: &Arc<FakeRootKey>, interval: Duration, timeout: Duration) -> Self {
            let health = Arc::new(Health::default());
            assert!(!health.get().healthy, "unhealthy until the first probe");
            let (refresh, refresh_rx) = watch::channel(0);
            let (stop, stop_rx) = watch::channel(false);
            let cache = UnwrapCache::new(8, Duration::from_secs(60), Duration::from_secs(1));
            let task = spawn_background(
                fake.clone(),
                health.clone(),
                Arc::new(cache),
                interval,
                timeout,
                refresh_rx,
                stop_rx,
            );
            Self {
                health,
                _refresh: refresh,
                stop,
                task,
            }
        }

        async fn stop(self) {
            let _ = self.stop.send(true);
            self.task.await.expect("stops");
        }
    }

    #[tokio::test]
    async fn turns_unhealthy_with_a_reason_and_recovers() {
        let fake = Arc::new(FakeRootKey::new("root-1"));
        let probing = Probing::start(&fake, Duration::from_millis(50), Duration::from_millis(30));
        let health = probing.health.clone();
        tokio::time::sleep(Duration::from_millis(30)).await;
        assert_eq!(health.get().healthz, "ok");
        fake.delay_ms.store(500, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(200)).await;
        let state = health.get();
        assert!(!state.healthy);
        assert_eq!(state.healthz, PROBE_TIMED_OUT);
        fake.delay_ms.store(0, Ordering::SeqCst);
        fake.down.store(true, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert_eq!(
            health.get().healthz,
            PROBE_FAILED,
            "a fixed reason, not the backend's text"
        );
        fake.down.store(false, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert_eq!(health.get().healthz, "ok", "recovers by itself");
        probing.stop().await;
    }

    #[test]
    fn failed_probes_retry_from_one_second_doubling_to_the_interval() {
        let mut schedule = ProbeSchedule::new(Duration::from_secs(30));
        let waits: Vec<u64> = [false, false, false, false, false, false, true, false]
            .into_iter()
            .map(|passed| schedule.after(passed).as_secs())
            .collect();
        assert_eq!(waits, [1, 2, 4, 4, 4, 4, 30, 1]);
        let mut short = ProbeSchedule::new(Duration::from_millis(200));
        assert_eq!(short.after(false), Duration::from_millis(200));
    }

    /// With a 10 s interval, a backend that was down at the first probe and returns is seen
    /// healthy at the first retry, a second later, not at the next interval.
    #[tokio::test]
    async fn recovery_is_seen_at_the_first_retry_not_the_next_interval() {
        let fake = Arc::new(FakeRootKey::new("root-1"));
        fake.down.store(true, Ordering::SeqCst);
        let started = std::time::Instant::now();
        let probing = Probing::start(&fake, Duration::from_secs(10), Duration::from_millis(200));
        let health = probing.health.clone();
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(health.get().healthz, PROBE_FAILED);
        fake.down.store(false, Ordering::SeqCst);
        while health.get().healthz != "ok" {
            assert!(
                started.elapsed() < Duration::from_millis(2500),
                "not healthy again within 2.5 s"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        probing.stop().await;
    }
}
