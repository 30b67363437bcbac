//! The commands that change a state directory: first-key creation, add, promote, rotate and
//! remove. Each holds the directory's lock from reading the state to its last write, so two
//! operators (or an operator and a starting plugin) can never pick the same version number or
//! overwrite each other's file.

use super::keyring::{Keyring, KeyringError, VersionInfo, derive_key_id, has_no_version};
use super::state_dir::StateDirWriter;
use crate::secret::AesKey;
use std::path::Path;

impl Keyring {
    /// Loads the state directory, creating it and version 1 if it holds no key yet. A version 1
    /// that another process creates at the same moment is loaded, never replaced.
    pub fn open_or_init(dir: &Path) -> Result<Self, KeyringError> {
        durable::ensure_private_dir(dir).map_err(super::state_dir::io_err(dir))?;
        if has_no_version(dir)? {
            let writer = StateDirWriter::lock(dir)?;
            init_if_empty(&writer)?;
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

/// Creates version 1 and points `primary` at it, unless a version exists by now.
fn init_if_empty(writer: &StateDirWriter) -> Result<(), KeyringError> {
    let dir = writer.dir();
    if !has_no_version(dir)? {
        return Ok(());
    }
    let key = generate()?;
    writer.create_key(1, &key)?;
    writer.write_primary(1)?;
    tracing::info!(state_dir = %dir.display(), key_id = %derive_key_id(1, &key), "created the first local root key");
    Ok(())
}

fn add_locked(writer: &StateDirWriter) -> Result<VersionInfo, KeyringError> {
    init_if_empty(writer)?;
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
