//! A cap on the connections one gRPC socket serves at once, so an allowed peer that opens
//! connections in a loop cannot use up the process's file descriptors or memory (each
//! connection is bounded, see `server_builder`, and this bounds how many there are). A
//! connection over the cap is closed at once, before any HTTP/2 byte, counted with the refused
//! peers (`kms_plugin_refused_connections_total{socket}`) and logged at most once a second.

use super::peers::Refusals;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Connections one socket serves at once: kube-apiserver keeps one per KMS provider (plus a
/// probe's now and then), so this is far above need and far below the descriptor limit.
pub(super) const MAX_CONNECTIONS: usize = 128;

/// The free connection slots of one socket.
pub(super) struct Slots {
    free: Arc<Semaphore>,
}

impl Slots {
    pub(super) fn new(max: usize) -> Self {
        Self {
            free: Arc::new(Semaphore::new(max)),
        }
    }

    /// `io` holding one slot until it is dropped; `None` (and the connection dropped, counted
    /// and logged) when every slot is taken.
    pub(super) fn take<S>(
        &self,
        server: &'static str,
        io: S,
        refusals: &Refusals,
    ) -> Option<Slotted<S>> {
        match self.free.clone().try_acquire_owned() {
            Ok(slot) => Some(Slotted { io, _slot: slot }),
            Err(_) => {
                if let Some(unlogged) = refusals.refuse() {
                    tracing::warn!(
                        server,
                        max = MAX_CONNECTIONS,
                        unlogged,
                        "refused a connection: the socket already serves its maximum"
                    );
                }
                None
            }
        }
    }
}

/// A connection holding one of its socket's slots.
pub(super) struct Slotted<S> {
    io: S,
    _slot: OwnedSemaphorePermit,
}

impl<S: AsyncRead + Unpin> AsyncRead for Slotted<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Slotted<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

impl<S: tonic::transport::server::Connected> tonic::transport::server::Connected for Slotted<S> {
    type ConnectInfo = S::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.io.connect_info()
    }
}
