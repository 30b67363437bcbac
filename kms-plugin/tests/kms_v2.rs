//! The KMS v2 contract, end to end through the real binary on a real Unix socket.

mod common;

use common::*;
use kms_proto::kms_v2::{DecryptRequest, EncryptRequest, StatusResponse};
use prost::Message;
use std::collections::HashMap;
use std::time::Duration;

fn is_fqdn(key: &str) -> bool {
    let labels: Vec<&str> = key.split('.').collect();
    labels.len() >= 2
        && labels.iter().all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contract_limits_and_round_trip() {
    let temp = tempfile::tempdir().expect("tempdir");
    let plugin = Plugin::start_local(temp.path());
    let mut client = plugin.client().await;

    let status = status(&mut client).await;
    assert_eq!(status.version, "v2");
    assert_eq!(status.healthz, "ok");
    assert!(!status.key_id.is_empty() && status.key_id.len() <= 1024);

    let mut plaintexts = Vec::new();
    for len in [1usize, 32, 500, 996] {
        let plaintext = random_bytes(len);
        let sealed = encrypt(&mut client, &plaintext).await;
        assert!(
            !sealed.ciphertext.is_empty() && sealed.ciphertext.len() <= 1024,
            "ciphertext {}",
            sealed.ciphertext.len()
        );
        assert_eq!(
            sealed.key_id, status.key_id,
            "Encrypt's key_id equals Status's"
        );
        let total: usize = sealed
            .annotations
            .iter()
            .map(|(k, v)| k.len() + v.len())
            .sum();
        assert!(total <= 32 * 1024);
        assert!(
            sealed.annotations.keys().all(|k| is_fqdn(k)),
            "{:?}",
            sealed.annotations.keys()
        );
        assert_eq!(
            decrypt(&mut client, &sealed).await.expect("decrypt"),
            plaintext
        );
        plaintexts.push(plaintext);
    }
    // The largest plaintext fills the ciphertext limit exactly; one more byte is refused.
    let sealed = encrypt(&mut client, &random_bytes(996)).await;
    assert_eq!(sealed.ciphertext.len(), 1024);
    for bad in [Vec::new(), random_bytes(997)] {
        let error = client
            .encrypt(EncryptRequest {
                plaintext: bad,
                uid: uid(),
            })
            .await
            .expect_err("out of limits");
        assert_eq!(error.code(), tonic::Code::InvalidArgument);
    }
    // Two encryptions of one seed differ (random nonce) and both decrypt.
    let seed = random_bytes(32);
    let a = encrypt(&mut client, &seed).await;
    let b = encrypt(&mut client, &seed).await;
    assert_ne!(a.ciphertext, b.ciphertext);
    assert_eq!(decrypt(&mut client, &b).await.expect("decrypt"), seed);

    // Nothing secret reaches the log: no plaintext, no root key bytes.
    let logs = plugin.logs();
    assert!(
        logs.contains("method=\"Encrypt\"") || logs.contains("Encrypt"),
        "{logs}"
    );
    for plaintext in plaintexts.iter().chain([&seed]) {
        if plaintext.len() >= 8 {
            assert!(
                !logs.contains(&hex::encode(plaintext)),
                "plaintext leaked into the log"
            );
        }
    }
    for entry in std::fs::read_dir(&plugin.state_dir).expect("state") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "key") {
            let key = std::fs::read(&path).expect("key");
            assert!(
                !logs.contains(&hex::encode(&key)),
                "root key leaked into the log"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_tamper_and_garbage_case_fails_opaquely() {
    let temp = tempfile::tempdir().expect("tempdir");
    let plugin = Plugin::start_local(temp.path());
    let mut client = plugin.client().await;
    let seed = random_bytes(32);
    let sealed = encrypt(&mut client, &seed).await;
    let good = decrypt_request(&sealed);

    let mut cases: Vec<(String, DecryptRequest)> = Vec::new();
    for bit in 0..good.ciphertext.len() * 8 {
        let mut r = good.clone();
        r.ciphertext[bit / 8] ^= 1 << (bit % 8);
        cases.push((format!("ciphertext bit {bit}"), r));
    }
    for (key, value) in &good.annotations {
        for bit in 0..value.len() * 8 {
            let mut r = good.clone();
            r.annotations.get_mut(key).expect("key")[bit / 8] ^= 1 << (bit % 8);
            cases.push((format!("annotation {key} bit {bit}"), r));
        }
        let mut r = good.clone();
        r.annotations.remove(key);
        cases.push((format!("missing annotation {key}"), r));
        let mut r = good.clone();
        let value = r.annotations.remove(key).expect("key");
        r.annotations.insert(format!("x{key}"), value);
        cases.push((format!("renamed annotation {key}"), r));
    }
    let mut r = good.clone();
    r.annotations
        .insert("extra.example.com".into(), b"1".to_vec());
    cases.push(("extra annotation".into(), r));
    let mut r = good.clone();
    r.annotations = HashMap::new();
    cases.push(("no annotations".into(), r));
    for cut in [0, 1, 12, 28, good.ciphertext.len() - 1] {
        let mut r = good.clone();
        r.ciphertext.truncate(cut);
        cases.push((format!("ciphertext truncated to {cut}"), r));
    }
    let mut r = good.clone();
    r.ciphertext = random_bytes(good.ciphertext.len());
    cases.push(("random ciphertext".into(), r));
    let mut r = good.clone();
    r.ciphertext = random_bytes(2000);
    cases.push(("oversized ciphertext".into(), r));
    let mut r = good.clone();
    r.key_id = "local:v99:000000000000000000000000".into();
    cases.push(("unknown key_id".into(), r));
    let mut r = good.clone();
    r.key_id = String::new();
    cases.push(("empty key_id".into(), r));
    let mut r = good.clone();
    r.key_id = "k".repeat(1025);
    cases.push(("oversized key_id".into(), r));
    let mut r = good.clone();
    r.key_id.push('0');
    cases.push(("key_id with a suffix".into(), r));
    cases.push((
        "random everything".into(),
        DecryptRequest {
            ciphertext: random_bytes(60),
            uid: uid(),
            key_id: hex::encode(random_bytes(8)),
            annotations: HashMap::from([(
                hex::encode(random_bytes(4)) + ".example.com",
                random_bytes(40),
            )]),
        },
    ));

    // A key_id that exists but did not seal this data: rotate, then claim the new id.
    let rotated = plugin.admin(&["rotate"]);
    assert!(
        rotated.status.success(),
        "{}",
        String::from_utf8_lossy(&rotated.stderr)
    );
    assert!(
        eventually(Duration::from_secs(10), async || status(&mut client)
            .await
            .key_id
            != sealed.key_id)
        .await,
        "rotation not picked up"
    );
    let new_key_id = status(&mut client).await.key_id;
    let mut r = good.clone();
    r.key_id = new_key_id;
    cases.push(("key_id of another existing root key".into(), r));

    let count = cases.len();
    for (name, request) in cases {
        let error = client.decrypt(request).await.expect_err(&name);
        assert!(
            matches!(error.code(), tonic::Code::InvalidArgument),
            "{name}: unexpected code {:?} ({})",
            error.code(),
            error.message()
        );
        let message = error.message();
        assert!(
            message == "decryption failed" || message.starts_with("key_id must be"),
            "{name}: wire message must be opaque, got {message:?}"
        );
    }
    assert!(count > 900, "{count} cases");
    // The untampered request still decrypts after all of that, under the old version.
    assert_eq!(decrypt(&mut client, &sealed).await.expect("decrypt"), seed);
    let logs = plugin.logs();
    assert!(
        logs.contains("ciphertext failed authentication"),
        "log has the precise reason"
    );
    assert!(logs.contains("unexpected annotation"));
    assert!(logs.contains("unknown root key id"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_durability() {
    let temp = tempfile::tempdir().expect("tempdir");
    let mut plugin = Plugin::start_local(temp.path());
    let mut sealed = Vec::new();
    {
        let mut client = plugin.client().await;
        for _ in 0..20 {
            let seed = random_bytes(32);
            sealed.push((encrypt(&mut client, &seed).await, seed));
        }
    }
    assert!(plugin.stop().success());
    let key_id_before = sealed[0].0.key_id.clone();
    plugin.spawn();
    let mut client = plugin.client().await;
    assert_eq!(
        status(&mut client).await.key_id,
        key_id_before,
        "key_id is stable across restarts"
    );
    for (envelope, seed) in &sealed {
        assert_eq!(
            &decrypt(&mut client, envelope)
                .await
                .expect("decrypt after restart"),
            seed
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_while_serving() {
    let temp = tempfile::tempdir().expect("tempdir");
    let plugin = Plugin::start_local(temp.path());
    let mut client = plugin.client().await;
    let v1 = status(&mut client).await.key_id;
    let old_seed = random_bytes(32);
    let old = encrypt(&mut client, &old_seed).await;

    // Two-step rotation: an added version only decrypts; Status and Encrypt keep v1.
    let added = plugin.admin(&["rotate", "--add-only"]);
    assert!(
        added.status.success(),
        "{}",
        String::from_utf8_lossy(&added.stderr)
    );
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(status(&mut client).await.key_id, v1);
    assert_eq!(encrypt(&mut client, &random_bytes(32)).await.key_id, v1);

    let promoted = plugin.admin(&["promote", "--version", "2"]);
    assert!(
        promoted.status.success(),
        "{}",
        String::from_utf8_lossy(&promoted.stderr)
    );
    assert!(
        eventually(Duration::from_secs(10), async || status(&mut client)
            .await
            .key_id
            != v1)
        .await
    );
    let v2 = status(&mut client).await.key_id;
    assert!(v2.starts_with("local:v2:"), "{v2}");
    let new = encrypt(&mut client, &random_bytes(32)).await;
    assert_eq!(new.key_id, v2, "Encrypt and Status move together");
    assert_eq!(
        decrypt(&mut client, &old).await.expect("old data decrypts"),
        old_seed
    );

    // One-step rotation picked up through SIGHUP as well.
    let rotated = plugin.admin(&["rotate"]);
    assert!(rotated.status.success());
    plugin.signal("HUP");
    assert!(
        eventually(Duration::from_secs(10), async || status(&mut client)
            .await
            .key_id
            .starts_with("local:v3:"))
        .await
    );
    assert_eq!(decrypt(&mut client, &old).await.expect("v1 data"), old_seed);

    // Removing v1 is explicit, and the primary cannot be removed.
    let refused = plugin.admin(&["remove-version", "--version", "3"]);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("primary"));
    let removed = plugin.admin(&["remove-version", "--version", "1"]);
    assert!(removed.status.success());
    tokio::time::sleep(Duration::from_millis(600)).await;
    // The KEK stays cached in this process, so check a fresh process: v1 data no longer opens.
    let mut fresh = plugin.client().await;
    let listed = plugin.admin(&["versions"]);
    let listed = String::from_utf8_lossy(&listed.stdout).into_owned();
    assert!(
        !listed.contains("v1\t") && listed.contains("v3\tprimary"),
        "{listed}"
    );
    assert!(decrypt(&mut fresh, &new).await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_concurrent_calls_over_many_connections() {
    let temp = tempfile::tempdir().expect("tempdir");
    let plugin = Plugin::start_local(temp.path());
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let mut client = plugin.client().await;
        tasks.push(tokio::spawn(async move {
            let mut calls = 0;
            for _ in 0..125 {
                let seed = random_bytes(32);
                let sealed = encrypt(&mut client, &seed).await;
                let opened = decrypt(&mut client, &sealed).await.expect("decrypt");
                assert_eq!(opened, seed, "wrong answer under concurrency");
                calls += 2;
            }
            calls
        }));
    }
    let mut total = 0;
    for task in tasks {
        total += task.await.expect("task");
    }
    assert_eq!(total, 4000);
}

fn status_reply(
    plugin: &Plugin,
    authority: &[u8],
    encoding: raw_h2::AuthorityEncoding,
    calls: usize,
) {
    let mut connection = raw_h2::RawConnection::connect(&plugin.socket);
    for call in 0..calls {
        let reply = connection
            .unary("/v2.KeyManagementService/Status", authority, encoding, &[])
            .unwrap_or_else(|e| {
                panic!(
                    "authority {:?} call {call}: {e}",
                    String::from_utf8_lossy(authority)
                )
            });
        assert_eq!(reply.grpc_status.as_deref(), Some("0"), "{reply:?}");
        let status = StatusResponse::decode(reply.message.as_slice()).expect("StatusResponse");
        assert_eq!(status.version, "v2");
        assert_eq!(status.healthz, "ok");
    }
}

#[test]
fn every_authority_form_real_clients_send() {
    let temp = tempfile::tempdir().expect("tempdir");
    let plugin = Plugin::start_local(temp.path());
    let path = plugin.socket.display().to_string();
    let encoded = path.replace('/', "%2F");
    for authority in ["localhost", path.as_str(), encoded.as_str(), "kms.sock"] {
        for encoding in [
            raw_h2::AuthorityEncoding::Plain,
            raw_h2::AuthorityEncoding::Indexed,
        ] {
            status_reply(&plugin, authority.as_bytes(), encoding, 3);
        }
    }
    // An Encrypt/Decrypt pair through a path authority, on one connection.
    let mut connection = raw_h2::RawConnection::connect(&plugin.socket);
    let request = EncryptRequest {
        plaintext: b"seed-over-raw-h2".to_vec(),
        uid: uid(),
    };
    let reply = connection
        .unary(
            "/v2.KeyManagementService/Encrypt",
            path.as_bytes(),
            raw_h2::AuthorityEncoding::Indexed,
            &request.encode_to_vec(),
        )
        .expect("encrypt");
    assert_eq!(reply.grpc_status.as_deref(), Some("0"));
    let sealed = kms_proto::kms_v2::EncryptResponse::decode(reply.message.as_slice())
        .expect("EncryptResponse");
    let reply = connection
        .unary(
            "/v2.KeyManagementService/Decrypt",
            path.as_bytes(),
            raw_h2::AuthorityEncoding::Indexed,
            &decrypt_request(&sealed).encode_to_vec(),
        )
        .expect("decrypt");
    let opened = kms_proto::kms_v2::DecryptResponse::decode(reply.message.as_slice())
        .expect("DecryptResponse");
    assert_eq!(opened.plaintext, b"seed-over-raw-h2");
}

#[test]
fn grpc_c_core_client_with_default_authority() {
    // Python grpcio (gRPC C-core) sends the percent-encoded socket path as :authority.
    let temp = tempfile::tempdir().expect("tempdir");
    let plugin = Plugin::start_local(temp.path());
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/grpcio_client.py");
    let output = std::process::Command::new("python3")
        .arg(script)
        .arg(&plugin.socket)
        .output()
        .expect("python3");
    assert!(
        output.status.success(),
        "grpcio client failed (install with `pip install grpcio`; .ci/run does):\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(String::from_utf8_lossy(&output.stdout).contains("healthz=ok round_trip=ok"));
}
