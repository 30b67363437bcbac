//! The proof every new local KEK passes before its first use: the root key unwraps what it has
//! just wrapped, and the result equals the KEK (compared in constant time). It catches a backend
//! that returns something it cannot open again, before anything is sealed under it.

use super::EnvelopeError;
use crate::root_key::{RootKey, WrappedKey};
use crate::secret::AesKey;
use std::time::Duration;

/// What the proof found.
pub(super) enum Proof {
    /// The wrapped KEK unwraps to itself.
    Passed,
    /// The root key did not answer in time or was unreachable: nothing is known either way.
    Outage(EnvelopeError),
    /// The root key answered, and not with this KEK (the reason is for the log).
    Failed(String),
}

/// Unwraps `wrapped` through `root` within `timeout` and compares the result with `key`.
pub(super) async fn prove(
    root: &dyn RootKey,
    key: &AesKey,
    wrapped: &WrappedKey,
    timeout: Duration,
) -> Proof {
    match tokio::time::timeout(
        timeout,
        root.unwrap_kek(&wrapped.key_id, &wrapped.ciphertext),
    )
    .await
    {
        Err(_) => Proof::Outage(EnvelopeError::Timeout(timeout)),
        Ok(Err(error)) if error.is_transient() => Proof::Outage(error.into()),
        Ok(Err(error)) => Proof::Failed(format!("unwrap failed: {error}")),
        Ok(Ok(unwrapped)) if unwrapped.ct_eq(key) => Proof::Passed,
        Ok(Ok(_)) => Proof::Failed("unwrap returned a different key".into()),
    }
}
