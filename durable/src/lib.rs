//! Durable files and durations, written once for the whole workspace.
//!
//! | module | job |
//! |---|---|
//! | [`write`] | one file replaced atomically ([`write_atomic`]) or created without replacing ([`create_new`]) |
//! | [`commit`] | several files of one directory replaced as one step ([`write_many_atomic`]) |
//! | [`generation`] | how: generation directories swapped by one `..data` link rename |
//! | [`recover`] | journaled commits of earlier builds, completed or refused loudly ([`recover()`], [`pending_journals`]) |
//! | [`dir`] | directory fsync, atomic symlinks, private (0700) directories, stale temp and generation cleanup |
//! | [`lock`] | an exclusive lock on a directory: blocking, try, or wait up to a timeout |
//! | [`duration`] | [`HumanDuration`]: `500ms`, `30s`, `1h30m`, `8760h0m0s`, `7d`, `2w`, `1y` |
//!
//! Every write goes to a temporary file in the target's directory, created with its final mode
//! before any byte is written, synced, then renamed (or hard-linked) into place and the directory
//! synced: a reader, or a rerun after a crash, sees the old or the new content, never a mix.

pub mod commit;
pub mod dir;
pub mod duration;
pub mod generation;
mod journal;
pub mod lock;
pub mod recover;
pub mod write;

pub use commit::{CommitError, write_many_atomic};
pub use dir::{ensure_private_dir, mode_of, remove_stale_temps, symlink_atomic, sync_dir};
pub use duration::{DurationError, HumanDuration};
pub use lock::{DirLock, LockWait, is_held, lock_dir};
pub use recover::{RecoverError, pending_journals, recover};
pub use write::{FileSpec, create_new, write_atomic};
