//! The envelope's wire format: what a sealed seed looks like in `ciphertext` and `annotations`.
//!
//! - `ciphertext` = 12-byte random nonce ‖ AES-256-GCM(local KEK, seed) with its 16-byte tag.
//! - annotation [`WRAPPED_KEK_ANNOTATION`] = the local KEK as wrapped by the root key.
//! - annotation [`FORMAT_ANNOTATION`] = [`FORMAT_V1`].
//! - additional authenticated data = [`AAD_LABEL`] ‖ format ‖ be32(len key_id) ‖ key_id ‖
//!   be32(len wrapped) ‖ wrapped, so neither the key id nor either annotation can be swapped.

use aes_gcm::aead::{Aead, AeadInPlace, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use std::collections::HashMap;
use zeroize::Zeroizing;

/// Annotation holding the wrapped local KEK.
pub const WRAPPED_KEK_ANNOTATION: &str = "kek.kms-plugin.dev";
/// Annotation holding the envelope format version.
pub const FORMAT_ANNOTATION: &str = "format.kms-plugin.dev";
/// The only format this version writes and reads.
pub const FORMAT_V1: &[u8] = b"1";
/// Domain separation label at the start of the additional authenticated data.
pub const AAD_LABEL: &[u8] = b"kms-plugin envelope\0";
/// Length of the random GCM nonce.
pub const NONCE_LEN: usize = 12;
/// Length of the GCM tag.
pub const TAG_LEN: usize = 16;
/// Most bytes kube-apiserver accepts in `ciphertext`.
pub const MAX_CIPHERTEXT_LEN: usize = 1024;
/// Largest plaintext whose ciphertext still fits kube-apiserver's limit.
pub const MAX_PLAINTEXT_LEN: usize = MAX_CIPHERTEXT_LEN - NONCE_LEN - TAG_LEN;
/// Most bytes kube-apiserver accepts across all annotation keys and values.
pub const MAX_ANNOTATIONS_LEN: usize = 32 * 1024;

/// Why an envelope could not be opened. Precise for logs, never sent on the wire.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum FormatError {
    /// The ciphertext is shorter than nonce plus tag plus one byte, or longer than 1024 bytes.
    #[error("ciphertext length {0} is outside {min}..={MAX_CIPHERTEXT_LEN}", min = NONCE_LEN + TAG_LEN + 1)]
    CiphertextLength(usize),
    /// An annotation this format requires is absent.
    #[error("annotation {0} is missing")]
    MissingAnnotation(&'static str),
    /// An annotation this format does not define is present (its key, escaped and truncated
    /// for logs by [`crate::log_text::untrusted`]).
    #[error("unexpected annotation \"{0}\"")]
    UnexpectedAnnotation(String),
    /// The format annotation names a version this build does not read (the value, escaped and
    /// truncated for logs).
    #[error("unsupported envelope format \"{0}\"")]
    UnsupportedFormat(String),
    /// The GCM tag did not verify: tampered ciphertext, annotations or key id, or the wrong KEK.
    #[error("ciphertext failed authentication")]
    Authentication,
}

/// The two annotations of a v1 envelope, borrowed from a request.
pub struct Annotations<'a> {
    /// The wrapped local KEK.
    pub wrapped_kek: &'a [u8],
}

/// Checks that `annotations` hold exactly the v1 set and returns the wrapped KEK.
pub fn parse_annotations(
    annotations: &HashMap<String, Vec<u8>>,
) -> Result<Annotations<'_>, FormatError> {
    if let Some(extra) = annotations
        .keys()
        .find(|k| k.as_str() != WRAPPED_KEK_ANNOTATION && k.as_str() != FORMAT_ANNOTATION)
    {
        return Err(FormatError::UnexpectedAnnotation(
            crate::log_text::untrusted(extra).into_owned(),
        ));
    }
    let format = annotations
        .get(FORMAT_ANNOTATION)
        .ok_or(FormatError::MissingAnnotation(FORMAT_ANNOTATION))?;
    if format.as_slice() != FORMAT_V1 {
        return Err(FormatError::UnsupportedFormat(
            crate::log_text::untrusted_bytes(format),
        ));
    }
    let wrapped_kek = annotations
        .get(WRAPPED_KEK_ANNOTATION)
        .ok_or(FormatError::MissingAnnotation(WRAPPED_KEK_ANNOTATION))?;
    Ok(Annotations { wrapped_kek })
}

/// The annotations of a v1 envelope for `wrapped_kek`.
pub fn build_annotations(wrapped_kek: &[u8]) -> HashMap<String, Vec<u8>> {
    HashMap::from([
        (WRAPPED_KEK_ANNOTATION.to_owned(), wrapped_kek.to_vec()),
        (FORMAT_ANNOTATION.to_owned(), FORMAT_V1.to_vec()),
    ])
}

/// The additional authenticated data binding format, key id and wrapped KEK.
pub fn aad(key_id: &str, wrapped_kek: &[u8]) -> Vec<u8> {
    let mut aad = Vec::with_capacity(
        AAD_LABEL.len() + FORMAT_V1.len() + 8 + key_id.len() + wrapped_kek.len(),
    );
    aad.extend_from_slice(AAD_LABEL);
    aad.extend_from_slice(FORMAT_V1);
    aad.extend_from_slice(&(key_id.len() as u32).to_be_bytes());
    aad.extend_from_slice(key_id.as_bytes());
    aad.extend_from_slice(&(wrapped_kek.len() as u32).to_be_bytes());
    aad.extend_from_slice(wrapped_kek);
    aad
}

/// Seals `plaintext` under `kek` with the given nonce. Callers pass a fresh random nonce.
pub fn seal(
    kek: &Aes256Gcm,
    nonce: &[u8; NONCE_LEN],
    key_id: &str,
    wrapped_kek: &[u8],
    plaintext: &[u8],
) -> Vec<u8> {
    let aad = aad(key_id, wrapped_kek);
    let sealed = match kek.encrypt(
        Nonce::from_slice(nonce),
        Payload {
            msg: plaintext,
            aad: &aad,
        },
    ) {
        Ok(sealed) => sealed,
        Err(_) => unreachable!("AES-GCM sealing fails only past 64 GiB"),
    };
    let mut out = Vec::with_capacity(NONCE_LEN + sealed.len());
    out.extend_from_slice(nonce);
    out.extend_from_slice(&sealed);
    out
}

/// Opens a ciphertext produced by [`seal`]. The seed is decrypted in place in one buffer that is
/// zeroized on drop, also when authentication fails (the buffer then holds the decryption of a
/// ciphertext that did not verify).
pub fn open(
    kek: &Aes256Gcm,
    key_id: &str,
    wrapped_kek: &[u8],
    ciphertext: &[u8],
) -> Result<Zeroizing<Vec<u8>>, FormatError> {
    if ciphertext.len() < NONCE_LEN + TAG_LEN + 1 || ciphertext.len() > MAX_CIPHERTEXT_LEN {
        return Err(FormatError::CiphertextLength(ciphertext.len()));
    }
    let (nonce, sealed) = ciphertext.split_at(NONCE_LEN);
    let aad = aad(key_id, wrapped_kek);
    let mut buffer = Zeroizing::new(sealed.to_vec());
    kek.decrypt_in_place(Nonce::from_slice(nonce), &aad, &mut *buffer)
        .map_err(|_| FormatError::Authentication)?;
    Ok(buffer)
}

#[cfg(test)]
mod tests {
    use super::*;
    use aes_gcm::KeyInit;

    /// A known-answer vector computed independently with Python's `cryptography` AESGCM:
    /// key = 00..1f, nonce = a0..ab, key_id = "local:v1:test", wrapped = "wrapped-kek",
    /// plaintext = 32 bytes of 0x42, aad as documented in this module.
    const KAT_CIPHERTEXT: &str = "a0a1a2a3a4a5a6a7a8a9aaaba45a3e6f078940fd2027c5914538829c32ee1b52d0f5002ede4c64c43de93743e5e4ce7101d5e683b204e6dddad9eecb";

    fn kat_inputs() -> (Aes256Gcm, [u8; NONCE_LEN]) {
        let key: Vec<u8> = (0u8..32).collect();
        let nonce: [u8; NONCE_LEN] = std::array::from_fn(|i| 0xa0 + i as u8);
        (Aes256Gcm::new_from_slice(&key).expect("32-byte key"), nonce)
    }

    #[test]
    fn known_answer() {
        let (kek, nonce) = kat_inputs();
        let sealed = seal(&kek, &nonce, "local:v1:test", b"wrapped-kek", &[0x42; 32]);
        assert_eq!(hex::encode(&sealed), KAT_CIPHERTEXT);
        let opened = open(&kek, "local:v1:test", b"wrapped-kek", &sealed).expect("opens");
        assert_eq!(*opened, vec![0x42; 32]);
    }

    #[test]
    fn aad_layout_is_stable() {
        let expected = [AAD_LABEL, b"1", &[0, 0, 0, 2], b"id", &[0, 0, 0, 3], b"wkk"].concat();
        assert_eq!(aad("id", b"wkk"), expected);
    }

    #[test]
    fn every_bit_flip_and_every_swap_fails() {
        let (kek, nonce) = kat_inputs();
        let sealed = seal(&kek, &nonce, "kid", b"wrapped", b"seed");
        for bit in 0..sealed.len() * 8 {
            let mut tampered = sealed.clone();
            tampered[bit / 8] ^= 1 << (bit % 8);
            assert_eq!(
                open(&kek, "kid", b"wrapped", &tampered),
                Err(FormatError::Authentication)
            );
        }
        assert!(open(&kek, "kie", b"wrapped", &sealed).is_err());
        assert!(open(&kek, "kid", b"wrappee", &sealed).is_err());
        assert_eq!(
            open(&kek, "kid", b"wrapped", &sealed[..20]),
            Err(FormatError::CiphertextLength(20))
        );
        assert_eq!(
            open(&kek, "kid", b"wrapped", &[]),
            Err(FormatError::CiphertextLength(0))
        );
    }

    #[test]
    fn annotations_must_be_exactly_the_v1_set() {
        let good = build_annotations(b"w");
        assert_eq!(parse_annotations(&good).expect("valid").wrapped_kek, b"w");
        let mut extra = good.clone();
        extra.insert("other.example.com".into(), vec![]);
        assert!(matches!(
            parse_annotations(&extra),
            Err(FormatError::UnexpectedAnnotation(_))
        ));
        let mut missing = good.clone();
        missing.remove(FORMAT_ANNOTATION);
        assert_eq!(
            parse_annotations(&missing).err(),
            Some(FormatError::MissingAnnotation(FORMAT_ANNOTATION))
        );
        let mut future = good;
        future.insert(FORMAT_ANNOTATION.into(), b"2".to_vec());
        assert!(matches!(
            parse_annotations(&future),
            Err(FormatError::UnsupportedFormat(_))
        ));
    }

    #[test]
    fn annotation_keys_are_fully_qualified_dns_names() {
        for key in [WRAPPED_KEK_ANNOTATION, FORMAT_ANNOTATION] {
            let labels: Vec<&str> = key.split('.').collect();
            assert!(labels.len() >= 2, "{key}");
            for label in labels {
                assert!(!label.is_empty() && label.len() <= 63, "{key}");
                assert!(
                    label
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                );
                assert!(!label.starts_with('-') && !label.ends_with('-'));
            }
        }
    }
}
