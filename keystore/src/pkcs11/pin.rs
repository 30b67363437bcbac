//! The token user PIN: read once from a file or an environment variable, held zeroized.

use crate::KeyStoreError;
use cryptoki::types::RawAuthPin;
use kms_config::SecretSource;
use secrecy::SecretBox;
use std::io::Read;

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
            let mut file = std::fs::File::open(path)
                .map_err(|e| pin_error(format!("{}: {e}", path.display())))?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    #[test]
    fn file_pin_drops_one_newline() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("pin");
        std::fs::write(&path, b"1234\r\n").expect("write");
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
