//! The hand-written DER of `jwt::der`: `CKA_EC_POINT` unwrapping, SPKI building and the
//! ECDSA-Sig-Value to JWS conversion, with round-trip checks on what they accept.
#![no_main]

use kms_plugin::jwt::der;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(point) = der::unwrap_ec_point(data) {
        assert_eq!(point.len(), der::P256_POINT_LEN);
        let spki = der::p256_spki(point).expect("an unwrapped point makes an SPKI");
        assert!(spki.ends_with(point));
    }
    if let Ok(fixed) = der::ecdsa_der_to_fixed(data, der::P256_FIELD_LEN) {
        assert_eq!(fixed.len(), 2 * der::P256_FIELD_LEN);
        // Re-encode r and s minimally: the accepted DER is the only encoding of that pair.
        let mut body = Vec::new();
        for half in fixed.chunks(der::P256_FIELD_LEN) {
            let start = half.iter().position(|&b| b != 0).expect("nonzero");
            let mut int = half[start..].to_vec();
            if int[0] & 0x80 != 0 {
                int.insert(0, 0);
            }
            body.push(0x02);
            body.push(int.len() as u8);
            body.extend(int);
        }
        let mut der_again = vec![0x30, body.len() as u8];
        der_again.extend(body);
        assert_eq!(der_again, data, "DER signatures have one encoding");
    }
});
