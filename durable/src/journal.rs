//! The commit journal that [`write_many_atomic`](crate::write_many_atomic) wrote before it
//! committed by generations, still completed by [`recover`](crate::recover()): which staged file
//! becomes which target, by name inside the journal's own directory, and the SHA-256 of what each
//! target must hold once the commit is done.
//!
//! ```text
//! durable-commit v2
//! <temp name> NUL <target name> NUL <sha256 hex> LF     (one line per file)
//! ```
//!
//! Names, never paths: a directory restored elsewhere, bind-mounted at another path or renamed
//! still completes its commits, and a journal can never name a file outside its directory.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;

use sha2::{Digest, Sha256};

/// Name prefix of a commit journal in its directory.
pub(crate) const PREFIX: &str = ".durable-commit-";

const HEADER: &[u8] = b"durable-commit v2\n";

/// One rename of a commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Entry {
    /// The staged file's name.
    pub temp: Vec<u8>,
    /// The target's name.
    pub target: Vec<u8>,
    /// SHA-256 of the staged content, lower-case hex.
    pub sha256: String,
}

/// SHA-256 of `bytes`, lower-case hex.
pub(crate) fn digest(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Whether `name` is one plain entry of a directory: not empty, not `.` or `..`, no `/`, NUL or
/// line feed.
pub(crate) fn is_plain_name(name: &[u8]) -> bool {
    !name.is_empty()
        && name != b"."
        && name != b".."
        && !name.iter().any(|b| matches!(b, b'/' | 0 | b'\n'))
}

/// The journal text for `entries` (all names already plain), as earlier builds wrote it.
#[cfg(test)]
pub(crate) fn render(entries: &[Entry]) -> Vec<u8> {
    let mut text = HEADER.to_vec();
    for e in entries {
        text.extend_from_slice(&e.temp);
        text.push(0);
        text.extend_from_slice(&e.target);
        text.push(0);
        text.extend_from_slice(e.sha256.as_bytes());
        text.push(b'\n');
    }
    text
}

/// The entries of a journal's text, or why it is not one this version wrote.
pub(crate) fn parse(text: &[u8]) -> Result<Vec<Entry>, String> {
    let body = text
        .strip_prefix(HEADER)
        .ok_or("it does not start with the `durable-commit v2` header")?;
    let mut entries = Vec::new();
    for (n, line) in body.split(|b| *b == b'\n').enumerate() {
        if line.is_empty() {
            continue;
        }
        let fields: Vec<&[u8]> = line.split(|b| *b == 0).collect();
        let [temp, target, sha] = fields.as_slice() else {
            return Err(format!("line {} does not have three fields", n + 2));
        };
        if !is_plain_name(temp) || !is_plain_name(target) {
            return Err(format!(
                "line {} names a file outside the journal's directory",
                n + 2
            ));
        }
        let sha = std::str::from_utf8(sha)
            .ok()
            .filter(|s| s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit()))
            .ok_or_else(|| format!("line {} has no SHA-256", n + 2))?;
        entries.push(Entry {
            temp: temp.to_vec(),
            target: target.to_vec(),
            sha256: sha.to_ascii_lowercase(),
        });
    }
    if !text.ends_with(b"\n") || entries.is_empty() {
        return Err("it is truncated".into());
    }
    Ok(entries)
}

/// A name as an `OsStr`, for joining to the directory.
pub(crate) fn os(name: &[u8]) -> &OsStr {
    OsStr::from_bytes(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(temp: &str, target: &str) -> Entry {
        Entry {
            temp: temp.into(),
            target: target.into(),
            sha256: digest(target.as_bytes()),
        }
    }

    #[test]
    fn round_trip() {
        let entries = vec![
            entry(".a.key.tmp-1", "a.key"),
            entry(".a.crt.tmp-2", "a.crt"),
        ];
        assert_eq!(parse(&render(&entries)).expect("parse"), entries);
    }

    #[test]
    fn refuses_paths_truncation_and_other_formats() {
        let good = render(&[entry(".a.tmp-1", "a")]);
        assert!(parse(&good[..good.len() - 1]).is_err(), "no final newline");
        assert!(parse(b"durable-commit v2\n").is_err(), "no entry");
        assert!(parse(b"/abs/.a.tmp-1\0/abs/a\n").is_err(), "v1 journal");
        for bad in ["../a", "sub/a", "/etc/passwd", ".", ".."] {
            let text = render(&[entry(".a.tmp-1", bad)]);
            let err = parse(&text).expect_err(bad);
            assert!(err.contains("outside"), "{bad}: {err}");
        }
        let mut no_hash = HEADER.to_vec();
        no_hash.extend_from_slice(b".a.tmp-1\0a\0xyz\n");
        assert!(parse(&no_hash).expect_err("hash").contains("SHA-256"));
    }
}
