//! What a rotation command may be told: the flag values of `pki rotate`, and the test hook run
//! after each step.

use std::path::PathBuf;
use std::time::Duration;

use super::coordinator::{Coordinator, LocalOnly};
use super::shared::CertificateKey;
use crate::spec::{DEFAULT_CA_VALIDITY, DEFAULT_LEAF_VALIDITY};

/// Default maximum service-account token lifetime assumed by `rotate sa finish`: 24 hours, the
/// longest interval after which the kubelet refreshes a projected token even when the API server
/// extended its expiry (kube-apiserver's default `--service-account-extend-token-expiration`).
pub const DEFAULT_MAX_TOKEN_LIFETIME: Duration = Duration::from_secs(24 * 3600);

/// Environment variable that makes the `pki` binary exit abruptly after that many steps (test
/// support for crash/rerun tests; the library itself only calls [`Options::after_step`]).
pub const FAIL_AFTER_STEP_ENV: &str = "PKI_ROTATE_FAIL_AFTER_STEP";

/// A callback run after each step has taken effect, before its marker is recorded.
pub type StepHook = Box<dyn FnMut(&str)>;

/// Options of a rotation command.
#[non_exhaustive]
pub struct Options {
    /// Static pod manifest directory to edit (`ca` only; recorded at `start`).
    pub manifests_dir: Option<PathBuf>,
    /// Lifetime of the new CA (`start`).
    pub ca_validity: Duration,
    /// Lifetime of the re-issued leaves (`switch`).
    pub leaf_validity: Duration,
    /// Maximum service-account token lifetime (`sa` `start`/`switch`; recorded).
    pub max_token_lifetime: Option<Duration>,
    /// Let `sa finish` run before the token lifetime has passed, or when the state file cannot
    /// tell when it passes.
    pub force: bool,
    /// Called after each step has taken effect, before its marker is recorded.
    pub after_step: Option<StepHook>,
    /// `start` on the first control-plane node: write the shared material here (and the
    /// workers' bundle at [`Options::export_public`]).
    pub export: Option<PathBuf>,
    /// Where the workers' public bundle goes; `<export>.public` when `None`.
    pub export_public: Option<PathBuf>,
    /// How long the control-plane file is accepted after it was written.
    pub export_ttl: Duration,
    /// `start` on every other control-plane node: take the new CA (key) from this file.
    pub join: Option<PathBuf>,
    /// The key the shared-material file is encrypted under (`--export`, `--join`).
    pub certificate_key: Option<CertificateKey>,
    /// The operator confirms what this node cannot see of its peers (`--confirm-nodes`):
    /// before `switch`, that every other control-plane node and every worker ran `start` and its
    /// restarts; before `abort`, that no node has run `switch`.
    pub confirm_nodes: bool,
    /// Where this node's commands meet the other nodes' (`--kubeconfig`); `None`: this node
    /// alone ([`LocalOnly`] with [`Options::confirm_nodes`]).
    pub coordinator: Option<Box<dyn Coordinator>>,
}

impl Options {
    /// Runs the [`Options::after_step`] hook, if any, for the step just done.
    /// The coordinator to ask: the one given, else [`LocalOnly`].
    pub(crate) fn coordinator(&mut self) -> &mut dyn Coordinator {
        let confirm_nodes = self.confirm_nodes;
        self.coordinator
            .get_or_insert_with(|| Box::new(LocalOnly { confirm_nodes }))
            .as_mut()
    }

    /// Runs the [`Options::after_step`] hook, if any, for the step just done.
    pub(crate) fn step_done(&mut self, step: &str) {
        if let Some(hook) = self.after_step.as_mut() {
            hook(step);
        }
    }
}

impl std::fmt::Debug for Options {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Options")
            .field("manifests_dir", &self.manifests_dir)
            .field("ca_validity", &self.ca_validity)
            .field("leaf_validity", &self.leaf_validity)
            .field("max_token_lifetime", &self.max_token_lifetime)
            .field("force", &self.force)
            .field("export", &self.export)
            .field("join", &self.join)
            .finish_non_exhaustive()
    }
}

impl Default for Options {
    fn default() -> Self {
        Options {
            manifests_dir: None,
            ca_validity: DEFAULT_CA_VALIDITY,
            leaf_validity: DEFAULT_LEAF_VALIDITY,
            max_token_lifetime: None,
            force: false,
            after_step: None,
            export: None,
            export_public: None,
            export_ttl: super::shared::DEFAULT_EXPORT_TTL,
            join: None,
            certificate_key: None,
            confirm_nodes: false,
            coordinator: None,
        }
    }
}
