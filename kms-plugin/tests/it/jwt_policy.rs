//! What the signer agrees to sign, through the real binary: lifetimes within
//! `max_token_expiration`, the required claims, times valid on the signer's clock; verify-only
//! keys checked at startup.

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

fn now() -> i64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("time")
        .as_secs();
    i64::try_from(now).expect("time")
}

fn dated(iat: i64, exp: i64, nbf: Option<i64>) -> String {
    let nbf = nbf.map(|n| format!(r#","nbf":{n}"#)).unwrap_or_default();
    b64(format!(
        r#"{{"iss":"https://kubernetes.default.svc","sub":"system:serviceaccount:default:demo","iat":{iat},"exp":{exp}{nbf}}}"#
    )
    .as_bytes())
}

fn claims(lifetime: u64, drop: &str) -> String {
    let now = now().unsigned_abs();
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_refuses_future_and_past_dated_claims() {
    let temp = tempfile::tempdir().expect("tempdir");
    let dir = temp.path();
    make_sa_key(dir);
    let path = dir.join("signer.yaml");
    std::fs::write(&path, config(dir, "")).expect("config");
    let mut command = Command::new(common::BIN);
    command.args(["serve", "--config"]).arg(&path);
    let mut signer = Signer::spawn(command, dir.join("signer.log"), dir.join("jwt.sock"));
    let mut client = signer.client().await;

    let now = now();
    let ten_years = 10 * 365 * 86_400;
    sign_claims(&mut client, dated(now, now + 600, Some(now)))
        .await
        .expect("a token valid now is signed");
    sign_claims(&mut client, dated(now + 30, now + 630, Some(now + 30)))
        .await
        .expect("a few seconds of skew are tolerated");
    for (what, claims, expected) in [
        (
            "ten years ahead",
            dated(now + ten_years, now + ten_years + 600, None),
            "iat is",
        ),
        (
            "iat two minutes ahead",
            dated(now + 120, now + 600, None),
            "iat is",
        ),
        (
            "nbf ahead",
            dated(now, now + 3600, Some(now + 1800)),
            "nbf is",
        ),
        ("1970", dated(1, 600, None), "in the past"),
        (
            "just expired",
            dated(now - 600, now - 1, None),
            "in the past",
        ),
    ] {
        let error = sign_claims(&mut client, claims).await.expect_err(what);
        assert_eq!(error.code(), tonic::Code::InvalidArgument, "{what}");
        assert!(error.message().contains(expected), "{what}: {error:?}");
    }
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
