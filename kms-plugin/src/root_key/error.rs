//! Why a root key operation failed. Kept precise for logs; the wire only sees an opaque status.

use keystore::{ErrorKind, KeyStoreError};

/// A root key backend failure.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RootKeyError {
    /// The key id names no root key this backend holds.
    #[error("unknown root key id \"{}\"", crate::log_text::untrusted(.0))]
    UnknownKey(String),
    /// The wrapped bytes did not authenticate: tampered, or wrapped by a different key.
    #[error("wrapped key failed authentication under root key \"{}\"", crate::log_text::untrusted(.0))]
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
    /// The backend's key material changed underneath the running plugin (local: state directory
    /// removed, emptied or a key file replaced); nothing is sealed until it is restored.
    #[error("root key state changed underneath the plugin: {0}")]
    Changed(String),
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

    /// True when the backend says the key itself is unusable (disabled, deleted, access
    /// denied), as opposed to being unreachable.
    pub fn is_revocation(&self) -> bool {
        matches!(self, Self::Denied(_) | Self::UnknownKey(_))
    }
}

/// A key store failure as a root key failure: transient is `Unavailable`, denied is `Denied`,
/// integrity is `Integrity`; a missing key or a misconfigured store is `Backend` (the callers
/// that know which key id was asked for map `NotFound` and `Integrity` themselves).
impl From<KeyStoreError> for RootKeyError {
    fn from(error: KeyStoreError) -> Self {
        let kind = error.kind();
        let text = error.into_message();
        match kind {
            ErrorKind::Transient => Self::Unavailable(text),
            ErrorKind::Denied => Self::Denied(text),
            ErrorKind::Integrity => Self::Integrity(text),
            _ => Self::Backend(text),
        }
    }
}
