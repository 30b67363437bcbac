//! `pki init --config` with kubeadm ClusterConfiguration files (v1beta3 and v1beta4).
#![allow(clippy::unwrap_used)]

use crate::common;

use common::*;

fn init_with(c: &Cluster, yaml: &str, extra: &[&str]) -> std::process::Output {
    let f = c.write_config(yaml);
    let mut args = vec!["--config", f.to_str().unwrap()];
    args.extend(extra);
    c.init(&args)
}

#[test]
fn v1beta3_cluster_configuration() {
    let c = Cluster::new();
    let yaml = format!(
        "apiVersion: kubeadm.k8s.io/v1beta3
kind: InitConfiguration
localAPIEndpoint:
  advertiseAddress: 10.9.9.9
---
apiVersion: kubeadm.k8s.io/v1beta3
kind: ClusterConfiguration
kubernetesVersion: v1.29.0
certificatesDir: {}
controlPlaneEndpoint: lb.v3.example:6443
networking:
  serviceSubnet: 10.200.0.0/16
  dnsDomain: v3.local
  podSubnet: 10.244.0.0/16
apiServer:
  certSANs: [10.1.1.1, api.v3.example]
  extraArgs:
    v: \"2\"
etcd:
  local:
    dataDir: /var/lib/etcd
    serverCertSANs: [etcd.v3.example]
    peerCertSANs: [10.3.3.3]
encryptionAlgorithm: ECDSA-P384
---
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
cgroupDriver: systemd
",
        c.root().join("custom-pki").display()
    );
    let f = c.write_config(&yaml);
    let mut args = c.default_init_args(&["--config", f.to_str().unwrap()]);
    // --cert-dir is not passed: certificatesDir decides.
    let cert_dir = args.iter().position(|a| a == "--cert-dir").unwrap();
    args.drain(cert_dir..cert_dir + 2);
    let out = run(&args);
    ok(&out);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_mentions(
        &stderr,
        &["encryptionAlgorithm is a kubeadm.k8s.io/v1beta4 field; ignored"],
    );
    let pki = c.root().join("custom-pki");
    let api = view(&pki.join("apiserver.crt"));
    assert_sans(
        &api,
        &["10.200.0.1", "10.1.1.1"],
        &[
            "api.v3.example",
            "lb.v3.example",
            "kubernetes.default.svc.v3.local",
        ],
    );
    assert_sans(
        &view(&pki.join("etcd/server.crt")),
        &[],
        &["etcd.v3.example"],
    );
    assert_sans(&view(&pki.join("etcd/peer.crt")), &["10.3.3.3"], &[]);
    // The --encryption-algorithm flag (P-256) wins over the file.
    assert_eq!(api.key_bits, 256);
    assert_api_endpoint(&c, &pki, "https://lb.v3.example:6443");
}

#[test]
fn v1beta4_cluster_configuration() {
    let c = Cluster::new();
    let yaml = "apiVersion: kubeadm.k8s.io/v1beta4
kind: ClusterConfiguration
networking:
  serviceSubnet: 10.96.0.0/12,fd00:1234::/112
encryptionAlgorithm: ECDSA-P384
certificateValidityPeriod: 720h0m0s
caCertificateValidityPeriod: 43800h0m0s
apiServer:
  certSANs:
  - v4.example
";
    let f = c.write_config(yaml);
    let mut flags = vec!["--config", f.to_str().unwrap()];
    flags.extend_from_slice(NODE_FLAGS);
    ok(&run(&c.init_args(&flags)));
    let api = view(&c.path("apiserver.crt"));
    assert_eq!(
        (api.key_is_rsa, api.key_bits),
        (false, 384),
        "encryptionAlgorithm used"
    );
    // Dual-stack: kubeadm puts the first IP of the first service CIDR only.
    assert!(!api.ips.contains(&"fd00:1234::1".parse().unwrap()));
    assert_sans(&api, &["10.96.0.1"], &["v4.example"]);
    assert!(
        (api.not_after - (now() + 30 * DAY)).abs() < 120,
        "certificateValidityPeriod"
    );
    assert!(
        (view(&c.path("ca.crt")).not_after - (now() + 1825 * DAY)).abs() < 120,
        "caCertificateValidityPeriod"
    );
    // Flags override the file.
    let c2 = Cluster::new();
    ok(&init_with(
        &c2,
        yaml,
        &["--certificate-validity-period", "48h"],
    ));
    assert!((view(&c2.path("apiserver.crt")).not_after - (now() + 2 * DAY)).abs() < 120);
}

#[test]
fn unknown_kinds_and_versions_are_rejected() {
    let cases = [
        (
            "apiVersion: kubeadm.k8s.io/v1beta2\nkind: ClusterConfiguration\n",
            "v1beta2",
        ),
        (
            "apiVersion: kubeadm.k8s.io/v1beta4\nkind: ClusterConfig\n",
            "unknown kind \"ClusterConfig\"",
        ),
        (
            "apiVersion: v1\nkind: ConfigMap\n---\napiVersion: kubeadm.k8s.io/v1beta4\nkind: ClusterConfiguration\n",
            "ConfigMap",
        ),
        (
            "apiVersion: kubeadm.k8s.io/v1beta4\nkind: InitConfiguration\n",
            "no ClusterConfiguration",
        ),
        (
            "apiVersion: kubeadm.k8s.io/v1beta4\nkind: ClusterConfiguration\nencryptionAlgorithm: DSA\n",
            "unknown encryption algorithm",
        ),
    ];
    for (yaml, msg) in cases {
        let c = Cluster::new();
        let err = fails(&init_with(&c, yaml, &[]));
        assert!(err.contains(msg), "{msg}: {err}");
        assert!(!c.pki().exists(), "nothing written on a config error");
    }
}
