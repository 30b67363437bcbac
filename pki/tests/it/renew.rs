//! `pki renew`: same profile, new key, CA untouched, restart list.
#![allow(clippy::unwrap_used)]

use crate::common;

use common::*;

fn profile(
    v: &View,
) -> (
    String,
    Vec<String>,
    Vec<String>,
    Vec<std::net::IpAddr>,
    bool,
    bool,
) {
    (
        v.cn.clone(),
        v.orgs.clone(),
        v.dns.clone(),
        v.ips.clone(),
        v.server_auth,
        v.client_auth,
    )
}

#[test]
fn renew_all_keeps_profiles_and_changes_keys() {
    let c = Cluster::initialized_with(&[
        "--certificate-validity-period",
        "48h",
        "--apiserver-cert-extra-sans",
        "extra.example.com",
    ]);
    let leaves = LEAF_BASES;
    let before: Vec<View> = leaves
        .iter()
        .map(|l| view(&c.path(&format!("{l}.crt"))))
        .collect();
    let keys_before: Vec<Vec<u8>> = leaves
        .iter()
        .map(|l| std::fs::read(c.path(&format!("{l}.key"))).unwrap())
        .collect();
    let admin_before = kubeconfig(&c.conf("admin.conf"));
    let kubelet_before = std::fs::read(c.conf("kubelet.conf")).unwrap();
    let cas = c.read_all(CA_FILES);

    let out = ok(&c.cmd(&["renew", "all"]));
    assert!(out.contains("You must restart"), "{out}");
    assert_mentions(
        &out,
        &[
            "kube-apiserver",
            "etcd",
            "kube-controller-manager",
            "kube-scheduler",
        ],
    );
    assert!(
        !out.contains("kubelet,") && !out.contains(", kubelet "),
        "kubelet.conf is not renewed: {out}"
    );

    for (i, l) in leaves.iter().enumerate() {
        let crt = c.path(&format!("{l}.crt"));
        let after = view(&crt);
        assert_eq!(profile(&after), profile(&before[i]), "{l} profile kept");
        assert_ne!(after.spki, before[i].spki, "{l} has a new key");
        assert_ne!(
            std::fs::read(c.path(&format!("{l}.key"))).unwrap(),
            keys_before[i]
        );
        assert!(
            after.not_after > now() + 360 * DAY,
            "{l} renewed for a year"
        );
        assert_eq!(
            openssl_pubkey_of_key(&c.path(&format!("{l}.key"))),
            openssl_pubkey_of_cert(&crt)
        );
        assert_eq!(mode(&c.path(&format!("{l}.key"))), 0o600);
    }
    c.verify_apiserver();
    c.verify("etcd/peer", "etcd/ca", Some("sslclient"));
    let admin = kubeconfig(&c.conf("admin.conf"));
    let (a, b) = (
        view_pem(admin.cert_pem.as_bytes()),
        view_pem(admin_before.cert_pem.as_bytes()),
    );
    assert_eq!(profile(&a), profile(&b));
    assert_ne!(a.spki, b.spki);
    assert_eq!(admin.server, admin_before.server);
    assert_eq!(mode(&c.conf("admin.conf")), 0o600);
    assert_eq!(
        std::fs::read(c.conf("kubelet.conf")).unwrap(),
        kubelet_before
    );
    assert_eq!(cas, c.read_all(CA_FILES), "CAs are never touched");
    // The renewed set is still what init expects.
    ok(&c.init(&["--apiserver-cert-extra-sans", "extra.example.com"]));
}

#[test]
fn renew_one_name_and_restart_list() {
    let c = Cluster::initialized();
    let api = std::fs::read(c.path("apiserver.crt")).unwrap();
    let etcd = std::fs::read(c.path("etcd/server.crt")).unwrap();
    let out = ok(&c.cmd(&["renew", "etcd-server"]));
    assert!(out.contains("You must restart etcd so"), "{out}");
    assert_ne!(std::fs::read(c.path("etcd/server.crt")).unwrap(), etcd);
    assert_eq!(std::fs::read(c.path("apiserver.crt")).unwrap(), api);
    let out = ok(&c.cmd(&["renew", "scheduler.conf"]));
    assert!(out.contains("You must restart kube-scheduler so"), "{out}");
    let err = fails(&c.cmd(&["renew", "ca"]));
    assert!(err.contains("unknown certificate name"), "{err}");
    // `all` skips what is missing (e.g. super-admin.conf on clusters older than kubeadm 1.29);
    // naming a missing file is an error naming it.
    std::fs::remove_file(c.conf("super-admin.conf")).unwrap();
    let out = ok(&c.cmd(&["renew", "all"]));
    assert!(out.contains("skipped super-admin.conf: !MISSING!"), "{out}");
    assert!(!c.conf("super-admin.conf").exists());
    let err = fails(&c.cmd(&["renew", "super-admin.conf"]));
    assert_mentions(&err, &["super-admin.conf", "missing"]);
}

#[test]
fn renew_only_what_expires_soon() {
    let c = Cluster::initialized_with(&["--certificate-validity-period", "240h"]);
    let snapshot = std::fs::read(c.path("apiserver.crt")).unwrap();
    let out = ok(&c.cmd(&["renew", "all", "--if-expiring-within", "72h"]));
    assert!(!out.contains("renewed"), "{out}");
    assert!(out.contains("No component needs a restart"), "{out}");
    assert_eq!(std::fs::read(c.path("apiserver.crt")).unwrap(), snapshot);
    let out = ok(&c.cmd(&["renew", "all", "--if-expiring-within", "30d"]));
    assert_eq!(
        out.lines().filter(|l| l.starts_with("renewed ")).count(),
        11,
        "{out}"
    );
    assert!(view(&c.path("apiserver.crt")).not_after > now() + 300 * DAY);
}
