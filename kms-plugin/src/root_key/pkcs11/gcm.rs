//! Wrapping a local KEK inside the token: CKM_AES_GCM with our own random IV and an AAD that
//! binds the root key id. Wrapped form: `IV (12) || ciphertext (32) || tag (16)`.
//!
//! Some HSMs (FIPS mode) ignore the caller's IV, generate their own and write it back into the
//! mechanism parameters; the IV stored is the one found there after C_Encrypt, so such a token
//! can open what it sealed.

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
    let params = GcmParams::new(&mut iv, &aad, ((TAG_LEN * 8) as u64).into())?;
    let mut mechanism = Mechanism::AesGcm(params);
    remote_call("wrap", key_id);
    let sealed = session.encrypt(&mechanism, handle, key.expose())?;
    // The IV the token used: ours, or one it generated and wrote into the parameters.
    let Mechanism::AesGcm(params) = &mut mechanism else {
        return Err(KeyStoreError::configuration("AES-GCM parameters lost"));
    };
    let used_iv: [u8; IV_LEN] = params
        .iv()
        .try_into()
        .map_err(|_| KeyStoreError::configuration("the token changed the AES-GCM IV length"))?;
    if sealed.len() != AES_KEY_LEN + TAG_LEN {
        return Err(KeyStoreError::configuration(format!(
            "C_Encrypt returned {} bytes, expected {}",
            sealed.len(),
            AES_KEY_LEN + TAG_LEN
        )));
    }
    Ok([used_iv.as_slice(), &sealed].concat())
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
