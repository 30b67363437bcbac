//! A three-node control plane on one machine (`cp-1..3`, 127.0.1.1–3): shared CA material copied
//! the kubeadm way, node material from `pki init` on each node, then an `etcd-ca` and a `ca`
//! rotation with `start --export` on cp-1 and `start --join` on cp-2 and cp-3. Certificates
//! only (openssl verify and SAN checks): no etcd members run here.
#![allow(clippy::unwrap_used)]

use std::net::IpAddr;
use std::os::unix::fs::PermissionsExt;

use crate::common::*;
use crate::rotate_support::*;

/// The files every control-plane node shares (kubeadm's `--upload-certs` set).
const SHARED: [&str; 8] = [
    "ca.crt",
    "ca.key",
    "front-proxy-ca.crt",
    "front-proxy-ca.key",
    "etcd/ca.crt",
    "etcd/ca.key",
    "sa.key",
    "sa.pub",
];

fn node_init(c: &Cluster, n: usize) {
    let name = format!("cp-{n}");
    let ip = format!("127.0.1.{n}");
    ok(&run(&c.init_args(&[
        "--node-name",
        &name,
        "--apiserver-advertise-address",
        &ip,
        "--encryption-algorithm",
        "ECDSA-P256",
    ])));
}

/// cp-1 initialised from scratch; cp-2 and cp-3 get cp-1's shared files first.
fn three_nodes() -> Vec<Cluster> {
    let nodes: Vec<Cluster> = (0..3).map(|_| Cluster::new()).collect();
    node_init(&nodes[0], 1);
    for (i, c) in nodes.iter().enumerate().skip(1) {
        std::fs::create_dir_all(c.path("etcd")).unwrap();
        for f in SHARED {
            std::fs::copy(nodes[0].path(f), c.path(f)).unwrap();
        }
        node_init(c, i + 1);
    }
    nodes
}

/// The `sha256:<hex>` pin `start --export` printed for the workers' bundle.
fn pin_from(out: &str) -> String {
    let word = out
        .split_whitespace()
        .find(|w| w.starts_with("sha256:"))
        .unwrap_or_else(|| panic!("no pin printed:\n{out}"));
    let pin: String = word
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == ':')
        .collect();
    assert_eq!(pin.len(), "sha256:".len() + 64, "{word}");
    pin
}

/// The workers' bundle holds CA certificates and no private key (openssl finds certificates and
/// no key in it), is not secret (0644), and `pin` is kubeadm's hash of its new CA, computed here
/// with openssl.
fn assert_worker_bundle_is_public_and_pinned(public: &str, pin: &str) {
    let text = std::fs::read_to_string(public).unwrap();
    assert!(!text.contains("PRIVATE KEY"), "{text}");
    assert_eq!(mode(std::path::Path::new(public)), 0o644);
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    let dir = tempfile::tempdir().unwrap();
    for part in ["oldAnchor", "newAnchor"] {
        let pem = dir.path().join(part);
        std::fs::write(&pem, json[part].as_str().unwrap()).unwrap();
        let p = pem.to_str().unwrap();
        openssl_ok(&["x509", "-noout", "-in", p]);
        let key = openssl(&["pkey", "-in", p, "-noout"]);
        assert!(!key.status.success(), "openssl finds a key in {part}");
    }
    let new = dir.path().join("newAnchor");
    let hash = std::process::Command::new("sh")
        .arg("-c")
        .arg(
            "openssl x509 -pubkey -noout -in \"$1\" | openssl pkey -pubin -outform der | sha256sum",
        )
        .arg("sh")
        .arg(&new)
        .output()
        .unwrap();
    let hex = String::from_utf8(hash.stdout).unwrap();
    assert_eq!(format!("sha256:{}", &hex[..64]), pin);
}

fn key_from(out: &str) -> String {
    let line = out
        .lines()
        .find(|l| l.contains("certificate key"))
        .unwrap_or_else(|| panic!("no certificate key printed:\n{out}"));
    let hex = line.rsplit(' ').next().unwrap().to_owned();
    assert_eq!(hex.len(), 64, "{line}");
    hex
}

/// Runs `phase` on every node in turn.
fn on_all(nodes: &[Cluster], t: T, phase: &str) {
    for c in nodes {
        ok(&rotate(c, t, phase, &[]));
    }
}

fn assert_own_identity(c: &Cluster, n: usize, leaf: &str) {
    let v = view_pem(&read(&c.path(&format!("{leaf}.crt"))));
    let ip: IpAddr = format!("127.0.1.{n}").parse().unwrap();
    assert!(v.ips.contains(&ip), "{leaf} of cp-{n}: {:?}", v.ips);
    for other in (1..=3).filter(|o| *o != n) {
        let ip: IpAddr = format!("127.0.1.{other}").parse().unwrap();
        assert!(
            !v.ips.contains(&ip),
            "{leaf} of cp-{n} carries cp-{other}'s IP"
        );
    }
    if leaf.starts_with("etcd/") {
        assert_eq!(v.cn, format!("cp-{n}"), "{leaf} of cp-{n}");
        assert!(v.dns.contains(&format!("cp-{n}")), "{leaf}: {:?}", v.dns);
    }
}

#[test]
fn etcd_ca_rotation_across_three_nodes_with_export_and_join() {
    let nodes = three_nodes();
    let file = nodes[0].root().join("etcd-ca.rotation");
    let f = file.to_string_lossy().into_owned();
    let leaves_before: Vec<_> = nodes
        .iter()
        .map(|c| read(&c.path("etcd/server.crt")))
        .collect();

    let out = ok(&rotate(&nodes[0], T::Etcd, "start", &["--export", &f]));
    let key = key_from(&out);
    assert_eq!(
        std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let text = String::from_utf8(read(&file)).unwrap();
    assert!(
        !text.contains("PRIVATE KEY") && !text.contains("CERTIFICATE"),
        "{text}"
    );

    // Refusals on cp-2, each changing nothing.
    let before = snapshot(&nodes[1]);
    let wrong = "ab".repeat(32);
    let stranger = Cluster::new();
    node_init(&stranger, 2);
    let stranger_before = snapshot(&stranger);
    let refusals = [
        (&nodes[1], T::Etcd, &wrong, "cannot be decrypted"),
        (&nodes[1], T::Ca, &key, "not of ca"),
        (&stranger, T::Etcd, &key, "is not this node's current one"),
    ];
    for (node, t, certificate_key, expected) in refusals {
        let join = [
            "--join",
            f.as_str(),
            "--certificate-key",
            certificate_key.as_str(),
        ];
        let err = fails(&rotate(node, t, "start", &join));
        assert_mentions(&err, &[expected]);
    }
    assert_eq!(snapshot(&stranger), stranger_before);
    assert!(!stranger.path(".rotation/state.json").exists());
    assert_eq!(snapshot(&nodes[1]), before, "refused joins change nothing");
    assert!(!nodes[1].path(".rotation/state.json").exists());

    for c in &nodes[1..] {
        let out = ok(&rotate(
            c,
            T::Etcd,
            "start",
            &["--join", &f, "--certificate-key", &key],
        ));
        assert!(!out.contains("certificate key"), "{out}");
    }
    // Same trust everywhere, same rotation id and phase; leaves untouched at start.
    let bundle = read(&nodes[0].path("etcd/ca.crt"));
    assert_eq!(cert_count(&nodes[0].path("etcd/ca.crt")), 2);
    let id = status(&nodes[0], T::Etcd)["rotation"]["rotationId"].clone();
    assert!(id.is_string(), "{id}");
    for (i, c) in nodes.iter().enumerate() {
        assert_eq!(read(&c.path("etcd/ca.crt")), bundle, "cp-{}", i + 1);
        let s = status(c, T::Etcd);
        assert_eq!(s["rotation"]["rotationId"], id);
        assert_eq!(s["rotation"]["phase"], "start");
        assert_eq!(read(&c.path("etcd/server.crt")), leaves_before[i]);
    }

    on_all(&nodes, T::Etcd, "switch");
    let err = fails(&rotate(&nodes[0], T::Etcd, "abort", &[]));
    assert!(err.contains("switch has run on this node"), "{err}");
    on_all(&nodes, T::Etcd, "finish");

    let ca = read(&nodes[0].path("etcd/ca.crt"));
    assert_eq!(cert_count(&nodes[0].path("etcd/ca.crt")), 1);
    // The single CA left is the new one of the bundle all nodes trusted at start.
    let new_cn = &bundle_views(&bundle)[1].cn;
    assert_eq!(&cns(&nodes[0].path("etcd/ca.crt"))[0], new_cn);
    for (i, c) in nodes.iter().enumerate() {
        let n = i + 1;
        assert_eq!(
            read(&c.path("etcd/ca.crt")),
            ca,
            "cp-{n} ends with the same single CA"
        );
        assert_eq!(status(c, T::Etcd)["rotation"]["phase"], "finish");
        for (leaf, purposes) in T::Etcd.leaves() {
            for p in *purposes {
                c.verify(leaf, "etcd/ca", Some(p));
            }
        }
        assert_own_identity(c, n, "etcd/server");
        assert_own_identity(c, n, "etcd/peer");
        assert_ne!(read(&c.path("etcd/server.crt")), leaves_before[i]);
    }
}

#[test]
fn ca_rotation_keeps_each_nodes_identity() {
    let nodes = three_nodes();
    let file = nodes[0].root().join("ca.rotation");
    let f = file.to_string_lossy().into_owned();
    let key = "0f".repeat(32);
    let out = ok(&rotate(
        &nodes[0],
        T::Ca,
        "start",
        &["--export", &f, "--certificate-key", &key],
    ));
    assert!(
        !out.contains("certificate key ("),
        "a given key is not printed:\n{out}"
    );
    let public = format!("{f}.public");
    let pin = pin_from(&out);
    assert_worker_bundle_is_public_and_pinned(&public, &pin);
    for c in &nodes[1..] {
        ok(&rotate(
            c,
            T::Ca,
            "start",
            &["--join", &f, "--certificate-key", &key],
        ));
    }
    // A worker: only ca.crt and kubelet.conf, no private key of any CA.
    let worker = Cluster::new();
    std::fs::create_dir_all(worker.path("etcd")).unwrap();
    for f in SHARED {
        std::fs::copy(nodes[0].path(f), worker.path(f)).unwrap();
    }
    node_init(&worker, 9);
    for e in std::fs::read_dir(worker.pki()).unwrap() {
        let p = e.unwrap().path();
        if p.file_name().unwrap() != "ca.crt" {
            let _ = std::fs::remove_dir_all(&p);
            let _ = std::fs::remove_file(&p);
        }
    }
    let bundle = read(&nodes[0].path("ca.crt"));
    let w = |phase: &str, extra: &[&str]| {
        let mut args = extra.to_vec();
        args.push("--worker");
        rotate(&worker, T::Ca, phase, &args)
    };
    // Workers get the public bundle and the pin, never the control-plane file or the key.
    let worker_ca_before = read(&worker.path("ca.crt"));
    let wrong_pin = format!("sha256:{}", "ab".repeat(32));
    let err = fails(&w(
        "start",
        &["--join", &public, "--ca-cert-hash", &wrong_pin],
    ));
    assert_mentions(
        &err,
        &["not the --ca-cert-hash given", "do not use this file"],
    );
    let err = fails(&w("start", &["--join", &f, "--ca-cert-hash", &pin]));
    assert_mentions(&err, &["control-plane file", "private key"]);
    let err = fails(&w(
        "start",
        &[
            "--join",
            &public,
            "--ca-cert-hash",
            &pin,
            "--certificate-key",
            &key,
        ],
    ));
    assert_mentions(&err, &["--worker takes no certificate key"]);
    assert_eq!(
        read(&worker.path("ca.crt")),
        worker_ca_before,
        "a refused start changes nothing"
    );
    ok(&w("start", &["--join", &public, "--ca-cert-hash", &pin]));
    assert_eq!(
        read(&worker.path("ca.crt")),
        bundle,
        "worker trusts old+new"
    );
    let (_, w_ca) = kubeconfig_files(&worker, "kubelet.conf");
    assert_eq!(read(&w_ca), bundle, "worker kubelet.conf CA data");

    on_all(&nodes, T::Ca, "switch");
    on_all(&nodes, T::Ca, "finish");
    let ca = read(&nodes[0].path("ca.crt"));
    ok(&w("finish", &[]));
    assert_eq!(
        read(&worker.path("ca.crt")),
        ca,
        "worker trusts the new CA only"
    );
    let (_, w_ca) = kubeconfig_files(&worker, "kubelet.conf");
    assert_eq!(read(&w_ca), ca);
    for (i, c) in nodes.iter().enumerate() {
        let n = i + 1;
        assert_eq!(read(&c.path("ca.crt")), ca, "cp-{n}");
        c.verify_apiserver();
        assert_own_identity(c, n, "apiserver");
        let (crt, ca_data) = kubeconfig_files(c, "kubelet.conf");
        assert_eq!(view_pem(&read(&crt)).cn, format!("system:node:cp-{n}"));
        assert_eq!(read(&ca_data), ca, "kubelet.conf CA data of cp-{n}");
        openssl_verify(&c.path("ca.crt"), &crt, Some("sslclient"));
    }
}

#[test]
fn printed_sequences_gate_phases_and_never_copy_node_material() {
    let c = Cluster::initialized();
    for t in [T::Etcd, T::Ca, T::FrontProxy, T::Sa] {
        let mut all = String::new();
        for phase in ["start", "switch", "finish"] {
            let mut extra = vec![];
            if t == T::Sa && phase == "finish" {
                extra.push("--force");
            }
            let out = ok(&rotate(&c, t, phase, &extra));
            let copies = out.lines().filter(|l| {
                l.trim_start()
                    .split_once(". ")
                    .is_some_and(|(_, r)| r.starts_with("copy "))
            });
            for line in copies {
                assert!(
                    line.contains("the machines of their users"),
                    "{t:?} {phase}: {line}"
                );
            }
            all.push_str(&out);
        }
        assert_mentions(&all, &["start --join FILE --certificate-key HEX"]);
        assert!(all.contains("before `finish` runs on any"), "{all}");
        assert!(all.contains("never copy a leaf"), "{all}");
        assert_mentions(&all, &["do not run `kubeadm upgrade` during a rotation"]);
        assert_mentions(&all, &["kubeadm init phase upload-certs --upload-certs"]);
        if t == T::Ca {
            assert!(all.contains("every pod using in-cluster config"), "{all}");
        }
    }
}

/// Three real etcd members (one per node, client and peer TLS from that node's files, as
/// kubeadm's manifest), restarted one at a time after each node's phase.
mod members {
    use crate::common::{free_port, terminate};
    use crate::etcd_support::spawn_etcd;
    use std::process::{Child, Command};
    use std::time::{Duration, Instant};

    pub(super) struct Member {
        pub(super) n: usize,
        pub(super) child: Option<Child>,
        pub(super) port: u16,
        pub(super) cluster: String,
        pub(super) pki: std::path::PathBuf,
        pub(super) data: std::path::PathBuf,
    }

    pub(super) fn ports() -> Vec<(u16, u16)> {
        (0..3).map(|_| (free_port(), free_port())).collect()
    }

    impl Member {
        pub(super) fn spawn(&mut self, peer_port: u16) {
            let ip = format!("127.0.1.{}", self.n);
            let client = format!("https://{ip}:{}", self.port);
            let peer = format!("https://{ip}:{peer_port}");
            self.child = Some(spawn_etcd(
                &format!("cp-{}", self.n),
                &self.data,
                &client,
                &peer,
                &[
                    "--initial-cluster",
                    &self.cluster,
                    "--initial-cluster-state",
                    "new",
                ],
                &self.pki,
                &self.data.with_extension("log"),
            ));
        }

        pub(super) fn stop(&mut self) {
            if let Some(c) = self.child.take() {
                terminate(c);
            }
        }

        /// etcdctl against this member with this node's own healthcheck client certificate.
        pub(super) fn ctl(&self, args: &[&str]) -> std::process::Output {
            let p = |f: &str| self.pki.join(f);
            Command::new("etcdctl")
                .env("ETCDCTL_API", "3")
                .arg(format!(
                    "--endpoints=https://127.0.1.{}:{}",
                    self.n, self.port
                ))
                .arg(format!("--cacert={}", p("etcd/ca.crt").display()))
                .arg(format!(
                    "--cert={}",
                    p("etcd/healthcheck-client.crt").display()
                ))
                .arg(format!(
                    "--key={}",
                    p("etcd/healthcheck-client.key").display()
                ))
                .args(["--command-timeout=3s", "--dial-timeout=3s"])
                .args(args)
                .output()
                .unwrap()
        }
    }

    impl Drop for Member {
        fn drop(&mut self) {
            self.stop();
        }
    }

    /// Waits until every member answers `endpoint health` (a write needs quorum).
    pub(super) fn all_healthy(members: &[Member], when: &str) {
        let deadline = Instant::now() + Duration::from_secs(40);
        for m in members {
            loop {
                let out = m.ctl(&["endpoint", "health"]);
                if out.status.success() {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "cp-{} unhealthy {when}: {}{}",
                    m.n,
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                );
                std::thread::sleep(Duration::from_millis(300));
            }
        }
    }
}

#[test]
fn three_etcd_members_keep_quorum_through_an_etcd_ca_rotation() {
    use members::*;
    let nodes = three_nodes();
    let ports = ports();
    let cluster = (0..3)
        .map(|i| format!("cp-{}=https://127.0.1.{}:{}", i + 1, i + 1, ports[i].1))
        .collect::<Vec<_>>()
        .join(",");
    let mut ms: Vec<Member> = nodes
        .iter()
        .enumerate()
        .map(|(i, c)| Member {
            n: i + 1,
            child: None,
            port: ports[i].0,
            cluster: cluster.clone(),
            pki: c.pki(),
            data: c.root().join("etcd-data"),
        })
        .collect();
    for (i, m) in ms.iter_mut().enumerate() {
        m.spawn(ports[i].1);
    }
    all_healthy(&ms, "at first");
    ok(&ms[0].ctl(&["put", "before", "rotation"]));

    let file = nodes[0].root().join("etcd-ca.rotation");
    let f = file.to_string_lossy().into_owned();
    let key = "5a".repeat(32);
    for phase in ["start", "switch", "finish"] {
        for (i, c) in nodes.iter().enumerate() {
            let mut extra: Vec<&str> = Vec::new();
            if phase == "start" {
                extra = if i == 0 {
                    vec!["--export", &f, "--certificate-key", &key]
                } else {
                    vec!["--join", &f, "--certificate-key", &key]
                };
            }
            ok(&rotate(c, T::Etcd, phase, &extra));
            ms[i].stop();
            ms[i].spawn(ports[i].1);
            all_healthy(&ms, &format!("after {phase} on cp-{}", i + 1));
            ok(&ms[(i + 1) % 3].ctl(&["put", &format!("{phase}-{i}"), "x"]));
        }
    }
    let got = ok(&ms[2].ctl(&["get", "before", "--print-value-only"]));
    assert_eq!(got.trim(), "rotation");
    let new_cn = cns(&nodes[0].path("etcd/ca.crt"));
    assert_eq!(new_cn.len(), 1);
    for (i, c) in nodes.iter().enumerate() {
        for leaf in ["etcd/server", "etcd/peer"] {
            assert_eq!(
                view_pem(&read(&c.path(&format!("{leaf}.crt")))).issuer_cn,
                new_cn[0]
            );
            assert_own_identity(c, i + 1, leaf);
        }
    }
}

/// The control-plane file expires (`--export-ttl`) and is exported afresh by rerunning `start
/// --export` while the rotation is in progress; the key may come from a file. A node whose
/// `start` belongs to a rotation the first node aborted and started again is told to abort
/// first, never told "already complete".
#[test]
fn an_expired_file_is_exported_again_and_a_stale_join_is_refused() {
    let nodes = three_nodes();
    let file = nodes[0].root().join("etcd.rotation");
    let f = file.to_string_lossy().into_owned();
    let key_file = nodes[0].root().join("certificate-key");
    std::fs::write(&key_file, format!("{}\n", "5a".repeat(32))).unwrap();
    let k = key_file.to_string_lossy().into_owned();
    let export = |ttl: &str| {
        rotate(
            &nodes[0],
            T::Etcd,
            "start",
            &[
                "--export",
                &f,
                "--certificate-key-file",
                &k,
                "--export-ttl",
                ttl,
            ],
        )
    };
    let join = |c: &Cluster| {
        rotate(
            c,
            T::Etcd,
            "start",
            &["--join", &f, "--certificate-key-file", &k],
        )
    };
    ok(&export("0s"));
    let err = fails(&join(&nodes[1]));
    assert_mentions(&err, &["expired at", "start --export FILE"]);
    let out = ok(&export("2h"));
    assert_mentions(&out, &["already complete", "accepted until"]);
    ok(&join(&nodes[1]));
    let id = |c: &Cluster| status(c, T::Etcd)["rotation"]["rotationId"].clone();
    assert_eq!(id(&nodes[1]), id(&nodes[0]));
    let out = ok(&join(&nodes[1]));
    assert_mentions(&out, &["is of this rotation: nothing to do"]);

    // cp-1 aborts and starts a new rotation; cp-2 still holds the first one's start.
    ok(&rotate(&nodes[0], T::Etcd, "abort", &[]));
    ok(&export("2h"));
    assert_ne!(id(&nodes[1]), id(&nodes[0]));
    let err = fails(&join(&nodes[1]));
    assert_mentions(
        &err,
        &[
            "already started another",
            "abort",
            "then `start --join` again",
        ],
    );
    ok(&rotate(&nodes[1], T::Etcd, "abort", &[]));
    ok(&join(&nodes[1]));
    assert_eq!(id(&nodes[1]), id(&nodes[0]));
}
