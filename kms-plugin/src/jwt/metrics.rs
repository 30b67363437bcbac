//! The signer's metrics: every call by method and gRPC status code with its latency, and the
//! key set it publishes (when it was loaded, how many keys). Served on the plugin's
//! `metrics_address` beside the KMS v2 metrics, also when the plugin is a signer only.

use crate::metrics::{RpcLabels, code_name, latency_histogram};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Every metric of the signer, in a registry of its own (prefix `kms_plugin_signer`).
pub struct SignerMetrics {
    registry: Registry,
    calls: Family<RpcLabels, Histogram, fn() -> Histogram>,
    key_set_time: Gauge<f64, AtomicU64>,
    published_keys: Gauge,
}

impl Default for SignerMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl SignerMetrics {
    /// Registers the signer's metrics.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("kms_plugin_signer");
        let calls = Family::<RpcLabels, Histogram, fn() -> Histogram>::new_with_constructor(
            latency_histogram as fn() -> Histogram,
        );
        registry.register(
            "operations_latency_seconds",
            "Latency of ExternalJWTSigner calls (Sign, FetchKeys, Metadata), by method and status code",
            calls.clone(),
        );
        let key_set_time = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "key_set_timestamp_seconds",
            "Unix time the published key set was loaded (FetchKeys' data_timestamp)",
            key_set_time.clone(),
        );
        let published_keys = Gauge::default();
        registry.register(
            "published_keys",
            "Keys FetchKeys publishes (the signing key and the verify-only keys)",
            published_keys.clone(),
        );
        Self {
            registry,
            calls,
            key_set_time,
            published_keys,
        }
    }

    /// Counts one call of `method` that ended with `code` after `elapsed`.
    pub fn observe(&self, method: &'static str, code: tonic::Code, elapsed: Duration) {
        self.calls
            .get_or_create(&RpcLabels {
                method_name: method,
                grpc_status_code: code_name(code),
            })
            .observe(elapsed.as_secs_f64());
    }

    /// Records the key set now published: when it was loaded and how many keys it has.
    pub fn key_set(&self, loaded_at: SystemTime, keys: usize) {
        if let Ok(at) = loaded_at.duration_since(UNIX_EPOCH) {
            self.key_set_time.set(at.as_secs_f64());
        }
        self.published_keys
            .set(i64::try_from(keys).unwrap_or(i64::MAX));
    }

    /// The registry to encode.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }
}
