//! How AWS KMS failures map onto [`KeyStoreError`].

use crate::KeyStoreError;
use aws_sdk_kms::error::{ProvideErrorMetadata, SdkError};

/// Maps a failed KMS call of any operation; the message names `operation` and `key_id`.
///
/// - `InvalidCiphertextException`, `IncorrectKeyException` → [`ErrorKind::Integrity`]
/// - `NotFoundException` → [`ErrorKind::NotFound`]
/// - `AccessDeniedException`, `DisabledException`, `KMSInvalidStateException` →
///   [`ErrorKind::Denied`]: the key itself is refused to this identity (a revocation)
/// - timeouts, dispatch (connection) failures, throttling, `KMSInternalException`,
///   `DependencyTimeoutException`, `KeyUnavailableException`, any 5xx, and the errors of this
///   side's credentials or clock (`UnrecognizedClientException`, `InvalidSignatureException`,
///   `ExpiredTokenException`, …: expired or rotated credentials, a skewed clock) →
///   [`ErrorKind::Transient`]: an outage of this node's access, not a verdict on the key
/// - anything else (`InvalidKeyUsageException`: a key made for another use) →
///   [`ErrorKind::Configuration`]
///
/// [`ErrorKind::Integrity`]: crate::ErrorKind::Integrity
/// [`ErrorKind::NotFound`]: crate::ErrorKind::NotFound
/// [`ErrorKind::Denied`]: crate::ErrorKind::Denied
/// [`ErrorKind::Transient`]: crate::ErrorKind::Transient
/// [`ErrorKind::Configuration`]: crate::ErrorKind::Configuration
pub fn map_sdk_error<E, R>(operation: &str, key_id: &str, error: SdkError<E, R>) -> KeyStoreError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + HttpStatus,
{
    let text = format!("KMS {operation} ({key_id}): {}", describe(&error));
    match &error {
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            KeyStoreError::transient(text)
        }
        SdkError::ServiceError(service) => {
            classify(service.err().code(), service.raw().http_status(), text)
        }
        _ => KeyStoreError::configuration(text),
    }
}

/// One line for a failed call: the service's error code and message, or the chain of error
/// messages (not `DisplayErrorContext`, whose `Debug` dump of the SDK error and raw response
/// would reach logs and `Status.healthz`).
fn describe<E, R>(error: &SdkError<E, R>) -> String
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug,
{
    if let SdkError::ServiceError(service) = error
        && let Some(code) = service.err().code()
    {
        return match service.err().message() {
            Some(message) => format!("{code}: {message}"),
            None => code.to_owned(),
        };
    }
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// The HTTP status of a raw response, when there is one.
pub trait HttpStatus {
    /// The status code.
    fn http_status(&self) -> u16;
}

impl HttpStatus for aws_sdk_kms::config::http::HttpResponse {
    fn http_status(&self) -> u16 {
        self.status().as_u16()
    }
}

/// Classifies a service error by its error code, then by its HTTP status.
fn classify(code: Option<&str>, status: u16, text: String) -> KeyStoreError {
    match code.unwrap_or_default() {
        "InvalidCiphertextException" | "IncorrectKeyException" => KeyStoreError::integrity(text),
        "NotFoundException" => KeyStoreError::not_found(text),
        "AccessDeniedException" | "DisabledException" | "KMSInvalidStateException" => {
            KeyStoreError::denied(text)
        }
        // This node's credentials or clock: the request never reached a decision on the key.
        "UnrecognizedClientException"
        | "InvalidSignatureException"
        | "IncompleteSignatureException"
        | "InvalidClientTokenId"
        | "ExpiredTokenException"
        | "ExpiredToken"
        | "SignatureDoesNotMatch"
        | "RequestExpired"
        | "RequestTimeTooSkewed"
        | "MissingAuthenticationTokenException" => KeyStoreError::transient(text),
        "ThrottlingException"
        | "ThrottledException"
        | "TooManyRequestsException"
        | "RequestLimitExceeded"
        | "LimitExceededException"
        | "KMSInternalException"
        | "DependencyTimeoutException"
        | "KeyUnavailableException"
        | "ServiceUnavailable"
        | "InternalFailure" => KeyStoreError::transient(text),
        _ if status >= 500 || status == 429 => KeyStoreError::transient(text),
        _ => KeyStoreError::configuration(text),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    #[test]
    fn codes_map_to_the_documented_kinds() {
        let cases = [
            ("InvalidCiphertextException", 400, ErrorKind::Integrity),
            ("IncorrectKeyException", 400, ErrorKind::Integrity),
            ("NotFoundException", 400, ErrorKind::NotFound),
            ("AccessDeniedException", 400, ErrorKind::Denied),
            ("DisabledException", 400, ErrorKind::Denied),
            ("KMSInvalidStateException", 400, ErrorKind::Denied),
            ("UnrecognizedClientException", 400, ErrorKind::Transient),
            ("InvalidSignatureException", 400, ErrorKind::Transient),
            ("ExpiredTokenException", 400, ErrorKind::Transient),
            ("InvalidKeyUsageException", 400, ErrorKind::Configuration),
            ("ThrottlingException", 400, ErrorKind::Transient),
            ("SomethingNew", 503, ErrorKind::Transient),
            ("ValidationException", 400, ErrorKind::Configuration),
        ];
        for (code, status, expected) in cases {
            let error = classify(Some(code), status, code.to_owned());
            assert_eq!(error.kind(), expected, "{code} -> {error:?}");
        }
    }
}
