//! Pointing a parse error at the line that caused it, where the YAML parser cannot.
//!
//! A value rejected by its own parser, or a section rejected as a whole after it was read
//! (`serde(try_from)`), is reported by the YAML parser at the start of the enclosing mapping.
//! These helpers find a better line from the error's text.

/// The 1-based line and column that `reason` is about, when its text names one.
pub(crate) fn locate(text: &str, reason: &str) -> Option<(usize, usize)> {
    field_path_location(text, reason).or_else(|| quoted_value_location(text, reason))
}

/// For a reason that names a dotted field path before a colon (`backend.aws.max_attempts: ...`,
/// the form of section checks), the position of the deepest key of that path found in `text`.
fn field_path_location(text: &str, reason: &str) -> Option<(usize, usize)> {
    let path = reason
        .split(": ")
        .filter_map(|part| part.rsplit(' ').next())
        .find(|word| {
            word.contains('.')
                && word
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'.')
        })?;
    let mut from = 0;
    let mut found = None;
    for key in path.split('.') {
        match find_key(&text[from..], key) {
            Some(offset) => {
                found = Some(from + offset);
                from += offset + key.len();
            }
            None => break,
        }
    }
    let at = found?;
    let line_start = text[..at].rfind('\n').map_or(0, |i| i + 1);
    let line = text[..at].matches('\n').count() + 1;
    Some((line, at - line_start + 1))
}

/// Byte offset of `key:` in `text` as a mapping key (not the tail of a longer name).
fn find_key(text: &str, key: &str) -> Option<usize> {
    let pattern = format!("{key}:");
    let mut from = 0;
    while let Some(offset) = text[from..].find(&pattern) {
        let at = from + offset;
        let before = text[..at].chars().next_back();
        if before.is_none_or(|c| c.is_whitespace() || c == '{' || c == ',') {
            return Some(at);
        }
        from = at + pattern.len();
    }
    None
}

/// The first line holding the first `"quoted"` value of `reason`.
fn quoted_value_location(text: &str, reason: &str) -> Option<(usize, usize)> {
    let start = reason.find('"')? + 1;
    let len = reason[start..].find('"')?;
    let value = &reason[start..start + len];
    if value.is_empty() {
        return None;
    }
    text.lines()
        .enumerate()
        .find_map(|(index, line)| line.find(value).map(|column| (index + 1, column + 1)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_paths_point_at_the_deepest_key() {
        let text = "socket: s\nbackend:\n  kind: aws\n  aws: { key_id: k, max_attempts: 0 }\n";
        assert_eq!(
            locate(text, "backend.aws.max_attempts: must be at least 1"),
            Some((4, 21))
        );
        assert_eq!(
            locate(text, "backend.pkcs11: required when backend.kind is pkcs11"),
            Some((2, 1))
        );
        assert_eq!(
            locate(text, "backend: backend.aws: bad at line 2 column 1"),
            Some((4, 3))
        );
        assert_eq!(locate(text, "unknown field `x`"), None);
    }
}
