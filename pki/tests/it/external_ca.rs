//! External CA mode: a CA certificate without its key is a trust anchor only.
#![allow(clippy::unwrap_used)]

use crate::common;

use common::*;

#[test]
fn missing_leaves_are_reported_not_faked() {
    let c = Cluster::new();
    std::fs::create_dir_all(c.pki()).unwrap();
    // An operator-provided CA made with openssl; its key stays elsewhere.
    let keydir = tempfile::tempdir().unwrap();
    let key = keydir.path().join("ca.key");
    openssl_ca(&key, &c.path("ca.crt"), "/CN=corp-k8s-ca", "30", &[]);
    let ca_before = std::fs::read(c.path("ca.crt")).unwrap();

    let err = fails(&c.init(&[]));
    assert!(err.contains("external CA"), "{err}");
    assert_mentions(
        &err,
        &[
            "apiserver.crt",
            "apiserver-kubelet-client.crt",
            "admin.conf",
            "kubelet.conf",
            // the SA key pair
            "sa.key",
        ],
    );
    assert!(!c.path("ca.key").exists(), "no CA key invented");
    assert!(
        !c.path("sa.key").exists() && !c.path("sa.pub").exists(),
        "no SA key pair generated in external CA mode (kubeadm generates none)"
    );
    assert!(
        !c.path("apiserver.crt").exists(),
        "no leaf faked for the external CA"
    );
    assert!(
        !c.conf("admin.conf").exists(),
        "no kubeconfig faked for the external CA"
    );
    assert_eq!(std::fs::read(c.path("ca.crt")).unwrap(), ca_before);
    // CAs this tool does own are still completed.
    assert!(c.path("etcd/server.crt").exists() && c.path("front-proxy-client.crt").exists());
}

#[test]
fn existing_leaves_are_checked_against_the_external_ca() {
    let c = Cluster::initialized();
    // Move the CA key away: now the cluster CA is external.
    std::fs::remove_file(c.path("ca.key")).unwrap();
    let out = ok(&c.init(&[]));
    assert!(out.contains("external CA mode"), "{out}");
    let table = ok(&c.cmd(&["check-expiration"]));
    let api = table.lines().find(|l| l.starts_with("apiserver ")).unwrap();
    assert!(
        api.trim_end().ends_with("yes"),
        "apiserver externally managed: {api}"
    );
    let etcd = table
        .lines()
        .find(|l| l.starts_with("etcd-server "))
        .unwrap();
    assert!(etcd.trim_end().ends_with("no"), "{etcd}");
    // Renewal needs the key: a named certificate is an error, `all` renews what it can.
    let err = fails(&c.cmd(&["renew", "apiserver"]));
    assert_mentions(&err, &["ca.key", "externally managed"]);
    let etcd_before = std::fs::read(c.path("etcd/server.crt")).unwrap();
    let api_before = std::fs::read(c.path("apiserver.crt")).unwrap();
    let out = ok(&c.cmd(&["renew", "all"]));
    assert_mentions(&out, &["skipped apiserver:", "externally managed"]);
    assert!(out.contains("skipped admin.conf:"), "{out}");
    assert!(out.contains("renewed etcd-server"), "{out}");
    assert_ne!(
        std::fs::read(c.path("etcd/server.crt")).unwrap(),
        etcd_before
    );
    assert_eq!(std::fs::read(c.path("apiserver.crt")).unwrap(), api_before);
    // A leaf that does not chain to the external CA is refused.
    let other = Cluster::initialized();
    std::fs::copy(other.path("apiserver.crt"), c.path("apiserver.crt")).unwrap();
    std::fs::copy(other.path("apiserver.key"), c.path("apiserver.key")).unwrap();
    let err = fails(&c.init(&[]));
    assert_mentions(&err, &["apiserver.crt", "not signed"]);
}
