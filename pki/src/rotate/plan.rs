//! Which files a rotation of each target reads and writes: trust anchors, signer files,
//! leaves, kubeconfigs, staged material and the kube-controller-manager manifest.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::layout::Layout;
use crate::profile::{self, CaId, LeafProfile};

/// Name of the rotation working directory inside the cert dir (mode 0700).
pub const ROTATION_DIR: &str = ".rotation";
/// File name of the kube-controller-manager static pod manifest.
pub const KCM_MANIFEST: &str = "kube-controller-manager.yaml";
/// Base name (relative to the cert dir) of the cluster CA's single-certificate signer files
/// (`ca-signer.crt`/`ca-signer.key`) kept while a rotation of `ca` is in progress.
pub const CA_SIGNER_BASE: &str = "ca-signer";

/// What is rotated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum Target {
    /// The cluster CA (`ca.crt`/`ca.key`), its leaves and the kubeconfigs.
    Ca,
    /// The aggregation-layer CA (`front-proxy-ca.crt`) and `front-proxy-client`.
    FrontProxyCa,
    /// The etcd CA (`etcd/ca.crt`) and the etcd server, peer and client certificates.
    EtcdCa,
    /// The service-account token signing key pair (`sa.key`/`sa.pub`).
    Sa,
}

impl Target {
    /// Every target, in the order `status` lists them.
    pub const ALL: [Target; 4] = [Target::Ca, Target::FrontProxyCa, Target::EtcdCa, Target::Sa];

    /// The command-line spelling (`ca`, `front-proxy-ca`, `etcd-ca`, `sa`).
    pub fn as_str(self) -> &'static str {
        match self {
            Target::Ca => "ca",
            Target::FrontProxyCa => "front-proxy-ca",
            Target::EtcdCa => "etcd-ca",
            Target::Sa => "sa",
        }
    }

    /// The CA this target rotates; `None` for `sa`.
    pub fn ca_id(self) -> Option<CaId> {
        match self {
            Target::Ca => Some(CaId::Ca),
            Target::FrontProxyCa => Some(CaId::FrontProxyCa),
            Target::EtcdCa => Some(CaId::EtcdCa),
            Target::Sa => None,
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Target {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        Target::ALL
            .into_iter()
            .find(|t| t.as_str() == s)
            .ok_or_else(|| {
                Error::Config(format!(
                    "unknown rotation target {s:?} (expected ca, front-proxy-ca, etcd-ca or sa)"
                ))
            })
    }
}

/// A phase that changes files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum Phase {
    /// Generate the new CA/key; trust old and new; keep signing with the old key.
    Start,
    /// Re-issue everything from the new CA; sign with the new key; still trust both.
    Switch,
    /// Drop the old CA/key from every bundle.
    Finish,
}

impl Phase {
    /// The command-line spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Start => "start",
            Phase::Switch => "switch",
            Phase::Finish => "finish",
        }
    }

    /// The phase that must have completed before this one.
    pub fn previous(self) -> Option<Phase> {
        match self {
            Phase::Start => None,
            Phase::Switch => Some(Phase::Start),
            Phase::Finish => Some(Phase::Switch),
        }
    }

    /// The phase after this one.
    pub fn next(self) -> Option<Phase> {
        match self {
            Phase::Start => Some(Phase::Switch),
            Phase::Switch => Some(Phase::Finish),
            Phase::Finish => None,
        }
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The files of one target's rotation in one layout.
#[derive(Debug, Clone)]
pub struct Plan {
    /// What is rotated.
    pub target: Target,
    /// Cert and kubeconfig directories.
    pub layout: Layout,
    /// The static pod manifest directory, when manifests are managed.
    pub manifests_dir: Option<PathBuf>,
}

impl Plan {
    /// A plan for `target` in `layout`.
    pub fn new(target: Target, layout: Layout, manifests_dir: Option<PathBuf>) -> Self {
        Plan {
            target,
            layout,
            manifests_dir,
        }
    }

    /// `<cert dir>/.rotation`.
    pub fn rotation_dir(&self) -> PathBuf {
        rotation_dir(&self.layout)
    }

    /// `<cert dir>/.rotation/staged/<target>`: the old and new CA (or key) during the rotation.
    pub fn staged_dir(&self) -> PathBuf {
        self.rotation_dir()
            .join("staged")
            .join(self.target.as_str())
    }

    /// Staged copy of the old CA certificate (single certificate).
    pub fn staged_old_crt(&self) -> PathBuf {
        self.staged_dir().join("old.crt")
    }

    /// Staged copy of the old private key.
    pub fn staged_old_key(&self) -> PathBuf {
        self.staged_dir().join("old.key")
    }

    /// The new CA certificate, generated at `start`.
    pub fn staged_new_crt(&self) -> PathBuf {
        self.staged_dir().join("new.crt")
    }

    /// The new private key, generated at `start`.
    pub fn staged_new_key(&self) -> PathBuf {
        self.staged_dir().join("new.key")
    }

    /// The trust anchor file verifiers read: the CA certificate file, or `sa.pub`.
    pub fn anchor(&self) -> PathBuf {
        match self.target.ca_id() {
            Some(id) => self.layout.crt(profile::ca_profile(id).base),
            None => self.layout.sa_pub(),
        }
    }

    /// The private key file paired with the first entry of [`Plan::anchor`] (`ca.key`, `sa.key`).
    pub fn key(&self) -> PathBuf {
        match self.target.ca_id() {
            Some(id) => self.layout.key(profile::ca_profile(id).base),
            None => self.layout.sa_key(),
        }
    }

    /// The single-certificate signer files (`ca-signer.crt`, `ca-signer.key`) kept during a
    /// rotation of `ca` for kube-controller-manager's `--cluster-signing-*-file` flags. Other
    /// targets have no online signer and no signer files.
    pub fn signer(&self) -> Option<(PathBuf, PathBuf)> {
        (self.target == Target::Ca).then(|| {
            (
                self.layout.crt(CA_SIGNER_BASE),
                self.layout.key(CA_SIGNER_BASE),
            )
        })
    }

    /// The leaves this target's CA signs.
    pub fn leaves(&self) -> Vec<&'static LeafProfile> {
        match self.target.ca_id() {
            Some(id) => profile::LEAVES.iter().filter(|l| l.ca == id).collect(),
            None => Vec::new(),
        }
    }

    /// The kubeconfigs whose CA data and client certificates belong to this target.
    pub fn kubeconfigs(&self) -> Vec<PathBuf> {
        if self.target != Target::Ca {
            return Vec::new();
        }
        profile::KUBECONFIGS
            .iter()
            .map(|k| self.layout.kubeconfig(k))
            .collect()
    }

    /// The kube-controller-manager manifest, when manifests are managed and the target is `ca`.
    pub fn kcm_manifest(&self) -> Option<PathBuf> {
        match (&self.manifests_dir, self.target) {
            (Some(d), Target::Ca) => Some(d.join(KCM_MANIFEST)),
            _ => None,
        }
    }

    /// Every file outside `.rotation` that any phase of this rotation may create, change or
    /// remove. Each phase backs all of them up first; the `start` backup is what `abort`
    /// restores.
    pub fn touched_files(&self) -> Vec<PathBuf> {
        let mut v = vec![self.anchor(), self.key()];
        if let Some((c, k)) = self.signer() {
            v.push(c);
            v.push(k);
        }
        for leaf in self.leaves() {
            v.push(self.layout.crt(leaf.base));
            v.push(self.layout.key(leaf.base));
        }
        v.extend(self.kubeconfigs());
        v.extend(self.kcm_manifest());
        v
    }

    /// A short name for a file in messages and backups: relative to the cert dir, kubeconfig
    /// dir or manifests dir.
    pub fn label(&self, path: &Path) -> String {
        label(&self.layout, self.manifests_dir.as_deref(), path)
    }
}

/// `<cert dir>/.rotation`.
pub fn rotation_dir(layout: &Layout) -> PathBuf {
    layout.cert_dir.join(ROTATION_DIR)
}

/// `<cert dir>/.rotation/state.json`.
pub fn state_path(layout: &Layout) -> PathBuf {
    rotation_dir(layout).join("state.json")
}

/// A short name for a file: `pki/<rel>`, `kubeconfig/<rel>`, `manifests/<rel>` or the full path.
pub fn label(layout: &Layout, manifests: Option<&Path>, path: &Path) -> String {
    if let Ok(rel) = path.strip_prefix(&layout.cert_dir) {
        return format!("pki/{}", rel.display());
    }
    if let Some(m) = manifests
        && let Ok(rel) = path.strip_prefix(m)
    {
        return format!("manifests/{}", rel.display());
    }
    if let Ok(rel) = path.strip_prefix(&layout.kubeconfig_dir) {
        return format!("kubeconfig/{}", rel.display());
    }
    path.display().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_per_target() {
        let layout = Layout::new("/k/pki", "/k");
        let p = Plan::new(Target::EtcdCa, layout.clone(), Some("/m".into()));
        assert_eq!(p.anchor(), PathBuf::from("/k/pki/etcd/ca.crt"));
        assert!(p.signer().is_none() && p.kcm_manifest().is_none());
        let names: Vec<&str> = p.leaves().iter().map(|l| l.name).collect();
        assert_eq!(
            names,
            [
                "etcd-server",
                "etcd-peer",
                "etcd-healthcheck-client",
                "apiserver-etcd-client"
            ]
        );
        let ca = Plan::new(Target::Ca, layout.clone(), Some("/m".into()));
        assert_eq!(
            ca.signer(),
            Some(("/k/pki/ca-signer.crt".into(), "/k/pki/ca-signer.key".into()))
        );
        assert_eq!(ca.kubeconfigs().len(), 5);
        assert!(
            ca.touched_files()
                .contains(&PathBuf::from("/m/kube-controller-manager.yaml"))
        );
        assert_eq!(
            ca.label(Path::new("/k/admin.conf")),
            "kubeconfig/admin.conf"
        );
        assert_eq!(ca.label(Path::new("/k/pki/ca.crt")), "pki/ca.crt");
        let sa = Plan::new(Target::Sa, layout, None);
        assert_eq!(
            sa.touched_files(),
            [PathBuf::from("/k/pki/sa.pub"), "/k/pki/sa.key".into()]
        );
        assert_eq!(
            "front-proxy-ca".parse::<Target>().ok(),
            Some(Target::FrontProxyCa)
        );
        assert!("root".parse::<Target>().is_err());
    }
}
