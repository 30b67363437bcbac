//! Metrics, health endpoints and logs of the real binary: what operators scrape and read.

use crate::common;

use base64::Engine;
use common::*;
use sha2::{Digest, Sha256};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_health_endpoints_and_json_logs_without_secrets() {
    let temp = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let plugin = Plugin::start_with(
        temp.path(),
        &format!("metrics_address: 127.0.0.1:{port}\nlog_format: json\n"),
    );
    let mut client = plugin.client().await;
    let status = status(&mut client).await;
    let mut secrets = Vec::new();
    let mut uids = Vec::new();
    for _ in 0..5 {
        let seed = random_bytes(32);
        let request_uid = uid();
        let sealed = client
            .encrypt(kms_proto::kms_v2::EncryptRequest {
                plaintext: seed.clone(),
                uid: request_uid.clone(),
            })
            .await
            .expect("encrypt")
            .into_inner();
        assert_eq!(decrypt(&mut client, &sealed).await.expect("decrypt"), seed);
        uids.push(request_uid);
        secrets.push(seed);
    }
    let mut bad = decrypt_request(&encrypt(&mut client, b"tampered-later").await);
    bad.ciphertext[20] ^= 1;
    assert!(client.decrypt(bad).await.is_err());

    for path in ["/healthz", "/readyz", "/livez"] {
        let (code, body) = http_get(port, path);
        assert_eq!((code, body.trim()), (200, "ok"), "{path}");
    }
    let (code, metrics) = http_get(port, "/metrics");
    assert_eq!(code, 200);
    for expected in [
        "kms_plugin_operations_latency_seconds_bucket{le=\"0.0001\",method_name=\"Encrypt\",grpc_status_code=\"OK\"}",
        "kms_plugin_operations_latency_seconds_count{method_name=\"Decrypt\",grpc_status_code=\"InvalidArgument\"} 1",
        "kms_plugin_operations_latency_seconds_count{method_name=\"Encrypt\",grpc_status_code=\"OK\"} 6",
        "kms_plugin_operations_latency_seconds_count{method_name=\"Decrypt\",grpc_status_code=\"OK\"} 5",
        "kms_plugin_root_key_operations_latency_seconds_count{operation=\"wrap\",outcome=\"ok\"}",
        "kms_plugin_root_key_operations_latency_seconds_count{operation=\"unwrap\",outcome=\"ok\"}",
        "kms_plugin_kek_cache_hits_total 6",
        "kms_plugin_kek_cache_size 1",
        "kms_plugin_local_kek_uses 6",
        "kms_plugin_local_kek_age_seconds",
        "kms_plugin_root_key_last_successful_probe_timestamp_seconds",
        "kms_plugin_root_key_healthy 1",
        "kms_plugin_build_info{version=",
    ] {
        assert!(
            metrics.contains(expected),
            "missing {expected} in\n{metrics}"
        );
    }
    let hash = hex::encode(Sha256::digest(status.key_id.as_bytes()));
    assert!(metrics.contains(&format!(
        "kms_plugin_key_id_hash{{key_id_hash=\"{hash}\"}} 1"
    )));
    assert!(
        !metrics.contains(&status.key_id),
        "raw key_id must never be exported"
    );

    // Logs: one JSON object per line; RPC lines carry the request uid; no secret anywhere.
    let logs = plugin.logs();
    for line in logs.lines() {
        serde_json::from_str::<serde_json::Value>(line)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
    }
    for request_uid in &uids {
        assert!(
            logs.contains(&format!("\"uid\":\"{request_uid}\"")),
            "uid {request_uid} not logged"
        );
    }
    let mut forbidden: Vec<String> = Vec::new();
    for secret in &secrets {
        forbidden.push(hex::encode(secret));
        forbidden.push(base64::engine::general_purpose::STANDARD.encode(secret));
    }
    for entry in std::fs::read_dir(&plugin.state_dir).expect("state") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "key") {
            let key = std::fs::read(&path).expect("key");
            forbidden.push(hex::encode(&key));
            forbidden.push(base64::engine::general_purpose::STANDARD.encode(&key));
        }
    }
    for secret in forbidden {
        assert!(
            !logs.contains(&secret) && !metrics.contains(&secret),
            "a secret reached the logs or metrics"
        );
    }
}

/// `/metrics` as served to a plain client passes `promtool check metrics` (counters named by
/// their `_total` series), a scraper that asks for OpenMetrics gets it, and the standard
/// process metrics are there.
#[test]
fn metrics_pass_promtool_and_negotiate_openmetrics() {
    let temp = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let plugin = Plugin::start_with(temp.path(), &format!("metrics_address: 127.0.0.1:{port}\n"));
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let mut client = plugin.client().await;
        let sealed = encrypt(&mut client, b"counted").await;
        decrypt(&mut client, &sealed).await.expect("decrypt");
    });
    let (code, head, body) = http_get_with(port, "/metrics", "");
    assert_eq!(code, 200, "{body}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: text/plain; version=0.0.4; charset=utf-8"),
        "{head}"
    );
    assert!(
        body.contains("# TYPE kms_plugin_kek_cache_hits_total counter"),
        "{body}"
    );
    assert!(!body.contains("# EOF"), "{body}");
    assert_promtool_accepts(&body, temp.path());

    let accept = "Accept: application/openmetrics-text;version=1.0.0;q=0.5,text/plain;version=0.0.4;q=0.4\r\n";
    let (code, head, open) = http_get_with(port, "/metrics", accept);
    assert_eq!(code, 200, "{open}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/openmetrics-text; version=1.0.0; charset=utf-8"),
        "{head}"
    );
    assert!(open.ends_with("# EOF\n"), "{open}");
    assert!(
        open.contains("# TYPE kms_plugin_kek_cache_hits counter"),
        "{open}"
    );

    assert!(metric(port, "process_resident_memory_bytes") > 1e6);
    assert!(metric(port, "process_open_fds") >= 3.0);
    assert!(metric(port, "process_max_fds") >= metric(port, "process_open_fds"));
    assert!(body.contains("\nprocess_cpu_seconds_total "), "{body}");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs_f64();
    let started = metric(port, "process_start_time_seconds");
    assert!(
        started <= now + 1.0 && started > now - 600.0,
        "{started} vs {now}"
    );
}

/// Valid but risky settings start the plugin and are each named once at WARN.
#[test]
fn risky_settings_are_warned_about_at_start() {
    let temp = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let plugin = Plugin::start_with(
        temp.path(),
        &format!(
            "metrics_address: 0.0.0.0:{port}\nbackend_timeout: 3s\nlocal_kek: {{ max_uses: 1000, max_age: 45d }}\n"
        ),
    );
    let logs = plugin.logs();
    for needle in [
        format!("metrics_address 0.0.0.0:{port} is not a loopback address"),
        "backend_timeout 3s is at or above kube-apiserver's default KMS timeout".to_owned(),
        "local_kek.max_age is 45 days, beyond 30".to_owned(),
    ] {
        assert_eq!(logs.matches(&needle).count(), 1, "{needle}\n{logs}");
    }
}
