//! Existing files that are wrong make `init` fail with an error naming the file.
#![allow(clippy::unwrap_used)]

use crate::common;

use common::*;

/// Where the files put in place come from.
#[derive(Clone, Copy)]
enum Source {
    /// The same cluster (another of its files).
    Same,
    /// Another, independent cluster (the file of the same name).
    Other,
}

/// A wrong file in place: on an initialized cluster each `(from, to)` (relative to the
/// kubeconfig dir, the cert dir being `pki/`) is copied from `source` over `to`; the next `init`
/// must fail with an error containing every one of `expected`.
struct Wrong {
    what: &'static str,
    source: Source,
    copies: &'static [(&'static str, &'static str)],
    expected: &'static [&'static str],
}

const WRONG: &[Wrong] = &[
    Wrong {
        what: "a CA that is not a CA",
        source: Source::Same,
        copies: &[
            ("pki/front-proxy-client.crt", "pki/front-proxy-ca.crt"),
            ("pki/front-proxy-client.key", "pki/front-proxy-ca.key"),
        ],
        expected: &["front-proxy-ca.crt", "not a CA"],
    },
    Wrong {
        what: "a leaf not signed by its CA",
        source: Source::Other,
        copies: &[
            ("pki/etcd/peer.crt", "pki/etcd/peer.crt"),
            ("pki/etcd/peer.key", "pki/etcd/peer.key"),
        ],
        expected: &["etcd/peer.crt", "not signed by CA etcd-ca"],
    },
    Wrong {
        what: "a key that does not match its certificate",
        source: Source::Same,
        copies: &[("pki/apiserver-kubelet-client.key", "pki/apiserver.key")],
        expected: &["apiserver.key", "does not match"],
    },
    Wrong {
        what: "a CA key that does not match its certificate",
        source: Source::Same,
        copies: &[("pki/apiserver.key", "pki/ca.key")],
        expected: &["ca.key", "does not match"],
    },
    Wrong {
        what: "a kubeconfig with a foreign CA and key",
        source: Source::Other,
        copies: &[("scheduler.conf", "scheduler.conf")],
        expected: &["scheduler.conf"],
    },
    Wrong {
        // A client certificate in the place of the etcd server certificate (right CA, no
        // serverAuth).
        what: "a leaf without its extended key usage",
        source: Source::Same,
        copies: &[
            ("pki/etcd/healthcheck-client.crt", "pki/etcd/server.crt"),
            ("pki/etcd/healthcheck-client.key", "pki/etcd/server.key"),
        ],
        expected: &["etcd/server.crt", "lacks extended key usage serverAuth"],
    },
];

#[test]
fn wrong_files_are_named() {
    for w in WRONG {
        let c = Cluster::initialized();
        let other = match w.source {
            Source::Same => None,
            Source::Other => Some(Cluster::initialized()),
        };
        let from = other.as_ref().unwrap_or(&c);
        for (src, dst) in w.copies {
            std::fs::copy(from.root().join(src), c.root().join(dst)).unwrap();
        }
        let err = fails(&c.init(&[]));
        for e in w.expected {
            assert!(err.contains(e), "{}: {e}: {err}", w.what);
        }
    }
}

#[test]
fn leaf_missing_a_required_san() {
    let c = Cluster::initialized();
    let err = fails(&c.init(&["--apiserver-cert-extra-sans", "new.example.com,10.1.2.3"]));
    assert!(err.contains("apiserver.crt"), "{err}");
    assert_mentions(&err, &["DNS:new.example.com", "IP:10.1.2.3"]);
    // etcd extra SANs come from the kubeadm config.
    let cfg = c.write_config("apiVersion: kubeadm.k8s.io/v1beta4\nkind: ClusterConfiguration\netcd:\n  local:\n    peerCertSANs: [peer.example.com]\n");
    let err = fails(&c.init(&["--config", cfg.to_str().unwrap()]));
    assert_mentions(&err, &["etcd/peer.crt", "DNS:peer.example.com"]);
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
