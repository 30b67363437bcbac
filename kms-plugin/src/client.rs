//! gRPC clients over a Unix socket, used by `kms-plugin status`, tests and benchmarks.

use kms_config::SocketAddress;
use kms_proto::kms_v2::key_management_service_client::KeyManagementServiceClient;
use std::time::Duration;
use tonic::transport::{Channel, Endpoint};

/// Connects to the plugin at `address` (a path or `@abstract`). Sends `:authority: localhost`
/// like kube-apiserver 1.32+.
pub async fn connect(
    address: &SocketAddress,
    timeout: Duration,
) -> Result<KeyManagementServiceClient<Channel>, tonic::transport::Error> {
    Ok(KeyManagementServiceClient::new(
        channel(address, timeout).await?,
    ))
}

/// A gRPC channel to `address`, for any service the plugin serves there.
pub async fn channel(
    address: &SocketAddress,
    timeout: Duration,
) -> Result<Channel, tonic::transport::Error> {
    let address = address.clone();
    Endpoint::from_static("http://localhost")
        .connect_timeout(timeout)
        .timeout(timeout)
        .connect_with_connector(tower::service_fn(move |_| {
            let address = address.clone();
            async move {
                connect_stream(&address)
                    .await
                    .map(hyper_util::rt::TokioIo::new)
            }
        }))
        .await
}

/// Opens a raw stream to `address`.
pub async fn connect_stream(address: &SocketAddress) -> std::io::Result<tokio::net::UnixStream> {
    match address {
        SocketAddress::Path(path) => tokio::net::UnixStream::connect(path).await,
        SocketAddress::Abstract(name) => {
            use std::os::linux::net::SocketAddrExt;
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())?;
            let stream = std::os::unix::net::UnixStream::connect_addr(&addr)?;
            stream.set_nonblocking(true)?;
            tokio::net::UnixStream::from_std(stream)
        }
    }
}

/// What a socket of the plugin says about its health.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    /// The KMS v2 socket: its Status.
    Kms {
        /// The API version (`v2`).
        version: String,
        /// `ok`, or why not.
        healthz: String,
        /// The current key id.
        key_id: String,
        /// The outage and probe detail the plugin sent beside the answer.
        detail: crate::status_detail::StatusDetail,
    },
    /// A socket without KMS v2 (the token signer): the standard `grpc.health.v1` check.
    Health {
        /// Whether it reports SERVING.
        serving: bool,
    },
}

impl Probe {
    /// Whether the socket reports itself healthy.
    pub fn healthy(&self) -> bool {
        match self {
            Probe::Kms { healthz, .. } => healthz == "ok",
            Probe::Health { serving } => *serving,
        }
    }
}

/// Asks the plugin at `address` how it is: KMS v2 Status, or, where that is not served, the
/// `grpc.health.v1` check of the whole server.
pub async fn probe(address: &SocketAddress, timeout: Duration) -> Result<Probe, tonic::Status> {
    let channel = channel(address, timeout)
        .await
        .map_err(|e| tonic::Status::unavailable(format!("cannot connect: {e}")))?;
    let status = KeyManagementServiceClient::new(channel.clone())
        .status(kms_proto::kms_v2::StatusRequest {})
        .await;
    match status {
        Ok(reply) => {
            let detail = crate::status_detail::read(reply.metadata());
            let reply = reply.into_inner();
            Ok(Probe::Kms {
                version: reply.version,
                healthz: reply.healthz,
                key_id: reply.key_id,
                detail,
            })
        }
        Err(error) if error.code() == tonic::Code::Unimplemented => {
            use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
            let reply = HealthClient::new(channel)
                .check(HealthCheckRequest {
                    service: String::new(),
                })
                .await?
                .into_inner();
            Ok(Probe::Health {
                serving: reply.status == tonic_health::ServingStatus::Serving as i32,
            })
        }
        Err(error) => Err(error),
    }
}
