//! `init`: bring a cert dir and kubeconfig dir to the full kubeadm set, keeping every valid
//! existing file, refusing invalid ones, and never faking what an external CA must sign.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::inspect::Cert;
use crate::issue::{self, Ca, CertSpec};
use crate::key::PrivateKey;
use crate::kubeconfig;
use crate::layout::{self, Layout};
use crate::node_state::{self, NodeState};
use crate::profile::{self, CaId, Endpoint, KubeconfigProfile, LeafProfile, Usage};
use crate::spec::ClusterSpec;
use crate::store::{self, MODE_PUBLIC, MODE_SECRET};

/// What happened to one file (or pair of files).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Action {
    /// A new file was written.
    Created(PathBuf),
    /// A valid existing file was kept unchanged.
    Kept(PathBuf),
    /// An existing CA without key is used as trust anchor only.
    ExternalCa(PathBuf),
    /// Something worth an operator's attention that is not an error.
    Warning(String),
    /// Something the cluster must provide for a file to work (e.g. a ClusterRoleBinding).
    Note(String),
    /// A partial kubeconfig (from `generate-csr`, signed externally) got its CA data.
    Completed(PathBuf),
    /// The node state file (version, joined or not) was written or removed.
    Recorded(PathBuf),
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Action::Created(p) => write!(f, "[certs] created {}", p.display()),
            Action::Kept(p) => write!(f, "[certs] using existing {}", p.display()),
            Action::ExternalCa(p) => write!(
                f,
                "[certs] external CA mode: {} has no key, using it as trust anchor only",
                p.display()
            ),
            Action::Warning(w) => write!(f, "[certs] WARNING: {w}"),
            Action::Note(n) => write!(f, "[certs] NOTE: {n}"),
            Action::Completed(p) => {
                write!(f, "[certs] completed {}: embedded the CA data", p.display())
            }
            Action::Recorded(p) => write!(
                f,
                "[certs] recorded node version and role in {}",
                p.display()
            ),
        }
    }
}

/// The outcome of `init`: what was done, and what could not be issued (external CA mode).
#[derive(Debug, Default)]
#[non_exhaustive]
pub struct InitReport {
    /// Every file handled, in order.
    pub actions: Vec<Action>,
    /// Files that are missing and need a CA key this tool does not have.
    pub missing: Vec<Error>,
}

/// Runs `init` against `layout` for `spec`. Validation errors on existing files abort with an
/// error naming the file; files an external CA would have to sign are listed in
/// [`InitReport::missing`].
pub fn init(layout: &Layout, spec: &ClusterSpec) -> Result<InitReport> {
    let mut report = InitReport::default();
    let _lock = layout.lock_and_recover()?;

    let mut cas: HashMap<CaId, Ca> = HashMap::new();
    let etcd = |ca: CaId| profile::etcd_applies(ca, spec.etcd_external);
    for p in profile::CAS.iter().filter(|p| etcd(p.id)) {
        let ca = ensure_ca(layout, p, spec, &mut report)?;
        cas.insert(p.id, ca);
    }
    for leaf in profile::LEAVES.iter().filter(|l| etcd(l.ca)) {
        let ca = cas
            .get(&leaf.ca)
            .ok_or_else(|| Error::Config("CA not loaded".into()))?;
        let ca_path = layout.crt(profile::ca_profile(leaf.ca).base);
        ensure_leaf(layout, leaf, spec, ca, &ca_path, &mut report)?;
    }
    let ca = cas
        .get(&CaId::Ca)
        .ok_or_else(|| Error::Config("CA not loaded".into()))?;
    ensure_sa(layout, spec, ca.is_external(), &mut report)?;
    let mut node = NodeState::new(spec.kubernetes_version, spec.control_plane_join);
    node.etcd_external = spec.etcd_external;
    for kc in profile::KUBECONFIGS.iter().filter(|kc| node.expects(kc)) {
        ensure_kubeconfig(layout, kc, spec, ca, &mut report)?;
    }
    if node_state::save(&layout.kubeconfig_dir, &node)? {
        report
            .actions
            .push(Action::Created(node_state::path(&layout.kubeconfig_dir)));
    }
    Ok(report)
}

fn ensure_ca(
    layout: &Layout,
    p: &profile::CaProfile,
    spec: &ClusterSpec,
    report: &mut InitReport,
) -> Result<Ca> {
    let crt = layout.crt(p.base);
    if let Some(ca) = layout::load_ca(layout, p)? {
        if ca.is_external() {
            report.actions.push(Action::ExternalCa(crt));
        } else {
            warn_if_open(&layout.key(p.base), report);
            warn_if_expired(&ca.cert, &crt, report);
            report.actions.push(Action::Kept(crt));
        }
        return Ok(ca);
    }
    let key_path = layout.key(p.base);
    let key = obtain_key(&key_path, spec, report)?;
    let cert = issue::self_signed_ca(
        &CertSpec::ca(p.common_name, p.dns_names, spec.ca_validity),
        &key,
    )?;
    store::write_atomic(&crt, cert.pem().as_bytes(), MODE_PUBLIC)?;
    report.actions.push(Action::Created(crt));
    Ok(Ca {
        cert,
        key: Some(key),
    })
}

/// Loads a leftover key (from a run killed after writing the key) or generates and writes one.
fn obtain_key(key_path: &Path, spec: &ClusterSpec, report: &mut InitReport) -> Result<PrivateKey> {
    if let Some(k) = layout::load_key(key_path)? {
        warn_if_open(key_path, report);
        report.actions.push(Action::Kept(key_path.to_path_buf()));
        return Ok(k);
    }
    let k = PrivateKey::generate(spec.key_algorithm)?;
    store::write_atomic(key_path, k.pem().as_bytes(), MODE_SECRET)?;
    report.actions.push(Action::Created(key_path.to_path_buf()));
    Ok(k)
}

/// The spec a leaf profile gets for this cluster.
pub fn leaf_spec(leaf: &LeafProfile, spec: &ClusterSpec) -> CertSpec {
    CertSpec::leaf(
        leaf.common_name.resolve(&spec.node_name),
        spec.kubernetes_version
            .organizations(leaf.name)
            .unwrap_or(leaf.organizations),
        profile::required_sans(leaf.sans, spec),
        leaf.usage,
        spec.leaf_validity,
    )
}

/// The spec of a kubeconfig's client certificate for this cluster.
pub fn kubeconfig_spec(kc: &KubeconfigProfile, node_name: &str, spec: &ClusterSpec) -> CertSpec {
    CertSpec::leaf(
        kc.common_name.resolve(node_name),
        spec.kubernetes_version
            .organizations(kc.file)
            .unwrap_or(kc.organizations),
        profile::Sans::default(),
        Usage::Client,
        spec.leaf_validity,
    )
}

fn ensure_leaf(
    layout: &Layout,
    leaf: &LeafProfile,
    spec: &ClusterSpec,
    ca: &Ca,
    ca_path: &Path,
    report: &mut InitReport,
) -> Result<()> {
    let crt = layout.crt(leaf.base);
    let key_path = layout.key(leaf.base);
    let want = leaf_spec(leaf, spec);
    if let Some(cert) = layout::load_cert(&crt)? {
        let key = layout::load_key(&key_path)?.ok_or_else(|| {
            Error::invalid(
                &key_path,
                format!("missing, but certificate {} exists", crt.display()),
            )
        })?;
        layout::check_key_matches(&cert, &crt, &key, &key_path)?;
        layout::check_signed_by(&cert, &crt, &ca.cert, ca_path)?;
        check_usages(&cert, &crt, leaf.usage)?;
        let missing = want
            .sans
            .missing_from(&cert.info().dns_names, &cert.info().ip_addresses);
        if !missing.is_empty() {
            return Err(Error::invalid(
                &crt,
                format!(
                    "is missing required subject alternative names: {}",
                    missing.join(", ")
                ),
            ));
        }
        warn_if_expired(&cert, &crt, report);
        warn_if_open(&key_path, report);
        report.actions.push(Action::Kept(crt));
        return Ok(());
    }
    if ca.is_external() {
        report.missing.push(Error::ExternalCa {
            path: crt,
            ca: ca_path.to_path_buf(),
        });
        return Ok(());
    }
    let key = obtain_key(&key_path, spec, report)?;
    let cert = issue::issue_for_key(&want, &key, ca)?;
    store::write_atomic(&crt, cert.pem().as_bytes(), MODE_PUBLIC)?;
    report.actions.push(Action::Created(crt));
    if leaf.name == "apiserver-kubelet-client"
        && let Some(dep) = spec.kubernetes_version.kubelet_client_dependency()
    {
        report.actions.push(Action::Note(dep));
    }
    Ok(())
}

/// Error unless the certificate carries the extended key usages of its profile.
fn check_usages(cert: &Cert, path: &Path, usage: Usage) -> Result<()> {
    let info = cert.info();
    for (needed, present, name) in [
        (usage.server(), info.server_auth, "serverAuth"),
        (usage.client(), info.client_auth, "clientAuth"),
    ] {
        if needed && !present {
            return Err(Error::invalid(
                path,
                format!("lacks extended key usage {name}"),
            ));
        }
    }
    Ok(())
}

/// Warns when a secret file (key, kubeconfig) is readable by group or others.
fn warn_if_open(path: &Path, report: &mut InitReport) {
    if let Some(mode) = store::mode_of(path)
        && mode & 0o077 != 0
    {
        report.actions.push(Action::Warning(format!(
            "{} has mode {mode:04o}; private keys and kubeconfigs should be 0600",
            path.display()
        )));
    }
}

fn warn_if_expired(cert: &Cert, path: &Path, report: &mut InitReport) {
    if cert.info().not_after < time::OffsetDateTime::now_utc() {
        report.actions.push(Action::Warning(format!(
            "{} has expired; run `pki renew`",
            path.display()
        )));
    }
}

/// Keeps or creates `sa.key`/`sa.pub`. With an external cluster CA nothing is generated: as
/// kubeadm (`certs sa` prints "Using existing sa keys" there), the operator supplies the pair,
/// and a missing one is reported.
fn ensure_sa(
    layout: &Layout,
    spec: &ClusterSpec,
    external_ca: bool,
    report: &mut InitReport,
) -> Result<()> {
    let key_path = layout.sa_key();
    let pub_path = layout.sa_pub();
    let existing_pub = store::read_optional(&pub_path)?;
    let key = match layout::load_key(&key_path)? {
        Some(k) => {
            warn_if_open(&key_path, report);
            report.actions.push(Action::Kept(key_path.clone()));
            k
        }
        None => {
            if existing_pub.is_some() {
                return Err(Error::invalid(
                    &pub_path,
                    format!("exists but {} is missing", key_path.display()),
                ));
            }
            if external_ca {
                report.missing.push(Error::ExternalSaKey { path: key_path });
                return Ok(());
            }
            let k = PrivateKey::generate(spec.key_algorithm)?;
            store::write_atomic(&key_path, k.pem().as_bytes(), MODE_SECRET)?;
            report.actions.push(Action::Created(key_path.clone()));
            k
        }
    };
    match existing_pub {
        Some(text) => {
            let ok = pem::parse_many(&text)
                .unwrap_or_default()
                .iter()
                .filter(|b| b.tag() == "PUBLIC KEY")
                .any(|b| crate::inspect::same_public_key(b.contents(), &key.public_key_der()));
            if !ok {
                return Err(Error::invalid(
                    &pub_path,
                    format!("does not hold the public key of {}", key_path.display()),
                ));
            }
            report.actions.push(Action::Kept(pub_path));
        }
        None => {
            store::write_atomic(&pub_path, key.public_key_pem().as_bytes(), MODE_PUBLIC)?;
            report.actions.push(Action::Created(pub_path));
        }
    }
    Ok(())
}

fn ensure_kubeconfig(
    layout: &Layout,
    kc: &KubeconfigProfile,
    spec: &ClusterSpec,
    ca: &Ca,
    report: &mut InitReport,
) -> Result<()> {
    let path = layout.kubeconfig(kc);
    let ca_path = layout.crt(profile::ca_profile(CaId::Ca).base);
    if let Some(text) = store::read_secret_optional(&path)? {
        let parsed = kubeconfig::parse(&text, &path)?;
        if parsed.ca.is_empty() && parsed.client_cert.is_none() && ca.is_external() {
            // Still waiting for the external CA's signature on `<name>.csr`.
            report.missing.push(Error::invalid(
                &path,
                "has no client certificate yet: add the external CA's signature of its .csr \
                 as client-certificate-data",
            ));
            return Ok(());
        }
        if parsed.ca.is_empty() {
            // kubeadm's partial kubeconfig from `generate-csr`, its certificate added by the
            // external CA's operator: once the client part checks out, embed the CA data.
            validate_client(&parsed, &path, ca, &ca_path)?;
            let done = kubeconfig::rewrite_embedded(&text, &path, &ca.cert.pem(), None)?
                .ok_or_else(|| Error::invalid(&path, "cannot embed the CA data"))?;
            store::write_atomic(&path, done.as_bytes(), MODE_SECRET)?;
            report.actions.push(Action::Completed(path.clone()));
        }
        let text = store::read_secret_optional(&path)?.unwrap_or(text);
        let parsed = kubeconfig::parse(&text, &path)?;
        validate_kubeconfig(&parsed, &path, ca, &ca_path)?;
        if let Some(cert) = &parsed.client_cert {
            warn_if_expired(cert, &path, report);
        }
        let expected = server_for(kc, spec);
        if parsed.server != expected {
            report.actions.push(Action::Warning(format!(
                "{} points at {} (expected {expected})",
                path.display(),
                parsed.server,
            )));
        }
        warn_if_open(&path, report);
        report.actions.push(Action::Kept(path));
        return Ok(());
    }
    if ca.is_external() {
        report.missing.push(Error::ExternalCa { path, ca: ca_path });
        return Ok(());
    }
    write_kubeconfig(&path, kc, &spec.node_name, spec, ca, &server_for(kc, spec))?;
    report.actions.push(Action::Created(path));
    Ok(())
}

/// The API server URL `kc` points at on this node, as kubeadm writes it: controller-manager.conf
/// and scheduler.conf the local endpoint, the others `controlPlaneEndpoint` when set.
pub fn server_for(kc: &KubeconfigProfile, spec: &ClusterSpec) -> String {
    match kc.endpoint {
        Endpoint::Local => spec.local_server_url(),
        _ => spec.server_url(),
    }
}

/// Issues a fresh client certificate and key for `kc` and writes the kubeconfig atomically.
pub fn write_kubeconfig(
    path: &Path,
    kc: &KubeconfigProfile,
    node_name: &str,
    spec: &ClusterSpec,
    ca: &Ca,
    server: &str,
) -> Result<()> {
    let want = kubeconfig_spec(kc, node_name, spec);
    let key = PrivateKey::generate(spec.key_algorithm)?;
    let cert = issue::issue_for_key(&want, &key, ca)?;
    let text = kubeconfig::render_named(
        &spec.cluster_name,
        server,
        &ca.cert.pem(),
        &want.common_name,
        &cert,
        &key,
    )?;
    store::write_atomic(path, text.as_bytes(), MODE_SECRET)
}

/// Checks an existing kubeconfig against the cluster CA: CA data must include the CA, the
/// client certificate must be signed by it, and the key must match.
pub fn validate_kubeconfig(
    parsed: &kubeconfig::Kubeconfig,
    path: &Path,
    ca: &Ca,
    ca_path: &Path,
) -> Result<()> {
    if !parsed.ca.iter().any(|c| c.der() == ca.cert.der()) {
        return Err(Error::invalid(
            path,
            format!(
                "certificate-authority-data does not contain {}",
                ca_path.display()
            ),
        ));
    }
    validate_client(parsed, path, ca, ca_path)
}

/// Checks the client part of a kubeconfig: a certificate signed by `ca` with its key.
fn validate_client(
    parsed: &kubeconfig::Kubeconfig,
    path: &Path,
    ca: &Ca,
    ca_path: &Path,
) -> Result<()> {
    let cert = parsed
        .client_cert
        .as_ref()
        .ok_or_else(|| Error::invalid(path, "has no client certificate"))?;
    layout::check_signed_by(cert, path, &ca.cert, ca_path)?;
    match &parsed.client_key {
        Some(k) if cert.matches_key(k) => Ok(()),
        Some(_) => Err(Error::invalid(
            path,
            "client key does not match client certificate",
        )),
        None => Err(Error::invalid(path, "has no client key")),
    }
}
