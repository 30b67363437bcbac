//! The service-account token signer with an asymmetric ECC_NIST_P256 key in AWS KMS (moto's
//! KMS server), through the real binary; tokens and key ids are checked independently
//! (GetPublicKey through the SDK, openssl, Python `cryptography`). Each test starts its own
//! `moto_server` on a free port. Needs moto: `bash .ci/provision-moto.sh`.
#![cfg(feature = "aws")]

use aws_sdk_kms::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_kms::types::{KeySpec, KeyUsageType};
use base64::Engine;
use kms_config::SocketAddress;
use kms_proto::externaljwt_v1::external_jwt_signer_client::ExternalJwtSignerClient;
use kms_proto::externaljwt_v1::{FetchKeysRequest, SignJwtRequest};
use sha2::{Digest, Sha256};
use std::fs;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tonic::transport::Channel;

const ALIAS: &str = "alias/jwt-signer-test";
const REGION: &str = "us-east-1";
const VERIFIER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/jwt_verify.py");
/// The client's operation_timeout (1.5 s, below) plus slack; the signer's own cap is 5 s.
const SIGN_DEADLINE: Duration = Duration::from_millis(3000);

type Client = ExternalJwtSignerClient<Channel>;

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}

fn signal(pid: u32, name: &str) {
    let ok = Command::new("kill")
        .args([&format!("-{name}"), &pid.to_string()])
        .status();
    assert!(ok.is_ok_and(|s| s.success()), "kill -{name} {pid} failed");
}

/// A `moto_server` on 127.0.0.1; killed on drop.
struct Moto {
    child: Child,
    port: u16,
}

impl Moto {
    fn start(dir: &Path) -> Self {
        let found = Command::new("moto_server")
            .arg("--help")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        assert!(
            found.is_ok_and(|s| s.success()),
            "moto_server is not installed: run `bash .ci/provision-moto.sh` (pip install 'moto[server]') before these tests"
        );
        let port = free_port();
        let child = Command::new("moto_server")
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(fs::File::create(dir.join("moto.out")).expect("moto stdout"))
            .stderr(fs::File::create(dir.join("moto.log")).expect("moto log"))
            .spawn()
            .expect("spawn moto_server");
        let moto = Self { child, port };
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "moto_server did not listen on {port}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        moto
    }

    fn sdk(&self) -> aws_sdk_kms::Client {
        let config = aws_sdk_kms::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(REGION))
            .endpoint_url(format!("http://127.0.0.1:{}", self.port))
            .credentials_provider(Credentials::new("testing", "testing", None, None, "test"))
            .build();
        aws_sdk_kms::Client::from_conf(config)
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        signal(self.child.id(), "CONT");
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A TCP relay in front of moto: stopping it refuses connections as a stopped KMS endpoint
/// does; resuming it on the same port brings KMS back with its keys.
struct Relay {
    port: u16,
    target: u16,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    conns: std::sync::Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>>,
}

impl Relay {
    async fn start(target: u16) -> Self {
        let mut relay = Self {
            port: free_port(),
            target,
            tasks: Vec::new(),
            conns: Default::default(),
        };
        relay.resume().await;
        relay
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    async fn resume(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(5);
        let listener = loop {
            match tokio::net::TcpListener::bind(("127.0.0.1", self.port)).await {
                Ok(listener) => break listener,
                Err(error) => {
                    assert!(Instant::now() < deadline, "relay cannot rebind: {error}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        };
        let (target, conns) = (self.target, self.conns.clone());
        self.tasks.push(tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let conn = tokio::spawn(async move {
                    if let Ok(mut outbound) =
                        tokio::net::TcpStream::connect(("127.0.0.1", target)).await
                    {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                conns.lock().expect("conns").push(conn);
            }
        }));
    }

    fn stop(&mut self) {
        for task in self.tasks.drain(..) {
            task.abort();
        }
        for conn in self.conns.lock().expect("conns").drain(..) {
            conn.abort();
        }
    }
}

/// A test's world: temp dir, moto, an ECC_NIST_P256 signing key behind [`ALIAS`].
struct World {
    dir: tempfile::TempDir,
    moto: Moto,
    kms: aws_sdk_kms::Client,
    key_arn: String,
}

impl World {
    async fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let moto = Moto::start(dir.path());
        let kms = moto.sdk();
        let created = kms
            .create_key()
            .description("kms-plugin jwt signer test")
            .key_spec(KeySpec::EccNistP256)
            .key_usage(KeyUsageType::SignVerify)
            .send()
            .await
            .expect("CreateKey");
        let key_arn = created
            .key_metadata()
            .and_then(|m| m.arn())
            .expect("ARN")
            .to_owned();
        kms.create_alias()
            .alias_name(ALIAS)
            .target_key_id(&key_arn)
            .send()
            .await
            .expect("CreateAlias");
        Self {
            dir,
            moto,
            kms,
            key_arn,
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// A signer-only configuration with its key in KMS at `endpoint`.
    fn config(&self, name: &str, key_id: &str, endpoint: &str) -> PathBuf {
        let path = self.path(&format!("{name}.yaml"));
        let yaml = format!(
            "log_level: info\njwt_signer:\n  socket: {socket}\n  max_token_expiration: 24h\n  key:\n    kind: aws\n    aws:\n      \
             key_id: {key_id}\n      region: {REGION}\n      endpoint: {endpoint}\n      max_attempts: 2\n      \
             attempt_timeout: 500ms\n      operation_timeout: 1500ms\n      startup_timeout: 3s\n",
            socket = self.path(&format!("{name}.sock")).display(),
        );
        fs::write(&path, yaml).expect("config");
        path
    }

    /// `kms-plugin serve` with dummy credentials and no shared AWS files of this machine.
    fn command(&self, config: &Path) -> Command {
        for name in ["aws-config", "aws-credentials"] {
            fs::write(self.path(name), "").expect("empty AWS file");
        }
        let mut command = Command::new(env!("CARGO_BIN_EXE_kms-plugin"));
        command
            .args(["serve", "--config"])
            .arg(config)
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("AWS_CONFIG_FILE", self.path("aws-config"))
            .env("AWS_SHARED_CREDENTIALS_FILE", self.path("aws-credentials"))
            .env_remove("AWS_PROFILE")
            .env_remove("AWS_SESSION_TOKEN")
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        command
    }

    fn serve(&self, config: &Path) -> Signer {
        let stem = config
            .file_stem()
            .expect("stem")
            .to_string_lossy()
            .into_owned();
        let log = self.path(&format!("{stem}.log"));
        let child = self
            .command(config)
            .stderr(fs::File::create(&log).expect("log"))
            .spawn()
            .expect("spawn kms-plugin");
        Signer {
            child,
            log,
            socket: self.path(&format!("{stem}.sock")),
        }
    }

    /// The key's DER public key and kid as KMS itself reports them, checked by openssl.
    async fn expected_key(&self) -> (String, Vec<u8>) {
        let out = self
            .kms
            .get_public_key()
            .key_id(&self.key_arn)
            .send()
            .await
            .expect("GetPublicKey");
        let der = out.public_key().expect("public key").as_ref().to_vec();
        let file = self.path("kms-public.der");
        fs::write(&file, &der).expect("write");
        let output = Command::new("openssl")
            .args(["pkey", "-pubin", "-inform", "DER", "-in"])
            .arg(&file)
            .args(["-text", "-noout"])
            .output()
            .expect("openssl");
        let text = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success() && text.contains("ASN1 OID: prime256v1"),
            "{text}"
        );
        (b64(&Sha256::digest(&der)), der)
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

async fn sign_claims(client: &mut Client, claims: String) -> Result<String, tonic::Status> {
    let reply = client
        .sign(SignJwtRequest {
            claims: claims.clone(),
        })
        .await?
        .into_inner();
    Ok(format!("{}.{claims}.{}", reply.header, reply.signature))
}

async fn published(client: &mut Client) -> (String, Vec<u8>) {
    let keys = client
        .fetch_keys(FetchKeysRequest {})
        .await
        .expect("FetchKeys")
        .into_inner();
    assert_eq!(keys.keys.len(), 1, "only the signing key is published");
    (keys.keys[0].key_id.clone(), keys.keys[0].key.clone())
}

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

/// Signing fails within the deadline, and FetchKeys keeps answering from memory.
async fn check_outage(client: &mut Client, kid: &str, what: &str) {
    let started = Instant::now();
    let error = sign_claims(client, claims())
        .await
        .expect_err("KMS is down");
    let took = started.elapsed();
    assert_eq!(error.code(), tonic::Code::Unavailable, "{what}: {error:?}");
    assert!(
        took < SIGN_DEADLINE,
        "{what}: Sign failed only after {took:?}"
    );
    println!("{what}: Sign failed with {:?} after {took:?}", error.code());
    let started = Instant::now();
    assert_eq!(
        published(client).await.0,
        kid,
        "{what}: FetchKeys answers from memory"
    );
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "{what}: FetchKeys waited on KMS"
    );
}

async fn check_recovery(client: &mut Client, dir: &Path, der: &[u8], what: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    let token = loop {
        match sign_claims(client, claims()).await {
            Ok(token) => break token,
            Err(error) => {
                assert!(Instant::now() < deadline, "{what}: no recovery: {error:?}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    assert_eq!(
        verify(dir, &token, der),
        Ok("valid ES256".to_owned()),
        "{what}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kms_key_signs_tokens_that_verify_independently() {
    let world = World::new().await;
    let endpoint = format!("http://127.0.0.1:{}", world.moto.port);
    let (expected_kid, expected_der) = world.expected_key().await;
    let mut signer = world.serve(&world.config("signer", ALIAS, &endpoint));
    let mut client = signer.client().await;

    let (kid, der) = published(&mut client).await;
    assert_eq!(der, expected_der, "FetchKeys publishes KMS's public key");
    assert_eq!(kid, expected_kid, "kid equals kube-apiserver's computation");

    for _ in 0..4 {
        let token = sign_claims(&mut client, claims()).await.expect("Sign");
        let header = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(token.split('.').next().expect("header"))
            .expect("b64");
        assert_eq!(
            String::from_utf8(header).expect("utf-8"),
            format!(r#"{{"alg":"ES256","kid":"{kid}","typ":"JWT"}}"#),
            "header exactly alg, kid, typ"
        );
        assert_eq!(
            verify(world.dir.path(), &token, &der),
            Ok("valid ES256".to_owned())
        );
    }

    // A signing input beyond KMS's RAW limit (4096 bytes) is refused, not truncated or hashed.
    let error = sign_claims(&mut client, "A".repeat(5000))
        .await
        .expect_err("too long for RAW");
    assert_eq!(error.code(), tonic::Code::Internal, "{error:?}");
    assert!(
        signer.logs().contains("at most 4096 bytes"),
        "{}",
        signer.logs()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kms_outage_fails_sign_in_time_and_fetch_keys_answers() {
    let world = World::new().await;
    let mut relay = Relay::start(world.moto.port).await;
    let (kid, der) = world.expected_key().await;
    let mut signer = world.serve(&world.config("outage", &world.key_arn, &relay.endpoint()));
    let mut client = signer.client().await;
    assert_eq!(published(&mut client).await.0, kid);
    check_recovery(&mut client, world.dir.path(), &der, "before").await;

    // KMS stopped: connections refused.
    relay.stop();
    check_outage(&mut client, &kid, "stopped KMS").await;
    relay.resume().await;
    check_recovery(&mut client, world.dir.path(), &der, "after the stop").await;

    // KMS hung: requests accepted, never answered.
    signal(world.moto.child.id(), "STOP");
    check_outage(&mut client, &kid, "hung KMS").await;
    signal(world.moto.child.id(), "CONT");
    check_recovery(&mut client, world.dir.path(), &der, "after the hang").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_unfit_for_es256_are_refused_at_startup() {
    let world = World::new().await;
    let endpoint = format!("http://127.0.0.1:{}", world.moto.port);
    let symmetric = world
        .kms
        .create_key()
        .send()
        .await
        .expect("CreateKey")
        .key_metadata()
        .and_then(|m| m.arn())
        .expect("ARN")
        .to_owned();
    let out = world
        .command(&world.config("symmetric", &symmetric, &endpoint))
        .stderr(Stdio::piped())
        .output()
        .expect("run kms-plugin");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a symmetric key must be refused");
    assert!(
        stderr.contains("ECC_NIST_P256") && stderr.contains("SIGN_VERIFY"),
        "{stderr}"
    );
}
