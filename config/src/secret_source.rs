//! Where a secret such as an HSM PIN comes from: a file or an environment variable, never the
//! configuration itself.

use std::path::PathBuf;

/// The one place a secret is read from. Formatting it shows where the secret lives, never the
/// secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SecretSource {
    /// A file whose content (trailing newline removed) is the secret.
    File(PathBuf),
    /// An environment variable holding the secret.
    Env(String),
}

impl SecretSource {
    /// Builds the source from the two YAML keys `<name>_file` and `<name>_env`: exactly one of
    /// them must be set.
    pub(crate) fn from_keys(
        name: &str,
        file: Option<PathBuf>,
        env: Option<String>,
    ) -> Result<Self, String> {
        match (file, env) {
            (Some(file), None) => Ok(Self::File(file)),
            (None, Some(var)) if !var.is_empty() => Ok(Self::Env(var)),
            (None, Some(_)) => Err(format!("{name}_env must name a variable")),
            (None, None) => Err(format!(
                "set {name}_file or {name}_env; a {} is never written in this file",
                name.to_uppercase()
            )),
            (Some(_), Some(_)) => Err(format!("set only one of {name}_file and {name}_env")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exactly_one_source() {
        assert_eq!(
            SecretSource::from_keys("pin", Some("/p".into()), None),
            Ok(SecretSource::File("/p".into()))
        );
        assert_eq!(
            SecretSource::from_keys("pin", None, Some("PIN".into())),
            Ok(SecretSource::Env("PIN".into()))
        );
        let none = SecretSource::from_keys("pin", None, None).expect_err("none");
        assert!(none.contains("pin_file or pin_env"), "{none}");
        let both = SecretSource::from_keys("pin", Some("/p".into()), Some("PIN".into()))
            .expect_err("both");
        assert!(both.contains("only one"), "{both}");
        assert!(SecretSource::from_keys("pin", None, Some(String::new())).is_err());
    }
}
