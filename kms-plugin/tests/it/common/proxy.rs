//! A TCP proxy that can stop answering: it forwards to a target until it is switched to a black
//! hole, then keeps accepting connections and reading what arrives but forwards nothing either
//! way, on new and already open connections alike. To its clients the backend hangs (it neither
//! refuses nor resets). Runs on the caller's tokio runtime.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};

/// A proxy on a free 127.0.0.1 port in front of 127.0.0.1:`target`.
pub(crate) struct Proxy {
    pub port: u16,
    state: Arc<State>,
    task: tokio::task::JoinHandle<()>,
}

#[derive(Default)]
struct State {
    black_hole: AtomicBool,
    /// Chunks read and dropped while black-holed.
    swallowed: AtomicU64,
}

impl Proxy {
    pub(crate) async fn start(target: u16) -> Self {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let state = Arc::new(State::default());
        let shared = state.clone();
        let task = tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                let state = shared.clone();
                tokio::spawn(async move {
                    let Ok(outbound) = TcpStream::connect(("127.0.0.1", target)).await else {
                        return;
                    };
                    let (in_read, in_write) = inbound.into_split();
                    let (out_read, out_write) = outbound.into_split();
                    tokio::join!(
                        pump(in_read, out_write, state.clone()),
                        pump(out_read, in_write, state),
                    );
                });
            }
        });
        Self { port, state, task }
    }

    pub(crate) fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Stops (`true`) or resumes (`false`) forwarding.
    pub(crate) fn black_hole(&self, on: bool) {
        self.state.black_hole.store(on, Ordering::SeqCst);
    }

    /// Chunks of traffic read and dropped while black-holed (shows that a client did try).
    pub(crate) fn swallowed(&self) -> u64 {
        self.state.swallowed.load(Ordering::SeqCst)
    }
}

/// Copies `from` to `to` chunk by chunk, dropping chunks while the proxy is a black hole.
async fn pump(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, state: Arc<State>) {
    let mut buffer = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if state.black_hole.load(Ordering::SeqCst) {
            state.swallowed.fetch_add(1, Ordering::SeqCst);
            continue;
        }
        if to.write_all(&buffer[..n]).await.is_err() {
            return;
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}
