//! Times and durations as operators read them: RFC 3339 in UTC, and `3m12s`.

use std::time::{Duration, SystemTime};

/// `at` as RFC 3339 in UTC, whole seconds (`2026-12-08T16:10:00Z`).
pub fn rfc3339(at: SystemTime) -> String {
    let seconds = at
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    time::OffsetDateTime::from_unix_timestamp(seconds)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| format!("@{seconds}"))
}

/// `d` in whole seconds as hours, minutes and seconds, leading zero units left out: `45s`,
/// `3m12s`, `26h0m5s`.
pub fn compact(d: Duration) -> String {
    let s = d.as_secs();
    match (s / 3600, s / 60 % 60, s % 60) {
        (0, 0, sec) => format!("{sec}s"),
        (0, min, sec) => format!("{min}m{sec}s"),
        (h, min, sec) => format!("{h}h{min}m{sec}s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_utc_seconds_and_compact_durations() {
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_796_918_400);
        assert_eq!(rfc3339(at), "2026-12-10T16:00:00Z");
        let text: Vec<String> = [0, 45, 192, 93_605]
            .into_iter()
            .map(|s| compact(Duration::from_secs(s)))
            .collect();
        assert_eq!(text, ["0s", "45s", "3m12s", "26h0m5s"]);
    }
}
