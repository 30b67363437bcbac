//! Scratch copies left behind by a dry run that was killed (`kill -9`, a crash) before it could
//! delete its copy: removed by the next dry run in the same place. A copy is removed only when
//! the process named in it is gone and it is older than [`ABANDONED_AFTER`], so a dry run still
//! running (in this or another PID namespace) never loses its copy.

use std::fs;
use std::path::Path;
use std::time::{Duration, SystemTime};

/// The name prefix of a scratch copy; the creating process's id and a random tag follow.
pub(super) const PREFIX: &str = ".pki-dry-run-";

/// How old an abandoned copy must be before it is removed; a dry run takes seconds.
pub(super) const ABANDONED_AFTER: Duration = Duration::from_secs(3600);

/// Removes the abandoned scratch copies directly under `base` (best effort: one that cannot be
/// read or removed is left as it is).
pub(super) fn remove_abandoned(base: &Path) {
    let Ok(entries) = fs::read_dir(base) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix(PREFIX))
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(meta) = fs::symlink_metadata(entry.path()) else {
            continue;
        };
        let old = meta
            .modified()
            .ok()
            .and_then(|m| SystemTime::now().duration_since(m).ok())
            .is_some_and(|age| age >= ABANDONED_AFTER);
        let running = Path::new(&format!("/proc/{pid}")).exists();
        if meta.is_dir() && old && !running {
            let _ = fs::remove_dir_all(entry.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A process id that no longer runs: a child that has exited and been reaped.
    fn dead_pid() -> u32 {
        let mut child = std::process::Command::new("true").spawn().expect("spawn");
        let pid = child.id();
        child.wait().expect("wait");
        pid
    }

    fn copy_in(base: &Path, pid: u32, age: Duration) -> std::path::PathBuf {
        let dir = base.join(format!("{PREFIX}{pid}-0a1b2c"));
        fs::create_dir_all(dir.join("pki")).expect("mkdir");
        fs::write(dir.join("pki/ca.key"), b"copy").expect("write");
        let when = SystemTime::now() - age;
        fs::File::open(&dir)
            .and_then(|d| d.set_modified(when))
            .expect("age the copy");
        dir
    }

    #[test]
    fn only_old_copies_of_gone_processes_are_removed() {
        let base = tempfile::tempdir().expect("tempdir");
        let hour = Duration::from_secs(2 * 3600);
        let dead = dead_pid();
        let abandoned = copy_in(base.path(), dead, hour);
        let recent = copy_in(base.path(), dead + 1_000_000, Duration::ZERO);
        let running = copy_in(base.path(), std::process::id(), hour);
        let unrelated = base.path().join("pki");
        fs::create_dir(&unrelated).expect("mkdir");
        remove_abandoned(base.path());
        assert!(
            !abandoned.exists(),
            "an old copy of a gone process is removed"
        );
        assert!(recent.exists(), "a recent copy is kept");
        assert!(running.exists(), "a copy of a running process is kept");
        assert!(unrelated.exists(), "other entries are never touched");
    }
}
