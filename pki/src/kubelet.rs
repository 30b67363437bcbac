//! Kubelet credentials: a client certificate (`system:node:<name>`, `system:nodes`), a serving
//! certificate with DNS and IP SANs, and a kubelet.conf pointing at the client credentials.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::{Error, Result};
use crate::issue::{self, Ca, CertSpec};
use crate::key::{KeyAlgorithm, PrivateKey};
use crate::kubeconfig;
use crate::profile::{Sans, Usage};
use crate::store::{self, MODE_PUBLIC, MODE_SECRET};

/// Default directory of kubelet credentials.
pub const DEFAULT_OUT_DIR: &str = "/var/lib/kubelet/pki";

/// What to issue for one node.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct KubeletRequest {
    /// Node name.
    pub node_name: String,
    /// Node IPs (serving certificate IP SANs).
    pub node_ips: Vec<IpAddr>,
    /// Host names (serving certificate DNS SANs); the node name when empty.
    pub hostnames: Vec<String>,
    /// Key algorithm.
    pub key_algorithm: KeyAlgorithm,
    /// Lifetime.
    pub validity: Duration,
    /// API server URL for kubelet.conf.
    pub server: String,
    /// CA data for kubelet.conf (PEM, possibly the old+new bundle of a CA rotation); the
    /// signing CA's certificate when `None`.
    pub trust_bundle: Option<String>,
    /// Where the files will live on the node (kubelet.conf references
    /// `<kubelet_dir>/kubelet-client-current.pem`); the output directory when `None`.
    pub kubelet_dir: Option<PathBuf>,
}

impl KubeletRequest {
    /// A request with defaults: no IPs, host name = node name, ECDSA-P256 (what the kubelet
    /// itself generates), one year.
    pub fn new(node_name: impl Into<String>, server: impl Into<String>) -> Self {
        KubeletRequest {
            node_name: node_name.into(),
            node_ips: Vec::new(),
            hostnames: Vec::new(),
            key_algorithm: KeyAlgorithm::EcdsaP256,
            validity: crate::spec::DEFAULT_LEAF_VALIDITY,
            server: server.into(),
            trust_bundle: None,
            kubelet_dir: None,
        }
    }
}

/// Files written for a node.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct KubeletFiles {
    /// `kubelet-client-current.pem`: symlink to [`KubeletFiles::client_pem_versioned`] (the
    /// kubelet's own rotation layout); kubelet.conf points here.
    pub client_pem: PathBuf,
    /// `kubelet-client-<YYYY-MM-DD-HH-MM-SS>.pem`: client certificate followed by its key.
    pub client_pem_versioned: PathBuf,
    /// `kubelet.crt`: serving certificate.
    pub serving_crt: PathBuf,
    /// `kubelet.key`: serving key.
    pub serving_key: PathBuf,
    /// `kubelet.conf`.
    pub kubeconfig: PathBuf,
}

/// Refuses to write into this host's own kubelet directory for another node: fails unless
/// `node_name` is this host's name (compared as the kubelet does, ignoring case). Fails closed
/// when the host name cannot be read.
pub fn check_this_host(node_name: &str) -> Result<()> {
    match crate::spec::default_node_name() {
        Some(host) if host.eq_ignore_ascii_case(node_name) => Ok(()),
        host => Err(Error::Config(format!(
            "node {node_name:?} is not this host ({}); writing into {DEFAULT_OUT_DIR} would \
             replace this host's kubelet identity: pass --out-dir",
            host.as_deref().unwrap_or("host name unknown")
        ))),
    }
}

/// This host's own kubelet kubeconfig directory (kubeadm's).
pub const HOST_KUBECONFIG_DIR: &str = "/etc/kubernetes";

/// Refuses to write another node's kubelet.conf into this host's kubeconfig directory, where it
/// would replace this host's kubelet identity.
pub fn check_kubeconfig_dir(node_name: &str, kubeconfig_dir: &Path) -> Result<()> {
    if kubeconfig_dir != Path::new(HOST_KUBECONFIG_DIR) || check_this_host(node_name).is_ok() {
        return Ok(());
    }
    Err(Error::Config(format!(
        "node {node_name:?} is not this host; writing {HOST_KUBECONFIG_DIR}/kubelet.conf would \
         replace this host's kubelet identity: pass --kubeconfig-dir for that node's kubelet.conf"
    )))
}

/// Issues and writes a node's kubelet client and serving credentials and kubelet.conf, holding
/// the locks of `out_dir` and of the kubeconfig's directory (after completing what a killed run
/// left there).
pub fn issue_kubelet(
    req: &KubeletRequest,
    ca: &Ca,
    out_dir: &Path,
    kubeconfig_path: &Path,
) -> Result<KubeletFiles> {
    let on_node = match &req.kubelet_dir {
        Some(dir) if dir.is_absolute() => dir.join("kubelet-client-current.pem"),
        Some(dir) => {
            return Err(Error::Config(format!(
                "the kubelet directory {} must be an absolute path",
                dir.display()
            )));
        }
        None => {
            let p = out_dir.join("kubelet-client-current.pem");
            std::path::absolute(&p).unwrap_or(p)
        }
    };
    let kubeconfig_dir = match kubeconfig_path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    // Both directories are shared with other writers (`renew` writes the kubeconfig dir): lock
    // them, and finish what a killed run left, before anything is written.
    let _locks = store::lock_dirs(&[out_dir, kubeconfig_dir], &[], durable::LockWait::Block)?
        .ok_or_else(|| Error::Config("directory lock refused while blocking".into()))?;
    store::clean_stale_temps(out_dir)?;
    store::clean_stale_temps(kubeconfig_dir)?;
    let cn = format!("system:node:{}", req.node_name);
    let client_key = PrivateKey::generate(req.key_algorithm)?;
    let client = issue::issue_for_key(
        &CertSpec::leaf(
            cn.clone(),
            &["system:nodes"],
            Sans::default(),
            Usage::Client,
            req.validity,
        ),
        &client_key,
        ca,
    )?;
    let mut sans = Sans::default();
    if req.hostnames.is_empty() {
        sans.add(&req.node_name);
    }
    for h in &req.hostnames {
        sans.add(h);
    }
    for ip in &req.node_ips {
        sans.add_ip(*ip);
    }
    let serving_key = PrivateKey::generate(req.key_algorithm)?;
    let serving = issue::issue_for_key(
        &CertSpec::leaf(
            cn.clone(),
            &["system:nodes"],
            sans,
            Usage::Server,
            req.validity,
        ),
        &serving_key,
        ca,
    )?;
    let stamp = time::OffsetDateTime::now_utc()
        .format(time::macros::format_description!(
            "[year]-[month]-[day]-[hour]-[minute]-[second]"
        ))
        .map_err(|e| crate::Error::Crypto(format!("timestamp: {e}")))?;
    let versioned = format!("kubelet-client-{stamp}.pem");
    let files = KubeletFiles {
        client_pem: out_dir.join("kubelet-client-current.pem"),
        client_pem_versioned: out_dir.join(&versioned),
        serving_crt: out_dir.join("kubelet.crt"),
        serving_key: out_dir.join("kubelet.key"),
        kubeconfig: kubeconfig_path.to_path_buf(),
    };
    let client_pem = zeroize::Zeroizing::new(format!("{}{}", client.pem(), client_key.pem()));
    // The client credentials are one self-contained file, put in place before the current
    // symlink points at it; the serving pair is swapped as one generation.
    store::write_atomic(
        &files.client_pem_versioned,
        client_pem.as_bytes(),
        MODE_SECRET,
    )?;
    store::write_many_atomic(&[
        (
            &files.serving_key,
            serving_key.pem().as_bytes(),
            MODE_SECRET,
        ),
        (&files.serving_crt, serving.pem().as_bytes(), MODE_PUBLIC),
    ])?;
    store::symlink_atomic(Path::new(&versioned), &files.client_pem)?;
    let ca_pem = req.trust_bundle.clone().unwrap_or_else(|| ca.cert.pem());
    let conf = kubeconfig::render_with_files(&req.server, &ca_pem, &cn, &on_node)?;
    store::write_atomic(&files.kubeconfig, conf.as_bytes(), MODE_SECRET)?;
    Ok(files)
}
