//! systemd unit files: sections, keys and every value assigned.

use crate::files::{deploy, read};
use std::collections::BTreeMap;

/// A unit file: section -> key -> every value assigned, in order.
pub type Unit = BTreeMap<String, BTreeMap<String, Vec<String>>>;

/// Parses the unit file `relative` (under `deploy/`).
pub fn unit(relative: &str) -> Unit {
    let path = deploy(relative);
    let mut sections = Unit::new();
    let mut current = String::new();
    for line in read(&path).lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            current = name.to_owned();
            continue;
        }
        let (key, value) = line
            .split_once('=')
            .unwrap_or_else(|| panic!("{}: not key=value: {line:?}", path.display()));
        assert!(
            !current.is_empty(),
            "{}: {key} outside a section",
            path.display()
        );
        sections
            .entry(current.clone())
            .or_default()
            .entry(key.trim().to_owned())
            .or_default()
            .push(value.trim().to_owned());
    }
    sections
}

/// Every value assigned to `key` in `[section]`; panics when there is none.
pub fn values<'a>(unit: &'a Unit, section: &str, key: &str, file: &str) -> &'a [String] {
    unit.get(section)
        .and_then(|keys| keys.get(key))
        .map(Vec::as_slice)
        .unwrap_or_else(|| panic!("{file}: [{section}] has no {key}="))
}

/// The value of `key` in `[section]` that takes effect: the last one assigned.
pub fn last<'a>(unit: &'a Unit, section: &str, key: &str, file: &str) -> &'a str {
    values(unit, section, key, file)
        .last()
        .expect("at least one value")
}

/// Words of all assignments of a list-valued directive.
pub fn words(unit: &Unit, section: &str, key: &str, file: &str) -> Vec<String> {
    values(unit, section, key, file)
        .iter()
        .flat_map(|v| v.split_whitespace())
        .map(str::to_owned)
        .collect()
}

/// Words of the value of `key` in `[section]` that takes effect (see [`last`]), such as the
/// command line of `ExecStart`.
pub fn last_words(unit: &Unit, section: &str, key: &str, file: &str) -> Vec<String> {
    last(unit, section, key, file)
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

/// Whether a boolean directive's value means yes.
pub fn is_yes(value: &str) -> bool {
    matches!(value, "yes" | "true" | "on" | "1")
}
