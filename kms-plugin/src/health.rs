//! Root key health, probed in the background so Status answers from memory at once.
//!
//! A new local KEK that failed its proof (see the envelope) also makes the plugin unhealthy,
//! with [`KEK_PROOF_FAILED`] as the reason, until a later new KEK passes its proof.
//!
//! `healthz` is `ok` or one of the fixed reasons below: it reaches `/healthz`, `/readyz` and
//! Status, so the backend's own error text (ARNs, accounts, module paths) goes to the log only.

use crate::root_key::RootKey;
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

/// Why a probe failed: a fixed reason for `healthz`, and the details for the log only.
#[derive(Debug)]
pub struct ProbeFailure {
    /// One of the fixed reasons of this module.
    pub reason: &'static str,
    /// The backend's own error text; never leaves the process except in the log.
    pub detail: String,
}

impl ProbeFailure {
    fn new(reason: &'static str, detail: String) -> Self {
        Self { reason, detail }
    }
}

/// Shared, cheaply readable health of the root key.
pub struct Health {
    state: RwLock<HealthState>,
    kek_proof_failed: AtomicBool,
}

impl Default for Health {
    fn default() -> Self {
        Self {
            state: RwLock::new(HealthState {
                healthy: false,
                healthz: STARTING.into(),
                last_success: None,
            }),
            kek_proof_failed: AtomicBool::new(false),
        }
    }
}

impl Health {
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
        state
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
            Err(ProbeFailure { reason, detail }) => {
                if state.healthy || state.healthz != reason {
                    tracing::warn!(reason, %detail, "root key probe failed; reporting unhealthy");
                }
                state.healthy = false;
                state.healthz = reason.into();
            }
        }
    }
}

/// One wrap and unwrap of a throwaway key through the root key, each bounded by `timeout`.
pub async fn probe(root: &dyn RootKey, timeout: Duration) -> Result<(), ProbeFailure> {
    let kind = root.kind();
    let key = AesKey::generate()
        .map_err(|e| ProbeFailure::new(PROBE_FAILED, format!("no randomness: {e}")))?;
    let wrapped = tokio::time::timeout(timeout, root.wrap_kek(&key))
        .await
        .map_err(|_| {
            ProbeFailure::new(
                PROBE_TIMED_OUT,
                format!("{kind} root key: wrap timed out after {timeout:?}"),
            )
        })?
        .map_err(|e| {
            ProbeFailure::new(PROBE_FAILED, format!("{kind} root key: wrap failed: {e}"))
        })?;
    let unwrapped = tokio::time::timeout(
        timeout,
        root.unwrap_kek(&wrapped.key_id, &wrapped.ciphertext),
    )
    .await
    .map_err(|_| {
        ProbeFailure::new(
            PROBE_TIMED_OUT,
            format!("{kind} root key: unwrap timed out after {timeout:?}"),
        )
    })?
    .map_err(|e| ProbeFailure::new(PROBE_FAILED, format!("{kind} root key: unwrap failed: {e}")))?;
    if !unwrapped.ct_eq(&key) {
        return Err(ProbeFailure::new(
            PROBE_WRONG_KEY,
            format!("{kind} root key: unwrap returned a different key"),
        ));
    }
    Ok(())
}

/// Probes the root key every `interval` and refreshes it every `root.refresh_interval()` (and
/// whenever `refresh_now` fires, e.g. on SIGHUP) until `stop` turns true.
pub fn spawn_background(
    root: Arc<dyn RootKey>,
    health: Arc<Health>,
    interval: Duration,
    timeout: Duration,
    mut refresh_now: watch::Receiver<u64>,
    mut stop: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut probe_tick = tokio::time::interval(interval);
        probe_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut refresh_tick = tokio::time::interval(root.refresh_interval());
        refresh_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        refresh_tick.tick().await;
        loop {
            tokio::select! {
                _ = probe_tick.tick() => health.set(probe(root.as_ref(), timeout).await),
                _ = refresh_tick.tick() => refresh(root.as_ref(), timeout).await,
                changed = refresh_now.changed() => {
                    if changed.is_err() { break; }
                    refresh(root.as_ref(), timeout).await;
                }
                _ = stop.changed() => break,
            }
        }
    })
}

async fn refresh(root: &dyn RootKey, timeout: Duration) {
    let before = root.primary_key_id();
    match tokio::time::timeout(timeout, root.refresh()).await {
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

    #[tokio::test]
    async fn turns_unhealthy_with_a_reason_and_recovers() {
        let fake = Arc::new(FakeRootKey::new("root-1"));
        let health = Arc::new(Health::default());
        assert!(!health.get().healthy, "unhealthy until the first probe");
        let (_refresh_tx, refresh_rx) = watch::channel(0);
        let (stop_tx, stop_rx) = watch::channel(false);
        let task = spawn_background(
            fake.clone(),
            health.clone(),
            Duration::from_millis(50),
            Duration::from_millis(30),
            refresh_rx,
            stop_rx,
        );
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
        let _ = stop_tx.send(true);
        task.await.expect("stops");
    }
}
