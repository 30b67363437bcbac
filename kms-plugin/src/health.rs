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
//! probe succeeds again. An unreachable backend never stops the current KEK or the cache.
//!
//! An outage (a probe that timed out or failed without the backend saying the key is unusable)
//! is reported by the [`OutagePolicy`]: with `serve` (the default), Status stays "ok" while the
//! local KEK can still seal (below `max_uses` and `max_age`) and for at most the grace, then says
//! [`OUTAGE_GRACE_ENDED`] or [`OUTAGE_KEK_LIMIT`]; with `report`, every failed probe shows at
//! once. Either way [`HealthState::outage`] tells how long the backend has been unreachable.

use crate::envelope::{Envelope, UnwrapCache};
use crate::root_key::{KeyId, RootKey, RootKeyError};
use crate::secret::AesKey;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};
use tokio::sync::watch;

/// What the last probe found.
#[derive(Clone, Debug)]
pub struct HealthState {
    /// True when Status reports "ok": the last root key round trip succeeded, or (from
    /// [`Health::report`]) the plugin serves through an outage within its grace.
    pub healthy: bool,
    /// `"ok"`, or a short reason kube-apiserver shows in its health checks.
    pub healthz: String,
    /// When a root key round trip last succeeded.
    pub last_success: Option<SystemTime>,
    /// Set while the backend is unreachable (filled in by [`Health::report`]).
    pub outage: Option<Outage>,
}

/// A backend outage as Status sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Outage {
    /// The first failed probe of the outage.
    pub since: SystemTime,
    /// True while Status says "ok" through it (policy `serve`, within the grace).
    pub serving: bool,
    /// When the grace ends (or ended): `since` plus the grace, or earlier when the local KEK
    /// reaches `max_age`; `None` under policy `report` or without a KEK that can seal.
    pub grace_until: Option<SystemTime>,
}

/// How an outage is reported (`health.backend_outage` and `health.outage_grace`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OutagePolicy {
    /// Stay "ok" while the plugin can serve (`serve`), or report every failed probe (`report`).
    pub serve: bool,
    /// Longest time Status stays "ok" through one outage.
    pub grace: Duration,
}

impl Default for OutagePolicy {
    fn default() -> Self {
        Self {
            serve: true,
            grace: Duration::from_secs(24 * 3600),
        }
    }
}

/// The `healthz` reason once an outage outlasted `health.outage_grace`.
pub const OUTAGE_GRACE_ENDED: &str = "root key unreachable beyond health.outage_grace";
/// The `healthz` reason once the local KEK reached `max_age` during an outage.
pub const OUTAGE_KEK_LIMIT: &str = "root key unreachable and the local KEK reached max_age";

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

/// Whether `healthz` is a reason an outage gives (the backend timed out or failed).
fn is_outage_reason(reason: &str) -> bool {
    matches!(reason, PROBE_TIMED_OUT | PROBE_FAILED)
}

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
    /// An outage: the backend could not be reached or failed, without saying the key is
    /// unusable (revoked, a changed keyring or a wrong key are not outages).
    fn is_outage(&self) -> bool {
        !self.revoked && is_outage_reason(self.reason)
    }

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
    /// Older (non-primary) versions the backend reported revoked at a refresh.
    older_revoked: RwLock<std::collections::BTreeSet<KeyId>>,
    outage_policy: OutagePolicy,
    /// The first failed probe of the current outage.
    outage_since: RwLock<Option<SystemTime>>,
    /// Whether the current outage's grace was seen running (1) or over (2), to log each once.
    outage_logged: std::sync::atomic::AtomicU8,
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
                outage: None,
            }),
            kek_proof_failed: AtomicBool::new(false),
            keyring_changed: AtomicBool::new(false),
            revocation_stops_encrypt,
            revoked: RwLock::new(None),
            older_revoked: RwLock::new(Default::default()),
            outage_policy: OutagePolicy::default(),
            outage_since: RwLock::new(None),
            outage_logged: std::sync::atomic::AtomicU8::new(0),
        }
    }

    /// The same health, reporting outages by `policy`.
    pub fn with_outage_policy(mut self, policy: OutagePolicy) -> Self {
        self.outage_policy = policy;
        self
    }

    /// The outage policy in force.
    pub fn outage_policy(&self) -> OutagePolicy {
        self.outage_policy
    }

    /// What Status reports: [`Health::get`], with the outage policy applied. `seal_until` is
    /// when the current local KEK stops being usable for Encrypt without the root key (its
    /// `max_age`), `None` when no KEK can seal (none yet, `max_uses` reached, another root key).
    pub fn report(&self, seal_until: Option<SystemTime>) -> HealthState {
        let mut state = self.get();
        let Some(since) = self.outage_since() else {
            return state;
        };
        let mut outage = Outage {
            since,
            serving: false,
            grace_until: None,
        };
        // Only an outage the probe reported as such: a revoked key, a changed keyring or a
        // failed KEK proof (which `get` puts first) get no grace.
        let outage_reason = is_outage_reason(&state.healthz);
        if self.outage_policy.serve
            && outage_reason
            && let Some(kek_end) = seal_until
        {
            let grace_end = since + self.outage_policy.grace;
            let until = grace_end.min(kek_end);
            outage.grace_until = Some(until);
            if SystemTime::now() < until {
                outage.serving = true;
                state.healthy = true;
                state.healthz = "ok".into();
                self.log_outage_phase(1, until);
            } else {
                state.healthz = if until == grace_end {
                    OUTAGE_GRACE_ENDED
                } else {
                    OUTAGE_KEK_LIMIT
                }
                .into();
                self.log_outage_phase(2, until);
            }
        }
        state.outage = Some(outage);
        state
    }

    /// Logs the outage's grace starting (1) or ending (2), each once per outage.
    fn log_outage_phase(&self, phase: u8, until: SystemTime) {
        let before = self.outage_logged.swap(phase, Ordering::Relaxed);
        if before == phase {
            return;
        }
        let until = crate::time_text::rfc3339(until);
        if phase == 1 {
            tracing::warn!(%until, "root key unreachable: Status stays ok while the local KEK and the cache serve, until the grace ends");
        } else {
            tracing::error!(%until, "root key still unreachable and the outage grace is over: Status reports unhealthy");
        }
    }

    /// The first failed probe of the current outage, while the backend is unreachable.
    pub fn outage_since(&self) -> Option<SystemTime> {
        match self.outage_since.read() {
            Ok(guard) => *guard,
            Err(poisoned) => *poisoned.into_inner(),
        }
    }

    fn set_outage(&self, outage: bool) {
        let mut since = match self.outage_since.write() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        if outage {
            since.get_or_insert_with(SystemTime::now);
        } else if since.take().is_some() {
            self.outage_logged.store(0, Ordering::Relaxed);
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

    /// True when `key_id` is the revoked root key, or an older version reported revoked:
    /// nothing is sealed or opened under it.
    pub fn is_revoked(&self, key_id: &KeyId) -> bool {
        self.revoked_key().as_ref() == Some(key_id)
            || self
                .older_revoked
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .contains(key_id)
    }

    /// Older versions reported revoked, still checked at each refresh in case they return.
    fn older_revoked(&self) -> Vec<KeyId> {
        let older = self.older_revoked.read().unwrap_or_else(|p| p.into_inner());
        older.iter().cloned().collect()
    }

    /// Records what the backend says about the older version `key_id`; returns true when it
    /// newly marked that version revoked. Outages change nothing.
    fn record_older(&self, key_id: &KeyId, state: &Result<(), RootKeyError>) -> bool {
        let mut older = self
            .older_revoked
            .write()
            .unwrap_or_else(|p| p.into_inner());
        match state {
            Ok(()) => {
                if older.remove(key_id) {
                    tracing::info!(%key_id, "the older root key version answers again; no longer revoked");
                }
                false
            }
            Err(error) if error.is_revocation() && self.revocation_stops_encrypt => {
                let newly = older.insert(key_id.clone());
                if newly {
                    tracing::error!(%key_id, %error, "the backend reports an older root key version revoked: its data is refused and its cached unwraps are dropped");
                }
                newly
            }
            Err(_) => false,
        }
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
        self.set_outage(result.as_ref().is_err_and(ProbeFailure::is_outage));
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

/// Probes the envelope's root key every `interval` (sooner while it fails, see
/// [`ProbeSchedule`]) and refreshes it every `root.refresh_interval()` (and whenever
/// `refresh_now` fires, e.g. on SIGHUP) until `stop` turns true; a revoked key's entries leave
/// the unwrap cache, and after every passing probe a KEK replacement that is due (one that failed
/// during an outage) starts at once.
pub fn spawn_background(
    envelope: Arc<Envelope>,
    health: Arc<Health>,
    interval: Duration,
    timeout: Duration,
    mut refresh_now: watch::Receiver<u64>,
    mut stop: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    let root = envelope.root().clone();
    let unwraps = envelope.unwraps().clone();
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
                    if passed {
                        envelope.keks().resume_replacement();
                    }
                    next_probe.as_mut().reset(tokio::time::Instant::now() + schedule.after(passed));
                }
                _ = refresh_tick.tick() => refresh(root.as_ref(), &health, &unwraps, timeout).await,
                changed = refresh_now.changed() => {
                    if changed.is_err() { break; }
                    refresh(root.as_ref(), &health, &unwraps, timeout).await;
                }
                _ = stop.changed() => break,
            }
        }
    })
}

async fn refresh(root: &dyn RootKey, health: &Health, unwraps: &UnwrapCache, timeout: Duration) {
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
            // A version refused as unknown a moment ago may be here now.
            unwraps.forget_failures();
            let after = root.primary_key_id();
            if after != before {
                tracing::info!(old_key_id = %before, new_key_id = %after, "root key rotated; new data uses the new key id");
            }
            for key_id in unwraps.key_ids() {
                if root.holds(&key_id) == Some(false) {
                    let dropped = unwraps.forget(&key_id).await;
                    tracing::warn!(%key_id, dropped, "root key version removed: dropped its cached unwraps; its data is refused from now on");
                }
            }
            check_older_versions(root, health, unwraps, timeout).await;
        }
        Ok(Err(error)) => tracing::warn!(%error, "root key refresh failed"),
        Err(_) => tracing::warn!(?timeout, "root key refresh timed out"),
    }
}

/// Asks the backend about every older version with cached unwraps, and those already found
/// revoked: one newly revoked loses its cached unwraps, and its data is refused until the
/// backend reports it usable again. Runs at each refresh, so less often than the primary's
/// probe; the primary is the probe's business.
async fn check_older_versions(
    root: &dyn RootKey,
    health: &Health,
    unwraps: &UnwrapCache,
    timeout: Duration,
) {
    let primary = root.primary_key_id();
    let mut versions = unwraps.key_ids();
    for revoked in health.older_revoked() {
        if !versions.contains(&revoked) {
            versions.push(revoked);
        }
    }
    for key_id in versions.into_iter().filter(|k| *k != primary) {
        let state = match tokio::time::timeout(timeout, root.version_state(&key_id)).await {
            Ok(state) => state,
            Err(_) => continue,
        };
        if health.record_older(&key_id, &state) {
            let dropped = unwraps.forget(&key_id).await;
            tracing::warn!(%key_id, dropped, "dropped the cached unwraps of the revoked older root key version");
        }
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
            let policy = crate::envelope::KekPolicy {
                max_uses: 1000,
                max_age: Duration::from_secs(3600),
                wrap_timeout: timeout,
                retry_interval: interval,
            };
            let envelope = Envelope::new(fake.clone(), policy, cache, health.clone());
            let task = spawn_background(
                Arc::new(envelope),
                health.clone(),
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

    fn key() -> KeyId {
        KeyId::new("k").expect("key id")
    }

    fn failed(reason: &'static str) -> Result<(), ProbeFailure> {
        Err(ProbeFailure::new(reason, "detail for the log".into()))
    }

    fn in_an_hour() -> Option<SystemTime> {
        Some(SystemTime::now() + Duration::from_secs(3600))
    }

    #[test]
    fn an_outage_is_served_within_the_grace_and_reported_after_it() {
        let grace = Duration::from_millis(80);
        let health = Health::new(true).with_outage_policy(OutagePolicy { serve: true, grace });
        health.record(key(), Ok(()));
        assert!(health.report(in_an_hour()).outage.is_none());
        health.record(key(), failed(PROBE_TIMED_OUT));
        let served = health.report(in_an_hour());
        assert_eq!((served.healthy, served.healthz.as_str()), (true, "ok"));
        let outage = served.outage.expect("an outage");
        assert!(outage.serving);
        assert_eq!(outage.grace_until, Some(outage.since + grace));
        assert_eq!(
            health.get().healthz,
            PROBE_TIMED_OUT,
            "the probe's own view"
        );
        health.record(key(), failed(PROBE_FAILED));
        assert_eq!(
            health.report(in_an_hour()).outage.map(|o| o.since),
            Some(outage.since),
            "one outage, from its first failed probe"
        );
        std::thread::sleep(grace + Duration::from_millis(20));
        let over = health.report(in_an_hour());
        assert_eq!(
            (over.healthy, over.healthz.as_str()),
            (false, OUTAGE_GRACE_ENDED)
        );
        assert!(!over.outage.expect("still down").serving);
        health.record(key(), Ok(()));
        let back = health.report(in_an_hour());
        assert_eq!((back.healthz.as_str(), back.outage), ("ok", None));
    }

    #[test]
    fn the_grace_ends_with_the_kek_or_never_starts_without_one() {
        let health = Health::new(true);
        health.record(key(), failed(PROBE_FAILED));
        let soon = SystemTime::now() + Duration::from_millis(30);
        assert_eq!(health.report(Some(soon)).healthz, "ok");
        std::thread::sleep(Duration::from_millis(40));
        assert_eq!(health.report(Some(soon)).healthz, OUTAGE_KEK_LIMIT);
        let none = health.report(None);
        assert_eq!(none.healthz, PROBE_FAILED, "no KEK can seal: no grace");
        assert_eq!(
            none.outage.map(|o| (o.serving, o.grace_until)),
            Some((false, None))
        );
    }

    #[test]
    fn policy_report_and_non_outages_get_no_grace() {
        let report = Health::new(true).with_outage_policy(OutagePolicy {
            serve: false,
            grace: Duration::from_secs(3600),
        });
        report.record(key(), failed(PROBE_TIMED_OUT));
        assert_eq!(report.report(in_an_hour()).healthz, PROBE_TIMED_OUT);
        assert!(
            report.report(in_an_hour()).outage.is_some(),
            "still visible"
        );
        let serve = Health::new(true);
        let revoked = ProbeFailure {
            reason: PROBE_FAILED,
            detail: "DisabledException".into(),
            revoked: true,
        };
        serve.record(key(), Err(revoked));
        let state = serve.report(in_an_hour());
        assert_eq!(
            (state.healthz.as_str(), state.outage),
            (ROOT_KEY_REVOKED, None)
        );
        let wrong = Health::new(true);
        wrong.record(key(), failed(PROBE_WRONG_KEY));
        assert_eq!(wrong.report(in_an_hour()).healthz, PROBE_WRONG_KEY);
        wrong.record(key(), failed(PROBE_FAILED));
        wrong.set_kek_proof(false);
        assert_eq!(wrong.report(in_an_hour()).healthz, KEK_PROOF_FAILED);
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
