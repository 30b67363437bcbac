//! Duration parsing (`720h`, `30d`, Go's `8760h0m0s`, through [`durable::HumanDuration`]) and
//! kubeadm's short residual-time format.

use std::time::Duration;

use durable::HumanDuration;

use crate::error::{Error, Result};

/// Parses a duration made of `<number><unit>` groups, units `ms`, `s`, `m`, `h`, `d`, `w`, `y`
/// (365 days), as in `720h`, `30d`, `1h30m` or Go's `8760h0m0s`. Too large is an error.
pub fn parse_duration(text: &str) -> Result<Duration> {
    text.parse::<HumanDuration>()
        .map(HumanDuration::get)
        .map_err(|e| Error::Config(format!("{e} (examples: 720h, 30d, 8760h0m0s)")))
}

/// kubeadm's residual-time format (`ShortHumanDuration`): `45s`, `12m`, `30h`, `364d`, `9y`,
/// and `<invalid>` when already expired.
pub fn short_human(seconds: i64) -> String {
    if seconds < -1 {
        return "<invalid>".to_owned();
    }
    if seconds < 0 {
        return "0s".to_owned();
    }
    if seconds < 60 {
        return format!("{seconds}s");
    }
    let minutes = seconds / 60;
    if minutes < 60 {
        return format!("{minutes}m");
    }
    let hours = minutes / 60;
    if hours < 48 {
        return format!("{hours}h");
    }
    if hours < 24 * 365 {
        return format!("{}d", hours / 24);
    }
    format!("{}y", hours / 24 / 365)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units() {
        assert_eq!(
            parse_duration("720h").ok(),
            Some(Duration::from_secs(720 * 3600))
        );
        assert_eq!(
            parse_duration("30d").ok(),
            Some(Duration::from_secs(30 * 86_400))
        );
        assert_eq!(
            parse_duration("8760h0m0s").ok(),
            Some(Duration::from_secs(8760 * 3600))
        );
        assert_eq!(
            parse_duration("1h30m").ok(),
            Some(Duration::from_secs(5400))
        );
        assert!(parse_duration("").is_err());
        assert!(parse_duration("12").is_err());
        assert!(parse_duration("3x").is_err());
        assert!(
            parse_duration("99999999999999y").is_err(),
            "overflow is an error"
        );
    }

    #[test]
    fn short_human_matches_kubeadm() {
        assert_eq!(short_human(-5), "<invalid>");
        assert_eq!(short_human(30), "30s");
        assert_eq!(short_human(3600 * 30), "30h");
        assert_eq!(short_human(86_400 * 364), "364d");
        assert_eq!(short_human(86_400 * 365 * 10), "10y");
    }
}
