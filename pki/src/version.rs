//! Kubernetes versions and what of the kubeadm PKI depends on them: subject organizations of
//! the kubelet/etcd client certificates and admin.conf, and whether super-admin.conf exists.
//!
//! The table follows kubeadm's `certlist.go` / `kubeconfig.go` per release:
//! - ≤ 1.28: `apiserver-kubelet-client`, `apiserver-etcd-client`, `etcd-healthcheck-client` and
//!   `admin.conf` carry `O=system:masters`; there is no `super-admin.conf`.
//! - 1.29 (kubernetes PRs 119859, 120521, 121837): the etcd clients lose their O,
//!   `apiserver-kubelet-client` and `admin.conf` get `O=kubeadm:cluster-admins`, and
//!   `super-admin.conf` (`O=system:masters`) appears on the init node.
//! - 1.37 (PR 138957, backported to 1.33.12, 1.34.8, 1.35.5 and 1.36.1):
//!   `apiserver-kubelet-client` has no O; kubeadm binds the user `kube-apiserver-kubelet-client`
//!   to `system:kubelet-api-admin` with the ClusterRoleBinding `kubeadm:apiserver-kubelet-client`.

use std::fmt;
use std::str::FromStr;

use crate::error::{Error, Result};

/// The oldest minor version whose PKI this tool reproduces.
pub const OLDEST_MINOR: u32 = 28;
/// The newest minor version whose PKI this tool reproduces (the default).
pub const NEWEST_MINOR: u32 = 37;

/// The group kubeadm ≤ 1.28 put admin credentials in (superuser, not revocable by RBAC).
pub const SYSTEM_MASTERS: &str = "system:masters";
/// The group kubeadm ≥ 1.29 binds to `cluster-admin` through a ClusterRoleBinding.
pub const CLUSTER_ADMINS: &str = "kubeadm:cluster-admins";
/// The ClusterRoleBinding kubeadm ≥ 1.37 creates for the API server's kubelet client.
pub const KUBELET_CLIENT_BINDING: &str = "kubeadm:apiserver-kubelet-client";

/// First patch of each minor that carries the `apiserver-kubelet-client` change of 1.37.
const KUBELET_CLIENT_BACKPORTS: &[(u32, u32)] = &[(33, 12), (34, 8), (35, 5), (36, 1)];

/// A Kubernetes version `1.<minor>[.<patch>]` within the supported range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KubernetesVersion {
    minor: u32,
    patch: Option<u32>,
}

impl KubernetesVersion {
    /// The newest supported version (the default of every subcommand).
    pub const NEWEST: KubernetesVersion = KubernetesVersion {
        minor: NEWEST_MINOR,
        patch: None,
    };

    /// The minor version.
    pub fn minor(self) -> u32 {
        self.minor
    }

    /// Whether `super-admin.conf` exists in this version (on the init node only).
    pub fn has_super_admin(self) -> bool {
        self.minor >= 29
    }

    /// Whether `apiserver-kubelet-client` has no O and relies on the
    /// `kubeadm:apiserver-kubelet-client` ClusterRoleBinding.
    pub fn kubelet_client_uses_binding(self) -> bool {
        if self.minor >= 37 {
            return true;
        }
        let patch = self.patch.unwrap_or(0);
        KUBELET_CLIENT_BACKPORTS
            .iter()
            .any(|&(minor, first)| minor == self.minor && patch >= first)
    }

    /// Subject O of the leaf or kubeconfig named `name` (kubeadm's name: `apiserver-kubelet-client`,
    /// `admin.conf` ...) when it depends on the version; `None` for the others.
    pub fn organizations(self, name: &str) -> Option<&'static [&'static str]> {
        let old = self.minor <= 28;
        match name {
            "apiserver-kubelet-client" => Some(if old {
                &[SYSTEM_MASTERS]
            } else if self.kubelet_client_uses_binding() {
                &[]
            } else {
                &[CLUSTER_ADMINS]
            }),
            "apiserver-etcd-client" | "etcd-healthcheck-client" => {
                Some(if old { &[SYSTEM_MASTERS] } else { &[] })
            }
            "admin.conf" => Some(if old {
                &[SYSTEM_MASTERS]
            } else {
                &[CLUSTER_ADMINS]
            }),
            _ => None,
        }
    }

    /// What the cluster must hold for `apiserver-kubelet-client` to be authorized, when it is
    /// not carried by the certificate itself.
    pub fn kubelet_client_dependency(self) -> Option<String> {
        self.kubelet_client_uses_binding().then(|| {
            format!(
                "apiserver-kubelet-client has no O: kube-apiserver reaches kubelets (logs, exec, port-forward) only if the ClusterRoleBinding {KUBELET_CLIENT_BINDING} binds the User kube-apiserver-kubelet-client to the ClusterRole system:kubelet-api-admin (kubeadm {self} creates it at init/upgrade)"
            )
        })
    }
}

impl Default for KubernetesVersion {
    fn default() -> Self {
        Self::NEWEST
    }
}

impl fmt::Display for KubernetesVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.patch {
            Some(p) => write!(f, "v1.{}.{p}", self.minor),
            None => write!(f, "v1.{}", self.minor),
        }
    }
}

impl FromStr for KubernetesVersion {
    type Err = Error;

    /// Parses `v1.30`, `1.30.2`, `v1.31.0-rc.1`, `v1.29.3+k3s1`; refuses other majors and minors
    /// outside 1.28–1.37 with a message saying what is supported.
    fn from_str(s: &str) -> Result<Self> {
        let bad = |why: &str| {
            Error::Config(format!(
                "Kubernetes version {s:?}: {why} (supported: v1.{OLDEST_MINOR} to v1.{NEWEST_MINOR}, as vX.Y or vX.Y.Z)"
            ))
        };
        let core = s.trim().strip_prefix('v').unwrap_or(s.trim());
        let core = core.split(['-', '+']).next().unwrap_or_default();
        let mut parts = core.split('.');
        let number = |p: Option<&str>| p.and_then(|p| p.parse::<u32>().ok());
        let major = number(parts.next()).ok_or_else(|| bad("not a version"))?;
        let minor = number(parts.next()).ok_or_else(|| bad("not a version"))?;
        let patch = match parts.next() {
            None => None,
            Some(p) => Some(number(Some(p)).ok_or_else(|| bad("not a version"))?),
        };
        if parts.next().is_some() {
            return Err(bad("not a version"));
        }
        if major != 1 || !(OLDEST_MINOR..=NEWEST_MINOR).contains(&minor) {
            return Err(bad("not supported"));
        }
        Ok(KubernetesVersion { minor, patch })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> KubernetesVersion {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn parses_and_refuses() {
        assert_eq!(v("v1.29").to_string(), "v1.29");
        assert_eq!(v("1.36.1").to_string(), "v1.36.1");
        assert_eq!(v("v1.31.0-rc.1").minor(), 31);
        for bad in [
            "v1.27.9", "v1.38.0", "v2.0", "latest", "v1", "v1.30.x", "1.30.1.2",
        ] {
            assert!(bad.parse::<KubernetesVersion>().is_err(), "{bad}");
        }
    }

    #[test]
    fn kubelet_client_organization_per_version() {
        let o = |s: &str| v(s).organizations("apiserver-kubelet-client");
        assert_eq!(o("v1.28.15"), Some(&[SYSTEM_MASTERS][..]));
        assert_eq!(o("v1.29"), Some(&[CLUSTER_ADMINS][..]));
        assert_eq!(o("v1.36"), Some(&[CLUSTER_ADMINS][..]));
        assert_eq!(o("v1.36.0"), Some(&[CLUSTER_ADMINS][..]));
        assert_eq!(o("v1.36.1"), Some(&[][..]));
        assert_eq!(o("v1.33.11"), Some(&[CLUSTER_ADMINS][..]));
        assert_eq!(o("v1.33.12"), Some(&[][..]));
        assert_eq!(o("v1.37"), Some(&[][..]));
        assert!(v("v1.37").kubelet_client_dependency().is_some());
        assert!(v("v1.36").kubelet_client_dependency().is_none());
        assert!(!v("v1.28").has_super_admin() && v("v1.29").has_super_admin());
        assert_eq!(v("v1.30").organizations("scheduler.conf"), None);
    }
}
