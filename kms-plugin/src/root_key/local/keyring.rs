//! The versioned root keys of the local backend as loaded in memory: every version of the state
//! directory and which one is primary. Changing the directory is [`super::admin`]'s job.

use super::state_dir::{Listing, PRIMARY_FILE, io_err, key_path, no_keyring, read_key, scan};
use crate::root_key::KeyId;
use crate::secret::AesKey;
use aes_gcm::Aes256Gcm;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

const KEY_ID_LABEL: &[u8] = b"kms-plugin local root key id v1";

/// A problem with the state directory or a command run against it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyringError {
    /// Reading or writing the state directory failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory involved.
        path: PathBuf,
        /// The I/O failure.
        source: io::Error,
    },
    /// A file in the state directory is not what it should be.
    #[error("{path}: {reason}")]
    Corrupt {
        /// The offending file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The command cannot run against the current state.
    #[error("{0}")]
    Refused(String),
}

/// One root key version as loaded in memory.
pub struct LoadedVersion {
    /// Version number.
    pub version: u32,
    /// Key id derived from the version number and a fingerprint of the key.
    pub key_id: KeyId,
    /// The cipher of this version (its AES round keys are zeroized on drop; see the workspace
    /// Cargo.toml for what is not).
    pub cipher: Aes256Gcm,
}

/// What an operator sees of a version: never the key.
#[derive(Clone, Debug)]
pub struct VersionInfo {
    /// Version number.
    pub version: u32,
    /// Key id reported to kube-apiserver while this version is primary.
    pub key_id: KeyId,
    /// Whether new data is wrapped under this version.
    pub primary: bool,
}

/// All root key versions in the state directory, and which one is primary.
pub struct Keyring {
    pub(super) versions: BTreeMap<u32, LoadedVersion>,
    pub(super) primary: u32,
    fingerprint: DirFingerprint,
}

/// Cheap summary of the directory used to notice changes without re-reading every key.
#[derive(Clone, PartialEq, Eq)]
struct DirFingerprint {
    primary_text: String,
    listing: Listing,
}

/// Derives the key id of a version: `local:v<N>:<fingerprint>`. The fingerprint is an HMAC of a
/// fixed label under the key, so it reveals nothing about the key yet differs for every key.
pub(super) fn derive_key_id(version: u32, key: &AesKey) -> KeyId {
    let mut mac = match <Hmac<Sha256> as Mac>::new_from_slice(key.expose()) {
        Ok(mac) => mac,
        Err(_) => unreachable!("HMAC accepts keys of any length"),
    };
    mac.update(KEY_ID_LABEL);
    let digest = mac.finalize().into_bytes();
    let id = format!("local:v{version}:{}", hex::encode(&digest[..12]));
    KeyId::new(&id).unwrap_or_else(|| unreachable!("a short, non-empty id"))
}

fn fingerprint(dir: &Path) -> Result<DirFingerprint, KeyringError> {
    let primary_path = dir.join(PRIMARY_FILE);
    let primary_text = match fs::read_to_string(&primary_path) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(io_err(&primary_path)(e)),
    };
    Ok(DirFingerprint {
        primary_text,
        listing: scan(dir)?,
    })
}

/// Whether the state directory holds no version yet.
pub(super) fn has_no_version(dir: &Path) -> Result<bool, KeyringError> {
    Ok(scan(dir)?.keys.is_empty())
}

impl Keyring {
    /// Loads every version and the primary pointer; refuses a directory that does not add up.
    /// Entries that are not version files are reported in the log and by [`Keyring::unexpected`],
    /// never read.
    pub fn load(dir: &Path) -> Result<Self, KeyringError> {
        if !dir.is_dir() {
            return Err(no_keyring(dir, "does not exist"));
        }
        let fingerprint = fingerprint(dir)?;
        if fingerprint.listing.keys.is_empty() && fingerprint.primary_text.is_empty() {
            return Err(no_keyring(dir, "holds no root key"));
        }
        if !fingerprint.listing.unexpected.is_empty() {
            tracing::warn!(
                state_dir = %dir.display(),
                entries = ?fingerprint.listing.unexpected,
                "the state directory holds entries that are not root key versions (expected root-key-v<N>.key and primary); they are ignored"
            );
        }
        let mut versions = BTreeMap::new();
        for (version, name, _) in &fingerprint.listing.keys {
            let key = read_key(&dir.join(name))?;
            let key_id = derive_key_id(*version, &key);
            let cipher = super::cipher_for(&key);
            versions.insert(
                *version,
                LoadedVersion {
                    version: *version,
                    key_id,
                    cipher,
                },
            );
        }
        let primary_path = dir.join(PRIMARY_FILE);
        let primary: u32 =
            fingerprint
                .primary_text
                .trim()
                .parse()
                .map_err(|_| KeyringError::Corrupt {
                    path: primary_path.clone(),
                    reason: "expected the primary version number".into(),
                })?;
        if !versions.contains_key(&primary) {
            return Err(KeyringError::Corrupt {
                path: primary_path,
                reason: format!(
                    "names version {primary}, but {} is missing",
                    key_path(dir, primary).display()
                ),
            });
        }
        Ok(Self {
            versions,
            primary,
            fingerprint,
        })
    }

    /// Reloads only if the directory changed since this keyring was loaded.
    pub fn reloaded(&self, dir: &Path) -> Result<Option<Self>, KeyringError> {
        if fingerprint(dir)? == self.fingerprint {
            return Ok(None);
        }
        Self::load(dir).map(Some)
    }

    /// Why `fresh` (loaded later from the same directory) is not a successor of this keyring: a
    /// version held here whose key is different there. Added, promoted and removed non-primary
    /// versions are ordinary changes.
    pub(super) fn replaced_in(&self, fresh: &Keyring) -> Option<String> {
        self.versions.values().find_map(|held| {
            let now = fresh.versions.get(&held.version)?;
            (now.key_id != held.key_id).then(|| {
                format!(
                    "root-key-v{}.key holds a different key than the one loaded ({})",
                    held.version, held.key_id
                )
            })
        })
    }

    /// The version new data is wrapped under.
    pub fn primary(&self) -> &LoadedVersion {
        match self.versions.get(&self.primary) {
            Some(version) => version,
            None => unreachable!("load() checks that the primary version exists"),
        }
    }

    /// The version a key id names, if it is held here (fingerprint included).
    pub fn find(&self, key_id: &KeyId) -> Option<&LoadedVersion> {
        let version: u32 = key_id
            .as_str()
            .strip_prefix("local:v")?
            .split(':')
            .next()?
            .parse()
            .ok()?;
        self.versions.get(&version).filter(|v| &v.key_id == key_id)
    }

    /// Every version, oldest first.
    pub fn list(&self) -> Vec<VersionInfo> {
        self.versions
            .values()
            .map(|v| VersionInfo {
                version: v.version,
                key_id: v.key_id.clone(),
                primary: v.version == self.primary,
            })
            .collect()
    }

    /// Entries of the state directory that are not version files (never read).
    pub fn unexpected(&self) -> &[String] {
        &self.fingerprint.listing.unexpected
    }

    /// The highest version present.
    pub(super) fn newest(&self) -> u32 {
        self.versions.keys().next_back().copied().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use durable::write_atomic;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn init_rotate_promote_remove() {
        let (_dir, state) = testkit::scratch_path("state");
        let first = Keyring::open_or_init(&state).expect("init");
        let v1 = first.primary().key_id.clone();
        assert!(v1.as_str().starts_with("local:v1:"));
        assert_eq!(
            fs::metadata(&state).expect("meta").permissions().mode() & 0o777,
            0o700
        );
        assert_eq!(
            fs::metadata(key_path(&state, 1))
                .expect("meta")
                .permissions()
                .mode()
                & 0o777,
            0o600
        );
        // Reopening keeps the same id: it never changes without a rotation.
        assert_eq!(
            Keyring::open_or_init(&state)
                .expect("reopen")
                .primary()
                .key_id,
            v1
        );

        let added = Keyring::add_version(&state).expect("add");
        assert_eq!(added.version, 2);
        let reloaded = first.reloaded(&state).expect("reload").expect("changed");
        assert_eq!(
            reloaded.primary().key_id,
            v1,
            "an added version is decrypt-only"
        );
        assert!(reloaded.find(&added.key_id).is_some());

        Keyring::promote(&state, 2).expect("promote");
        let promoted = Keyring::load(&state).expect("load");
        assert_eq!(promoted.primary().key_id, added.key_id);
        assert!(
            Keyring::remove(&state, 2).is_err(),
            "primary cannot be removed"
        );
        Keyring::remove(&state, 1).expect("remove old");
        assert!(Keyring::load(&state).expect("load").find(&v1).is_none());
    }

    #[test]
    fn key_ids_differ_per_key_and_hide_it() {
        let a = AesKey::from_slice(&[1; 32]).expect("key");
        let b = AesKey::from_slice(&[2; 32]).expect("key");
        assert_ne!(derive_key_id(1, &a), derive_key_id(1, &b));
        assert_ne!(derive_key_id(1, &a), derive_key_id(2, &a));
        assert!(!derive_key_id(1, &a).as_str().contains("0101"));
    }

    #[test]
    fn corrupt_state_is_refused_with_the_file() {
        let (_dir, state) = testkit::scratch_path("state");
        Keyring::open_or_init(&state).expect("init");
        write_atomic(&key_path(&state, 1), b"short", 0o600).expect("write");
        let error = Keyring::load(&state).err().expect("corrupt");
        assert!(error.to_string().contains("root-key-v1.key"), "{error}");
        write_atomic(&key_path(&state, 1), &[0; 32], 0o644).expect("write");
        let error = Keyring::load(&state).err().expect("loose mode");
        assert!(error.to_string().contains("0600"), "{error}");
    }
}
