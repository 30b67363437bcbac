//! The envelope's `ciphertext` and `annotations` as kube-apiserver would hand them to Decrypt:
//! `parse_annotations` then `open` under a fixed KEK. Input: u16 BE ciphertext length, the
//! ciphertext, then annotations as `key \0 value \0` pairs.
#![no_main]

use aes_gcm::{Aes256Gcm, KeyInit};
use kms_plugin::envelope::format::{self, FormatError};
use libfuzzer_sys::fuzz_target;
use std::collections::HashMap;

fuzz_target!(|data: &[u8]| {
    let [hi, lo, rest @ ..] = data else { return };
    let len = usize::from(u16::from_be_bytes([*hi, *lo])).min(rest.len());
    let (ciphertext, mut tail) = rest.split_at(len);
    let mut annotations = HashMap::new();
    while !tail.is_empty() {
        let mut parts = tail.splitn(3, |&b| b == 0);
        let key = parts.next().unwrap_or_default();
        let value = parts.next().unwrap_or_default();
        tail = parts.next().unwrap_or_default();
        annotations.insert(String::from_utf8_lossy(key).into_owned(), value.to_vec());
    }
    let Ok(parsed) = format::parse_annotations(&annotations) else {
        return;
    };
    let kek = Aes256Gcm::new(&aes_gcm::Key::<Aes256Gcm>::from([7u8; 32]));
    match format::open(&kek, "fuzz-key", parsed.wrapped_kek, ciphertext) {
        Ok(plain) => {
            // Only what `seal` made opens: seal it again with the same nonce and compare.
            let nonce: [u8; format::NONCE_LEN] =
                ciphertext[..format::NONCE_LEN].try_into().expect("nonce");
            let again = format::seal(&kek, &nonce, "fuzz-key", parsed.wrapped_kek, &plain);
            assert_eq!(again, ciphertext);
        }
        Err(FormatError::CiphertextLength(n)) => assert_eq!(n, ciphertext.len()),
        Err(_) => {}
    }
});
