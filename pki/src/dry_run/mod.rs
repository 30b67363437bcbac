//! `--dry-run`: a command runs against a scratch copy of the cert dir and the kubeconfig dir
//! (and of any further directory or file it writes, see [`Scratch::copy_dir`] and
//! [`Scratch::redirect_file`]); the differences are reported and the copy is deleted, so the
//! real directories are never written. The copy lives beside the cert dir (same file system and
//! protection as the originals, mode 0700) or, when that directory does not exist yet, in the
//! system temp dir. A copy left there by a killed dry run is removed by a later one (`abandoned`).

mod abandoned;
mod error_paths;
mod tree;

use std::fs;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Component, Path, PathBuf};

use serde::Serialize;

use crate::error::{Error, Result};
use crate::layout::Layout;
use tree::{copy_tree, list_files, private_dir, same_file};

/// One difference between the real directories and the scratch copy after the command ran.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "action", content = "path", rename_all = "lowercase")]
#[non_exhaustive]
pub enum Change {
    /// The command would create this file.
    Create(PathBuf),
    /// The command would replace the content or mode of this file.
    #[serde(rename = "change")]
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

/// A real directory (or file) and its stand-in inside the scratch copy.
#[derive(Debug, Clone)]
struct Copied {
    real: PathBuf,
    copy: PathBuf,
    /// Sub-directories are copied too (the cert dir); otherwise its files only.
    recursive: bool,
}

/// A scratch copy of a layout, deleted on drop.
#[derive(Debug)]
pub struct Scratch {
    root: PathBuf,
    /// The cert dir, the kubeconfig dir, then every directory added by [`Scratch::copy_dir`].
    dirs: Vec<Copied>,
    /// Files added by [`Scratch::redirect_file`].
    files: Vec<Copied>,
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
        abandoned::remove_abandoned(&base);
        let root = base.join(format!("{}{}-{tag}", abandoned::PREFIX, std::process::id()));
        fs::DirBuilder::new()
            .mode(0o700)
            .create(&root)
            .map_err(|e| Error::io(&root, e))?;
        let scratch = Scratch {
            layout: Layout::new(root.join("pki"), root.join("kubeconfig")),
            dirs: vec![
                Copied {
                    real: original.cert_dir.clone(),
                    copy: root.join("pki"),
                    recursive: true,
                },
                Copied {
                    real: original.kubeconfig_dir.clone(),
                    copy: root.join("kubeconfig"),
                    recursive: false,
                },
            ],
            files: Vec::new(),
            root,
        };
        for d in &scratch.dirs {
            copy_tree(&d.real, &d.copy, d.recursive)?;
        }
        Ok(scratch)
    }

    /// A private directory inside the scratch copy (deleted with it) for a command's output
    /// that lives outside the two directories, e.g. the kubelet's certificate directory.
    pub fn extra_dir(&self, name: &str) -> PathBuf {
        self.root.join("extra").join(name)
    }

    /// Copies the files (not the sub-directories) of one more directory the command writes,
    /// e.g. the static pod manifests, and returns the copy to run the command against; its
    /// changes are reported like those of the layout. The same directory given twice has one
    /// copy.
    pub fn copy_dir(&mut self, real: &Path) -> Result<PathBuf> {
        if let Some(d) = self.dirs.iter().skip(2).find(|d| d.real == real) {
            return Ok(d.copy.clone());
        }
        let copy = self.root.join("dirs").join(self.dirs.len().to_string());
        copy_tree(real, &copy, false)?;
        self.dirs.push(Copied {
            real: real.to_path_buf(),
            copy: copy.clone(),
            recursive: false,
        });
        Ok(copy)
    }

    /// A stand-in inside the scratch copy for a file the command only writes (never reads),
    /// e.g. an export file; creating or replacing it is reported against `real`.
    pub fn redirect_file(&mut self, real: &Path) -> Result<PathBuf> {
        let dir = self.root.join("files").join(self.files.len().to_string());
        private_dir(&dir)?;
        let name = real.file_name().unwrap_or("file".as_ref());
        let copy = dir.join(name);
        self.files.push(Copied {
            real: real.to_path_buf(),
            copy: copy.clone(),
            recursive: false,
        });
        Ok(copy)
    }

    /// The stand-in of a real path inside the scratch copy: a file (or directory) anywhere in
    /// the cert dir, directly in the kubeconfig dir or in a directory added with
    /// [`Scratch::copy_dir`], or a redirected file. `None` for any other path, and for a path
    /// with `..` or `.` after the copied directory, so the answer never leads out of the copy.
    pub fn scratch_path(&self, real: &Path) -> Option<PathBuf> {
        if let Some(f) = self.files.iter().find(|f| f.real == real) {
            return Some(f.copy.clone());
        }
        // The cert dir first and the added directories next: they may lie in the kubeconfig dir.
        let order = self.dirs[..1]
            .iter()
            .chain(self.dirs.iter().skip(2))
            .chain(self.dirs.get(1));
        order.into_iter().find_map(|d| {
            let rest = real.strip_prefix(&d.real).ok()?;
            let plain = rest.components().all(|c| matches!(c, Component::Normal(_)));
            let depth_ok = d.recursive || rest.components().count() <= 1;
            (plain && depth_ok).then(|| d.copy.join(rest))
        })
    }

    /// Whether `p` lies inside the scratch copy (with no `..` or `.` that could lead out).
    pub fn contains(&self, p: &Path) -> bool {
        p.strip_prefix(&self.root)
            .is_ok_and(|rest| rest.components().all(|c| matches!(c, Component::Normal(_))))
    }

    /// The real path a scratch path stands for.
    pub fn original_path(&self, p: &Path) -> PathBuf {
        if let Some(f) = self.files.iter().find(|f| f.copy == p) {
            return f.real.clone();
        }
        for d in &self.dirs {
            if let Ok(rest) = p.strip_prefix(&d.copy) {
                return d.real.join(rest);
            }
        }
        p.to_path_buf()
    }

    /// `text` (a command's report) with every scratch path replaced by the real one.
    pub fn to_original(&self, text: &str) -> String {
        let mut pairs: Vec<(String, String)> = self
            .dirs
            .iter()
            .chain(&self.files)
            .map(|d| {
                (
                    d.copy.to_string_lossy().into_owned(),
                    d.real.to_string_lossy().into_owned(),
                )
            })
            .collect();
        // `dirs/1` is a prefix of `dirs/12`: the longer one first.
        pairs.sort_by_key(|(copy, _)| std::cmp::Reverse(copy.len()));
        pairs
            .iter()
            .fold(text.to_owned(), |t, (copy, real)| t.replace(copy, real))
    }

    /// `e` (an error of the command run on the copy) as the same command on the real
    /// directories would report it.
    pub fn original_error(&self, e: Error) -> Error {
        error_paths::map_error(e, &|p| self.original_path(p), &|t| self.to_original(t))
    }

    /// What differs between the scratch copy and the real directories, with real paths.
    pub fn changes(&self) -> Result<Vec<Change>> {
        let mut out = Vec::new();
        for d in &self.dirs {
            let after = list_files(&d.copy, d.recursive)?;
            let before = list_files(&d.real, d.recursive)?;
            for rel in &after {
                let (new, old) = (d.copy.join(rel), d.real.join(rel));
                if !before.contains(rel) {
                    out.push(Change::Create(old));
                } else if !same_file(&new, &old)? {
                    out.push(Change::Modify(old));
                }
            }
            for rel in before.iter().filter(|r| !after.contains(r)) {
                out.push(Change::Remove(d.real.join(rel)));
            }
        }
        for f in &self.files {
            if f.copy.symlink_metadata().is_err() {
                continue;
            }
            if f.real.symlink_metadata().is_err() {
                out.push(Change::Create(f.real.clone()));
            } else if !same_file(&f.copy, &f.real)? {
                out.push(Change::Modify(f.real.clone()));
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

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster() -> Result<(tempfile::TempDir, Layout)> {
        let tmp = tempfile::tempdir().map_err(|e| Error::io("tempdir", e))?;
        let layout = Layout::new(tmp.path().join("pki"), tmp.path());
        crate::store::write_atomic(&layout.cert_dir.join("etcd/ca.crt"), b"etcd", 0o644)?;
        crate::store::write_atomic(&tmp.path().join("admin.conf"), b"admin", 0o600)?;
        crate::store::write_atomic(&tmp.path().join("manifests/kcm.yaml"), b"kcm", 0o600)?;
        Ok((tmp, layout))
    }

    #[test]
    fn paths_map_into_the_copy_and_never_out_of_it() -> Result<()> {
        let (tmp, layout) = cluster()?;
        let mut s = Scratch::new(&layout)?;
        let manifests = tmp.path().join("manifests");
        let copy = s.copy_dir(&manifests)?;
        assert_eq!(s.copy_dir(&manifests)?, copy, "one copy per directory");
        let into = |p: &Path| s.scratch_path(p);
        assert_eq!(
            into(&layout.cert_dir.join("etcd/ca.crt")),
            Some(s.layout.cert_dir.join("etcd/ca.crt"))
        );
        assert_eq!(
            into(&manifests.join("kcm.yaml")),
            Some(copy.join("kcm.yaml"))
        );
        assert_eq!(
            into(&tmp.path().join("admin.conf")),
            Some(s.layout.kubeconfig_dir.join("admin.conf"))
        );
        // Not copied (a sub-directory of the kubeconfig dir), or leading out of the copy.
        assert_eq!(into(&tmp.path().join("other/x.conf")), None);
        assert_eq!(into(&layout.cert_dir.join("../../x")), None);
        assert_eq!(into(Path::new("/etc/passwd")), None);
        assert!(!s.contains(&s.layout.cert_dir.join("../../x")));
        assert!(s.contains(&copy.join("kcm.yaml")));
        let export = s.redirect_file(&tmp.path().join("out/shared"))?;
        assert_eq!(s.original_path(&export), tmp.path().join("out/shared"));
        let text = format!(
            "{} and {}",
            copy.join("kcm.yaml").display(),
            export.display()
        );
        assert_eq!(
            s.to_original(&text),
            format!(
                "{} and {}",
                manifests.join("kcm.yaml").display(),
                tmp.path().join("out/shared").display()
            )
        );
        std::fs::write(copy.join("kcm.yaml"), b"edited").map_err(|e| Error::io("kcm", e))?;
        std::fs::write(&export, b"x").map_err(|e| Error::io("export", e))?;
        assert_eq!(
            s.changes()?,
            [
                Change::Modify(manifests.join("kcm.yaml")),
                Change::Create(tmp.path().join("out/shared"))
            ]
        );
        Ok(())
    }

    #[test]
    fn a_linked_directory_in_the_cert_dir_is_refused() -> Result<()> {
        let (tmp, layout) = cluster()?;
        std::os::unix::fs::symlink(tmp.path().join("manifests"), layout.cert_dir.join("linked"))
            .map_err(|e| Error::io("symlink", e))?;
        assert!(matches!(Scratch::new(&layout), Err(Error::Invalid { .. })));
        Ok(())
    }
}
