//! Root key versions in the token: how they are named, checked, listed and created.
//!
//! Every version is an AES-256 secret key object with the configured `CKA_LABEL` and its own
//! `CKA_ID`. Versions made by this plugin carry a 16-byte `CKA_ID`: the version number as 8
//! big-endian bytes, then 8 random bytes (so two hosts rotating at once never produce the same
//! id). The key id reported to kube-apiserver is `pkcs11:<key_label>:<hex CKA_ID>`.
//!
//! A key object is used only when the token generated it and it never could leave
//! (`CKA_LOCAL`, `CKA_NEVER_EXTRACTABLE`, `CKA_SENSITIVE`), it is AES-256 and its id has the
//! format above; any other object with the label (say one made with `C_CreateObject` from a
//! known value) is left alone and named in a warning. Which version is primary is what the
//! primary record says ([`super::record`]); a token without one (set up by an earlier release)
//! falls back to the highest version until `kms-plugin hsm init` records it.

use super::record;
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

/// The usable versions of one key label, ordered by `CKA_ID`, and the primary record.
#[derive(Debug)]
pub(super) struct KeySet {
    versions: BTreeMap<Vec<u8>, KeyVersion>,
    /// The `CKA_ID` the primary record names, if the token has a record.
    pub recorded: Option<Vec<u8>>,
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
    /// The version new local KEKs are wrapped under: the recorded one, or without a record the
    /// highest. `None` when the token holds no usable version, or not the recorded one.
    pub(super) fn primary(&self) -> Option<&KeyVersion> {
        match &self.recorded {
            Some(id) => self.versions.get(id),
            None => self.versions.values().next_back(),
        }
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

/// The token holds no root key labelled `label`.
pub(super) fn no_root_key(label: &str) -> KeyStoreError {
    KeyStoreError::not_found(format!(
        "no root key labelled {label:?} in the token; run `kms-plugin hsm init` first"
    ))
}

/// The primary record names a version the token does not hold as a usable root key.
pub(super) fn recorded_missing(label: &str, id: &[u8]) -> KeyStoreError {
    KeyStoreError::not_found(format!(
        "the token's primary record for {label:?} names version {}, which the token does not \
         hold as a usable root key; restore that key (or the token), never a new one in its place",
        hex::encode(id)
    ))
}

/// What the token says about one key object.
#[derive(Clone, Copy, Default)]
struct Protection {
    local: bool,
    never_extractable: bool,
    sensitive: bool,
    extractable: bool,
    len: usize,
}

/// Why an object labelled like the root key is not used as one, if it is not.
fn unusable(id: &[u8], p: &Protection) -> Option<&'static str> {
    if version_of(id) == 0 {
        Some("its CKA_ID is not one this plugin makes (16 bytes: version, then random)")
    } else if !p.local || !p.never_extractable {
        Some(
            "the token did not generate it, or it was once extractable (CKA_LOCAL and CKA_NEVER_EXTRACTABLE must be true)",
        )
    } else if !p.sensitive || p.extractable {
        Some("it is not CKA_SENSITIVE=true and CKA_EXTRACTABLE=false")
    } else if p.len != crate::secret::AES_KEY_LEN {
        Some("it is not an AES-256 key")
    } else {
        None
    }
}

/// Lists the usable root key versions labelled `label` and the primary record. Objects with the
/// label that do not qualify as root keys are skipped, each named in a warning.
pub(super) fn list(session: &Session, label: &str) -> Result<KeySet, KeyStoreError> {
    tracing::debug!(target: "kms_plugin::root_key::remote", backend = "pkcs11", op = "list", label, "remote call");
    let template = [
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::Label(label.as_bytes().to_vec()),
    ];
    let wanted = [
        AttributeType::Id,
        AttributeType::KeyType,
        AttributeType::Local,
        AttributeType::NeverExtractable,
        AttributeType::Sensitive,
        AttributeType::Extractable,
        AttributeType::ValueLen,
    ];
    let mut versions = BTreeMap::new();
    for handle in session.find_objects(&template)? {
        let mut id = Vec::new();
        let mut aes = false;
        let mut protection = Protection::default();
        for attribute in session.get_attributes(handle, &wanted)? {
            match attribute {
                Attribute::Id(value) => id = value,
                Attribute::KeyType(kind) => aes = kind == KeyType::AES,
                Attribute::Local(value) => protection.local = value,
                Attribute::NeverExtractable(value) => protection.never_extractable = value,
                Attribute::Sensitive(value) => protection.sensitive = value,
                Attribute::Extractable(value) => protection.extractable = value,
                Attribute::ValueLen(value) => protection.len = value.into(),
                _ => {}
            }
        }
        let reason = if aes {
            unusable(&id, &protection)
        } else {
            Some("it is not an AES key")
        };
        if let Some(reason) = reason {
            tracing::warn!(
                label,
                cka_id = %hex::encode(&id),
                "ignoring a key object labelled like the root key: {reason}; remove it from the token"
            );
            continue;
        }
        let key_id = key_id_for(label, &id).ok_or_else(|| {
            KeyStoreError::configuration(format!(
                "label {label:?} makes a key id longer than 1024 bytes"
            ))
        })?;
        let version = KeyVersion {
            id: id.clone(),
            key_id: key_id.clone(),
            handle,
        };
        if versions.insert(id, version).is_some() {
            return Err(KeyStoreError::configuration(format!(
                "root key {key_id} exists twice in the token"
            )));
        }
    }
    let recorded = record::read(session, label)?;
    Ok(KeySet { versions, recorded })
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
    fn only_aes_256_keys_the_token_generated_in_our_id_format_qualify() {
        let mut ours = vec![0u8; 16];
        ours[7] = 1;
        let good = Protection {
            local: true,
            never_extractable: true,
            sensitive: true,
            extractable: false,
            len: 32,
        };
        assert_eq!(unusable(&ours, &good), None);
        for foreign in [&[1u8][..], &[0u8; 16], &[9u8; 17]] {
            assert!(unusable(foreign, &good).is_some(), "{foreign:?}");
        }
        let imported = Protection {
            local: false,
            ..good
        };
        let once_extractable = Protection {
            never_extractable: false,
            ..good
        };
        let readable = Protection {
            sensitive: false,
            ..good
        };
        let short = Protection { len: 16, ..good };
        for protection in [imported, once_extractable, readable, short] {
            assert!(unusable(&ours, &protection).is_some());
        }
    }

    #[test]
    fn versions_order_by_number_then_random_suffix() {
        let mut id = vec![0u8; 16];
        id[7] = 7;
        assert_eq!(version_of(&id), 7);
        assert_eq!(version_of(&[1, 2, 3]), 0, "foreign ids count as version 0");
        let set = KeySet {
            versions: BTreeMap::new(),
            recorded: None,
        };
        let first = set.next_id().expect("id");
        assert_eq!(version_of(&first), 1);
        assert!(set.primary().is_none());
    }
}
