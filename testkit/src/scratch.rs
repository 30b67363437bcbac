//! Scratch space for one test: a fresh temporary directory, removed when dropped.

use std::path::{Path, PathBuf};
use tempfile::TempDir;

/// A fresh temporary directory and the path of `name` in it (not created yet): the one file or
/// directory a test works on. The path is only good while the directory is kept.
pub fn scratch_path(name: &str) -> (TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join(name);
    (dir, path)
}

/// The names of the entries of `dir`, sorted: what a test expects to find left there.
pub fn entry_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("list")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_path_is_inside_a_fresh_directory_that_goes_away() {
        let (dir, path) = scratch_path("state");
        assert_eq!(path.parent(), Some(dir.path()));
        assert!(!path.exists());
        assert!(entry_names(dir.path()).is_empty());
        std::fs::write(dir.path().join("b"), b"").expect("write");
        std::fs::write(&path, b"").expect("write");
        assert_eq!(entry_names(dir.path()), ["b", "state"]);
        let kept = dir.path().to_owned();
        drop(dir);
        assert!(!kept.exists());
    }
}
