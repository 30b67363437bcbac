//! PKCS#11 failures, and how they map onto [`RootKeyError`].

use crate::root_key::RootKeyError;
use cryptoki::error::{Error as CkError, RvError};

/// A PKCS#11 backend failure. Kept inside the backend: callers see [`RootKeyError`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Pkcs11Error {
    /// The module could not be loaded or initialised.
    #[error("cannot load PKCS#11 module {module}: {reason}")]
    Module {
        /// Path of the module.
        module: String,
        /// What went wrong.
        reason: String,
    },
    /// No slot holds a token with the configured label.
    #[error("no PKCS#11 token labelled {0:?} is present")]
    TokenNotFound(String),
    /// The PIN could not be read from its source.
    #[error("cannot read the PKCS#11 PIN: {0}")]
    Pin(String),
    /// A PKCS#11 function failed.
    #[error("PKCS#11 C_{function} failed: {rv:?}")]
    Call {
        /// The PKCS#11 function.
        function: String,
        /// Its return value.
        rv: RvError,
    },
    /// The cryptoki layer failed outside a PKCS#11 call.
    #[error("PKCS#11 binding error: {0}")]
    Binding(String),
    /// The token holds no root key with the configured label.
    #[error("no root key labelled {0:?} in the token; run `kms-plugin hsm init` first")]
    NoRootKey(String),
    /// A root key object is not protected the way a root key must be.
    #[error("root key {0}")]
    Unprotected(String),
    /// The token rejected the PIN; logins stop until the plugin restarts (to spare the token's
    /// retry counter).
    #[error(
        "the PKCS#11 token {0:?} rejected the PIN; fix pin_file/pin_env and restart the plugin"
    )]
    PinRejected(String),
    /// The token does not offer a mechanism the backend needs.
    #[error("the PKCS#11 token does not offer {0}")]
    MissingMechanism(&'static str),
    /// The blocking worker running a PKCS#11 call died.
    #[error("PKCS#11 worker failed: {0}")]
    Worker(String),
}

impl From<CkError> for Pkcs11Error {
    fn from(error: CkError) -> Self {
        match error {
            CkError::Pkcs11(rv, function) => Self::Call {
                function: format!("{function:?}"),
                rv,
            },
            other => Self::Binding(other.to_string()),
        }
    }
}

impl Pkcs11Error {
    /// The PKCS#11 return value, when a PKCS#11 function failed.
    pub fn rv(&self) -> Option<RvError> {
        match self {
            Self::Call { rv, .. } => Some(*rv),
            _ => None,
        }
    }

    /// True when the session, login or token went away: reopening and retrying once may help.
    pub fn is_session_lost(&self) -> bool {
        matches!(self, Self::TokenNotFound(_))
            || matches!(
                self.rv(),
                Some(
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
            )
    }

    /// Maps a failure of an unwrap (C_Decrypt) under `key_id`.
    ///
    /// SoftHSM2 reports a failed AES-GCM tag check as `CKR_GENERAL_ERROR`; other tokens use
    /// `CKR_ENCRYPTED_DATA_INVALID`. Both mean the wrapped bytes did not authenticate.
    pub fn into_unwrap_error(self, key_id: &str) -> RootKeyError {
        match self.rv() {
            Some(
                RvError::GeneralError
                | RvError::EncryptedDataInvalid
                | RvError::EncryptedDataLenRange
                | RvError::DataInvalid
                | RvError::DataLenRange,
            ) => RootKeyError::Integrity(key_id.to_owned()),
            _ => self.into(),
        }
    }
}

impl From<Pkcs11Error> for RootKeyError {
    fn from(error: Pkcs11Error) -> Self {
        let text = error.to_string();
        match &error {
            Pkcs11Error::TokenNotFound(_) | Pkcs11Error::Worker(_) => {
                RootKeyError::Unavailable(text)
            }
            Pkcs11Error::Pin(_) | Pkcs11Error::Module { .. } | Pkcs11Error::Binding(_) => {
                RootKeyError::Backend(text)
            }
            Pkcs11Error::NoRootKey(_) | Pkcs11Error::Unprotected(_) => RootKeyError::Backend(text),
            Pkcs11Error::PinRejected(_) => RootKeyError::Denied(text),
            Pkcs11Error::MissingMechanism(_) => RootKeyError::Backend(text),
            Pkcs11Error::Call { rv, .. } => match rv {
                RvError::PinIncorrect
                | RvError::PinLocked
                | RvError::PinExpired
                | RvError::PinInvalid
                | RvError::PinLenRange
                | RvError::KeyFunctionNotPermitted => RootKeyError::Denied(text),
                _ if error.is_session_lost() => RootKeyError::Unavailable(text),
                RvError::DeviceMemory
                | RvError::HostMemory
                | RvError::FunctionFailed
                | RvError::SessionCount => RootKeyError::Unavailable(text),
                _ => RootKeyError::Backend(text),
            },
        }
    }
}
