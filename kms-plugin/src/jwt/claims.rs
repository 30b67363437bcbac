//! What a Sign request may ask to be signed: a JSON object of a service-account token, with its
//! issuer, subject and times, whose lifetime stays within `max_token_expiration` and which are
//! valid now: a token dated ahead or already expired is refused, so brief access to the signer
//! socket cannot mint tokens that keep working long after.

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
    /// `iat` is more than [`CLOCK_SKEW`] ahead of the signer's clock.
    #[error("iat is {0}s in the future (at most 60s of clock skew is allowed)")]
    IssuedInFuture(i64),
    /// `nbf` is more than [`CLOCK_SKEW`] ahead of the signer's clock.
    #[error("nbf is {0}s in the future (at most 60s of clock skew is allowed)")]
    NotYetValid(i64),
    /// `nbf` is present but not an integer.
    #[error("nbf must be an integer")]
    BadNotBefore,
    /// `exp` is not after the signer's clock.
    #[error("exp is {0}s in the past")]
    Expired(i64),
    /// `exp − iat` exceeds the configured maximum.
    #[error("token lifetime exp - iat of {lifetime}s exceeds max_token_expiration ({max}s)")]
    TooLong {
        /// `exp − iat`, seconds.
        lifetime: i64,
        /// The configured maximum, seconds.
        max: u64,
    },
}

/// How far ahead of the signer's clock `iat` and `nbf` may be (kube-apiserver runs on the same
/// node and stamps both with its own "now"; this covers the request's transit and a stepped clock).
pub const CLOCK_SKEW: Duration = Duration::from_secs(60);

/// Checks decoded-from-base64url `claims` against the signer's policy, at Unix time `now`
/// (seconds).
pub fn check(claims: &str, max_lifetime: Duration, now: i64) -> Result<(), ClaimsError> {
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
    check_times(object, exp, iat, now)
}

/// The clock checks: `iat` and `nbf` not ahead of `now` by more than the skew, `exp` after `now`.
/// With `exp − iat ≤ max` already checked, `exp` is then at most `now + max + skew`.
fn check_times(
    object: &serde_json::Map<String, serde_json::Value>,
    exp: i64,
    iat: i64,
    now: i64,
) -> Result<(), ClaimsError> {
    let skew = i64::try_from(CLOCK_SKEW.as_secs()).unwrap_or(i64::MAX);
    let ahead = |t: i64| t.saturating_sub(now);
    if ahead(iat) > skew {
        return Err(ClaimsError::IssuedInFuture(ahead(iat)));
    }
    match object.get("nbf") {
        None => {}
        Some(nbf) => {
            let nbf = nbf.as_i64().ok_or(ClaimsError::BadNotBefore)?;
            if ahead(nbf) > skew {
                return Err(ClaimsError::NotYetValid(ahead(nbf)));
            }
        }
    }
    if ahead(exp) <= 0 {
        return Err(ClaimsError::Expired(now.saturating_sub(exp)));
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
        assert_eq!(check(&ok, HOUR, 100), Ok(()));
        let long = b64(r#"{"iss":"i","sub":"s","iat":100,"exp":3701}"#);
        assert!(matches!(
            check(&long, HOUR, 100),
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
                check(&b64(json), HOUR, 1),
                Err(ClaimsError::Missing(missing)),
                "{json}"
            );
        }
        let backwards = b64(r#"{"iss":"i","sub":"s","iat":10,"exp":5}"#);
        assert_eq!(check(&backwards, HOUR, 5), Err(ClaimsError::NotAfterIssue));
        let extreme = b64(&format!(
            r#"{{"iss":"i","sub":"s","iat":{},"exp":{}}}"#,
            i64::MIN,
            i64::MAX
        ));
        assert!(matches!(
            check(&extreme, HOUR, 0),
            Err(ClaimsError::TooLong { .. })
        ));
        assert_eq!(check(&b64("[1]"), HOUR, 0), Err(ClaimsError::Malformed));
        assert_eq!(check("e30x", HOUR, 0), Err(ClaimsError::Malformed));
    }

    #[test]
    fn clock() {
        let now = 1_800_000_000;
        let at = |iat: i64, exp: i64, nbf: Option<i64>| {
            let nbf = nbf.map(|n| format!(r#","nbf":{n}"#)).unwrap_or_default();
            check(
                &b64(&format!(
                    r#"{{"iss":"i","sub":"s","iat":{iat},"exp":{exp}{nbf}}}"#
                )),
                HOUR,
                now,
            )
        };
        assert_eq!(at(now, now + 3600, Some(now)), Ok(()));
        assert_eq!(at(now + 60, now + 3660, Some(now + 60)), Ok(()), "skew");
        assert_eq!(
            at(now + 61, now + 3600, None),
            Err(ClaimsError::IssuedInFuture(61))
        );
        let ten_years = 10 * 365 * 86400;
        assert!(matches!(
            at(now + ten_years, now + ten_years + 600, None),
            Err(ClaimsError::IssuedInFuture(_))
        ));
        assert_eq!(
            at(now, now + 600, Some(now + 61)),
            Err(ClaimsError::NotYetValid(61))
        );
        let nbf_text = b64(&format!(
            r#"{{"iss":"i","sub":"s","iat":{now},"exp":{},"nbf":"x"}}"#,
            now + 1
        ));
        assert_eq!(check(&nbf_text, HOUR, now), Err(ClaimsError::BadNotBefore));
        assert_eq!(at(now - 600, now, None), Err(ClaimsError::Expired(0)));
        assert_eq!(at(1, 600, None), Err(ClaimsError::Expired(now - 600)));
        // Backdated iat keeps exp - iat within the limit while exp runs past now + max.
        assert!(matches!(at(now - 30, now + 3570, None), Ok(())));
        assert_eq!(
            at(now - 3000, now + 3661, Some(now)),
            Err(ClaimsError::TooLong {
                lifetime: 6661,
                max: 3600
            })
        );
        assert!(matches!(
            at(i64::MAX - 10, i64::MAX, None),
            Err(ClaimsError::IssuedInFuture(_))
        ));
    }
}
