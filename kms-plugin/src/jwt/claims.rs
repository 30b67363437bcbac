//! What a Sign request may ask to be signed: a JSON object of a service-account token, with its
//! issuer, subject and times, whose lifetime stays within `max_token_expiration`.

use base64::Engine;
use std::time::Duration;

/// Why claims are refused (the text goes back to kube-apiserver; it holds no claim values).
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum ClaimsError {
    /// Not base64url of a JSON object.
    #[error("claims must be base64url of a JSON object")]
    Malformed,
    /// A required claim is absent or of the wrong type.
    #[error("claims lack {0} (iss and sub strings, exp and iat integers are required)")]
    Missing(&'static str),
    /// `exp` is not after `iat`.
    #[error("exp must be after iat")]
    NotAfterIssue,
    /// `exp − iat` exceeds the configured maximum.
    #[error("token lifetime exp - iat of {lifetime}s exceeds max_token_expiration ({max}s)")]
    TooLong {
        /// `exp − iat`, seconds.
        lifetime: i64,
        /// The configured maximum, seconds.
        max: u64,
    },
}

/// Checks decoded-from-base64url `claims` against the signer's policy.
pub fn check(claims: &str, max_lifetime: Duration) -> Result<(), ClaimsError> {
    let json = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(claims)
        .map_err(|_| ClaimsError::Malformed)?;
    let value: serde_json::Value =
        serde_json::from_slice(&json).map_err(|_| ClaimsError::Malformed)?;
    let object = value.as_object().ok_or(ClaimsError::Malformed)?;
    for name in ["iss", "sub"] {
        if !object.get(name).is_some_and(serde_json::Value::is_string) {
            return Err(ClaimsError::Missing(name));
        }
    }
    let time = |name: &'static str| {
        object
            .get(name)
            .and_then(serde_json::Value::as_i64)
            .ok_or(ClaimsError::Missing(name))
    };
    let (exp, iat) = (time("exp")?, time("iat")?);
    let max = max_lifetime.as_secs();
    let lifetime = exp.checked_sub(iat).ok_or(ClaimsError::TooLong {
        lifetime: i64::MAX,
        max,
    })?;
    if lifetime <= 0 {
        return Err(ClaimsError::NotAfterIssue);
    }
    if u64::try_from(lifetime).map_or(true, |l| l > max) {
        return Err(ClaimsError::TooLong { lifetime, max });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(json: &str) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json)
    }

    const HOUR: Duration = Duration::from_secs(3600);

    #[test]
    fn policy() {
        let ok = b64(r#"{"iss":"i","sub":"s","iat":100,"exp":3700}"#);
        assert_eq!(check(&ok, HOUR), Ok(()));
        let long = b64(r#"{"iss":"i","sub":"s","iat":100,"exp":3701}"#);
        assert!(matches!(
            check(&long, HOUR),
            Err(ClaimsError::TooLong { lifetime: 3601, .. })
        ));
        for (json, missing) in [
            (r#"{"sub":"s","iat":1,"exp":2}"#, "iss"),
            (r#"{"iss":"i","iat":1,"exp":2}"#, "sub"),
            (r#"{"iss":"i","sub":"s","iat":1}"#, "exp"),
            (r#"{"iss":"i","sub":"s","exp":2}"#, "iat"),
            (r#"{"iss":"i","sub":"s","iat":"1","exp":2}"#, "iat"),
            (r#"{"iss":7,"sub":"s","iat":1,"exp":2}"#, "iss"),
        ] {
            assert_eq!(
                check(&b64(json), HOUR),
                Err(ClaimsError::Missing(missing)),
                "{json}"
            );
        }
        let backwards = b64(r#"{"iss":"i","sub":"s","iat":10,"exp":5}"#);
        assert_eq!(check(&backwards, HOUR), Err(ClaimsError::NotAfterIssue));
        let extreme = b64(&format!(
            r#"{{"iss":"i","sub":"s","iat":{},"exp":{}}}"#,
            i64::MIN,
            i64::MAX
        ));
        assert!(matches!(
            check(&extreme, HOUR),
            Err(ClaimsError::TooLong { .. })
        ));
        assert_eq!(check(&b64("[1]"), HOUR), Err(ClaimsError::Malformed));
        assert_eq!(check("e30x", HOUR), Err(ClaimsError::Malformed));
    }
}
