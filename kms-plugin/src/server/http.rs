//! The HTTP listener for Prometheus and health checks: `/metrics`, `/healthz`, `/livez`,
//! `/readyz`. It answers from memory and never calls the root key. It serves whatever the plugin
//! runs: the KMS v2 side, the JWT signer, or both, and the process metrics.
//!
//! Any local user can reach it (the static pod uses the host's network), so it is bounded: at
//! most [`MAX_CONNECTIONS`] at once (beyond that a connection is answered 503 and closed at
//! once, so this port never holds more descriptors than that), the request head must arrive
//! within [`HEADER_READ_TIMEOUT`], a connection lasts at most [`CONNECTION_LIFETIME`], and
//! failed accepts (out of descriptors) pause instead of spinning.

use super::peers::SocketLabel;
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
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

/// Connections served at once; a scraper and a probe or two need a handful.
pub(super) const MAX_CONNECTIONS: usize = 32;
/// The request line and headers must arrive within this.
pub(super) const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);
/// A connection, keep-alive included, is closed after this.
pub(super) const CONNECTION_LIFETIME: Duration = Duration::from_secs(30);
/// The answer beyond [`MAX_CONNECTIONS`].
const BUSY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nbusy\n";
/// The first and the longest pause after a failed accept.
const ACCEPT_PAUSE: (Duration, Duration) = (Duration::from_millis(10), Duration::from_secs(1));

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
    refused: Family<SocketLabel, Counter>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> impl Future<Output = ()> {
    let mut registry = Registry::default();
    let metrics = ProcessMetrics::register(&mut registry);
    registry.register(
        "kms_plugin_refused_connections",
        "Connections refused by socket: peers not in allowed_peers (or whose credentials could not be read) and connections over the socket's cap",
        refused,
    );
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
    accept_loop(listener, app, shutdown)
}

/// Accepts until `shutdown`, each connection on a task of its own within the bounds above.
async fn accept_loop(listener: TcpListener, app: Router, shutdown: impl Future<Output = ()>) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut pause = ACCEPT_PAUSE.0;
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            () = &mut shutdown => return,
            accepted = listener.accept() => accepted,
        };
        let stream = match accepted {
            Ok((stream, _)) => {
                pause = ACCEPT_PAUSE.0;
                stream
            }
            Err(error) => {
                tracing::warn!(%error, ?pause, "metrics listener: accept failed; pausing");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(ACCEPT_PAUSE.1);
                continue;
            }
        };
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            // Into the fresh socket's send buffer, then closed: nothing waits on the client.
            let _ = stream.try_write(BUSY);
            continue;
        };
        let service = TowerToHyperService::new(app.clone());
        tokio::spawn(async move {
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service);
            let _ = tokio::time::timeout(CONNECTION_LIFETIME, connection).await;
            drop(slot);
        });
    }
}
