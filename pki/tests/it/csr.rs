//! `pki sign-csr`: CSRs made with `openssl req`, accepted or refused per signer rules.
#![allow(clippy::unwrap_used)]

use crate::common;

use std::path::{Path, PathBuf};

use common::*;

/// A CSR `<dir>/<name>.csr` (key `<name>.key`) made by `openssl req` for `subj` with `addext`
/// extensions; `key` is `rsa` (2048), `p384` (P-384, SHA-256) or else EC P-256.
fn make_csr(dir: &Path, name: &str, key: &str, subj: &str, addext: &[&str]) -> PathBuf {
    let csr = dir.join(format!("{name}.csr"));
    let keyf = dir.join(format!("{name}.key"));
    let mut args: Vec<&str> = vec!["req", "-new", "-nodes", "-subj", subj];
    let (k, csrs, keys) = (
        key.to_owned(),
        csr.to_string_lossy().into_owned(),
        keyf.to_string_lossy().into_owned(),
    );
    match k.as_str() {
        "rsa" => args.extend(["-newkey", "rsa:2048"]),
        "p384" => args.extend([
            "-sha256",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-384",
        ]),
        _ => args.extend(["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"]),
    }
    args.extend(["-keyout", keys.as_str(), "-out", csrs.as_str()]);
    for e in addext {
        args.extend(["-addext", e]);
    }
    openssl_ok(&args);
    csr
}

fn sign(c: &Cluster, signer: &str, csr: &Path, extra: &[&str]) -> std::process::Output {
    c.cmd_with(
        &[
            "sign-csr",
            "--signer",
            signer,
            "--csr",
            csr.to_str().unwrap(),
        ],
        extra,
    )
}

fn save(c: &Cluster, pem: &str, name: &str) -> PathBuf {
    let p = c.root().join(name);
    std::fs::write(&p, pem).unwrap();
    p
}

/// Signs `csr` for `signer` (with `extra` flags), saves the certificate as `name` beside the
/// cert dir and checks it verifies against ca.crt for `purpose`.
fn issue(
    c: &Cluster,
    signer: &str,
    csr: &Path,
    extra: &[&str],
    name: &str,
    purpose: &str,
) -> PathBuf {
    let crt = save(c, &ok(&sign(c, signer, csr, extra)), name);
    openssl_verify(&c.path("ca.crt"), &crt, Some(purpose));
    crt
}

/// The subject the kubelet of node `worker-1` requests.
const WORKER_1: &str = "/O=system:nodes/CN=system:node:worker-1";

const CLIENT_KUBELET: &str = "kubernetes.io/kube-apiserver-client-kubelet";
const SERVING: &str = "kubernetes.io/kubelet-serving";
const API_CLIENT: &str = "kubernetes.io/kube-apiserver-client";

#[test]
fn kubelet_client_csr() {
    let c = Cluster::initialized();
    let d = c.root();
    let good = make_csr(d, "good", "ec", WORKER_1, &[]);
    let crt = issue(&c, CLIENT_KUBELET, &good, &[], "good.crt", "sslclient");
    let v = view(&crt);
    assert_eq!(v.cn, "system:node:worker-1");
    assert_eq!(v.orgs, vec!["system:nodes".to_owned()]);
    assert!(v.client_auth && !v.server_auth && v.dns.is_empty() && v.ips.is_empty());
    assert_eq!(
        openssl_pubkey_of_cert(&crt),
        openssl_pubkey_of_key(&d.join("good.key"))
    );
    // --out writes a file instead.
    let out_file = d.join("out.crt");
    let stdout = ok(&sign(
        &c,
        CLIENT_KUBELET,
        &good,
        &["--out", out_file.to_str().unwrap()],
    ));
    assert!(stdout.is_empty());
    assert_eq!(view(&out_file).cn, "system:node:worker-1");

    let cases: &[(&str, &str, &[&str], &str)] = &[
        (
            "san",
            WORKER_1,
            &["subjectAltName=DNS:worker-1"],
            "subject alternative names are not permitted",
        ),
        (
            "org",
            "/O=system:masters/CN=system:node:worker-1",
            &[],
            "organization must be exactly",
        ),
        (
            "orgs",
            "/O=system:nodes/O=system:masters/CN=system:node:worker-1",
            &[],
            "organization must be exactly",
        ),
        (
            "cn",
            "/O=system:nodes/CN=worker-1",
            &[],
            "subject CN must be \"system:node:<nodeName>\"",
        ),
        (
            "srv",
            WORKER_1,
            &["extendedKeyUsage=clientAuth,serverAuth"],
            "usage \"server auth\" is not permitted",
        ),
        (
            "ca",
            WORKER_1,
            &["basicConstraints=critical,CA:TRUE"],
            "CA:TRUE",
        ),
    ];
    for (name, subj, ext, rule) in cases {
        let csr = make_csr(d, name, "ec", subj, ext);
        let err = fails(&sign(&c, CLIENT_KUBELET, &csr, &[]));
        assert!(
            err.contains("CSR refused") && err.contains(rule),
            "{name}: {err}"
        );
    }
}

#[test]
fn kubelet_serving_csr() {
    let c = Cluster::initialized();
    let d = c.root();
    let good = make_csr(
        d,
        "good",
        "ec",
        WORKER_1,
        &[
            "subjectAltName=DNS:worker-1,IP:10.0.0.21,IP:fd00::21",
            "keyUsage=critical,digitalSignature",
            "extendedKeyUsage=serverAuth",
        ],
    );
    let crt = issue(&c, SERVING, &good, &[], "serving.crt", "sslserver");
    let v = view(&crt);
    assert_serving_only(&v, &["worker-1"], &["10.0.0.21", "fd00::21"]);
    assert!(
        v.ku_digital_signature && !v.ku_key_encipherment,
        "usages as requested in the CSR"
    );

    let cases: &[(&str, &[&str], &str)] = &[
        (
            "nosan",
            &[],
            "at least one DNS or IP subject alternative name",
        ),
        (
            "email",
            &["subjectAltName=DNS:worker-1,email:a@b.c"],
            "only DNS and IP",
        ),
        (
            "uri",
            &["subjectAltName=DNS:worker-1,URI:spiffe://x/y"],
            "only DNS and IP",
        ),
        (
            "client",
            &["subjectAltName=DNS:worker-1", "extendedKeyUsage=clientAuth"],
            "not permitted",
        ),
        (
            "codesign",
            &[
                "subjectAltName=DNS:worker-1",
                "extendedKeyUsage=serverAuth,codeSigning",
            ],
            "\"code signing\" is not permitted",
        ),
    ];
    for (name, ext, rule) in cases {
        let csr = make_csr(d, name, "ec", WORKER_1, ext);
        let err = fails(&sign(&c, SERVING, &csr, &[]));
        assert!(err.contains(rule), "{name}: {err}");
    }
    // --usages overrides the CSR's request and is checked too.
    let nosan_usage = make_csr(d, "u", "ec", WORKER_1, &["subjectAltName=IP:10.0.0.21"]);
    let err = fails(&sign(
        &c,
        SERVING,
        &nosan_usage,
        &["--usages", "digital signature,client auth"],
    ));
    assert!(err.contains("\"client auth\" is not permitted"), "{err}");
    ok(&sign(
        &c,
        SERVING,
        &nosan_usage,
        &["--usages", "digital signature,key encipherment,server auth"],
    ));
}

#[test]
fn apiserver_client_csr_and_bad_input() {
    let c = Cluster::initialized();
    let d = c.root();
    let good = make_csr(d, "jane", "rsa", "/O=dev/O=ops/CN=jane", &[]);
    let crt = issue(
        &c,
        API_CLIENT,
        &good,
        &["--duration", "24h"],
        "jane.crt",
        "sslclient",
    );
    let v = view(&crt);
    assert_eq!(
        (v.cn.as_str(), v.orgs.clone()),
        ("jane", vec!["dev".to_owned(), "ops".to_owned()])
    );
    assert!((v.not_after - (now() + DAY)).abs() < 120);
    assert!(v.key_is_rsa);

    // As kube-apiserver's CertificateSubjectRestriction admission: no system:masters, in any
    // position among the O values.
    for subj in [
        "/O=system:masters/CN=root",
        "/O=dev/O=system:masters/CN=root",
    ] {
        let m = make_csr(d, "masters", "ec", subj, &[]);
        let err = fails(&sign(&c, API_CLIENT, &m, &[]));
        assert!(
            err.contains("\"system:masters\" is not permitted"),
            "{subj}: {err}"
        );
    }

    // Any number of groups is kept, in order.
    let many = make_csr(d, "many", "rsa", "/O=dev/O=ops/O=sre/O=oncall/CN=jane", &[]);
    let crt = issue(&c, API_CLIENT, &many, &[], "many.crt", "sslclient");
    let v = view(&crt);
    assert_eq!(v.cn, "jane");
    assert_eq!(v.orgs, ["dev", "ops", "sre", "oncall"]);
    assert_eq!(
        openssl_pubkey_of_cert(&crt),
        openssl_pubkey_of_key(&d.join("many.key"))
    );

    // This signer honors SANs of every common kind.
    let sans = make_csr(
        d,
        "sans",
        "ec",
        "/CN=svc-bot",
        &["subjectAltName=DNS:bot.example,email:bot@example.com,URI:spiffe://cluster/bot"],
    );
    let crt = issue(&c, API_CLIENT, &sans, &[], "sans.crt", "sslclient");
    let v = view(&crt);
    assert_eq!(v.dns, vec!["bot.example".to_owned()]);
    assert_eq!(v.other_sans.len(), 2, "{:?}", v.other_sans);
    assert!(
        v.other_sans.iter().any(|s| s.contains("bot@example.com"))
            && v.other_sans
                .iter()
                .any(|s| s.contains("spiffe://cluster/bot"))
    );

    let srv = make_csr(
        d,
        "srv",
        "ec",
        "/CN=jane",
        &["extendedKeyUsage=serverAuth,clientAuth"],
    );
    let err = fails(&sign(&c, API_CLIENT, &srv, &[]));
    assert!(err.contains("\"server auth\" is not permitted"), "{err}");
    let noclient = make_csr(d, "nc", "ec", "/CN=jane", &["keyUsage=digitalSignature"]);
    let err = fails(&sign(&c, API_CLIENT, &noclient, &[]));
    assert!(err.contains("\"client auth\" is required"), "{err}");

    // A P-384 key whose CSR is signed with SHA-256: the certificate must carry the P-384 key.
    let p384 = make_csr(d, "p384", "p384", "/CN=bob", &[]);
    let k384 = d.join("p384.key");
    let crt = issue(&c, API_CLIENT, &p384, &[], "bob.crt", "sslclient");
    assert_eq!(openssl_pubkey_of_cert(&crt), openssl_pubkey_of_key(&k384));

    // Garbage.
    let garbage = save(
        &c,
        "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n",
        "g.csr",
    );
    let err = fails(&sign(&c, API_CLIENT, &garbage, &[]));
    assert!(err.contains("CSR refused"), "{err}");
    let text = save(&c, "hello", "t.csr");
    assert!(fails(&sign(&c, API_CLIENT, &text, &[])).contains("no PEM CERTIFICATE REQUEST"));
    // A CSR whose self-signature does not verify: flip the last byte of the signature.
    let der = d.join("good.der");
    assert!(
        openssl(&[
            "req",
            "-in",
            good.to_str().unwrap(),
            "-outform",
            "DER",
            "-out",
            der.to_str().unwrap()
        ])
        .status
        .success()
    );
    let mut bytes = std::fs::read(&der).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x01;
    std::fs::write(&der, &bytes).unwrap();
    let bad = d.join("bad.csr");
    assert!(
        openssl(&[
            "req",
            "-inform",
            "DER",
            "-in",
            der.to_str().unwrap(),
            "-out",
            bad.to_str().unwrap()
        ])
        .status
        .success()
    );
    let err = fails(&sign(&c, API_CLIENT, &bad, &[]));
    assert!(err.contains("self-signature does not verify"), "{err}");
    // Unknown signer.
    let err = fails(&sign(&c, "example.com/foo", &good, &[]));
    assert!(err.contains("unknown signer"), "{err}");
}
