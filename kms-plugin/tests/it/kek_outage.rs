//! Encrypt while the root key hangs and the local KEK is past `max_age`, through the binary: the
//! AWS backend on moto's KMS server behind a proxy that stops answering (connections stay open,
//! nothing comes back). The aged KEK keeps serving: 16 concurrent Encrypts each return within
//! the bound while one background replacement waits on KMS, and once KMS answers again a new
//! KEK takes over. Needs moto (fails, never skips, without it): `bash .ci/provision-moto.sh`.
#![cfg(feature = "aws")]

use crate::common;

use common::moto::{Moto, backend_yaml, launch_plugin};
use common::proxy::Proxy;
use common::*;
use kms_plugin::envelope::format::WRAPPED_KEK_ANNOTATION;
use kms_proto::kms_v2::EncryptResponse;
use std::time::{Duration, Instant};

/// `local_kek.max_age` of the plugin under test.
const MAX_AGE: Duration = Duration::from_secs(1);
/// The bound for each Encrypt on an aged KEK while the root key hangs.
const BOUND: Duration = Duration::from_millis(100);
/// Concurrent Encrypts per wave.
const CALLERS: usize = 16;

/// Fires [`CALLERS`] Encrypts at once over one connection; returns each response and duration.
async fn wave(client: &Client, label: &str) -> Vec<(EncryptResponse, Duration)> {
    let tasks: Vec<_> = (0..CALLERS)
        .map(|i| {
            let mut client = client.clone();
            let seed = format!("{label} {i}").into_bytes();
            tokio::spawn(async move {
                let started = Instant::now();
                let sealed = encrypt(&mut client, &seed).await;
                (sealed, started.elapsed())
            })
        })
        .collect();
    let mut out = Vec::new();
    for task in tasks {
        out.push(task.await.expect("caller"));
    }
    out
}

fn wraps(metrics_port: u16) -> f64 {
    tokio::task::block_in_place(|| metric(metrics_port, "kms_plugin_local_kek_wraps_total"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encrypts_on_an_aged_kek_never_wait_for_a_hung_kms() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (moto, _, _) = Moto::start_with_key(dir.path()).await;
    let proxy = Proxy::start(moto.port).await;
    let metrics_port = free_port();
    let extra = format!(
        "metrics_address: 127.0.0.1:{metrics_port}\nlocal_kek:\n  max_age: {}s\n",
        MAX_AGE.as_secs()
    );
    let backend = backend_yaml(&proxy.endpoint(), "test-cluster");
    let plugin = launch_plugin(dir.path(), "outage", "1s", &extra, &backend);
    let client = plugin.client().await;
    let mut sealed = vec![encrypt(&mut client.clone(), b"before the outage").await];
    let aged_kek = sealed[0].annotations[WRAPPED_KEK_ANNOTATION].clone();
    assert_eq!(wraps(metrics_port), 1.0, "the first KEK");

    // KMS hangs from just before the KEK ages: a probe passing right after it aged would
    // otherwise resume the replacement and install a fresh KEK before the hang (a race the
    // probe's phase usually avoids, but not on a loaded machine).
    tokio::time::sleep(MAX_AGE - Duration::from_millis(300)).await;
    proxy.black_hole(true);
    tokio::time::sleep(Duration::from_millis(500)).await;
    // First wave: the background replacement starts and hangs. Second wave: after it gave up
    // (the SDK's operation timeout, 1.5 s), while KMS still hangs.
    for round in ["hung, replacing", "hung, replacement failed"] {
        let results = wave(&client, round).await;
        let mut took: Vec<Duration> = results.iter().map(|(_, took)| *took).collect();
        took.sort();
        println!(
            "{round}: {CALLERS} Encrypts, fastest {:?}, median {:?}, slowest {:?}",
            took[0],
            took[CALLERS / 2],
            took[CALLERS - 1]
        );
        for (response, took) in results {
            assert!(
                took < BOUND,
                "{round}: an Encrypt took {took:?} (bound {BOUND:?}):\n{}",
                plugin.logs()
            );
            assert_eq!(
                response.annotations[WRAPPED_KEK_ANNOTATION], aged_kek,
                "{round}: the aged KEK serves"
            );
            sealed.push(response);
        }
        if round == "hung, replacing" {
            assert_eq!(
                wraps(metrics_port),
                2.0,
                "one background replacement for all callers"
            );
            tokio::time::sleep(Duration::from_millis(2000)).await;
        }
    }
    assert!(proxy.swallowed() > 0, "the plugin did call the hung KMS");
    let mut status_client = client.clone();
    wait_status(
        &mut status_client,
        "the probe notices the hung KMS",
        Duration::from_secs(6),
        |healthz, _| healthz != "ok",
    )
    .await;

    // KMS answers again: the probe sees it within seconds and resumes the replacement that the
    // outage held up, without waiting for an Encrypt: a fresh KEK is installed.
    let kek_age =
        || tokio::task::block_in_place(|| metric(metrics_port, "kms_plugin_local_kek_age_seconds"));
    assert!(kek_age() > MAX_AGE.as_secs_f64(), "the aged KEK is current");
    proxy.black_hole(false);
    let back = Instant::now();
    while kek_age() > MAX_AGE.as_secs_f64() {
        assert!(
            back.elapsed() < Duration::from_secs(5),
            "no new KEK within 5 s of KMS's return:\n{}",
            plugin.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!(
        "KMS back: the held-up KEK replacement installed a new KEK {:?} later, before any Encrypt",
        back.elapsed()
    );
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let response = encrypt(&mut client.clone(), b"after the outage").await;
        let replaced = response.annotations[WRAPPED_KEK_ANNOTATION] != aged_kek;
        sealed.push(response);
        if replaced {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the aged KEK was never replaced after KMS came back:\n{}",
            plugin.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut decrypter = client.clone();
    for response in &sealed {
        decrypt(&mut decrypter, response)
            .await
            .expect("every seed sealed during the outage opens");
    }
}
