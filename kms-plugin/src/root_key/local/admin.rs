//! The commands that change a state directory: `init` (the only one that creates a key where
//! none exists), add, promote, rotate and remove. Each holds the directory's lock from reading the state to its last write, so two
//! operators (or an operator and a starting plugin) can never pick the same version number or
//! overwrite each other's file.

use super::keyring::{Keyring, KeyringError, VersionInfo, derive_key_id, has_no_version};
use super::state_dir::StateDirWriter;
use crate::secret::AesKey;
use std::path::Path;

impl Keyring {
    /// Creates the state directory (0700) and its first root key version, made primary. Refuses
    /// when the directory holds any version or a `primary` file already: an existing keyring is
    /// never replaced.
    pub fn init(dir: &Path) -> Result<VersionInfo, KeyringError> {
        durable::ensure_private_dir(dir).map_err(super::state_dir::io_err(dir))?;
        let writer = StateDirWriter::lock(dir)?;
        let listing = super::state_dir::scan(dir)?;
        if !listing.keys.is_empty() || dir.join(super::state_dir::PRIMARY_FILE).exists() {
            return Err(KeyringError::Refused(format!(
                "{} already holds a keyring; init creates only the first root key (use rotate to add one)",
                dir.display()
            )));
        }
        let key = generate()?;
        writer.create_key(1, &key)?;
        writer.write_primary(1)?;
        Ok(VersionInfo {
            version: 1,
            key_id: derive_key_id(1, &key),
            primary: true,
        })
    }

    /// Loads the state directory, creating it and version 1 first if it holds no key: only for
    /// the zero-configuration development command, and said in a WARN line. A version 1 that
    /// another process creates at the same moment is loaded, never replaced.
    pub fn open_or_init(dir: &Path) -> Result<Self, KeyringError> {
        if !dir.exists() || has_no_version(dir)? {
            match Self::init(dir) {
                Ok(info) => tracing::warn!(
                    state_dir = %dir.display(),
                    key_id = %info.key_id,
                    "created a new local root key because the development default state directory was empty; \
                     production runs create it once with `kms-plugin init` and pass --state-dir or --config"
                ),
                Err(KeyringError::Refused(_)) => {}
                Err(other) => return Err(other),
            }
        }
        Self::load(dir)
    }

    /// Adds a new version that decrypts only (step one of a multi-node rotation).
    pub fn add_version(dir: &Path) -> Result<VersionInfo, KeyringError> {
        let writer = StateDirWriter::lock(dir)?;
        add_locked(&writer)
    }

    /// Makes an existing version primary (step two of a multi-node rotation).
    pub fn promote(dir: &Path, version: u32) -> Result<VersionInfo, KeyringError> {
        let writer = StateDirWriter::lock(dir)?;
        promote_locked(&writer, version)
    }

    /// Adds a new version and makes it primary at once (single-node rotation), under one lock.
    pub fn rotate(dir: &Path) -> Result<VersionInfo, KeyringError> {
        let writer = StateDirWriter::lock(dir)?;
        let added = add_locked(&writer)?;
        promote_locked(&writer, added.version)
    }

    /// Deletes a version that is not primary. Data sealed under it no longer decrypts.
    pub fn remove(dir: &Path, version: u32) -> Result<(), KeyringError> {
        let writer = StateDirWriter::lock(dir)?;
        let keyring = Self::load(writer.dir())?;
        if version == keyring.primary {
            return Err(KeyringError::Refused(format!(
                "version {version} is primary; promote another version first"
            )));
        }
        if !keyring.versions.contains_key(&version) {
            return Err(KeyringError::Refused(format!(
                "version {version} is not in {}",
                dir.display()
            )));
        }
        writer.remove_key(version)
    }
}

fn generate() -> Result<AesKey, KeyringError> {
    AesKey::generate().map_err(|e| KeyringError::Refused(e.to_string()))
}

fn add_locked(writer: &StateDirWriter) -> Result<VersionInfo, KeyringError> {
    let version = Keyring::load(writer.dir())?
        .newest()
        .checked_add(1)
        .ok_or_else(|| KeyringError::Refused("no version number left".into()))?;
    let key = generate()?;
    writer.create_key(version, &key)?;
    Ok(VersionInfo {
        version,
        key_id: derive_key_id(version, &key),
        primary: false,
    })
}

fn promote_locked(writer: &StateDirWriter, version: u32) -> Result<VersionInfo, KeyringError> {
    let keyring = Keyring::load(writer.dir())?;
    let loaded = keyring.versions.get(&version).ok_or_else(|| {
        KeyringError::Refused(format!(
            "version {version} is not in {}",
            writer.dir().display()
        ))
    })?;
    let info = VersionInfo {
        version,
        key_id: loaded.key_id.clone(),
        primary: true,
    };
    writer.write_primary(version)?;
    Ok(info)
}
