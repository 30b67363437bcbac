//! The few DER structures an ECDSA P-256 key store hands over or expects, encoded and parsed
//! here by hand (fixed shapes, so no ASN.1 library is needed):
//!
//! - the PKIX `SubjectPublicKeyInfo` of a P-256 point, which FetchKeys publishes;
//! - `CKA_EC_POINT` / `CKA_EC_PARAMS` as PKCS#11 tokens return them;
//! - the DER `ECDSA-Sig-Value` AWS KMS returns, converted to JWS `r || s`.
//!
//! Public so the fuzz targets (`fuzz/`) reach these parsers of key-store output.

// Each key store uses part of this; a build with only one of them leaves the rest unused.
#![cfg_attr(not(all(feature = "pkcs11", feature = "aws")), allow(dead_code))]

/// Width of one P-256 coordinate or signature half.
pub const P256_FIELD_LEN: usize = 32;
/// An uncompressed P-256 point: `0x04 || x || y`.
pub const P256_POINT_LEN: usize = 1 + 2 * P256_FIELD_LEN;

/// DER of the named curve prime256v1 (OID 1.2.840.10045.3.1.7), as in `CKA_EC_PARAMS`.
pub const P256_CURVE_OID: [u8; 10] = [0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];

/// Everything of a P-256 `SubjectPublicKeyInfo` before the point:
/// `SEQUENCE (89) { SEQUENCE (19) { OID id-ecPublicKey, OID prime256v1 }, BIT STRING (66) 0x00 ...`.
const P256_SPKI_PREFIX: [u8; 26] = [
    0x30, 0x59, // SEQUENCE, 89 bytes
    0x30, 0x13, // SEQUENCE, 19 bytes (AlgorithmIdentifier)
    0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02,
    0x01, // OID 1.2.840.10045.2.1 id-ecPublicKey
    0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, // OID prime256v1
    0x03, 0x42, 0x00, // BIT STRING, 66 bytes, no unused bits
];

/// The DER `SubjectPublicKeyInfo` of an uncompressed P-256 point.
pub fn p256_spki(point: &[u8]) -> Result<Vec<u8>, String> {
    if point.len() != P256_POINT_LEN || point[0] != 0x04 {
        return Err(format!(
            "expected an uncompressed P-256 point (65 bytes starting 0x04), got {} bytes",
            point.len()
        ));
    }
    Ok([P256_SPKI_PREFIX.as_slice(), point].concat())
}

/// The point inside `CKA_EC_POINT`: a DER OCTET STRING wrapping it (PKCS#11 v2.20 and later),
/// or, as a few older tokens return it, the bare point.
pub fn unwrap_ec_point(value: &[u8]) -> Result<&[u8], String> {
    match value {
        [0x04, len, point @ ..]
            if usize::from(*len) == point.len()
                && point.len() == P256_POINT_LEN
                && point[0] == 0x04 =>
        {
            Ok(point)
        }
        point if point.len() == P256_POINT_LEN && point[0] == 0x04 => Ok(point),
        _ => Err(format!(
            "CKA_EC_POINT is not an uncompressed P-256 point ({} bytes)",
            value.len()
        )),
    }
}

/// Reads one DER length at the start of `input`: short form, or long form of 1 or 2 bytes.
fn read_len(input: &[u8]) -> Result<(usize, &[u8]), String> {
    match input {
        [len, rest @ ..] if *len < 0x80 => Ok((usize::from(*len), rest)),
        [0x81, len, rest @ ..] if *len >= 0x80 => Ok((usize::from(*len), rest)),
        [0x82, hi, lo, rest @ ..] if *hi != 0 => {
            Ok((usize::from(*hi) << 8 | usize::from(*lo), rest))
        }
        _ => Err("bad DER length".into()),
    }
}

/// Reads one element with `tag`, returning its contents and what follows.
fn read_element(input: &[u8], tag: u8) -> Result<(&[u8], &[u8]), String> {
    let Some((&found, rest)) = input.split_first() else {
        return Err("truncated DER".into());
    };
    if found != tag {
        return Err(format!("expected DER tag {tag:#04x}, found {found:#04x}"));
    }
    let (len, rest) = read_len(rest)?;
    if rest.len() < len {
        return Err("truncated DER".into());
    }
    Ok(rest.split_at(len))
}

/// Writes a positive DER INTEGER's value into `out`, right-aligned with leading zeros.
fn put_unsigned(integer: &[u8], out: &mut [u8]) -> Result<(), String> {
    let magnitude = match integer {
        [] => return Err("empty INTEGER".into()),
        [first, ..] if first & 0x80 != 0 => return Err("negative INTEGER".into()),
        // One leading zero is allowed only to keep a high bit from reading as a sign.
        [0x00, second, ..] if second & 0x80 == 0 => return Err("non-minimal INTEGER".into()),
        [0x00, rest @ ..] => rest,
        all => all,
    };
    if magnitude.len() > out.len() {
        return Err(format!(
            "INTEGER of {} bytes does not fit {} bytes",
            magnitude.len(),
            out.len()
        ));
    }
    let start = out.len() - magnitude.len();
    out[..start].fill(0);
    out[start..].copy_from_slice(magnitude);
    Ok(())
}

/// Converts a DER `SEQUENCE { INTEGER r, INTEGER s }` to the fixed-width `r || s` of JWS, each
/// half `half` bytes (32 for ES256). Refuses trailing bytes, negative or non-minimal integers and
/// values wider than `half`.
pub fn ecdsa_der_to_fixed(der: &[u8], half: usize) -> Result<Vec<u8>, String> {
    let (body, trailing) = read_element(der, 0x30)?;
    if !trailing.is_empty() {
        return Err("bytes after the signature SEQUENCE".into());
    }
    let (r, rest) = read_element(body, 0x02)?;
    let (s, rest) = read_element(rest, 0x02)?;
    if !rest.is_empty() {
        return Err("bytes after s in the signature SEQUENCE".into());
    }
    let mut out = vec![0u8; 2 * half];
    let (r_out, s_out) = out.split_at_mut(half);
    put_unsigned(r, r_out).map_err(|e| format!("r: {e}"))?;
    put_unsigned(s, s_out).map_err(|e| format!("s: {e}"))?;
    if r_out.iter().all(|&b| b == 0) || s_out.iter().all(|&b| b == 0) {
        return Err("zero r or s".into());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_lc_rs::encoding::AsDer;
    use aws_lc_rs::rand::SystemRandom;
    use aws_lc_rs::signature::{self, EcdsaKeyPair, KeyPair};

    fn der_sig(r: &[u8], s: &[u8]) -> Vec<u8> {
        let mut body = vec![0x02, r.len() as u8];
        body.extend_from_slice(r);
        body.extend_from_slice(&[0x02, s.len() as u8]);
        body.extend_from_slice(s);
        let mut out = vec![0x30, body.len() as u8];
        out.extend(body);
        out
    }

    #[test]
    fn spki_matches_aws_lc_for_random_keys() {
        let rng = SystemRandom::new();
        for _ in 0..8 {
            let pkcs8 =
                EcdsaKeyPair::generate_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
                    .expect("key");
            let pair = EcdsaKeyPair::from_pkcs8(
                &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
                pkcs8.as_ref(),
            )
            .expect("parse");
            let point = pair.public_key().as_ref().to_vec();
            let expected = pair.public_key().as_der().expect("der");
            assert_eq!(p256_spki(&point).expect("spki"), expected.as_ref());
            let wrapped = [&[0x04, 0x41][..], &point].concat();
            assert_eq!(
                unwrap_ec_point(&wrapped).expect("octet string"),
                point.as_slice()
            );
            assert_eq!(unwrap_ec_point(&point).expect("bare"), point.as_slice());
        }
    }

    #[test]
    fn spki_refuses_other_shapes() {
        assert!(p256_spki(&[0x04; 33]).is_err(), "compressed size");
        let mut point = vec![0x04; P256_POINT_LEN];
        point[0] = 0x02;
        assert!(p256_spki(&point).is_err(), "not uncompressed");
        assert!(unwrap_ec_point(&[0x04, 0x41, 0x04]).is_err(), "truncated");
        assert!(unwrap_ec_point(&[0x04, 0x61, 0x04]).is_err());
    }

    #[test]
    fn full_width_integers_with_sign_padding() {
        let r = [&[0x00][..], &[0x80; 32]].concat();
        let s = [&[0x00][..], &[0xff; 32]].concat();
        let fixed = ecdsa_der_to_fixed(&der_sig(&r, &s), 32).expect("convert");
        assert_eq!(&fixed[..32], &[0x80; 32]);
        assert_eq!(&fixed[32..], &[0xff; 32]);
    }

    #[test]
    fn short_integers_are_left_padded() {
        let r = [0x01, 0x02];
        let s = [0x7f; 31];
        let fixed = ecdsa_der_to_fixed(&der_sig(&r, &s), 32).expect("convert");
        assert_eq!(fixed.len(), 64);
        assert_eq!(&fixed[..30], &[0u8; 30]);
        assert_eq!(&fixed[30..32], &r);
        assert_eq!(fixed[32], 0);
        assert_eq!(&fixed[33..], &s);
    }

    #[test]
    fn malformed_signatures_are_refused() {
        let ok = [0x11; 32];
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("empty", vec![]),
            ("not a sequence", vec![0x31, 0x00]),
            ("negative r", der_sig(&[0x80; 32], &ok)),
            ("non-minimal r", der_sig(&[0x00, 0x11], &ok)),
            ("r too wide", der_sig(&[0x11; 33], &ok)),
            (
                "r too wide with sign byte",
                der_sig(&[&[0x00][..], &[0x80; 33]].concat(), &ok),
            ),
            ("zero s", der_sig(&ok, &[0x00])),
            ("empty s", der_sig(&ok, &[])),
            ("trailing bytes", [der_sig(&ok, &ok), vec![0x00]].concat()),
            ("truncated", der_sig(&ok, &ok)[..40].to_vec()),
        ];
        for (what, der) in cases {
            assert!(ecdsa_der_to_fixed(&der, 32).is_err(), "{what} accepted");
        }
        let mut extra = der_sig(&ok, &ok);
        extra[1] += 3;
        extra.extend_from_slice(&[0x02, 0x01, 0x01]);
        assert!(
            ecdsa_der_to_fixed(&extra, 32).is_err(),
            "a third INTEGER accepted"
        );
    }

    #[test]
    fn aws_lc_der_signatures_convert_to_verifying_fixed_ones() {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&signature::ECDSA_P256_SHA256_ASN1_SIGNING, &rng)
            .expect("key");
        let pair =
            EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8.as_ref())
                .expect("parse");
        let public = signature::UnparsedPublicKey::new(
            &signature::ECDSA_P256_SHA256_FIXED,
            pair.public_key().as_ref().to_vec(),
        );
        // Enough signatures that some r or s are shorter than 32 bytes or need a sign byte.
        for i in 0..200u32 {
            let message = i.to_be_bytes();
            let der = pair.sign(&rng, &message).expect("sign");
            let fixed = ecdsa_der_to_fixed(der.as_ref(), 32).expect("convert");
            public
                .verify(&message, &fixed)
                .expect("fixed signature verifies");
        }
    }
}
