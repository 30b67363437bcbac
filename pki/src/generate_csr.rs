//! `generate-csr`: kubeadm's `certs generate-csr` for external-CA clusters. For every leaf and
//! kubeconfig `init` would issue on this node, writes a fresh key and a PKCS#10 request with the
//! subject, SANs and usages `init` would use:
//!
//! - a leaf gets `<base>.key` and `<base>.csr` beside where `init` puts `<base>.crt`;
//! - a kubeconfig gets kubeadm's partial `<name>.conf` (server, names and client key only) and
//!   `<name>.conf.csr` beside it. The operator adds the signed certificate to the kubeconfig's
//!   `client-certificate-data`; `init` then fills in the CA data and checks the result.
//!
//! Nothing is overwritten: when any of these files (or a leaf's certificate) exists, nothing is
//! written and the error names every such file, as kubeadm refuses existing keys and requests.
//! No CA, service-account key or node-state file is touched.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::init::{kubeconfig_spec, leaf_spec, server_for};
use crate::issue::{self, CertSpec};
use crate::key::PrivateKey;
use crate::kubeconfig;
use crate::layout::Layout;
use crate::node_state::NodeState;
use crate::profile;
use crate::spec::ClusterSpec;
use crate::store::{self, MODE_PUBLIC, MODE_SECRET};

/// One request to write: the key holder (key file or partial kubeconfig) and the request.
struct Planned {
    /// `<base>.key`, or the partial kubeconfig holding the key.
    key_holder: PathBuf,
    /// `<base>.csr` or `<name>.conf.csr`.
    csr: PathBuf,
    /// Files whose presence forbids writing (the two above, and a leaf's certificate).
    must_be_absent: Vec<PathBuf>,
    /// What the request asks for.
    spec: CertSpec,
    /// For a kubeconfig: its cluster's server URL.
    server: Option<String>,
}

/// The path of the request beside `file`: `<file>.csr` for a kubeconfig (`admin.conf.csr`).
fn csr_beside(file: &Path) -> PathBuf {
    let mut s = file.as_os_str().to_owned();
    s.push(".csr");
    PathBuf::from(s)
}

/// The request file of the leaf `base` (`apiserver` → `<cert dir>/apiserver.csr`).
pub fn leaf_csr_path(layout: &Layout, base: &str) -> PathBuf {
    layout.cert_dir.join(format!("{base}.csr"))
}

/// The request file of a kubeconfig (`admin.conf` → `<kubeconfig dir>/admin.conf.csr`).
pub fn kubeconfig_csr_path(layout: &Layout, kc: &profile::KubeconfigProfile) -> PathBuf {
    csr_beside(&layout.kubeconfig(kc))
}

fn plan(layout: &Layout, spec: &ClusterSpec) -> Vec<Planned> {
    let mut out = Vec::new();
    let applies = |ca| profile::etcd_applies(ca, spec.etcd_external);
    for leaf in profile::LEAVES.iter().filter(|l| applies(l.ca)) {
        let key = layout.key(leaf.base);
        let csr = leaf_csr_path(layout, leaf.base);
        out.push(Planned {
            must_be_absent: vec![key.clone(), csr.clone(), layout.crt(leaf.base)],
            key_holder: key,
            csr,
            spec: leaf_spec(leaf, spec),
            server: None,
        });
    }
    let mut node = NodeState::new(spec.kubernetes_version, spec.control_plane_join);
    node.etcd_external = spec.etcd_external;
    for kc in profile::KUBECONFIGS.iter().filter(|kc| node.expects(kc)) {
        let conf = layout.kubeconfig(kc);
        let csr = csr_beside(&conf);
        out.push(Planned {
            must_be_absent: vec![conf.clone(), csr.clone()],
            key_holder: conf,
            csr,
            spec: kubeconfig_spec(kc, &spec.node_name, spec),
            server: Some(server_for(kc, spec)),
        });
    }
    out
}

/// Writes a key and a request for every leaf and kubeconfig of `spec`; returns the files
/// written, in order. Refuses, writing nothing, when any of them already exists.
pub fn generate_csr(layout: &Layout, spec: &ClusterSpec) -> Result<Vec<PathBuf>> {
    let _lock = layout.lock_and_recover()?;
    let planned = plan(layout, spec);
    let existing: Vec<String> = planned
        .iter()
        .flat_map(|p| &p.must_be_absent)
        .filter(|p| p.symlink_metadata().is_ok())
        .map(|p| p.display().to_string())
        .collect();
    if !existing.is_empty() {
        return Err(Error::Config(format!(
            "generate-csr never overwrites; already present: {}",
            existing.join(", ")
        )));
    }
    let mut written = Vec::new();
    for p in &planned {
        let key = PrivateKey::generate(spec.key_algorithm)?;
        let csr = issue::csr_pem(&p.spec, &key)?;
        let holder = match &p.server {
            Some(server) => {
                kubeconfig::render_key_only(&spec.cluster_name, server, &p.spec.common_name, &key)?
            }
            None => zeroize::Zeroizing::new(key.pem().to_owned()),
        };
        store::write_many_atomic(&[
            (&p.key_holder, holder.as_bytes(), MODE_SECRET),
            (&p.csr, csr.as_bytes(), MODE_PUBLIC),
        ])?;
        written.push(p.key_holder.clone());
        written.push(p.csr.clone());
    }
    Ok(written)
}
