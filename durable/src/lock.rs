//! An exclusive advisory lock on a directory (flock on the directory itself, so no lock file is
//! left behind), held until dropped.

use std::fs::{File, TryLockError};
use std::io;
use std::path::Path;
use std::time::{Duration, Instant};

/// How long [`lock_dir`] waits for another holder.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LockWait {
    /// Wait as long as it takes.
    Block,
    /// Fail at once if another process holds the lock.
    Try,
    /// Wait up to this long, then fail.
    Timeout(Duration),
}

/// An exclusive lock on a directory; released when dropped (or when the process ends).
#[derive(Debug)]
pub struct DirLock {
    _dir: File,
}

/// Interval between attempts while waiting with [`LockWait::Timeout`].
const RETRY_EVERY: Duration = Duration::from_millis(20);

/// Locks the existing directory `dir` exclusively. When another holder keeps it past what `wait`
/// allows, fails with [`io::ErrorKind::WouldBlock`] and a message saying the lock is held by
/// another process (see [`is_held`]).
pub fn lock_dir(dir: &Path, wait: LockWait) -> io::Result<DirLock> {
    let file = File::open(dir)?;
    match wait {
        LockWait::Block => file.lock()?,
        LockWait::Try => try_once(&file)?.ok_or_else(|| held(None))?,
        LockWait::Timeout(limit) => {
            let start = Instant::now();
            while try_once(&file)?.is_none() {
                let waited = start.elapsed();
                if waited >= limit {
                    return Err(held(Some(limit)));
                }
                std::thread::sleep(RETRY_EVERY.min(limit - waited));
            }
        }
    }
    Ok(DirLock { _dir: file })
}

/// Whether `error` (from [`lock_dir`]) means another process holds the lock.
pub fn is_held(error: &io::Error) -> bool {
    error.kind() == io::ErrorKind::WouldBlock
}

/// `Some(())` when the lock was taken, `None` when someone else holds it.
fn try_once(file: &File) -> io::Result<Option<()>> {
    match file.try_lock() {
        Ok(()) => Ok(Some(())),
        Err(TryLockError::WouldBlock) => Ok(None),
        Err(TryLockError::Error(e)) => Err(e),
    }
}

fn held(waited: Option<Duration>) -> io::Error {
    let message = match waited {
        None => "locked: held by another process".to_owned(),
        Some(d) => format!("locked: held by another process (waited {d:?})"),
    };
    io::Error::new(io::ErrorKind::WouldBlock, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn try_fails_at_once_while_held_and_succeeds_after_drop() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = lock_dir(dir.path(), LockWait::Try).expect("first");
        let start = Instant::now();
        let err = lock_dir(dir.path(), LockWait::Try).expect_err("held");
        assert!(is_held(&err), "{err}");
        assert!(err.to_string().contains("held by another process"), "{err}");
        assert!(start.elapsed() < Duration::from_secs(1));
        drop(first);
        lock_dir(dir.path(), LockWait::Try).expect("free again");
    }

    #[test]
    fn timeout_waits_then_fails() {
        let dir = tempfile::tempdir().expect("tempdir");
        let _held = lock_dir(dir.path(), LockWait::Block).expect("first");
        let start = Instant::now();
        let err =
            lock_dir(dir.path(), LockWait::Timeout(Duration::from_millis(150))).expect_err("held");
        let waited = start.elapsed();
        assert!(is_held(&err), "{err}");
        assert!(waited >= Duration::from_millis(150), "{waited:?}");
        assert!(waited < Duration::from_secs(2), "{waited:?}");
    }

    #[test]
    fn timeout_and_block_succeed_once_released() {
        let dir = tempfile::tempdir().expect("tempdir");
        let held = lock_dir(dir.path(), LockWait::Block).expect("first");
        let path = dir.path().to_owned();
        let waiter = std::thread::spawn(move || {
            lock_dir(&path, LockWait::Timeout(Duration::from_secs(10))).map(drop)
        });
        let path = dir.path().to_owned();
        let blocker = std::thread::spawn(move || lock_dir(&path, LockWait::Block).map(drop));
        std::thread::sleep(Duration::from_millis(100));
        assert!(!waiter.is_finished() && !blocker.is_finished());
        drop(held);
        waiter.join().expect("thread").expect("timeout lock");
        blocker.join().expect("thread").expect("blocking lock");
    }

    #[test]
    fn missing_directory_is_an_error_not_a_hold() {
        let dir = tempfile::tempdir().expect("tempdir");
        let err = lock_dir(&dir.path().join("absent"), LockWait::Try).expect_err("absent");
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
    }
}
