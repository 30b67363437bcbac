//! What the signer agrees to sign, through the real binary: lifetimes within
//! `max_token_expiration`, the required claims; verify-only keys checked at startup.

use crate::common;

use common::jwt::{Signer, b64, make_ec_key, openssl, sign_claims};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

fn config(dir: &Path, verify_only: &str) -> String {
    format!(
        "jwt_signer:\n  socket: {}\n  max_token_expiration: 1h\n  key: {{ kind: local, local: {{ key_file: {} }} }}\n  verify_only_keys: [{verify_only}]\n",
        dir.join("jwt.sock").display(),
        dir.join("sa.key").display()
    )
}

fn make_sa_key(dir: &Path) {
    make_ec_key(&dir.join("sa.key"), "prime256v1");
}

fn claims(lifetime: u64, drop: &str) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("time")
        .as_secs();
    let mut fields = vec![
        r#""iss":"https://kubernetes.default.svc""#.to_owned(),
        r#""sub":"system:serviceaccount:default:demo""#.to_owned(),
        format!(r#""iat":{now}"#),
        format!(r#""exp":{}"#, now + lifetime),
    ];
    fields.retain(|f| !f.starts_with(&format!("\"{drop}\"")));
    b64(format!("{{{}}}", fields.join(",")).as_bytes())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_refuses_long_lifetimes_and_missing_claims() {
    let temp = tempfile::tempdir().expect("tempdir");
    let dir = temp.path();
    make_sa_key(dir);
    let path = dir.join("signer.yaml");
    std::fs::write(&path, config(dir, "")).expect("config");
    let mut command = Command::new(common::BIN);
    command.args(["serve", "--config"]).arg(&path);
    let mut signer = Signer::spawn(command, dir.join("signer.log"), dir.join("jwt.sock"));
    let mut client = signer.client().await;

    sign_claims(&mut client, claims(3600, ""))
        .await
        .expect("exactly the maximum is signed");
    let error = sign_claims(&mut client, claims(3601, ""))
        .await
        .expect_err("one second too long");
    assert_eq!(error.code(), tonic::Code::InvalidArgument);
    assert!(
        error.message().contains("max_token_expiration"),
        "{error:?}"
    );
    for drop in ["iss", "sub", "exp", "iat"] {
        let error = sign_claims(&mut client, claims(600, drop))
            .await
            .expect_err(drop);
        assert_eq!(error.code(), tonic::Code::InvalidArgument, "{drop}");
        assert!(error.message().contains(drop), "{drop}: {error:?}");
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        signer.logs().contains("exceeds max_token_expiration"),
        "{}",
        signer.logs()
    );
}

#[test]
fn bad_verify_only_keys_are_refused_at_startup_with_their_file() {
    let temp = tempfile::tempdir().expect("tempdir");
    let dir = temp.path();
    make_sa_key(dir);
    let garbage = dir.join("garbage.pub");
    std::fs::write(
        &garbage,
        "-----BEGIN PUBLIC KEY-----\nAAECAwQFBgcICQ==\n-----END PUBLIC KEY-----\n",
    )
    .expect("write");
    let weak_key = dir.join("weak.key");
    openssl(&["genrsa", "-out", weak_key.to_str().expect("utf-8"), "1024"]);
    let weak = dir.join("weak.pub");
    std::fs::write(
        &weak,
        openssl(&["pkey", "-in", weak_key.to_str().expect("utf-8"), "-pubout"]),
    )
    .expect("write");
    for file in [&garbage, &weak] {
        let path = dir.join("bad.yaml");
        let stderr = common::refused_config(&path, &config(dir, &file.display().to_string()));
        assert!(
            stderr.contains(&file.display().to_string())
                && stderr.contains("at least 2048 bits nor a P-256"),
            "{stderr}"
        );
    }
}
