//! Paths and text of the repository's files.

use std::path::{Path, PathBuf};

/// The workspace root (the parent of this crate's directory).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_owned()
}

/// The path of `relative` under `deploy/`.
pub fn deploy(relative: &str) -> PathBuf {
    repo_root().join("deploy").join(relative)
}

/// The text of `path`; panics naming the file.
pub fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|error| panic!("{}: {error}", path.display()))
}
