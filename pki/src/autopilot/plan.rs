//! What one autopilot pass finds: the leaves and kubeconfig client certificates due for
//! renewal, the CAs expiring within a year, and a kubelet client certificate that is not being
//! rotated. Reads only.

use std::collections::BTreeSet;
use std::path::PathBuf;

use time::OffsetDateTime;

use super::policy::{CA_WARNING, Policy};
use crate::error::Result;
use crate::kubeconfig;
use crate::layout::{self, Layout};
use crate::node_state;
use crate::profile::{self, CaId};
use crate::store;

/// A certificate due for renewal.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Due {
    /// The `renew` name (`etcd-server`, `admin.conf` ...).
    pub name: &'static str,
    /// Files `renew` rewrites for it (certificate and key, or the kubeconfig).
    pub files: Vec<PathBuf>,
    /// Components that must restart to load it.
    pub restart: &'static [&'static str],
    /// Its expiry.
    pub not_after: OffsetDateTime,
}

/// The findings of one pass.
#[derive(Debug, Default)]
#[non_exhaustive]
pub struct Plan {
    /// Certificates to renew, in kubeadm's order.
    pub due: Vec<Due>,
    /// CAs expiring within a year: `(name, notAfter)`.
    pub expiring_cas: Vec<(&'static str, OffsetDateTime)>,
    /// Problems that need an operator but are not ours to fix (kubelet rotation, external CAs).
    pub warnings: Vec<String>,
}

impl Plan {
    /// Components to restart, in the safe order (etcd member, then kube-apiserver, then
    /// kube-controller-manager and kube-scheduler). The kubelet rotates its own certificates
    /// and is never restarted here.
    pub fn restarts(&self) -> Vec<&'static str> {
        let wanted: BTreeSet<&str> = self
            .due
            .iter()
            .flat_map(|d| d.restart.iter().copied())
            .collect();
        super::restart::ORDER
            .iter()
            .copied()
            .filter(|c| wanted.contains(c))
            .collect()
    }
}

/// A due certificate whose expiry its CA's caps: a renewal would end when the CA does, no later
/// (a day's slack), so renewing again gains nothing. Only rotating the CA helps.
fn capped_by_ca(layout: &Layout, id: CaId, not_after: OffsetDateTime) -> Result<Option<String>> {
    let ca = profile::ca_profile(id);
    let Some(cert) = layout::load_cert(&layout.crt(ca.base))? else {
        return Ok(None);
    };
    let ca_end = cert.info().not_after;
    Ok((ca_end - not_after < time::Duration::days(1)).then(|| {
        format!(
            "its CA {} expires {ca_end}: a renewal cannot outlive it, so autopilot leaves it; \
             rotate the CA (`pki rotate {}`)",
            ca.name, ca.name
        )
    }))
}

/// Scans the layout with `policy` at `now`.
pub fn scan(layout: &Layout, policy: &Policy, now: OffsetDateTime) -> Result<Plan> {
    let node = node_state::load(&layout.kubeconfig_dir)?.unwrap_or_default();
    let mut plan = Plan::default();
    let has_key = |id: CaId| layout.key(profile::ca_profile(id).base).exists();
    for leaf in profile::LEAVES
        .iter()
        .filter(|l| profile::etcd_applies(l.ca, node.etcd_external))
    {
        let crt = layout.crt(leaf.base);
        let Some(cert) = layout::load_cert(&crt)? else {
            continue;
        };
        let info = cert.info();
        if !policy.is_due(info.not_before, info.not_after, now) {
            continue;
        }
        if !has_key(leaf.ca) {
            plan.warnings.push(format!(
                "{} is due for renewal but its CA {} is externally managed: renew it there",
                leaf.name,
                profile::ca_profile(leaf.ca).name
            ));
            continue;
        }
        if let Some(why) = capped_by_ca(layout, leaf.ca, info.not_after)? {
            plan.warnings.push(format!("{} is due: {why}", leaf.name));
            continue;
        }
        plan.due.push(Due {
            name: leaf.name,
            files: vec![crt, layout.key(leaf.base)],
            restart: leaf.restart,
            not_after: info.not_after,
        });
    }
    for kc in profile::KUBECONFIGS.iter().filter(|kc| node.expects(kc)) {
        let path = layout.kubeconfig(kc);
        let Some(text) = store::read_secret_optional(&path)? else {
            continue;
        };
        let Some(cert) = kubeconfig::parse(&text, &path)?.client_cert else {
            continue;
        };
        let info = cert.info();
        let due = policy.is_due(info.not_before, info.not_after, now);
        if !kc.renewable {
            if due {
                plan.warnings.push(format!(
                    "the kubelet client certificate of {} (expires {}) is past its renewal point: \
                     the kubelet is not rotating it (check rotateCertificates and pending CSRs)",
                    path.display(),
                    info.not_after
                ));
            }
            continue;
        }
        if !due {
            continue;
        }
        if !has_key(CaId::Ca) {
            plan.warnings.push(format!(
                "{} is due for renewal but the CA is externally managed",
                kc.file
            ));
            continue;
        }
        if let Some(why) = capped_by_ca(layout, CaId::Ca, info.not_after)? {
            plan.warnings.push(format!("{} is due: {why}", kc.file));
            continue;
        }
        plan.due.push(Due {
            name: kc.file,
            files: vec![path],
            restart: kc.restart,
            not_after: info.not_after,
        });
    }
    for ca in profile::CAS
        .iter()
        .filter(|c| profile::etcd_applies(c.id, node.etcd_external))
    {
        if let Some(cert) = layout::load_cert(&layout.crt(ca.base))? {
            let left = cert.info().not_after - now;
            if left < CA_WARNING {
                plan.expiring_cas.push((ca.name, cert.info().not_after));
            }
        }
    }
    Ok(plan)
}
