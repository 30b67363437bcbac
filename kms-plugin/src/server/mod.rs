//! The gRPC server: socket handling, `:authority` tolerance, graceful shutdown.

pub mod authority;
mod hpack;
mod http;
pub mod listener;
mod service;

pub use service::{API_VERSION, KmsService};

use crate::envelope::{Envelope, KekPolicy, UnwrapCache};
use crate::health::{self, Health};
use crate::metrics::Metrics;
use crate::root_key::{self, instrumented::Instrumented};
use authority::AuthorityNormalizer;
use kms_config::PluginConfig;
use kms_proto::kms_v2::key_management_service_server::KeyManagementServiceServer;
use std::future::Future;
use std::sync::Arc;
use tokio::sync::watch;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::UnixListenerStream;

/// Runs the plugin until `shutdown` completes, then drains in-flight calls (bounded by
/// `shutdown_grace`) and removes the socket. `reload` fires a root key refresh (SIGHUP).
pub async fn run(
    config: PluginConfig,
    shutdown: impl Future<Output = ()>,
    reload: watch::Receiver<u64>,
) -> anyhow::Result<()> {
    let backend = root_key::build(&config.backend).await?;
    tracing::info!(backend = backend.kind(), key_id = %backend.primary_key_id(), "root key ready");
    let metrics = Arc::new(Metrics::new(backend.kind()));
    let root: Arc<dyn root_key::RootKey> = Arc::new(Instrumented::new(backend, metrics.clone()));
    let timeout = config.backend_timeout.get();
    let envelope = Arc::new(Envelope::new(
        root.clone(),
        KekPolicy {
            max_uses: config.local_kek.max_uses,
            max_age: config.local_kek.max_age.get(),
            wrap_timeout: timeout,
        },
        UnwrapCache::new(config.decrypt_cache.max_entries, config.decrypt_cache.ttl.get(), timeout),
    ));
    let health = Arc::new(Health::default());
    let (stop_tx, stop_rx) = watch::channel(false);
    let background = health::spawn_background(
        root.clone(),
        health.clone(),
        config.health_probe_interval.get(),
        timeout,
        reload,
        stop_rx,
    );

    let mut socket = listener::bind(&config.socket, config.socket_mode, config.socket_uid, config.socket_gid)?;
    let listener = socket.take_listener().ok_or_else(|| anyhow::anyhow!("listener already taken"))?;
    let incoming = UnixListenerStream::new(listener).map(|conn| conn.map(AuthorityNormalizer::new));
    let http_server = match config.metrics_address {
        Some(address) => {
            let mut stop = stop_tx.subscribe();
            let serving = http::bind(address.0, metrics.clone(), envelope.clone(), health.clone(), async move {
                let _ = stop.changed().await;
            })
            .await?;
            Some(tokio::spawn(serving))
        }
        None => None,
    };
    let service = KmsService::new(envelope, health, metrics);

    let (drain_tx, drain_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(KeyManagementServiceServer::new(service))
            .serve_with_incoming_shutdown(incoming, async {
                let _ = drain_rx.await;
            }),
    );
    tracing::info!(socket = %config.socket, "serving KMS v2");
    shutdown.await;
    tracing::info!(grace = ?config.shutdown_grace.get(), "shutting down: no new connections, draining in-flight calls");
    let _ = drain_tx.send(());
    let _ = stop_tx.send(true);
    match tokio::time::timeout(config.shutdown_grace.get(), server).await {
        Ok(Ok(Ok(()))) => tracing::info!("all calls finished"),
        Ok(Ok(Err(error))) => tracing::warn!(%error, "server ended with an error"),
        Ok(Err(error)) => tracing::warn!(%error, "server task failed"),
        Err(_) => tracing::warn!("grace period over; abandoning calls still in flight"),
    }
    socket.remove();
    background.abort();
    if let Some(http_server) = http_server {
        let _ = tokio::time::timeout(std::time::Duration::from_secs(1), http_server).await;
    }
    Ok(())
}
