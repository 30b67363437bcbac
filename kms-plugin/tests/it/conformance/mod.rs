//! One conformance suite for every root key backend, through the real binary on a real Unix
//! socket (the way rustls runs one API suite per crypto provider).
//!
//! A [`Backend`] knows how to set up its root key (a state directory, a SoftHSM2 token, moto's
//! KMS), write its `backend:` config, rotate the root key its own way, count its remote
//! operations and take its remote side down and back. Each scenario below is generic over it;
//! [`suite!`] turns a list of scenarios into one `#[test]` each, so a failure names the backend
//! (the module, `conformance_<backend>`) and the scenario (the test).
//!
//! Scenarios: [`contract_limits`], [`round_trips`], [`tamper`], [`restart_durability`],
//! [`rotation_while_serving`], [`concurrency`], [`failed_unwraps_are_remembered`],
//! [`remote_call_economy`], [`startup_refusal`] and
//! [`fault_cases`] (only for backends with a remote side: the local backend has none).

#[cfg(feature = "aws")]
pub(crate) mod aws;
pub(crate) mod local;
#[cfg(feature = "pkcs11")]
pub(crate) mod pkcs11;

use crate::common::*;
use kms_plugin::envelope::format::WRAPPED_KEK_ANNOTATION;
use kms_proto::kms_v2::{DecryptRequest, EncryptRequest, EncryptResponse};
use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The probe interval of every scenario but the economy one.
pub(crate) const PROBE: &str = "1s";
const PROBE_INTERVAL: Duration = Duration::from_secs(1);
/// `backend_timeout` of every config ([`plugin_config`]).
const BACKEND_TIMEOUT: Duration = Duration::from_secs(2);
/// How long any call may take while the backend is down: its deadline plus scheduling slack.
const CALL_LIMIT: Duration = Duration::from_millis(3000);
/// Log filter: remote calls at debug (counted by the PKCS#11 fixture), the rest at info.
const LOG_LEVEL: &str = "kms_plugin::root_key::remote=debug,info";

/// A root key backend under test: its world and how to drive it.
#[allow(async_fn_in_trait)]
pub(crate) trait Backend: Sized {
    /// Sets up the root key (and its remote side) under `dir`, ready for a plugin to serve.
    async fn create(dir: &Path) -> Self;
    /// The `backend:` section of a plugin config.
    fn backend_yaml(&self) -> String;
    /// Extra environment of every plugin process.
    fn env(&self) -> Vec<(String, String)> {
        Vec::new()
    }
    /// Rotates the root key the backend's way while `plugin` serves (signalling it as needed).
    async fn rotate(&mut self, plugin: &Plugin);
    /// A key id of this backend's form that names no root key.
    fn unknown_key_id(&self) -> String;
    /// Remote `op` calls (`wrap` or `unwrap`) counted on the backend's side so far, or `None`
    /// when there is no remote side to count.
    fn remote_ops(&self, plugin: &Plugin, op: &str) -> Option<usize>;
    /// Remote `op` calls since [`Backend::remote_ops`] counted `before`; `None` when there is no
    /// remote side to count.
    fn remote_ops_since(&self, plugin: &Plugin, op: &str, before: Option<usize>) -> Option<usize> {
        before.map(|before| self.remote_ops(plugin, op).expect("count") - before)
    }
    /// The ways the remote side can go away while serving; empty when there is none.
    fn outages(&self) -> Vec<&'static str>;
    /// Starts `outage`.
    async fn go_down(&mut self, outage: &str);
    /// Ends `outage`.
    async fn come_back(&mut self, outage: &str);
    /// Breaks the root key so that the next start must fail; returns what the error must say.
    async fn break_root_key(&mut self) -> Vec<String>;
    /// Secret bytes that must never reach a log (root key material, PINs).
    fn secrets(&self) -> Vec<Vec<u8>>;
    /// Where the backend's emulator rejects a tampered wrapped KEK otherwise than the real
    /// service does; `None` (the default): every tampering must fail opaquely.
    fn emulator_deviation(&self) -> Option<EmulatorDeviation> {
        None
    }
}

/// An emulator answering a tampered wrapped KEK (or a mismatched key id) with an error the
/// real service does not give for it, so that the plugin (rightly) does not report an
/// integrity failure. The tamper scenario tolerates exactly this, only for those cases, and
/// checks the plugin's log names the emulator's error.
pub(crate) struct EmulatorDeviation {
    /// The gRPC code the plugin answers with then.
    pub code: tonic::Code,
    /// What the plugin's log says for each such call.
    pub log_text: &'static str,
}

/// A temp directory with a backend in it; starts plugins configured for that backend.
pub(crate) struct Fixture<B> {
    pub dir: tempfile::TempDir,
    pub backend: B,
}

/// A plugin started by a [`Fixture`], with its `/metrics` port.
pub(crate) struct Served {
    pub plugin: Plugin,
    pub metrics: u16,
}

impl std::ops::Deref for Served {
    type Target = Plugin;
    fn deref(&self) -> &Plugin {
        &self.plugin
    }
}

impl std::ops::DerefMut for Served {
    fn deref_mut(&mut self) -> &mut Plugin {
        &mut self.plugin
    }
}

impl Served {
    /// A root key operation count from `/metrics` (`outcome` as the metric labels it).
    pub(crate) fn root_key_ops(&self, operation: &str, outcome: &str) -> u64 {
        metric(
            self.metrics,
            &format!(
                "kms_plugin_root_key_operations_latency_seconds_count{{operation=\"{operation}\",outcome=\"{outcome}\"}}"
            ),
        ) as u64
    }
}

impl<B: Backend> Fixture<B> {
    pub(crate) async fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let backend = B::create(dir.path()).await;
        Self { dir, backend }
    }

    /// Writes `<name>.yaml` (probe interval `probe`, JSON logs, `/metrics` on a free port) and
    /// starts a plugin with it; returns once it reports healthy.
    pub(crate) fn start(&self, name: &str, probe: &str) -> Served {
        self.start_with(name, probe, "")
    }

    /// [`Fixture::start`] with `extra` top-level configuration lines.
    pub(crate) fn start_with(&self, name: &str, probe: &str, extra: &str) -> Served {
        let metrics = free_port();
        let yaml = plugin_config(
            &Plugin::socket_of(self.dir.path(), name),
            probe,
            &format!(
                "metrics_address: 127.0.0.1:{metrics}\nlog_format: json\nlog_level: {LOG_LEVEL}\n{extra}"
            ),
            &self.backend.backend_yaml(),
        );
        let plugin = Plugin::launch(self.dir.path(), name, &yaml, self.backend.env());
        Served { plugin, metrics }
    }

    /// Seals `plaintext` in a plugin process of its own, so that no later process has its
    /// local KEK cached.
    pub(crate) async fn seal_in_another_process(
        &self,
        name: &str,
        plaintext: &[u8],
    ) -> EncryptResponse {
        let mut plugin = self.start(name, PROBE);
        let sealed = encrypt(&mut plugin.client().await, plaintext).await;
        assert!(plugin.stop().success(), "{}", plugin.logs());
        sealed
    }
}

/// Whether `key` is a DNS subdomain (the KMS v2 annotation key rule).
pub(crate) fn is_fqdn(key: &str) -> bool {
    let labels: Vec<&str> = key.split('.').collect();
    key.len() <= 253
        && labels.len() >= 2
        && labels.iter().all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        })
}

/// Asserts `sealed` is within the KMS v2 limits and names `key_id`.
fn assert_within_limits(sealed: &EncryptResponse, key_id: &str) {
    assert!(
        !sealed.ciphertext.is_empty() && sealed.ciphertext.len() <= 1024,
        "ciphertext of {} bytes",
        sealed.ciphertext.len()
    );
    assert_eq!(sealed.key_id, key_id, "Encrypt's key_id equals Status's");
    let total: usize = sealed
        .annotations
        .iter()
        .map(|(k, v)| k.len() + v.len())
        .sum();
    assert!(total <= 32 * 1024, "annotations total {total} bytes");
    assert!(
        sealed.annotations.keys().all(|k| is_fqdn(k)),
        "annotation keys must be FQDNs: {:?}",
        sealed.annotations.keys()
    );
}

/// Restarts `plugin` and checks that Status reports `key_id` afterwards (`why` says what that
/// shows); returns a client of the restarted plugin.
async fn restart_on_key(plugin: &mut Plugin, key_id: &str, why: &str) -> Client {
    plugin.restart();
    let mut client = plugin.client().await;
    assert_eq!(status(&mut client).await.key_id, key_id, "{why}");
    client
}

/// The last `lines` lines of the plugin's log.
fn log_tail(plugin: &Plugin, lines: usize) -> String {
    let logs = plugin.logs();
    let all: Vec<&str> = logs.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Whether a Decrypt failed the one opaque way (see [`assert_opaque`]).
fn is_opaque(error: &tonic::Status) -> bool {
    error.code() == tonic::Code::InvalidArgument
        && (error.message() == "decryption failed" || error.message().starts_with("key_id must be"))
}

/// Asserts a Decrypt failed the one opaque way: InvalidArgument "decryption failed" (or the
/// documented key_id shape message for a key_id no backend could have issued).
fn assert_opaque(name: &str, error: &tonic::Status) {
    assert_eq!(
        error.code(),
        tonic::Code::InvalidArgument,
        "{name}: unexpected code ({})",
        error.message()
    );
    let message = error.message();
    assert!(
        message == "decryption failed" || message.starts_with("key_id must be"),
        "{name}: wire message must be opaque, got {message:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Scenarios.

/// Version, health, key_id, ciphertext and annotation limits of the KMS v2 contract.
pub(crate) async fn contract_limits<B: Backend>() {
    let fixture = Fixture::<B>::new().await;
    let plugin = fixture.start("contract", PROBE);
    let mut client = plugin.client().await;

    let status = status(&mut client).await;
    assert_eq!(status.version, "v2");
    assert_eq!(status.healthz, "ok");
    assert!(
        !status.key_id.is_empty() && status.key_id.len() <= 1024,
        "key_id {:?}",
        status.key_id
    );
    let (code, body) = http_get(plugin.metrics, "/healthz");
    assert_eq!((code, body.trim()), (200, "ok"), "/healthz");

    let mut plaintexts = Vec::new();
    for len in [1usize, 32, 500, 995, 996] {
        let plaintext = random_bytes(len);
        let sealed = encrypt(&mut client, &plaintext).await;
        assert_within_limits(&sealed, &status.key_id);
        if len == 996 {
            assert_eq!(
                sealed.ciphertext.len(),
                1024,
                "the largest plaintext fills the ciphertext limit exactly"
            );
        }
        assert_eq!(
            decrypt(&mut client, &sealed).await.expect("decrypt"),
            plaintext
        );
        plaintexts.push(plaintext);
    }
    for (what, bad) in [("empty", Vec::new()), ("997 bytes", random_bytes(997))] {
        let error = client
            .encrypt(EncryptRequest {
                plaintext: bad,
                uid: uid(),
            })
            .await
            .expect_err(what);
        assert_eq!(
            error.code(),
            tonic::Code::InvalidArgument,
            "{what} plaintext: {error:?}"
        );
    }

    // Nothing secret reaches the log: no plaintext, no key material, no PIN.
    let logs = plugin.logs();
    assert!(logs.contains("Encrypt"), "calls are logged: {logs}");
    for plaintext in plaintexts.iter().filter(|p| p.len() >= 8) {
        assert!(
            !logs.contains(&hex::encode(plaintext)),
            "plaintext leaked into the log"
        );
    }
    for secret in fixture.backend.secrets() {
        assert!(
            !logs.contains(&hex::encode(&secret))
                && !logs.contains(String::from_utf8_lossy(&secret).as_ref()),
            "a secret leaked into the log"
        );
    }
}

/// Plaintexts of every length class and content round-trip, over one and over two connections.
pub(crate) async fn round_trips<B: Backend>() {
    let fixture = Fixture::<B>::new().await;
    let plugin = fixture.start("round-trips", PROBE);
    let mut client = plugin.client().await;
    let mut other = plugin.client().await;
    let mut plaintexts: Vec<Vec<u8>> = vec![
        vec![0],
        vec![0; 996],
        vec![0xff; 64],
        (0..=255).collect(),
        b"{\"kind\":\"Secret\",\"data\":{\"password\":\"hunter2\"}}".to_vec(),
    ];
    for _ in 0..40 {
        let len = 1 + (random_bytes(2).iter().map(|&b| b as usize).sum::<usize>() * 2) % 996;
        plaintexts.push(random_bytes(len));
    }
    let key_id = status(&mut client).await.key_id;
    for plaintext in &plaintexts {
        let sealed = encrypt(&mut client, plaintext).await;
        assert_within_limits(&sealed, &key_id);
        assert_eq!(
            &decrypt(&mut other, &sealed).await.expect("decrypt"),
            plaintext,
            "{} bytes",
            plaintext.len()
        );
    }
    // Two encryptions of one plaintext differ (fresh nonce) and both decrypt.
    let a = encrypt(&mut client, &plaintexts[3]).await;
    let b = encrypt(&mut client, &plaintexts[3]).await;
    assert_ne!(a.ciphertext, b.ciphertext);
    assert_eq!(decrypt(&mut client, &a).await.expect("a"), plaintexts[3]);
    assert_eq!(decrypt(&mut client, &b).await.expect("b"), plaintexts[3]);
}

/// Every tampering of a sealed request fails with the one opaque error, and the untampered
/// request still decrypts afterwards.
pub(crate) async fn tamper<B: Backend>() {
    let mut fixture = Fixture::<B>::new().await;
    let plugin = fixture.start("tamper", PROBE);
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
        // One bit in every byte of every annotation value (each flip of the wrapped KEK costs
        // a remote unwrap, so not all eight).
        for byte in 0..value.len() {
            let mut r = good.clone();
            r.annotations.get_mut(key).expect("key")[byte] ^= 1 << (byte % 8);
            cases.push((format!("annotation {key} byte {byte}"), r));
        }
        let mut r = good.clone();
        r.annotations.remove(key);
        cases.push((format!("missing annotation {key}"), r));
        let mut r = good.clone();
        let value = r.annotations.remove(key).expect("key");
        r.annotations.insert(format!("x{key}"), value);
        cases.push((format!("renamed annotation {key}"), r));
        let mut r = good.clone();
        r.annotations.get_mut(key).expect("key").clear();
        cases.push((format!("empty annotation {key}"), r));
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
    r.key_id = fixture.backend.unknown_key_id();
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
    fixture.backend.rotate(&plugin).await;
    let new_key_id = wait_status(&mut client, "rotation", Duration::from_secs(10), |h, k| {
        h == "ok" && k != sealed.key_id
    })
    .await;
    let mut r = good.clone();
    r.key_id = new_key_id;
    cases.push(("key_id of another existing root key".into(), r));

    let count = cases.len();
    let deviation = fixture.backend.emulator_deviation();
    let mut wrong = Vec::new();
    let mut deviating = 0;
    for (name, request) in cases {
        let wrapped_kek = name.starts_with(&format!("annotation {WRAPPED_KEK_ANNOTATION} byte"))
            || name == "key_id of another existing root key";
        match client.decrypt(request).await {
            Ok(_) => wrong.push(format!("{name}: decrypted")),
            Err(error)
                if wrapped_kek && deviation.as_ref().is_some_and(|d| d.code == error.code()) =>
            {
                deviating += 1;
            }
            Err(error) if !is_opaque(&error) => {
                wrong.push(format!("{name}: {:?} {:?}", error.code(), error.message()))
            }
            Err(_) => {}
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of {count} tampered requests did not fail with the opaque InvalidArgument:\n{}\nlog tail:\n{}",
        wrong.len(),
        wrong.join("\n"),
        log_tail(&plugin, 10)
    );
    assert!(count > 400, "only {count} cases");
    if let Some(deviation) = deviation {
        let logged = plugin.logs().matches(deviation.log_text).count();
        assert!(
            logged >= deviating,
            "{deviating} calls deviated, but the log names {:?} {logged} times",
            deviation.log_text
        );
        println!("{deviating} of {count} tampered requests met the emulator's deviation");
    }
    assert_eq!(
        decrypt(&mut client, &sealed).await.expect("untampered"),
        seed,
        "the untampered request still decrypts after all of that"
    );
    let logs = plugin.logs();
    for reason in [
        "ciphertext failed authentication",
        "unexpected annotation",
        "unknown root key id",
    ] {
        assert!(
            logs.contains(reason),
            "the log has the precise reason {reason:?}"
        );
    }
}

/// What was sealed before a restart decrypts after it, under the same key_id.
pub(crate) async fn restart_durability<B: Backend>() {
    let fixture = Fixture::<B>::new().await;
    let mut plugin = fixture.start("restart", PROBE);
    let mut sealed = Vec::new();
    let key_id = {
        let mut client = plugin.client().await;
        for _ in 0..20 {
            let seed = random_bytes(32);
            sealed.push((encrypt(&mut client, &seed).await, seed));
        }
        status(&mut client).await.key_id
    };
    let mut client = restart_on_key(&mut plugin, &key_id, "key_id is stable across restarts").await;
    for (envelope, seed) in &sealed {
        assert_eq!(
            &decrypt(&mut client, envelope)
                .await
                .expect("decrypt after restart"),
            seed
        );
    }
}

/// A rotation while calls are in flight: Status and Encrypt move to the new key_id together,
/// no call fails, and data sealed before decrypts after (also after a restart).
pub(crate) async fn rotation_while_serving<B: Backend>() {
    let mut fixture = Fixture::<B>::new().await;
    let mut plugin = fixture.start("rotation", PROBE);
    let mut client = plugin.client().await;
    let v1 = status(&mut client).await.key_id;
    let old_seed = random_bytes(32);
    let old = encrypt(&mut client, &old_seed).await;

    // Background load through the rotation: every round trip succeeds under v1 or v2.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut load = Vec::new();
    for _ in 0..2 {
        let (mut c, stop) = (plugin.client().await, stop.clone());
        load.push(tokio::spawn(async move {
            let mut seen = HashSet::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let seed = random_bytes(32);
                let sealed = encrypt(&mut c, &seed).await;
                assert_eq!(
                    decrypt(&mut c, &sealed).await.expect("during rotation"),
                    seed
                );
                seen.insert(sealed.key_id);
            }
            seen
        }));
    }

    fixture.backend.rotate(&plugin).await;
    let v2 = wait_status(&mut client, "rotation", Duration::from_secs(10), |h, k| {
        h == "ok" && k != v1
    })
    .await;
    assert!(v2.len() <= 1024, "{v2}");
    let new = encrypt(&mut client, b"sealed after the rotation").await;
    assert_eq!(new.key_id, v2, "Encrypt and Status move together");
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for task in load {
        let seen = task.await.expect("load");
        assert!(
            seen.iter().all(|k| *k == v1 || *k == v2),
            "key ids seen: {seen:?}"
        );
        assert!(seen.contains(&v2), "load saw no Encrypt under the new key");
    }
    assert_eq!(
        decrypt(&mut client, &old).await.expect("old data decrypts"),
        old_seed
    );

    let mut client = restart_on_key(&mut plugin, &v2, "the rotation is durable").await;
    assert_eq!(decrypt(&mut client, &old).await.expect("v1 data"), old_seed);
    assert_eq!(
        decrypt(&mut client, &new).await.expect("v2 data"),
        b"sealed after the rotation"
    );
}

/// 8 connections × 100 round trips at once, data crossing connections: no wrong answer.
pub(crate) async fn concurrency<B: Backend>() {
    const CONNECTIONS: usize = 8;
    const ROUND_TRIPS: usize = 100;
    let fixture = Fixture::<B>::new().await;
    let plugin = fixture.start("concurrency", PROBE);
    let mut tasks = Vec::new();
    for _ in 0..CONNECTIONS {
        let mut client = plugin.client().await;
        tasks.push(tokio::spawn(async move {
            let mut sealed = Vec::new();
            for _ in 0..ROUND_TRIPS {
                let seed = random_bytes(1 + random_bytes(1)[0] as usize);
                let envelope = encrypt(&mut client, &seed).await;
                let opened = decrypt(&mut client, &envelope).await.expect("decrypt");
                assert_eq!(opened, seed, "wrong answer under concurrency");
                sealed.push((envelope, seed));
            }
            sealed
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.expect("task"));
    }
    assert_eq!(all.len(), CONNECTIONS * ROUND_TRIPS);
    // Everything sealed on one connection opens on another.
    let mut client = plugin.client().await;
    for (envelope, seed) in all.iter().step_by(7) {
        assert_eq!(&decrypt(&mut client, envelope).await.expect("cross"), seed);
    }
}

/// 10,000 Encrypts cost at most one root key wrap (and the unwrap proving the new local KEK),
/// and 10,000 Decrypts after a restart exactly one unwrap, counted by the plugin's `/metrics`
/// and, where there is a remote side, by the token or KMS emulator. A tampered wrapped KEK
/// costs one unwrap, not retried.
/// Root key unwraps of every outcome so far.
fn unwraps(plugin: &Served) -> u64 {
    [
        "ok",
        "unavailable",
        "integrity",
        "unknown_key",
        "denied",
        "error",
    ]
    .iter()
    .map(|outcome| plugin.root_key_ops("unwrap", outcome))
    .sum()
}

/// A bogus Decrypt sent again costs no further root key unwrap: a key id naming no root key and
/// a wrapped KEK that fails authentication are each remembered for a few seconds (the second
/// only where the emulator rejects it as the real service does). The sealed data still decrypts.
pub(crate) async fn failed_unwraps_are_remembered<B: Backend>() {
    let fixture = Fixture::<B>::new().await;
    let plugin = fixture.start("failures", "1h");
    let mut client = plugin.client().await;
    let sealed = encrypt(&mut client, b"seed").await;
    let good = decrypt_request(&sealed);
    let mut unknown = good.clone();
    unknown.key_id = fixture.backend.unknown_key_id();
    let mut cases = vec![("a key id naming no root key", unknown)];
    if fixture.backend.emulator_deviation().is_none() {
        let mut tampered = good.clone();
        tampered
            .annotations
            .get_mut(WRAPPED_KEK_ANNOTATION)
            .expect("wrapped KEK")[20] ^= 1;
        cases.push(("a tampered wrapped KEK", tampered));
    }
    for (what, request) in cases {
        let before = unwraps(&plugin);
        for _ in 0..20 {
            let refused = client.decrypt(request.clone()).await.expect_err(what);
            assert!(is_opaque(&refused), "{what}: {refused:?}");
        }
        let spent = unwraps(&plugin) - before;
        println!("{what}: 20 identical Decrypts, {spent} root key unwraps");
        assert!(
            (1..=2).contains(&spent),
            "{what}: 20 identical Decrypts cost {spent} root key unwraps"
        );
    }
    assert_eq!(decrypt(&mut client, &sealed).await.expect("good"), b"seed");
}

pub(crate) async fn remote_call_economy<B: Backend>() {
    const N: usize = 10_000;
    let fixture = Fixture::<B>::new().await;
    // No periodic probe during the counts (the first one runs at startup, before them).
    let mut plugin = fixture.start("economy", "1h");
    let client = plugin.client().await;
    let wraps = plugin.root_key_ops("wrap", "ok");
    let proofs = plugin.root_key_ops("unwrap", "ok");
    let remote_wraps = fixture.backend.remote_ops(&plugin, "wrap");
    let sealed = many(&client, N, 8, |mut c, i| async move {
        encrypt(&mut c, format!("seed {i}").as_bytes()).await
    })
    .await;
    let wrapped: HashSet<_> = sealed
        .iter()
        .map(|s| s.annotations[WRAPPED_KEK_ANNOTATION].clone())
        .collect();
    assert_eq!(wrapped.len(), 1, "all seeds sealed under one local KEK");
    let cost = plugin.root_key_ops("wrap", "ok") - wraps;
    assert!(
        cost <= 1,
        "{N} Encrypts cost {cost} root key wraps (/metrics)"
    );
    // A new local KEK is proven by one unwrap before its first use.
    let proofs = plugin.root_key_ops("unwrap", "ok") - proofs;
    assert_eq!(proofs, cost, "{N} Encrypts cost {proofs} proving unwraps");
    if let Some(remote) = fixture
        .backend
        .remote_ops_since(&plugin, "wrap", remote_wraps)
    {
        // Some counts (moto's request log) cannot tell a wrap from the unwrap proving it.
        assert!(
            remote as u64 <= cost + proofs,
            "{N} Encrypts cost {remote} remote calls"
        );
        println!("{N} Encrypts: {cost} wrap(s) in /metrics, {remote} remote");
    }

    plugin.restart();
    let client = plugin.client().await;
    let unwraps = plugin.root_key_ops("unwrap", "ok");
    let remote_unwraps = fixture.backend.remote_ops(&plugin, "unwrap");
    let sealed = Arc::new(sealed);
    let shared = sealed.clone();
    let opened = many(&client, N, 16, move |mut c, i| {
        let shared = shared.clone();
        async move { decrypt(&mut c, &shared[i]).await.expect("decrypt") }
    })
    .await;
    for (i, plaintext) in opened.iter().enumerate() {
        assert_eq!(plaintext, format!("seed {i}").as_bytes());
    }
    let cost = plugin.root_key_ops("unwrap", "ok") - unwraps;
    assert_eq!(
        cost, 1,
        "{N} Decrypts after a restart cost {cost} unwraps (/metrics)"
    );
    if let Some(remote) = fixture
        .backend
        .remote_ops_since(&plugin, "unwrap", remote_unwraps)
    {
        assert_eq!(
            remote, 1,
            "{N} Decrypts after a restart cost {remote} remote unwraps"
        );
        println!("{N} Decrypts after a restart: {cost} unwrap in /metrics, {remote} remote");
    }

    // A tampered wrapped KEK is an integrity failure: asked once, not retried, not "unavailable".
    let mut bad = sealed[0].clone();
    let kek = bad
        .annotations
        .get_mut(WRAPPED_KEK_ANNOTATION)
        .expect("kek annotation");
    let middle = kek.len() / 2;
    kek[middle] ^= 1;
    let remote_before = fixture.backend.remote_ops(&plugin, "unwrap");
    let error = decrypt(&mut client.clone(), &bad)
        .await
        .expect_err("tampered wrapped KEK");
    assert_opaque("tampered wrapped KEK", &error);
    assert_eq!(plugin.root_key_ops("unwrap", "integrity"), 1);
    if let Some(remote) = fixture
        .backend
        .remote_ops_since(&plugin, "unwrap", remote_before)
    {
        assert_eq!(remote, 1, "the tampered KEK reached the backend once");
    }
}

/// A broken root key refuses startup with a clear message naming what is wrong, leaking no
/// secret.
pub(crate) async fn startup_refusal<B: Backend>() {
    let mut fixture = Fixture::<B>::new().await;
    let mut plugin = fixture.start("refusal", PROBE);
    assert!(plugin.stop().success());
    let expected = fixture.backend.break_root_key().await;
    let stderr = serve_must_fail(
        &plugin.config,
        &fixture.backend.env(),
        Duration::from_secs(15),
    );
    for text in expected {
        assert!(
            stderr.contains(&text),
            "startup error must say {text:?}:\n{stderr}"
        );
    }
    for secret in fixture.backend.secrets() {
        assert!(
            !stderr.contains(String::from_utf8_lossy(&secret).as_ref())
                && !stderr.contains(&hex::encode(&secret)),
            "a secret leaked into the startup error"
        );
    }
}

/// While the remote side is down: cached Decrypts and Encrypts (current local KEK) keep
/// working, an uncached Decrypt fails as Unavailable, no call blocks past its deadline, and
/// Status turns unhealthy within a probe (plus the probe's own deadline) with a short reason;
/// when the remote side returns the plugin recovers by itself.
pub(crate) async fn fault_cases<B: Backend>() {
    let mut fixture = Fixture::<B>::new().await;
    let outages = fixture.backend.outages();
    assert!(
        !outages.is_empty(),
        "fault cases need a remote side; this backend has none"
    );
    // One seed per outage whose local KEK the serving process has not cached.
    let mut uncached = Vec::new();
    for i in 0..outages.len() {
        uncached.push(
            fixture
                .seal_in_another_process(&format!("earlier-{i}"), b"sealed by an earlier process")
                .await,
        );
    }
    // `report`: each failed probe shows in Status at once, which is what this suite checks per
    // backend (the default `serve` policy is tested in `backend_outage`).
    let plugin = fixture.start_with("fault", PROBE, "health:\n  backend_outage: report\n");
    let mut client = plugin.client().await;
    let cached = encrypt(&mut client, b"sealed before the outage").await;

    for (outage, uncached) in outages.iter().zip(&uncached) {
        fixture.backend.go_down(outage).await;
        let started = Instant::now();
        let opened = bounded("cached Decrypt", CALL_LIMIT, decrypt(&mut client, &cached)).await;
        assert_eq!(
            opened.unwrap_or_else(|e| panic!("{outage}: cached KEK keeps decrypting: {e:?}")),
            b"sealed before the outage"
        );
        let during = bounded(
            "Encrypt",
            CALL_LIMIT,
            encrypt(&mut client, b"sealed during the outage"),
        )
        .await;
        assert_eq!(during.key_id, cached.key_id, "{outage}");
        assert_eq!(
            during.annotations[WRAPPED_KEK_ANNOTATION], cached.annotations[WRAPPED_KEK_ANNOTATION],
            "{outage}: the current local KEK keeps encrypting"
        );
        let opened = bounded("Decrypt", CALL_LIMIT, decrypt(&mut client, &during)).await;
        assert_eq!(
            opened.expect("decrypt during the outage"),
            b"sealed during the outage"
        );
        let error = bounded(
            "uncached Decrypt",
            CALL_LIMIT,
            decrypt(&mut client, uncached),
        )
        .await
        .expect_err("the remote side is down");
        assert_eq!(
            error.code(),
            tonic::Code::Unavailable,
            "{outage}: uncached Decrypt: {error:?}"
        );
        // Unhealthy within one probe interval plus the probe's deadline (a hung backend
        // answers nothing, so the probe can only time out); every Status answers at once.
        let limit = PROBE_INTERVAL + BACKEND_TIMEOUT + Duration::from_millis(1000);
        let reason = loop {
            let status = bounded("Status", Duration::from_millis(500), status(&mut client)).await;
            if status.healthz != "ok" {
                break status.healthz;
            }
            assert!(
                started.elapsed() < limit,
                "{outage}: still healthy {:?} after the outage began",
                started.elapsed()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        println!(
            "{outage}: unhealthy {:?} after the outage began: {reason}",
            started.elapsed()
        );
        assert!(
            !reason.is_empty()
                && reason.len() <= 300
                && !reason.contains('\n')
                && !reason.contains(" { "),
            "{outage}: the reason must be short, one line, no debug dump: {reason:?}"
        );
        // A fixed reason, the same on /healthz and /readyz; the backend's text is in the log.
        let fixed = [
            kms_plugin::health::PROBE_TIMED_OUT,
            kms_plugin::health::PROBE_FAILED,
        ];
        assert!(fixed.contains(&reason.as_str()), "{outage}: {reason:?}");
        for path in ["/healthz", "/readyz"] {
            let (code, body) = http_get(plugin.metrics, path);
            assert_eq!(code, 503, "{outage}: {path}");
            assert!(fixed.contains(&body.trim()), "{outage}: {path}: {body:?}");
        }
        assert!(
            plugin
                .logs()
                .contains("root key probe failed; reporting unhealthy"),
            "{outage}: the details go to the log"
        );

        fixture.backend.come_back(outage).await;
        wait_status(&mut client, "recovery", Duration::from_secs(10), |h, _| {
            h == "ok"
        })
        .await;
        assert_eq!(
            decrypt(&mut client, uncached)
                .await
                .expect("after recovery"),
            b"sealed by an earlier process",
            "{outage}: recovered by itself"
        );
    }
}

/// Generates one `#[test]` per named scenario for `$backend`:
/// `suite!(local::Local: contract_limits, tamper);`.
macro_rules! suite {
    ($backend:ty: $($scenario:ident),+ $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $scenario() {
                conformance::$scenario::<$backend>().await;
            }
        )+
    };
}
pub(crate) use suite;
