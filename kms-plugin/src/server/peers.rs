//! The per-socket allowlist: each accepted connection's kernel-reported credentials
//! (`SO_PEERCRED`) are checked before a single HTTP/2 byte is exchanged.

use kms_config::AllowedPeers;
use tokio::net::UnixStream;

/// Whether `stream`'s peer may talk to the `server` socket. With no allowlist everyone the
/// socket's file mode admits may; otherwise a refused peer (or one whose credentials cannot be
/// read) is logged with its pid, uid and gid, and the caller drops the connection unanswered.
pub(super) fn admit(server: &str, allowed: Option<&AllowedPeers>, stream: &UnixStream) -> bool {
    let Some(allowed) = allowed else {
        return true;
    };
    match stream.peer_cred() {
        Ok(cred) if allowed.allows(cred.uid(), cred.gid()) => true,
        Ok(cred) => {
            tracing::warn!(
                server,
                pid = cred.pid(),
                uid = cred.uid(),
                gid = cred.gid(),
                "refused a connection from a peer not in allowed_peers"
            );
            false
        }
        Err(error) => {
            tracing::warn!(server, %error, "refused a connection whose peer credentials cannot be read");
            false
        }
    }
}
