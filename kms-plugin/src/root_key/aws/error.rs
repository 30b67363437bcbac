//! How AWS KMS failures map onto [`RootKeyError`].

use crate::root_key::RootKeyError;
use aws_sdk_kms::error::{ProvideErrorMetadata, SdkError};

/// Maps a failed KMS call of any operation. `key_id` names the key involved (for messages and
/// for the variants that carry it).
///
/// - `InvalidCiphertextException`, `IncorrectKeyException` → [`RootKeyError::Integrity`]
/// - `NotFoundException` → [`RootKeyError::UnknownKey`]
/// - `AccessDeniedException`, `DisabledException`, `KMSInvalidStateException`,
///   `InvalidKeyUsageException` → [`RootKeyError::Denied`]
/// - timeouts, dispatch (connection) failures, throttling, `KMSInternalException`,
///   `DependencyTimeoutException`, `KeyUnavailableException`, any 5xx → [`RootKeyError::Unavailable`]
/// - anything else → [`RootKeyError::Backend`]
pub fn map_sdk_error<E, R>(operation: &str, key_id: &str, error: SdkError<E, R>) -> RootKeyError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + HttpStatus,
{
    let text = format!("KMS {operation} ({key_id}): {}", describe(&error));
    match &error {
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            RootKeyError::Unavailable(text)
        }
        SdkError::ServiceError(service) => classify(
            service.err().code(),
            service.raw().http_status(),
            key_id,
            text,
        ),
        _ => RootKeyError::Backend(text),
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
fn classify(code: Option<&str>, status: u16, key_id: &str, text: String) -> RootKeyError {
    match code.unwrap_or_default() {
        "InvalidCiphertextException" | "IncorrectKeyException" => {
            RootKeyError::Integrity(key_id.to_owned())
        }
        "NotFoundException" => RootKeyError::UnknownKey(key_id.to_owned()),
        "AccessDeniedException"
        | "DisabledException"
        | "KMSInvalidStateException"
        | "InvalidKeyUsageException"
        | "UnrecognizedClientException"
        | "InvalidSignatureException" => RootKeyError::Denied(text),
        "ThrottlingException"
        | "ThrottledException"
        | "TooManyRequestsException"
        | "RequestLimitExceeded"
        | "LimitExceededException"
        | "KMSInternalException"
        | "DependencyTimeoutException"
        | "KeyUnavailableException"
        | "ServiceUnavailable"
        | "InternalFailure" => RootKeyError::Unavailable(text),
        _ if status >= 500 || status == 429 => RootKeyError::Unavailable(text),
        _ => RootKeyError::Backend(text),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_map_to_the_documented_variants() {
        let id = "arn:aws:kms:eu-west-1:111122223333:key/k";
        type Expect = fn(&RootKeyError) -> bool;
        let cases: [(&str, u16, Expect); 8] = [
            ("InvalidCiphertextException", 400, |e| {
                matches!(e, RootKeyError::Integrity(_))
            }),
            ("IncorrectKeyException", 400, |e| {
                matches!(e, RootKeyError::Integrity(_))
            }),
            ("NotFoundException", 400, |e| {
                matches!(e, RootKeyError::UnknownKey(_))
            }),
            ("AccessDeniedException", 400, |e| {
                matches!(e, RootKeyError::Denied(_))
            }),
            ("DisabledException", 400, |e| {
                matches!(e, RootKeyError::Denied(_))
            }),
            ("ThrottlingException", 400, |e| {
                matches!(e, RootKeyError::Unavailable(_))
            }),
            ("SomethingNew", 503, |e| {
                matches!(e, RootKeyError::Unavailable(_))
            }),
            ("ValidationException", 400, |e| {
                matches!(e, RootKeyError::Backend(_))
            }),
        ];
        for (code, status, expected) in cases {
            let error = classify(Some(code), status, id, code.to_owned());
            assert!(expected(&error), "{code} -> {error:?}");
        }
    }
}
