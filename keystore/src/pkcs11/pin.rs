//! The token user PIN: read once from a file or an environment variable, held zeroized.
//!
//! A PIN file is checked as the key files are: it must be readable by its owner only (no group
//! or other bits) and owned by the plugin's user or root; otherwise it is refused, by name. It
//! is read into one buffer sized from the file, so a long PIN leaves no reallocated copy.

use crate::KeyStoreError;
use crate::private_file::read_private;
use cryptoki::types::RawAuthPin;
use kms_config::SecretSource;
use secrecy::SecretBox;

/// Longest PIN file read: PKCS#11 PINs are far shorter (a newline may follow).
const MAX_PIN_FILE_LEN: usize = 258;

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
            let mut bytes = read_private(path, "PIN file", MAX_PIN_FILE_LEN).map_err(pin_error)?;
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
        let long = [b'9'; 200];
        std::fs::write(&path, [&long[..], b"\n"].concat()).expect("write");
        let pin = read_pin(&SecretSource::File(path.clone())).expect("a 200-byte PIN");
        assert_eq!(pin.expose_secret().as_slice(), long);
        assert_eq!(
            pin.expose_secret().capacity(),
            202,
            "one buffer, never regrown"
        );
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
