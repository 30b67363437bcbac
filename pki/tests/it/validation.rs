//! Existing files that are wrong make `init` fail with an error naming the file.
#![allow(clippy::unwrap_used)]

use crate::common;

use common::*;

fn copy(from: &std::path::Path, to: &std::path::Path) {
    std::fs::copy(from, to).unwrap();
}

#[test]
fn ca_that_is_not_a_ca() {
    let c = Cluster::initialized();
    copy(
        &c.path("front-proxy-client.crt"),
        &c.path("front-proxy-ca.crt"),
    );
    copy(
        &c.path("front-proxy-client.key"),
        &c.path("front-proxy-ca.key"),
    );
    let err = fails(&c.init(&[]));
    assert!(
        err.contains("front-proxy-ca.crt") && err.contains("not a CA"),
        "{err}"
    );
}

#[test]
fn leaf_not_signed_by_its_ca() {
    let a = Cluster::new();
    let b = Cluster::new();
    ok(&a.init(&[]));
    ok(&b.init(&[]));
    copy(&b.path("etcd/peer.crt"), &a.path("etcd/peer.crt"));
    copy(&b.path("etcd/peer.key"), &a.path("etcd/peer.key"));
    let err = fails(&a.init(&[]));
    assert!(
        err.contains("etcd/peer.crt") && err.contains("not signed by CA etcd-ca"),
        "{err}"
    );
}

#[test]
fn leaf_missing_a_required_san() {
    let c = Cluster::initialized();
    let err = fails(&c.init(&["--apiserver-cert-extra-sans", "new.example.com,10.1.2.3"]));
    assert!(err.contains("apiserver.crt"), "{err}");
    assert!(
        err.contains("DNS:new.example.com") && err.contains("IP:10.1.2.3"),
        "{err}"
    );
    // etcd extra SANs come from the kubeadm config.
    let cfg = c.root().join("kubeadm.yaml");
    std::fs::write(
        &cfg,
        "apiVersion: kubeadm.k8s.io/v1beta4\nkind: ClusterConfiguration\netcd:\n  local:\n    peerCertSANs: [peer.example.com]\n",
    )
    .unwrap();
    let err = fails(&c.init(&["--config", cfg.to_str().unwrap()]));
    assert!(
        err.contains("etcd/peer.crt") && err.contains("DNS:peer.example.com"),
        "{err}"
    );
}

#[test]
fn key_that_does_not_match_its_certificate() {
    let c = Cluster::initialized();
    copy(
        &c.path("apiserver-kubelet-client.key"),
        &c.path("apiserver.key"),
    );
    let err = fails(&c.init(&[]));
    assert!(
        err.contains("apiserver.key") && err.contains("does not match"),
        "{err}"
    );
    // Same for a CA.
    let c = Cluster::initialized();
    copy(&c.path("apiserver.key"), &c.path("ca.key"));
    let err = fails(&c.init(&[]));
    assert!(
        err.contains("ca.key") && err.contains("does not match"),
        "{err}"
    );
}

#[test]
fn kubeconfig_with_a_foreign_ca_or_key() {
    let a = Cluster::new();
    let b = Cluster::new();
    ok(&a.init(&[]));
    ok(&b.init(&[]));
    copy(&b.conf("scheduler.conf"), &a.conf("scheduler.conf"));
    let err = fails(&a.init(&[]));
    assert!(err.contains("scheduler.conf"), "{err}");
}

#[test]
fn garbage_files_are_named() {
    let c = Cluster::initialized();
    std::fs::write(c.path("etcd/server.crt"), "not a certificate").unwrap();
    let err = fails(&c.init(&[]));
    assert!(err.contains("etcd/server.crt"), "{err}");
}

#[test]
fn too_open_key_modes_are_reported() {
    use std::os::unix::fs::PermissionsExt;
    let c = Cluster::initialized();
    std::fs::set_permissions(
        c.path("etcd/peer.key"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    let out = ok(&c.init(&[]));
    let warning = out
        .lines()
        .find(|l| l.contains("WARNING"))
        .unwrap_or_default();
    assert!(
        warning.contains("etcd/peer.key") && warning.contains("0644"),
        "{out}"
    );
    assert_eq!(out.matches("WARNING").count(), 1, "{out}");
}

#[test]
fn leaf_without_its_extended_key_usage() {
    let c = Cluster::initialized();
    // A client certificate in the place of the etcd server certificate (right CA, no serverAuth).
    copy(
        &c.path("etcd/healthcheck-client.crt"),
        &c.path("etcd/server.crt"),
    );
    copy(
        &c.path("etcd/healthcheck-client.key"),
        &c.path("etcd/server.key"),
    );
    let err = fails(&c.init(&[]));
    assert!(
        err.contains("etcd/server.crt") && err.contains("lacks extended key usage serverAuth"),
        "{err}"
    );
}
