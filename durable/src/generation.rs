//! Several files of one directory swapped by one rename: the kubelet's atomic-writer pattern.
//!
//! ```text
//! dir/apiserver.key -> ..data/apiserver.key
//! dir/apiserver.crt -> ..data/apiserver.crt
//! dir/..data        -> ..gen-6f0c…            (the one rename that commits)
//! dir/..gen-6f0c…/apiserver.{key,crt}         (regular files with their own modes)
//! ```
//!
//! A commit fills a fresh generation directory (new contents written and synced, every other
//! linked file hard-linked from the current generation), then renames a new `..data` link over
//! the old one. Every name resolves through `..data`, so at any kill point all of them show the
//! old contents or all the new: a key never sits beside the certificate of another key, as the
//! files lie, without any recovery step. A name that is still a regular file is first moved into
//! the current generation (hard link, then a link renamed over it: the same bytes at every
//! point). Readers see plain paths; anything that opens a path (kube-apiserver, etcd, kubeadm,
//! openssl) follows the links. Generations nothing points at are removed by
//! [`remove_stale_temps`](crate::remove_stale_temps).

use std::collections::BTreeSet;
use std::ffi::{OsStr, OsString};
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::dir::{symlink_atomic, sync_dir};
use crate::write::{FileSpec, write_temp};

/// The link every managed name resolves through, pointing at the current generation.
pub const DATA: &str = "..data";
/// Name prefix of generation directories.
pub const GEN_PREFIX: &str = "..gen-";

/// Whether `name` is part of the generation machinery (`..data`, `..gen-*`), not a file of
/// the directory's own.
pub fn is_internal(name: &OsStr) -> bool {
    name.as_bytes().starts_with(b"..") && name.len() > 2
}

/// Whether `path` is a link managed by a generation commit (`<name> -> ..data/<name>`): its
/// content is the current generation's file of that name.
pub fn is_managed_link(path: &Path) -> bool {
    let (Some(name), Ok(target)) = (path.file_name(), fs::read_link(path)) else {
        return false;
    };
    target == Path::new(DATA).join(name)
}

/// Replaces the files `files` of `dir` in one step (see the module documentation). Names are
/// already validated as plain, distinct and not internal.
pub(crate) fn commit(dir: &Path, files: &[(&OsStr, &[u8], FileSpec)]) -> io::Result<()> {
    let mut current = current(dir)?;
    for &(name, _, _) in files {
        let path = dir.join(name);
        let meta = match fs::symlink_metadata(&path) {
            Ok(meta) => Some(meta),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(e),
        };
        if meta.is_some() && is_managed_link(&path) {
            continue;
        }
        if meta.as_ref().is_some_and(|m| !m.is_file()) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "{} is neither a regular file nor a link to {DATA}/: refusing to replace it",
                    path.display()
                ),
            ));
        }
        // A regular file or nothing: the name joins the generations. A regular file is first
        // hard-linked into the current generation, so its new link shows the same bytes. A
        // stale entry of that name there is unreferenced (the name does not link to it): it is
        // dropped first, so the new link never shows it.
        if meta.is_some() || current.is_some() {
            let generation = match current.take() {
                Some(g) => g,
                None => {
                    let g = new_generation(dir)?;
                    symlink_atomic(Path::new(&g), &dir.join(DATA))?;
                    g
                }
            };
            let gen_dir = dir.join(&generation);
            current = Some(generation);
            remove_if_present(&gen_dir.join(name))?;
            if meta.is_some() {
                fs::hard_link(&path, gen_dir.join(name))?;
            }
            sync_dir(&gen_dir)?;
        }
        symlink_atomic(&Path::new(DATA).join(name), &path)?;
    }
    let next = new_generation(dir)?;
    let next_dir = dir.join(&next);
    let filled = fill(dir, current.as_deref(), &next_dir, files)
        .and_then(|()| sync_dir(&next_dir))
        .and_then(|()| symlink_atomic(Path::new(&next), &dir.join(DATA)));
    if let Err(e) = filled {
        let _ = fs::remove_dir_all(&next_dir);
        return Err(e);
    }
    if let Some(old) = current {
        let _ = fs::remove_dir_all(dir.join(old));
        sync_dir(dir)?;
    }
    Ok(())
}

/// Writes `files` into the new generation `next_dir` and hard-links there every other file of
/// the current generation that a name of `dir` still links to.
fn fill(
    dir: &Path,
    current: Option<&OsStr>,
    next_dir: &Path,
    files: &[(&OsStr, &[u8], FileSpec)],
) -> io::Result<()> {
    let replaced: BTreeSet<&OsStr> = files.iter().map(|&(n, _, _)| n).collect();
    if let Some(current) = current {
        for entry in fs::read_dir(dir.join(current))? {
            let entry = entry?;
            let name = entry.file_name();
            if !replaced.contains(name.as_os_str()) && is_managed_link(&dir.join(&name)) {
                fs::hard_link(entry.path(), next_dir.join(&name))?;
            }
        }
    }
    for &(name, bytes, spec) in files {
        write_temp(&next_dir.join(name), bytes, spec)?;
    }
    Ok(())
}

/// The generation `..data` points at, if any. Anything else at `..data` is refused.
pub(crate) fn current(dir: &Path) -> io::Result<Option<OsString>> {
    let target = match fs::read_link(dir.join(DATA)) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(io::Error::new(
                e.kind(),
                format!("{}/{DATA} is not a generation link: {e}", dir.display()),
            ));
        }
    };
    let name = target.as_os_str();
    let plain = !name.as_bytes().contains(&b'/');
    if !plain || !name.as_bytes().starts_with(GEN_PREFIX.as_bytes()) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "{}/{DATA} points at {}, not at a {GEN_PREFIX}* directory beside it",
                dir.display(),
                target.display()
            ),
        ));
    }
    Ok(Some(name.to_owned()))
}

/// Creates a fresh, empty generation directory in `dir` with `dir`'s permission bits and
/// returns its name.
fn new_generation(dir: &Path) -> io::Result<OsString> {
    let mode = fs::metadata(dir)?.permissions().mode() & 0o777;
    let mut random = [0u8; 8];
    getrandom::fill(&mut random).map_err(|e| io::Error::other(e.to_string()))?;
    let name = OsString::from(format!("{GEN_PREFIX}{:016x}", u64::from_le_bytes(random)));
    let path = dir.join(&name);
    fs::create_dir(&path)?;
    fs::set_permissions(&path, fs::Permissions::from_mode(mode))?;
    Ok(name)
}

fn remove_if_present(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Removes what no name of `dir` shows any more: the generation directories `..data` does not
/// point at (all of them when there is no `..data`), links of names that show nothing (a commit
/// killed after linking a new name, before its swap), the files of the current generation no
/// name links to (e.g. a key whose name was since replaced by a regular file), and, when no name
/// links through it at all, `..data` and its generation. When `..data` cannot be read as a
/// generation link, nothing is removed. Call it only under the directory's lock.
pub fn remove_stale(dir: &Path) {
    let Ok(current) = current(dir) else {
        return;
    };
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    let mut removed = false;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let is_gen = name.as_bytes().starts_with(GEN_PREFIX.as_bytes());
        if is_gen && current.as_deref() != Some(name.as_os_str()) {
            removed |= fs::remove_dir_all(entry.path()).is_ok();
        } else if is_managed_link(&entry.path())
            && fs::metadata(entry.path()).is_err_and(|e| e.kind() == io::ErrorKind::NotFound)
        {
            removed |= fs::remove_file(entry.path()).is_ok();
        }
    }
    if let Some(current) = current {
        removed |= prune(dir, &current);
    }
    if removed {
        let _ = sync_dir(dir);
    }
}

/// Removes the files of generation `current` that no name links to, then `..data` and the
/// generation itself when none is left. Returns whether anything was removed.
fn prune(dir: &Path, current: &OsStr) -> bool {
    let gen_dir = dir.join(current);
    let Ok(entries) = fs::read_dir(&gen_dir) else {
        return false;
    };
    let (mut removed, mut kept) = (false, false);
    for entry in entries.flatten() {
        let name = entry.file_name();
        if is_managed_link(&dir.join(&name)) {
            kept = true;
        } else {
            removed |= fs::remove_file(entry.path()).is_ok();
        }
    }
    if !kept && fs::remove_file(dir.join(DATA)).is_ok() {
        removed = true;
        let _ = sync_dir(dir);
        let _ = fs::remove_dir_all(&gen_dir);
    } else if removed {
        let _ = sync_dir(&gen_dir);
    }
    removed
}

/// The path a managed name's content lives at in the current generation (for tests and
/// diagnostics).
pub fn resolved(path: &Path) -> Option<PathBuf> {
    let dir = path.parent()?;
    let generation = current(dir).ok()??;
    Some(dir.join(generation).join(path.file_name()?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{mode_of, remove_stale_temps, write_atomic, write_many_atomic};

    fn name(s: &str) -> &OsStr {
        OsStr::new(s)
    }

    fn pair(dir: &Path, key: &[u8], crt: &[u8]) {
        write_many_atomic(
            dir,
            &[
                (name("a.key"), key, FileSpec::mode(0o600)),
                (name("a.crt"), crt, FileSpec::mode(0o644)),
            ],
        )
        .expect("commit");
    }

    fn read(dir: &Path, n: &str) -> Vec<u8> {
        fs::read(dir.join(n)).expect("read")
    }

    fn generations(dir: &Path) -> usize {
        testkit::entry_names(dir)
            .iter()
            .filter(|n| n.starts_with(GEN_PREFIX))
            .count()
    }

    #[test]
    fn regular_files_become_links_into_one_generation() {
        let dir = tempfile::tempdir().expect("tempdir");
        fs::write(dir.path().join("a.key"), b"old-key").expect("seed");
        fs::write(dir.path().join("a.crt"), b"old-crt").expect("seed");
        fs::write(dir.path().join("other"), b"untouched").expect("seed");
        pair(dir.path(), b"new-key", b"new-crt");
        assert_eq!(read(dir.path(), "a.key"), b"new-key");
        assert_eq!(read(dir.path(), "a.crt"), b"new-crt");
        assert!(is_managed_link(&dir.path().join("a.key")));
        assert!(!is_managed_link(&dir.path().join("other")));
        assert_eq!(mode_of(&dir.path().join("a.key")), Some(0o600));
        assert_eq!(mode_of(&dir.path().join("a.crt")), Some(0o644));
        assert_eq!(generations(dir.path()), 1, "the old generation is gone");
    }

    #[test]
    fn later_commits_keep_the_other_linked_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        pair(dir.path(), b"k1", b"c1");
        write_many_atomic(
            dir.path(),
            &[
                (name("b.key"), b"bk", FileSpec::mode(0o600)),
                (name("b.crt"), b"bc", FileSpec::mode(0o644)),
            ],
        )
        .expect("second pair");
        pair(dir.path(), b"k2", b"c2");
        assert_eq!(read(dir.path(), "a.key"), b"k2");
        assert_eq!(read(dir.path(), "b.key"), b"bk");
        assert_eq!(read(dir.path(), "b.crt"), b"bc");
        assert_eq!(generations(dir.path()), 1);
    }

    /// A managed name replaced by a single-file write becomes a regular file; the next commit
    /// naming it takes it back, never showing the stale generation copy.
    #[test]
    fn a_name_written_alone_in_between_is_taken_back_without_its_stale_copy() {
        let dir = tempfile::tempdir().expect("tempdir");
        pair(dir.path(), b"k1", b"c1");
        write_atomic(&dir.path().join("a.crt"), b"c1-alone", 0o644).expect("single");
        assert!(!is_managed_link(&dir.path().join("a.crt")));
        assert_eq!(read(dir.path(), "a.crt"), b"c1-alone");
        pair(dir.path(), b"k2", b"c2");
        assert_eq!(
            (read(dir.path(), "a.key"), read(dir.path(), "a.crt")),
            (b"k2".to_vec(), b"c2".to_vec())
        );
    }

    /// A kill at any point of a commit (simulated: the steps up to the swap done, the swap not)
    /// leaves the old pair readable, and the cleanup removes the half-made generation.
    #[test]
    fn an_unswapped_generation_is_invisible_and_cleaned() {
        let dir = tempfile::tempdir().expect("tempdir");
        pair(dir.path(), b"k1", b"c1");
        let orphan = new_generation(dir.path()).expect("generation");
        fs::write(dir.path().join(&orphan).join("a.key"), b"half").expect("write");
        assert_eq!(read(dir.path(), "a.key"), b"k1");
        assert_eq!(generations(dir.path()), 2);
        remove_stale_temps(dir.path()).expect("clean");
        assert_eq!(generations(dir.path()), 1);
        assert_eq!(
            (read(dir.path(), "a.key"), read(dir.path(), "a.crt")),
            (b"k1".to_vec(), b"c1".to_vec())
        );
    }

    /// Names written alone after a commit leave their old contents (keys, maybe) unreferenced
    /// in the generation: the cleanup removes them, and the whole generation once no name
    /// links through it.
    #[test]
    fn unreferenced_contents_and_an_unused_generation_are_removed() {
        let dir = tempfile::tempdir().expect("tempdir");
        pair(dir.path(), b"k1", b"c1");
        let key_in_gen = resolved(&dir.path().join("a.key")).expect("resolved");
        write_atomic(&dir.path().join("a.key"), b"k1-alone", 0o600).expect("single");
        remove_stale_temps(dir.path()).expect("clean");
        assert!(!key_in_gen.exists(), "the unreferenced key is gone");
        assert_eq!(read(dir.path(), "a.crt"), b"c1");
        write_atomic(&dir.path().join("a.crt"), b"c1-alone", 0o644).expect("single");
        remove_stale_temps(dir.path()).expect("clean");
        assert_eq!(testkit::entry_names(dir.path()), ["a.crt", "a.key"]);
        assert_eq!(read(dir.path(), "a.key"), b"k1-alone");
    }

    /// A commit killed after linking a name that did not exist, before its swap, leaves a link
    /// that shows nothing: the cleanup removes it, so the name is absent again (as before).
    #[test]
    fn a_dangling_link_of_an_unfinished_commit_is_removed() {
        let dir = tempfile::tempdir().expect("tempdir");
        pair(dir.path(), b"k", b"c");
        std::os::unix::fs::symlink(Path::new(DATA).join("new.csr"), dir.path().join("new.csr"))
            .expect("link");
        remove_stale_temps(dir.path()).expect("clean");
        assert!(dir.path().join("new.csr").symlink_metadata().is_err());
        assert_eq!(read(dir.path(), "a.key"), b"k");
    }

    #[test]
    fn foreign_links_and_a_strange_data_link_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        fs::write(dir.path().join("elsewhere"), b"x").expect("seed");
        std::os::unix::fs::symlink("elsewhere", dir.path().join("a.key")).expect("link");
        let err = write_many_atomic(
            dir.path(),
            &[
                (name("a.key"), b"k", FileSpec::mode(0o600)),
                (name("a.crt"), b"c", FileSpec::mode(0o644)),
            ],
        )
        .expect_err("foreign link");
        assert_eq!(err.source.kind(), io::ErrorKind::InvalidInput);
        fs::remove_file(dir.path().join("a.key")).expect("rm");
        std::os::unix::fs::symlink("/etc", dir.path().join(DATA)).expect("link");
        let err = write_many_atomic(
            dir.path(),
            &[
                (name("a.key"), b"k", FileSpec::mode(0o600)),
                (name("a.crt"), b"c", FileSpec::mode(0o644)),
            ],
        )
        .expect_err("strange ..data");
        assert_eq!(err.source.kind(), io::ErrorKind::InvalidData);
        remove_stale_temps(dir.path()).expect("clean");
        assert_eq!(
            testkit::entry_names(dir.path()),
            [DATA, "elsewhere"],
            "nothing removed behind a strange ..data"
        );
    }

    #[test]
    fn generation_directories_take_the_directory_mode() {
        let dir = tempfile::tempdir().expect("tempdir");
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o750)).expect("chmod");
        pair(dir.path(), b"k", b"c");
        let resolved = resolved(&dir.path().join("a.key")).expect("resolved");
        assert_eq!(mode_of(resolved.parent().expect("gen")), Some(0o750));
    }
}
