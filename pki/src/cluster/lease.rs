//! The cluster-wide restart permission of `pki autopilot --kubeconfig`: the Lease
//! `kube-system/pki-autopilot` (coordination.k8s.io/v1), held by one node at a time. Taken and
//! renewed with the `resourceVersion` read (never a blind overwrite), taken over only once its
//! holder let it expire, given up at the end of the pass.

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{Api, ObjectMeta, PostParams};

use super::client::Cluster;
use super::record::NAMESPACE;
use crate::autopilot::RestartGate;

/// The Lease's name.
pub const LEASE_NAME: &str = "pki-autopilot";

/// A node's claim on the Lease.
#[derive(Debug)]
pub struct RestartLease {
    cluster: Cluster,
    holder: String,
    duration: Duration,
    wait: Duration,
}

impl RestartLease {
    /// The claim of node `holder`: held for `duration` after each renewal, waited for at most
    /// `wait` while another node holds it.
    pub fn new(cluster: Cluster, holder: String, duration: Duration, wait: Duration) -> Self {
        RestartLease {
            cluster,
            holder,
            duration,
            wait,
        }
    }

    fn api(&self) -> Api<Lease> {
        Api::namespaced(self.cluster.client(), NAMESPACE)
    }

    /// One attempt: `Ok(None)` once held, `Ok(Some(holder))` while another node holds it.
    fn try_take(&self, release: bool) -> Result<Option<String>, String> {
        let what = format!("{NAMESPACE}/Lease/{LEASE_NAME}");
        let now = k8s_openapi::jiff::Timestamp::now();
        let seconds = i32::try_from(self.duration.as_secs()).unwrap_or(i32::MAX);
        let current = self
            .cluster
            .call(&format!("get {what}"), self.api().get_opt(LEASE_NAME))
            .map_err(|e| e.to_string())?;
        let mut lease = current.clone().unwrap_or_else(|| Lease {
            metadata: ObjectMeta {
                name: Some(LEASE_NAME.to_owned()),
                namespace: Some(NAMESPACE.to_owned()),
                ..ObjectMeta::default()
            },
            spec: Some(LeaseSpec::default()),
        });
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        let holder = spec.holder_identity.clone().filter(|h| !h.is_empty());
        let mine = holder.as_deref() == Some(self.holder.as_str());
        if release {
            if !mine {
                return Ok(None);
            }
            spec.holder_identity = None;
            spec.renew_time = None;
        } else {
            let expired = spec.renew_time.as_ref().is_none_or(|t| {
                let secs = i64::from(spec.lease_duration_seconds.unwrap_or(0));
                t.0.as_second().saturating_add(secs) < now.as_second()
            });
            if let Some(h) = holder.as_ref().filter(|_| !mine && !expired) {
                return Ok(Some(h.clone()));
            }
            if !mine {
                spec.acquire_time = Some(MicroTime(now));
                spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
            }
            spec.holder_identity = Some(self.holder.clone());
            spec.lease_duration_seconds = Some(seconds);
            spec.renew_time = Some(MicroTime(now));
        }
        let written = match current {
            None => self.cluster.try_call(
                &format!("create {what}"),
                self.api().create(&PostParams::default(), &lease),
            ),
            Some(_) => self.cluster.try_call(
                &format!("update {what}"),
                self.api()
                    .replace(LEASE_NAME, &PostParams::default(), &lease),
            ),
        }
        .map_err(|e| e.to_string())?;
        match written {
            Ok(_) => Ok(None),
            // Another node wrote in between: decide again on what it wrote.
            Err(kube::Error::Api(s)) if s.is_conflict() || s.is_already_exists() => {
                Ok(Some("another node (it just wrote the Lease)".to_owned()))
            }
            Err(e) => Err(super::client::api_error(&what, e).to_string()),
        }
    }
}

impl RestartGate for RestartLease {
    fn acquire(&self) -> Result<String, String> {
        let start = Instant::now();
        let deadline = start + self.wait;
        let mut waited_for = None;
        loop {
            let holder = match self.try_take(false)? {
                None => {
                    let how = waited_for.map_or_else(String::new, |h: String| {
                        format!(
                            " after waiting {:.1}s for {h}",
                            start.elapsed().as_secs_f64()
                        )
                    });
                    return Ok(format!(
                        "holding the cluster-wide restart permission {NAMESPACE}/Lease/{LEASE_NAME}{how}"
                    ));
                }
                Some(h) => h,
            };
            waited_for = Some(holder.clone());
            if Instant::now() >= deadline {
                return Err(format!(
                    "{NAMESPACE}/Lease/{LEASE_NAME} is held by {holder}, still after {:?}: no restart now, nothing changed; the next pass tries again",
                    self.wait
                ));
            }
            std::thread::sleep(Duration::from_secs(1));
        }
    }

    fn renew(&self) -> Result<(), String> {
        match self.try_take(false)? {
            None => Ok(()),
            Some(h) => Err(format!("{NAMESPACE}/Lease/{LEASE_NAME} is now held by {h}")),
        }
    }

    fn release(&self) {
        // Best effort: an unreleased Lease expires after its duration.
        for _ in 0..3 {
            if let Ok(None) = self.try_take(true) {
                return;
            }
        }
    }
}
