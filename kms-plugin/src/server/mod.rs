//! The gRPC servers: socket handling, `:authority` tolerance, graceful shutdown.
//!
//! One process serves the KMS v2 API, the external JWT signer, or both, each on its own socket.

mod fds;
mod http;
pub mod listener;
mod peers;
mod service;
mod slots;

pub use service::{API_VERSION, KmsService};

use crate::envelope::{Envelope, KekPolicy, UnwrapCache};
use crate::health::{self, Health, OutagePolicy};
use crate::jwt::service::{JwtSigner, SignerV1, SignerV1Alpha1};
use crate::metrics::Metrics;
use crate::root_key::{self, instrumented::Instrumented};
use authority_shim::{AuthorityShim, Limits, Rewrite};
use kms_config::{AllowedPeers, BackendConfig, BackendOutage, PluginConfig, SocketAddress};
use kms_proto::externaljwt_v1::external_jwt_signer_server::ExternalJwtSignerServer as SignerServerV1;
use kms_proto::externaljwt_v1alpha1::external_jwt_signer_server::ExternalJwtSignerServer as SignerServerV1Alpha1;
use kms_proto::kms_v2::key_management_service_server::KeyManagementServiceServer;
use listener::BoundSocket;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::UnixListenerStream;

/// A gRPC server running on one socket.
struct Running {
    name: &'static str,
    socket: BoundSocket,
    drain: oneshot::Sender<()>,
    task: JoinHandle<Result<(), tonic::transport::Error>>,
}

/// The limits the servers advertise and the `:authority` shim enforces: the configured header
/// list cap and h2's default frame size.
fn limits(config: &PluginConfig) -> anyhow::Result<Limits> {
    Limits::new(
        config.max_header_list_size.bytes(),
        authority_shim::DEFAULT_MAX_FRAME_SIZE,
    )
    .map_err(|e| anyhow::anyhow!("max_header_list_size: {e}"))
}

/// Streams one connection may have open at once (kube-apiserver keeps a few in flight).
const MAX_CONCURRENT_STREAMS: u32 = 100;
/// Calls of one connection handled at once; the others wait, their bytes held back by HTTP/2
/// flow control. Together with the decoding limit and the connection window this bounds what
/// one connection can make the plugin hold: 8 × 64 KiB + 128 KiB.
const CALLS_PER_CONNECTION: usize = 8;
/// Request bytes a connection may send that the plugin has not yet taken in.
const CONNECTION_WINDOW: u32 = 128 * 1024;
/// The same per stream: one largest message, with its gRPC frame header.
const STREAM_WINDOW: u32 = MAX_DECODING_MESSAGE_SIZE as u32 + 5;
/// Streams a client may reset before h2 answers GOAWAY (CVE-2023-44487, "rapid reset").
const MAX_PENDING_RESET_STREAMS: usize = 20;
/// Streams h2 may reset because of the client's errors before it answers GOAWAY ("MadeYouReset").
const MAX_LOCAL_ERROR_RESET_STREAMS: usize = 1024;
/// Longest request: far above kube-apiserver's own deadlines (3 s for KMS calls by default).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// HTTP/2 PING interval on an idle connection, and how long the answer may take.
const KEEPALIVE: (Duration, Duration) = (Duration::from_secs(60), Duration::from_secs(20));
/// Largest request message decoded: about twice the largest legal one (a Decrypt with 1 KiB
/// of ciphertext, a 1 KiB key id and 32 KiB of annotations; Encrypt plaintexts and signer
/// requests are far smaller).
pub(crate) const MAX_DECODING_MESSAGE_SIZE: usize = 64 * 1024;

/// A tonic server advertising `limits`, with every per-connection bound set.
fn server_builder(limits: Limits) -> tonic::transport::Server {
    tonic::transport::Server::builder()
        .max_frame_size(limits.max_frame_size())
        .http2_max_header_list_size(limits.max_header_list_size())
        .max_concurrent_streams(MAX_CONCURRENT_STREAMS)
        .concurrency_limit_per_connection(CALLS_PER_CONNECTION)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .initial_stream_window_size(STREAM_WINDOW)
        .http2_max_pending_accept_reset_streams(Some(MAX_PENDING_RESET_STREAMS))
        .http2_max_local_error_reset_streams(Some(MAX_LOCAL_ERROR_RESET_STREAMS))
        .timeout(REQUEST_TIMEOUT)
        .http2_keepalive_interval(Some(KEEPALIVE.0))
        .http2_keepalive_timeout(Some(KEEPALIVE.1))
}

/// Where and to whom one server listens.
struct SocketSpec<'a> {
    address: &'a SocketAddress,
    mode: kms_config::FileMode,
    uid: Option<u32>,
    gid: Option<u32>,
    allowed_peers: Option<AllowedPeers>,
    limits: Limits,
    refused: &'a peers::RefusedPeers,
}

/// Binds the socket and serves `router` on it behind the peer allowlist and the `:authority`
/// shim; a refused peer's connection is closed before any HTTP/2 byte.
fn serve_on(
    name: &'static str,
    spec: SocketSpec<'_>,
    router: tonic::transport::server::Router,
) -> anyhow::Result<Running> {
    let address = spec.address;
    let mut socket = listener::bind(address, spec.mode, spec.uid, spec.gid)?;
    let listener = socket
        .take_listener()
        .ok_or_else(|| anyhow::anyhow!("listener already taken"))?;
    let allowed = spec.allowed_peers;
    let limits = spec.limits;
    let refusals = spec.refused.of(name);
    let slots = slots::Slots::new(slots::MAX_CONNECTIONS);
    let incoming = UnixListenerStream::new(listener)
        .then(move |conn| async move {
            if let Err(error) = &conn {
                tracing::warn!(%error, "{name}: accept failed; pausing");
                tokio::time::sleep(fds::ACCEPT_ERROR_PAUSE).await;
            }
            conn
        })
        .filter_map(move |conn| match conn {
            Ok(io) if peers::admit(name, allowed.as_ref(), &io, &refusals) => {
                slots.take(name, io, &refusals).map(Ok)
            }
            Ok(_) => None,
            Err(error) => Some(Err(error)),
        })
        .map(move |conn| conn.map(|io| AuthorityShim::with(io, limits, Rewrite::WhenNeeded)));
    let (drain, drained) = oneshot::channel::<()>();
    let task = tokio::spawn(router.serve_with_incoming_shutdown(incoming, async {
        let _ = drained.await;
    }));
    tracing::info!(socket = %address, "serving {name}");
    Ok(Running {
        name,
        socket,
        drain,
        task,
    })
}

/// The KMS v2 side: root key, envelope, health probe, metrics (returned for `/metrics`).
async fn start_kms(
    config: &PluginConfig,
    address: &SocketAddress,
    backend_config: &BackendConfig,
    reload: watch::Receiver<u64>,
    stop: &watch::Sender<bool>,
    refused: &peers::RefusedPeers,
) -> anyhow::Result<(Running, Vec<JoinHandle<()>>, http::KmsView)> {
    let backend = root_key::build(backend_config).await?;
    tracing::info!(backend = backend.kind(), key_id = %backend.primary_key_id(), "root key ready");
    let metrics = Arc::new(Metrics::new(backend.kind()));
    metrics.set_kek_limits(config.local_kek.max_uses, config.local_kek.max_age.get());
    let root: Arc<dyn root_key::RootKey> = Arc::new(Instrumented::new(backend, metrics.clone()));
    let timeout = config.backend_timeout.get();
    let health = Arc::new(
        Health::new(config.revoked_key_stops_encrypt).with_outage_policy(OutagePolicy {
            serve: config.health.backend_outage == BackendOutage::Serve,
            grace: config.health.outage_grace.get(),
        }),
    );
    let envelope = Arc::new(Envelope::new(
        root.clone(),
        KekPolicy {
            max_uses: config.local_kek.max_uses,
            max_age: config.local_kek.max_age.get(),
            wrap_timeout: timeout,
            retry_interval: config.health_probe_interval.get(),
        },
        UnwrapCache::new(
            config.decrypt_cache.max_entries,
            config.decrypt_cache.ttl.get(),
            timeout,
        ),
        health.clone(),
    ));
    let tasks = vec![health::spawn_background(
        envelope.clone(),
        health.clone(),
        config.health_probe_interval.get(),
        timeout,
        reload,
        stop.subscribe(),
    )];
    let view = http::KmsView {
        metrics: metrics.clone(),
        envelope: envelope.clone(),
        health: health.clone(),
    };
    let service = KmsService::new(envelope, health, metrics);
    let limits = limits(config)?;
    let router = server_builder(limits).add_service(
        KeyManagementServiceServer::new(service)
            .max_decoding_message_size(MAX_DECODING_MESSAGE_SIZE),
    );
    let running = serve_on(
        "KMS v2",
        SocketSpec {
            address,
            mode: config.socket_mode,
            uid: config.socket_uid,
            gid: config.socket_gid,
            allowed_peers: config.allowed_peers.clone(),
            limits,
            refused,
        },
        router,
    )?;
    Ok((running, tasks, view))
}

/// Runs what `config` enables until `shutdown` completes, then drains in-flight calls (bounded
/// by `shutdown_grace`) and removes the sockets. `reload` (SIGHUP) re-reads keys.
pub async fn run(
    config: PluginConfig,
    shutdown: impl Future<Output = ()>,
    reload: watch::Receiver<u64>,
) -> anyhow::Result<()> {
    for risk in config.risks() {
        tracing::warn!("risky setting: {risk}");
    }
    match fds::raise_limit() {
        Ok((before, after)) if before != after => {
            tracing::info!(
                ?before,
                ?after,
                "raised the open-file limit to the hard limit"
            )
        }
        Ok(_) => {}
        Err(error) => tracing::warn!(%error, "could not raise the open-file limit"),
    }
    let (stop_tx, _) = watch::channel(false);
    let refused = peers::RefusedPeers::default();
    let mut servers = Vec::new();
    let mut tasks = Vec::new();
    // Bound first, so a port conflict fails startup before any socket serves.
    let metrics_listener = match config.metrics_address {
        Some(address) => Some(http::listen(address.0).await?),
        None => None,
    };
    let mut kms_view = None;
    let mut signer_metrics = None;
    let mut signer_health = None;
    if let (Some(address), Some(backend)) = (&config.socket, &config.backend) {
        let (running, background, view) = start_kms(
            &config,
            address,
            backend,
            reload.clone(),
            &stop_tx,
            &refused,
        )
        .await?;
        servers.push(running);
        tasks.extend(background);
        kms_view = Some(view);
    }
    if let Some(signer_config) = &config.jwt_signer {
        let signer = Arc::new(JwtSigner::new(signer_config.clone()).await?);
        signer_metrics = Some(signer.metrics());
        tasks.push(signer.spawn_watcher(reload.clone(), stop_tx.subscribe()));
        let limits = limits(&config)?;
        // grpc.health.v1 beside the signer, so `kms-plugin status --socket` (and any gRPC
        // health checker) can probe it: SERVING while the signer serves.
        let (health_reporter, health_service) = tonic_health::server::health_reporter();
        signer_health = Some(health_reporter);
        let router = server_builder(limits)
            .add_service(
                SignerServerV1::new(SignerV1(signer.clone()))
                    .max_decoding_message_size(MAX_DECODING_MESSAGE_SIZE),
            )
            .add_service(
                SignerServerV1Alpha1::new(SignerV1Alpha1(signer))
                    .max_decoding_message_size(MAX_DECODING_MESSAGE_SIZE),
            )
            .add_service(health_service);
        servers.push(serve_on(
            "ExternalJWTSigner",
            SocketSpec {
                address: &signer_config.socket,
                mode: signer_config.socket_mode,
                uid: signer_config.socket_uid,
                gid: signer_config.socket_gid,
                allowed_peers: signer_config.allowed_peers.clone(),
                limits,
                refused: &refused,
            },
            router,
        )?);
    }

    if let Some(listener) = metrics_listener {
        let mut stopped = stop_tx.subscribe();
        tasks.push(tokio::spawn(http::serve(
            listener,
            kms_view,
            signer_metrics,
            refused.family(),
            async move {
                let _ = stopped.changed().await;
            },
        )));
    }

    shutdown.await;
    let grace = config.shutdown_grace.get();
    tracing::info!(
        ?grace,
        "shutting down: no new connections, draining in-flight calls"
    );
    let _ = stop_tx.send(true);
    if let Some(reporter) = &signer_health {
        reporter
            .set_service_status("", tonic_health::ServingStatus::NotServing)
            .await;
    }
    let mut waiting = Vec::new();
    for server in servers {
        let _ = server.drain.send(());
        waiting.push((server.name, server.socket, server.task));
    }
    let deadline = tokio::time::Instant::now() + grace;
    for (name, mut socket, task) in waiting {
        match tokio::time::timeout_at(deadline, task).await {
            Ok(Ok(Ok(()))) => tracing::info!("{name}: all calls finished"),
            Ok(Ok(Err(error))) => tracing::warn!(%error, "{name}: server ended with an error"),
            Ok(Err(error)) => tracing::warn!(%error, "{name}: server task failed"),
            Err(_) => tracing::warn!("{name}: grace period over; abandoning calls still in flight"),
        }
        socket.remove();
    }
    for task in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(1), task).await;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use kms_config::HeaderListSize;

    #[test]
    fn every_configurable_header_list_size_is_one_the_shim_accepts() {
        let frame = authority_shim::DEFAULT_MAX_FRAME_SIZE;
        for accepted in [HeaderListSize::MIN, HeaderListSize::MAX] {
            assert!(Limits::new(accepted, frame).is_ok(), "{accepted}");
        }
        for refused in [HeaderListSize::MIN - 1, HeaderListSize::MAX + 1] {
            assert!(Limits::new(refused, frame).is_err(), "{refused}");
        }
        let config = PluginConfig::local(SocketAddress::Path("kms.sock".into()), "state".into());
        let default = limits(&config).expect("default limits");
        assert_eq!(default, Limits::DEFAULT);
    }
}
