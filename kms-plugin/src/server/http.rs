//! The HTTP listener for Prometheus and health checks: `/metrics`, `/healthz`, `/livez`,
//! `/readyz`. It answers from memory and never calls the root key.

use crate::envelope::Envelope;
use crate::exposition;
use crate::health::Health;
use crate::metrics::Metrics;
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

#[derive(Clone)]
struct Shared {
    metrics: Arc<Metrics>,
    envelope: Arc<Envelope>,
    health: Arc<Health>,
}

/// OpenMetrics to a scraper whose `Accept` asks for it, the Prometheus text format otherwise.
async fn render_metrics(State(shared): State<Shared>, headers: HeaderMap) -> impl IntoResponse {
    shared.envelope.unwraps().sync().await;
    let body = shared.metrics.render(&shared.envelope, &shared.health);
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

async fn ready(State(shared): State<Shared>) -> impl IntoResponse {
    let state = shared.health.get();
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

/// Binds `address` now (so a port conflict fails startup) and returns the serving future,
/// which ends when `shutdown` completes.
pub(super) async fn bind(
    address: SocketAddr,
    metrics: Arc<Metrics>,
    envelope: Arc<Envelope>,
    health: Arc<Health>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<impl Future<Output = ()>> {
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen for metrics on {address}: {e}"))?;
    let app = Router::new()
        .route("/metrics", get(render_metrics))
        .route("/healthz", get(ready))
        .route("/readyz", get(ready))
        .route("/livez", get(live))
        .with_state(Shared {
            metrics,
            envelope,
            health,
        });
    tracing::info!(%address, "serving /metrics, /healthz, /livez, /readyz");
    Ok(async move {
        if let Err(error) = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await
        {
            tracing::warn!(%error, "metrics listener failed");
        }
    })
}
