//! How PKCS#11 failures map onto [`KeyStoreError`].

use crate::KeyStoreError;
use cryptoki::error::{Error as CkError, RvError};

/// True for return values after which the session, the login or the token is gone.
fn is_session_lost(rv: RvError) -> bool {
    matches!(
        rv,
        RvError::SessionHandleInvalid
            | RvError::SessionClosed
            | RvError::UserNotLoggedIn
            | RvError::DeviceRemoved
            | RvError::DeviceError
            | RvError::TokenNotPresent
            | RvError::TokenNotRecognized
            | RvError::SlotIdInvalid
            | RvError::KeyHandleInvalid
            | RvError::ObjectHandleInvalid
            | RvError::CryptokiNotInitialized
    )
}

/// A failed PKCS#11 call: a wrong or locked PIN and a key that may not do this are
/// [`Denied`](crate::ErrorKind::Denied); a lost session or token and a token out of memory or
/// sessions are [`Transient`](crate::ErrorKind::Transient); anything else is
/// [`Configuration`](crate::ErrorKind::Configuration).
impl From<CkError> for KeyStoreError {
    fn from(error: CkError) -> Self {
        let CkError::Pkcs11(rv, function) = error else {
            return KeyStoreError::configuration(format!("PKCS#11 binding error: {error}"));
        };
        let text = format!("PKCS#11 C_{function:?} failed: {rv:?}");
        match rv {
            RvError::PinIncorrect
            | RvError::PinLocked
            | RvError::PinExpired
            | RvError::PinInvalid
            | RvError::PinLenRange
            | RvError::KeyFunctionNotPermitted => KeyStoreError::denied(text),
            _ if is_session_lost(rv) => KeyStoreError::transient(text).with_session_lost(),
            RvError::DeviceMemory
            | RvError::HostMemory
            | RvError::FunctionFailed
            | RvError::SessionCount => KeyStoreError::transient(text),
            _ => KeyStoreError::configuration(text),
        }
    }
}

/// Maps a failed C_Decrypt: data that did not authenticate is
/// [`Integrity`](crate::ErrorKind::Integrity), anything else as any other call.
///
/// SoftHSM2 reports a failed AES-GCM tag check as `CKR_GENERAL_ERROR`; other tokens use
/// `CKR_ENCRYPTED_DATA_INVALID`.
pub fn decrypt_error(error: CkError) -> KeyStoreError {
    match error {
        CkError::Pkcs11(
            rv @ (RvError::GeneralError
            | RvError::EncryptedDataInvalid
            | RvError::EncryptedDataLenRange
            | RvError::DataInvalid
            | RvError::DataLenRange),
            function,
        ) => KeyStoreError::integrity(format!("PKCS#11 C_{function:?} failed: {rv:?}")),
        other => other.into(),
    }
}

/// A blocking worker running a PKCS#11 call died.
pub fn worker_failed(error: tokio::task::JoinError) -> KeyStoreError {
    KeyStoreError::transient(format!("PKCS#11 worker failed: {error}"))
}

/// The token with `label` is not listed (unplugged, unreachable): transient, and the session
/// must be reopened once it is back.
pub(crate) fn token_not_found(label: &str) -> KeyStoreError {
    KeyStoreError::transient(format!("no PKCS#11 token labelled {label:?} is present"))
        .with_session_lost()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;
    use cryptoki::context::Function;

    #[test]
    fn return_values_map_to_kinds() {
        let call = |rv| KeyStoreError::from(CkError::Pkcs11(rv, Function::Encrypt));
        assert_eq!(call(RvError::PinIncorrect).kind(), ErrorKind::Denied);
        let lost = call(RvError::SessionHandleInvalid);
        assert!(lost.is_transient() && lost.is_session_lost());
        assert!(!call(RvError::HostMemory).is_session_lost());
        assert_eq!(call(RvError::ArgumentsBad).kind(), ErrorKind::Configuration);
        let tag = decrypt_error(CkError::Pkcs11(RvError::GeneralError, Function::Decrypt));
        assert_eq!(tag.kind(), ErrorKind::Integrity);
        assert!(token_not_found("t").is_session_lost());
    }
}
