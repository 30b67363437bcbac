//! The shipped Prometheus rules and dashboard (`deploy/prometheus/`): the rules are valid for
//! `promtool check rules` and their unit tests pass under `promtool test rules`; every metric
//! name the plugin's rules and Grafana dashboard use is one a live plugin exposes. promtool comes from Debian's `prometheus` package,
//! which tests/run.sh installs; these tests fail, never skip, without it.

use crate::common;

use common::*;
use std::path::{Path, PathBuf};

fn prometheus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/prometheus")
}

#[test]
fn shipped_rules_check_and_their_unit_tests_pass() {
    for (rules, tests) in [
        ("kms-plugin-alerts.yaml", "kms-plugin-alerts.test.yaml"),
        ("pki-alerts.yaml", "pki-alerts.test.yaml"),
    ] {
        promtool(&["check", "rules", rules], &prometheus_dir(), None);
        promtool(&["test", "rules", tests], &prometheus_dir(), None);
    }
}

/// The metric names (`kms_plugin_*`, `process_*`) in `text`.
fn metric_names(text: &str) -> std::collections::BTreeSet<String> {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|word| word.starts_with("kms_plugin_") || word.starts_with("process_"))
        .map(str::to_owned)
        .collect()
}

/// Every query of the Grafana dashboard (which must be valid JSON with panels).
fn dashboard_queries() -> String {
    let text = std::fs::read_to_string(prometheus_dir().join("kms-plugin-dashboard.json"))
        .expect("dashboard");
    let dashboard: serde_json::Value = serde_json::from_str(&text).expect("dashboard JSON");
    let panels = dashboard["panels"].as_array().expect("panels");
    assert!(panels.len() >= 8, "{} panels", panels.len());
    panels
        .iter()
        .flat_map(|p| p["targets"].as_array().expect("targets").iter())
        .map(|t| t["expr"].as_str().expect("expr").to_owned())
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn the_plugin_rules_and_dashboard_use_only_metrics_the_plugin_exposes() {
    let rules =
        std::fs::read_to_string(prometheus_dir().join("kms-plugin-alerts.yaml")).expect("rules");
    let from_rules = metric_names(&rules);
    assert!(from_rules.len() >= 6, "{from_rules:?}");
    let from_dashboard = metric_names(&dashboard_queries());
    for wanted in [
        "kms_plugin_operations_latency_seconds_bucket",
        "kms_plugin_kek_cache_hits_total",
        "kms_plugin_root_key_operations_latency_seconds_count",
        "kms_plugin_local_kek_age_seconds",
        "kms_plugin_root_key_healthy",
    ] {
        assert!(
            from_dashboard.contains(wanted),
            "the dashboard lacks {wanted}"
        );
    }
    // Both sides: the KMS v2 socket and the token signer, each called once.
    let temp = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let key = temp.path().join("sa.key");
    common::jwt::make_ec_key(&key, "prime256v1");
    let signer_socket = temp.path().join("jwt.sock");
    let plugin = Plugin::start_with(
        temp.path(),
        &format!(
            "metrics_address: 127.0.0.1:{port}\njwt_signer:\n  socket: {}\n  max_token_expiration: 24h\n  key: {{ kind: local, local: {{ key_file: {} }} }}\n",
            signer_socket.display(),
            key.display()
        ),
    );
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let mut client = plugin.client().await;
        let sealed = encrypt(&mut client, b"traffic").await;
        decrypt(&mut client, &sealed).await.expect("decrypt");
        let channel = kms_plugin::client::channel(
            &kms_config::SocketAddress::Path(signer_socket.clone()),
            std::time::Duration::from_secs(5),
        )
        .await
        .expect("signer channel");
        let mut signer = common::jwt::Client::new(channel);
        common::jwt::sign(&mut signer).await.expect("sign");
    });
    let (_, exposed) = http_get(port, "/metrics");
    for name in from_rules.iter().chain(&from_dashboard) {
        let sample = exposed.lines().any(|line| {
            line.strip_prefix(name.as_str())
                .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
        });
        assert!(
            sample,
            "the rules or the dashboard use {name}, which /metrics does not expose"
        );
    }
}
