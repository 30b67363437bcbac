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
