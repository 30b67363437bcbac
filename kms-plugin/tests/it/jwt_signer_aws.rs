//! The service-account token signer with an asymmetric ECC_NIST_P256 key in AWS KMS (moto's
//! KMS server), through the real binary; tokens and key ids are checked independently
//! (GetPublicKey through the SDK, openssl, Python `cryptography`). Each test starts its own
//! `moto_server` on a free port. Needs moto: `bash .ci/provision-moto.sh`.
#![cfg(feature = "aws")]

use crate::common;

use aws_sdk_kms::types::{KeySpec, KeyUsageType};
use common::jwt::{
    Client, Signer, assert_es256_token, b64, openssl, published, sign, sign_claims, verify,
};
use common::moto::{ALIAS, Moto, REGION, Relay, create_key, plugin_env, point_alias};
use sha2::{Digest, Sha256};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The client's operation_timeout (1.5 s, below) plus slack; the signer's own cap is 5 s.
const SIGN_DEADLINE: Duration = Duration::from_millis(3000);

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
        point_alias(&kms, &key_arn, true).await;
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
        common::serve_command(config, &plugin_env(self.dir.path()))
    }

    fn serve(&self, config: &Path) -> Signer {
        let stem = config
            .file_stem()
            .expect("stem")
            .to_string_lossy()
            .into_owned();
        Signer::spawn(
            self.command(config),
            self.path(&format!("{stem}.log")),
            self.path(&format!("{stem}.sock")),
        )
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
        let file = file.to_str().expect("utf-8");
        let text = openssl(&[
            "pkey", "-pubin", "-inform", "DER", "-in", file, "-text", "-noout",
        ]);
        let text = String::from_utf8_lossy(&text);
        assert!(text.contains("ASN1 OID: prime256v1"), "{text}");
        (b64(&Sha256::digest(&der)), der)
    }
}

/// Signing fails within the deadline, and FetchKeys keeps answering from memory.
async fn check_outage(client: &mut Client, kid: &str, what: &str) {
    let started = Instant::now();
    let error = sign(client).await.expect_err("KMS is down");
    let took = started.elapsed();
    assert_eq!(error.code(), tonic::Code::Unavailable, "{what}: {error:?}");
    assert!(
        took < SIGN_DEADLINE,
        "{what}: Sign failed only after {took:?}"
    );
    println!("{what}: Sign failed with {:?} after {took:?}", error.code());
    let started = Instant::now();
    assert_eq!(
        published(client).await.key_id,
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
        match sign(client).await {
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
    let endpoint = world.moto.endpoint();
    let (expected_kid, expected_der) = world.expected_key().await;
    let mut signer = world.serve(&world.config("signer", ALIAS, &endpoint));
    let mut client = signer.client().await;

    let key = published(&mut client).await;
    let (kid, der) = (key.key_id, key.key);
    assert_eq!(der, expected_der, "FetchKeys publishes KMS's public key");
    assert_eq!(kid, expected_kid, "kid equals kube-apiserver's computation");

    for _ in 0..4 {
        let token = sign(&mut client).await.expect("Sign");
        assert_es256_token(world.dir.path(), &token, &kid, &der);
    }

    // A signing input beyond KMS's RAW limit (4096 bytes) is refused, not truncated or hashed.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("time")
        .as_secs();
    let padded = format!(
        r#"{{"iss":"i","sub":"s","iat":{now},"exp":{},"pad":"{}"}}"#,
        now + 600,
        "A".repeat(5000)
    );
    let error = sign_claims(&mut client, b64(padded.as_bytes()))
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
    assert_eq!(published(&mut client).await.key_id, kid);
    check_recovery(&mut client, world.dir.path(), &der, "before").await;

    // KMS stopped: connections refused.
    relay.stop();
    check_outage(&mut client, &kid, "stopped KMS").await;
    relay.resume().await;
    check_recovery(&mut client, world.dir.path(), &der, "after the stop").await;

    // KMS hung: requests accepted, never answered.
    world.moto.signal("STOP");
    check_outage(&mut client, &kid, "hung KMS").await;
    world.moto.signal("CONT");
    check_recovery(&mut client, world.dir.path(), &der, "after the hang").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_unfit_for_es256_are_refused_at_startup() {
    let world = World::new().await;
    let endpoint = world.moto.endpoint();
    let symmetric = create_key(&world.kms).await;
    // A symmetric key must be refused.
    let out = testkit::expect_failure(
        world
            .command(&world.config("symmetric", &symmetric, &endpoint))
            .stderr(Stdio::piped()),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("ECC_NIST_P256") && stderr.contains("SIGN_VERIFY"),
        "{stderr}"
    );
}
