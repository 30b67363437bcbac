//! The per-socket allowlist: each accepted connection's kernel-reported credentials
//! (`SO_PEERCRED`) are checked before a single HTTP/2 byte is exchanged. Refusals are counted
//! (`kms_plugin_refused_connections_total{socket}`) and logged at most once per [`LOG_EVERY`]
//! per socket, with how many went unlogged since: a peer reconnecting in a loop cannot flood
//! the log.

use kms_config::AllowedPeers;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};
use tokio::net::UnixStream;

/// At most one log line per socket about refused peers in this long.
const LOG_EVERY: Duration = Duration::from_secs(1);

/// The socket a refusal happened on.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct SocketLabel {
    socket: &'static str,
}

/// The refused connections of every socket, as one metric family.
#[derive(Clone, Default)]
pub(super) struct RefusedPeers {
    counts: Family<SocketLabel, Counter>,
}

impl RefusedPeers {
    /// The family to register for `/metrics`.
    pub(super) fn family(&self) -> Family<SocketLabel, Counter> {
        self.counts.clone()
    }

    /// The share of `socket`: its counter and its log throttle.
    pub(super) fn of(&self, socket: &'static str) -> Arc<Refusals> {
        Arc::new(Refusals {
            count: self.counts.get_or_create(&SocketLabel { socket }).clone(),
            quiet: Mutex::new((None, 0)),
        })
    }
}

/// One socket's refusals.
pub(super) struct Refusals {
    count: Counter,
    /// When the last line was logged, and the refusals since that went unlogged.
    quiet: Mutex<(Option<Instant>, u64)>,
}

impl Refusals {
    /// Counts one refusal; `Some(unlogged)` when this one is to be logged, with the number of
    /// refusals left unlogged since the last line.
    pub(super) fn refuse(&self) -> Option<u64> {
        self.count.inc();
        let mut quiet = self.quiet.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        match quiet.0 {
            Some(last) if now.duration_since(last) < LOG_EVERY => {
                quiet.1 += 1;
                None
            }
            _ => {
                let unlogged = quiet.1;
                *quiet = (Some(now), 0);
                Some(unlogged)
            }
        }
    }
}

/// Whether `stream`'s peer may talk to the `server` socket. With no allowlist everyone the
/// socket's file mode admits may; otherwise a refused peer (or one whose credentials cannot be
/// read) is counted and logged (throttled) with its pid, uid and gid, and the caller drops the
/// connection unanswered.
pub(super) fn admit(
    server: &'static str,
    allowed: Option<&AllowedPeers>,
    stream: &UnixStream,
    refusals: &Refusals,
) -> bool {
    let Some(allowed) = allowed else {
        return true;
    };
    match stream.peer_cred() {
        Ok(cred) if allowed.allows(cred.uid(), cred.gid()) => true,
        Ok(cred) => {
            if let Some(unlogged) = refusals.refuse() {
                tracing::warn!(
                    server,
                    pid = cred.pid(),
                    uid = cred.uid(),
                    gid = cred.gid(),
                    unlogged,
                    "refused a connection from a peer not in allowed_peers"
                );
            }
            false
        }
        Err(error) => {
            if let Some(unlogged) = refusals.refuse() {
                tracing::warn!(server, %error, unlogged, "refused a connection whose peer credentials cannot be read");
            }
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_are_all_counted_and_logged_once_a_second() {
        let peers = RefusedPeers::default();
        let kms = peers.of("KMS v2");
        assert_eq!(kms.refuse(), Some(0), "the first is logged");
        for _ in 0..99 {
            assert_eq!(kms.refuse(), None, "then quiet for a second");
        }
        assert_eq!(kms.count.get(), 100);
        // A second later the next line says how many went unlogged.
        kms.quiet.lock().expect("lock").0 = Some(Instant::now() - LOG_EVERY);
        assert_eq!(kms.refuse(), Some(99));
        let signer = peers.of("ExternalJWTSigner");
        assert_eq!(signer.refuse(), Some(0), "each socket has its own throttle");
        assert_eq!(kms.count.get(), 101);
    }
}
