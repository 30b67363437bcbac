//! The primary record: which root key version is primary, kept in the token beside the keys.
//!
//! A CKO_DATA object labelled like the keys, with `CKA_APPLICATION` [`APPLICATION`], holds the
//! primary version's `CKA_ID` as its value. Only `kms-plugin hsm init` and `kms-plugin rotate`
//! write it, so a key object that merely appears in the token never becomes primary. Every
//! plugin sharing the token reads the same record, as it reads the same keys.

use cryptoki::object::{Attribute, AttributeType, ObjectClass, ObjectHandle};
use cryptoki::session::Session;
use keystore::KeyStoreError;

/// `CKA_APPLICATION` of the record.
const APPLICATION: &[u8] = b"kms-plugin primary root key";

fn template(label: &str) -> [Attribute; 3] {
    [
        Attribute::Class(ObjectClass::DATA),
        Attribute::Label(label.as_bytes().to_vec()),
        Attribute::Application(APPLICATION.to_vec()),
    ]
}

/// Every record of `label` with its value.
fn all(session: &Session, label: &str) -> Result<Vec<(ObjectHandle, Vec<u8>)>, KeyStoreError> {
    let mut records = Vec::new();
    for handle in session.find_objects(&template(label))? {
        let value = session
            .get_attributes(handle, &[AttributeType::Value])?
            .into_iter()
            .find_map(|attribute| match attribute {
                Attribute::Value(value) => Some(value),
                _ => None,
            })
            .ok_or_else(|| {
                KeyStoreError::configuration(format!("a primary record for {label:?} has no value"))
            })?;
        records.push((handle, value));
    }
    Ok(records)
}

/// The `CKA_ID` recorded as primary for `label`, if a record exists. Of several records (a
/// rotation stopped between writing the new one and removing the old), the highest version
/// wins: ids start with the version number, big-endian.
pub(super) fn read(session: &Session, label: &str) -> Result<Option<Vec<u8>>, KeyStoreError> {
    Ok(all(session, label)?.into_iter().map(|(_, id)| id).max())
}

/// Records `id` as the primary version of `label`: a new private token object first, then the
/// older records are removed (tokens keep a data object's value read-only), so a crash in
/// between leaves both and [`read`] still picks the new one.
pub(super) fn write(session: &Session, label: &str, id: &[u8]) -> Result<(), KeyStoreError> {
    tracing::debug!(target: "kms_plugin::root_key::remote", backend = "pkcs11", op = "record", label, "remote call");
    let older = all(session, label)?;
    let mut attributes = template(label).to_vec();
    attributes.extend([
        Attribute::Token(true),
        Attribute::Private(true),
        Attribute::Value(id.to_vec()),
    ]);
    session.create_object(&attributes)?;
    for (handle, _) in older {
        session.destroy_object(handle)?;
    }
    Ok(())
}
