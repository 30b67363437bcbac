//! Making strings a caller controls (annotation keys and values, key ids, uids) safe to log: one
//! line, printable ASCII only, bounded length.

use std::borrow::Cow;
use std::fmt::Write;

/// Longest prefix of an untrusted string kept in a log line, in characters.
pub const MAX_LOGGED_CHARS: usize = 64;

/// `text` with every character outside printable ASCII (control characters, newlines, bidi
/// overrides, any non-ASCII) written as `\u{..}`, a backslash as `\\`, a double quote as `\"`,
/// cut after [`MAX_LOGGED_CHARS`] characters with a note of the full length in bytes. Borrows
/// (allocates nothing) when there is nothing to change: the common case, on every call's log line.
pub fn untrusted(text: &str) -> Cow<'_, str> {
    let plain = text.len() <= MAX_LOGGED_CHARS
        && text
            .bytes()
            .all(|b| matches!(b, b' '..=b'~') && b != b'\\' && b != b'"');
    if plain {
        Cow::Borrowed(text)
    } else {
        Cow::Owned(escape(text, text.len()))
    }
}

/// [`untrusted`] for bytes that should be text; invalid UTF-8 shows as U+FFFD.
pub fn untrusted_bytes(bytes: &[u8]) -> String {
    // No more bytes than the kept characters can take are even decoded.
    let cut = bytes.len().min(MAX_LOGGED_CHARS * 4 + 4);
    escape(&String::from_utf8_lossy(&bytes[..cut]), bytes.len())
}

/// Escapes `text`, a prefix of an input of `total_len` bytes.
fn escape(text: &str, total_len: usize) -> String {
    let mut out = String::with_capacity(text.len().min(MAX_LOGGED_CHARS * 2));
    for (index, c) in text.chars().enumerate() {
        if index == MAX_LOGGED_CHARS {
            let _ = write!(out, "…({total_len} bytes)");
            break;
        }
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            ' '..='~' => out.push(c),
            other => {
                let _ = write!(out, "{}", other.escape_unicode());
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_and_truncates() {
        assert_eq!(untrusted("kms.example/key-1"), "kms.example/key-1");
        assert!(
            matches!(
                untrusted("5c1d2c9e-6f0b-4b7e-9d43-0d9a3b7e1f20"),
                Cow::Borrowed(_)
            ),
            "a plain uid is logged without a copy"
        );
        assert_eq!(
            untrusted("a\nlevel=ERROR \"x\"\\\u{202e}é"),
            "a\\u{a}level=ERROR \\\"x\\\"\\\\\\u{202e}\\u{e9}"
        );
        let long = "x".repeat(1000);
        let logged = untrusted(&long);
        assert!(logged.starts_with(&"x".repeat(MAX_LOGGED_CHARS)));
        assert!(logged.ends_with("…(1000 bytes)"), "{logged}");
        assert!(logged.len() < 100);
        assert_eq!(untrusted_bytes(b"v1\xff"), "v1\\u{fffd}");
        assert!(untrusted_bytes(&[b'a'; 5000]).ends_with("…(5000 bytes)"));
    }
}
