//! A decorator that times and counts every call to a root key backend.

use super::{KeyId, RootKey, RootKeyError, WrappedKey};
use crate::metrics::Metrics;
use crate::secret::AesKey;
use async_trait::async_trait;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Wraps a backend; behaviour is unchanged, every call is recorded in [`Metrics`].
pub struct Instrumented {
    inner: Arc<dyn RootKey>,
    metrics: Arc<Metrics>,
}

impl Instrumented {
    /// Instruments `inner`.
    pub fn new(inner: Arc<dyn RootKey>, metrics: Arc<Metrics>) -> Self {
        Self { inner, metrics }
    }

    fn record<T>(
        &self,
        operation: &'static str,
        started: Instant,
        result: &Result<T, RootKeyError>,
    ) {
        let outcome = match result {
            Ok(_) => "ok",
            Err(RootKeyError::Unavailable(_)) => "unavailable",
            Err(RootKeyError::Integrity(_)) => "integrity",
            Err(RootKeyError::UnknownKey(_)) => "unknown_key",
            Err(RootKeyError::Denied(_)) => "denied",
            Err(_) => "error",
        };
        self.metrics
            .observe_backend(operation, outcome, started.elapsed());
    }
}

#[async_trait]
impl RootKey for Instrumented {
    fn kind(&self) -> &'static str {
        self.inner.kind()
    }

    fn primary_key_id(&self) -> KeyId {
        self.inner.primary_key_id()
    }

    async fn wrap_kek(&self, key: &AesKey) -> Result<WrappedKey, RootKeyError> {
        let started = Instant::now();
        let result = self.inner.wrap_kek(key).await;
        self.record("wrap", started, &result);
        result
    }

    async fn unwrap_kek(&self, key_id: &KeyId, wrapped: &[u8]) -> Result<AesKey, RootKeyError> {
        let started = Instant::now();
        let result = self.inner.unwrap_kek(key_id, wrapped).await;
        self.record("unwrap", started, &result);
        result
    }

    async fn refresh(&self) -> Result<(), RootKeyError> {
        let started = Instant::now();
        let result = self.inner.refresh().await;
        self.record("refresh", started, &result);
        result
    }

    async fn key_state(&self) -> Result<(), RootKeyError> {
        let started = Instant::now();
        let result = self.inner.key_state().await;
        self.record("key_state", started, &result);
        result
    }

    fn refresh_interval(&self) -> Duration {
        self.inner.refresh_interval()
    }

    async fn version_state(&self, key_id: &KeyId) -> Result<(), RootKeyError> {
        let started = Instant::now();
        let result = self.inner.version_state(key_id).await;
        self.record("version_state", started, &result);
        result
    }

    fn holds(&self, key_id: &KeyId) -> Option<bool> {
        self.inner.holds(key_id)
    }

    async fn rotate(&self) -> Result<KeyId, RootKeyError> {
        let started = Instant::now();
        let result = self.inner.rotate().await;
        self.record("rotate", started, &result);
        result
    }
}
