//! The external service-account token signer through the real binary, checked by independent
//! verifiers (openssl for key ids, Python `cryptography` for signatures).

use crate::common;

use common::jwt::{Client, Signer, b64, header, header_kid, make_ec_key, openssl};
use kms_config::SocketAddress;
use kms_proto::externaljwt_v1::{FetchKeysRequest, MetadataRequest, SignJwtRequest};
use kms_proto::externaljwt_v1alpha1::external_jwt_signer_client::ExternalJwtSignerClient as AlphaClient;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// Writes a kubeadm-style key: RSA PKCS#1 (`RSA PRIVATE KEY`) or EC SEC1 (`EC PRIVATE KEY`).
fn make_key(path: &Path, kind: &str) {
    let rsa = |bits| {
        let p = path.to_str().expect("utf-8");
        openssl(&["genrsa", "-traditional", "-out", p, bits]);
        common::jwt::owner_only(path);
    };
    match kind {
        "rsa" => rsa("2048"),
        "ec" => make_ec_key(path, "prime256v1"),
        "ec384" => make_ec_key(path, "secp384r1"),
        "rsa1024" => rsa("1024"),
        other => panic!("{other}"),
    }
}

/// kube-apiserver's kid, computed from openssl's DER encoding of the public key.
fn openssl_kid(key: &Path) -> (String, Vec<u8>) {
    let der = openssl(&[
        "pkey",
        "-in",
        key.to_str().expect("utf-8"),
        "-pubout",
        "-outform",
        "DER",
    ]);
    (b64(&Sha256::digest(&der)), der)
}

fn public_pem(key: &Path) -> Vec<u8> {
    openssl(&["pkey", "-in", key.to_str().expect("utf-8"), "-pubout"])
}

fn config_text(dir: &Path, key_file: &Path, verify_only: &[String]) -> String {
    format!(
        "jwt_signer:\n  socket: {}\n  max_token_expiration: 24h\n  poll_interval: 100ms\n  refresh_hint: 30s\n  key:\n    kind: local\n    local: {{ key_file: {} }}\n  verify_only_keys: [{}]\n",
        dir.join("jwt.sock").display(),
        key_file.display(),
        verify_only.join(", ")
    )
}

/// Starts `kms-plugin serve` with `config`; returns it and a client once it listens.
async fn start(dir: &Path, config: &str) -> (Signer, Client) {
    let config_path = dir.join("signer.yaml");
    std::fs::write(&config_path, config).expect("config");
    let mut command = Command::new(common::BIN);
    command.args(["serve", "--config"]).arg(&config_path);
    let mut signer = Signer::spawn(command, dir.join("signer.log"), dir.join("jwt.sock"));
    let client = signer.client().await;
    (signer, client)
}

async fn sign(client: &mut Client) -> String {
    common::jwt::sign(client).await.expect("sign")
}

/// Verifies `token` independently against the key FetchKeys publishes under its kid.
async fn verify(client: &mut Client, dir: &Path, token: &str) -> Result<String, String> {
    let kid = header_kid(token);
    let keys = common::jwt::fetch_keys(client).await;
    let key = keys
        .iter()
        .find(|k| k.key_id == kid)
        .ok_or_else(|| format!("kid {kid} not published"))?;
    common::jwt::verify(dir, token, &key.key)
}

async fn wait_for_keys(client: &mut Client, check: impl Fn(&[String]) -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        let keys = client
            .fetch_keys(FetchKeysRequest {})
            .await
            .expect("fetch")
            .into_inner();
        let kids: Vec<String> = keys.keys.iter().map(|k| k.key_id.clone()).collect();
        if check(&kids) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_verify_independently_for_rsa_and_ecdsa_keys() {
    for (kind, alg) in [("rsa", "RS256"), ("ec", "ES256"), ("ec384", "ES384")] {
        let temp = tempfile::tempdir().expect("tempdir");
        let key = temp.path().join("sa.key");
        make_key(&key, kind);
        let (signer, mut client) = start(temp.path(), &config_text(temp.path(), &key, &[])).await;

        let metadata = client
            .metadata(MetadataRequest {})
            .await
            .expect("metadata")
            .into_inner();
        assert_eq!(metadata.max_token_expiration_seconds, 86_400);

        let keys = client
            .fetch_keys(FetchKeysRequest {})
            .await
            .expect("fetch")
            .into_inner();
        let (expected_kid, expected_der) = openssl_kid(&key);
        assert_eq!(keys.keys.len(), 1);
        assert_eq!(
            keys.keys[0].key_id, expected_kid,
            "kid equals kube-apiserver's computation"
        );
        assert_eq!(keys.keys[0].key, expected_der, "PKIX DER public key");
        assert!(!keys.keys[0].exclude_from_oidc_discovery);
        assert_eq!(keys.refresh_hint_seconds, 30);
        assert!(keys.data_timestamp.is_some_and(|t| t.seconds > 0));

        let token = sign(&mut client).await;
        assert_eq!(
            header(&token),
            format!(r#"{{"alg":"{alg}","kid":"{expected_kid}","typ":"JWT"}}"#)
        );
        assert_eq!(
            verify(&mut client, temp.path(), &token).await,
            Ok(format!("valid {alg}"))
        );

        // A tampered token fails the same independent check.
        let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
        parts[1] = b64(br#"{"sub":"system:serviceaccount:kube-system:admin"}"#);
        assert!(
            verify(&mut client, temp.path(), &parts.join("."))
                .await
                .is_err()
        );

        // The v1alpha1 package (kube-apiserver 1.32–1.35) answers the same way.
        let channel = kms_plugin::client::channel(
            &SocketAddress::Path(signer.socket.clone()),
            Duration::from_secs(5),
        )
        .await
        .expect("connect");
        let mut alpha = AlphaClient::new(channel);
        let reply = alpha
            .sign(kms_proto::externaljwt_v1alpha1::SignJwtRequest {
                claims: common::jwt::claims(),
            })
            .await
            .expect("alpha sign")
            .into_inner();
        assert_eq!(reply.header, token.split('.').next().expect("header"));

        // Garbage claims are refused with a clear error.
        for bad in ["", "not base64url!", "a.b"] {
            let error = client
                .sign(SignJwtRequest { claims: bad.into() })
                .await
                .expect_err(bad);
            assert_eq!(error.code(), tonic::Code::InvalidArgument);
        }
        let logs = signer.logs();
        let key_pem = std::fs::read_to_string(&key).expect("key");
        let body: String = key_pem
            .lines()
            .filter(|l| !l.starts_with("-----"))
            .collect();
        assert!(
            !logs.contains(&body[..40]),
            "private key material in the log"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_overlap_keeps_unexpired_tokens_valid() {
    let temp = tempfile::tempdir().expect("tempdir");
    let dir = temp.path();
    let (old_key, new_key) = (dir.join("old.key"), dir.join("new.key"));
    make_key(&old_key, "rsa");
    make_key(&new_key, "ec");
    let sa_key = dir.join("sa.key");
    let sa_pub = dir.join("sa.pub");
    std::fs::copy(&old_key, &sa_key).expect("copy");
    std::fs::write(&sa_pub, public_pem(&old_key)).expect("pub");
    let legacy_key = dir.join("legacy.key");
    make_key(&legacy_key, "ec");
    std::fs::write(dir.join("legacy.pub"), public_pem(&legacy_key)).expect("legacy");
    let verify_only = [
        sa_pub.display().to_string(),
        format!(
            "{{ path: {}, exclude_from_oidc_discovery: true }}",
            dir.join("legacy.pub").display()
        ),
    ];
    let (_signer, mut client) = start(dir, &config_text(dir, &sa_key, &verify_only)).await;
    let (old_kid, _) = openssl_kid(&old_key);
    let (new_kid, _) = openssl_kid(&new_key);
    let (legacy_kid, _) = openssl_kid(&legacy_key);

    let keys = client
        .fetch_keys(FetchKeysRequest {})
        .await
        .expect("fetch")
        .into_inner();
    assert_eq!(
        keys.keys.len(),
        2,
        "the signer plus the legacy key; sa.pub repeats the signer"
    );
    let legacy = keys
        .keys
        .iter()
        .find(|k| k.key_id == legacy_kid)
        .expect("legacy published");
    assert!(
        legacy.exclude_from_oidc_discovery,
        "legacy keys stay out of OIDC discovery"
    );
    let before = sign(&mut client).await;

    // start: sa.pub publishes old and new; the old key still signs.
    let mut both = public_pem(&old_key);
    both.extend(public_pem(&new_key));
    std::fs::write(&sa_pub, &both).expect("bundle");
    assert!(
        wait_for_keys(&mut client, |kids| kids.contains(&new_kid)).await,
        "new key published before it signs"
    );
    assert_eq!(
        header_kid(&sign(&mut client).await),
        old_kid,
        "the old key signs until switch"
    );

    // switch: the new key signs; tokens signed before still verify.
    std::fs::copy(&new_key, &sa_key).expect("switch");
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut after = sign(&mut client).await;
    while header_kid(&after) != new_kid {
        assert!(Instant::now() < deadline, "signer never switched");
        tokio::time::sleep(Duration::from_millis(100)).await;
        after = sign(&mut client).await;
    }
    assert_eq!(
        verify(&mut client, dir, &after).await,
        Ok("valid ES256".to_owned())
    );
    assert_eq!(
        verify(&mut client, dir, &before).await,
        Ok("valid RS256".to_owned()),
        "pre-switch token still verifies"
    );

    // finish: the old public key leaves the bundle; old tokens stop verifying.
    std::fs::write(&sa_pub, public_pem(&new_key)).expect("finish");
    assert!(wait_for_keys(&mut client, |kids| !kids.contains(&old_kid)).await);
    assert!(verify(&mut client, dir, &before).await.is_err());
    assert_eq!(
        verify(&mut client, dir, &after).await,
        Ok("valid ES256".to_owned())
    );
}

#[test]
fn bad_configuration_is_refused_with_a_clear_error() {
    let temp = tempfile::tempdir().expect("tempdir");
    let dir = temp.path();
    let weak = dir.join("weak.key");
    make_key(&weak, "rsa1024");
    let good = dir.join("good.key");
    make_key(&good, "ec");
    let shared = dir.join("shared.key");
    make_key(&shared, "ec");
    std::fs::set_permissions(&shared, std::os::unix::fs::PermissionsExt::from_mode(0o644))
        .expect("chmod");
    let cases = [
        (
            config_text(dir, &shared, &[]),
            "shared.key: the signing key file is accessible to group or others (mode 644)",
        ),
        (
            config_text(dir, &dir.join("missing.key"), &[]),
            "missing.key",
        ),
        (config_text(dir, &weak, &[]), "RSA ≥ 2048 bits"),
        (
            config_text(dir, &good, &[]).replace("24h", "5m"),
            "at least 10m",
        ),
        (
            config_text(dir, &good, &[dir.join("nothing.pub").display().to_string()]),
            "nothing.pub",
        ),
    ];
    for (config, expected) in cases {
        let path = dir.join("bad.yaml");
        let stderr = common::refused_config(&path, &config);
        assert!(
            stderr.contains(expected),
            "expected {expected:?} in {stderr}"
        );
    }
}

/// The `pki` binary, built beside this one by `cargo test --workspace` / `tests/run.sh`.
fn pki_binary() -> PathBuf {
    let path = Path::new(common::BIN).with_file_name("pki");
    assert!(
        path.exists(),
        "{} is missing: build the workspace first (`cargo build --workspace`)",
        path.display()
    );
    path
}

fn pki(args: &[&str], cert_dir: &Path, kubeconfig_dir: &Path) {
    testkit::expect_success(
        Command::new(pki_binary())
            .args(args)
            .arg("--cert-dir")
            .arg(cert_dir)
            .arg("--kubeconfig-dir")
            .arg(kubeconfig_dir),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pki_rotate_sa_drives_the_signer_online() {
    let temp = tempfile::tempdir().expect("tempdir");
    let dir = temp.path();
    let (cert_dir, kubeconfig_dir) = (dir.join("pki"), dir.join("kubeconfigs"));
    pki(
        &[
            "init",
            "--node-name",
            "cp-1",
            "--apiserver-advertise-address",
            "10.0.0.10",
            "--encryption-algorithm",
            "ECDSA-P256",
        ],
        &cert_dir,
        &kubeconfig_dir,
    );
    let sa_key = cert_dir.join("sa.key");
    let sa_pub = cert_dir.join("sa.pub");
    let (_signer, mut client) = start(
        dir,
        &config_text(dir, &sa_key, &[sa_pub.display().to_string()]),
    )
    .await;
    let (old_kid, _) = openssl_kid(&sa_key);
    let before = sign(&mut client).await;
    assert_eq!(
        header_kid(&before),
        old_kid,
        "the signer's kid equals kube-apiserver's for sa.key"
    );

    pki(&["rotate", "sa", "start"], &cert_dir, &kubeconfig_dir);
    assert!(
        wait_for_keys(&mut client, |kids| kids.len() == 2).await,
        "start publishes the new key"
    );
    assert_eq!(
        header_kid(&sign(&mut client).await),
        old_kid,
        "start keeps signing with the old key"
    );

    pki(
        &["rotate", "sa", "switch", "--confirm-nodes"],
        &cert_dir,
        &kubeconfig_dir,
    );
    let (new_kid, _) = openssl_kid(&sa_key);
    assert_ne!(new_kid, old_kid);
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut after = sign(&mut client).await;
    while header_kid(&after) != new_kid {
        assert!(
            Instant::now() < deadline,
            "the signer never picked up the switched key"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
        after = sign(&mut client).await;
    }
    assert_eq!(
        verify(&mut client, dir, &before).await,
        Ok("valid ES256".to_owned()),
        "a pre-switch token still verifies"
    );
    assert_eq!(
        verify(&mut client, dir, &after).await,
        Ok("valid ES256".to_owned())
    );

    pki(
        &["rotate", "sa", "finish", "--force"],
        &cert_dir,
        &kubeconfig_dir,
    );
    assert!(
        wait_for_keys(&mut client, |kids| kids == [new_kid.clone()]).await,
        "finish retires the old key"
    );
    assert!(verify(&mut client, dir, &before).await.is_err());
    assert_eq!(
        verify(&mut client, dir, &after).await,
        Ok("valid ES256".to_owned())
    );
}

/// A signer-only plugin serves `metrics_address`: its calls by method and status code, the key
/// set it publishes and the process metrics, in a form promtool accepts; `/readyz` is ok.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signer_only_plugin_serves_metrics_promtool_accepts() {
    let temp = tempfile::tempdir().expect("tempdir");
    let dir = temp.path();
    let key = dir.join("sa.key");
    make_key(&key, "ec");
    let port = common::free_port();
    let config = format!(
        "metrics_address: 127.0.0.1:{port}\n{}",
        config_text(dir, &key, &[])
    );
    let (_signer, mut client) = start(dir, &config).await;
    sign(&mut client).await;
    client
        .sign(SignJwtRequest {
            claims: "not base64url!".into(),
        })
        .await
        .expect_err("refused claims");
    client.fetch_keys(FetchKeysRequest {}).await.expect("fetch");
    client.metadata(MetadataRequest {}).await.expect("metadata");
    let series = |method: &str, code: &str| {
        common::metric(
            port,
            &format!(
                "kms_plugin_signer_operations_latency_seconds_count{{method_name=\"{method}\",grpc_status_code=\"{code}\"}}"
            ),
        )
    };
    assert_eq!(series("Sign", "OK"), 1.0);
    assert_eq!(series("Sign", "InvalidArgument"), 1.0);
    assert!(series("FetchKeys", "OK") >= 1.0);
    assert_eq!(series("Metadata", "OK"), 1.0);
    assert_eq!(
        common::metric(port, "kms_plugin_signer_published_keys"),
        1.0
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs_f64();
    let loaded = common::metric(port, "kms_plugin_signer_key_set_timestamp_seconds");
    assert!(
        loaded <= now + 1.0 && loaded > now - 120.0,
        "{loaded} vs {now}"
    );
    let (code, body) = common::http_get(port, "/metrics");
    assert_eq!(code, 200);
    assert!(
        !body.contains("kms_plugin_root_key"),
        "no KMS side here:\n{body}"
    );
    assert!(body.contains("\nprocess_open_fds "), "{body}");
    common::assert_promtool_accepts(&body, dir);
    assert_eq!(common::http_get(port, "/readyz").0, 200);
    // `kms-plugin status` understands the signer's socket (grpc.health.v1).
    for live in [false, true] {
        let mut status = common::status_command(dir.join("jwt.sock"));
        if live {
            status.arg("--live");
        }
        let out = testkit::expect_success(&mut status);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains("grpc.health.v1") && text.contains("healthz: ok"),
            "{text}"
        );
    }
}
