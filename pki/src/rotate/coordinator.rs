//! Where one node's rotation command meets the other nodes. A phase (or abort) asks the
//! [`Coordinator`] once this node's own state admits it, just before it changes anything, and
//! tells it once it is complete. Two coordinators exist: [`LocalOnly`] (no cluster view: the
//! operator confirms what the node cannot see, `--confirm-nodes`) and the Kubernetes API one
//! (`pki rotate --kubeconfig`, in [`crate::cluster`]), which reads every node's state.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::material::Material;
use super::plan::{Phase, Plan, Target};
use super::shared::ca_cert_hash;
use super::state::State;
use super::steps::Generation;
use crate::error::{Error, Result};
use crate::inspect::Cert;
use crate::kubeconfig;
use crate::store;

/// What a command does to this node's rotation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Move {
    /// `start`: trust old and new.
    Start,
    /// `switch`: sign with the new CA (key).
    Switch,
    /// `finish`: trust only the new one.
    Finish,
    /// `abort`: put everything back as before `start`.
    Abort,
}

impl Move {
    /// The subcommand's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Move::Start => "start",
            Move::Switch => "switch",
            Move::Finish => "finish",
            Move::Abort => "abort",
        }
    }
}

impl From<Phase> for Move {
    fn from(p: Phase) -> Move {
        match p {
            Phase::Start => Move::Start,
            Phase::Switch => Move::Switch,
            Phase::Finish => Move::Finish,
        }
    }
}

impl std::fmt::Display for Move {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where this node stands, as its peers see it.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct NodeReport {
    /// This node's rotation state file (named in refusals).
    pub state: PathBuf,
    /// The rotation's id (the same on every node of one rotation).
    pub rotation_id: String,
    /// A worker (holds only trust files), else a control-plane node.
    pub worker: bool,
    /// `sha256:<hex>` of the old CA's SubjectPublicKeyInfo (or the old public key), when known.
    pub old_anchor: Option<String>,
    /// The same of the new CA (key), when known.
    pub new_anchor: Option<String>,
    /// The new CA certificate(s), PEM (`None` for `sa`, or before it is known).
    pub new_ca_pem: Option<String>,
    /// The old CA certificate(s), PEM (`None` for `sa`, or when not known).
    pub old_ca_pem: Option<String>,
    /// `sa`: after this moment no token signed by the old key can still be valid.
    pub tokens_valid_until: Option<OffsetDateTime>,
    /// `sha256:<hex>` of the CA that signed this node's kubelet client certificate, when it is
    /// the old or the new one.
    pub kubelet_client_ca: Option<String>,
    /// `ca`, control-plane node: its `ca.crt` as the step left it (what joining nodes are
    /// handed in `kube-public/cluster-info`).
    pub ca_bundle_pem: Option<String>,
}

impl NodeReport {
    /// A control-plane node's report from its state alone (nothing staged yet).
    pub(crate) fn bare(plan: &Plan, s: &State) -> NodeReport {
        NodeReport {
            state: super::plan::state_path(&plan.layout),
            rotation_id: s.rotation_id.clone().unwrap_or_default(),
            tokens_valid_until: s.tokens_valid_until(),
            ..NodeReport::default()
        }
    }

    /// A control-plane node's report, from its state and what is staged (the CAs' pins are
    /// left out once nothing is staged any more, after `finish`).
    pub(crate) fn control_plane(plan: &Plan, s: &State) -> NodeReport {
        let mut r = NodeReport::bare(plan, s);
        if plan.target == Target::Ca {
            r.ca_bundle_pem = store::read_optional(&plan.anchor()).ok().flatten();
        }
        if let Ok(m) = Material::load(plan) {
            let origin = plan.staged_dir();
            let hash = |g| ca_cert_hash(plan.target, &m.anchor_entry(g), &origin).ok();
            r.old_anchor = hash(Generation::Old);
            r.new_anchor = hash(Generation::New);
            r.new_ca_pem = m.cert(Generation::New).map(Cert::pem);
            r.old_ca_pem = m.cert(Generation::Old).map(Cert::pem);
            if plan.target == Target::Ca {
                let conf = plan.layout.kubeconfig_dir.join("kubelet.conf");
                let cas: Vec<&Cert> = [Generation::New, Generation::Old]
                    .into_iter()
                    .filter_map(|g| m.cert(g))
                    .collect();
                r.kubelet_client_ca = kubelet_client_ca(&conf, &cas);
            }
        }
        r
    }

    /// A worker's report, from the anchors of its public bundle and its `kubelet.conf`.
    pub(crate) fn worker(
        state: PathBuf,
        rotation_id: &str,
        old: &str,
        new: &str,
        kubelet_conf: &Path,
    ) -> Result<NodeReport> {
        let certs = |pem: &str| crate::inspect::parse_bundle(pem, &state);
        let (old_certs, new_certs) = (certs(old)?, certs(new)?);
        let cas: Vec<&Cert> = new_certs.iter().chain(&old_certs).collect();
        Ok(NodeReport {
            rotation_id: rotation_id.to_owned(),
            worker: true,
            old_anchor: Some(ca_cert_hash(Target::Ca, old, &state)?),
            new_anchor: Some(ca_cert_hash(Target::Ca, new, &state)?),
            new_ca_pem: Some(new.to_owned()),
            old_ca_pem: Some(old.to_owned()),
            kubelet_client_ca: kubelet_client_ca(kubelet_conf, &cas),
            state,
            ..NodeReport::default()
        })
    }
}

/// Which of `cas` signed the client certificate of `kubelet.conf` (embedded, or a file it
/// references such as `kubelet-client-current.pem`), as its pin; `None` when unreadable or none.
fn kubelet_client_ca(conf: &Path, cas: &[&Cert]) -> Option<String> {
    let text = store::read_secret_optional(conf).ok()??;
    let cert = kubeconfig::parse(&text, conf).ok()?.client_cert?;
    let ca = cas.iter().find(|ca| cert.is_signed_by(ca))?;
    ca_cert_hash(Target::Ca, &ca.pem(), conf).ok()
}

/// Where one node's rotation commands meet the other nodes'.
pub trait Coordinator {
    /// Just before `step` first changes anything on this node (its own state admits it):
    /// refuses unless the other nodes' state admits it too, else records that it has begun.
    /// Returns remarks for the operator (e.g. a gate `--force` overrode).
    fn begin(&mut self, target: Target, step: Move, me: &NodeReport) -> Result<Vec<String>>;

    /// Once `step` is complete on this node (also when a rerun finds it already complete).
    /// Returns remarks for the operator (e.g. what it updated in the cluster).
    fn complete(&mut self, target: Target, step: Move, me: &NodeReport) -> Result<Vec<String>>;
}

/// No cluster view: `switch` and `abort` go ahead only when the operator confirms what this node
/// cannot see of its peers (`--confirm-nodes`).
#[derive(Debug, Clone, Copy, Default)]
pub struct LocalOnly {
    /// `--confirm-nodes` was given.
    pub confirm_nodes: bool,
}

impl Coordinator for LocalOnly {
    fn begin(&mut self, target: Target, step: Move, me: &NodeReport) -> Result<Vec<String>> {
        if self.confirm_nodes {
            return Ok(Vec::new());
        }
        let reason = match step {
            Move::Switch => format!(
                "`switch` is safe only once every other control-plane node and every worker has \
                 run `start` (and the restarts it printed), which this node cannot see: once they \
                 have, run `pki rotate {target} switch --confirm-nodes` (or give --kubeconfig, and \
                 the cluster's state decides)"
            ),
            Move::Abort => format!(
                "`abort` undoes this node only: if any other node has run `switch`, what its new \
                 {target} signed would stop being trusted here, and this node cannot see its \
                 peers. If no node has run `switch`, run `pki rotate {target} abort \
                 --confirm-nodes` (on every node that ran `start`); otherwise complete the \
                 rotation (or give --kubeconfig, and the cluster's state decides)"
            ),
            Move::Start | Move::Finish => return Ok(Vec::new()),
        };
        Err(Error::RotationRefused {
            state: me.state.clone(),
            reason,
        })
    }

    fn complete(&mut self, _target: Target, _step: Move, _me: &NodeReport) -> Result<Vec<String>> {
        Ok(Vec::new())
    }
}
