//! A revoked AWS root key against a mere outage, and Decrypts naming keys the plugin does not
//! know, through the binary on moto's KMS server.
//!
//! moto keeps encrypting under a disabled key; only DescribeKey shows its `KeyState`, which the
//! health probe reads. moto's DisableKey and EnableKey want the key id, not the ARN. Needs moto
//! (fails, never skips, without it): `bash .ci/provision-moto.sh`.
#![cfg(feature = "aws")]

use crate::common;

use common::moto::{Moto, backend_yaml, create_key, launch_plugin};
use common::proxy::Proxy;
use common::*;
use kms_plugin::health::ROOT_KEY_REVOKED;
use kms_proto::kms_v2::EncryptRequest;
use std::time::{Duration, Instant};

/// The plugins' `health_probe_interval`.
const PROBE: Duration = Duration::from_secs(1);

/// The key id part of a key ARN (what moto's DisableKey wants).
fn bare_key_id(arn: &str) -> &str {
    arn.rsplit_once("key/").expect("key ARN").1
}

/// Whether an Encrypt succeeds now.
async fn encrypt_works(client: &Client) -> bool {
    client
        .clone()
        .encrypt(EncryptRequest {
            plaintext: b"probe".to_vec(),
            uid: uid(),
        })
        .await
        .is_ok()
}

/// Launches plugin `name` against `endpoint` with the probe at [`PROBE`] and `extra` lines.
fn launch(dir: &std::path::Path, name: &str, endpoint: &str, extra: &str) -> Plugin {
    let probe = format!("{}s", PROBE.as_secs());
    launch_plugin(
        dir,
        name,
        &probe,
        extra,
        &backend_yaml(endpoint, "test-cluster"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disabled_key_stops_encrypt_within_one_probe_while_an_outage_does_not() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (moto, kms, key) = Moto::start_with_key(dir.path()).await;
    let proxy = Proxy::start(moto.port).await;
    // `report`: this plugin shows every failed probe (the default `serve` policy is covered by
    // `backend_outage`).
    let plugin = launch(
        dir.path(),
        "revoking",
        &proxy.endpoint(),
        "health:\n  backend_outage: report\n",
    );
    let lenient = launch(
        dir.path(),
        "lenient",
        &moto.endpoint(),
        "revoked_key_stops_encrypt: false\n",
    );
    let client = plugin.client().await;
    let lenient_client = lenient.client().await;
    let sealed = encrypt(&mut client.clone(), b"sealed before").await;
    let lenient_sealed = encrypt(&mut lenient_client.clone(), b"sealed before").await;

    // A mere outage: KMS hangs. Status turns unhealthy, but not for revocation, and the
    // current KEK and the cache keep serving.
    proxy.black_hole(true);
    wait_status(
        &mut client.clone(),
        "the probe notices the hung KMS",
        Duration::from_secs(8),
        |healthz, _| healthz != "ok",
    )
    .await;
    let healthz = status(&mut client.clone()).await.healthz;
    assert_ne!(healthz, ROOT_KEY_REVOKED, "an outage is no revocation");
    assert!(
        encrypt_works(&client).await,
        "an outage does not stop Encrypt"
    );
    assert_eq!(
        decrypt(&mut client.clone(), &sealed).await.expect("cached"),
        b"sealed before"
    );
    proxy.black_hole(false);
    wait_status(
        &mut client.clone(),
        "KMS answers again",
        Duration::from_secs(10),
        |healthz, _| healthz == "ok",
    )
    .await;

    // Revocation: the key is disabled.
    kms.disable_key()
        .key_id(bare_key_id(&key))
        .send()
        .await
        .expect("DisableKey");
    let disabled = Instant::now();
    wait_status(
        &mut client.clone(),
        "the probe notices the disabled key",
        PROBE * 3,
        |healthz, _| healthz == ROOT_KEY_REVOKED,
    )
    .await;
    let noticed = disabled.elapsed();
    assert!(!encrypt_works(&client).await, "Encrypt stopped");
    let took = disabled.elapsed();
    println!("disabled key: revoked in Status after {noticed:?}, Encrypt refused after {took:?}");
    assert!(
        took <= PROBE + Duration::from_millis(800),
        "revocation took {took:?}, more than one probe interval ({PROBE:?}) and a probe"
    );
    assert!(
        decrypt(&mut client.clone(), &sealed).await.is_err(),
        "the revoked key's cached unwraps are gone"
    );
    let logs = plugin.logs();
    assert!(logs.contains("dropped the cached unwraps"), "{logs}");

    // With the switch off, the old behaviour: unhealthy, but Encrypt and Decrypt go on.
    wait_status(
        &mut lenient_client.clone(),
        "the lenient plugin notices the disabled key",
        PROBE * 3,
        |healthz, _| healthz != "ok",
    )
    .await;
    assert_ne!(
        status(&mut lenient_client.clone()).await.healthz,
        ROOT_KEY_REVOKED
    );
    assert!(encrypt_works(&lenient_client).await, "old behaviour kept");
    assert_eq!(
        decrypt(&mut lenient_client.clone(), &lenient_sealed)
            .await
            .expect("old behaviour: cached"),
        b"sealed before"
    );

    // The key is enabled again: healthy, Encrypt and Decrypt work.
    kms.enable_key()
        .key_id(bare_key_id(&key))
        .send()
        .await
        .expect("EnableKey");
    wait_status(
        &mut client.clone(),
        "healthy after EnableKey",
        PROBE * 3,
        |healthz, _| healthz == "ok",
    )
    .await;
    assert!(encrypt_works(&client).await, "Encrypt resumes");
    assert_eq!(
        decrypt(&mut client.clone(), &sealed)
            .await
            .expect("after EnableKey"),
        b"sealed before"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_known_key_arns_reach_kms_decrypt() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (moto, kms, _) = Moto::start_with_key(dir.path()).await;
    let previous = create_key(&kms).await;
    let backend = format!(
        "{}    previous_key_ids: [{previous}]\n",
        backend_yaml(&moto.endpoint(), "test-cluster")
    );
    let plugin = launch_plugin(dir.path(), "known", "3600s", "", &backend);
    let mut client = plugin.client().await;
    let sealed = encrypt(&mut client, b"mine").await;
    // Let the first probe and the first KEK's calls land in moto's log.
    tokio::time::sleep(Duration::from_millis(500)).await;

    let foreign = "arn:aws:kms:us-east-1:999999999999:key/11111111-2222-3333-4444-555555555555";
    let before = moto.requests();
    for _ in 0..10 {
        let mut request = decrypt_request(&sealed);
        request.key_id = foreign.into();
        let answer = client.decrypt(request).await;
        assert!(answer.is_err(), "a foreign key's ciphertext is refused");
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let foreign_cost = moto.requests() - before;
    println!("10 Decrypts naming a foreign account's key: {foreign_cost} KMS requests");
    assert_eq!(foreign_cost, 0, "a foreign key ARN costs no KMS call");

    // A key in previous_key_ids is asked (it did not wrap this KEK, so KMS refuses).
    let before = moto.requests();
    let mut request = decrypt_request(&sealed);
    request.key_id = previous.clone();
    assert!(client.decrypt(request).await.is_err());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        moto.requests() > before,
        "a listed previous key is asked at KMS"
    );
    assert_eq!(
        decrypt(&mut client, &sealed).await.expect("own data"),
        b"mine"
    );
}

/// An older key (the alias moved on) that is disabled: at the next key refresh (2 s here) the
/// plugin asks KMS about it, drops its cached unwraps and refuses its data, while the primary
/// keeps serving; enabled again, its data decrypts again. moto keeps decrypting under a
/// disabled key, so only the plugin's own check can refuse it here.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disabled_older_key_is_refused_after_the_next_refresh() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (moto, kms, first) = Moto::start_with_key(dir.path()).await;
    let backend = backend_yaml(&moto.endpoint(), "older")
        .replace("key_refresh_interval: 1h", "key_refresh_interval: 2s");
    let plugin = common::moto::launch_plugin(dir.path(), "older", "1s", "", &backend);
    let mut client = plugin.client().await;
    let sealed = encrypt(&mut client, b"under the first key").await;
    assert_eq!(sealed.key_id, first);

    let second = common::moto::create_key(&kms).await;
    common::moto::point_alias(&kms, &second, false).await;
    wait_status(
        &mut client,
        "the alias moved",
        Duration::from_secs(6),
        |h, k| h == "ok" && k == second,
    )
    .await;
    assert_eq!(
        decrypt(&mut client, &sealed).await.expect("cached"),
        b"under the first key"
    );

    kms.disable_key()
        .key_id(bare_key_id(&first))
        .send()
        .await
        .expect("DisableKey");
    let disabled = Instant::now();
    while decrypt(&mut client, &sealed).await.is_ok() {
        assert!(
            disabled.elapsed() < Duration::from_secs(6),
            "the disabled older key's data still decrypts"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!(
        "older key disabled: its data refused after {:?}",
        disabled.elapsed()
    );
    let logs = plugin.logs();
    assert!(
        logs.contains("dropped the cached unwraps of the revoked older root key version"),
        "{logs}"
    );
    assert_eq!(
        status(&mut client).await.healthz,
        "ok",
        "the primary serves on"
    );
    assert_eq!(encrypt(&mut client, b"new").await.key_id, second);

    kms.enable_key()
        .key_id(bare_key_id(&first))
        .send()
        .await
        .expect("EnableKey");
    let enabled = Instant::now();
    loop {
        match decrypt(&mut client, &sealed).await {
            Ok(plaintext) => {
                assert_eq!(plaintext, b"under the first key");
                break;
            }
            Err(_) => assert!(
                enabled.elapsed() < Duration::from_secs(6),
                "the enabled older key's data is still refused"
            ),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The node's own credentials stop working (moto starts checking them after a number of
/// requests, and the plugin's are unknown to its IAM: `403 InvalidClientTokenId`): that says
/// nothing about the key, so it is an outage, not a revocation. Status turns unhealthy without
/// `root key revoked`, cached Decrypts and the current KEK's Encrypts go on. (moto answers in
/// XML, so the SDK sees no error code here and the plugin judges by the status alone; real KMS
/// answers `UnrecognizedClientException`, classified as an outage by its code: see keystore's
/// `aws::error` tests.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_credentials_are_an_outage_not_a_revocation() {
    let dir = tempfile::tempdir().expect("tempdir");
    let moto = Moto::start_with_env(dir.path(), &[("INITIAL_NO_AUTH_ACTION_COUNT", "200")]);
    let kms = moto.sdk();
    let key = common::moto::create_key(&kms).await;
    common::moto::point_alias(&kms, &key, true).await;
    let backend = backend_yaml(&moto.endpoint(), "credentials");
    let plugin = common::moto::launch_plugin(
        dir.path(),
        "credentials",
        "1s",
        "health:\n  backend_outage: report\n",
        &backend,
    );
    let mut client = plugin.client().await;
    let sealed = encrypt(&mut client, b"sealed before").await;
    assert_eq!(
        decrypt(&mut client, &sealed).await.expect("first decrypt"),
        b"sealed before"
    );
    // Spend moto's unchecked requests until credentials are checked.
    let mut spent = 0;
    while kms.list_keys().send().await.is_ok() {
        spent += 1;
        assert!(spent <= 200, "moto never started checking credentials");
    }
    let refused = kms.list_keys().send().await.expect_err("checked now");
    assert_eq!(
        refused.raw_response().map(|r| r.status().as_u16()),
        Some(403),
        "{refused:?}"
    );
    wait_status(
        &mut client,
        "the probe meets the rejected credentials",
        Duration::from_secs(6),
        |healthz, _| healthz != "ok",
    )
    .await;
    let healthz = status(&mut client).await.healthz;
    println!("with rejected credentials: healthz {healthz:?}");
    assert_ne!(healthz, ROOT_KEY_REVOKED, "credentials are no revocation");
    assert_eq!(
        decrypt(&mut client, &sealed).await.expect("cached"),
        b"sealed before"
    );
    assert!(encrypt_works(&client).await, "the current KEK seals on");
    let logs = plugin.logs();
    assert!(
        logs.contains("root key probe failed") && logs.contains("KMS DescribeKey"),
        "the probe never met the rejected credentials:\n{logs}"
    );
    assert!(
        !logs.contains("dropped the cached unwraps"),
        "the cache was dropped:\n{logs}"
    );
}
