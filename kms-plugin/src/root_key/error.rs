//! Why a root key operation failed. Kept precise for logs; the wire only sees an opaque status.

/// A root key backend failure.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RootKeyError {
    /// The key id names no root key this backend holds.
    #[error("unknown root key id {0:?}")]
    UnknownKey(String),
    /// The wrapped bytes did not authenticate: tampered, or wrapped by a different key.
    #[error("wrapped key failed authentication under root key {0:?}")]
    Integrity(String),
    /// The backend could not be reached, timed out, or failed transiently; retrying may help.
    #[error("root key backend unavailable: {0}")]
    Unavailable(String),
    /// The backend refused the caller (access denied, key disabled).
    #[error("root key backend refused the operation: {0}")]
    Denied(String),
    /// The backend or its state is misconfigured or corrupt.
    #[error("root key backend error: {0}")]
    Backend(String),
    /// The backend does not offer this operation.
    #[error("not supported: {0}")]
    Unsupported(String),
}

impl RootKeyError {
    /// True when the failure says nothing about the data (retry later), false when the data or
    /// key id is bad.
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Unavailable(_))
    }
}
