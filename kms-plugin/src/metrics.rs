//! Prometheus metrics. Names mirror kube-apiserver's own envelope metrics where they overlap
//! (`…_operations_latency_seconds` with `method_name` and `grpc_status_code`, buckets from
//! 100 µs doubling to ~52 s, key ids shown only as SHA-256 hashes).

use crate::envelope::Envelope;
use crate::health::Health;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use sha2::{Digest, Sha256};
use std::sync::Mutex;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, UNIX_EPOCH};

/// Labels of a gRPC call.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RpcLabels {
    /// `Status`, `Encrypt` or `Decrypt`.
    pub method_name: &'static str,
    /// The gRPC status code name, e.g. `OK` or `InvalidArgument`.
    pub grpc_status_code: &'static str,
}

/// Labels of a root key backend call.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BackendLabels {
    /// `wrap`, `unwrap`, `refresh`, `key_state` or `rotate`.
    pub operation: &'static str,
    /// `ok` or an error class (`unavailable`, `integrity`, `unknown_key`, `denied`, `error`).
    pub outcome: &'static str,
}

/// Labels of the key id hash.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KeyIdLabels {
    /// Hex SHA-256 of the current key id.
    pub key_id_hash: String,
}

/// Labels of build information.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BuildLabels {
    /// Crate version.
    pub version: String,
    /// Root key backend in use.
    pub backend: String,
}

/// The latency buckets of every call histogram: 100 µs doubling to ~52 s.
pub(crate) fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0001, 2.0, 20))
}

/// Every metric the plugin exports.
pub struct Metrics {
    registry: Mutex<Registry>,
    rpc: Family<RpcLabels, Histogram, fn() -> Histogram>,
    /// The series of successful Decrypt and Encrypt calls, resolved once: every call observes
    /// one of them, and a lookup in `rpc` hashes the labels under a lock.
    decrypt_ok: Histogram,
    encrypt_ok: Histogram,
    backend: Family<BackendLabels, Histogram, fn() -> Histogram>,
    cache_size: Gauge,
    cache_hits: Counter,
    cache_misses: Counter,
    kek_uses: Gauge,
    kek_age: Gauge<f64, AtomicU64>,
    kek_max_uses: Gauge,
    kek_max_age: Gauge<f64, AtomicU64>,
    kek_wraps: Counter,
    kek_proof_failures: Counter,
    key_id: Family<KeyIdLabels, Gauge>,
    last_probe: Gauge<f64, AtomicU64>,
    healthy: Gauge,
    status_healthy: Gauge,
    outage: Gauge<f64, AtomicU64>,
    grace_left: Gauge<f64, AtomicU64>,
}

impl Metrics {
    /// Registers every metric; `backend` names the root key kind in build info.
    pub fn new(backend: &str) -> Self {
        let mut registry = Registry::with_prefix("kms_plugin");
        let rpc = Family::<RpcLabels, Histogram, fn() -> Histogram>::new_with_constructor(
            latency_histogram as fn() -> Histogram,
        );
        registry.register(
            "operations_latency_seconds",
            "Latency of KMS v2 gRPC calls, by method and status code",
            rpc.clone(),
        );
        let backend_family =
            Family::<BackendLabels, Histogram, fn() -> Histogram>::new_with_constructor(
                latency_histogram as fn() -> Histogram,
            );
        registry.register(
            "root_key_operations_latency_seconds",
            "Latency of root key backend calls, by operation and outcome",
            backend_family.clone(),
        );
        let cache_size = Gauge::default();
        registry.register(
            "kek_cache_size",
            "Unwrapped local KEKs held by the Decrypt cache",
            cache_size.clone(),
        );
        let cache_hits = Counter::default();
        registry.register(
            "kek_cache_hits",
            "Decrypt cache lookups answered from memory",
            cache_hits.clone(),
        );
        let cache_misses = Counter::default();
        registry.register(
            "kek_cache_misses",
            "Decrypt cache lookups that needed a root key unwrap",
            cache_misses.clone(),
        );
        let kek_uses = Gauge::default();
        registry.register(
            "local_kek_uses",
            "Encryptions under the current local KEK",
            kek_uses.clone(),
        );
        let kek_age = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "local_kek_age_seconds",
            "Age of the current local KEK",
            kek_age.clone(),
        );
        let kek_max_uses = Gauge::default();
        registry.register(
            "local_kek_max_uses",
            "Encryptions after which a local KEK is replaced (local_kek.max_uses)",
            kek_max_uses.clone(),
        );
        let kek_max_age = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "local_kek_max_age_seconds",
            "Age after which a local KEK is replaced (local_kek.max_age)",
            kek_max_age.clone(),
        );
        let kek_wraps = Counter::default();
        registry.register(
            "local_kek_wraps",
            "Local KEKs wrapped by the root key",
            kek_wraps.clone(),
        );
        let kek_proof_failures = Counter::default();
        registry.register(
            "local_kek_proof_failures",
            "New local KEKs discarded unused because the root key did not unwrap them to themselves",
            kek_proof_failures.clone(),
        );
        let key_id = Family::<KeyIdLabels, Gauge>::default();
        registry.register(
            "key_id_hash",
            "SHA-256 of the current root key id (value 1)",
            key_id.clone(),
        );
        let last_probe = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "root_key_last_successful_probe_timestamp_seconds",
            "Unix time of the last successful root key round trip",
            last_probe.clone(),
        );
        let healthy = Gauge::default();
        registry.register(
            "root_key_healthy",
            "1 when the last root key probe succeeded",
            healthy.clone(),
        );
        let status_healthy = Gauge::default();
        registry.register(
            "status_healthy",
            "1 when Status reports ok to kube-apiserver (also through an outage within its grace)",
            status_healthy.clone(),
        );
        let outage = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "root_key_outage_seconds",
            "How long the root key backend has been unreachable (0 while it answers)",
            outage.clone(),
        );
        let grace_left = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "root_key_outage_grace_remaining_seconds",
            "Time left before Status stops reporting ok through the current outage (0 outside a served outage)",
            grace_left.clone(),
        );
        let build = Family::<BuildLabels, Gauge>::default();
        build
            .get_or_create(&BuildLabels {
                version: env!("CARGO_PKG_VERSION").into(),
                backend: backend.into(),
            })
            .set(1);
        registry.register("build_info", "Build information (value 1)", build);
        let ok_series = |method_name| {
            rpc.get_or_create(&RpcLabels {
                method_name,
                grpc_status_code: code_name(tonic::Code::Ok),
            })
            .clone()
        };
        let (decrypt_ok, encrypt_ok) = (ok_series("Decrypt"), ok_series("Encrypt"));
        Self {
            registry: Mutex::new(registry),
            rpc,
            decrypt_ok,
            encrypt_ok,
            backend: backend_family,
            cache_size,
            cache_hits,
            cache_misses,
            kek_uses,
            kek_age,
            kek_max_uses,
            kek_max_age,
            kek_wraps,
            kek_proof_failures,
            key_id,
            last_probe,
            healthy,
            status_healthy,
            outage,
            grace_left,
        }
    }

    /// Records one gRPC call.
    pub fn observe_rpc(&self, method: &'static str, code: tonic::Code, elapsed: Duration) {
        let seconds = elapsed.as_secs_f64();
        match (method, code) {
            ("Decrypt", tonic::Code::Ok) => self.decrypt_ok.observe(seconds),
            ("Encrypt", tonic::Code::Ok) => self.encrypt_ok.observe(seconds),
            _ => self
                .rpc
                .get_or_create(&RpcLabels {
                    method_name: method,
                    grpc_status_code: code_name(code),
                })
                .observe(seconds),
        }
    }

    /// Records one root key backend call.
    pub fn observe_backend(
        &self,
        operation: &'static str,
        outcome: &'static str,
        elapsed: Duration,
    ) {
        self.backend
            .get_or_create(&BackendLabels { operation, outcome })
            .observe(elapsed.as_secs_f64());
    }

    /// Renders the text exposition after refreshing the values read from live state.
    /// Records the local KEK limits of the configuration, for alerts on a KEK near them.
    pub fn set_kek_limits(&self, max_uses: u64, max_age: Duration) {
        self.kek_max_uses
            .set(i64::try_from(max_uses).unwrap_or(i64::MAX));
        self.kek_max_age.set(max_age.as_secs_f64());
    }

    /// Appends every KMS v2 metric to `text` as OpenMetrics families (no `# EOF`: the caller
    /// ends the exposition, see [`crate::exposition`]).
    pub fn encode_into(&self, text: &mut String, envelope: &Envelope, health: &Health) {
        let cache = envelope.unwraps();
        self.cache_size.set(cache.len() as i64);
        self.cache_hits
            .inc_by(cache.hits().saturating_sub(self.cache_hits.get()));
        self.cache_misses
            .inc_by(cache.misses().saturating_sub(self.cache_misses.get()));
        self.kek_wraps
            .inc_by(envelope.keks().wraps().saturating_sub(self.kek_wraps.get()));
        self.kek_proof_failures.inc_by(
            envelope
                .keks()
                .proof_failures()
                .saturating_sub(self.kek_proof_failures.get()),
        );
        if let Some(kek) = envelope.keks().current() {
            self.kek_uses.set(kek.uses() as i64);
            self.kek_age.set(kek.age().as_secs_f64());
        }
        let hash = hex::encode(Sha256::digest(
            envelope.root().primary_key_id().as_str().as_bytes(),
        ));
        self.key_id.clear();
        self.key_id
            .get_or_create(&KeyIdLabels { key_id_hash: hash })
            .set(1);
        let state = health.get();
        self.healthy.set(i64::from(state.healthy));
        let reported = envelope.status();
        self.status_healthy.set(i64::from(reported.healthy));
        let now = std::time::SystemTime::now();
        let (down, left) = reported.outage.map_or((0.0, 0.0), |outage| {
            let down = now.duration_since(outage.since).unwrap_or_default();
            let left = outage
                .grace_until
                .filter(|_| outage.serving)
                .and_then(|until| until.duration_since(now).ok())
                .unwrap_or_default();
            (down.as_secs_f64(), left.as_secs_f64())
        });
        self.outage.set(down);
        self.grace_left.set(left);
        if let Some(at) = state
            .last_success
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        {
            self.last_probe.set(at.as_secs_f64());
        }
        let registry = match self.registry.lock() {
            Ok(registry) => registry,
            Err(poisoned) => poisoned.into_inner(),
        };
        if let Err(error) = prometheus_client::encoding::text::encode_registry(text, &registry) {
            tracing::warn!(%error, "could not encode metrics");
        }
    }
}

/// The canonical gRPC code name, as kube-apiserver labels its metrics.
pub fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "OK",
        Cancelled => "Canceled",
        Unknown => "Unknown",
        InvalidArgument => "InvalidArgument",
        DeadlineExceeded => "DeadlineExceeded",
        NotFound => "NotFound",
        AlreadyExists => "AlreadyExists",
        PermissionDenied => "PermissionDenied",
        ResourceExhausted => "ResourceExhausted",
        FailedPrecondition => "FailedPrecondition",
        Aborted => "Aborted",
        OutOfRange => "OutOfRange",
        Unimplemented => "Unimplemented",
        Internal => "Internal",
        Unavailable => "Unavailable",
        DataLoss => "DataLoss",
        Unauthenticated => "Unauthenticated",
    }
}
