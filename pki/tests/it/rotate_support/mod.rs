//! Helpers shared by the `rotate_*` integration tests: bundle inspection, openssl checks of
//! every file a target signs, snapshots of the PKI for byte comparisons.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::common::*;

/// Every certificate of a PEM bundle, as independent views.
pub(crate) fn bundle_views(pem: &[u8]) -> Vec<View> {
    x509_parser::pem::Pem::iter_from_buffer(pem)
        .map(|p| p.unwrap())
        .filter(|p| p.label == "CERTIFICATE")
        .map(|p| view_pem(pem_of(&p.contents).as_bytes()))
        .collect()
}

/// Every `PUBLIC KEY` block of a PEM text, DER.
pub(crate) fn public_keys(pem: &[u8]) -> Vec<Vec<u8>> {
    x509_parser::pem::Pem::iter_from_buffer(pem)
        .map(|p| p.unwrap())
        .filter(|p| p.label == "PUBLIC KEY")
        .map(|p| p.contents)
        .collect()
}

pub(crate) fn pem_of(der: &[u8]) -> String {
    pem("CERTIFICATE", der)
}

/// `der` as a PEM block labelled `label` (base64 in lines of 64).
fn pem(label: &str, der: &[u8]) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut s = format!("-----BEGIN {label}-----\n");
    for c in b64.as_bytes().chunks(64) {
        s.push_str(std::str::from_utf8(c).unwrap());
        s.push('\n');
    }
    s.push_str(&format!("-----END {label}-----\n"));
    s
}

pub(crate) fn read(p: &Path) -> Vec<u8> {
    std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// Number of certificates in a file.
pub(crate) fn cert_count(p: &Path) -> usize {
    bundle_views(&read(p)).len()
}

/// CNs of the certificates in a file, in order.
pub(crate) fn cns(p: &Path) -> Vec<String> {
    bundle_views(&read(p)).into_iter().map(|v| v.cn).collect()
}

/// `openssl verify` that is expected to fail.
pub(crate) fn openssl_verify_fails(ca: &Path, cert: &Path, purpose: &str) {
    testkit::expect_failure(
        Command::new("openssl")
            .args(["verify", "-x509_strict", "-purpose", purpose, "-CAfile"])
            .arg(ca)
            .arg(cert),
    );
}

/// A rotation target as the tests see it.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum T {
    Ca,
    FrontProxy,
    Etcd,
    Sa,
}

impl T {
    pub(crate) fn name(self) -> &'static str {
        match self {
            T::Ca => "ca",
            T::FrontProxy => "front-proxy-ca",
            T::Etcd => "etcd-ca",
            T::Sa => "sa",
        }
    }
    /// Anchor file relative to the cert dir.
    pub(crate) fn anchor(self) -> &'static str {
        match self {
            T::Ca => "ca.crt",
            T::FrontProxy => "front-proxy-ca.crt",
            T::Etcd => "etcd/ca.crt",
            T::Sa => "sa.pub",
        }
    }
    pub(crate) fn key(self) -> &'static str {
        match self {
            T::Ca => "ca.key",
            T::FrontProxy => "front-proxy-ca.key",
            T::Etcd => "etcd/ca.key",
            T::Sa => "sa.key",
        }
    }
    /// Leaves (base, openssl purposes).
    pub(crate) fn leaves(self) -> &'static [(&'static str, &'static [&'static str])] {
        match self {
            T::Ca => &[
                ("apiserver", &["sslserver"]),
                ("apiserver-kubelet-client", &["sslclient"]),
            ],
            T::FrontProxy => &[("front-proxy-client", &["sslclient"])],
            T::Etcd => &[
                ("etcd/server", &["sslserver", "sslclient"]),
                ("etcd/peer", &["sslserver", "sslclient"]),
                ("etcd/healthcheck-client", &["sslclient"]),
                ("apiserver-etcd-client", &["sslclient"]),
            ],
            T::Sa => &[],
        }
    }
}

pub(crate) fn rotate(c: &Cluster, t: T, phase: &str, extra: &[&str]) -> Output {
    c.cmd_with(&["rotate", t.name(), phase], &confirmed(phase, extra))
}

/// `extra` plus `--confirm-nodes` for `switch` and `abort`: the tests stand for an operator
/// who checked the other nodes (`rotate_phases` checks the refusal without it).
pub(crate) fn confirmed<'a>(phase: &str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = extra.to_vec();
    if matches!(phase, "switch" | "abort") && !args.contains(&"--confirm-nodes") {
        args.push("--confirm-nodes");
    }
    args
}

/// `pki rotate <t> status -o json`.
pub(crate) fn status(c: &Cluster, t: T) -> serde_json::Value {
    serde_json::from_str(&ok(&rotate(c, t, "status", &["-o", "json"]))).unwrap()
}

/// The entry of `file` (as status names it, e.g. `pki/sa.pub`) in a status.
pub(crate) fn file_status<'a>(status: &'a serde_json::Value, file: &str) -> &'a serde_json::Value {
    status["files"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["file"] == file)
        .unwrap_or_else(|| panic!("{file} not in the status: {status}"))
}

/// Writes a kubeconfig's embedded client certificate and CA data to files beside it.
pub(crate) fn kubeconfig_files(c: &Cluster, name: &str) -> (PathBuf, PathBuf) {
    let kc = kubeconfig(&c.conf(name));
    let dir = c.root().join("kc-extract");
    std::fs::create_dir_all(&dir).unwrap();
    let (crt, ca) = (
        dir.join(format!("{name}.crt")),
        dir.join(format!("{name}.ca")),
    );
    std::fs::write(&crt, kc.cert_pem).unwrap();
    std::fs::write(&ca, kc.ca_pem).unwrap();
    (crt, ca)
}

/// The checks every phase boundary must pass for target `t`: every leaf verifies (openssl,
/// strict, with its purpose) against the anchor bundle; the anchor holds `count` entries whose
/// first matches the key file; signer files hold exactly one certificate matching their key;
/// kubeconfigs' client certificates verify against their own CA data and `ca.crt`.
pub(crate) fn check_boundary(c: &Cluster, t: T, count: usize) {
    let anchor = c.path(t.anchor());
    if t == T::Sa {
        let keys = public_keys(&read(&anchor));
        assert_eq!(keys.len(), count, "sa.pub entries");
        let signing = openssl_pubkey_of_key(&c.path("sa.key"));
        let first = pubkey_pem(&keys[0]);
        assert_eq!(first, signing, "first key of sa.pub is the signing key");
        return;
    }
    assert_eq!(cert_count(&anchor), count, "{} entries", t.anchor());
    // First entry of the bundle matches the key file (what `pki renew` and `init` rely on).
    let first = c.root().join("first.crt");
    std::fs::write(&first, pem_of(&first_der(&anchor))).unwrap();
    assert_eq!(
        openssl_pubkey_of_cert(&first),
        openssl_pubkey_of_key(&c.path(t.key())),
        "first entry of {} matches {}",
        t.anchor(),
        t.key()
    );
    assert_eq!(mode(&c.path(t.key())), 0o600);
    assert_eq!(mode(&anchor), 0o644);
    for (base, purposes) in t.leaves() {
        let crt = c.path(&format!("{base}.crt"));
        for p in *purposes {
            openssl_verify(&anchor, &crt, Some(p));
        }
        assert_eq!(
            openssl_pubkey_of_cert(&crt),
            openssl_pubkey_of_key(&c.path(&format!("{base}.key"))),
            "{base} key matches"
        );
    }
    if t == T::Ca {
        for name in KUBECONFIGS {
            let (crt, ca) = kubeconfig_files(c, name);
            assert_eq!(cert_count(&ca), count, "{name} CA data entries");
            assert_eq!(read(&ca), read(&anchor), "{name} CA data equals ca.crt");
            openssl_verify(&ca, &crt, Some("sslclient"));
        }
        check_signer_files(c);
    }
}

/// `ca-signer.crt` holds exactly one certificate, matching `ca-signer.key` (when present).
pub(crate) fn check_signer_files(c: &Cluster) {
    let crt = c.path("ca-signer.crt");
    if !crt.exists() {
        assert!(!c.path("ca-signer.key").exists());
        return;
    }
    assert_eq!(
        cert_count(&crt),
        1,
        "ca-signer.crt holds exactly one certificate"
    );
    assert_eq!(
        openssl_pubkey_of_cert(&crt),
        openssl_pubkey_of_key(&c.path("ca-signer.key"))
    );
    assert_eq!(mode(&c.path("ca-signer.key")), 0o600);
}

pub(crate) fn first_der(p: &Path) -> Vec<u8> {
    x509_parser::pem::Pem::iter_from_buffer(&read(p))
        .next()
        .unwrap()
        .unwrap()
        .contents
}

pub(crate) fn pubkey_pem(der: &[u8]) -> String {
    pem("PUBLIC KEY", der)
}

/// Bytes and mode of every file of the PKI (cert dir without `.rotation`, kubeconfigs,
/// manifests), keyed by relative path.
pub(crate) fn snapshot(c: &Cluster) -> BTreeMap<String, (Vec<u8>, u32)> {
    let mut out = BTreeMap::new();
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, (Vec<u8>, u32)>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let e = e.unwrap();
            let p = e.path();
            let name = e.file_name().to_string_lossy().into_owned();
            if name == ".rotation" || name == "kc-extract" || name == "first.crt" {
                continue;
            }
            // The files as their names show them: generation internals are not files of the
            // layout, and a name linking into one reads (and has the mode of) its content.
            if durable::generation::is_internal(e.file_name().as_os_str()) {
                continue;
            }
            if p.is_dir() {
                walk(root, &p, out);
            } else {
                let m = std::fs::metadata(&p).unwrap().permissions().mode() & 0o7777;
                out.insert(
                    p.strip_prefix(root).unwrap().display().to_string(),
                    (std::fs::read(&p).unwrap(), m),
                );
            }
        }
    }
    walk(c.root(), c.root(), &mut out);
    out
}

/// A kubeadm-shaped kube-controller-manager manifest in `<root>/manifests`.
pub(crate) const KCM_MANIFEST: &str = "apiVersion: v1
kind: Pod
metadata:
  name: kube-controller-manager
  namespace: kube-system
spec:
  containers:
  - command:
    - kube-controller-manager
    - --authentication-kubeconfig=/etc/kubernetes/controller-manager.conf
    - --cluster-signing-cert-file=/etc/kubernetes/pki/ca.crt
    - --cluster-signing-key-file=/etc/kubernetes/pki/ca.key
    - --root-ca-file=/etc/kubernetes/pki/ca.crt
    - --service-account-private-key-file=/etc/kubernetes/pki/sa.key
    image: registry.k8s.io/kube-controller-manager:v1.34.0
    name: kube-controller-manager
";

pub(crate) fn write_manifests(c: &Cluster) -> PathBuf {
    let dir = c.root().join("manifests");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("kube-controller-manager.yaml"), KCM_MANIFEST).unwrap();
    std::fs::write(
        dir.join("kube-apiserver.yaml"),
        "apiVersion: v1\nkind: Pod\n",
    )
    .unwrap();
    dir
}

/// A cluster after `init`, with kubeadm-shaped manifests in `<root>/manifests` (returned).
pub(crate) fn initialized_with_manifests() -> (Cluster, PathBuf) {
    let c = Cluster::new();
    ok(&c.init(&[]));
    let manifests = write_manifests(&c);
    (c, manifests)
}

/// Copies leaves (crt + key) of a target into `<root>/kept/<label>/`, to test old credentials
/// after they were replaced.
pub(crate) fn keep(c: &Cluster, label: &str, bases: &[&str]) -> PathBuf {
    let dir = c.root().join("kept").join(label);
    for b in bases {
        for ext in ["crt", "key"] {
            let dst = dir.join(format!("{b}.{ext}"));
            std::fs::create_dir_all(dst.parent().unwrap()).unwrap();
            std::fs::copy(c.path(&format!("{b}.{ext}")), dst).unwrap();
        }
    }
    dir
}
