//! The HTTP listener for Prometheus and health checks: `/metrics`, `/healthz`, `/livez`,
//! `/readyz`. It answers from memory and never calls the root key. It serves whatever the plugin
//! runs: the KMS v2 side, the JWT signer, or both, and the process metrics.

use crate::envelope::Envelope;
use crate::exposition;
use crate::health::Health;
use crate::jwt::metrics::SignerMetrics;
use crate::metrics::Metrics;
use crate::process_metrics::ProcessMetrics;
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::registry::Registry;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpListener;

/// What the KMS v2 side shows: its metrics and the state they are read from.
#[derive(Clone)]
pub(super) struct KmsView {
    /// The KMS v2 metrics.
    pub(super) metrics: Arc<Metrics>,
    /// The envelope (KEK and cache state).
    pub(super) envelope: Arc<Envelope>,
    /// The root key's health, for `/healthz` and `/readyz`.
    pub(super) health: Arc<Health>,
}

/// The process metrics, in a registry of their own (they carry no prefix).
struct Process {
    registry: Registry,
    metrics: ProcessMetrics,
}

#[derive(Clone)]
struct Shared {
    kms: Option<KmsView>,
    signer: Option<Arc<SignerMetrics>>,
    process: Arc<Process>,
}

/// OpenMetrics to a scraper whose `Accept` asks for it, the Prometheus text format otherwise.
async fn render_metrics(State(shared): State<Shared>, headers: HeaderMap) -> impl IntoResponse {
    use prometheus_client::encoding::text::{encode_eof, encode_registry};
    let mut body = String::new();
    if let Some(kms) = &shared.kms {
        kms.envelope.unwraps().sync().await;
        kms.metrics
            .encode_into(&mut body, &kms.envelope, &kms.health);
    }
    shared.process.metrics.refresh();
    let encoded = shared
        .signer
        .as_ref()
        .map_or(Ok(()), |signer| {
            encode_registry(&mut body, signer.registry())
        })
        .and_then(|()| encode_registry(&mut body, &shared.process.registry))
        .and_then(|()| encode_eof(&mut body));
    if let Err(error) = encoded {
        tracing::warn!(%error, "could not encode metrics");
    }
    let openmetrics = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(exposition::wants_openmetrics);
    if openmetrics {
        ([(header::CONTENT_TYPE, exposition::OPENMETRICS)], body)
    } else {
        (
            [(header::CONTENT_TYPE, exposition::PROMETHEUS_TEXT)],
            exposition::prometheus_text(&body),
        )
    }
}

/// What Status reports (the root key's health under the outage policy); a signer-only plugin
/// has no root key and is ready once serving.
async fn ready(State(shared): State<Shared>) -> impl IntoResponse {
    let Some(kms) = &shared.kms else {
        return (StatusCode::OK, "ok\n".to_owned());
    };
    let state = kms.envelope.status();
    if state.healthy {
        (StatusCode::OK, "ok\n".to_owned())
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("{}\n", state.healthz),
        )
    }
}

async fn live() -> &'static str {
    "ok\n"
}

/// Binds `address` now, before anything else starts, so a port conflict fails startup.
pub(super) async fn listen(address: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(address)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen for metrics on {address}: {e}"))
}

/// The serving future for `listener`, which ends when `shutdown` completes.
pub(super) fn serve(
    listener: TcpListener,
    kms: Option<KmsView>,
    signer: Option<Arc<SignerMetrics>>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> impl Future<Output = ()> {
    let mut registry = Registry::default();
    let metrics = ProcessMetrics::register(&mut registry);
    let app = Router::new()
        .route("/metrics", get(render_metrics))
        .route("/healthz", get(ready))
        .route("/readyz", get(ready))
        .route("/livez", get(live))
        .with_state(Shared {
            kms,
            signer,
            process: Arc::new(Process { registry, metrics }),
        });
    let address = listener.local_addr().ok();
    tracing::info!(address = ?address, "serving /metrics, /healthz, /livez, /readyz");
    async move {
        if let Err(error) = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await
        {
            tracing::warn!(%error, "metrics listener failed");
        }
    }
}
