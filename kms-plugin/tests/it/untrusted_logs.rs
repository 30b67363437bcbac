//! Strings a caller controls reach the log escaped and truncated: no forged log lines, no
//! unbounded lines (through the real binary).

use crate::common;

use common::*;
use std::time::Duration;

/// A fake log line an attacker would like to smuggle in.
const FORGED: &str = "\n2026-01-01T00:00:00Z  INFO kms_plugin: forged line";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn annotation_keys_format_values_and_uids_are_escaped_and_truncated() {
    let temp = tempfile::tempdir().expect("tempdir");
    let plugin = Plugin::start_local(temp.path());
    let mut client = plugin.client().await;
    let sealed = encrypt(&mut client, &random_bytes(32)).await;

    let mut extra_key = decrypt_request(&sealed);
    extra_key.annotations.insert(
        format!("evil.example{FORGED}{}", "k".repeat(2000)),
        b"v".to_vec(),
    );
    extra_key.uid = format!("uid{FORGED}");
    assert!(client.decrypt(extra_key).await.is_err());

    let mut bad_format = decrypt_request(&sealed);
    let format_key = bad_format
        .annotations
        .keys()
        .find(|k| k.contains("format"))
        .expect("format annotation")
        .clone();
    bad_format
        .annotations
        .insert(format_key, format!("v9{FORGED}").into_bytes());
    assert!(client.decrypt(bad_format).await.is_err());

    tokio::time::sleep(Duration::from_millis(200)).await;
    let logs = plugin.logs();
    assert!(
        !logs.contains("forged line\n"),
        "a forged line reached the log:\n{logs}"
    );
    assert!(
        logs.contains(r#"unexpected annotation "evil.example\u{a}2026"#),
        "{logs}"
    );
    assert!(
        logs.contains(r#"unsupported envelope format "v9\u{a}2026"#),
        "{logs}"
    );
    assert!(
        logs.contains(r"uid\\u{a}2026") || logs.contains(r"uid\u{a}2026"),
        "{logs}"
    );
    assert!(
        !logs.contains(&"k".repeat(200)),
        "an annotation key logged untruncated"
    );
    assert!(logs.lines().all(|line| line.len() < 2000), "{logs}");
}
