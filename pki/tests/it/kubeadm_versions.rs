//! kubeadm compatibility per Kubernetes version and per node role, through the real binary:
//! subjects checked independently with openssl and Python `cryptography`, the joined
//! control-plane node without super-admin.conf, kubeadm config documents, dual-stack,
//! `check-expiration -o json` against kubeadm's v1alpha3 fields, and kubeconfig renewal.
#![allow(clippy::unwrap_used)]

use crate::common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use common::*;

/// Every certificate file of the layout (relative to the cluster root) and kubeadm's O for it,
/// per version; `None` = the file must not exist.
fn expected_orgs(minor: u32, patch: u32) -> Vec<(&'static str, Option<Vec<&'static str>>)> {
    let old = minor <= 28;
    let masters = vec!["system:masters"];
    let admins = vec!["kubeadm:cluster-admins"];
    let kubelet_client = if old {
        masters.clone()
    } else if minor >= 37 || (minor == 36 && patch >= 1) {
        vec![]
    } else {
        admins.clone()
    };
    let etcd_client = if old { masters.clone() } else { vec![] };
    vec![
        ("pki/ca.crt", Some(vec![])),
        ("pki/front-proxy-ca.crt", Some(vec![])),
        ("pki/etcd/ca.crt", Some(vec![])),
        ("pki/apiserver.crt", Some(vec![])),
        ("pki/apiserver-kubelet-client.crt", Some(kubelet_client)),
        ("pki/front-proxy-client.crt", Some(vec![])),
        ("pki/etcd/server.crt", Some(vec![])),
        ("pki/etcd/peer.crt", Some(vec![])),
        ("pki/etcd/healthcheck-client.crt", Some(etcd_client.clone())),
        ("pki/apiserver-etcd-client.crt", Some(etcd_client)),
        (
            "admin.conf",
            Some(if old { masters.clone() } else { admins }),
        ),
        ("super-admin.conf", if old { None } else { Some(masters) }),
        ("controller-manager.conf", Some(vec![])),
        ("scheduler.conf", Some(vec![])),
        ("kubelet.conf", Some(vec!["system:nodes"])),
    ]
}

/// Writes the certificate of `rel` (a .crt, or a kubeconfig's embedded client certificate) to a
/// PEM file and returns its path.
fn cert_file(c: &Cluster, rel: &str) -> std::path::PathBuf {
    let p = c.root().join(rel);
    if rel.ends_with(".crt") {
        return p;
    }
    let out = c.root().join(format!("{rel}.client.pem"));
    std::fs::write(&out, kubeconfig(&p).cert_pem).unwrap();
    out
}

/// O values of a certificate through `openssl x509 -subject` (RFC 2253 order reversed).
fn openssl_orgs(cert: &Path) -> Vec<String> {
    let out = openssl_ok(&[
        "x509",
        "-in",
        cert.to_str().unwrap(),
        "-noout",
        "-subject",
        "-nameopt",
        "sep_multiline,sname",
    ]);
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter_map(|l| l.trim().strip_prefix("O=").map(str::to_owned))
        .collect()
}

const PY_SUBJECTS: &str = r#"
import json, sys
from cryptography import x509
from cryptography.x509.oid import NameOID, ExtensionOID
out = {}
for path in sys.argv[1:]:
    c = x509.load_pem_x509_certificate(open(path, 'rb').read())
    try:
        dns = c.extensions.get_extension_for_oid(ExtensionOID.SUBJECT_ALTERNATIVE_NAME).value.get_values_for_type(x509.DNSName)
    except x509.ExtensionNotFound:
        dns = []
    out[path] = {
        "cn": [a.value for a in c.subject.get_attributes_for_oid(NameOID.COMMON_NAME)],
        "o": [a.value for a in c.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)],
        "dns": dns,
    }
print(json.dumps(out))
"#;

/// Subjects (CN, O, DNS SANs) of certificates through Python `cryptography`.
fn python_subjects(paths: &[std::path::PathBuf]) -> serde_json::Value {
    let out = testkit::expect_success(
        Command::new("python3")
            .arg("-c")
            .arg(PY_SUBJECTS)
            .args(paths),
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn subjects_follow_each_versions_kubeadm_table() {
    for (version, minor, patch) in [
        ("v1.28.15", 28, 15),
        ("v1.29", 29, 0),
        ("v1.36.0", 36, 0),
        ("v1.36.1", 36, 1),
        ("v1.37", 37, 0),
    ] {
        let c = Cluster::new();
        let stdout = ok(&c.init(&["--kubernetes-version", version]));
        let expected = expected_orgs(minor, patch);
        let mut files = Vec::new();
        for (rel, orgs) in &expected {
            let p = c.root().join(rel);
            match orgs {
                None => assert!(!p.exists(), "{version}: {rel} must not exist"),
                Some(orgs) => {
                    let f = cert_file(&c, rel);
                    assert_eq!(&openssl_orgs(&f), orgs, "{version}: {rel} (openssl)");
                    files.push((f, orgs.clone()));
                }
            }
        }
        let paths: Vec<_> = files.iter().map(|(p, _)| p.clone()).collect();
        let py = python_subjects(&paths);
        for (p, orgs) in &files {
            let got: Vec<String> = py[p.to_str().unwrap()]["o"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_str().unwrap().to_owned())
                .collect();
            assert_eq!(&got, orgs, "{version}: {} (python)", p.display());
        }
        let note = stdout.contains("ClusterRoleBinding kubeadm:apiserver-kubelet-client")
            && stdout.contains("system:kubelet-api-admin");
        assert_eq!(
            note,
            minor >= 37 || (minor == 36 && patch >= 1),
            "{version}: {stdout}"
        );
        // check-expiration knows which files belong to the version: no missing row, exit 0.
        let out = c.cmd(&["check-expiration", "--fail-on-missing"]);
        let table = ok(&out);
        assert_eq!(table.contains("super-admin.conf"), minor >= 29, "{table}");
    }
}

#[test]
fn unsupported_versions_are_refused() {
    for v in ["v1.27.3", "v1.38.0", "2.0", "stable"] {
        let c = Cluster::new();
        let err = fails(&c.init(&["--kubernetes-version", v]));
        assert!(err.contains("supported: v1.28 to v1.37"), "{v}: {err}");
        assert!(!c.pki().exists(), "{v}: nothing written");
    }
    let c = Cluster::initialized();
    let err = fails(&c.cmd(&["renew", "all", "--kubernetes-version", "v1.20"]));
    assert!(err.contains("supported"), "{err}");
    let yaml = "apiVersion: kubeadm.k8s.io/v1beta4\nkind: ClusterConfiguration\nkubernetesVersion: v1.26.0\n";
    let f = c.write_config(yaml);
    let c2 = Cluster::new();
    let err = fails(&c2.init(&["--config", f.to_str().unwrap()]));
    assert_mentions(&err, &["v1.26.0", "supported"]);
}

#[test]
fn every_ca_carries_its_cn_as_dns_san() {
    let c = Cluster::initialized();
    let cas = [
        ("pki/ca.crt", "kubernetes"),
        ("pki/front-proxy-ca.crt", "front-proxy-ca"),
        ("pki/etcd/ca.crt", "etcd-ca"),
    ];
    let paths: Vec<_> = cas.iter().map(|(r, _)| c.root().join(r)).collect();
    let py = python_subjects(&paths);
    for ((rel, cn), p) in cas.iter().zip(&paths) {
        let e = &py[p.to_str().unwrap()];
        assert_eq!(e["cn"], serde_json::json!([cn]), "{rel}");
        assert_eq!(e["dns"], serde_json::json!([cn]), "{rel}");
        openssl_verify(p, p, None);
    }
}

#[test]
fn dual_stack_puts_only_the_first_service_ip_and_accepts_kubeadm_certs() {
    let c = Cluster::initialized_with(&["--service-cidr", "10.96.0.0/12,fd00::/108"]);
    let api = view(&c.path("apiserver.crt"));
    assert!(api.ips.contains(&"10.96.0.1".parse().unwrap()));
    assert!(
        !api.ips.contains(&"fd00::1".parse().unwrap()),
        "{:?}",
        api.ips
    );
    // A rerun (what used to fail with "missing IP:fd00::1" on kubeadm's certificate) keeps it.
    let before = std::fs::read(c.path("apiserver.crt")).unwrap();
    ok(&c.init(&["--service-cidr", "10.96.0.0/12,fd00::/108"]));
    assert_eq!(before, std::fs::read(c.path("apiserver.crt")).unwrap());
    // IPv6-first: the first CIDR's first IP.
    let c6 = Cluster::initialized_with(&["--service-cidr", "fd00::/108,10.96.0.0/12"]);
    let api6 = view(&c6.path("apiserver.crt"));
    assert!(api6.ips.contains(&"fd00::1".parse().unwrap()));
    assert!(!api6.ips.contains(&"10.96.0.1".parse().unwrap()));
}

fn check_json(c: &Cluster) -> serde_json::Value {
    serde_json::from_str(&ok(&c.cmd(&["check-expiration", "-o", "json"]))).unwrap()
}

fn names(v: &serde_json::Value, list: &str) -> Vec<String> {
    v[list]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn joined_control_plane_node_has_no_super_admin_and_no_alert() {
    // By flag.
    let c = Cluster::new();
    let out = ok(&c.init(&["--control-plane-join"]));
    assert!(!c.conf("super-admin.conf").exists(), "{out}");
    for f in ["admin.conf", "controller-manager.conf", "scheduler.conf"] {
        assert!(c.conf(f).exists(), "{f}");
    }
    ok(&c.cmd(&[
        "check-expiration",
        "--fail-on-missing",
        "--fail-within",
        "30d",
    ]));
    let json = check_json(&c);
    assert!(!names(&json, "certificates").contains(&"super-admin.conf".to_owned()));
    let prom = ok(&c.cmd(&["check-expiration", "-o", "prometheus"]));
    assert!(!prom.contains("super-admin.conf"), "{prom}");
    // renew all works and does not invent it.
    ok(&c.cmd(&["renew", "all"]));
    assert!(!c.conf("super-admin.conf").exists());
    // A rerun with the flag changes nothing.
    let again = ok(&c.init(&["--control-plane-join"]));
    assert!(!again.contains("created"), "{again}");
    assert!(!c.conf("super-admin.conf").exists());

    // By config: a JoinConfiguration with controlPlane and no InitConfiguration.
    let j = Cluster::new();
    let yaml = "apiVersion: kubeadm.k8s.io/v1beta4
kind: JoinConfiguration
nodeRegistration:
  name: cp2
controlPlane:
  localAPIEndpoint:
    advertiseAddress: 10.20.0.12
    bindPort: 7443
discovery:
  bootstrapToken:
    apiServerEndpoint: lb.example:6443
    token: abcdef.0123456789abcdef
    unsafeSkipCAVerification: true
";
    let f = j.write_config(yaml);
    let args = j.init_args(&["--config", f.to_str().unwrap()]);
    ok(&run(&args));
    assert!(!j.conf("super-admin.conf").exists());
    assert_eq!(view(&j.path("etcd/peer.crt")).cn, "cp2");
    assert!(
        view(&j.path("apiserver.crt"))
            .ips
            .contains(&"10.20.0.12".parse().unwrap())
    );
    assert_eq!(
        kubeconfig(&j.conf("scheduler.conf")).server,
        "https://10.20.0.12:7443"
    );
    ok(&j.cmd(&["check-expiration", "--fail-on-missing"]));

    // The init node still alerts when its super-admin.conf goes missing.
    let i = Cluster::initialized();
    std::fs::remove_file(i.conf("super-admin.conf")).unwrap();
    let out = i.cmd(&["check-expiration", "--fail-on-missing"]);
    assert_eq!(out.status.code(), Some(3));
    // A worker JoinConfiguration is refused: pki init is for control-plane nodes.
    let w = Cluster::new();
    let f = w.write_config("apiVersion: kubeadm.k8s.io/v1beta4\nkind: JoinConfiguration\nnodeRegistration:\n  name: w1\n");
    let err = fails(&run(&w.init_args(&["--config", f.to_str().unwrap()])));
    assert!(err.contains("pki kubelet"), "{err}");
}

#[test]
fn init_configuration_cluster_name_and_endpoints() {
    let c = Cluster::new();
    let yaml = "apiVersion: kubeadm.k8s.io/v1beta4
kind: InitConfiguration
nodeRegistration:
  name: cp-one
localAPIEndpoint:
  advertiseAddress: 10.30.0.7
  bindPort: 8443
---
apiVersion: kubeadm.k8s.io/v1beta4
kind: ClusterConfiguration
kubernetesVersion: v1.30.4
clusterName: prod-eu
controlPlaneEndpoint: api.prod.example
networking:
  serviceSubnet: 10.100.0.0/16,fd00:100::/112
";
    let f = c.write_config(yaml);
    // No --node-name / --apiserver-advertise-address: the InitConfiguration decides.
    let args = c.init_args(&["--config", f.to_str().unwrap()]);
    let out = run(&args);
    let stdout = ok(&out);
    assert!(!stdout.contains("WARNING"), "{stdout}");
    let api = view(&c.path("apiserver.crt"));
    assert!(api.dns.contains(&"cp-one".to_owned()), "{:?}", api.dns);
    assert!(api.dns.contains(&"api.prod.example".to_owned()));
    assert!(api.ips.contains(&"10.30.0.7".parse().unwrap()));
    assert!(api.ips.contains(&"10.100.0.1".parse().unwrap()));
    assert!(!api.ips.contains(&"fd00:100::1".parse().unwrap()));
    assert_eq!(view(&c.path("etcd/server.crt")).cn, "cp-one");
    // kubernetesVersion v1.30: apiserver-kubelet-client in kubeadm:cluster-admins.
    assert_eq!(
        view(&c.path("apiserver-kubelet-client.crt")).orgs,
        ["kubeadm:cluster-admins"]
    );
    for (file, server) in [
        ("admin.conf", "https://api.prod.example:8443"),
        ("super-admin.conf", "https://api.prod.example:8443"),
        ("kubelet.conf", "https://api.prod.example:8443"),
        ("controller-manager.conf", "https://10.30.0.7:8443"),
        ("scheduler.conf", "https://10.30.0.7:8443"),
    ] {
        let kc = kubeconfig(&c.conf(file));
        assert_eq!(kc.server, server, "{file}");
        assert_eq!(kc.cluster, "prod-eu", "{file}");
        let v: serde_yaml_ng::Value =
            serde_yaml_ng::from_str(&std::fs::read_to_string(c.conf(file)).unwrap()).unwrap();
        let ctx = v["current-context"].as_str().unwrap();
        assert!(ctx.ends_with("@prod-eu"), "{file}: {ctx}");
        assert_eq!(v["contexts"][0]["context"]["cluster"], "prod-eu");
    }
    // A rerun keeps everything and does not warn about kubeadm's own endpoints.
    let again = ok(&run(&args));
    assert!(
        !again.contains("WARNING") && !again.contains("created"),
        "{again}"
    );
    // Flags override the config file.
    let c2 = Cluster::new();
    let args = c2.init_args(&[
        "--config",
        f.to_str().unwrap(),
        "--node-name",
        "flag-node",
        "--apiserver-bind-port",
        "9443",
        "--kubernetes-version",
        "v1.37.0",
    ]);
    ok(&run(&args));
    assert_eq!(view(&c2.path("etcd/peer.crt")).cn, "flag-node");
    assert_eq!(
        kubeconfig(&c2.conf("scheduler.conf")).server,
        "https://10.30.0.7:9443"
    );
    assert!(
        view(&c2.path("apiserver-kubelet-client.crt"))
            .orgs
            .is_empty()
    );
}

/// kubeadm's `output.kubeadm.k8s.io/v1alpha3` `Certificate` fields.
const KUBEADM_FIELDS: &[&str] = &[
    "name",
    "expirationDate",
    "residualTime",
    "externallyManaged",
    "caName",
    "missing",
];

#[test]
fn check_expiration_json_and_yaml_have_kubeadms_shape_and_rows() {
    let c = Cluster::initialized();
    std::fs::remove_file(c.path("front-proxy-client.crt")).unwrap();
    let json = check_json(&c);
    assert_eq!(json["apiVersion"], "output.kubeadm.k8s.io/v1alpha3");
    assert_eq!(json["kind"], "CertificateExpirationInfo");
    // kubeadm's rows, sorted by name: leaves + the kubeconfigs kubeadm renews (no kubelet.conf).
    assert_eq!(names(&json, "certificates"), EXPIRATION_NAMES);
    assert_eq!(
        names(&json, "certificateAuthorities"),
        ["ca", "etcd-ca", "front-proxy-ca"]
    );
    // kubelet.conf is reported apart, in an extra list.
    assert_eq!(names(&json, "kubeletCertificates"), ["kubelet.conf"]);
    let now = now();
    for list in ["certificates", "certificateAuthorities"] {
        for e in json[list].as_array().unwrap() {
            let obj = e.as_object().unwrap();
            let missing = e["missing"].as_bool().unwrap();
            for f in KUBEADM_FIELDS {
                let optional = *f == "caName" && (list == "certificateAuthorities" || missing);
                assert!(
                    obj.contains_key(*f) || optional,
                    "{list} {}: {f}",
                    e["name"]
                );
            }
            assert!(e["externallyManaged"].is_boolean());
            assert!(e["residualTime"].is_i64());
            if missing {
                assert!(e["expirationDate"].is_null());
                assert_eq!(e["residualTime"], 0);
                continue;
            }
            // RFC 3339 in UTC, as metav1.Time marshals.
            let date = e["expirationDate"].as_str().unwrap();
            assert!(date.ends_with('Z') && date.len() == 20, "{date}");
            let residual = e["residualTime"].as_i64().unwrap();
            assert_eq!(e["residualSeconds"], residual);
            let not_after = e["expirationDate"].as_str().unwrap();
            let out = Command::new("date")
                .args(["-u", "-d", not_after, "+%s"])
                .output()
                .unwrap();
            let t: i64 = String::from_utf8(out.stdout)
                .unwrap()
                .trim()
                .parse()
                .unwrap();
            assert!((t - now - residual).abs() < 60, "{not_after} {residual}");
        }
    }
    let cert = |n: &str| {
        json["certificates"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == n)
            .unwrap()
            .clone()
    };
    assert_eq!(cert("etcd-peer")["caName"], "etcd-ca");
    assert_eq!(cert("admin.conf")["caName"], "ca");
    assert_eq!(cert("front-proxy-client")["missing"], true);
    // YAML: same document.
    let yaml: serde_json::Value =
        serde_yaml_ng::from_str(&ok(&c.cmd(&["check-expiration", "-o", "yaml"]))).unwrap();
    assert_eq!(yaml["apiVersion"], json["apiVersion"]);
    let strip = |v: &serde_json::Value| -> BTreeMap<String, serde_json::Value> {
        v["certificates"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| (e["name"].as_str().unwrap().to_owned(), e["caName"].clone()))
            .collect()
    };
    assert_eq!(strip(&yaml), strip(&json));
}

#[test]
fn renewing_a_kubeconfig_keeps_every_other_field() {
    let c = Cluster::initialized_with(&["--kubernetes-version", "v1.36"]);
    let path = c.conf("admin.conf");
    let mut doc: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    // An operator's extra cluster, context, user, preference and extension.
    let extra: serde_yaml_ng::Value = serde_yaml_ng::from_str(
        "cluster: {server: 'https://other.example:443', insecure-skip-tls-verify: true}\nname: other\n",
    )
    .unwrap();
    doc["clusters"].as_sequence_mut().unwrap().push(extra);
    let ctx: serde_yaml_ng::Value = serde_yaml_ng::from_str(
        "context: {cluster: other, user: ops, namespace: tools}\nname: ops@other\n",
    )
    .unwrap();
    doc["contexts"].as_sequence_mut().unwrap().push(ctx);
    let user: serde_yaml_ng::Value =
        serde_yaml_ng::from_str("name: ops\nuser: {token: not-a-real-token}\n").unwrap();
    doc["users"].as_sequence_mut().unwrap().push(user);
    doc["preferences"] = serde_yaml_ng::from_str("{colors: true}").unwrap();
    doc["extensions"] = serde_yaml_ng::from_str("[{name: site, extension: {owner: ops}}]").unwrap();
    std::fs::write(&path, serde_yaml_ng::to_string(&doc).unwrap()).unwrap();
    let before_cert = kubeconfig(&path).cert_pem;

    let out = ok(&c.cmd(&["renew", "admin.conf", "apiserver-kubelet-client"]));
    assert!(!out.contains("NOTE"), "{out}");
    let after: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let kc = kubeconfig(&path);
    assert_ne!(kc.cert_pem, before_cert, "client certificate renewed");
    // Everything but the client certificate and key is unchanged.
    let mut expect = doc.clone();
    for key in ["client-certificate-data", "client-key-data"] {
        expect["users"][0]["user"][key] = after["users"][0]["user"][key].clone();
    }
    assert_eq!(after, expect);
    // Without --kubernetes-version the subject is kept; with it the version's O is applied.
    assert_eq!(
        view(&c.path("apiserver-kubelet-client.crt")).orgs,
        ["kubeadm:cluster-admins"]
    );
    let out = ok(&c.cmd(&[
        "renew",
        "apiserver-kubelet-client",
        "--kubernetes-version",
        "v1.37.0",
    ]));
    assert!(out.contains("kubeadm:apiserver-kubelet-client"), "{out}");
    assert!(
        view(&c.path("apiserver-kubelet-client.crt"))
            .orgs
            .is_empty()
    );
    c.verify("apiserver-kubelet-client", "ca", Some("sslclient"));
}

#[test]
fn kubelet_takes_a_supported_version_only() {
    let c = Cluster::initialized();
    let out_dir = c.root().join("kubelet-pki");
    let base = [
        "kubelet",
        "--node-name",
        "w1",
        "--out-dir",
        out_dir.to_str().unwrap(),
        "--kubernetes-version",
    ];
    let mut args = base.to_vec();
    args.push("v1.29.0");
    ok(&c.cmd(&args));
    let mut args = base.to_vec();
    args.push("v1.40.0");
    let err = fails(&c.cmd(&args));
    assert!(err.contains("supported"), "{err}");
}

#[test]
fn external_etcd_gets_no_etcd_ca_and_no_etcd_certificates() {
    let c = Cluster::new();
    let yaml = "apiVersion: kubeadm.k8s.io/v1beta3
kind: ClusterConfiguration
kubernetesVersion: v1.31.2
etcd:
  external:
    endpoints: [https://etcd-0.example:2379]
    caFile: /etc/etcd/ca.crt
    certFile: /etc/etcd/apiserver-etcd-client.crt
    keyFile: /etc/etcd/apiserver-etcd-client.key
";
    let f = c.write_config(yaml);
    ok(&c.init(&["--config", f.to_str().unwrap()]));
    assert!(!c.pki().join("etcd").exists(), "no etcd CA or etcd leaves");
    assert!(!c.path("apiserver-etcd-client.crt").exists());
    assert!(!c.path("apiserver-etcd-client.key").exists());
    assert!(c.path("apiserver.crt").exists() && c.path("front-proxy-client.crt").exists());
    let json = check_json(&c);
    assert_eq!(
        names(&json, "certificateAuthorities"),
        ["ca", "front-proxy-ca"]
    );
    let rows = names(&json, "certificates");
    assert!(
        !rows
            .iter()
            .any(|n| n.starts_with("etcd") || n == "apiserver-etcd-client"),
        "{rows:?}"
    );
    ok(&c.cmd(&["check-expiration", "--fail-on-missing"]));
    let renewed = ok(&c.cmd(&["renew", "all"]));
    assert!(!renewed.contains("renewed etcd"), "{renewed}");
}

/// Every file under `root` with its bytes and mode.
fn tree(root: &Path) -> BTreeMap<std::path::PathBuf, (Vec<u8>, u32)> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                out.insert(p.clone(), (Vec::new(), mode(&p)));
                stack.push(p);
            } else {
                out.insert(p.clone(), (std::fs::read(&p).unwrap(), mode(&p)));
            }
        }
    }
    out
}

#[test]
fn dry_run_leaves_every_byte_as_it_was() {
    // Empty directories: init would create everything, and creates nothing.
    let c = Cluster::new();
    let out = ok(&c.init(&["--dry-run", "--kubernetes-version", "v1.28"]));
    assert!(!c.pki().exists(), "{out}");
    assert!(
        std::fs::read_dir(c.root()).unwrap().next().is_none(),
        "{out}"
    );
    let would = |rel: &str| format!("[dry-run] would create {}", c.root().join(rel).display());
    for rel in [
        "pki/ca.key",
        "pki/apiserver.crt",
        "pki/etcd/peer.crt",
        "admin.conf",
    ] {
        assert!(out.contains(&would(rel)), "{rel}: {out}");
    }
    assert!(!out.contains(&would("super-admin.conf")), "1.28: {out}");
    assert!(
        !out.contains(".pki-dry-run"),
        "scratch paths mapped back: {out}"
    );

    // A complete cluster: init changes nothing; renew would change files but does not.
    ok(&c.init(&[]));
    std::fs::remove_file(c.path("front-proxy-client.crt")).unwrap();
    let before = tree(c.root());
    let out = ok(&c.init(&["--dry-run"]));
    assert!(out.contains(&would("pki/front-proxy-client.crt")), "{out}");
    assert_eq!(before, tree(c.root()));
    let out = ok(&c.cmd(&["renew", "all", "--dry-run"]));
    assert!(out.contains("[dry-run] would renew apiserver"), "{out}");
    assert!(
        out.contains(&format!(
            "[dry-run] would change {}",
            c.conf("admin.conf").display()
        )),
        "{out}"
    );
    assert_eq!(before, tree(c.root()), "renew --dry-run wrote nothing");
    // Nothing left beside the cert dir either.
    assert!(
        !std::fs::read_dir(c.root()).unwrap().any(|e| e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .contains("dry-run"))
    );

    // A copy left by a killed dry run (its process gone, over an hour old) is removed by the
    // next one; the copy of a process still running is kept.
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let dead = child.id();
    child.wait().unwrap();
    let abandoned = c.root().join(format!(".pki-dry-run-{dead}-0a1b2c"));
    std::fs::create_dir_all(abandoned.join("pki")).unwrap();
    std::fs::write(abandoned.join("pki/ca.key"), b"copy").unwrap();
    let two_hours_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(7200);
    std::fs::File::open(&abandoned)
        .unwrap()
        .set_modified(two_hours_ago)
        .unwrap();
    let running = c
        .root()
        .join(format!(".pki-dry-run-{}-0d0e0f", std::process::id()));
    std::fs::create_dir(&running).unwrap();
    ok(&c.init(&["--dry-run"]));
    assert!(!abandoned.exists(), "the abandoned copy is removed");
    assert!(running.exists(), "a running dry run's copy is kept");
}
