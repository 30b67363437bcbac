//! The external service-account token signer through the real binary: the signer process
//! ([`Signer`]), ExternalJWTSigner calls ([`sign`], [`sign_claims`], [`published`]) and the
//! independent checks of their results ([`verify`] with Python `cryptography`, [`openssl`]).

use base64::Engine;
use kms_config::SocketAddress;
use kms_proto::externaljwt_v1::external_jwt_signer_client::ExternalJwtSignerClient;
use kms_proto::externaljwt_v1::{FetchKeysRequest, Key, SignJwtRequest};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tonic::transport::Channel;

pub(crate) const VERIFIER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/jwt_verify.py");

pub(crate) type Client = ExternalJwtSignerClient<Channel>;

pub(crate) fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

pub(crate) fn b64_decode(text: &str) -> Vec<u8> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(text)
        .expect("base64url")
}

/// A running `kms-plugin serve` with its stderr in `log`; killed on drop.
pub(crate) struct Signer {
    pub child: Child,
    pub log: PathBuf,
    pub socket: PathBuf,
}

impl Signer {
    /// Spawns `command` (a `kms-plugin serve`) with stdin and stdout closed and stderr in `log`.
    pub(crate) fn spawn(mut command: Command, log: PathBuf, socket: PathBuf) -> Self {
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(&log).expect("log"))
            .spawn()
            .expect("spawn kms-plugin");
        Self { child, log, socket }
    }

    pub(crate) fn logs(&self) -> String {
        // Informational lines reach stderr within the plugin's 100 ms flush interval.
        std::thread::sleep(Duration::from_millis(250));
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// A client once the signer listens; panics with the log if it exits or never listens.
    pub(crate) async fn client(&mut self) -> Client {
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

/// Base64url claims of a service-account token valid for an hour from now.
pub(crate) fn claims() -> String {
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

/// Signs `claims`; returns the whole token.
pub(crate) async fn sign_claims(
    client: &mut Client,
    claims: String,
) -> Result<String, tonic::Status> {
    let reply = client
        .sign(SignJwtRequest {
            claims: claims.clone(),
        })
        .await?
        .into_inner();
    Ok(format!("{}.{claims}.{}", reply.header, reply.signature))
}

/// Signs fresh [`claims`]; returns the whole token.
pub(crate) async fn sign(client: &mut Client) -> Result<String, tonic::Status> {
    sign_claims(client, claims()).await
}

/// Every published key.
pub(crate) async fn fetch_keys(client: &mut Client) -> Vec<Key> {
    client
        .fetch_keys(FetchKeysRequest {})
        .await
        .expect("FetchKeys")
        .into_inner()
        .keys
}

/// The one published key.
pub(crate) async fn published(client: &mut Client) -> Key {
    let mut keys = fetch_keys(client).await;
    assert_eq!(keys.len(), 1, "only the signing key is published");
    keys.remove(0)
}

/// The token's decoded JOSE header.
pub(crate) fn header(token: &str) -> String {
    String::from_utf8(b64_decode(token.split('.').next().expect("header"))).expect("utf-8")
}

/// The `kid` of the token's header.
pub(crate) fn header_kid(token: &str) -> String {
    let header: serde_json::Value = serde_json::from_str(&header(token)).expect("json");
    header["kid"].as_str().expect("kid").to_owned()
}

/// Verifies `token` with Python `cryptography` against the DER public key `der`.
pub(crate) fn verify(dir: &Path, token: &str, der: &[u8]) -> Result<String, String> {
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

/// Runs openssl; returns its stdout, panicking with its stderr unless it succeeds.
pub(crate) fn openssl(args: &[&str]) -> Vec<u8> {
    testkit::expect_success(Command::new("openssl").args(args)).stdout
}

/// Writes a kubeadm-style EC SEC1 private key (`EC PRIVATE KEY`) on openssl's `curve` to `path`,
/// mode 0600 as kubeadm writes it.
pub(crate) fn make_ec_key(path: &Path, curve: &str) {
    let name = path.to_str().expect("utf-8");
    openssl(&["ecparam", "-name", curve, "-genkey", "-noout", "-out", name]);
    owner_only(path);
}

/// Makes `path` readable by its owner only, as the signer requires of its key file.
pub(crate) fn owner_only(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(0o600)).expect("chmod 0600");
}

/// `token` is an ES256 token of `kid`, header exactly alg, kid, typ, that verifies
/// independently against `der`.
#[track_caller]
pub(crate) fn assert_es256_token(dir: &Path, token: &str, kid: &str, der: &[u8]) {
    assert_eq!(
        header(token),
        format!(r#"{{"alg":"ES256","kid":"{kid}","typ":"JWT"}}"#),
        "header exactly alg, kid, typ"
    );
    assert_eq!(verify(dir, token, der), Ok("valid ES256".to_owned()));
}
