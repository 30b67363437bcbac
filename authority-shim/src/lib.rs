//! A bounded `:authority` shim for h2 servers on Unix sockets.
//!
//! h2 resets every stream whose `:authority` does not parse as a URI authority, and gRPC
//! clients dialling a Unix socket (grpc-go before kube-apiserver 1.32, gRPC C-core) send the
//! socket path there (hyperium/h2#487). [`AuthorityShim`] wraps each accepted connection and
//! rewrites such values to `localhost` before h2 reads them, within h2's own bounds; a
//! connection whose first request already carries an acceptable authority is handed to h2
//! untouched. See README.md for when this crate can be deleted.

mod block;
mod frame;
mod h2_view;
mod hpack;
mod limits;
mod refusal;
mod shim;

pub use block::REPLACEMENT_AUTHORITY;
pub use frame::PREFACE;
pub use limits::{
    DEFAULT_MAX_FRAME_SIZE, DEFAULT_MAX_HEADER_LIST_SIZE, Limits, LimitsError, Rewrite,
};
pub use shim::AuthorityShim;
