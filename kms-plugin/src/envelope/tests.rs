//! Envelope behaviour against a counting fake root key.

use super::*;
use crate::health::KEK_PROOF_FAILED;
use crate::root_key::fake::FakeRootKey;
use std::sync::atomic::Ordering;
use std::time::Instant;

/// Deadline of every fake root key call.
const TIMEOUT: Duration = Duration::from_millis(300);
/// Least time between failed background replacements.
const RETRY: Duration = Duration::from_millis(400);

fn envelope(fake: &Arc<FakeRootKey>, max_uses: u64, max_age: Duration) -> Envelope {
    envelope_reporting(fake, max_uses, max_age, Arc::new(Health::default()))
}

/// A fake root key `root-1` and an envelope over it whose KEKs serve `max_uses` Encrypts or an
/// hour.
fn with_fake(max_uses: u64) -> (Arc<FakeRootKey>, Envelope) {
    let fake = Arc::new(FakeRootKey::new("root-1"));
    let env = envelope(&fake, max_uses, Duration::from_secs(3600));
    (fake, env)
}

fn envelope_reporting(
    fake: &Arc<FakeRootKey>,
    max_uses: u64,
    max_age: Duration,
    health: Arc<Health>,
) -> Envelope {
    Envelope::new(
        fake.clone(),
        KekPolicy {
            max_uses,
            max_age,
            wrap_timeout: TIMEOUT,
            retry_interval: RETRY,
        },
        UnwrapCache::new(100, Duration::from_secs(60), TIMEOUT),
        health,
    )
}

/// Decrypts what `env` or another envelope sealed, as the service would from an EncryptResponse.
async fn open(env: &Envelope, sealed: &Sealed) -> Result<Zeroizing<Vec<u8>>, EnvelopeError> {
    env.decrypt(
        &sealed.ciphertext,
        sealed.key_id.as_str(),
        &sealed.annotations,
    )
    .await
}

/// Polls `check` every 5 ms for at most `limit`.
async fn eventually(limit: Duration, check: impl Fn() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if check() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    check()
}

/// Runs `n` Encrypts at once; returns each result with its own duration.
async fn concurrent_encrypts(
    env: &Arc<Envelope>,
    n: usize,
) -> Vec<(Result<Sealed, EnvelopeError>, Duration)> {
    let tasks: Vec<_> = (0..n)
        .map(|_| {
            let env = env.clone();
            tokio::spawn(async move {
                let started = Instant::now();
                let result = env.encrypt(b"seed").await;
                (result, started.elapsed())
            })
        })
        .collect();
    let mut out = Vec::new();
    for task in tasks {
        out.push(task.await.expect("join"));
    }
    out
}

#[tokio::test]
async fn encrypts_share_one_wrap_until_the_use_limit() {
    let (fake, env) = with_fake(1000);
    for _ in 0..1000 {
        env.encrypt(b"seed").await.expect("encrypt");
    }
    assert_eq!(fake.wraps.load(Ordering::SeqCst), 1);
    env.encrypt(b"seed").await.expect("encrypt");
    assert_eq!(
        fake.wraps.load(Ordering::SeqCst),
        2,
        "the 1001st use needs a fresh KEK"
    );
}

#[tokio::test]
async fn key_id_change_rotates_at_once_and_old_data_still_opens() {
    let (fake, env) = with_fake(1000);
    let old = env.encrypt(b"old seed").await.expect("encrypt");
    fake.set_key_id("root-2");
    let new = env.encrypt(b"new seed").await.expect("encrypt");
    assert_eq!(new.key_id.as_str(), "root-2");
    assert_eq!(fake.wraps.load(Ordering::SeqCst), 2);
    let opened = open(&env, &old).await.expect("old");
    assert_eq!(opened.as_slice(), b"old seed");
}

#[tokio::test]
async fn aged_kek_is_replaced_in_the_background_and_kept_while_the_root_key_is_down() {
    let fake = Arc::new(FakeRootKey::new("root-1"));
    let env = envelope(&fake, 1000, Duration::from_millis(50));
    let first = env.encrypt(b"a").await.expect("encrypt");
    tokio::time::sleep(Duration::from_millis(80)).await;
    fake.down.store(true, Ordering::SeqCst);
    let second = env
        .encrypt(b"b")
        .await
        .expect("old KEK keeps serving while the backend is down");
    assert_eq!(first.annotations, second.annotations, "same wrapped KEK");
    assert!(
        eventually(TIMEOUT, || fake.wraps.load(Ordering::SeqCst) == 2).await,
        "one background attempt"
    );
    let failed_at = Instant::now();
    // Within the retry interval, Encrypts use the aged KEK and start no further attempt.
    while failed_at.elapsed() < RETRY / 2 {
        let sealed = env.encrypt(b"c").await.expect("encrypt");
        assert_eq!(first.annotations, sealed.annotations);
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    assert_eq!(fake.wraps.load(Ordering::SeqCst), 2, "no retry storm");
    fake.down.store(false, Ordering::SeqCst);
    tokio::time::sleep(RETRY).await;
    let during = env.encrypt(b"d").await.expect("encrypt");
    assert_eq!(
        first.annotations, during.annotations,
        "the Encrypt that starts the replacement does not wait for it"
    );
    assert!(
        eventually(TIMEOUT, || env.keks().current().is_some_and(|kek| *kek
            .wrapped
            != *first.annotations[format::WRAPPED_KEK_ANNOTATION]))
        .await,
        "replaced once the backend is back"
    );
    let after = env.encrypt(b"e").await.expect("encrypt");
    assert_ne!(first.annotations, after.annotations);
    assert_eq!(fake.wraps.load(Ordering::SeqCst), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encrypts_on_an_aged_kek_never_wait_for_a_hung_root_key() {
    let fake = Arc::new(FakeRootKey::new("root-1"));
    let health = Arc::new(Health::default());
    let env = Arc::new(envelope_reporting(
        &fake,
        1000,
        Duration::from_millis(50),
        health.clone(),
    ));
    let first = env.encrypt(b"a").await.expect("encrypt");
    tokio::time::sleep(Duration::from_millis(80)).await;
    fake.delay_ms.store(60_000, Ordering::SeqCst);
    // Twice: while the background wrap hangs, and again after it timed out.
    for round in 0..2 {
        for (result, took) in concurrent_encrypts(&env, 16).await {
            let sealed = result.expect("the aged KEK serves");
            assert_eq!(sealed.annotations, first.annotations);
            assert!(
                took < Duration::from_millis(100),
                "round {round}: an Encrypt took {took:?}"
            );
        }
        assert_eq!(
            fake.wraps.load(Ordering::SeqCst),
            2,
            "one background wrap in flight for all"
        );
        tokio::time::sleep(TIMEOUT + Duration::from_millis(50)).await;
    }
    assert_eq!(
        env.keks().proof_failures(),
        0,
        "an outage is no failed proof"
    );
    assert_ne!(health.get().healthz, KEK_PROOF_FAILED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callers_without_a_usable_kek_share_one_wrap() {
    let fake = Arc::new(FakeRootKey::new("root-1"));
    let env = Arc::new(envelope(&fake, 20, Duration::from_secs(3600)));
    fake.delay_ms.store(50, Ordering::SeqCst);
    let sealed: Vec<_> = concurrent_encrypts(&env, 16)
        .await
        .into_iter()
        .map(|(result, _)| result.expect("first KEK"))
        .collect();
    assert_eq!(fake.wraps.load(Ordering::SeqCst), 1, "first Encrypts");
    assert_eq!(fake.unwraps.load(Ordering::SeqCst), 1, "one proof");
    assert!(
        sealed
            .iter()
            .all(|s| s.annotations == sealed[0].annotations)
    );
    for _ in 0..4 {
        env.encrypt(b"seed").await.expect("encrypt");
    }
    for (result, _) in concurrent_encrypts(&env, 16).await {
        result.expect("second KEK");
    }
    assert_eq!(fake.wraps.load(Ordering::SeqCst), 2, "use limit reached");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callers_without_a_kek_give_up_together_when_the_root_key_hangs() {
    let fake = Arc::new(FakeRootKey::new("root-1"));
    fake.delay_ms.store(60_000, Ordering::SeqCst);
    let env = Arc::new(envelope(&fake, 1000, Duration::from_secs(3600)));
    let started = Instant::now();
    for (result, _) in concurrent_encrypts(&env, 16).await {
        let error = result.expect_err("no KEK");
        assert!(matches!(error, EnvelopeError::Timeout(_)), "{error}");
    }
    assert!(
        started.elapsed() < TIMEOUT + Duration::from_millis(200),
        "all waited on one wrap, not in turn: {:?}",
        started.elapsed()
    );
    assert_eq!(fake.wraps.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_kek_that_fails_its_proof_is_never_used() {
    let fake = Arc::new(FakeRootKey::new("root-1"));
    let health = Arc::new(Health::default());
    let env = envelope_reporting(&fake, 1000, Duration::from_millis(50), health.clone());
    fake.corrupt.store(true, Ordering::SeqCst);
    let error = env.encrypt(b"seed").await.expect_err("unproven KEK");
    assert!(
        matches!(error, EnvelopeError::RootKey(RootKeyError::Backend(_))),
        "{error}"
    );
    assert!(env.keks().current().is_none(), "nothing installed");
    assert_eq!(env.keks().proof_failures(), 1);
    let state = health.get();
    assert!(!state.healthy);
    assert_eq!(state.healthz, KEK_PROOF_FAILED);

    fake.corrupt.store(false, Ordering::SeqCst);
    let good = env.encrypt(b"good").await.expect("proven KEK");
    assert_ne!(health.get().healthz, KEK_PROOF_FAILED, "cleared by a proof");

    // An aged KEK keeps serving while its replacement fails the proof.
    tokio::time::sleep(Duration::from_millis(80)).await;
    fake.corrupt.store(true, Ordering::SeqCst);
    let aged = env.encrypt(b"aged").await.expect("aged KEK");
    assert!(eventually(TIMEOUT, || env.keks().proof_failures() == 2).await);
    assert_eq!(health.get().healthz, KEK_PROOF_FAILED);
    let still = env.encrypt(b"still").await.expect("aged KEK");
    assert_eq!(good.annotations, aged.annotations);
    assert_eq!(good.annotations, still.annotations);
    fake.corrupt.store(false, Ordering::SeqCst);
    let reader = envelope(&fake, 1000, Duration::from_secs(3600));
    for (sealed, seed) in [(&good, &b"good"[..]), (&still, &b"still"[..])] {
        let opened = open(&reader, sealed)
            .await
            .expect("another process opens it");
        assert_eq!(opened.as_slice(), seed);
    }
}
#[tokio::test]
async fn use_limit_is_hard_when_the_root_key_is_down() {
    let (fake, env) = with_fake(3);
    for _ in 0..3 {
        env.encrypt(b"x").await.expect("encrypt");
    }
    fake.down.store(true, Ordering::SeqCst);
    let error = env.encrypt(b"x").await.expect_err("must rotate but cannot");
    assert!(
        matches!(error, EnvelopeError::RootKey(RootKeyError::Unavailable(_))),
        "{error}"
    );
}

#[tokio::test]
async fn concurrent_decrypt_misses_share_one_unwrap() {
    let fake = Arc::new(FakeRootKey::new("root-1"));
    let writer = envelope(&fake, 1000, Duration::from_secs(3600));
    let sealed: Vec<_> = futures_collect(&writer, 50).await;
    // A fresh process: nothing cached. A slow backend makes the misses overlap.
    let reader = Arc::new(envelope(&fake, 1000, Duration::from_secs(3600)));
    fake.delay_ms.store(50, Ordering::SeqCst);
    let before = fake.unwraps.load(Ordering::SeqCst);
    let mut tasks = Vec::new();
    for _ in 0..20 {
        for sealed in &sealed {
            let reader = reader.clone();
            let sealed = (
                sealed.ciphertext.clone(),
                sealed.key_id.clone(),
                sealed.annotations.clone(),
            );
            tasks.push(tokio::spawn(async move {
                reader
                    .decrypt(&sealed.0, sealed.1.as_str(), &sealed.2)
                    .await
            }));
        }
    }
    for task in tasks {
        assert_eq!(
            task.await.expect("join").expect("decrypt").as_slice(),
            b"seed"
        );
    }
    assert_eq!(
        fake.unwraps.load(Ordering::SeqCst) - before,
        1,
        "1000 decrypts, one local KEK, one unwrap"
    );
    assert_eq!(reader.unwraps().misses(), 1);
}

#[tokio::test]
async fn cached_keks_keep_decrypting_while_the_root_key_is_down() {
    let (fake, env) = with_fake(1000);
    let sealed = env.encrypt(b"seed").await.expect("encrypt");
    fake.down.store(true, Ordering::SeqCst);
    assert_eq!(
        open(&env, &sealed).await.expect("cached").as_slice(),
        b"seed"
    );
    let other = envelope(&fake, 1000, Duration::from_secs(3600));
    let error = open(&other, &sealed)
        .await
        .expect_err("uncached needs the backend");
    assert!(matches!(
        error,
        EnvelopeError::RootKey(RootKeyError::Unavailable(_))
    ));
}

/// An envelope over `fake` whose unwrap cache keeps KEKs for `ttl`.
fn envelope_with_ttl(fake: &Arc<FakeRootKey>, ttl: Duration) -> Envelope {
    Envelope::new(
        fake.clone(),
        KekPolicy {
            max_uses: 1000,
            max_age: Duration::from_secs(3600),
            wrap_timeout: TIMEOUT,
            retry_interval: RETRY,
        },
        UnwrapCache::new(100, ttl, TIMEOUT),
        Arc::new(Health::default()),
    )
}

#[tokio::test]
async fn the_newest_own_kek_obeys_forget_and_the_time_to_live() {
    let fake = Arc::new(FakeRootKey::new("root-1"));
    let env = envelope_with_ttl(&fake, Duration::from_secs(60));
    let first = env.encrypt(b"one").await.expect("encrypt");
    fake.set_key_id("root-2");
    let second = env.encrypt(b"two").await.expect("encrypt under a new KEK");
    assert_ne!(first.annotations, second.annotations);
    fake.down.store(true, Ordering::SeqCst);
    // The newest KEK (from the slot) and the one before it (from the cache) both open.
    assert_eq!(
        open(&env, &second).await.expect("newest").as_slice(),
        b"two"
    );
    assert_eq!(open(&env, &first).await.expect("older").as_slice(), b"one");
    assert_eq!(env.unwraps().hits(), 2);
    assert_eq!(
        fake.unwraps.load(Ordering::SeqCst),
        2,
        "only the two proofs"
    );
    // A forgotten key's newest KEK is gone from the slot too.
    env.unwraps().forget(&second.key_id).await;
    let error = open(&env, &second).await.expect_err("forgotten");
    assert!(
        matches!(error, EnvelopeError::RootKey(RootKeyError::Unavailable(_))),
        "{error}"
    );
    fake.down.store(false, Ordering::SeqCst);
    assert_eq!(
        open(&env, &second)
            .await
            .expect("unwrapped again")
            .as_slice(),
        b"two"
    );
    assert_eq!(env.unwraps().misses(), 2);

    // Past the time to live, the newest KEK needs the root key again.
    let short = envelope_with_ttl(&fake, Duration::from_millis(150));
    let sealed = short.encrypt(b"seed").await.expect("encrypt");
    fake.down.store(true, Ordering::SeqCst);
    assert_eq!(
        open(&short, &sealed).await.expect("fresh").as_slice(),
        b"seed"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let error = open(&short, &sealed).await.expect_err("expired");
    assert!(
        matches!(error, EnvelopeError::RootKey(RootKeyError::Unavailable(_))),
        "{error}"
    );
}

#[tokio::test]
async fn a_hanging_root_key_never_blocks_past_the_deadline() {
    let fake = Arc::new(FakeRootKey::new("root-1"));
    fake.delay_ms.store(10_000, Ordering::SeqCst);
    let env = envelope(&fake, 1000, Duration::from_secs(3600));
    let started = std::time::Instant::now();
    let error = env.encrypt(b"seed").await.expect_err("times out");
    assert!(matches!(error, EnvelopeError::Timeout(_)), "{error}");
    assert!(started.elapsed() < Duration::from_secs(2));
}

async fn futures_collect(env: &Envelope, n: usize) -> Vec<Sealed> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(env.encrypt(b"seed").await.expect("encrypt"));
    }
    out
}

#[test]
fn kek_ciphers_zeroize_their_aes_round_keys() {
    fn zeroized_on_drop<T: zeroize::ZeroizeOnDrop>() {}
    // Compiles only with the `zeroize` feature of `aes`, which aes-gcm's own does not enable.
    zeroized_on_drop::<aes::Aes256>();
}
