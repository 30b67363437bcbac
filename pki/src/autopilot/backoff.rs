//! Backing off after failed passes: a pass whose renewal or restart failed (a rollback included)
//! makes the next ones refuse for 1 h, doubling with every further failure up to 24 h, so a
//! node does not restart its control plane every hour for a problem that needs an operator. A
//! successful pass clears it. Kept in `<cert dir>/.autopilot/backoff.json` (under the pass lock).

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::error::{Error, Result};
use crate::store;

/// The wait after the first failed pass.
pub const FIRST: Duration = Duration::from_secs(3600);
/// The longest wait.
pub const LONGEST: Duration = Duration::from_secs(24 * 3600);

/// Failed passes in a row and until when passes refuse.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Backoff {
    /// Passes in a row whose renewal or restart failed.
    pub consecutive_failures: u32,
    /// Unix seconds before which a pass refuses; 0 when none.
    pub until: i64,
}

impl Backoff {
    /// The state file in the pass's work directory.
    pub fn path(work: &Path) -> PathBuf {
        work.join("backoff.json")
    }

    /// The recorded state; none recorded is no backoff. An unreadable file is an error (the
    /// pass refuses rather than guess).
    pub fn load(path: &Path) -> Result<Backoff> {
        match store::read_optional(path)? {
            None => Ok(Backoff::default()),
            Some(text) => serde_json::from_str(&text).map_err(|e| Error::parse(path, e)),
        }
    }

    /// Whether a pass at `now` must wait.
    pub fn active(&self, now: OffsetDateTime) -> bool {
        now.unix_timestamp() < self.until
    }

    /// The state after a pass at `now` that failed (`true`) or succeeded.
    pub fn after(self, failed: bool, now: OffsetDateTime) -> Backoff {
        if !failed {
            return Backoff::default();
        }
        let n = self.consecutive_failures.saturating_add(1);
        let wait = FIRST.saturating_mul(1u32 << (n - 1).min(16)).min(LONGEST);
        Backoff {
            consecutive_failures: n,
            until: now.unix_timestamp() + wait.as_secs() as i64,
        }
    }

    /// Writes the state atomically.
    pub fn save(&self, path: &Path) -> Result<()> {
        let text = serde_json::to_string(self).map_err(|e| Error::Config(e.to_string()))?;
        store::write_atomic(path, text.as_bytes(), store::MODE_SECRET)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_from_an_hour_to_a_day_and_clears_on_success() {
        let now = OffsetDateTime::from_unix_timestamp(1_000_000).expect("time");
        let mut b = Backoff::default();
        let mut waits = Vec::new();
        for _ in 0..7 {
            b = b.after(true, now);
            waits.push((b.until - now.unix_timestamp()) / 3600);
        }
        assert_eq!(waits, [1, 2, 4, 8, 16, 24, 24]);
        assert!(b.active(now) && !b.active(now + time::Duration::days(2)));
        assert_eq!(b.after(false, now), Backoff::default());
    }
}
