//! A root key for unit tests: counts calls, can be taken down or slowed down.

use super::{KeyId, RootKey, RootKeyError, WrappedKey};
use crate::secret::AesKey;
use async_trait::async_trait;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

/// Wraps by XOR with a fixed pad (enough to tell keys apart); never use outside tests.
pub struct FakeRootKey {
    key_id: Mutex<KeyId>,
    /// Wrap calls seen.
    pub wraps: AtomicU64,
    /// Unwrap calls seen.
    pub unwraps: AtomicU64,
    /// When true every call fails as unavailable.
    pub down: AtomicBool,
    /// Delay added to every call, in milliseconds.
    pub delay_ms: AtomicU64,
    /// When true wraps return bytes that unwrap to a different key.
    pub corrupt: AtomicBool,
}

impl FakeRootKey {
    /// A healthy fake with the given key id.
    pub fn new(key_id: &str) -> Self {
        Self {
            key_id: Mutex::new(KeyId::new(key_id).expect("valid id")),
            wraps: AtomicU64::new(0),
            unwraps: AtomicU64::new(0),
            down: AtomicBool::new(false),
            delay_ms: AtomicU64::new(0),
            corrupt: AtomicBool::new(false),
        }
    }

    /// Simulates a rotation of the root key.
    pub fn set_key_id(&self, key_id: &str) {
        *self.key_id.lock().expect("lock") = KeyId::new(key_id).expect("valid id");
    }

    async fn behave(&self) -> Result<(), RootKeyError> {
        let delay = self.delay_ms.load(Ordering::Relaxed);
        if delay > 0 {
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
        if self.down.load(Ordering::Relaxed) {
            return Err(RootKeyError::Unavailable("fake backend is down".into()));
        }
        Ok(())
    }
}

fn pad(key_id: &KeyId, bytes: &[u8]) -> Vec<u8> {
    let seed = key_id.as_str().as_bytes();
    bytes
        .iter()
        .enumerate()
        .map(|(i, b)| b ^ seed[i % seed.len()] ^ 0x5a)
        .collect()
}

#[async_trait]
impl RootKey for FakeRootKey {
    fn kind(&self) -> &'static str {
        "fake"
    }

    fn primary_key_id(&self) -> KeyId {
        self.key_id.lock().expect("lock").clone()
    }

    async fn wrap_kek(&self, key: &AesKey) -> Result<WrappedKey, RootKeyError> {
        self.wraps.fetch_add(1, Ordering::SeqCst);
        self.behave().await?;
        let key_id = self.primary_key_id();
        let mut ciphertext = pad(&key_id, key.expose());
        if self.corrupt.load(Ordering::Relaxed) {
            ciphertext[0] ^= 1;
        }
        Ok(WrappedKey { ciphertext, key_id })
    }

    async fn unwrap_kek(&self, key_id: &KeyId, wrapped: &[u8]) -> Result<AesKey, RootKeyError> {
        self.unwraps.fetch_add(1, Ordering::SeqCst);
        self.behave().await?;
        AesKey::from_slice(&pad(key_id, wrapped))
            .ok_or_else(|| RootKeyError::Integrity(key_id.to_string()))
    }
}
