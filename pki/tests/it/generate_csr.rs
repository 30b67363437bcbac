//! `generate-csr` and the external-CA flow: requests checked with openssl, signed by openssl
//! CAs whose keys stay outside the cert dir, then accepted by `init`.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use crate::common::*;

fn generate(c: &Cluster, extra: &[&str]) -> std::process::Output {
    let mut args = c.default_init_args(extra);
    args[0] = "generate-csr".into();
    run(&args)
}

/// openssl's view of a request: verified self-signature, subject line and text dump.
fn req_text(csr: &Path) -> String {
    let out = openssl_ok(&[
        "req",
        "-in",
        csr.to_str().unwrap(),
        "-noout",
        "-verify",
        "-text",
    ]);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn req_pubkey(csr: &Path) -> String {
    let out = openssl_ok(&["req", "-in", csr.to_str().unwrap(), "-noout", "-pubkey"]);
    String::from_utf8(out.stdout).unwrap()
}

/// Every file below `dir` with its content, sorted.
fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push((p.clone(), std::fs::read(&p).unwrap()));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn requests_carry_what_init_would_issue_and_nothing_else_changes() {
    let c = Cluster::new();
    let out = ok(&generate(&c, &["--kubernetes-version", "v1.30"]));
    assert!(out.contains("apiserver.csr"), "{out}");
    for leaf in LEAF_BASES {
        let key = c.path(&format!("{leaf}.key"));
        let csr = c.path(&format!("{leaf}.csr"));
        assert_eq!(mode(&key), 0o600, "{leaf}");
        assert_eq!(req_pubkey(&csr), openssl_pubkey_of_key(&key), "{leaf}");
        assert!(!c.path(&format!("{leaf}.crt")).exists(), "{leaf}");
    }
    let api = req_text(&c.path("apiserver.csr"));
    assert!(api.contains("Subject: CN = kube-apiserver"), "{api}");
    assert_mentions(
        &api,
        &[
            "DNS:cp1",
            "DNS:kubernetes.default.svc.cluster.local",
            "IP Address:10.96.0.1",
            "IP Address:192.168.10.5",
            "TLS Web Server Authentication",
        ],
    );
    let kcl = req_text(&c.path("apiserver-kubelet-client.csr"));
    assert!(
        kcl.contains("Subject: O = kubeadm:cluster-admins, CN = kube-apiserver-kubelet-client"),
        "1.30 O: {kcl}"
    );
    assert!(kcl.contains("TLS Web Client Authentication"), "{kcl}");
    let peer = req_text(&c.path("etcd/peer.csr"));
    assert_mentions(
        &peer,
        &[
            "TLS Web Server Authentication, TLS Web Client Authentication",
            "DNS:localhost",
            "IP Address:127.0.0.1",
        ],
    );
    for (conf, subject) in [
        (
            "admin.conf",
            "O = kubeadm:cluster-admins, CN = kubernetes-admin",
        ),
        (
            "super-admin.conf",
            "O = system:masters, CN = kubernetes-super-admin",
        ),
        ("kubelet.conf", "O = system:nodes, CN = system:node:cp1"),
        ("scheduler.conf", "CN = system:kube-scheduler"),
    ] {
        let text = req_text(&c.conf(&format!("{conf}.csr")));
        assert!(
            text.contains(&format!("Subject: {subject}\n")),
            "{conf}: {text}"
        );
        assert_eq!(mode(&c.conf(conf)), 0o600);
        // kubeadm's partial kubeconfig: the key of the request, no certificate, no CA data.
        let v: serde_yaml_ng::Value =
            serde_yaml_ng::from_str(&std::fs::read_to_string(c.conf(conf)).unwrap()).unwrap();
        let user = &v["users"][0]["user"];
        assert!(user.get("client-certificate-data").is_none(), "{conf}");
        assert!(
            v["clusters"][0]["cluster"]
                .get("certificate-authority-data")
                .is_none()
        );
        let key = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(key.path(), kubeconfig_key(&c.conf(conf))).unwrap();
        assert_eq!(
            req_pubkey(&c.conf(&format!("{conf}.csr"))),
            openssl_pubkey_of_key(key.path())
        );
    }
    let server = &kubeconfig_server(&c.conf("controller-manager.conf"));
    assert_eq!(server, "https://192.168.10.5:6443");
    // No CA, no service-account key, no node record, no certificate.
    for f in [
        "ca.crt",
        "ca.key",
        "sa.key",
        "sa.pub",
        "etcd/ca.crt",
        "front-proxy-ca.crt",
    ] {
        assert!(!c.path(f).exists(), "{f}");
    }
    assert!(!c.conf(".pki-node.json").exists());

    // A second run refuses and leaves every byte as it was.
    let before = snapshot(c.root());
    let err = fails(&generate(&c, &[]));
    assert_mentions(&err, &["never overwrites", "apiserver.key"]);
    assert_eq!(snapshot(c.root()), before);
}

#[test]
fn a_joining_node_gets_no_super_admin_request() {
    let c = Cluster::new();
    ok(&generate(&c, &["--control-plane-join"]));
    assert!(!c.conf("super-admin.conf.csr").exists());
    assert!(c.conf("admin.conf.csr").exists());
}

#[test]
fn dry_run_writes_nothing() {
    let c = Cluster::new();
    std::fs::create_dir_all(c.pki()).unwrap();
    let out = ok(&generate(&c, &["--dry-run"]));
    assert!(out.contains("apiserver.csr"), "{out}");
    assert!(snapshot(c.root()).is_empty(), "dry run wrote files");
}

fn kubeconfig_yaml(path: &Path) -> serde_yaml_ng::Value {
    serde_yaml_ng::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn kubeconfig_key(path: &Path) -> Vec<u8> {
    use base64::Engine;
    let v = kubeconfig_yaml(path);
    base64::engine::general_purpose::STANDARD
        .decode(v["users"][0]["user"]["client-key-data"].as_str().unwrap())
        .unwrap()
}

fn kubeconfig_server(path: &Path) -> String {
    kubeconfig_yaml(path)["clusters"][0]["cluster"]["server"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// An openssl CA whose key lives in `keys`, its certificate copied to `<cert dir>/<base>.crt`.
fn external_ca(c: &Cluster, keys: &Path, base: &str, cn: &str) -> (PathBuf, PathBuf) {
    let key = keys.join(format!("{}.key", base.replace('/', "-")));
    let crt = c.path(&format!("{base}.crt"));
    std::fs::create_dir_all(crt.parent().unwrap()).unwrap();
    openssl_ca(
        &key,
        &crt,
        &format!("/CN={cn}"),
        "90",
        &["-addext", "keyUsage=critical,keyCertSign,digitalSignature"],
    );
    (crt, key)
}

/// The external CA's operator: `openssl x509 -req`, copying the requested extensions.
fn sign(csr: &Path, ca: &(PathBuf, PathBuf), out: &Path) {
    openssl_ok(&[
        "x509",
        "-req",
        "-in",
        csr.to_str().unwrap(),
        "-CA",
        ca.0.to_str().unwrap(),
        "-CAkey",
        ca.1.to_str().unwrap(),
        "-CAcreateserial",
        "-copy_extensions",
        "copyall",
        "-days",
        "30",
        "-out",
        out.to_str().unwrap(),
    ]);
}

#[test]
fn external_ca_end_to_end() {
    let c = Cluster::new();
    let keys = tempfile::tempdir().unwrap();
    let ca = external_ca(&c, keys.path(), "ca", "kubernetes");
    let fp = external_ca(&c, keys.path(), "front-proxy-ca", "front-proxy-ca");
    let etcd = external_ca(&c, keys.path(), "etcd/ca", "etcd-ca");
    ok(&generate(&c, &[]));

    // Before signing: init reports every missing certificate and creates none.
    let err = fails(&c.init(&[]));
    assert_mentions(&err, &["apiserver.crt", "external CA"]);
    assert!(!c.path("apiserver.crt").exists());
    // As kubeadm, the service-account key pair is the operator's to supply in this mode.
    assert!(err.contains("sa.key"), "{err}");
    assert!(!c.path("sa.key").exists() && !c.path("sa.pub").exists());
    let sa_key = c.path("sa.key");
    openssl_ok(&[
        "genpkey",
        "-algorithm",
        "EC",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-out",
        sa_key.to_str().unwrap(),
    ]);
    std::fs::set_permissions(&sa_key, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    openssl_ok(&[
        "pkey",
        "-in",
        sa_key.to_str().unwrap(),
        "-pubout",
        "-out",
        c.path("sa.pub").to_str().unwrap(),
    ]);
    let sa_before = std::fs::read(&sa_key).unwrap();

    for leaf in LEAF_BASES {
        let which = match *leaf {
            "front-proxy-client" => &fp,
            l if l.starts_with("etcd/") || l == "apiserver-etcd-client" => &etcd,
            _ => &ca,
        };
        sign(
            &c.path(&format!("{leaf}.csr")),
            which,
            &c.path(&format!("{leaf}.crt")),
        );
    }
    for conf in KUBECONFIGS {
        let crt = keys.path().join(format!("{conf}.crt"));
        sign(&c.conf(&format!("{conf}.csr")), &ca, &crt);
        let mut v = kubeconfig_yaml(&c.conf(conf));
        use base64::Engine;
        v["users"][0]["user"]["client-certificate-data"] = serde_yaml_ng::Value::from(
            base64::engine::general_purpose::STANDARD.encode(std::fs::read(&crt).unwrap()),
        );
        std::fs::write(c.conf(conf), serde_yaml_ng::to_string(&v).unwrap()).unwrap();
    }
    let leaves_before: Vec<Vec<u8>> = LEAF_BASES
        .iter()
        .map(|l| std::fs::read(c.path(&format!("{l}.crt"))).unwrap())
        .collect();

    // A node whose address the apiserver certificate does not carry is refused.
    let err = fails(&run(&c.init_args(&[
        "--node-name",
        "cp1",
        "--apiserver-advertise-address",
        "192.168.10.9",
    ])));
    assert_mentions(&err, &["apiserver.crt", "192.168.10.9"]);

    let out = ok(&c.init(&[]));
    assert!(out.contains("external CA mode"), "{out}");
    assert_mentions(&out, &["completed", "admin.conf"]);
    for base in ["ca", "front-proxy-ca", "etcd/ca"] {
        assert!(
            !c.path(&format!("{base}.key")).exists(),
            "{base}.key invented"
        );
    }
    for (l, before) in LEAF_BASES.iter().zip(&leaves_before) {
        assert_eq!(
            &std::fs::read(c.path(&format!("{l}.crt"))).unwrap(),
            before,
            "{l}"
        );
    }
    openssl_verify(&ca.0, &c.path("apiserver.crt"), Some("sslserver"));
    openssl_verify(&etcd.0, &c.path("etcd/peer.crt"), Some("sslclient"));
    for conf in KUBECONFIGS {
        let kc = kubeconfig(&c.conf(conf));
        assert_eq!(
            kc.ca_pem.as_bytes(),
            std::fs::read(&ca.0).unwrap(),
            "{conf}"
        );
        let crt = keys.path().join(format!("{conf}.crt"));
        assert_eq!(
            kc.cert_pem.as_bytes(),
            std::fs::read(&crt).unwrap(),
            "{conf}"
        );
    }
    assert_eq!(std::fs::read(&sa_key).unwrap(), sa_before, "sa.key kept");
    // A second init is a no-op that keeps everything.
    let again = ok(&c.init(&[]));
    assert!(!again.contains("completed"), "{again}");

    let table = ok(&c.cmd(&["check-expiration"]));
    for name in [
        "apiserver ",
        "front-proxy-client ",
        "etcd-server ",
        "admin.conf ",
    ] {
        let row = table.lines().find(|l| l.starts_with(name)).unwrap();
        assert!(row.trim_end().ends_with("yes"), "externally managed: {row}");
    }
}
