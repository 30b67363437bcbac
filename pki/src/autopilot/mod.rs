//! `autopilot`: one unattended renewal pass for a control-plane node, meant for a timer.
//!
//! A pass takes an exclusive lock (`<cert dir>/.autopilot`, a second pass exits at once),
//! refuses while a `pki rotate` is in progress, waits a random `jitter`, finds what is due
//! ([`plan`], by the [`policy`]), backs it up ([`backup`]), renews it with [`crate::renew`]
//! (same subjects, SANs and key algorithms), then restarts the affected static pods one at a
//! time through their manifests ([`restart`]) and waits for each to be healthy ([`health`]);
//! a component that does not come back gets its previous certificate and key again, and later
//! passes back off ([`backoff`]). CAs are never renewed (a CA expiring within a year is
//! reported), nor a leaf its CA's expiry caps (renewing it again would not extend it);
//! kubelet.conf and the kubelet's own certificates are left to the kubelet. [`metrics`] renders
//! the Prometheus textfile.

pub mod backoff;
pub mod backup;
pub mod health;
pub mod listener;
pub mod metrics;
mod pass;
pub mod peers;
pub mod pending;
pub mod plan;
pub mod policy;
pub mod reload;
pub mod report;
pub mod restart;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

pub use pass::run;
pub use policy::Policy;

/// Test hook, honoured by the binary for tests only: after renewal, the certificate file of the
/// renewed name given here (e.g. `etcd-server`) is overwritten with a PEM block that no
/// component can load, to exercise the rollback.
pub const BREAK_RENEWED_ENV: &str = "PKI_AUTOPILOT_BREAK_RENEWED";

/// Options of a pass.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Options {
    /// Static pod manifests (`/etc/kubernetes/manifests`).
    pub manifests_dir: PathBuf,
    /// When a certificate is due.
    pub policy: Policy,
    /// Lifetime of renewed certificates.
    pub validity: Duration,
    /// Upper bound of the random delay before acting.
    pub jitter: Duration,
    /// Report only; write nothing.
    pub dry_run: bool,
    /// How long a restarted component has to become healthy.
    pub health_timeout: Duration,
    /// Prometheus textfile to write.
    pub metrics_file: Option<PathBuf>,
    /// Name whose renewed certificate to break ([`BREAK_RENEWED_ENV`]).
    pub break_renewed: Option<String>,
    /// Cluster-wide permission to restart (`--kubeconfig`: a Lease); `None`: this node alone.
    pub restart_gate: Option<Arc<dyn RestartGate>>,
}

/// Cluster-wide permission to restart control-plane components, held by one node at a time so
/// that no two nodes restart a component (two etcd members) at once.
pub trait RestartGate: std::fmt::Debug + Send + Sync {
    /// Waits (bounded) until this node holds the permission and says how it got it; `Err`
    /// says who holds it.
    fn acquire(&self) -> std::result::Result<String, String>;
    /// Before each restart: keeps the permission from expiring; `Err` when it was lost.
    fn renew(&self) -> std::result::Result<(), String>;
    /// Gives the permission up (best effort: it expires anyway).
    fn release(&self);
}

impl Options {
    /// Defaults: one-third policy, one-year certificates, no jitter, 5 minutes per restart.
    pub fn new(manifests_dir: impl Into<PathBuf>) -> Self {
        Options {
            manifests_dir: manifests_dir.into(),
            policy: Policy::default(),
            validity: Duration::from_secs(365 * 24 * 3600),
            jitter: Duration::ZERO,
            dry_run: false,
            health_timeout: Duration::from_secs(300),
            metrics_file: None,
            break_renewed: None,
            restart_gate: None,
        }
    }
}

/// Why a pass did not succeed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Failure {
    /// Another pass holds the lock (nothing written).
    Locked,
    /// A `pki rotate` is in progress (or its state cannot be read).
    RotationInProgress(String),
    /// Renewal failed.
    Renew(String),
    /// A component did not come back healthy (after the rollback, or the rollback failed too).
    Restart(String),
    /// Earlier passes failed: this one waits (see [`backoff`]).
    BackingOff(String),
    /// Another node holds the cluster-wide restart permission, or an etcd peer is unhealthy:
    /// nothing was changed, the next pass tries again.
    Waiting(String),
}

impl Failure {
    /// The short reason label of the failure metric.
    pub fn code(&self) -> &'static str {
        match self {
            Failure::Locked => "locked",
            Failure::RotationInProgress(_) => "rotation-in-progress",
            Failure::Renew(_) => "renew-failed",
            Failure::Restart(_) => "restart-failed",
            Failure::BackingOff(_) => "backing-off",
            Failure::Waiting(_) => "waiting",
        }
    }

    /// Whether the pass changed files and failed (what makes later passes back off), as
    /// opposed to refusing before it acted.
    pub fn acted(&self) -> bool {
        matches!(self, Failure::Renew(_) | Failure::Restart(_))
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Locked => f.write_str("another autopilot pass holds the lock"),
            Failure::RotationInProgress(s)
            | Failure::Renew(s)
            | Failure::Restart(s)
            | Failure::BackingOff(s)
            | Failure::Waiting(s) => f.write_str(s),
        }
    }
}

/// What a pass did (or, with `dry_run`, would do).
#[derive(Debug, Default)]
#[non_exhaustive]
pub struct Outcome {
    /// Renewed names and their files.
    pub renewed: Vec<(String, PathBuf)>,
    /// Components restarted and healthy (or restarted without a health check, see `notes`).
    pub restarted: Vec<String>,
    /// Components with renewed certificates that were not restarted, with the reason.
    pub not_restarted: Vec<(String, String)>,
    /// Components whose previous certificates were restored.
    pub rolled_back: Vec<String>,
    /// CAs expiring within a year: `(name, notAfter)`.
    pub expiring_cas: Vec<(String, time::OffsetDateTime)>,
    /// Things an operator must look at (kubelet rotation, external CAs).
    pub warnings: Vec<String>,
    /// Progress notes.
    pub notes: Vec<String>,
    /// The backup taken before renewal.
    pub backup: Option<PathBuf>,
    /// Set when the pass failed.
    pub failure: Option<Failure>,
}
