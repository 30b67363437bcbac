//! `pki kubelet`: node client and serving credentials and kubelet.conf.
#![allow(clippy::unwrap_used)]

use crate::common;

use std::path::Path;
use std::process::Output;

use common::*;

/// `pki kubelet` for node `node` writing its files to `out_dir`, on `c`'s directories, with
/// `extra` flags.
fn kubelet_into(c: &Cluster, node: &str, out_dir: &Path, extra: &[&str]) -> Output {
    let dir = out_dir.to_str().unwrap();
    c.cmd_with(&["kubelet", "--node-name", node, "--out-dir", dir], extra)
}

#[test]
fn kubelet_credentials_for_a_node() {
    let c = Cluster::initialized();
    let out_dir = c.root().join("kubelet-pki");
    let node_conf_dir = c.root().join("node");
    let mut args: Vec<String> = vec![
        "kubelet".into(),
        "--cert-dir".into(),
        c.pki().to_string_lossy().into(),
        "--kubeconfig-dir".into(),
        node_conf_dir.to_string_lossy().into(),
    ];
    for a in [
        "--node-name",
        "worker-7",
        "--node-ip",
        "10.0.0.7,fd00::7",
        "--hostname",
        "worker-7.example",
        "--server",
        "https://lb:6443",
    ] {
        args.push(a.into());
    }
    args.extend(["--out-dir".into(), out_dir.to_string_lossy().into()]);
    // The files stay where they are written here, so kubelet.conf may reference them there.
    args.extend(["--kubelet-dir".into(), out_dir.to_string_lossy().into()]);
    let out = ok(&run(&args));
    assert!(out.contains("restart kubelet"), "{out}");

    let client = out_dir.join("kubelet-client-current.pem");
    assert_eq!(mode(&client), 0o600);
    // As the kubelet's own store: current is a symlink to a timestamped file.
    assert!(
        std::fs::symlink_metadata(&client)
            .unwrap()
            .file_type()
            .is_symlink()
    );
    let target = std::fs::read_link(&client).unwrap();
    let target = target.to_string_lossy();
    assert!(
        target.starts_with("kubelet-client-20") && target.ends_with(".pem"),
        "{target}"
    );
    assert_eq!(mode(&out_dir.join("kubelet.key")), 0o600);
    assert_eq!(mode(&out_dir.join("kubelet.crt")), 0o644);
    openssl_verify(&c.path("ca.crt"), &client, Some("sslclient"));
    let v = view(&client);
    assert_eq!(v.cn, "system:node:worker-7");
    assert_eq!(v.orgs, vec!["system:nodes".to_owned()]);
    assert!(v.client_auth && !v.server_auth && v.dns.is_empty());
    assert_eq!(
        openssl_pubkey_of_key(&client),
        openssl_pubkey_of_cert(&client),
        "pem holds the matching key"
    );

    let serving = out_dir.join("kubelet.crt");
    openssl_verify(&c.path("ca.crt"), &serving, Some("sslserver"));
    assert_serving_only(
        &view(&serving),
        &["worker-7.example"],
        &["10.0.0.7", "fd00::7"],
    );

    let conf = node_conf_dir.join("kubelet.conf");
    assert_eq!(mode(&conf), 0o600);
    let text = std::fs::read_to_string(&conf).unwrap();
    let y: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text).unwrap();
    assert_eq!(y["clusters"][0]["cluster"]["server"], "https://lb:6443");
    assert_eq!(
        y["users"][0]["user"]["client-certificate"]
            .as_str()
            .unwrap(),
        client.to_str().unwrap()
    );
    assert_eq!(
        y["users"][0]["user"]["client-key"].as_str().unwrap(),
        client.to_str().unwrap()
    );
    assert!(
        !text.contains("client-key-data"),
        "key lives in the rotatable pem file only"
    );
    // check-expiration follows the file reference.
    let table = ok(&run(&[
        "check-expiration".into(),
        "--cert-dir".into(),
        c.pki().to_string_lossy().into(),
        "--kubeconfig-dir".into(),
        node_conf_dir.to_string_lossy().into(),
    ]));
    let row = table
        .lines()
        .find(|l| l.starts_with("kubelet.conf"))
        .unwrap();
    assert!(row.contains("364d"), "{row}");
}

#[test]
fn kubelet_server_defaults_to_admin_conf() {
    let c = Cluster::initialized_with(&["--control-plane-endpoint", "cp.example:7443"]);
    let out_dir = c.root().join("kp");
    ok(&kubelet_into(&c, "w1", &out_dir, &[]));
    let y: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(&std::fs::read_to_string(c.conf("kubelet.conf")).unwrap()).unwrap();
    assert_eq!(
        y["clusters"][0]["cluster"]["server"],
        "https://cp.example:7443"
    );
    assert_eq!(
        view(&out_dir.join("kubelet.crt")).dns,
        vec!["w1".to_owned()],
        "node name is the default SAN"
    );
}

#[test]
fn another_node_never_gets_this_hosts_kubelet_dir() {
    let c = Cluster::initialized();
    let before = std::fs::read(c.conf("kubelet.conf")).unwrap();
    // Without --out-dir the files would land in /var/lib/kubelet/pki: refused for another node.
    let err = fails(&c.cmd(&["kubelet", "--node-name", "surely-not-this-host-4711"]));
    assert_mentions(&err, &["is not this host", "--out-dir"]);
    assert_eq!(std::fs::read(c.conf("kubelet.conf")).unwrap(), before);

    // With --out-dir but this host's kubeconfig directory, kubelet.conf would replace this
    // host's: refused before anything is written.
    let elsewhere = c.root().join("for-w3");
    let err = fails(&run(&[
        "kubelet".into(),
        "--node-name".into(),
        "surely-not-this-host-4711".into(),
        "--cert-dir".into(),
        c.pki().to_string_lossy().into(),
        "--server".into(),
        "https://lb:6443".into(),
        "--out-dir".into(),
        elsewhere.to_string_lossy().into(),
    ]));
    assert_mentions(&err, &["is not this host", "--kubeconfig-dir"]);
    assert!(!elsewhere.exists(), "refused before writing");

    // With --out-dir, kubelet.conf references where the files will be on that node.
    let out_dir = c.root().join("for-w2");
    let node_conf = c.root().join("w2-conf");
    let base = |dir: &std::path::Path| -> Vec<String> {
        vec![
            "kubelet".into(),
            "--node-name".into(),
            "w2".into(),
            "--cert-dir".into(),
            c.pki().to_string_lossy().into(),
            "--kubeconfig-dir".into(),
            dir.to_string_lossy().into(),
            "--server".into(),
            "https://lb:6443".into(),
            "--out-dir".into(),
            out_dir.to_string_lossy().into(),
        ]
    };
    ok(&run(&base(&node_conf)));
    let user = |dir: &std::path::Path| {
        let y: serde_yaml_ng::Value =
            serde_yaml_ng::from_str(&std::fs::read_to_string(dir.join("kubelet.conf")).unwrap())
                .unwrap();
        (
            y["users"][0]["user"]["client-certificate"]
                .as_str()
                .unwrap()
                .to_owned(),
            y["users"][0]["user"]["client-key"]
                .as_str()
                .unwrap()
                .to_owned(),
        )
    };
    let want = "/var/lib/kubelet/pki/kubelet-client-current.pem".to_owned();
    assert_eq!(user(&node_conf), (want.clone(), want));
    assert!(out_dir.join("kubelet-client-current.pem").exists());

    let other_conf = c.root().join("w2-conf-b");
    let mut args = base(&other_conf);
    args.extend(["--kubelet-dir".into(), "/srv/kubelet/pki".into()]);
    ok(&run(&args));
    let want = "/srv/kubelet/pki/kubelet-client-current.pem".to_owned();
    assert_eq!(user(&other_conf), (want.clone(), want));

    let third = c.root().join("w2-conf-c");
    let mut args = base(&third);
    args.extend(["--kubelet-dir".into(), "relative/pki".into()]);
    std::fs::remove_dir_all(&out_dir).unwrap();
    assert!(fails(&run(&args)).contains("absolute"));
    assert!(
        !out_dir.exists() && !third.exists(),
        "refused before writing"
    );
}

/// Every file below `dir` (recursively) with its content and mode, sorted.
fn tree(dir: &std::path::Path) -> Vec<(std::path::PathBuf, Vec<u8>, u32)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let meta = std::fs::symlink_metadata(&p).unwrap();
            if meta.is_dir() {
                stack.push(p);
            } else {
                let (body, bits) = if meta.file_type().is_symlink() {
                    let target = std::fs::read_link(&p).unwrap();
                    (target.into_os_string().into_encoded_bytes(), 0)
                } else {
                    (std::fs::read(&p).unwrap(), mode(&p))
                };
                out.push((p, body, bits));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn dry_run_leaves_every_byte_in_place() {
    let c = Cluster::initialized();
    let out_dir = c.root().join("kp");
    let kubelet = |extra: &[&str]| {
        kubelet_into(
            &c,
            "w3",
            &out_dir,
            &[&["--server", "https://lb:6443"], extra].concat(),
        )
    };
    // First onto an empty out dir: everything would be created.
    let before = tree(c.root());
    let out = ok(&kubelet(&["--dry-run"]));
    assert_eq!(tree(c.root()), before, "dry run wrote: {out}");
    assert!(!out_dir.exists());
    let want = format!(
        "[dry-run] would create {}",
        out_dir.join("kubelet.crt").display()
    );
    assert!(out.contains(&want), "{out}");
    assert_mentions(&out, &["would change", "kubelet.conf"]);
    // Then over real credentials: they would change, and stay as they are.
    ok(&kubelet(&[]));
    let before = tree(c.root());
    let out = ok(&kubelet(&["--dry-run"]));
    assert_eq!(tree(c.root()), before, "dry run wrote: {out}");
    let want = format!(
        "[dry-run] would change {}",
        out_dir.join("kubelet.key").display()
    );
    assert!(out.contains(&want), "{out}");
    assert!(!out.contains(".pki-dry-run"), "scratch paths leak: {out}");
}
