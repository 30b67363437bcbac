//! Reading YAML files under `deploy/` and walking them by key.

use crate::files::{deploy, read};
use serde_yaml_ng::Value;

/// The YAML document `relative` (under `deploy/`), parsed.
pub fn yaml(relative: &str) -> Value {
    let path = deploy(relative);
    serde_yaml_ng::from_str(&read(&path))
        .unwrap_or_else(|error| panic!("{}: {error}", path.display()))
}

/// Follows `keys` (mapping keys, or list indices written as numbers) from `value`.
pub fn at<'a>(value: &'a Value, keys: &[&str], file: &str) -> &'a Value {
    let mut current = value;
    for key in keys {
        let next = match key.parse::<usize>() {
            Ok(index) => current.get(index),
            Err(_) => current.get(*key),
        };
        current = next.unwrap_or_else(|| panic!("{file}: no `{}`", keys.join(".")));
    }
    current
}

/// The string at `keys` (see [`at`]).
pub fn str_at<'a>(value: &'a Value, keys: &[&str], file: &str) -> &'a str {
    at(value, keys, file)
        .as_str()
        .unwrap_or_else(|| panic!("{file}: `{}` is not a string", keys.join(".")))
}

/// `value` as a list of strings; `what` names it in the panic message.
pub fn strings(value: &Value, file: &str, what: &str) -> Vec<String> {
    value
        .as_sequence()
        .unwrap_or_else(|| panic!("{file}: `{what}` is not a list"))
        .iter()
        .map(|item| {
            item.as_str()
                .unwrap_or_else(|| panic!("{file}: `{what}` holds a non-string"))
                .to_owned()
        })
        .collect()
}
