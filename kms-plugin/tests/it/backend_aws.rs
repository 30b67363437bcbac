//! AWS-specific tests against moto's KMS server: the library API, the encryption context, and
//! startup against an unreachable KMS. The contract, tamper, restart, rotation, concurrency,
//! economy and outage scenarios run for this backend in `conformance_aws.rs`.
//!
//! Each test starts its own `moto_server` on a free 127.0.0.1 port. Needs moto:
//! `bash .ci/provision-moto.sh`.
#![cfg(feature = "aws")]

use crate::common;

use aws_sdk_kms::config::{BehaviorVersion, Credentials, Region};
use common::moto::{ALIAS, Moto, REGION, backend_yaml, plugin_env};
use common::*;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// A test's world: temp dir, moto, a key behind [`ALIAS`].
struct World {
    dir: tempfile::TempDir,
    moto: Moto,
}

impl World {
    async fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let (moto, _, _) = Moto::start_with_key(dir.path()).await;
        Self { dir, moto }
    }

    /// The config of plugin `name` against `endpoint` for cluster `cluster`.
    fn yaml(&self, name: &str, endpoint: &str, cluster: &str) -> String {
        plugin_config(
            &Plugin::socket_of(self.dir.path(), name),
            "1s",
            "",
            &backend_yaml(endpoint, cluster),
        )
    }

    fn write(&self, name: &str, yaml: &str) -> PathBuf {
        let path = self.dir.path().join(format!("{name}.yaml"));
        std::fs::write(&path, yaml).expect("config");
        path
    }

    fn env(&self) -> Vec<(String, String)> {
        plugin_env(self.dir.path())
    }
}

// ---------------------------------------------------------------------------------------------
// Library API. The SDK reads credentials from the environment, so these calls run in a child
// process of this test binary that has the dummy credentials set.

/// Set in the child process: moto's endpoint.
const CHILD_ENV: &str = "KMS_AWS_TEST_CHILD_ENDPOINT";
const CONFIG_ENV: &str = "KMS_AWS_TEST_CONFIG";

#[test]
fn library_api() {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let Ok(endpoint) = std::env::var(CHILD_ENV) else {
        let world = runtime.block_on(World::new());
        let config = world.write(
            "lib",
            &world.yaml("lib", &world.moto.endpoint(), "test-cluster"),
        );
        let mut env = world.env();
        env.push((CHILD_ENV.into(), world.moto.endpoint()));
        env.push((CONFIG_ENV.into(), config.display().to_string()));
        let text = run_test_in_child("backend_aws::library_api", &env);
        assert!(
            text.contains("library checks passed"),
            "child ran no checks:\n{text}"
        );
        println!("child output:\n{text}");
        return;
    };
    let path = PathBuf::from(std::env::var(CONFIG_ENV).expect("config path"));
    let config = kms_config::PluginConfig::load(&path).expect("config");
    let Some(kms_config::BackendConfig::Aws(aws)) = config.backend else {
        panic!("not an aws backend")
    };
    runtime.block_on(library_checks(aws, &endpoint));
}

async fn library_checks(config: kms_config::AwsBackend, endpoint: &str) {
    use kms_plugin::root_key::aws::AwsRootKey;
    use kms_plugin::root_key::{KeyId, RootKey, RootKeyError};
    use kms_plugin::secret::AesKey;

    let kms = aws_sdk_kms::Client::from_conf(
        aws_sdk_kms::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(REGION))
            .endpoint_url(endpoint)
            .credentials_provider(Credentials::new("testing", "testing", None, None, "test"))
            .build(),
    );
    let root = AwsRootKey::connect(&config).await.expect("connect");
    let first = root.primary_key_id();
    assert!(
        first.as_str().starts_with("arn:aws:kms:us-east-1:"),
        "{first}"
    );

    let kek = AesKey::generate().expect("rng");
    let wrapped = root.wrap_kek(&kek).await.expect("wrap");
    assert_eq!(
        wrapped.key_id, first,
        "the wrapped key names the key ARN, not the alias"
    );
    assert!(
        root.unwrap_kek(&first, &wrapped.ciphertext)
            .await
            .expect("unwrap")
            .ct_eq(&kek)
    );

    let mut tampered = wrapped.ciphertext.clone();
    let middle = tampered.len() / 2;
    tampered[middle] ^= 1;
    let error = root
        .unwrap_kek(&first, &tampered)
        .await
        .expect_err("tampered");
    assert!(matches!(error, RootKeyError::Integrity(_)), "{error:?}");
    let alias = KeyId::new(ALIAS).expect("id");
    let error = root
        .unwrap_kek(&alias, &wrapped.ciphertext)
        .await
        .expect_err("not an ARN");
    assert!(matches!(error, RootKeyError::UnknownKey(_)), "{error:?}");

    // Another encryption context (another cluster) cannot unwrap.
    let mut other = config.clone();
    other
        .encryption_context
        .insert("kubernetes.io/cluster".into(), "other".into());
    let other = AwsRootKey::connect(&other).await.expect("connect other");
    let error = other
        .unwrap_kek(&first, &wrapped.ciphertext)
        .await
        .expect_err("context");
    assert!(matches!(error, RootKeyError::Integrity(_)), "{error:?}");

    // Re-pointing the alias is picked up by refresh(); old data keeps unwrapping.
    let created = kms.create_key().send().await.expect("CreateKey");
    let second = created
        .key_metadata()
        .and_then(|m| m.arn())
        .expect("arn")
        .to_owned();
    kms.update_alias()
        .alias_name(ALIAS)
        .target_key_id(&second)
        .send()
        .await
        .expect("alias");
    let before_refresh = root.wrap_kek(&kek).await.expect("wrap before refresh");
    assert_eq!(
        before_refresh.key_id, first,
        "until refresh, wraps match what Status reports"
    );
    assert_eq!(root.primary_key_id(), first);
    root.refresh().await.expect("refresh");
    assert_eq!(root.primary_key_id().as_str(), second);
    let rewrapped = root.wrap_kek(&kek).await.expect("wrap under the new key");
    assert_eq!(rewrapped.key_id.as_str(), second);
    assert!(
        root.unwrap_kek(&first, &wrapped.ciphertext)
            .await
            .expect("old key")
            .ct_eq(&kek)
    );

    // A disabled key is refused at once at startup, not retried for startup_timeout.
    // (moto's DisableKey wants the bare key id, not the ARN.)
    let bare = first.as_str().rsplit('/').next().expect("key id");
    kms.disable_key()
        .key_id(bare)
        .send()
        .await
        .expect("DisableKey");
    // (moto still decrypts under a disabled key, so Decrypt's DisabledException → Denied
    // mapping is covered by the unit tests of the error mapping only.)
    let mut disabled = config.clone();
    disabled.key_id = first.to_string();
    let started = Instant::now();
    let error = AwsRootKey::connect(&disabled)
        .await
        .err()
        .map(|e| e.to_string());
    assert!(
        error.as_deref().is_some_and(|e| e.contains("Disabled")),
        "{error:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "took {:?}",
        started.elapsed()
    );
    let mut missing = config.clone();
    missing.key_id = "alias/no-such-alias".into();
    let Err(error) = AwsRootKey::connect(&missing).await else {
        panic!("connected to a missing alias")
    };
    assert!(matches!(error, RootKeyError::UnknownKey(_)), "{error:?}");
    println!("library checks passed");
}

/// A plugin with another encryption context (another cluster) cannot unwrap this cluster's
/// keys: an integrity failure, not "unavailable".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_encryption_context_cannot_decrypt() {
    let world = World::new().await;
    let endpoint = world.moto.endpoint();
    let mut plugin = Plugin::launch(
        world.dir.path(),
        "ours",
        &world.yaml("ours", &endpoint, "test-cluster"),
        world.env(),
    );
    let sealed = encrypt(&mut plugin.client().await, b"this cluster's seed").await;
    assert!(plugin.stop().success());

    let other = Plugin::launch(
        world.dir.path(),
        "other",
        &world.yaml("other", &endpoint, "other-cluster"),
        world.env(),
    );
    let error = decrypt(&mut other.client().await, &sealed)
        .await
        .expect_err("wrong encryption context");
    assert_eq!(error.code(), tonic::Code::InvalidArgument, "{error:?}");
    assert_eq!(error.message(), "decryption failed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn startup_gives_up_clearly_when_kms_is_unreachable() {
    let world = World::new().await;
    let closed = format!("http://127.0.0.1:{}", free_port());
    let config = world.write("down", &world.yaml("down", &closed, "test-cluster"));
    let started = Instant::now();
    let stderr = serve_must_fail(&config, &world.env(), Duration::from_secs(20));
    assert!(stderr.contains("unreachable after"), "{stderr}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "gave up after {:?} (startup_timeout 3s)",
        started.elapsed()
    );
    assert!(
        stderr.contains("retrying"),
        "retried before giving up: {stderr}"
    );
}
