//! `pki rotate` through the binary: full rotations of every target with strict openssl checks
//! of every leaf at every phase boundary, signer files, manifest edits, status, and refusals.
#![allow(clippy::unwrap_used)]

use crate::common;
use crate::rotate_support;

use common::*;
use rotate_support::*;

/// Files of other targets, which a rotation of `ca` never touches.
const UNTOUCHED_BY_CA_ROTATION: &[&str] = &[
    "etcd/ca.crt",
    "front-proxy-ca.crt",
    "sa.pub",
    "etcd/server.crt",
];

#[test]
fn ca_rotation_keeps_every_leaf_verifiable_and_restores_the_manifest() {
    let c = Cluster::initialized();
    let manifests = write_manifests(&c);
    let m = manifests.to_string_lossy().into_owned();
    let kcm = manifests.join("kube-controller-manager.yaml");
    check_boundary(&c, T::Ca, 1);
    let before_api = view(&c.path("apiserver.crt"));
    let old = keep(&c, "old", &["apiserver", "apiserver-kubelet-client"]);
    let untouched = c.read_all(UNTOUCHED_BY_CA_ROTATION);

    // start: bundle old+new everywhere, old CA still signs, signer files hold the old CA.
    let out = ok(&rotate(&c, T::Ca, "start", &["--manifests-dir", &m]));
    for comp in [
        "kube-apiserver",
        "kube-controller-manager",
        "kube-scheduler",
        "kubelet",
    ] {
        assert!(out.contains(&format!("restart {comp}")), "{out}");
    }
    assert!(out.contains("Next: pki rotate ca switch"), "{out}");
    check_boundary(&c, T::Ca, 2);
    let names = cns(&c.path("ca.crt"));
    assert_eq!(names[0], "kubernetes");
    assert!(
        names[1].starts_with("kubernetes-") && names[1] != names[0],
        "{names:?}"
    );
    let (o, n) = {
        let v = bundle_views(&read(&c.path("ca.crt")));
        (v[0].clone(), v[1].clone())
    };
    assert_ne!(o.ski, n.ski, "new CA has its own subject key id");
    assert!(n.is_ca && n.ku_cert_sign && n.dns == ["kubernetes"]);
    assert_eq!(cns(&c.path("ca-signer.crt")), ["kubernetes"]);
    assert_eq!(
        read(&c.path("apiserver.crt")),
        read(&old.join("apiserver.crt"))
    );
    let edited = std::fs::read_to_string(&kcm).unwrap();
    assert_eq!(
        edited,
        KCM_MANIFEST
            .replace(
                "pki/ca.crt\n    - --cluster-signing-key",
                "pki/ca-signer.crt\n    - --cluster-signing-key"
            )
            .replace(
                "--cluster-signing-key-file=/etc/kubernetes/pki/ca.key",
                "--cluster-signing-key-file=/etc/kubernetes/pki/ca-signer.key"
            ),
        "only the two signing flag values change"
    );
    assert!(edited.contains("--root-ca-file=/etc/kubernetes/pki/ca.crt"));
    // The rest of the tool keeps working mid-rotation.
    ok(&c.init(&[]));
    ok(&c.cmd(&["check-expiration"]));

    // switch: every leaf and kubeconfig from the new CA, new CA signs, both still trusted.
    let out = ok(&rotate(&c, T::Ca, "switch", &[]));
    assert!(out.contains("admin.conf"), "{out}");
    check_boundary(&c, T::Ca, 2);
    assert_eq!(cns(&c.path("ca.crt")), [names[1].clone(), names[0].clone()]);
    assert_eq!(cns(&c.path("ca-signer.crt")), [names[1].clone()]);
    let api = view(&c.path("apiserver.crt"));
    assert_eq!(api.issuer_cn, names[1]);
    assert_eq!(
        (
            &api.cn,
            &api.dns,
            &api.ips,
            api.server_auth,
            api.client_auth
        ),
        (
            &before_api.cn,
            &before_api.dns,
            &before_api.ips,
            before_api.server_auth,
            before_api.client_auth
        ),
        "subject, SANs and usages kept"
    );
    assert_ne!(api.spki, before_api.spki, "fresh key");
    for name in KUBECONFIGS {
        let (crt, _) = kubeconfig_files(&c, name);
        assert_eq!(view(&crt).issuer_cn, names[1], "{name}");
    }
    // Old leaves still verify while both CAs are trusted.
    openssl_verify(
        &c.path("ca.crt"),
        &old.join("apiserver.crt"),
        Some("sslserver"),
    );
    openssl_verify(
        &c.path("ca.crt"),
        &old.join("apiserver-kubelet-client.crt"),
        Some("sslclient"),
    );
    ok(&c.init(&[]));

    // finish: new CA only, signer files gone, manifest back byte for byte.
    let out = ok(&rotate(&c, T::Ca, "finish", &[]));
    assert!(out.contains("restart kube-controller-manager"), "{out}");
    check_boundary(&c, T::Ca, 1);
    assert_eq!(cns(&c.path("ca.crt")), [names[1].clone()]);
    assert!(!c.path("ca-signer.crt").exists() && !c.path("ca-signer.key").exists());
    assert_eq!(std::fs::read_to_string(&kcm).unwrap(), KCM_MANIFEST);
    openssl_verify_fails(&c.path("ca.crt"), &old.join("apiserver.crt"), "sslserver");
    openssl_verify_fails(
        &c.path("ca.crt"),
        &old.join("apiserver-kubelet-client.crt"),
        "sslclient",
    );
    ok(&c.init(&[]));
    let after = c.read_all(UNTOUCHED_BY_CA_ROTATION);
    assert_eq!(untouched, after, "other targets untouched");
    // Backups: one per phase, mode 0700, holding the files.
    let backups = c.path(".rotation/backups");
    assert_eq!(mode(&c.path(".rotation")), 0o700);
    let dirs: Vec<_> = std::fs::read_dir(&backups)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(dirs.len(), 3, "{dirs:?}");
    for d in &dirs {
        assert_eq!(mode(d), 0o700);
        assert!(d.join("index.json").exists());
        assert!(d.join("pki/ca.key").exists());
    }
    // finish again is a no-op; a new rotation may start.
    let out = ok(&rotate(&c, T::Ca, "finish", &[]));
    assert!(out.contains("already complete"), "{out}");
}

#[test]
fn front_proxy_and_etcd_rotations() {
    let c = Cluster::initialized();
    for t in [T::FrontProxy, T::Etcd] {
        let ca_before = read(&c.path("ca.crt"));
        let bases: Vec<&str> = t.leaves().iter().map(|(b, _)| *b).collect();
        let old = keep(&c, t.name(), &bases);
        check_boundary(&c, t, 1);
        ok(&rotate(&c, t, "start", &[]));
        check_boundary(&c, t, 2);
        for b in &bases {
            assert_eq!(
                read(&c.path(&format!("{b}.crt"))),
                read(&old.join(format!("{b}.crt")))
            );
        }
        ok(&rotate(&c, t, "switch", &[]));
        check_boundary(&c, t, 2);
        let new_cn = cns(&c.path(t.anchor()))[0].clone();
        for (b, purposes) in t.leaves() {
            assert_eq!(view(&c.path(&format!("{b}.crt"))).issuer_cn, new_cn);
            for p in *purposes {
                openssl_verify(&c.path(t.anchor()), &old.join(format!("{b}.crt")), Some(p));
            }
        }
        assert!(
            !c.path("ca-signer.crt").exists(),
            "only the cluster CA has signer files"
        );
        let out = ok(&rotate(&c, t, "finish", &[]));
        if t == T::Etcd {
            let etcd = out.find("restart etcd").unwrap();
            let api = out.find("restart kube-apiserver").unwrap();
            assert!(etcd < api, "etcd members before kube-apiserver: {out}");
        }
        check_boundary(&c, t, 1);
        assert_eq!(cns(&c.path(t.anchor())), [new_cn]);
        for (b, purposes) in t.leaves() {
            openssl_verify_fails(
                &c.path(t.anchor()),
                &old.join(format!("{b}.crt")),
                purposes[0],
            );
        }
        assert_eq!(read(&c.path("ca.crt")), ca_before, "cluster CA untouched");
    }
    ok(&c.init(&[]));
}

fn kid(spki: &[u8]) -> String {
    use base64::Engine;
    use sha2::Digest;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(spki))
}

#[test]
fn sa_rotation_publishes_switches_and_waits_for_tokens() {
    let c = Cluster::initialized();
    let old_key = read(&c.path("sa.key"));
    let old_pub = public_keys(&read(&c.path("sa.pub")));
    ok(&rotate(&c, T::Sa, "start", &[]));
    check_boundary(&c, T::Sa, 2);
    let keys = public_keys(&read(&c.path("sa.pub")));
    assert_eq!(keys[0], old_pub[0], "old key first, still signing");
    assert_eq!(
        read(&c.path("sa.key")),
        old_key,
        "sa.key unchanged at start"
    );
    let new_pub = keys[1].clone();

    let out = ok(&rotate(&c, T::Sa, "switch", &[]));
    assert!(out.contains("restart kube-controller-manager"), "{out}");
    check_boundary(&c, T::Sa, 2);
    assert_ne!(read(&c.path("sa.key")), old_key);
    assert_eq!(
        public_keys(&read(&c.path("sa.pub"))),
        [new_pub.clone(), old_pub[0].clone()]
    );
    assert_eq!(mode(&c.path("sa.key")), 0o600);

    // Status names both key ids and which one signs.
    let status = status(&c, T::Sa);
    let sa = file_status(&status, "pki/sa.pub");
    assert_eq!(sa["count"], 2);
    assert_eq!(
        sa["entries"][0]["subject"],
        format!("kid {}", kid(&new_pub))
    );
    assert_eq!(sa["entries"][0]["signer"], true);
    assert_eq!(sa["entries"][0]["role"], "new");
    assert_eq!(sa["entries"][1]["role"], "old");
    assert!(status["rotation"]["finishNotBefore"].is_string());

    // finish is refused before the (default 24h) token lifetime has passed.
    let err = fails(&rotate(&c, T::Sa, "finish", &[]));
    assert_mentions(&err, &["refusing", "--force"]);
    check_boundary(&c, T::Sa, 2);
    ok(&rotate(&c, T::Sa, "finish", &["--force"]));
    check_boundary(&c, T::Sa, 1);
    assert_eq!(public_keys(&read(&c.path("sa.pub"))), [new_pub]);

    // A second rotation with a short recorded lifetime finishes once it has passed.
    ok(&rotate(&c, T::Sa, "start", &["--max-token-lifetime", "2s"]));
    ok(&rotate(&c, T::Sa, "switch", &[]));
    let err = fails(&rotate(&c, T::Sa, "finish", &[]));
    assert!(err.contains("refusing"), "{err}");
    // When the state file cannot tell when the tokens expire, finish fails closed.
    let state_file = c.path(".rotation/state.json");
    let recorded = read(&state_file);
    let mut state: serde_json::Value = serde_json::from_slice(&recorded).unwrap();
    state["switchedAt"] = "not a time".into();
    std::fs::write(&state_file, state.to_string()).unwrap();
    let err = fails(&rotate(&c, T::Sa, "finish", &[]));
    assert!(err.contains("cannot parse"), "{err}");
    state["switchedAt"] = serde_json::Value::Null;
    std::fs::write(&state_file, state.to_string()).unwrap();
    let err = fails(&rotate(&c, T::Sa, "finish", &[]));
    assert_mentions(&err, &["no switch time", "--force"]);
    check_boundary(&c, T::Sa, 2);
    std::fs::write(&state_file, &recorded).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(2100));
    ok(&rotate(&c, T::Sa, "finish", &[]));
    check_boundary(&c, T::Sa, 1);
    ok(&c.init(&[]));
}

/// A node cannot see its peers: `switch` (the others have all started?) and `abort` (none has
/// switched?) are refused, changing nothing, until the operator confirms with --confirm-nodes.
#[test]
fn switch_and_abort_need_the_operator_to_confirm_the_other_nodes() {
    let c = Cluster::initialized();
    ok(&rotate(&c, T::Etcd, "start", &[]));
    let out = ok(&rotate(&c, T::Etcd, "status", &[]));
    assert!(
        out.contains("pki rotate etcd-ca switch --confirm-nodes"),
        "{out}"
    );
    let before = snapshot(&c);
    for (phase, why) in [
        ("switch", "every worker has run `start`"),
        ("abort", "if any other node has run `switch`"),
    ] {
        let err = fails(&c.cmd(&["rotate", "etcd-ca", phase]));
        assert_mentions(
            &err,
            &[
                why,
                "cannot see",
                &format!("pki rotate etcd-ca {phase} --confirm-nodes"),
            ],
        );
        assert!(snapshot(&c) == before, "a refused {phase} changed files");
    }
    ok(&c.cmd(&["rotate", "etcd-ca", "switch", "--confirm-nodes"]));
    ok(&c.cmd(&["rotate", "etcd-ca", "finish"]));
}

#[test]
fn phases_out_of_order_and_concurrent_rotations_are_refused() {
    let c = Cluster::initialized();
    let err = fails(&rotate(&c, T::Ca, "switch", &[]));
    assert!(err.contains("run `pki rotate ca start` first"), "{err}");
    let err = fails(&rotate(&c, T::Etcd, "finish", &[]));
    assert_mentions(&err, &["run `pki rotate etcd-ca start` first"]);
    let err = fails(&rotate(&c, T::Ca, "abort", &[]));
    assert!(err.contains("nothing to abort"), "{err}");
    let out = ok(&rotate(&c, T::Ca, "status", &[]));
    assert!(out.contains("No rotation has been started"), "{out}");

    ok(&rotate(&c, T::Etcd, "start", &[]));
    let out = ok(&rotate(&c, T::Etcd, "start", &[]));
    assert!(out.contains("already complete"), "{out}");
    let err = fails(&rotate(&c, T::Ca, "start", &[]));
    assert_mentions(
        &err,
        &["rotation of etcd-ca already in progress at phase start"],
    );
    let err = fails(&rotate(&c, T::Sa, "switch", &[]));
    assert_mentions(&err, &["rotation of etcd-ca already in progress"]);
    let err = fails(&rotate(&c, T::Etcd, "finish", &[]));
    assert_mentions(&err, &["run `pki rotate etcd-ca switch` first"]);
    ok(&rotate(&c, T::Etcd, "switch", &[]));
    let err = fails(&rotate(&c, T::Etcd, "start", &[]));
    assert_mentions(
        &err,
        &[
            "rotation of etcd-ca already in progress at phase switch",
            "pki rotate etcd-ca finish",
        ],
    );
    let err = fails(&rotate(&c, T::FrontProxy, "start", &[]));
    assert_mentions(
        &err,
        &["rotation of etcd-ca already in progress at phase switch"],
    );

    // status: what every file holds and what must restart before finish.
    let out = ok(&rotate(&c, T::Etcd, "status", &[]));
    assert!(out.contains("Rotation of etcd-ca: in-progress"), "{out}");
    assert_mentions(&out, &["pki/etcd/ca.crt (trust-bundle, 2 entries)"]);
    assert_mentions(&out, &["[new] [signer]", "[old]"]);
    assert!(out.contains("pki/ca.crt (trust-bundle, 1 entry)"), "{out}");
    assert!(out.contains("restart etcd"), "{out}");
    assert!(out.contains("Next: pki rotate etcd-ca finish"), "{out}");
    let json = status(&c, T::Etcd);
    assert_eq!(json["rotation"]["target"], "etcd-ca");
    assert_eq!(
        json["rotation"]["completed"],
        serde_json::json!(["start", "switch"])
    );
    assert_eq!(json["restartBeforeNext"][1]["component"], "etcd");

    ok(&rotate(&c, T::Etcd, "finish", &[]));
    let err = fails(&rotate(&c, T::Etcd, "abort", &[]));
    assert!(err.contains("nothing to abort"), "{err}");
    // After finish another target may rotate; -o json gives the restart sequence.
    let json: serde_json::Value =
        serde_json::from_str(&ok(&rotate(&c, T::FrontProxy, "start", &["-o", "json"]))).unwrap();
    assert_eq!(json["phase"], "start");
    assert_eq!(json["restart"][1]["component"], "kube-apiserver");
    assert_eq!(
        json["next"],
        "pki rotate front-proxy-ca switch --confirm-nodes"
    );
    ok(&rotate(&c, T::FrontProxy, "abort", &[]));
    check_boundary(&c, T::FrontProxy, 1);
    // A CA file that already holds a bundle cannot start a rotation.
    let mut two = read(&c.path("front-proxy-ca.crt"));
    two.extend(read(&c.path("etcd/ca.crt")));
    std::fs::write(c.path("front-proxy-ca.crt"), two).unwrap();
    let err = fails(&rotate(&c, T::FrontProxy, "start", &[]));
    assert_mentions(&err, &["front-proxy-ca.crt: holds 2 certificates"]);
}

#[test]
fn other_subcommands_keep_the_bundle_mid_rotation() {
    let c = Cluster::initialized();
    ok(&rotate(&c, T::Ca, "start", &[]));
    // renew re-embeds the whole ca.crt (old+new), not just the signing CA.
    ok(&c.cmd(&["renew", "admin.conf", "apiserver"]));
    let (crt, ca) = kubeconfig_files(&c, "admin.conf");
    assert_eq!(cert_count(&ca), 2);
    assert_eq!(
        view(&crt).issuer_cn,
        "kubernetes",
        "old CA still signs after start"
    );
    // A kubelet.conf that references the kubelet's own rotating client certificate.
    let kubelet_dir = c.root().join("kubelet-pki");
    let kubelet = || {
        let dir = kubelet_dir.to_str().unwrap();
        ok(&c.cmd(&[
            "kubelet",
            "--node-name",
            "cp1",
            "--out-dir",
            dir,
            "--kubelet-dir",
            dir,
            "--server",
            "https://192.168.10.5:6443",
        ]))
    };
    kubelet();
    let conf = std::fs::read_to_string(c.conf("kubelet.conf")).unwrap();
    assert!(conf.contains("client-certificate: "), "{conf}");
    let out = ok(&rotate(&c, T::Ca, "switch", &[]));
    assert_mentions(
        &out,
        &["kubelet.conf: client certificate is a file reference"],
    );
    let after = std::fs::read_to_string(c.conf("kubelet.conf")).unwrap();
    assert!(
        after.contains("client-certificate: "),
        "reference kept: {after}"
    );
    let status = status(&c, T::Ca);
    let kc = file_status(&status, "kubeconfig/kubelet.conf");
    assert_eq!(kc["count"], 2);
    assert_eq!(kc["entries"][0]["role"], "new");
    // finish refuses while this node's kubelet still holds an old-CA client certificate.
    let err = fails(&rotate(&c, T::Ca, "finish", &[]));
    assert_mentions(&err, &["kubelet.conf", "pki kubelet"]);
    // sign-csr and kubelet now sign with the new CA (the first entry of ca.crt).
    kubelet();
    let new_cn = cns(&c.path("ca.crt"))[0].clone();
    let kubelet_crt = kubelet_dir.join("kubelet.crt");
    assert_eq!(view(&kubelet_crt).issuer_cn, new_cn);
    openssl_verify(&c.path("ca.crt"), &kubelet_crt, Some("sslserver"));
    ok(&rotate(&c, T::Ca, "finish", &[]));
    openssl_verify(&c.path("ca.crt"), &kubelet_crt, Some("sslserver"));
}
