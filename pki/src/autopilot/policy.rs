//! When a certificate is due for renewal: the renewal point of a certificate from its validity
//! window and the configured threshold.

use std::time::Duration;

use time::OffsetDateTime;

/// The latest renewal point in the default mode: 30 days before expiry.
pub const FLOOR: Duration = Duration::from_secs(30 * 24 * 3600);

/// How far ahead a CA's expiry is reported (a CA is rotated, never renewed, by autopilot).
pub const CA_WARNING: Duration = Duration::from_secs(365 * 24 * 3600);

/// The renewal threshold.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub enum Policy {
    /// Renew once this fraction of the lifetime has elapsed, and never later than [`FLOOR`]
    /// before expiry. The default is 2/3: less than one third of the lifetime remains.
    Fraction(f64),
    /// Renew once less than this remains before expiry (taken literally, no floor).
    Before(Duration),
}

impl Default for Policy {
    fn default() -> Self {
        Policy::Fraction(2.0 / 3.0)
    }
}

impl Policy {
    /// A fraction policy; `f` must lie in (0, 1].
    pub fn fraction(f: f64) -> Option<Self> {
        (f > 0.0 && f <= 1.0).then_some(Policy::Fraction(f))
    }

    /// The moment from which a certificate valid from `not_before` to `not_after` is due.
    pub fn renewal_point(
        &self,
        not_before: OffsetDateTime,
        not_after: OffsetDateTime,
    ) -> OffsetDateTime {
        match *self {
            Policy::Fraction(f) => {
                let lifetime = (not_after - not_before).max(time::Duration::ZERO);
                let by_fraction = not_before + lifetime * f;
                by_fraction.min(not_after - FLOOR)
            }
            Policy::Before(d) => not_after - d,
        }
    }

    /// Whether the certificate is due at `now`.
    pub fn is_due(
        &self,
        not_before: OffsetDateTime,
        not_after: OffsetDateTime,
        now: OffsetDateTime,
    ) -> bool {
        now >= self.renewal_point(not_before, not_after)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn default_renews_with_a_third_left_and_never_later_than_30_days() {
        let p = Policy::default();
        let nb = datetime!(2026-01-01 0:00 UTC);
        let year = nb + time::Duration::days(365);
        let point = p.renewal_point(nb, year);
        assert!((point - (year - time::Duration::days(122))).abs() < time::Duration::days(1));
        let short = nb + time::Duration::days(60);
        assert_eq!(p.renewal_point(nb, short), nb + time::Duration::days(30));
        assert!(!p.is_due(nb, year, nb + time::Duration::days(200)));
        assert!(p.is_due(nb, year, nb + time::Duration::days(250)));
    }

    #[test]
    fn before_is_literal_and_fraction_is_bounded() {
        let nb = datetime!(2026-01-01 0:00 UTC);
        let na = nb + time::Duration::days(365);
        let p = Policy::Before(Duration::from_secs(7 * 24 * 3600));
        assert_eq!(p.renewal_point(nb, na), na - time::Duration::days(7));
        assert!(Policy::fraction(0.0).is_none());
        assert!(Policy::fraction(1.5).is_none());
        assert!(Policy::fraction(0.8).is_some());
    }
}
