//! The host's tmpfiles.d entries for the plugin, and `/run` paths in either spelling.

use crate::files::{deploy, read};
use std::path::Path;

/// One line of a tmpfiles.d file.
pub struct TmpfilesEntry {
    /// The type (`d` creates a directory).
    pub kind: String,
    /// The path it creates.
    pub path: String,
    /// The mode, parsed as octal.
    pub mode: u32,
    /// The owner's numeric uid.
    pub uid: u64,
    /// The owner's numeric gid.
    pub gid: u64,
}

/// The entries of `deploy/static-pod/kms-plugin.tmpfiles.conf`; owners must be numeric.
pub fn tmpfiles_entries() -> Vec<TmpfilesEntry> {
    let path = deploy("static-pod/kms-plugin.tmpfiles.conf");
    read(&path)
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            assert!(fields.len() >= 5, "{}: short line {line:?}", path.display());
            let number = |text: &str| -> u64 {
                text.parse().unwrap_or_else(|_| {
                    panic!(
                        "{}: {text:?} must be numeric (no such user on the host)",
                        path.display()
                    )
                })
            };
            TmpfilesEntry {
                kind: fields[0].to_owned(),
                path: fields[1].to_owned(),
                mode: u32::from_str_radix(fields[2], 8).expect("octal mode"),
                uid: number(fields[3]),
                gid: number(fields[4]),
            }
        })
        .collect()
}

/// `/var/run` is a symlink to `/run`: both spellings name one directory.
pub fn same_run_path(a: &str, b: &Path) -> bool {
    let normalize = |p: &str| {
        p.strip_prefix("/var/run/")
            .map_or_else(|| p.to_owned(), |rest| format!("/run/{rest}"))
    };
    normalize(a) == normalize(b.to_str().expect("utf-8"))
}
