//! What `init` learnt about this node that later commands need: the Kubernetes version,
//! whether the node joined an existing control plane and whether etcd is external. Kept in `<kubeconfig dir>/.pki-node.json`
//! so that `check-expiration` knows which files belong here (a joined control-plane node has no
//! `super-admin.conf`, nor has any node before 1.29) instead of reporting them missing.
//!
//! Without the file (kubeadm-made nodes, older `pki` runs) every kubeadm file of the newest
//! version is expected: a missing file then still alerts, which is the safe side.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::profile::{self, KubeconfigProfile};
use crate::store;
use crate::version::KubernetesVersion;

/// File name of the node state in the kubeconfig dir.
pub const FILE_NAME: &str = ".pki-node.json";

/// The recorded facts about this node.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct NodeState {
    /// The Kubernetes version the PKI was laid out for.
    pub kubernetes_version: KubernetesVersion,
    /// True on a control-plane node that joined an existing cluster.
    pub control_plane_join: bool,
    /// True when etcd is external: no etcd CA or etcd certificates belong here.
    pub etcd_external: bool,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Raw {
    kubernetes_version: String,
    control_plane_join: bool,
    #[serde(default)]
    etcd_external: bool,
}

impl NodeState {
    /// A state for the given version and role.
    pub fn new(kubernetes_version: KubernetesVersion, control_plane_join: bool) -> Self {
        NodeState {
            kubernetes_version,
            control_plane_join,
            etcd_external: false,
        }
    }

    /// Whether the kubeconfig `kc` belongs on this node.
    pub fn expects(&self, kc: &KubeconfigProfile) -> bool {
        profile::kubeconfig_expected(kc, self.kubernetes_version, self.control_plane_join)
    }
}

/// `<kubeconfig dir>/.pki-node.json`.
pub fn path(kubeconfig_dir: &Path) -> PathBuf {
    kubeconfig_dir.join(FILE_NAME)
}

/// Reads the node state; `Ok(None)` when the file does not exist. A file that cannot be parsed
/// is an error (it would otherwise silently turn alerts off or on).
pub fn load(kubeconfig_dir: &Path) -> Result<Option<NodeState>> {
    let p = path(kubeconfig_dir);
    let Some(text) = store::read_optional(&p)? else {
        return Ok(None);
    };
    let raw: Raw = serde_json::from_str(&text).map_err(|e| Error::parse(&p, e))?;
    Ok(Some(NodeState {
        kubernetes_version: raw.kubernetes_version.parse()?,
        control_plane_join: raw.control_plane_join,
        etcd_external: raw.etcd_external,
    }))
}

/// Records the node state: writes it atomically (mode 0644) unless the file already says the
/// same; for the default state (newest version, init node), which is also what a missing file
/// means, removes the file instead, so a plain node carries no extra file. Returns whether the
/// file changed.
pub fn save(kubeconfig_dir: &Path, state: &NodeState) -> Result<bool> {
    let current = load(kubeconfig_dir).ok().flatten();
    if *state == NodeState::default() {
        if current.is_none() && !path(kubeconfig_dir).exists() {
            return Ok(false);
        }
        let p = path(kubeconfig_dir);
        std::fs::remove_file(&p).map_err(|e| Error::io(&p, e))?;
        return Ok(true);
    }
    if current.as_ref() == Some(state) {
        return Ok(false);
    }
    let raw = Raw {
        kubernetes_version: state.kubernetes_version.to_string(),
        control_plane_join: state.control_plane_join,
        etcd_external: state.etcd_external,
    };
    let text = serde_json::to_string_pretty(&raw).map_err(|e| Error::Render {
        what: "JSON",
        reason: e.to_string(),
    })? + "\n";
    store::write_atomic(&path(kubeconfig_dir), text.as_bytes(), store::MODE_PUBLIC)?;
    Ok(true)
}
