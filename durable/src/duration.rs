//! Durations written the way operators write them: `500ms`, `30s`, `10m`, `24h`, `7d`, `2w`,
//! `1y` (365 days, as kubeadm), and groups of these such as `1h30m` or Go's `8760h0m0s`.
//! A value too large for [`Duration`] is an error, never silently capped.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// A duration parsed from a human string such as `90s` or `1h30m`.
#[derive(Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct HumanDuration(pub Duration);

impl HumanDuration {
    /// The parsed duration.
    pub fn get(self) -> Duration {
        self.0
    }
}

impl From<Duration> for HumanDuration {
    fn from(value: Duration) -> Self {
        Self(value)
    }
}

impl From<HumanDuration> for Duration {
    fn from(value: HumanDuration) -> Self {
        value.0
    }
}

/// Why a text is not a duration; the message quotes the text and names the fix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DurationError(String);

impl fmt::Display for DurationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for DurationError {}

const UNITS: &str = "ms, s, m, h, d, w or y";

/// Length of one unit in milliseconds, or `None` for an unknown unit.
fn unit_millis(unit: &str) -> Option<u128> {
    const SECOND: u128 = 1000;
    const DAY: u128 = 86_400 * SECOND;
    Some(match unit {
        "ms" => 1,
        "s" => SECOND,
        "m" => 60 * SECOND,
        "h" => 3600 * SECOND,
        "d" => DAY,
        "w" => 7 * DAY,
        "y" => 365 * DAY,
        _ => return None,
    })
}

/// Largest number of milliseconds a [`Duration`] holds (whole milliseconds only).
const MAX_MILLIS: u128 = u64::MAX as u128 * 1000 + 999;

impl FromStr for HumanDuration {
    type Err = DurationError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bad = |reason: String| DurationError(format!("invalid duration {text:?}: {reason}"));
        let trimmed = text.trim();
        if trimmed.is_empty() {
            return Err(bad(format!(
                "empty (examples: 500ms, 30s, 1h30m, 7d; units {UNITS})"
            )));
        }
        let too_large = || bad("too large".to_owned());
        let mut total: u128 = 0;
        let mut rest = trimmed;
        while !rest.is_empty() {
            let digits = rest
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(rest.len());
            if digits == 0 {
                return Err(bad("expected a number".to_owned()));
            }
            let number: u64 = rest[..digits].parse().map_err(|_| too_large())?;
            rest = &rest[digits..];
            let unit_len = rest
                .find(|c: char| c.is_ascii_digit())
                .unwrap_or(rest.len());
            let unit = &rest[..unit_len];
            rest = &rest[unit_len..];
            let millis = match (unit, unit_millis(unit)) {
                ("", _) => return Err(bad(format!("missing unit ({UNITS})"))),
                (_, None) => return Err(bad(format!("unknown unit {unit:?} (use {UNITS})"))),
                (_, Some(millis)) => millis,
            };
            // u64 × the longest unit fits in u128, and so does the sum of two values ≤ MAX_MILLIS.
            total += u128::from(number) * millis;
            if total > MAX_MILLIS {
                return Err(too_large());
            }
        }
        let secs = u64::try_from(total / 1000).map_err(|_| too_large())?;
        let millis = u64::try_from(total % 1000).map_err(|_| too_large())?;
        Ok(Self(
            Duration::from_secs(secs) + Duration::from_millis(millis),
        ))
    }
}

impl fmt::Display for HumanDuration {
    /// Whole seconds as `Xs`, anything else as `Xms`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.as_millis();
        if ms.is_multiple_of(1000) {
            write!(f, "{}s", ms / 1000)
        } else {
            write!(f, "{ms}ms")
        }
    }
}

impl fmt::Debug for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")
    }
}

#[cfg(feature = "serde")]
impl<'de> serde::Deserialize<'de> for HumanDuration {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Duration, String> {
        text.parse::<HumanDuration>()
            .map(HumanDuration::get)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn parses_every_unit_and_groups() {
        const DAY: u64 = 86_400;
        let cases = [
            ("500ms", Duration::from_millis(500)),
            ("30s", Duration::from_secs(30)),
            ("10m", Duration::from_secs(600)),
            ("24h", Duration::from_secs(DAY)),
            ("7d", Duration::from_secs(7 * DAY)),
            ("2w", Duration::from_secs(14 * DAY)),
            ("1y", Duration::from_secs(365 * DAY)),
            ("1h30m", Duration::from_secs(5_400)),
            ("8760h0m0s", Duration::from_secs(365 * DAY)),
            ("1s500ms", Duration::from_millis(1_500)),
            ("0s", Duration::ZERO),
            (" 720h\n", Duration::from_secs(720 * 3600)),
        ];
        for (text, expected) in cases {
            assert_eq!(parse(text), Ok(expected), "{text:?}");
        }
    }

    #[test]
    fn rejects_garbage_with_a_reason() {
        let cases = [
            ("", "empty"),
            ("   ", "empty"),
            ("10", "missing unit"),
            ("1h30", "missing unit"),
            ("s", "expected a number"),
            ("-1s", "expected a number"),
            ("1.5h", "unknown unit \".\""),
            ("5 parsecs", "unknown unit \" parsecs\""),
            ("3x", "unknown unit \"x\""),
            ("1h 30m", "unknown unit \"h \""),
        ];
        for (text, reason) in cases {
            let err = parse(text).expect_err(text);
            assert!(err.contains(reason), "{text:?}: {err}");
            assert!(err.starts_with("invalid duration"), "{text:?}: {err}");
        }
    }

    #[test]
    fn overflow_is_an_error_not_a_cap() {
        let max_secs = u64::MAX;
        let cases = [
            format!("{}s", u128::from(max_secs) + 1),
            "99999999999999999999999h".to_owned(),
            "584942417356y".to_owned(),
            format!("{max_secs}s1s"),
            format!("{}s{}s", max_secs / 2 + 1, max_secs / 2 + 1),
        ];
        for text in cases {
            let err = parse(&text).expect_err(&text);
            assert!(err.contains("too large"), "{text}: {err}");
        }
        assert_eq!(
            parse(&format!("{max_secs}s")),
            Ok(Duration::from_secs(max_secs))
        );
        assert_eq!(
            parse("584942417355y"),
            Ok(Duration::from_secs(584_942_417_355 * 365 * 86_400))
        );
        assert_eq!(
            parse(&format!("{max_secs}ms")),
            Ok(Duration::from_millis(max_secs))
        );
    }

    #[test]
    fn displays_seconds_or_milliseconds() {
        let show = |d: Duration| HumanDuration::from(d).to_string();
        assert_eq!(show(Duration::from_secs(90)), "90s");
        assert_eq!(show(Duration::from_millis(1_500)), "1500ms");
        assert_eq!(show(Duration::ZERO), "0s");
        assert_eq!(
            format!("{:?}", HumanDuration::from(Duration::from_millis(800))),
            "800ms"
        );
        let round_trip =
            |text: &str| parse(&HumanDuration(parse(text).unwrap_or_default()).to_string());
        assert_eq!(round_trip("1h30m"), parse("5400s"));
        assert_eq!(round_trip("1s250ms"), parse("1250ms"));
    }

    #[cfg(feature = "serde")]
    #[test]
    fn deserializes_from_a_string() {
        use serde::Deserialize;
        use serde::de::IntoDeserializer;
        use serde::de::value::{Error, StrDeserializer};
        let ok: StrDeserializer<'_, Error> = "2m".into_deserializer();
        assert_eq!(
            HumanDuration::deserialize(ok).map(HumanDuration::get),
            Ok(Duration::from_secs(120))
        );
        let bad: StrDeserializer<'_, Error> = "2 minutes".into_deserializer();
        let err = HumanDuration::deserialize(bad).expect_err("bad");
        assert!(err.to_string().contains("unknown unit"), "{err}");
    }
}
