//! Root key versions in the token: how they are named, ordered, listed and created.
//!
//! Every version is an AES-256 secret key object with the configured `CKA_LABEL` and its own
//! `CKA_ID`. Versions made by this plugin carry a 16-byte `CKA_ID`: the version number as 8
//! big-endian bytes, then 8 random bytes (so two hosts rotating at once never produce the same
//! id). The primary version is the one with the greatest `CKA_ID` in byte order, i.e. the highest
//! version number. The key id reported to kube-apiserver is `pkcs11:<key_label>:<hex CKA_ID>`.

use crate::root_key::KeyId;
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::Session;
use keystore::KeyStoreError;
use std::collections::BTreeMap;

/// Prefix of every key id of this backend.
const KEY_ID_PREFIX: &str = "pkcs11:";
/// Length of the `CKA_ID` of versions created by this plugin.
const GENERATED_ID_LEN: usize = 16;

/// One root key version found in the token.
#[derive(Clone, Debug)]
pub(super) struct KeyVersion {
    /// `CKA_ID` of the key object.
    pub id: Vec<u8>,
    /// Key id reported to kube-apiserver.
    pub key_id: KeyId,
    /// Handle of the key object in this process's sessions.
    pub handle: ObjectHandle,
}

/// All versions of one key label, ordered by `CKA_ID`; the last one is primary.
#[derive(Debug)]
pub(super) struct KeySet {
    versions: BTreeMap<Vec<u8>, KeyVersion>,
}

/// Formats the key id of version `id` of `label`.
pub(super) fn key_id_for(label: &str, id: &[u8]) -> Option<KeyId> {
    KeyId::new(&format!("{KEY_ID_PREFIX}{label}:{}", hex::encode(id)))
}

/// The `CKA_ID` inside `key_id`, if it names a version of `label`.
pub(super) fn parse_key_id(label: &str, key_id: &KeyId) -> Option<Vec<u8>> {
    let rest = key_id.as_str().strip_prefix(KEY_ID_PREFIX)?;
    let (found_label, hex_id) = rest.rsplit_once(':')?;
    if found_label != label || hex_id.is_empty() {
        return None;
    }
    hex::decode(hex_id).ok()
}

/// The version number a `CKA_ID` encodes (0 for ids this plugin did not create).
fn version_of(id: &[u8]) -> u64 {
    match id.get(..8).and_then(|b| <[u8; 8]>::try_from(b).ok()) {
        Some(bytes) if id.len() == GENERATED_ID_LEN => u64::from_be_bytes(bytes),
        _ => 0,
    }
}

impl KeySet {
    /// The version new local KEKs are wrapped under; `None` when the token holds none.
    pub(super) fn primary(&self) -> Option<&KeyVersion> {
        self.versions.values().next_back()
    }

    /// The version with this `CKA_ID`.
    pub(super) fn get(&self, id: &[u8]) -> Option<&KeyVersion> {
        self.versions.get(id)
    }

    /// The `CKA_ID` the next version gets: highest version number plus one, then 8 random bytes.
    fn next_id(&self) -> Result<Vec<u8>, KeyStoreError> {
        let next = self
            .versions
            .keys()
            .map(|id| version_of(id))
            .max()
            .unwrap_or(0)
            + 1;
        let mut id = vec![0u8; GENERATED_ID_LEN];
        id[..8].copy_from_slice(&next.to_be_bytes());
        getrandom::fill(&mut id[8..])
            .map_err(|e| KeyStoreError::configuration(format!("no randomness: {e}")))?;
        Ok(id)
    }
}

/// A root key object that is not protected the way a root key must be.
fn unprotected(reason: String) -> KeyStoreError {
    KeyStoreError::configuration(format!("root key {reason}"))
}

/// The token holds no root key labelled `label`.
pub(super) fn no_root_key(label: &str) -> KeyStoreError {
    KeyStoreError::not_found(format!(
        "no root key labelled {label:?} in the token; run `kms-plugin hsm init` first"
    ))
}

/// Lists the AES root key objects labelled `label`, refusing any that could leave the token.
pub(super) fn list(session: &Session, label: &str) -> Result<KeySet, KeyStoreError> {
    tracing::debug!(target: "kms_plugin::root_key::remote", backend = "pkcs11", op = "list", label, "remote call");
    let template = [
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(KeyType::AES),
        Attribute::Label(label.as_bytes().to_vec()),
    ];
    let wanted = [
        AttributeType::Id,
        AttributeType::Sensitive,
        AttributeType::Extractable,
        AttributeType::ValueLen,
    ];
    let mut versions = BTreeMap::new();
    for handle in session.find_objects(&template)? {
        let mut id = None;
        let (mut sensitive, mut extractable, mut len) = (false, true, 0usize);
        for attribute in session.get_attributes(handle, &wanted)? {
            match attribute {
                Attribute::Id(value) => id = Some(value),
                Attribute::Sensitive(value) => sensitive = value,
                Attribute::Extractable(value) => extractable = value,
                Attribute::ValueLen(value) => len = value.into(),
                _ => {}
            }
        }
        let id = id.filter(|id| !id.is_empty()).ok_or_else(|| {
            unprotected(format!(
                "object labelled {label:?} has no CKA_ID; give every version a distinct id"
            ))
        })?;
        let key_id = key_id_for(label, &id).ok_or_else(|| {
            unprotected(format!(
                "label {label:?} makes a key id longer than 1024 bytes"
            ))
        })?;
        if !sensitive || extractable {
            return Err(unprotected(format!(
                "{key_id} must be CKA_SENSITIVE=true and CKA_EXTRACTABLE=false"
            )));
        }
        if len != crate::secret::AES_KEY_LEN {
            return Err(unprotected(format!(
                "{key_id} is {len} bytes long, not 32 (AES-256)"
            )));
        }
        let version = KeyVersion {
            id: id.clone(),
            key_id: key_id.clone(),
            handle,
        };
        if versions.insert(id, version).is_some() {
            return Err(unprotected(format!("{key_id} exists twice in the token")));
        }
    }
    Ok(KeySet { versions })
}

/// Creates the next version of `label` in the token: AES-256, token object, private,
/// sensitive, never extractable, usable only to encrypt and decrypt. Returns its `CKA_ID`.
pub(super) fn generate(
    session: &Session,
    label: &str,
    current: &KeySet,
) -> Result<Vec<u8>, KeyStoreError> {
    let id = current.next_id()?;
    tracing::debug!(target: "kms_plugin::root_key::remote", backend = "pkcs11", op = "generate", label, "remote call");
    let template = [
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(KeyType::AES),
        Attribute::ValueLen((crate::secret::AES_KEY_LEN as u64).into()),
        Attribute::Token(true),
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
        Attribute::Encrypt(true),
        Attribute::Decrypt(true),
        Attribute::Wrap(false),
        Attribute::Unwrap(false),
        Attribute::Sign(false),
        Attribute::Verify(false),
        Attribute::Derive(false),
        Attribute::Label(label.as_bytes().to_vec()),
        Attribute::Id(id.clone()),
    ];
    session.generate_key(&Mechanism::AesKeyGen, &template)?;
    Ok(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_ids_round_trip_and_check_the_label() {
        let id = [0, 0, 0, 0, 0, 0, 0, 2, 9, 9, 9, 9, 9, 9, 9, 9];
        let key_id = key_id_for("root:a", &id).expect("short");
        assert_eq!(
            key_id.as_str(),
            "pkcs11:root:a:00000000000000020909090909090909"
        );
        assert_eq!(parse_key_id("root:a", &key_id), Some(id.to_vec()));
        assert_eq!(parse_key_id("root", &key_id), None);
        assert_eq!(
            parse_key_id("root:a", &KeyId::new("local:v1:00").expect("id")),
            None
        );
        assert_eq!(
            parse_key_id("root:a", &KeyId::new("pkcs11:root:a:zz").expect("id")),
            None
        );
    }

    #[test]
    fn versions_order_by_number_then_random_suffix() {
        let mut id = vec![0u8; 16];
        id[7] = 7;
        assert_eq!(version_of(&id), 7);
        assert_eq!(version_of(&[1, 2, 3]), 0, "foreign ids count as version 0");
        let set = KeySet {
            versions: BTreeMap::new(),
        };
        let first = set.next_id().expect("id");
        assert_eq!(version_of(&first), 1);
        assert!(set.primary().is_none());
    }
}
