//! Duration parsing (`720h`, `30d`, Go's `8760h0m0s`) and kubeadm's short residual-time format.

use std::time::Duration;

use crate::error::{Error, Result};

/// Parses a duration made of `<number><unit>` groups, units `s`, `m`, `h`, `d`, `w`, `y`
/// (365 days), as in `720h`, `30d`, `1h30m` or Go's `8760h0m0s`.
pub fn parse_duration(text: &str) -> Result<Duration> {
    let bad = || {
        Error::Config(format!(
            "invalid duration {text:?} (examples: 720h, 30d, 8760h0m0s)"
        ))
    };
    let t = text.trim();
    if t.is_empty() {
        return Err(bad());
    }
    let mut total: u64 = 0;
    let mut number = String::new();
    for c in t.chars() {
        if c.is_ascii_digit() {
            number.push(c);
            continue;
        }
        let unit: u64 = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            'w' => 7 * 86_400,
            'y' => 365 * 86_400,
            _ => return Err(bad()),
        };
        let n: u64 = number.parse().map_err(|_| bad())?;
        number.clear();
        total = n
            .checked_mul(unit)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(bad)?;
    }
    if !number.is_empty() {
        return Err(bad());
    }
    Ok(Duration::from_secs(total))
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
