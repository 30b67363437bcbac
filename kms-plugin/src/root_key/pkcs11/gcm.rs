//! Wrapping a local KEK inside the token: CKM_AES_GCM with our own random IV and an AAD that
//! binds the root key id. Wrapped form: `IV (12) || ciphertext (32) || tag (16)`.

use crate::root_key::KeyId;
use crate::secret::{AES_KEY_LEN, AesKey};
use cryptoki::mechanism::Mechanism;
use cryptoki::mechanism::aead::GcmParams;
use cryptoki::object::ObjectHandle;
use cryptoki::session::Session;
use keystore::KeyStoreError;
use keystore::pkcs11::decrypt_error;
use zeroize::Zeroizing;

const IV_LEN: usize = 12;
const TAG_LEN: usize = 16;
/// Length of every wrapped local KEK.
pub(super) const WRAPPED_LEN: usize = IV_LEN + AES_KEY_LEN + TAG_LEN;
const AAD_PREFIX: &[u8] = b"kms-plugin pkcs11 root wrap v1\0";

fn aad(key_id: &KeyId) -> Vec<u8> {
    [AAD_PREFIX, key_id.as_str().as_bytes()].concat()
}

fn remote_call(op: &'static str, key_id: &KeyId) {
    tracing::debug!(target: "kms_plugin::root_key::remote", backend = "pkcs11", op, key_id = %key_id, "remote call");
}

/// Encrypts `key` under the token key `handle` (C_Encrypt).
pub(super) fn seal(
    session: &Session,
    handle: ObjectHandle,
    key_id: &KeyId,
    key: &AesKey,
) -> Result<Vec<u8>, KeyStoreError> {
    let mut iv = [0u8; IV_LEN];
    getrandom::fill(&mut iv)
        .map_err(|e| KeyStoreError::configuration(format!("no randomness: {e}")))?;
    let aad = aad(key_id);
    let mut params_iv = iv;
    let params = GcmParams::new(&mut params_iv, &aad, ((TAG_LEN * 8) as u64).into())?;
    remote_call("wrap", key_id);
    let sealed = session.encrypt(&Mechanism::AesGcm(params), handle, key.expose())?;
    if sealed.len() != AES_KEY_LEN + TAG_LEN {
        return Err(KeyStoreError::configuration(format!(
            "C_Encrypt returned {} bytes, expected {}",
            sealed.len(),
            AES_KEY_LEN + TAG_LEN
        )));
    }
    Ok([iv.as_slice(), &sealed].concat())
}

/// Decrypts a wrapped KEK with the token key `handle` (C_Decrypt). `Ok(None)` when `wrapped` has
/// the wrong shape, before any token call.
pub(super) fn open(
    session: &Session,
    handle: ObjectHandle,
    key_id: &KeyId,
    wrapped: &[u8],
) -> Result<Option<AesKey>, KeyStoreError> {
    if wrapped.len() != WRAPPED_LEN {
        return Ok(None);
    }
    let (iv, sealed) = wrapped.split_at(IV_LEN);
    let mut iv: [u8; IV_LEN] = match iv.try_into() {
        Ok(iv) => iv,
        Err(_) => return Ok(None),
    };
    let aad = aad(key_id);
    let params = GcmParams::new(&mut iv, &aad, ((TAG_LEN * 8) as u64).into())?;
    remote_call("unwrap", key_id);
    let opened = Zeroizing::new(
        session
            .decrypt(&Mechanism::AesGcm(params), handle, sealed)
            .map_err(decrypt_error)?,
    );
    Ok(AesKey::from_slice(&opened))
}
