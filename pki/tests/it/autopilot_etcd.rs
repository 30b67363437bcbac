//! `pki autopilot` against a real etcd member (3.4, from .ci/provision-etcd.sh) run from a
//! kubeadm-shaped static pod manifest by [`crate::static_pod::Supervisor`], which restarts it
//! when the manifest changes, as the kubelet does. Certificates are issued for two hours, so
//! every leaf is due. The manifest's image tag decides what autopilot expects: etcd 3.4 to 3.7
//! read a renewed pair again at every handshake and are left running; a version it has not
//! checked (tagged `3.3.27-0` here) is restarted.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use crate::common::*;
use crate::etcd_support::{self, ClientTls};
use crate::rotate_support::snapshot;
use crate::static_pod::Supervisor;

/// An etcd image autopilot has not checked: it restarts such a member.
const UNCHECKED: &str = "3.3.27-0";

/// etcd's static pod manifest as kubeadm writes it, with this test's paths, ports and image tag.
fn etcd_manifest(pki: &Path, data: &Path, client: u16, peer: u16, tag: &str) -> String {
    let p = |f: &str| pki.join(f).display().to_string();
    format!(
        "apiVersion: v1
kind: Pod
metadata:
  annotations:
    kubeadm.kubernetes.io/etcd.advertise-client-urls: https://127.0.0.1:{client}
  labels:
    component: etcd
    tier: control-plane
  name: etcd
  namespace: kube-system
spec:
  containers:
  - command:
    - etcd
    - --advertise-client-urls=https://127.0.0.1:{client}
    - --cert-file={}
    - --client-cert-auth=true
    - --data-dir={}
    - --initial-advertise-peer-urls=https://127.0.0.1:{peer}
    - --initial-cluster=cp1=https://127.0.0.1:{peer}
    - --key-file={}
    - --listen-client-urls=https://127.0.0.1:{client}
    - --listen-peer-urls=https://127.0.0.1:{peer}
    - --name=cp1
    - --peer-cert-file={}
    - --peer-client-cert-auth=true
    - --peer-key-file={}
    - --peer-trusted-ca-file={}
    - --trusted-ca-file={}
    image: registry.k8s.io/etcd:{tag}
    name: etcd
  hostNetwork: true
",
        p("etcd/server.crt"),
        data.display(),
        p("etcd/server.key"),
        p("etcd/peer.crt"),
        p("etcd/peer.key"),
        p("etcd/ca.crt"),
        p("etcd/ca.crt"),
    )
}

struct Member {
    c: Cluster,
    client: u16,
    supervisor: Supervisor,
}

impl Member {
    /// A short-lived PKI, the etcd manifest (image tag `tag`), the member running with key
    /// `foo` = `bar`.
    fn start(tag: &str) -> Member {
        let c = Cluster::initialized_with(&["--certificate-validity-period", "2h"]);
        let manifests = c.root().join("manifests");
        std::fs::create_dir_all(&manifests).unwrap();
        let (client, peer) = (free_port(), free_port());
        let manifest = manifests.join("etcd.yaml");
        std::fs::write(
            &manifest,
            etcd_manifest(&c.pki(), &c.root().join("etcd-data"), client, peer, tag),
        )
        .unwrap();
        let supervisor = Supervisor::start(&manifest, &c.root().join("etcd.log"));
        let m = Member {
            c,
            client,
            supervisor,
        };
        m.wait_ready();
        m.post("/v3/kv/put", r#"{"key":"Zm9v","value":"YmFy"}"#)
            .unwrap();
        m
    }

    /// POST to etcd's gateway with the current healthcheck client certificate.
    fn post(&self, path: &str, body: &str) -> Result<String, String> {
        let tls = ClientTls {
            ca: &self.c.path("etcd/ca.crt"),
            crt: &self.c.path("etcd/healthcheck-client.crt"),
            key: &self.c.path("etcd/healthcheck-client.key"),
        };
        let url = format!("https://127.0.0.1:{}{path}", self.client);
        etcd_support::post(&tls, &url, body)
    }

    fn wait_ready(&self) {
        etcd_support::wait_ready(
            Duration::from_secs(30),
            &self.c.root().join("etcd.log"),
            || self.post("/v3/kv/range", r#"{"key":"Zm9v"}"#),
        );
    }

    /// The value of `foo` (base64 `YmFy` = `bar`) must still be there.
    fn assert_data_readable(&self) {
        let got = self.post("/v3/kv/range", r#"{"key":"Zm9v"}"#).unwrap();
        assert!(got.contains("YmFy"), "{got}");
    }

    fn autopilot(&self, env: &[(&str, &str)]) -> Output {
        let mut cmd = Command::new(BIN);
        cmd.arg("autopilot")
            .args(self.c.dirs())
            .arg("--manifests-dir")
            .arg(self.c.root().join("manifests"))
            .args(["--health-timeout", "20s", "--metrics-file"])
            .arg(self.c.root().join("pki.prom"));
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.output().unwrap()
    }
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn one_pass_renews_and_restarts_etcd_through_its_manifest_and_a_second_pass_does_nothing() {
    let m = Member::start(UNCHECKED);
    let before = snapshot(&m.c);
    let out = m.autopilot(&[]);
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    for name in ["etcd-server", "etcd-peer", "etcd-healthcheck-client"] {
        assert!(t.contains(&format!("renewed {name} (")), "{name}:\n{t}");
    }
    assert!(t.contains("restarted etcd"), "{t}");
    assert_mentions(&t, &["not restarting kube-apiserver: no manifest"]);
    assert_eq!(m.supervisor.starts(), 2, "one restart through the manifest");
    let manifest = std::fs::read_to_string(m.c.root().join("manifests/etcd.yaml")).unwrap();
    assert_mentions(&manifest, &["    pki.k8s.io/autopilot-renewed-at: \""]);
    let old_manifest = String::from_utf8(before["manifests/etcd.yaml"].0.clone()).unwrap();
    assert_eq!(
        manifest
            .lines()
            .filter(|l| !l.contains("autopilot-renewed-at"))
            .collect::<Vec<_>>(),
        old_manifest.lines().collect::<Vec<_>>(),
        "only the annotation changes"
    );
    for rel in [
        "etcd/server.crt",
        "etcd/peer.crt",
        "etcd/healthcheck-client.crt",
    ] {
        assert!(
            view(&m.c.path(rel)).not_after - now() > 360 * 86400,
            "{rel}"
        );
    }
    // Healthy over TLS with the renewed client certificate, data intact.
    m.assert_data_readable();
    let prom = std::fs::read_to_string(m.c.root().join("pki.prom")).unwrap();
    assert_mentions(
        &prom,
        &["pki_autopilot_renewed_total{certificate=\"etcd-server\"} 1"],
    );

    let out2 = m.autopilot(&[]);
    let t2 = text(&out2);
    assert!(out2.status.success(), "{t2}");
    assert!(t2.contains("nothing is due for renewal"), "{t2}");
    assert!(!t2.contains("restarted"), "{t2}");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(m.supervisor.starts(), 2, "no restart on the second pass");
}

#[test]
fn a_renewed_certificate_etcd_cannot_load_is_rolled_back_and_etcd_is_healthy_again() {
    let m = Member::start(UNCHECKED);
    let before = snapshot(&m.c);
    let out = m.autopilot(&[("PKI_AUTOPILOT_BREAK_RENEWED", "etcd-server")]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(t.contains("rolled back etcd"), "{t}");
    assert_mentions(
        &t,
        &[
            "FAILED (restart-failed): etcd: not healthy with the renewed certificates",
            "it is healthy again",
        ],
    );
    // etcd's own certificate and key are the previous ones again, byte for byte.
    for rel in [
        "pki/etcd/server.crt",
        "pki/etcd/server.key",
        "pki/etcd/peer.crt",
        "pki/etcd/peer.key",
    ] {
        assert_eq!(snapshot(&m.c)[rel], before[rel], "{rel} not restored");
    }
    assert!(
        m.supervisor.starts() >= 3,
        "restarted with the broken file, then again"
    );
    m.assert_data_readable();
    let prom = std::fs::read_to_string(m.c.root().join("pki.prom")).unwrap();
    assert_mentions(
        &prom,
        &[
            "pki_autopilot_failure{reason=\"restart-failed\"} 1",
            "pki_autopilot_rollbacks_total{component=\"etcd\"} 1",
            "pki_autopilot_consecutive_failures 1",
        ],
    );

    // The next pass (the hourly timer) backs off instead of restarting etcd again: nothing
    // changes, the refusal is counted.
    let starts = m.supervisor.starts();
    let out = m.autopilot(&[]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert_mentions(&t, &["FAILED (backing-off)", "no new attempt before"]);
    assert_eq!(m.supervisor.starts(), starts, "etcd left alone");
    for rel in ["pki/etcd/server.crt", "pki/etcd/server.key"] {
        assert_eq!(snapshot(&m.c)[rel], before[rel], "{rel} untouched");
    }
    let prom = std::fs::read_to_string(m.c.root().join("pki.prom")).unwrap();
    assert_mentions(
        &prom,
        &[
            "pki_autopilot_refusals_total{reason=\"backing-off\"} 1",
            "pki_autopilot_rollbacks_total{component=\"etcd\"} 1",
            "pki_autopilot_consecutive_failures 1",
        ],
    );
    // Once the operator cleared it, a pass renews and restarts etcd healthy, and the counts go on.
    std::fs::remove_file(m.c.path(".autopilot/backoff.json")).unwrap();
    let out = m.autopilot(&[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let prom = std::fs::read_to_string(m.c.root().join("pki.prom")).unwrap();
    assert_mentions(
        &prom,
        &[
            "pki_autopilot_restarts_total{component=\"etcd\"} 1",
            "pki_autopilot_consecutive_failures 0",
            "pki_autopilot_backoff_until_timestamp_seconds 0",
        ],
    );
    m.assert_data_readable();
}

/// The certificate the member presents to a new connection (openssl, not our TLS client).
fn served(m: &Member) -> String {
    let out = Command::new("sh")
        .arg("-c")
        .arg("openssl s_client -connect \"127.0.0.1:$1\" </dev/null 2>/dev/null | openssl x509 -noout -fingerprint -sha256")
        .arg("sh")
        .arg(m.client.to_string())
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn fingerprint(path: &Path) -> String {
    let out = Command::new("openssl")
        .args(["x509", "-noout", "-fingerprint", "-sha256", "-in"])
        .arg(path)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn etcd_that_reloads_its_certificates_is_renewed_without_a_restart() {
    let m = Member::start("3.5.21-0");
    let manifest_before = std::fs::read(m.c.root().join("manifests/etcd.yaml")).unwrap();
    let server_before = fingerprint(&m.c.path("etcd/server.crt"));
    let out = m.autopilot(&[]);
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    for name in ["etcd-server", "etcd-peer", "etcd-healthcheck-client"] {
        assert!(t.contains(&format!("renewed {name} (")), "{name}:\n{t}");
    }
    assert_mentions(
        &t,
        &[
            "etcd not restarted: etcd 3.4 to 3.7 reads its serving and peer certificates again at every TLS handshake; it serves the renewed certificate",
        ],
    );
    assert!(!t.contains("restarted etcd"), "{t}");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(m.supervisor.starts(), 1, "the same process kept running");
    assert_eq!(
        std::fs::read(m.c.root().join("manifests/etcd.yaml")).unwrap(),
        manifest_before,
        "the manifest is untouched"
    );
    let renewed = fingerprint(&m.c.path("etcd/server.crt"));
    assert_ne!(renewed, server_before);
    assert_eq!(
        served(&m),
        renewed,
        "the running member serves the renewed certificate"
    );
    m.assert_data_readable();
    let prom = std::fs::read_to_string(m.c.root().join("pki.prom")).unwrap();
    assert_mentions(
        &prom,
        &["pki_autopilot_renewed_total{certificate=\"etcd-server\"} 1"],
    );
    assert!(
        !prom.contains("pki_autopilot_restarts_total{component=\"etcd\"} 1"),
        "{prom}"
    );
}
