//! A root key outage through the binary, on moto's KMS server behind a relay that refuses every
//! connection while stopped: under `health.backend_outage: serve` (the default) Status stays "ok"
//! while the cached local KEK serves and says so in `kms-plugin status` and the metrics, until
//! `health.outage_grace` ends; under `report` the outage shows at once; the backend's return is
//! seen within 5 s; a key disabled meanwhile is a revocation, never served through the grace.
//! Needs moto (fails, never skips, without it): `bash .ci/provision-moto.sh`.
#![cfg(feature = "aws")]

use crate::common;

use common::moto::{Moto, Relay, backend_yaml, launch_plugin};
use common::*;
use kms_plugin::health::{OUTAGE_GRACE_ENDED, ROOT_KEY_REVOKED};
use std::time::{Duration, Instant};

/// The plugins' `health_probe_interval`.
const PROBE: &str = "5s";
/// The short plugin's `health.outage_grace`.
const GRACE: Duration = Duration::from_secs(8);
/// How soon after the backend's return Status must say "ok" (the bound).
const RECOVERY: Duration = Duration::from_secs(5);

/// `kms-plugin status [--verbose]` on plugin `name` in `dir`: exit code and stdout.
fn status_text(dir: &std::path::Path, name: &str, verbose: bool) -> (i32, String) {
    let mut command = status_command(Plugin::socket_of(dir, name));
    if verbose {
        command.arg("--verbose");
    }
    let out = command.output().expect("kms-plugin status");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

fn gauge(port: u16, series: &str) -> f64 {
    tokio::task::block_in_place(|| metric(port, series))
}

async fn healthz(client: &Client) -> String {
    status(&mut client.clone()).await.healthz
}

/// Waits until `client`'s healthz satisfies `ok`; returns how long that took.
async fn until(
    client: &Client,
    what: &str,
    limit: Duration,
    ok: impl Fn(&str) -> bool,
) -> Duration {
    let started = Instant::now();
    wait_status(&mut client.clone(), what, limit, |h, _| ok(h)).await;
    started.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_is_served_within_its_grace_reported_after_it_and_over_within_seconds() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (moto, kms, key) = Moto::start_with_key(dir.path()).await;
    let mut relay = Relay::start(moto.port).await;
    let backend = backend_yaml(&relay.endpoint(), "test-cluster");
    let metrics_port = free_port();
    let short = launch_plugin(
        dir.path(),
        "short",
        PROBE,
        &format!(
            "metrics_address: 127.0.0.1:{metrics_port}\nhealth:\n  outage_grace: {}s\n",
            GRACE.as_secs()
        ),
        &backend,
    );
    let report = launch_plugin(
        dir.path(),
        "report",
        PROBE,
        "health:\n  backend_outage: report\n",
        &backend,
    );
    let long = launch_plugin(dir.path(), "long", PROBE, "", &backend);
    let (short_c, report_c, long_c) = (
        short.client().await,
        report.client().await,
        long.client().await,
    );
    let sealed = encrypt(&mut short_c.clone(), b"sealed before the outage").await;
    for client in [&report_c, &long_c] {
        encrypt(&mut client.clone(), b"a KEK of its own").await;
    }
    let (code, text) = status_text(dir.path(), "short", true);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("backend: reachable"), "{text}");
    assert!(!text.lines().any(|l| l.starts_with("outage:")), "{text}");
    assert!(
        text.contains("health.backend_outage: serve, outage_grace 8s"),
        "{text}"
    );

    // The outage: every connection to KMS is refused.
    relay.stop();
    let noticed = until(
        &report_c,
        "report: the outage shows",
        Duration::from_secs(12),
        |h| h != "ok",
    )
    .await;
    println!("policy report: Status unhealthy {noticed:?} after the outage began");
    let (code, text) = status_text(dir.path(), "short", false);
    assert_eq!(code, 0, "serve: still healthy\n{text}");
    assert!(text.contains("healthz: ok"), "{text}");
    assert!(
        text.contains("outage: serving from cache, backend unreachable for")
            && text.contains(", grace until "),
        "{text}"
    );
    assert_eq!(healthz(&long_c).await, "ok");
    assert_eq!(gauge(metrics_port, "kms_plugin_status_healthy"), 1.0);
    assert_eq!(gauge(metrics_port, "kms_plugin_root_key_healthy"), 0.0);
    assert!(gauge(metrics_port, "kms_plugin_root_key_outage_seconds") > 0.0);
    let left = gauge(
        metrics_port,
        "kms_plugin_root_key_outage_grace_remaining_seconds",
    );
    assert!(left > 0.0 && left <= GRACE.as_secs_f64(), "{left}");
    encrypt(&mut short_c.clone(), b"sealed during the outage").await;
    assert_eq!(
        decrypt(&mut short_c.clone(), &sealed)
            .await
            .expect("cached"),
        b"sealed before the outage"
    );

    // The grace ends: the fixed reason, and `status` fails.
    until(
        &short_c,
        "short: the grace ends",
        GRACE + Duration::from_secs(2),
        |h| h == OUTAGE_GRACE_ENDED,
    )
    .await;
    let (code, text) = status_text(dir.path(), "short", false);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("grace ended at"), "{text}");
    assert_eq!(gauge(metrics_port, "kms_plugin_status_healthy"), 0.0);
    assert_eq!(healthz(&long_c).await, "ok", "a 24h grace still runs");

    // KMS answers again: every plugin reports ok within seconds, not at its next interval.
    relay.resume().await;
    let back = Instant::now();
    for (name, client) in [("short", &short_c), ("report", &report_c)] {
        until(client, name, RECOVERY, |h| h == "ok").await;
    }
    println!("backend back: Status ok again after {:?}", back.elapsed());
    assert_eq!(
        gauge(metrics_port, "kms_plugin_root_key_outage_seconds"),
        0.0
    );
    let (_, text) = status_text(dir.path(), "short", true);
    assert!(text.contains("backend: reachable"), "{text}");

    // A second outage, during which the key is disabled: once KMS says so, that is a
    // revocation, and the long grace does not cover it.
    relay.stop();
    until(
        &report_c,
        "report: second outage",
        Duration::from_secs(12),
        |h| h != "ok",
    )
    .await;
    assert_eq!(healthz(&long_c).await, "ok");
    kms.disable_key()
        .key_id(key.rsplit_once("key/").expect("key ARN").1)
        .send()
        .await
        .expect("DisableKey");
    relay.resume().await;
    let took = until(&long_c, "long: revoked", Duration::from_secs(8), |h| {
        h == ROOT_KEY_REVOKED
    })
    .await;
    println!("disabled during the outage: revoked {took:?} after KMS answered");
    let (code, text) = status_text(dir.path(), "long", false);
    assert_eq!(code, 1, "{text}");
    assert!(!text.contains("serving from cache"), "{text}");
}
