//! The one error type of every key store: what kind of failure it was, and a message for logs.

/// What kind of failure a key store reported; each user maps it onto its own error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// Unreachable, timed out, throttled, or the session went away: retrying may help.
    Transient,
    /// The store refused the caller: wrong PIN, access denied, key disabled.
    Denied,
    /// The key asked for does not exist.
    NotFound,
    /// Data did not authenticate under the key: tampered, or made by another key.
    Integrity,
    /// The store, its settings or its keys are not what they must be; retrying will not help.
    Configuration,
}

/// A key store failure: a kind and a message that names the store, the call and the key, never
/// a secret.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct KeyStoreError {
    kind: ErrorKind,
    message: String,
    /// The token dropped the session or the login (PKCS#11): reopening and retrying may help.
    session_lost: bool,
}

impl KeyStoreError {
    /// A failure of `kind`.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            session_lost: false,
        }
    }

    /// An [`ErrorKind::Transient`] failure.
    pub fn transient(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Transient, message)
    }

    /// An [`ErrorKind::Denied`] failure.
    pub fn denied(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Denied, message)
    }

    /// An [`ErrorKind::NotFound`] failure.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::NotFound, message)
    }

    /// An [`ErrorKind::Integrity`] failure.
    pub fn integrity(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Integrity, message)
    }

    /// An [`ErrorKind::Configuration`] failure.
    pub fn configuration(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Configuration, message)
    }

    /// The kind of failure.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// True when retrying later may succeed.
    pub fn is_transient(&self) -> bool {
        self.kind == ErrorKind::Transient
    }

    /// The message, for the user's own error.
    pub fn into_message(self) -> String {
        self.message
    }

    /// Marks a failure after which the session must be reopened.
    #[cfg(feature = "pkcs11")]
    pub(crate) fn with_session_lost(mut self) -> Self {
        self.session_lost = true;
        self
    }

    /// True when the token dropped the session, the login or went away: reopening and retrying
    /// once may help.
    pub fn is_session_lost(&self) -> bool {
        self.session_lost
    }
}
