//! Envelope behaviour against a counting fake root key.

use super::*;
use crate::root_key::fake::FakeRootKey;
use std::sync::atomic::Ordering;

fn envelope(fake: &Arc<FakeRootKey>, max_uses: u64, max_age: Duration) -> Envelope {
    Envelope::new(
        fake.clone(),
        KekPolicy {
            max_uses,
            max_age,
            wrap_timeout: Duration::from_millis(300),
        },
        UnwrapCache::new(100, Duration::from_secs(60), Duration::from_millis(300)),
    )
}

#[tokio::test]
async fn encrypts_share_one_wrap_until_the_use_limit() {
    let fake = Arc::new(FakeRootKey::new("root-1"));
    let env = envelope(&fake, 1000, Duration::from_secs(3600));
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
    let fake = Arc::new(FakeRootKey::new("root-1"));
    let env = envelope(&fake, 1000, Duration::from_secs(3600));
    let old = env.encrypt(b"old seed").await.expect("encrypt");
    fake.set_key_id("root-2");
    let new = env.encrypt(b"new seed").await.expect("encrypt");
    assert_eq!(new.key_id.as_str(), "root-2");
    assert_eq!(fake.wraps.load(Ordering::SeqCst), 2);
    let opened = env
        .decrypt(&old.ciphertext, old.key_id.as_str(), &old.annotations)
        .await
        .expect("old");
    assert_eq!(opened, b"old seed");
}

#[tokio::test]
async fn aged_kek_is_replaced_but_kept_while_the_root_key_is_down() {
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
    fake.down.store(false, Ordering::SeqCst);
    let third = env.encrypt(b"c").await.expect("encrypt");
    assert_ne!(
        first.annotations, third.annotations,
        "replaced once the backend is back"
    );
}

#[tokio::test]
async fn use_limit_is_hard_when_the_root_key_is_down() {
    let fake = Arc::new(FakeRootKey::new("root-1"));
    let env = envelope(&fake, 3, Duration::from_secs(3600));
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
        assert_eq!(task.await.expect("join").expect("decrypt"), b"seed");
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
    let fake = Arc::new(FakeRootKey::new("root-1"));
    let env = envelope(&fake, 1000, Duration::from_secs(3600));
    let sealed = env.encrypt(b"seed").await.expect("encrypt");
    fake.down.store(true, Ordering::SeqCst);
    assert_eq!(
        env.decrypt(
            &sealed.ciphertext,
            sealed.key_id.as_str(),
            &sealed.annotations
        )
        .await
        .expect("cached"),
        b"seed"
    );
    let other = envelope(&fake, 1000, Duration::from_secs(3600));
    let error = other
        .decrypt(
            &sealed.ciphertext,
            sealed.key_id.as_str(),
            &sealed.annotations,
        )
        .await
        .expect_err("uncached needs the backend");
    assert!(matches!(
        error,
        EnvelopeError::RootKey(RootKeyError::Unavailable(_))
    ));
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
