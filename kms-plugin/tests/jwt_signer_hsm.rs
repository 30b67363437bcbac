//! The service-account token signer with its key in a real SoftHSM2 token, through the real
//! binary: `kms-plugin jwt-signer init-key` creates the key, `kms-plugin serve` signs with it,
//! and independent tools check the result (openssl parses the published key, Python
//! `cryptography` verifies the tokens). Each test starts from a fresh token in a temp directory.
//! Needs SoftHSM2: `bash .ci/provision-softhsm.sh`.
#![cfg(feature = "pkcs11")]

use base64::Engine;
use kms_config::SocketAddress;
use kms_proto::externaljwt_v1::external_jwt_signer_client::ExternalJwtSignerClient;
use kms_proto::externaljwt_v1::{FetchKeysRequest, SignJwtRequest};
use sha2::{Digest, Sha256};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tonic::transport::Channel;

const MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";
const TOKEN_LABEL: &str = "jwt";
const KEY_LABEL: &str = "sa-signer";
/// Distinctive, so a leak into the logs cannot be a coincidence.
const PIN: &str = "pin-Qx7Wm3";
const SO_PIN: &str = "so-8Lk2Pz";
const VERIFIER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/jwt_verify.py");
/// The signer's own deadline for one signature (service.rs) plus slack.
const SIGN_DEADLINE: Duration = Duration::from_secs(6);

type Client = ExternalJwtSignerClient<Channel>;

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn b64_decode(text: &str) -> Vec<u8> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(text)
        .expect("base64url")
}

/// A fresh SoftHSM2 token in a temp directory, with its own config file, PIN file and plugin
/// configuration (signer only, key in the token).
struct Hsm {
    dir: tempfile::TempDir,
    conf: PathBuf,
    tokens: PathBuf,
    config: PathBuf,
}

impl Hsm {
    fn new() -> Self {
        let tool = Command::new("softhsm2-util").arg("--version").output();
        assert!(
            tool.is_ok_and(|out| out.status.success()) && Path::new(MODULE).exists(),
            "SoftHSM2 is not installed (softhsm2-util and {MODULE} are needed): run \
             `bash .ci/provision-softhsm.sh` (apt-get install -y softhsm2) before these tests"
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let tokens = dir.path().join("tokens");
        fs::create_dir(&tokens).expect("token dir");
        let conf = dir.path().join("softhsm2.conf");
        fs::write(
            &conf,
            format!(
                "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n",
                tokens.display()
            ),
        )
        .expect("softhsm conf");
        let pin_file = dir.path().join("pin");
        fs::write(&pin_file, format!("{PIN}\n")).expect("pin file");
        let out = Command::new("softhsm2-util")
            .args(["--init-token", "--free", "--label", TOKEN_LABEL])
            .args(["--pin", PIN, "--so-pin", SO_PIN])
            .env("SOFTHSM2_CONF", &conf)
            .output()
            .expect("softhsm2-util");
        assert!(
            out.status.success(),
            "init-token failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let config = dir.path().join("signer.yaml");
        fs::write(
            &config,
            format!(
                "log_level: \"info,kms_plugin::root_key::remote=debug\"\njwt_signer:\n  socket: {socket}\n  max_token_expiration: 24h\n  key:\n    kind: pkcs11\n    \
                 pkcs11:\n      module: {MODULE}\n      token_label: {TOKEN_LABEL}\n      pin_file: {pin}\n      \
                 key_label: {KEY_LABEL}\n      max_sessions: 4\n",
                socket = dir.path().join("jwt.sock").display(),
                pin = pin_file.display(),
            ),
        )
        .expect("config");
        Self {
            dir,
            conf,
            tokens,
            config,
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn command(&self) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_kms-plugin"));
        command.env("SOFTHSM2_CONF", &self.conf);
        command
    }

    /// `kms-plugin jwt-signer init-key`: the printed line and the kid in it.
    fn init_key(&self) -> (String, String) {
        let out = self
            .command()
            .args(["jwt-signer", "init-key", "--config"])
            .arg(&self.config)
            .output()
            .expect("kms-plugin");
        let stdout = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        assert!(
            out.status.success(),
            "init-key failed: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let kid = stdout
            .rsplit_once("kid ")
            .map(|(_, kid)| kid.to_owned())
            .unwrap_or_else(|| panic!("no kid printed: {stdout}"));
        (stdout, kid)
    }

    fn serve(&self, log_name: &str) -> Signer {
        let log = self.path(log_name);
        let child = self
            .command()
            .args(["serve", "--config"])
            .arg(&self.config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(&log).expect("log"))
            .spawn()
            .expect("spawn kms-plugin");
        Signer {
            child,
            log,
            socket: self.path("jwt.sock"),
        }
    }
}

/// A running `kms-plugin serve`; killed on drop.
struct Signer {
    child: Child,
    log: PathBuf,
    socket: PathBuf,
}

impl Signer {
    fn logs(&self) -> String {
        // Informational lines reach stderr within the plugin's 100 ms flush interval.
        std::thread::sleep(std::time::Duration::from_millis(250));
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    async fn client(&mut self) -> Client {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                panic!("kms-plugin exited with {status}:\n{}", self.logs());
            }
            if self.socket.exists()
                && let Ok(channel) = kms_plugin::client::channel(
                    &SocketAddress::Path(self.socket.clone()),
                    Duration::from_secs(5),
                )
                .await
            {
                return ExternalJwtSignerClient::new(channel);
            }
            assert!(
                Instant::now() < deadline,
                "the signer did not listen in time:\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Signer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn claims() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("time")
        .as_secs();
    b64(format!(
        r#"{{"iss":"https://kubernetes.default.svc","sub":"system:serviceaccount:default:demo","aud":["api"],"iat":{now},"exp":{}}}"#,
        now + 3600
    )
    .as_bytes())
}

async fn sign(client: &mut Client) -> Result<String, tonic::Status> {
    let claims = claims();
    let reply = client
        .sign(SignJwtRequest {
            claims: claims.clone(),
        })
        .await?
        .into_inner();
    Ok(format!("{}.{claims}.{}", reply.header, reply.signature))
}

/// The one published key: kid and DER.
async fn published(client: &mut Client) -> (String, Vec<u8>) {
    let keys = client
        .fetch_keys(FetchKeysRequest {})
        .await
        .expect("FetchKeys")
        .into_inner();
    assert_eq!(keys.keys.len(), 1, "only the signing key is published");
    assert!(!keys.keys[0].exclude_from_oidc_discovery);
    (keys.keys[0].key_id.clone(), keys.keys[0].key.clone())
}

/// Verifies `token` with Python `cryptography` against `der`.
fn verify(dir: &Path, token: &str, der: &[u8]) -> Result<String, String> {
    let der_file = dir.join("published.der");
    fs::write(&der_file, der).expect("write der");
    let output = Command::new("python3")
        .arg(VERIFIER)
        .arg(token)
        .arg(&der_file)
        .output()
        .expect("python3");
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
    } else {
        Err(format!(
            "independent verifier rejected the token (needs `pip install cryptography`):\n{}",
            String::from_utf8_lossy(&output.stderr)
        ))
    }
}

fn openssl(args: &[&str]) -> Vec<u8> {
    let output = Command::new("openssl")
        .args(args)
        .output()
        .expect("openssl");
    assert!(
        output.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output.stdout
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

fn header_of(token: &str) -> String {
    String::from_utf8(b64_decode(token.split('.').next().expect("header"))).expect("utf-8")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn init_key_then_tokens_verify_independently() {
    let hsm = Hsm::new();

    // Before init-key, serve refuses clearly.
    let out = hsm
        .command()
        .args(["serve", "--config"])
        .arg(&hsm.config)
        .output()
        .expect("kms-plugin");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "serve must fail without a key");
    assert!(
        stderr.contains("no EC private key labelled") && stderr.contains("jwt-signer init-key"),
        "{stderr}"
    );

    let (line, kid) = hsm.init_key();
    assert!(line.starts_with("signing key created"), "{line}");
    let (again, same_kid) = hsm.init_key();
    assert!(again.starts_with("signing key already present"), "{again}");
    assert_eq!(same_kid, kid, "init-key is idempotent");

    let mut signer = hsm.serve("serve.log");
    let mut client = signer.client().await;
    let (published_kid, der) = published(&mut client).await;
    assert_eq!(
        published_kid, kid,
        "FetchKeys publishes the kid init-key printed"
    );
    assert_eq!(
        openssl_kid(hsm.dir.path(), &der),
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
        assert_eq!(
            header_of(&token),
            format!(r#"{{"alg":"ES256","kid":"{kid}","typ":"JWT"}}"#),
            "header exactly alg, kid, typ"
        );
        assert_eq!(
            verify(hsm.dir.path(), &token, &der),
            Ok("valid ES256".to_owned())
        );
        let signature = b64_decode(token.rsplit('.').next().expect("signature"));
        assert_eq!(signature.len(), 64, "JWS ES256 is r || s");
    }

    // A tampered token fails the same check.
    let token = sign(&mut client).await.expect("Sign");
    let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
    parts[1] = b64(br#"{"sub":"system:serviceaccount:kube-system:admin"}"#);
    assert!(verify(hsm.dir.path(), &parts.join("."), &der).is_err());

    // SIGHUP re-opens the key (a second login on the same module) and keeps signing.
    let hup = Command::new("kill")
        .args(["-HUP", &signer.child.id().to_string()])
        .status();
    assert!(hup.is_ok_and(|s| s.success()), "kill -HUP failed");
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
            verify(hsm.dir.path(), &token, &der),
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

/// Moves every entry of `from` into `to` (a token directory leaving or returning).
fn move_all(from: &Path, to: &Path) {
    fs::create_dir_all(to).expect("target dir");
    for entry in fs::read_dir(from).expect("read dir") {
        let entry = entry.expect("entry");
        fs::rename(entry.path(), to.join(entry.file_name())).expect("rename");
    }
}

/// The token disappears while serving (its directory leaves SoftHSM's tokendir, as when an HSM
/// is unplugged or unreachable): Sign fails within its deadline, FetchKeys keeps answering, and
/// signing resumes once the token is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_loss_fails_sign_in_time_and_recovers() {
    let hsm = Hsm::new();
    let (_, kid) = hsm.init_key();
    let mut signer = hsm.serve("fault.log");
    let mut client = signer.client().await;
    let (_, der) = published(&mut client).await;
    let before = sign(&mut client).await.expect("Sign before the loss");

    let away = hsm.path("tokens-away");
    move_all(&hsm.tokens, &away);
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

    move_all(&away, &hsm.tokens);
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
            verify(hsm.dir.path(), token, &der),
            Ok("valid ES256".to_owned())
        );
    }
    let logs = signer.logs();
    assert!(logs.contains("PKCS#11 session lost"), "{logs}");
    assert!(!logs.contains(PIN), "the PIN reached the log");
}
