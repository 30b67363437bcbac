//! `renew`: re-issue leaves and kubeconfig client certificates from the current CA with the
//! subject, SANs and usages of the existing certificate and a fresh key. CAs are never touched.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use time::OffsetDateTime;

use crate::error::{Error, Result};
use crate::inspect::Cert;
use crate::issue::{self, Ca, CertSpec};
use crate::key::{KeyAlgorithm, PrivateKey, algorithm_of_spki};
use crate::kubeconfig;
use crate::layout::{self, Layout};
use crate::profile::{self, CaId};
use crate::store::{self, MODE_SECRET};
use crate::version::KubernetesVersion;

/// Every name `renew` accepts besides `all`, in kubeadm's order.
pub fn renewable_names() -> Vec<&'static str> {
    let mut v: Vec<&'static str> = profile::LEAVES.iter().map(|l| l.name).collect();
    v.extend(
        profile::KUBECONFIGS
            .iter()
            .filter(|k| k.renewable)
            .map(|k| k.file),
    );
    v
}

/// Options of a renewal run.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RenewOptions {
    /// Only renew what expires within this window (`None`: renew unconditionally).
    pub if_expiring_within: Option<Duration>,
    /// Lifetime of the new certificates.
    pub validity: Duration,
    /// When set, version-dependent subject O values follow this version's kubeadm table;
    /// otherwise every subject is kept as it is.
    pub kubernetes_version: Option<KubernetesVersion>,
    /// Re-issue each certificate over its current key instead of a fresh one: a leaf's renewal
    /// is then one rename of its certificate, so no file ever pairs a new key with an old
    /// certificate, even on a power loss mid-run. The key must be present and match.
    pub reuse_key: bool,
}

impl RenewOptions {
    /// Unconditional renewal with the given lifetime.
    pub fn new(validity: Duration) -> Self {
        RenewOptions {
            if_expiring_within: None,
            validity,
            kubernetes_version: None,
            reuse_key: false,
        }
    }
}

/// What a renewal run did.
#[derive(Debug, Default)]
#[non_exhaustive]
pub struct RenewReport {
    /// Renewed names and the files rewritten.
    pub renewed: Vec<(String, PathBuf)>,
    /// Names left alone, with the reason.
    pub skipped: Vec<(String, String)>,
    /// Components that must restart to pick up the new files.
    pub restart: BTreeSet<&'static str>,
    /// What the cluster must provide for the renewed files to work.
    pub notes: Vec<String>,
}

impl RenewReport {
    /// A file of `name` is missing: skipped with `all` (reported as kubeadm does), an error when
    /// `name` was asked for.
    fn skip_missing(&mut self, name: &str, path: &Path, all: bool) -> Result<()> {
        if !all {
            return Err(Error::invalid(
                path,
                "missing; nothing to renew (run `pki init`)",
            ));
        }
        self.skipped.push((name.to_owned(), "!MISSING!".to_owned()));
        Ok(())
    }

    /// The CA to renew `cert` (of `name`) from, or `None` (skipped and reported) when it is not
    /// `due` or, with `all`, when that CA's key is missing.
    fn ca_if_due(
        &mut self,
        layout: &Layout,
        name: &str,
        ca: CaId,
        cert: &Cert,
        due: bool,
        all: bool,
    ) -> Result<Option<Ca>> {
        if !due {
            self.skipped.push((
                name.to_owned(),
                format!("expires {}", cert.info().not_after),
            ));
            return Ok(None);
        }
        match signing_ca(layout, ca) {
            Ok(ca) => Ok(Some(ca)),
            Err(e @ Error::CaKeyMissing { .. }) if all => {
                self.skipped.push((name.to_owned(), e.to_string()));
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }
}

/// Renews `names` (or everything when `names` is empty or contains `all`). With `all`, missing
/// files are skipped and reported (as kubeadm does); a missing file named explicitly is an error.
pub fn renew(layout: &Layout, names: &[String], opts: &RenewOptions) -> Result<RenewReport> {
    let valid = renewable_names();
    let all = names.is_empty() || names.iter().any(|n| n == "all");
    let targets: Vec<&str> = if all {
        valid.clone()
    } else {
        for n in names {
            if !valid.contains(&n.as_str()) {
                return Err(Error::UnknownName(format!(
                    "{n} (known: all, {})",
                    valid.join(", ")
                )));
            }
        }
        names.iter().map(String::as_str).collect()
    };
    let _lock = layout.lock_and_recover()?;
    let mut report = RenewReport::default();
    let now = OffsetDateTime::now_utc();
    let due = |cert: &Cert| match opts.if_expiring_within {
        None => true,
        Some(w) => cert.info().not_after - now < w,
    };
    for name in targets {
        if let Some(leaf) = profile::leaf_by_name(name) {
            let crt = layout.crt(leaf.base);
            let key_path = layout.key(leaf.base);
            let Some(cert) = layout::load_cert(&crt)? else {
                report.skip_missing(name, &crt, all)?;
                continue;
            };
            let Some(ca) = report.ca_if_due(layout, name, leaf.ca, &cert, due(&cert), all)? else {
                continue;
            };
            if opts.reuse_key {
                let key = current_key(&cert, &crt, &key_path)?;
                let new = reissue_over(&cert, &ca, opts, name, &key)?;
                store::write_atomic(&crt, new.pem().as_bytes(), store::MODE_PUBLIC)?;
            } else {
                let (new, key) = reissue_as(&cert, &ca, opts, name)?;
                layout::write_cert_and_key(&crt, &new, &key_path, &key)?;
            }
            let new = layout::load_cert(&crt)?
                .ok_or_else(|| Error::invalid(&crt, "vanished right after its renewal"))?;
            report.renewed.push((name.to_owned(), crt));
            report.restart.extend(leaf.restart);
            if name == "apiserver-kubelet-client"
                && new.info().organizations.is_empty()
                && let Some(dep) = opts
                    .kubernetes_version
                    .and_then(KubernetesVersion::kubelet_client_dependency)
            {
                report.notes.push(dep);
            }
        } else if let Some(kc) = profile::kubeconfig_by_name(name) {
            let path = layout.kubeconfig(kc);
            let Some(text) = store::read_secret_optional(&path)? else {
                // e.g. super-admin.conf on clusters made before kubeadm 1.29
                report.skip_missing(name, &path, all)?;
                continue;
            };
            let parsed = kubeconfig::parse(&text, &path)?;
            let cert = parsed
                .client_cert
                .ok_or_else(|| Error::invalid(&path, "has no client certificate"))?;
            let Some(ca) = report.ca_if_due(layout, name, CaId::Ca, &cert, due(&cert), all)? else {
                continue;
            };
            let (new, key) = match (opts.reuse_key, parsed.client_key) {
                (true, Some(key)) if cert.matches_key(&key) => {
                    (reissue_over(&cert, &ca, opts, name, &key)?, key)
                }
                (true, _) => {
                    return Err(Error::invalid(
                        &path,
                        "--reuse-key: its client key is missing or does not match its certificate",
                    ));
                }
                (false, _) => reissue_as(&cert, &ca, opts, name)?,
            };
            // The CA data is refreshed from the current ca.crt (the whole file: during a CA
            // rotation it is the old+new bundle), so a kubeconfig never keeps a stale CA after a
            // renewal against a new CA. Only the CA data and the client certificate and key
            // change: every other field, context, user and extension is kept.
            let ca_crt = layout.crt(profile::ca_profile(CaId::Ca).base);
            let ca_pem = store::read_optional(&ca_crt)?.unwrap_or_else(|| ca.cert.pem());
            let out = kubeconfig::rewrite_embedded(&text, &path, &ca_pem, Some((&new, &key)))?
                .ok_or_else(|| {
                    Error::invalid(
                        &path,
                        "its client certificate is a file reference, not embedded data; renew that file instead",
                    )
                })?;
            store::write_atomic(&path, out.as_bytes(), MODE_SECRET)?;
            report.renewed.push((name.to_owned(), path));
            report.restart.extend(kc.restart);
        }
    }
    Ok(report)
}

/// Re-issues `cert` from `ca` with the same subject, SANs and usages and a fresh key of the same
/// algorithm (what `renew` does for each file, and `rotate switch` for every leaf of the CA).
pub fn reissue(cert: &Cert, ca: &Ca, validity: Duration) -> Result<(Cert, PrivateKey)> {
    let key = PrivateKey::generate(same_algorithm(cert))?;
    let new = issue::issue_for_key(&CertSpec::from_existing(cert.info(), validity), &key, ca)?;
    Ok((new, key))
}

/// [`reissue`] with the subject O set by `opts.kubernetes_version` for the version-dependent
/// names (`apiserver-kubelet-client`, the etcd clients, `admin.conf`).
fn reissue_as(cert: &Cert, ca: &Ca, opts: &RenewOptions, name: &str) -> Result<(Cert, PrivateKey)> {
    let key = PrivateKey::generate(same_algorithm(cert))?;
    let new = reissue_over(cert, ca, opts, name, &key)?;
    Ok((new, key))
}

/// [`reissue_as`] over the given key.
fn reissue_over(
    cert: &Cert,
    ca: &Ca,
    opts: &RenewOptions,
    name: &str,
    key: &PrivateKey,
) -> Result<Cert> {
    let mut spec = CertSpec::from_existing(cert.info(), opts.validity);
    if let Some(orgs) = opts.kubernetes_version.and_then(|v| v.organizations(name)) {
        spec.organizations = orgs.iter().map(|o| (*o).to_owned()).collect();
    }
    issue::issue_for_key(&spec, key, ca)
}

/// The key beside `cert`, for `--reuse-key`: present and matching, or an error.
fn current_key(cert: &Cert, crt: &Path, key_path: &Path) -> Result<PrivateKey> {
    let key = layout::load_key(key_path)?
        .ok_or_else(|| Error::invalid(key_path, "--reuse-key: the key is missing"))?;
    layout::check_key_matches(cert, crt, &key, key_path)?;
    Ok(key)
}

fn same_algorithm(cert: &Cert) -> KeyAlgorithm {
    algorithm_of_spki(&cert.info().spki_der).unwrap_or_default()
}

/// Loads a CA with its key; external CAs cannot renew.
pub fn signing_ca(layout: &Layout, id: CaId) -> Result<Ca> {
    let p = profile::ca_profile(id);
    let crt = layout.crt(p.base);
    let ca = layout::load_ca(layout, p)?
        .ok_or_else(|| Error::invalid(&crt, "CA certificate missing"))?;
    if ca.is_external() {
        return Err(Error::CaKeyMissing {
            ca: crt,
            key: layout.key(p.base),
        });
    }
    Ok(ca)
}
