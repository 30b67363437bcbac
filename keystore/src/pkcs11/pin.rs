//! The token user PIN: read once from a file or an environment variable, held zeroized.
//!
//! A PIN file is checked as the key files are: it must be readable by its owner only (no group
//! or other bits) and owned by the plugin's user or root; otherwise it is refused, by name.

use crate::KeyStoreError;
use cryptoki::types::RawAuthPin;
use kms_config::SecretSource;
use secrecy::SecretBox;
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

fn pin_error(reason: String) -> KeyStoreError {
    KeyStoreError::configuration(format!("cannot read the PKCS#11 PIN: {reason}"))
}

/// Reads the PIN from `source`, dropping one trailing newline (`\n` or `\r\n`).
///
/// The bytes go straight into a zeroizing buffer; the PIN is never logged or formatted. A PIN
/// taken from the environment also stays in the process environment, which this cannot clear.
pub fn read_pin(source: &SecretSource) -> Result<RawAuthPin, KeyStoreError> {
    let mut bytes = match source {
        SecretSource::File(path) => {
            let mut file =
                File::open(path).map_err(|e| pin_error(format!("{}: {e}", path.display())))?;
            check_private(&file, path)?;
            let mut bytes = zeroize::Zeroizing::new(Vec::with_capacity(64));
            file.read_to_end(&mut bytes)
                .map_err(|e| pin_error(format!("{}: {e}", path.display())))?;
            // Move the buffer out without copying; ownership passes to the SecretBox below.
            std::mem::take(&mut *bytes)
        }
        SecretSource::Env(var) => match std::env::var_os(var) {
            Some(value) => value.into_encoded_bytes(),
            None => return Err(pin_error(format!("environment variable {var} is not set"))),
        },
    };
    if bytes.last() == Some(&b'\n') {
        bytes.pop();
        if bytes.last() == Some(&b'\r') {
            bytes.pop();
        }
    }
    if bytes.is_empty() {
        return Err(pin_error("the PIN is empty".into()));
    }
    Ok(SecretBox::new(Box::new(bytes)))
}

/// Refuses an open PIN file that its group or others may access, or that neither the plugin's
/// user nor root owns (checked on the open file, so a swapped path cannot slip through).
fn check_private(file: &File, path: &Path) -> Result<(), KeyStoreError> {
    let metadata = file
        .metadata()
        .map_err(|e| pin_error(format!("{}: {e}", path.display())))?;
    let mode = metadata.mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(pin_error(format!(
            "{}: the PIN file is accessible to group or others (mode {mode:o}); expected 0600 or 0400",
            path.display()
        )));
    }
    let euid = rustix::process::geteuid();
    if metadata.uid() != euid.as_raw() && metadata.uid() != 0 {
        return Err(pin_error(format!(
            "{}: the PIN file is owned by uid {}, neither the plugin's user (uid {}) nor root",
            path.display(),
            metadata.uid(),
            euid.as_raw()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_pin_file_others_can_read_is_refused_by_name() {
        let (_dir, path) = testkit::scratch_path("pin");
        std::fs::write(&path, b"1234\n").expect("write");
        for mode in [0o644, 0o640, 0o604, 0o660] {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).expect("chmod");
            let error = read_pin(&SecretSource::File(path.clone())).expect_err("refused");
            let text = error.to_string();
            assert!(text.contains(&path.display().to_string()), "{text}");
            assert!(text.contains("group or others"), "{text}");
            assert!(!text.contains("1234"), "{text}");
        }
        for mode in [0o600, 0o400] {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).expect("chmod");
            assert!(
                read_pin(&SecretSource::File(path.clone())).is_ok(),
                "{mode:o}"
            );
        }
    }

    #[test]
    fn file_pin_drops_one_newline() {
        let (_dir, path) = testkit::scratch_path("pin");
        std::fs::write(&path, b"1234\r\n").expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        let pin = read_pin(&SecretSource::File(path.clone())).expect("pin");
        assert_eq!(pin.expose_secret().as_slice(), b"1234");
        std::fs::write(&path, b"\n").expect("write");
        assert!(
            read_pin(&SecretSource::File(path)).is_err(),
            "empty PIN refused"
        );
    }

    #[test]
    fn missing_sources_say_where() {
        let error = read_pin(&SecretSource::Env("KMS_PLUGIN_TEST_NO_SUCH_PIN_VAR".into()))
            .expect_err("unset");
        assert!(
            error
                .to_string()
                .contains("KMS_PLUGIN_TEST_NO_SUCH_PIN_VAR"),
            "{error}"
        );
        let error = read_pin(&SecretSource::File("/nonexistent/pin".into())).expect_err("missing");
        assert!(error.to_string().contains("/nonexistent/pin"), "{error}");
    }
}
