//! The rotation state file (`<cert dir>/.rotation/state.json`): which target is being rotated,
//! which phases are complete, the phase in progress with its per-step markers, and what later
//! phases need (backups, manifest flag values, switch time, token lifetime). Written
//! atomically after every step.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::plan::{Phase, Target};
use crate::error::{Error, Result};
use crate::store;

/// Version of the state file format.
pub const STATE_VERSION: u32 = 1;

/// Where a rotation stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum Status {
    /// Phases are being run; another target cannot start.
    InProgress,
    /// `abort` has begun restoring the origin backup (rerun `abort` after a crash).
    Aborting,
    /// `finish` completed; a new rotation may start.
    Finished,
    /// `abort` completed; a new rotation may start.
    Aborted,
}

/// The phase currently running (or interrupted).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Running {
    /// The phase.
    pub phase: Phase,
    /// The backup directory taken before its first step (relative to `.rotation`).
    pub backup: String,
    /// Names of the steps already done, in order.
    pub steps_done: Vec<String>,
}

/// An edited flag of a static pod manifest, with the value it had before the rotation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FlagEdit {
    /// The manifest file.
    pub file: PathBuf,
    /// The flag, e.g. `--cluster-signing-cert-file`.
    pub flag: String,
    /// Its value before the rotation.
    pub original: String,
}

/// The content of `state.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct State {
    /// Format version ([`STATE_VERSION`]).
    pub version: u32,
    /// The target being (or last) rotated.
    pub target: Target,
    /// Overall status.
    pub status: Status,
    /// Phases completed, in order.
    pub completed: Vec<Phase>,
    /// The phase in progress, if any.
    pub running: Option<Running>,
    /// The backup taken at the start of `start`: the pre-rotation files `abort` restores.
    pub origin_backup: Option<String>,
    /// Every backup directory taken, oldest first (relative to `.rotation`).
    pub backups: Vec<String>,
    /// The static pod manifest directory given at `start`, if manifests are managed.
    pub manifests_dir: Option<PathBuf>,
    /// Manifest flags edited at `start`, with their original values (restored at `finish`).
    pub manifest_flags: Vec<FlagEdit>,
    /// Maximum lifetime of service-account tokens, in seconds (`sa` only).
    pub max_token_lifetime_secs: Option<u64>,
    /// When `start` began (RFC 3339).
    pub started_at: String,
    /// When `switch` completed (RFC 3339).
    pub switched_at: Option<String>,
    /// When the rotation finished or was aborted (RFC 3339).
    pub ended_at: Option<String>,
}

impl State {
    /// A fresh state for a rotation of `target` beginning now.
    pub fn new(target: Target, manifests_dir: Option<PathBuf>) -> Self {
        State {
            version: STATE_VERSION,
            target,
            status: Status::InProgress,
            completed: Vec::new(),
            running: None,
            origin_backup: None,
            backups: Vec::new(),
            manifests_dir,
            manifest_flags: Vec::new(),
            max_token_lifetime_secs: None,
            started_at: now_rfc3339(),
            switched_at: None,
            ended_at: None,
        }
    }

    /// True while this rotation blocks others (in progress or aborting).
    pub fn is_active(&self) -> bool {
        matches!(self.status, Status::InProgress | Status::Aborting)
    }

    /// The last completed phase.
    pub fn last_completed(&self) -> Option<Phase> {
        self.completed.last().copied()
    }

    /// Whether `phase` has completed.
    pub fn has_completed(&self, phase: Phase) -> bool {
        self.completed.contains(&phase)
    }

    /// Whether `finish` has begun or completed (after which `abort` is refused).
    pub fn finish_begun(&self) -> bool {
        self.has_completed(Phase::Finish)
            || self
                .running
                .as_ref()
                .is_some_and(|r| r.phase == Phase::Finish)
    }
}

/// Loads the state file; `Ok(None)` when no rotation was ever started here.
pub fn load(path: &Path) -> Result<Option<State>> {
    let Some(text) = store::read_optional(path)? else {
        return Ok(None);
    };
    let state: State = serde_json::from_str(&text).map_err(|e| Error::parse(path, e))?;
    if state.version != STATE_VERSION {
        return Err(Error::invalid(
            path,
            format!(
                "state version {} is not supported (expected {STATE_VERSION})",
                state.version
            ),
        ));
    }
    Ok(Some(state))
}

/// Writes the state file atomically (mode 0600).
pub fn save(path: &Path, state: &State) -> Result<()> {
    let mut text = serde_json::to_string_pretty(state).map_err(|e| Error::Render {
        what: "rotation state",
        reason: e.to_string(),
    })?;
    text.push('\n');
    store::write_atomic(path, text.as_bytes(), store::MODE_SECRET)
}

/// The current time as RFC 3339.
pub fn now_rfc3339() -> String {
    format_rfc3339(OffsetDateTime::now_utc())
}

/// Formats a time as RFC 3339 (UTC).
pub fn format_rfc3339(t: OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| t.unix_timestamp().to_string())
}

/// Parses an RFC 3339 time recorded in the state file.
pub fn parse_rfc3339(text: &str, path: &Path) -> Result<OffsetDateTime> {
    OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .map_err(|e| Error::parse(path, format!("time {text:?}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| Error::io("tempdir", e))?;
        let path = dir.path().join("state.json");
        let mut s = State::new(Target::EtcdCa, None);
        s.running = Some(Running {
            phase: Phase::Switch,
            backup: "backups/x".into(),
            steps_done: vec!["leaf:etcd-server".into()],
        });
        save(&path, &s)?;
        assert_eq!(load(&path)?, Some(s));
        let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
        assert!(text.contains("\"target\": \"etcd-ca\""), "{text}");
        assert_eq!(store::mode_of(&path), Some(0o600));
        Ok(())
    }
}
