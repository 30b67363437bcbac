//! Local-backend specifics of the KMS v2 service, end to end through the real binary on a real
//! Unix socket: the two-step (add, promote, remove) rotation of local root key versions, and the
//! `:authority` forms real clients send. The contract, tamper, restart, rotation, concurrency
//! and economy scenarios run for every backend, this one included, in `conformance_local.rs`.

use crate::common;

use common::*;
use kms_proto::kms_v2::{EncryptRequest, StatusResponse};
use prost::Message;
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_step_rotation_and_version_removal() {
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
    // The running plugin drops v1's cached unwraps at its next poll (200 ms here) and refuses v1
    // data from then on, as a restarted plugin would: nodes never disagree about it.
    let started = Instant::now();
    assert!(
        eventually(Duration::from_secs(5), async || decrypt(&mut client, &old)
            .await
            .is_err())
        .await,
        "the running plugin still decrypts data of the removed version"
    );
    eprintln!(
        "v1 data refused {:?} after remove-version",
        started.elapsed()
    );
    let logs = plugin.logs();
    assert!(logs.contains("root key version removed"), "{logs}");
    let mut fresh = plugin.client().await;
    let listed = plugin.admin(&["versions"]);
    let listed = String::from_utf8_lossy(&listed.stdout).into_owned();
    assert!(
        !listed.contains("v1\t") && listed.contains("v3\tprimary"),
        "{listed}"
    );
    assert!(decrypt(&mut fresh, &new).await.is_ok());
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
    // The client needs `pip install grpcio` (.ci/run installs it).
    let output = testkit::expect_success(
        std::process::Command::new("python3")
            .arg(script)
            .arg(&plugin.socket),
    );
    assert!(String::from_utf8_lossy(&output.stdout).contains("healthz=ok round_trip=ok"));
}
