//! `pki autopilot` without a running component: what one pass renews (and leaves alone), the
//! second pass, a CA expiring within a year, the lock, the refusal during a rotation,
//! `--dry-run` and the metrics textfile. The restarts under a real etcd are in `autopilot_etcd`.
#![allow(clippy::unwrap_used)]

use std::process::Output;
use std::time::Instant;

use crate::common::*;
use crate::rotate_support::snapshot;

const LEAVES: &[(&str, &str)] = &[
    ("apiserver", "apiserver.crt"),
    ("apiserver-kubelet-client", "apiserver-kubelet-client.crt"),
    ("apiserver-etcd-client", "apiserver-etcd-client.crt"),
    ("front-proxy-client", "front-proxy-client.crt"),
    ("etcd-server", "etcd/server.crt"),
    ("etcd-peer", "etcd/peer.crt"),
    ("etcd-healthcheck-client", "etcd/healthcheck-client.crt"),
];
const CONFS: &[&str] = &[
    "admin.conf",
    "super-admin.conf",
    "controller-manager.conf",
    "scheduler.conf",
];

fn autopilot(c: &Cluster, extra: &[&str]) -> Output {
    let manifests = c.root().join("manifests");
    std::fs::create_dir_all(&manifests).unwrap();
    c.cmd_with(
        &["autopilot", "--manifests-dir", manifests.to_str().unwrap()],
        extra,
    )
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A cluster whose leaves and kubeconfig client certificates live two hours (all due).
fn short_lived() -> Cluster {
    Cluster::initialized_with(&["--certificate-validity-period", "2h"])
}

#[test]
fn one_pass_renews_every_due_leaf_and_kubeconfig_and_nothing_else() {
    let c = short_lived();
    let before = snapshot(&c);
    let metrics = c.root().join("pki.prom");
    let out = ok(&autopilot(
        &c,
        &["--metrics-file", metrics.to_str().unwrap()],
    ));
    let after = snapshot(&c);
    for (name, rel) in LEAVES {
        assert!(out.contains(&format!("renewed {name} (")), "{name}:\n{out}");
        let new = view(&c.path(rel));
        let old_v = view_pem(&before[&format!("pki/{rel}")].0);
        assert_eq!(
            (old_v.cn, old_v.orgs, old_v.dns, old_v.ips),
            (
                new.cn.clone(),
                new.orgs.clone(),
                new.dns.clone(),
                new.ips.clone()
            ),
            "{name}"
        );
        assert!(
            new.not_after - now() > 360 * 86400,
            "{name} renewed for a year"
        );
        assert_ne!(old_v.spki, new.spki, "{name}: fresh key");
        openssl_verify(
            &c.path(if rel.starts_with("etcd/") {
                "etcd/ca.crt"
            } else if rel.starts_with("front") {
                "front-proxy-ca.crt"
            } else if *name == "apiserver-etcd-client" {
                "etcd/ca.crt"
            } else {
                "ca.crt"
            }),
            &c.path(rel),
            None,
        );
    }
    for conf in CONFS {
        assert!(out.contains(&format!("renewed {conf} (")), "{conf}:\n{out}");
        let kc = kubeconfig(&c.conf(conf));
        assert!(view_pem(kc.cert_pem.as_bytes()).not_after - now() > 360 * 86400);
    }
    // CAs, the SA key pair and kubelet.conf are never touched.
    for rel in [
        "pki/ca.crt",
        "pki/ca.key",
        "pki/etcd/ca.crt",
        "pki/front-proxy-ca.crt",
        "pki/sa.key",
        "pki/sa.pub",
        "kubelet.conf",
    ] {
        assert_eq!(before[rel], after[rel], "{rel} changed");
    }
    assert!(!out.contains("renewed kubelet.conf"), "{out}");
    assert_mentions(
        &out,
        &[
            "WARNING: the kubelet client certificate of",
            "past its renewal point",
        ],
    );
    // No manifests: renewed but not restarted, and said so.
    for comp in [
        "etcd",
        "kube-apiserver",
        "kube-controller-manager",
        "kube-scheduler",
    ] {
        assert!(
            out.contains(&format!("not restarting {comp}: no manifest")),
            "{comp}:\n{out}"
        );
    }
    let prom = std::fs::read_to_string(&metrics).unwrap();
    assert_mentions(
        &prom,
        &[
            "pki_certificate_expiry_timestamp_seconds{name=\"etcd-server\"",
            "pki_autopilot_last_run_timestamp_seconds ",
            "pki_autopilot_last_success_timestamp_seconds ",
            "pki_autopilot_renewed_total{certificate=\"etcd-server\"} 1",
            "pki_autopilot_renewed_total{certificate=\"admin.conf\"} 1",
        ],
    );
    assert!(!prom.contains("pki_autopilot_failure{"), "{prom}");
    assert_eq!(mode(&metrics), 0o644);

    // Second pass: nothing due, nothing changed but the metrics; counters carried.
    let snap = snapshot(&c);
    let out2 = ok(&autopilot(
        &c,
        &["--metrics-file", metrics.to_str().unwrap()],
    ));
    assert!(out2.contains("nothing is due for renewal"), "{out2}");
    assert!(!out2.contains("renewed "), "{out2}");
    let mut snap2 = snapshot(&c);
    snap2.remove("pki.prom");
    let mut snap = snap;
    snap.remove("pki.prom");
    assert_eq!(snap, snap2);
    let prom2 = std::fs::read_to_string(&metrics).unwrap();
    assert_mentions(
        &prom2,
        &["pki_autopilot_renewed_total{certificate=\"etcd-server\"} 1"],
    );
}

#[test]
fn a_certificate_with_most_of_its_life_left_is_not_renewed_and_the_threshold_is_configurable() {
    let c = Cluster::initialized();
    let out = ok(&autopilot(&c, &[]));
    assert!(out.contains("nothing is due for renewal"), "{out}");
    // 1y certificates: with less than 400 days asked for, everything is due.
    let out = ok(&autopilot(&c, &["--renew-before", "400d", "--dry-run"]));
    assert!(out.contains("[dry-run] would renew apiserver ("), "{out}");
    let out = ok(&autopilot(&c, &["--renew-at-fraction", "0.9", "--dry-run"]));
    assert!(out.contains("nothing is due"), "{out}");
    let err = fails(&autopilot(&c, &["--renew-at-fraction", "1.5"]));
    assert!(err.contains("--renew-at-fraction"), "{err}");
}

#[test]
fn a_ca_expiring_within_a_year_is_reported_loudly_and_never_renewed() {
    let c = Cluster::initialized_with(&["--ca-certificate-validity-period", "8000h"]);
    let before = std::fs::read(c.path("ca.crt")).unwrap();
    let metrics = c.root().join("pki.prom");
    let out = autopilot(&c, &["--metrics-file", metrics.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", stdout(&out));
    let text = stdout(&out);
    assert_mentions(&text, &["WARNING: CA ca expires", "never renews CAs"]);
    assert_eq!(std::fs::read(c.path("ca.crt")).unwrap(), before);
    let prom = std::fs::read_to_string(&metrics).unwrap();
    assert_mentions(
        &prom,
        &["pki_autopilot_ca_expiring_within_year{name=\"ca\"} 1"],
    );
    assert_mentions(&prom, &["pki_autopilot_last_success_timestamp_seconds "]);
}

/// Leaves whose expiry the CA caps (issued against a CA with 20 days left) are due by the policy,
/// but a renewal cannot extend them: autopilot leaves them, says why, and a second pass does the
/// same instead of renewing (and restarting) everything every hour.
#[test]
fn leaves_capped_by_their_expiring_ca_are_not_renewed_again_and_again() {
    let c = Cluster::initialized_with(&["--ca-certificate-validity-period", "480h"]);
    let before = snapshot(&c);
    let metrics = c.root().join("pki.prom");
    for pass in 0..2 {
        let out = autopilot(&c, &["--metrics-file", metrics.to_str().unwrap()]);
        let text = stdout(&out);
        assert_eq!(out.status.code(), Some(2), "pass {pass}: {text}");
        assert!(!text.contains("renewed "), "pass {pass}: {text}");
        assert_mentions(
            &text,
            &[
                "apiserver is due: its CA ca expires",
                "etcd-server is due: its CA etcd-ca expires",
                "a renewal cannot outlive it",
                "pki rotate ca",
            ],
        );
        let after = snapshot(&c);
        let changed: Vec<&String> = after
            .keys()
            .chain(before.keys())
            .filter(|k| !k.contains(".autopilot/") && k.as_str() != "pki.prom")
            .filter(|k| after.get(*k) != before.get(*k))
            .collect();
        assert!(changed.is_empty(), "pass {pass} changed {changed:?}");
    }
    let prom = std::fs::read_to_string(&metrics).unwrap();
    assert!(!prom.contains("pki_autopilot_renewed_total{"), "{prom}");
}

#[test]
fn dry_run_prints_what_it_would_do_and_writes_nothing() {
    let c = short_lived();
    let manifests = c.root().join("manifests");
    std::fs::create_dir_all(&manifests).unwrap();
    std::fs::write(
        manifests.join("kube-scheduler.yaml"),
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: kube-scheduler\nspec: {}\n",
    )
    .unwrap();
    let before = snapshot(&c);
    let metrics = c.root().join("pki.prom");
    let out = ok(&autopilot(
        &c,
        &["--dry-run", "--metrics-file", metrics.to_str().unwrap()],
    ));
    assert!(out.contains("[dry-run] would renew etcd-server ("), "{out}");
    assert_mentions(&out, &["[dry-run] would renew scheduler.conf ("]);
    assert_mentions(&out, &["[dry-run] would restart kube-scheduler"]);
    assert_mentions(&out, &["[dry-run] not restarting etcd: no manifest"]);
    assert_eq!(before, snapshot(&c), "dry run changed files");
    assert!(!c.pki().join(".autopilot").exists());
    assert!(!metrics.exists());
}

#[test]
fn a_second_pass_exits_at_once_while_the_first_holds_the_lock() {
    let c = short_lived();
    let work = c.pki().join(".autopilot");
    std::fs::create_dir_all(&work).unwrap();
    let held = durable::lock_dir(&work, durable::LockWait::Block).unwrap();
    let before = snapshot(&c);
    let start = Instant::now();
    let out = autopilot(
        &c,
        &[
            "--metrics-file",
            c.root().join("pki.prom").to_str().unwrap(),
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(start.elapsed().as_secs() < 5);
    assert!(
        stdout(&out).contains("FAILED (locked): another autopilot pass holds the lock"),
        "{}",
        stdout(&out)
    );
    assert_eq!(before, snapshot(&c), "a locked-out pass changed files");
    drop(held);
    ok(&autopilot(&c, &[]));
}

#[test]
fn autopilot_refuses_during_a_rotation() {
    let c = short_lived();
    ok(&c.cmd(&["rotate", "etcd-ca", "start"]));
    let before = snapshot(&c);
    let metrics = c.root().join("pki.prom");
    let out = autopilot(&c, &["--metrics-file", metrics.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    assert_mentions(
        &text,
        &["FAILED (rotation-in-progress): a rotation of etcd-ca is in progress"],
    );
    let mut after = snapshot(&c);
    after.remove("pki.prom");
    assert_eq!(before, after, "files changed during a rotation");
    let prom = std::fs::read_to_string(&metrics).unwrap();
    assert_mentions(
        &prom,
        &["pki_autopilot_failure{reason=\"rotation-in-progress\"} 1"],
    );
    assert!(
        !prom
            .lines()
            .any(|l| l.starts_with("pki_autopilot_last_success_timestamp_seconds ")),
        "{prom}"
    );
    ok(&c.cmd(&["rotate", "etcd-ca", "abort", "--confirm-nodes"]));
    let out = ok(&autopilot(
        &c,
        &["--metrics-file", metrics.to_str().unwrap()],
    ));
    assert!(out.contains("renewed etcd-server"), "{out}");
}

#[test]
fn components_without_a_tls_health_check_are_restarted_through_their_manifest_in_order() {
    let c = short_lived();
    let manifests = c.root().join("manifests");
    std::fs::create_dir_all(&manifests).unwrap();
    let pod = |name: &str| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  labels:\n    component: {name}\n  name: {name}\n  namespace: kube-system\nspec:\n  containers:\n  - command:\n    - {name}\n"
        )
    };
    for name in ["kube-controller-manager", "kube-scheduler"] {
        std::fs::write(manifests.join(format!("{name}.yaml")), pod(name)).unwrap();
    }
    let out = ok(&autopilot(&c, &[]));
    let kcm = out.find("restarted kube-controller-manager").expect(&out);
    let sched = out.find("restarted kube-scheduler").expect(&out);
    assert!(kcm < sched, "order:\n{out}");
    assert!(out.contains("no TLS health check"), "{out}");
    for name in ["kube-controller-manager", "kube-scheduler"] {
        let text = std::fs::read_to_string(manifests.join(format!("{name}.yaml"))).unwrap();
        let expected = pod(name).replace(
            "metadata:\n",
            "metadata:\n  annotations:\n    pki.k8s.io/autopilot-renewed-at: \"",
        );
        assert!(
            text.starts_with(&expected[..expected.find("renewed-at: \"").unwrap() + 13]),
            "{text}"
        );
    }
    // Backups hold the previous files (0600) and at most five are kept.
    let backups = c.pki().join(".autopilot/backups");
    let first = std::fs::read_dir(&backups)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    assert!(
        std::fs::read_dir(&first)
            .unwrap()
            .all(|e| mode(&e.unwrap().path()) == 0o600)
    );
    assert_eq!(mode(&c.pki().join(".autopilot")), 0o700);
    // The pending restarts were all done: a pass with nothing due restarts nothing.
    let out = ok(&autopilot(&c, &[]));
    assert!(!out.contains("restarted"), "{out}");
}
