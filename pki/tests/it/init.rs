//! `pki init`: the full kubeadm set, checked with openssl and against the kubeadm table.
#![allow(clippy::unwrap_used)]

use crate::common;

use std::collections::BTreeMap;
use std::net::IpAddr;

use common::*;

struct Expect {
    file: &'static str,
    ca: &'static str,
    cn: &'static str,
    orgs: &'static [&'static str],
    server: bool,
    client: bool,
}

const LEAVES: &[Expect] = &[
    Expect {
        file: "apiserver",
        ca: "ca",
        cn: "kube-apiserver",
        orgs: &[],
        server: true,
        client: false,
    },
    Expect {
        file: "apiserver-kubelet-client",
        ca: "ca",
        cn: "kube-apiserver-kubelet-client",
        orgs: &[],
        server: false,
        client: true,
    },
    Expect {
        file: "apiserver-etcd-client",
        ca: "etcd/ca",
        cn: "kube-apiserver-etcd-client",
        orgs: &[],
        server: false,
        client: true,
    },
    Expect {
        file: "front-proxy-client",
        ca: "front-proxy-ca",
        cn: "front-proxy-client",
        orgs: &[],
        server: false,
        client: true,
    },
    Expect {
        file: "etcd/server",
        ca: "etcd/ca",
        cn: "cp1",
        orgs: &[],
        server: true,
        client: true,
    },
    Expect {
        file: "etcd/peer",
        ca: "etcd/ca",
        cn: "cp1",
        orgs: &[],
        server: true,
        client: true,
    },
    Expect {
        file: "etcd/healthcheck-client",
        ca: "etcd/ca",
        cn: "kube-etcd-healthcheck-client",
        orgs: &[],
        server: false,
        client: true,
    },
];

const CAS: &[(&str, &str)] = &[
    ("ca", "kubernetes"),
    ("front-proxy-ca", "front-proxy-ca"),
    ("etcd/ca", "etcd-ca"),
];

const CONFS: &[(&str, &str, &[&str])] = &[
    (
        "admin.conf",
        "kubernetes-admin",
        &["kubeadm:cluster-admins"],
    ),
    (
        "super-admin.conf",
        "kubernetes-super-admin",
        &["system:masters"],
    ),
    (
        "controller-manager.conf",
        "system:kube-controller-manager",
        &[],
    ),
    ("scheduler.conf", "system:kube-scheduler", &[]),
    ("kubelet.conf", "system:node:cp1", &["system:nodes"]),
];

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn check_validity(v: &View, days: i64) {
    let now = now();
    // notBefore backdated 5 minutes (allow a minute of test runtime).
    assert!(
        v.not_before <= now - 4 * 60 && v.not_before >= now - 7 * 60,
        "notBefore {} vs now {now}",
        v.not_before
    );
    let want = now + days * DAY;
    assert!(
        (v.not_after - want).abs() < 120,
        "notAfter {} expected about {want}",
        v.not_after
    );
}

#[test]
fn init_writes_the_kubeadm_set() {
    let c = Cluster::new();
    let out = ok(&c.init(&[]));
    assert!(out.contains("created"), "{out}");

    let mut ca_views = BTreeMap::new();
    for (base, cn) in CAS {
        let crt = c.path(&format!("{base}.crt"));
        let key = c.path(&format!("{base}.key"));
        assert_eq!(mode(&crt), 0o644, "{base}.crt");
        assert_eq!(mode(&key), 0o600, "{base}.key");
        openssl_verify(&crt, &crt, None);
        let v = view(&crt);
        assert_eq!(v.cn, *cn);
        assert_eq!(v.issuer_cn, *cn, "self-signed");
        assert!(v.is_ca && v.has_basic_constraints, "{base} must be a CA");
        assert!(
            v.ku_cert_sign && v.ku_digital_signature && v.ku_key_encipherment,
            "{base} key usage"
        );
        assert!(v.ski.is_some(), "{base} SKI");
        assert_eq!(v.serial.len(), 16, "random 128-bit serial");
        check_validity(&v, 3650);
        assert_eq!(
            openssl_pubkey_of_key(&key),
            openssl_pubkey_of_cert(&crt),
            "{base} key matches"
        );
        if *base == "ca" {
            assert_eq!(v.dns, vec!["kubernetes".to_owned()]);
        }
        ca_views.insert(*base, v);
    }

    for e in LEAVES {
        let crt = c.path(&format!("{}.crt", e.file));
        let key = c.path(&format!("{}.key", e.file));
        let ca = c.path(&format!("{}.crt", e.ca));
        assert_eq!(mode(&crt), 0o644, "{}", e.file);
        assert_eq!(mode(&key), 0o600, "{}", e.file);
        if e.server {
            openssl_verify(&ca, &crt, Some("sslserver"));
        }
        if e.client {
            openssl_verify(&ca, &crt, Some("sslclient"));
        }
        let v = view(&crt);
        assert_eq!(v.cn, e.cn, "{}", e.file);
        assert_eq!(
            v.orgs,
            e.orgs.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
            "{}",
            e.file
        );
        assert_eq!(
            (v.server_auth, v.client_auth),
            (e.server, e.client),
            "{} EKU",
            e.file
        );
        assert!(
            v.ku_digital_signature && v.ku_key_encipherment && !v.ku_cert_sign,
            "{} KU",
            e.file
        );
        assert!(!v.is_ca, "{}", e.file);
        assert_eq!(
            v.aki, ca_views[e.ca].ski,
            "{} AKI must be its CA's SKI",
            e.file
        );
        assert!(v.ski.is_some(), "{} SKI", e.file);
        check_validity(&v, 365);
        assert_eq!(
            openssl_pubkey_of_key(&key),
            openssl_pubkey_of_cert(&crt),
            "{} key matches",
            e.file
        );
        if !e.file.starts_with("etcd/server")
            && !e.file.starts_with("etcd/peer")
            && e.file != "apiserver"
        {
            assert!(
                v.dns.is_empty() && v.ips.is_empty(),
                "{} has no SANs",
                e.file
            );
        }
    }

    assert_sans(
        &view(&c.path("apiserver.crt")),
        &["10.96.0.1", "192.168.10.5"],
        &[
            "cp1",
            "kubernetes",
            "kubernetes.default",
            "kubernetes.default.svc",
            "kubernetes.default.svc.cluster.local",
        ],
    );
    for f in ["etcd/server", "etcd/peer"] {
        let v = view(&c.path(&format!("{f}.crt")));
        assert_eq!(v.dns, vec!["cp1".to_owned(), "localhost".to_owned()], "{f}");
        assert_sans(&v, &["192.168.10.5", "127.0.0.1", "::1"], &[]);
    }

    // Service-account key pair.
    assert_eq!(mode(&c.path("sa.key")), 0o600);
    assert_eq!(mode(&c.path("sa.pub")), 0o644);
    assert_eq!(
        openssl_pubkey_of_key(&c.path("sa.key")),
        std::fs::read_to_string(c.path("sa.pub")).unwrap()
    );

    let ca_pem = std::fs::read_to_string(c.path("ca.crt")).unwrap();
    for (file, cn, orgs) in CONFS {
        let p = c.conf(file);
        assert_eq!(mode(&p), 0o600, "{file}");
        let kc = kubeconfig(&p);
        assert_eq!(kc.server, "https://192.168.10.5:6443");
        assert_eq!(kc.cluster, "kubernetes");
        assert_eq!(kc.ca_pem, ca_pem, "{file} embeds ca.crt");
        let tmp = c.root().join("client.crt");
        std::fs::write(&tmp, &kc.cert_pem).unwrap();
        openssl_verify(&c.path("ca.crt"), &tmp, Some("sslclient"));
        let v = view_pem(kc.cert_pem.as_bytes());
        assert_eq!(v.cn, *cn, "{file}");
        assert_eq!(
            v.orgs,
            orgs.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
            "{file}"
        );
        assert!(v.client_auth && !v.server_auth, "{file}");
        assert_eq!(v.aki, ca_views["ca"].ski);
        let keyf = c.root().join("client.key");
        std::fs::write(&keyf, &kc.key_pem).unwrap();
        assert_eq!(
            openssl_pubkey_of_key(&keyf),
            openssl_pubkey_of_cert(&tmp),
            "{file} key matches"
        );
    }
}

fn snapshot(c: &Cluster) -> BTreeMap<String, Vec<u8>> {
    let mut m = BTreeMap::new();
    let mut stack = vec![c.root().to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                m.insert(p.to_string_lossy().into_owned(), std::fs::read(&p).unwrap());
            }
        }
    }
    m
}

#[test]
fn second_init_keeps_every_file_byte_identical() {
    let c = Cluster::initialized();
    let before = snapshot(&c);
    assert_eq!(before.len(), 27, "{:?}", before.keys().collect::<Vec<_>>());
    let out = ok(&c.init(&[]));
    assert!(
        !out.contains("created"),
        "second run must not create anything: {out}"
    );
    assert!(out.contains("using existing"), "{out}");
    assert_eq!(before, snapshot(&c));
}

#[test]
fn rerun_completes_an_interrupted_run() {
    let c = Cluster::initialized();
    // Simulate a kill after the key of a leaf was written but before its certificate, a
    // leftover temp file, and a kill before a kubeconfig was written.
    std::fs::remove_file(c.path("apiserver.crt")).unwrap();
    std::fs::remove_file(c.conf("scheduler.conf")).unwrap();
    std::fs::write(c.pki().join(".apiserver.crt.tmp-1-1"), b"half").unwrap();
    let key_before = std::fs::read(c.path("apiserver.key")).unwrap();
    ok(&c.init(&[]));
    assert_eq!(
        std::fs::read(c.path("apiserver.key")).unwrap(),
        key_before,
        "leftover key reused"
    );
    assert_eq!(
        openssl_pubkey_of_key(&c.path("apiserver.key")),
        openssl_pubkey_of_cert(&c.path("apiserver.crt"))
    );
    c.verify_apiserver();
    assert!(c.conf("scheduler.conf").exists());
    assert!(
        !c.pki().join(".apiserver.crt.tmp-1-1").exists(),
        "stale temp removed"
    );
}

#[test]
fn dual_stack_endpoint_and_extra_sans() {
    let c = Cluster::new();
    let out = c.init(&[
        "--service-cidr",
        "10.100.0.0/16,fd00:10:96::/112",
        "--control-plane-endpoint",
        "cp.example.com:8443",
        "--apiserver-cert-extra-sans",
        "10.0.0.9,api.example.org",
        "--service-dns-domain",
        "corp.local",
    ]);
    ok(&out);
    let v = view(&c.path("apiserver.crt"));
    assert_sans(
        &v,
        &["10.100.0.1", "10.0.0.9", "192.168.10.5"],
        &[
            "cp.example.com",
            "api.example.org",
            "kubernetes.default.svc.corp.local",
        ],
    );
    // kubeadm: the first IP of the first service CIDR only.
    assert!(!v.ips.contains(&ip("fd00:10:96::1")), "{:?}", v.ips);
    assert_api_endpoint(&c, &c.pki(), "https://cp.example.com:8443");
}

#[test]
fn ipv6_advertise_address() {
    let c = Cluster::new();
    let args = c.init_args(&[
        "--node-name",
        "cp6",
        "--apiserver-advertise-address",
        "fd00::10",
        "--encryption-algorithm",
        "ECDSA-P384",
        "--service-cidr",
        "fd00:96::/108",
    ]);
    ok(&run(&args));
    let v = view(&c.path("apiserver.crt"));
    assert_sans(&v, &["fd00::10", "fd00:96::1"], &[]);
    assert!(!v.key_is_rsa && v.key_bits == 384);
    assert_api_endpoint(&c, &c.pki(), "https://[fd00::10]:6443");
}

/// The one RSA run (RSA key generation is slow in debug builds): default algorithm is RSA-2048.
#[test]
fn default_algorithm_is_rsa_2048() {
    let c = Cluster::new();
    ok(&run(&c.init_args(NODE_FLAGS)));
    for f in ["ca", "apiserver", "etcd/server", "front-proxy-client"] {
        let v = view(&c.path(&format!("{f}.crt")));
        assert!(
            v.key_is_rsa && v.key_bits == 2048,
            "{f}: rsa={} bits={}",
            v.key_is_rsa,
            v.key_bits
        );
    }
    c.verify_apiserver();
    c.verify("etcd/peer", "etcd/ca", Some("sslclient"));
    let sa = openssl(&[
        "pkey",
        "-in",
        c.path("sa.key").to_str().unwrap(),
        "-noout",
        "-text",
    ]);
    assert!(String::from_utf8_lossy(&sa.stdout).contains("2048 bit"));
}

#[test]
fn validity_flags_apply() {
    let c = Cluster::initialized_with(&[
        "--certificate-validity-period",
        "720h",
        "--ca-certificate-validity-period",
        "8760h",
    ]);
    let leaf = view(&c.path("apiserver.crt"));
    assert!((leaf.not_after - (now() + 30 * DAY)).abs() < 120);
    let ca = view(&c.path("ca.crt"));
    assert!((ca.not_after - (now() + 365 * DAY)).abs() < 120);
    // A leaf never outlives its CA.
    let c2 = Cluster::initialized_with(&[
        "--certificate-validity-period",
        "9000h",
        "--ca-certificate-validity-period",
        "24h",
    ]);
    assert!(view(&c2.path("apiserver.crt")).not_after <= view(&c2.path("ca.crt")).not_after);
}

/// A kill at any moment leaves every file complete (old or new), and a rerun finishes the job.
#[test]
fn killed_runs_leave_complete_files_and_a_rerun_completes() {
    for delay_ms in [60u64, 100, 125, 150, 175, 200, 240] {
        let c = Cluster::new();
        let args = c.default_init_args(&[]);
        let mut child = std::process::Command::new(BIN)
            .args(&args)
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(delay_ms));
        let _ = child.kill();
        let _ = child.wait();
        // Whatever exists is whole: every certificate parses, every key parses.
        for (path, bytes) in snapshot(&c) {
            let name = std::path::Path::new(&path)
                .file_name()
                .unwrap()
                .to_string_lossy()
                .into_owned();
            if name.starts_with('.') {
                continue; // a temp file the rerun cleans up
            }
            if path.ends_with(".crt") {
                view_pem(&bytes);
            } else if path.ends_with(".key") {
                let out = openssl(&["pkey", "-in", &path, "-noout"]);
                assert!(
                    out.status.success(),
                    "{path} is not a whole key after kill at {delay_ms}ms"
                );
            } else if path.ends_with(".conf") {
                kubeconfig(std::path::Path::new(&path));
            }
        }
        ok(&c.init(&[]));
        let all = snapshot(&c);
        assert_eq!(all.len(), 27, "after rerun (kill at {delay_ms}ms)");
        assert!(all.keys().all(|p| !p.contains(".tmp-")), "temp files left");
        c.verify_apiserver();
        c.verify("etcd/peer", "etcd/ca", Some("sslserver"));
    }
}

/// A set produced by the openssl script of the benchmark (PKCS#8 keys, openssl's extensions)
/// is accepted as is, also with a SEC1 `EC PRIVATE KEY`, as kubeadm-made files would be.
#[test]
fn accepts_an_openssl_made_set() {
    let c = Cluster::new();
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/openssl-issue.sh");
    testkit::expect_success(
        std::process::Command::new("bash")
            .arg(script)
            .arg("ECDSA-P256")
            .arg(c.root()),
    );
    let key = c.path("apiserver.key");
    openssl_ok(&[
        "ec",
        "-in",
        key.to_str().unwrap(),
        "-out",
        key.to_str().unwrap(),
    ]);
    assert!(
        std::fs::read_to_string(&key)
            .unwrap()
            .contains("BEGIN EC PRIVATE KEY")
    );
    let before = snapshot(&c);
    let out = ok(&c.init(&[]));
    assert!(!out.contains("created"), "{out}");
    assert_eq!(before, snapshot(&c));
    ok(&c.cmd(&["check-expiration", "--fail-within", "300d"]));
    ok(&c.cmd(&["renew", "apiserver"]));
    c.verify_apiserver();
}

/// Two runs at once on the same directories serialize on the directory lock: both succeed and
/// the result is one consistent set.
#[test]
fn concurrent_runs_do_not_interfere() {
    let c = Cluster::new();
    let spawn = || {
        let args = c.default_init_args(&[]);
        std::process::Command::new(BIN).args(&args).output()
    };
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(spawn);
        let b = s.spawn(spawn);
        (a.join().unwrap().unwrap(), b.join().unwrap().unwrap())
    });
    ok(&a);
    ok(&b);
    assert_eq!(snapshot(&c).len(), 27);
    for (leaf, ca) in [
        ("apiserver", "ca"),
        ("etcd/server", "etcd/ca"),
        ("front-proxy-client", "front-proxy-ca"),
    ] {
        c.verify(leaf, ca, None);
        assert_eq!(
            openssl_pubkey_of_key(&c.path(&format!("{leaf}.key"))),
            openssl_pubkey_of_cert(&c.path(&format!("{leaf}.crt")))
        );
    }
}
