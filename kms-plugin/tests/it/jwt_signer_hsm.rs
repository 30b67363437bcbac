//! The service-account token signer with its key in a real SoftHSM2 token, through the real
//! binary: `kms-plugin jwt-signer init-key` creates the key, `kms-plugin serve` signs with it,
//! and independent tools check the result (openssl parses the published key, Python
//! `cryptography` verifies the tokens). Each test starts from a fresh token in a temp directory.
//! Needs SoftHSM2: `bash .ci/provision-softhsm.sh`.
#![cfg(feature = "pkcs11")]

use crate::common;

use common::jwt::{Client, Signer, assert_es256_token, b64, b64_decode, openssl, sign, verify};
use common::softhsm::{Hsm, MODULE, TOKEN_LABEL};
use sha2::{Digest, Sha256};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const KEY_LABEL: &str = "sa-signer";
/// Distinctive, so a leak into the logs cannot be a coincidence.
const PIN: &str = "pin-Qx7Wm3";
/// The signer's own deadline for one signature (service.rs) plus slack.
const SIGN_DEADLINE: Duration = Duration::from_secs(6);

/// A fresh SoftHSM2 token in a temp directory ([`Hsm`]) and a plugin configuration (signer
/// only, key in the token).
struct World {
    dir: tempfile::TempDir,
    hsm: Hsm,
    config: PathBuf,
}

impl World {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let hsm = Hsm::with_pin(dir.path(), PIN);
        let config = dir.path().join("signer.yaml");
        fs::write(
            &config,
            format!(
                "log_level: \"info,kms_plugin::jwt::remote=debug\"\njwt_signer:\n  socket: {socket}\n  max_token_expiration: 24h\n  key:\n    kind: pkcs11\n    \
                 pkcs11:\n      module: {MODULE}\n      token_label: {TOKEN_LABEL}\n      pin_file: {pin}\n      \
                 key_label: {KEY_LABEL}\n      max_sessions: 4\n",
                socket = dir.path().join("jwt.sock").display(),
                pin = dir.path().join("pin").display(),
            ),
        )
        .expect("config");
        Self { dir, hsm, config }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn command(&self) -> Command {
        let mut command = Command::new(common::BIN);
        command.envs(self.hsm.env());
        command
    }

    /// `kms-plugin jwt-signer init-key`: the printed line and the kid in it.
    fn init_key(&self) -> (String, String) {
        let config = self.config.to_str().expect("utf-8");
        let stdout = self
            .hsm
            .cli(&["jwt-signer", "init-key", "--config", config])
            .trim()
            .to_owned();
        let kid = stdout
            .rsplit_once("kid ")
            .map(|(_, kid)| kid.to_owned())
            .unwrap_or_else(|| panic!("no kid printed: {stdout}"));
        (stdout, kid)
    }

    fn serve(&self, log_name: &str) -> Signer {
        let mut command = self.command();
        command.args(["serve", "--config"]).arg(&self.config);
        Signer::spawn(command, self.path(log_name), self.path("jwt.sock"))
    }
}

/// The one published key, in OIDC discovery: kid and DER.
async fn published(client: &mut Client) -> (String, Vec<u8>) {
    let key = common::jwt::published(client).await;
    assert!(!key.exclude_from_oidc_discovery);
    (key.key_id, key.key)
}

/// openssl parses `der` as a P-256 public key; returns kube-apiserver's kid computed over
/// openssl's own DER encoding of that key.
fn openssl_kid(dir: &Path, der: &[u8]) -> String {
    let file = dir.join("openssl-in.der");
    fs::write(&file, der).expect("write der");
    let path = file.to_str().expect("utf-8");
    let text = String::from_utf8(openssl(&[
        "pkey", "-pubin", "-inform", "DER", "-in", path, "-text", "-noout",
    ]))
    .expect("utf-8");
    assert!(text.contains("Public-Key: (256 bit)"), "{text}");
    assert!(text.contains("ASN1 OID: prime256v1"), "{text}");
    assert!(text.contains("NIST CURVE: P-256"), "{text}");
    let reencoded = openssl(&[
        "pkey", "-pubin", "-inform", "DER", "-in", path, "-outform", "DER",
    ]);
    assert_eq!(
        reencoded, der,
        "the published DER is the canonical SubjectPublicKeyInfo"
    );
    b64(&Sha256::digest(&reencoded))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn init_key_then_tokens_verify_independently() {
    let world = World::new();

    // Before init-key, serve refuses clearly.
    let out = testkit::expect_failure(
        world
            .command()
            .args(["serve", "--config"])
            .arg(&world.config),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("no EC private key labelled") && stderr.contains("jwt-signer init-key"),
        "{stderr}"
    );

    let (line, kid) = world.init_key();
    assert!(line.starts_with("signing key created"), "{line}");
    let (again, same_kid) = world.init_key();
    assert!(again.starts_with("signing key already present"), "{again}");
    assert_eq!(same_kid, kid, "init-key is idempotent");

    let mut signer = world.serve("serve.log");
    let mut client = signer.client().await;
    let (published_kid, der) = published(&mut client).await;
    assert_eq!(
        published_kid, kid,
        "FetchKeys publishes the kid init-key printed"
    );
    assert_eq!(
        openssl_kid(world.dir.path(), &der),
        kid,
        "kid equals kube-apiserver's computation over openssl's encoding"
    );

    // Concurrent Signs share the session pool; every token verifies independently.
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let mut client = client.clone();
        tasks.push(tokio::spawn(async move { sign(&mut client).await }));
    }
    for task in tasks {
        let token = task.await.expect("task").expect("Sign");
        assert_es256_token(world.dir.path(), &token, &kid, &der);
        let signature = b64_decode(token.rsplit('.').next().expect("signature"));
        assert_eq!(signature.len(), 64, "JWS ES256 is r || s");
    }

    // A tampered token fails the same check.
    let token = sign(&mut client).await.expect("Sign");
    let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
    parts[1] = b64(br#"{"sub":"system:serviceaccount:kube-system:admin"}"#);
    assert!(verify(world.dir.path(), &parts.join("."), &der).is_err());

    // SIGHUP re-opens the key (a second login on the same module) and keeps signing.
    common::signal_pid(signer.child.id(), "HUP");
    let deadline = Instant::now() + Duration::from_secs(5);
    while signer.logs().matches("find_signing_key").count() < 2 {
        assert!(
            Instant::now() < deadline,
            "SIGHUP did not re-open the key:\n{}",
            signer.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for _ in 0..3 {
        let token = sign(&mut client).await.expect("Sign after SIGHUP");
        assert_eq!(
            verify(world.dir.path(), &token, &der),
            Ok("valid ES256".to_owned())
        );
    }
    assert_eq!(published(&mut client).await.0, kid);

    let logs = signer.logs();
    assert!(logs.contains("service-account signing key ready"), "{logs}");
    assert!(
        !logs.contains("keeping the current"),
        "the reload failed: {logs}"
    );
    assert!(!logs.contains(PIN), "the PIN reached the log");
}

/// The token disappears while serving (its directory leaves SoftHSM's tokendir, as when an HSM
/// is unplugged or unreachable): Sign fails within its deadline, FetchKeys keeps answering, and
/// signing resumes once the token is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_loss_fails_sign_in_time_and_recovers() {
    let world = World::new();
    let (_, kid) = world.init_key();
    let mut signer = world.serve("fault.log");
    let mut client = signer.client().await;
    let (_, der) = published(&mut client).await;
    let before = sign(&mut client).await.expect("Sign before the loss");

    world.hsm.remove_token();
    for attempt in 0..3 {
        let started = Instant::now();
        let error = sign(&mut client).await.expect_err("the token is gone");
        let took = started.elapsed();
        assert!(
            matches!(
                error.code(),
                tonic::Code::Unavailable | tonic::Code::Internal
            ),
            "attempt {attempt}: {error:?}"
        );
        assert!(
            took < SIGN_DEADLINE,
            "attempt {attempt}: Sign failed only after {took:?}"
        );
        println!("Sign without the token: {:?} after {took:?}", error.code());
    }
    assert_eq!(
        published(&mut client).await.0,
        kid,
        "FetchKeys answers from memory"
    );

    world.hsm.return_token();
    let deadline = Instant::now() + Duration::from_secs(10);
    let after = loop {
        match sign(&mut client).await {
            Ok(token) => break token,
            Err(error) => {
                assert!(
                    Instant::now() < deadline,
                    "no recovery: {error:?}\n{}",
                    signer.logs()
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    for token in [&before, &after] {
        assert_eq!(
            verify(world.dir.path(), token, &der),
            Ok("valid ES256".to_owned())
        );
    }
    let logs = signer.logs();
    assert!(logs.contains("PKCS#11 session lost"), "{logs}");
    assert!(!logs.contains(PIN), "the PIN reached the log");
}
