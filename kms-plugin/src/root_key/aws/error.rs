//! How AWS KMS failures (the `keystore` crate's [`KeyStoreError`]) map onto [`RootKeyError`].

use crate::root_key::RootKeyError;
use keystore::{ErrorKind, KeyStoreError};

/// Maps a failure of a call about `key_id`: ciphertext that does not authenticate is
/// `Integrity(key_id)`, a key KMS does not know is `UnknownKey(key_id)`, the rest as any key
/// store failure.
pub(super) fn root_key_error(key_id: &str, error: KeyStoreError) -> RootKeyError {
    match error.kind() {
        ErrorKind::Integrity => RootKeyError::Integrity(key_id.to_owned()),
        ErrorKind::NotFound => RootKeyError::UnknownKey(key_id.to_owned()),
        _ => error.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_map_to_root_key_errors() {
        let id = "arn:aws:kms:eu-west-1:111122223333:key/k";
        let map = |kind| root_key_error(id, KeyStoreError::new(kind, "KMS Decrypt: x"));
        assert!(matches!(map(ErrorKind::Integrity), RootKeyError::Integrity(k) if k == id));
        assert!(matches!(map(ErrorKind::NotFound), RootKeyError::UnknownKey(k) if k == id));
        assert!(matches!(map(ErrorKind::Denied), RootKeyError::Denied(_)));
        assert!(map(ErrorKind::Transient).is_transient());
        assert!(matches!(
            map(ErrorKind::Configuration),
            RootKeyError::Backend(_)
        ));
    }
}
