//! The rotation state file (`<cert dir>/.rotation/state.json`): which target is being rotated,
//! which phases are complete, the phase in progress with its per-step markers, and what later
//! phases need (backups, manifest flag values, switch time, token lifetime). Written
//! atomically after every step. Times are RFC 3339 text in the file and [`OffsetDateTime`] in
//! memory: a time that does not parse makes the whole file fail to load.

use std::path::{Path, PathBuf};
use std::time::Duration;

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
    /// When `start` began.
    #[serde(with = "time::serde::rfc3339")]
    pub started_at: OffsetDateTime,
    /// The rotation's id, the same on every node of the cluster (from `--join`'s file, else
    /// generated at `start`).
    #[serde(default)]
    pub rotation_id: Option<String>,
    /// Whether `start` took the new CA (key) from a shared-material file (`--join`).
    #[serde(default)]
    pub joined: bool,
    /// When `switch` completed.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub switched_at: Option<OffsetDateTime>,
    /// When the rotation finished or was aborted.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub ended_at: Option<OffsetDateTime>,
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
            started_at: OffsetDateTime::now_utc(),
            rotation_id: None,
            joined: false,
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
        self.begun(Phase::Finish)
    }

    /// Whether `switch` has begun or completed (after which `abort` is refused).
    pub fn switch_begun(&self) -> bool {
        self.begun(Phase::Switch)
    }

    /// Whether `phase` is running or has completed.
    fn begun(&self, phase: Phase) -> bool {
        self.has_completed(phase) || self.running.as_ref().is_some_and(|r| r.phase == phase)
    }

    /// Whether the running phase has recorded step `name` as done.
    pub fn step_recorded(&self, name: &str) -> bool {
        self.running
            .as_ref()
            .is_some_and(|r| r.steps_done.iter().any(|n| n == name))
    }

    /// Records step `name` of the running phase as done.
    pub fn record_step(&mut self, name: String) {
        if let Some(r) = self.running.as_mut() {
            r.steps_done.push(name);
        }
    }

    /// Records `phase` as complete at `now`: nothing runs any more, `switch` keeps its time
    /// (the service-account token wait starts there), `finish` ends the rotation.
    pub fn record_phase_complete(&mut self, phase: Phase, now: OffsetDateTime) {
        self.running = None;
        self.completed.push(phase);
        match phase {
            Phase::Start => {}
            Phase::Switch => self.switched_at = Some(now),
            Phase::Finish => {
                self.status = Status::Finished;
                self.ended_at = Some(now);
            }
        }
    }

    /// The maximum service-account token lifetime recorded at `start`/`switch` (`sa` only).
    pub fn max_token_lifetime(&self) -> Option<Duration> {
        self.max_token_lifetime_secs.map(Duration::from_secs)
    }

    /// The moment after which no token signed by the old service-account key can still be
    /// valid: the switch time plus the recorded lifetime. `None` when either is not recorded
    /// (or the sum is out of range), i.e. when that moment cannot be established.
    pub fn tokens_valid_until(&self) -> Option<OffsetDateTime> {
        let lifetime = time::Duration::try_from(self.max_token_lifetime()?).ok()?;
        self.switched_at?.checked_add(lifetime)
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

/// Formats a time as RFC 3339 for messages (UTC).
pub fn format_rfc3339(t: OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| t.unix_timestamp().to_string())
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

    /// A state file as written before the times were typed: RFC 3339 text, nanoseconds, `null`.
    const EARLIER_FORMAT: &str = r#"{
  "version": 1,
  "target": "sa",
  "status": "in-progress",
  "completed": ["start", "switch"],
  "running": null,
  "originBackup": "backups/20261128T101500.123Z-sa-start",
  "backups": ["backups/20261128T101500.123Z-sa-start"],
  "manifestsDir": null,
  "manifestFlags": [],
  "maxTokenLifetimeSecs": 3600,
  "startedAt": "2026-11-28T10:15:00.123456789Z",
  "switchedAt": "2026-11-28T11:00:00.5Z",
  "endedAt": null
}
"#;

    #[test]
    fn loads_the_earlier_format_and_knows_when_tokens_expire() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| Error::io("tempdir", e))?;
        let path = dir.path().join("state.json");
        store::write_atomic(&path, EARLIER_FORMAT.as_bytes(), store::MODE_SECRET)?;
        let s = load(&path)?.ok_or_else(|| Error::invalid(&path, "not loaded"))?;
        assert_eq!(s.started_at.nanosecond(), 123_456_789);
        assert_eq!(
            s.tokens_valid_until().map(format_rfc3339).as_deref(),
            Some("2026-11-28T12:00:00.5Z")
        );
        // Saved again, the times keep their text.
        save(&path, &s)?;
        let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
        assert!(
            text.contains("\"startedAt\": \"2026-11-28T10:15:00.123456789Z\""),
            "{text}"
        );
        Ok(())
    }

    #[test]
    fn a_damaged_time_fails_the_load() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| Error::io("tempdir", e))?;
        let path = dir.path().join("state.json");
        let damaged = EARLIER_FORMAT.replace("2026-11-28T11:00:00.5Z", "yesterday");
        store::write_atomic(&path, damaged.as_bytes(), store::MODE_SECRET)?;
        assert!(matches!(load(&path), Err(Error::Parse { .. })));
        Ok(())
    }

    #[test]
    fn tokens_expiry_needs_switch_time_and_lifetime() {
        let mut s = State::new(Target::Sa, None);
        assert_eq!(s.tokens_valid_until(), None);
        s.switched_at = Some(s.started_at);
        assert_eq!(s.tokens_valid_until(), None, "no recorded lifetime");
        s.max_token_lifetime_secs = Some(60);
        assert_eq!(
            s.tokens_valid_until(),
            Some(s.started_at + time::Duration::minutes(1))
        );
        s.max_token_lifetime_secs = Some(u64::MAX);
        assert_eq!(s.tokens_valid_until(), None, "out of range");
    }
}
