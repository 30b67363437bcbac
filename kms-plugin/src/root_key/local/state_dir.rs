//! The local backend's state directory on disk: the names of its files, what else a scan finds
//! in it, and [`StateDirWriter`], the one way to change it (under an exclusive lock, never
//! replacing a key version, with the directory's owner when run as root).

use super::keyring::KeyringError;
use crate::secret::AesKey;
use durable::{DirLock, FileSpec, LockWait};
use std::fs;
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// The file naming the primary version.
pub(super) const PRIMARY_FILE: &str = "primary";
const KEY_PREFIX: &str = "root-key-v";
const KEY_SUFFIX: &str = ".key";

/// How long a command waits for another command changing the same state directory.
pub const LOCK_WAIT: Duration = Duration::from_secs(10);

pub(super) fn io_err(path: &Path) -> impl FnOnce(io::Error) -> KeyringError + '_ {
    move |source| KeyringError::Io {
        path: path.to_owned(),
        source,
    }
}

/// The file of one version: `root-key-v<N>.key`.
pub(super) fn key_path(dir: &Path, version: u32) -> PathBuf {
    dir.join(format!("{KEY_PREFIX}{version}{KEY_SUFFIX}"))
}

/// Parses a version file name strictly: `root-key-v<N>.key` with N a decimal number from 1,
/// without sign or leading zero, so no two names can mean the same version.
pub(super) fn parse_version(name: &str) -> Option<u32> {
    let digits = name.strip_prefix(KEY_PREFIX)?.strip_suffix(KEY_SUFFIX)?;
    let canonical = !digits.is_empty()
        && !digits.starts_with('0')
        && digits.bytes().all(|b| b.is_ascii_digit());
    if !canonical {
        return None;
    }
    digits.parse().ok()
}

/// A temporary file of an interrupted write (`.<name>.tmp-<random>`): neither a key nor foreign.
fn is_temp(name: &str) -> bool {
    name.starts_with('.') && name.contains(".tmp-")
}

/// What a scan of the state directory found.
#[derive(Clone, PartialEq, Eq)]
pub(super) struct Listing {
    /// Version files: version, name, modification time; sorted by version.
    pub keys: Vec<(u32, String, Option<SystemTime>)>,
    /// Entries that are neither a version file, `primary`, nor a temporary file, sorted.
    pub unexpected: Vec<String>,
}

/// Lists the state directory without reading any key.
pub(super) fn scan(dir: &Path) -> Result<Listing, KeyringError> {
    let mut keys = Vec::new();
    let mut unexpected = Vec::new();
    for entry in fs::read_dir(dir).map_err(io_err(dir))? {
        let entry = entry.map_err(io_err(dir))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(version) = parse_version(&name) {
            let modified = entry.metadata().ok().and_then(|m| m.modified().ok());
            keys.push((version, name, modified));
        } else if name != PRIMARY_FILE && !is_temp(&name) {
            unexpected.push(name);
        }
    }
    keys.sort();
    unexpected.sort();
    Ok(Listing { keys, unexpected })
}

/// Reads one version file, refusing a file others can read or of the wrong size.
pub(super) fn read_key(path: &Path) -> Result<AesKey, KeyringError> {
    let metadata = fs::metadata(path).map_err(io_err(path))?;
    if metadata.permissions().mode() & 0o077 != 0 {
        return Err(KeyringError::Corrupt {
            path: path.to_owned(),
            reason: format!(
                "root key file is readable by others (mode {:o}); expected 0600",
                metadata.permissions().mode() & 0o777
            ),
        });
    }
    let bytes = zeroize::Zeroizing::new(fs::read(path).map_err(io_err(path))?);
    AesKey::from_slice(&bytes).ok_or_else(|| KeyringError::Corrupt {
        path: path.to_owned(),
        reason: format!("expected 32 key bytes, found {}", bytes.len()),
    })
}

/// The refusal of every command but `init` where no keyring exists.
pub(super) fn no_keyring(dir: &Path, what: &str) -> KeyringError {
    KeyringError::Refused(format!(
        "{}: the state directory {what}; no root key is created implicitly: create the first one with `kms-plugin init --state-dir {}`",
        dir.display(),
        dir.display()
    ))
}

/// The one way to change a state directory: holds its exclusive lock while alive.
pub(super) struct StateDirWriter {
    dir: PathBuf,
    spec: FileSpec,
    _lock: DirLock,
}

impl StateDirWriter {
    /// Locks an existing directory, waiting up to [`LOCK_WAIT`] for another command that holds
    /// it. A missing directory is refused: only `init` creates one.
    pub(super) fn lock(dir: &Path) -> Result<Self, KeyringError> {
        if !dir.is_dir() {
            return Err(no_keyring(dir, "does not exist"));
        }
        let lock = durable::lock_dir(dir, LockWait::Timeout(LOCK_WAIT)).map_err(|e| {
            if durable::is_held(&e) {
                KeyringError::Refused(format!(
                    "another command is changing {} (waited {}s for its lock); run this again when it has finished",
                    dir.display(),
                    LOCK_WAIT.as_secs()
                ))
            } else {
                io_err(dir)(e)
            }
        })?;
        // Only this lock holder writes here now: what a killed writer left can go.
        durable::remove_stale_temps(dir).map_err(|e| KeyringError::Refused(e.to_string()))?;
        let spec = FileSpec::mode(0o600);
        let spec = match owner_for_new_files(dir)? {
            Some((uid, gid)) => spec.owned_by(uid, gid),
            None => spec,
        };
        Ok(Self {
            dir: dir.to_owned(),
            spec,
            _lock: lock,
        })
    }

    /// The locked directory.
    pub(super) fn dir(&self) -> &Path {
        &self.dir
    }

    /// Creates the file of `version`; never replaces an existing one.
    pub(super) fn create_key(&self, version: u32, key: &AesKey) -> Result<(), KeyringError> {
        let path = key_path(&self.dir, version);
        durable::create_new(&path, key.expose(), self.spec).map_err(|e| match e.kind() {
            io::ErrorKind::AlreadyExists => {
                KeyringError::Refused(format!("{} already exists", path.display()))
            }
            _ => io_err(&path)(e),
        })
    }

    /// Points `primary` at `version`.
    pub(super) fn write_primary(&self, version: u32) -> Result<(), KeyringError> {
        let path = self.dir.join(PRIMARY_FILE);
        durable::write_atomic(&path, format!("{version}\n").as_bytes(), self.spec)
            .map_err(io_err(&path))
    }

    /// Deletes the file of `version`.
    pub(super) fn remove_key(&self, version: u32) -> Result<(), KeyringError> {
        let path = key_path(&self.dir, version);
        fs::remove_file(&path).map_err(io_err(&path))?;
        durable::sync_dir(&self.dir).map_err(io_err(&self.dir))
    }
}

/// Run as root in a directory that belongs to another user (the plugin's), new files get the
/// directory's owner and group, so the plugin can read them.
fn owner_for_new_files(dir: &Path) -> Result<Option<(u32, u32)>, KeyringError> {
    if !rustix::process::geteuid().is_root() {
        return Ok(None);
    }
    let metadata = fs::metadata(dir).map_err(io_err(dir))?;
    Ok((metadata.uid() != 0 || metadata.gid() != 0).then(|| (metadata.uid(), metadata.gid())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_names_parse_strictly() {
        assert_eq!(parse_version("root-key-v1.key"), Some(1));
        assert_eq!(parse_version("root-key-v35.key"), Some(35));
        for bad in [
            "root-key-v0.key",
            "root-key-v01.key",
            "root-key-v+1.key",
            "root-key-v-1.key",
            "root-key-v.key",
            "root-key-v1.key.bak",
            "root-key-v1 .key",
            "root-key-v99999999999.key",
            "root-key-v１.key",
        ] {
            assert_eq!(parse_version(bad), None, "{bad}");
        }
    }

    #[test]
    fn scan_reports_foreign_entries_and_skips_temps() {
        let dir = tempfile::tempdir().expect("tempdir");
        for name in [
            "root-key-v2.key",
            "root-key-v01.key",
            "primary",
            ".root-key-v3.key.tmp-00ff",
            "notes.txt",
        ] {
            fs::write(dir.path().join(name), b"x").expect("write");
        }
        let listing = scan(dir.path()).expect("scan");
        let versions: Vec<u32> = listing.keys.iter().map(|(v, _, _)| *v).collect();
        assert_eq!(versions, vec![2]);
        assert_eq!(listing.unexpected, vec!["notes.txt", "root-key-v01.key"]);
    }

    #[test]
    fn a_second_writer_waits_then_gives_up() {
        let dir = tempfile::tempdir().expect("tempdir");
        let _held = StateDirWriter::lock(dir.path()).expect("first lock");
        // Another process would wait LOCK_WAIT; an flock from a second descriptor in this
        // process conflicts the same way, so try once to keep the test fast.
        let error = durable::lock_dir(dir.path(), LockWait::Try).expect_err("held");
        assert!(durable::is_held(&error), "{error}");
    }
}
