//! `--dry-run`: a command runs against a scratch copy of the cert dir and the kubeconfig dir;
//! the differences are reported and the copy is deleted, so the real directories are never
//! written. The copy lives beside the cert dir (same file system and protection as the
//! originals, mode 0700) or, when that directory does not exist yet, in the system temp dir.

use std::fs;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::layout::Layout;

/// One difference between the real directories and the scratch copy after the command ran.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Change {
    /// The command would create this file.
    Create(PathBuf),
    /// The command would replace the content or mode of this file.
    Modify(PathBuf),
    /// The command would remove this file.
    Remove(PathBuf),
}

impl std::fmt::Display for Change {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Change::Create(p) => write!(f, "[dry-run] would create {}", p.display()),
            Change::Modify(p) => write!(f, "[dry-run] would change {}", p.display()),
            Change::Remove(p) => write!(f, "[dry-run] would remove {}", p.display()),
        }
    }
}

/// A scratch copy of a layout, deleted on drop.
#[derive(Debug)]
pub struct Scratch {
    root: PathBuf,
    original: Layout,
    /// The layout to run the command against.
    pub layout: Layout,
}

impl Scratch {
    /// Copies the cert dir (recursively) and the files of the kubeconfig dir (not its
    /// subdirectories, which usually hold the cert dir) into a fresh private directory.
    pub fn new(original: &Layout) -> Result<Scratch> {
        let base = original
            .cert_dir
            .parent()
            .filter(|p| !p.as_os_str().is_empty() && p.is_dir())
            .map(Path::to_path_buf)
            .unwrap_or_else(std::env::temp_dir);
        let mut tag = [0u8; 6];
        getrandom::fill(&mut tag).map_err(Error::crypto)?;
        let tag: String = tag.iter().map(|b| format!("{b:02x}")).collect();
        let root = base.join(format!(".pki-dry-run-{}-{tag}", std::process::id()));
        fs::DirBuilder::new()
            .mode(0o700)
            .create(&root)
            .map_err(|e| Error::io(&root, e))?;
        let scratch = Scratch {
            layout: Layout::new(root.join("pki"), root.join("kubeconfig")),
            original: original.clone(),
            root,
        };
        copy_tree(&original.cert_dir, &scratch.layout.cert_dir, true)?;
        copy_tree(
            &original.kubeconfig_dir,
            &scratch.layout.kubeconfig_dir,
            false,
        )?;
        Ok(scratch)
    }

    /// A private directory inside the scratch copy (deleted with it) for a command's output
    /// that lives outside the two directories, e.g. the kubelet's certificate directory.
    pub fn extra_dir(&self, name: &str) -> PathBuf {
        self.root.join("extra").join(name)
    }

    /// The real path a scratch path stands for.
    pub fn original_path(&self, p: &Path) -> PathBuf {
        if let Ok(rest) = p.strip_prefix(&self.layout.cert_dir) {
            return self.original.cert_dir.join(rest);
        }
        if let Ok(rest) = p.strip_prefix(&self.layout.kubeconfig_dir) {
            return self.original.kubeconfig_dir.join(rest);
        }
        p.to_path_buf()
    }

    /// `text` (a command's report) with every scratch path replaced by the real one.
    pub fn to_original(&self, text: &str) -> String {
        let cert = self.layout.cert_dir.to_string_lossy().into_owned();
        let kc = self.layout.kubeconfig_dir.to_string_lossy().into_owned();
        text.replace(&cert, &self.original.cert_dir.to_string_lossy())
            .replace(&kc, &self.original.kubeconfig_dir.to_string_lossy())
    }

    /// What differs between the scratch copy and the real directories, with real paths.
    pub fn changes(&self) -> Result<Vec<Change>> {
        let mut out = Vec::new();
        for (scratch_dir, real_dir, recursive) in [
            (&self.layout.cert_dir, &self.original.cert_dir, true),
            (
                &self.layout.kubeconfig_dir,
                &self.original.kubeconfig_dir,
                false,
            ),
        ] {
            let after = list_files(scratch_dir, recursive)?;
            let before = list_files(real_dir, recursive)?;
            for rel in &after {
                let (new, old) = (scratch_dir.join(rel), real_dir.join(rel));
                if !before.contains(rel) {
                    out.push(Change::Create(old));
                } else if !same_file(&new, &old)? {
                    out.push(Change::Modify(old));
                }
            }
            for rel in before.iter().filter(|r| !after.contains(r)) {
                out.push(Change::Remove(real_dir.join(rel)));
            }
        }
        Ok(out)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.root);
    }
}

/// Regular files and symlinks under `dir`, relative to it, sorted; lock and temp files of a
/// run are not content and are left out.
fn list_files(dir: &Path, recursive: bool) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    walk(dir, Path::new(""), recursive, &mut out)?;
    out.retain(|p| {
        let name = p.file_name().map(|n| n.to_string_lossy().into_owned());
        !name.is_some_and(|n| n.contains(".tmp-") || n.ends_with(".lock"))
    });
    out.sort();
    Ok(out)
}

fn walk(base: &Path, rel: &Path, recursive: bool, out: &mut Vec<PathBuf>) -> Result<()> {
    let dir = base.join(rel);
    let entries = match fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io(&dir, e)),
    };
    for entry in entries {
        let entry = entry.map_err(|e| Error::io(&dir, e))?;
        let kind = entry.file_type().map_err(|e| Error::io(entry.path(), e))?;
        let child = rel.join(entry.file_name());
        if kind.is_dir() {
            if recursive {
                walk(base, &child, recursive, out)?;
            }
        } else {
            out.push(child);
        }
    }
    Ok(())
}

fn copy_tree(from: &Path, to: &Path, recursive: bool) -> Result<()> {
    fs::DirBuilder::new()
        .mode(0o700)
        .recursive(true)
        .create(to)
        .map_err(|e| Error::io(to, e))?;
    for rel in list_files(from, recursive)? {
        let (src, dst) = (from.join(&rel), to.join(&rel));
        if let Some(parent) = dst.parent() {
            fs::DirBuilder::new()
                .mode(0o700)
                .recursive(true)
                .create(parent)
                .map_err(|e| Error::io(parent, e))?;
        }
        let meta = fs::symlink_metadata(&src).map_err(|e| Error::io(&src, e))?;
        if meta.file_type().is_symlink() {
            let target = fs::read_link(&src).map_err(|e| Error::io(&src, e))?;
            std::os::unix::fs::symlink(target, &dst).map_err(|e| Error::io(&dst, e))?;
        } else {
            fs::copy(&src, &dst).map_err(|e| Error::io(&dst, e))?;
            fs::set_permissions(&dst, fs::Permissions::from_mode(meta.permissions().mode()))
                .map_err(|e| Error::io(&dst, e))?;
        }
    }
    Ok(())
}

fn same_file(a: &Path, b: &Path) -> Result<bool> {
    let (ma, mb) = (
        fs::symlink_metadata(a).map_err(|e| Error::io(a, e))?,
        fs::symlink_metadata(b).map_err(|e| Error::io(b, e))?,
    );
    if ma.file_type().is_symlink() || mb.file_type().is_symlink() {
        return Ok(fs::read_link(a).ok() == fs::read_link(b).ok());
    }
    if ma.permissions().mode() != mb.permissions().mode() {
        return Ok(false);
    }
    // Either file may be a private key or a kubeconfig: wipe both buffers after comparing.
    let read = |p: &Path| {
        fs::read(p)
            .map(zeroize::Zeroizing::new)
            .map_err(|e| Error::io(p, e))
    };
    Ok(*read(a)? == *read(b)?)
}
