//! Subjects with more than two O values. rcgen keys subject attributes by type, so it can write
//! at most two O values (one as a custom attribute); a Kubernetes client certificate may carry
//! any number of groups. For those, the certificate is issued with a placeholder subject, then
//! its subject is replaced by the full name and the to-be-signed part is signed again by the
//! same CA key with the same algorithm. Only DER framing is touched here; the signature is
//! checked by the caller ([`crate::issue::issue`] verifies the chain of what it returns).

use rcgen::SigningKey;

use crate::error::{Error, Result};
use crate::key::PrivateKey;

const SEQUENCE: u8 = 0x30;
const SET: u8 = 0x31;
const OID: u8 = 0x06;
const UTF8_STRING: u8 = 0x0c;
const BIT_STRING: u8 = 0x03;
const VERSION_TAG: u8 = 0xa0;
/// OID 2.5.4.10 (organizationName), content bytes.
const OID_O: &[u8] = &[0x55, 0x04, 0x0a];
/// OID 2.5.4.3 (commonName), content bytes.
const OID_CN: &[u8] = &[0x55, 0x04, 0x03];

/// DER of one TLV with a definite length.
fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let n = content.len();
    if n < 0x80 {
        out.push(n as u8);
    } else {
        let bytes: Vec<u8> = n
            .to_be_bytes()
            .iter()
            .copied()
            .skip_while(|b| *b == 0)
            .collect();
        out.push(0x80 | bytes.len() as u8);
        out.extend(bytes);
    }
    out.extend_from_slice(content);
    out
}

/// The first element of a DER buffer and what follows it.
struct Tlv<'a> {
    tag: u8,
    content: &'a [u8],
    whole: &'a [u8],
    rest: &'a [u8],
}

/// Splits `buf` into its first TLV and the rest.
fn next_tlv(buf: &[u8]) -> Result<Tlv<'_>> {
    let bad = || Error::Crypto("malformed DER in an issued certificate".to_owned());
    let tag = *buf.first().ok_or_else(bad)?;
    let first = *buf.get(1).ok_or_else(bad)?;
    let (len, header) = if first < 0x80 {
        (usize::from(first), 2)
    } else {
        let count = usize::from(first & 0x7f);
        if count == 0 || count > 4 {
            return Err(bad());
        }
        let bytes = buf.get(2..2 + count).ok_or_else(bad)?;
        let len = bytes
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        (len, 2 + count)
    };
    let end = header.checked_add(len).ok_or_else(bad)?;
    let whole = buf.get(..end).ok_or_else(bad)?;
    Ok(Tlv {
        tag,
        content: &whole[header..],
        whole,
        rest: &buf[end..],
    })
}

/// The DER Name `O=<orgs[0]>, O=<orgs[1]>, …, CN=<cn>` (Go's order, as kubeadm writes), each
/// attribute in its own RDN as UTF8String.
pub(crate) fn name_der(orgs: &[String], cn: &str) -> Vec<u8> {
    let attr = |oid: &[u8], value: &str| {
        let pair = [tlv(OID, oid), tlv(UTF8_STRING, value.as_bytes())].concat();
        tlv(SET, &tlv(SEQUENCE, &pair))
    };
    let mut rdns: Vec<u8> = orgs.iter().flat_map(|o| attr(OID_O, o)).collect();
    if !cn.is_empty() {
        rdns.extend(attr(OID_CN, cn));
    }
    tlv(SEQUENCE, &rdns)
}

/// `cert_der` with its subject replaced by `subject` (a DER Name), re-signed by `ca_key` (the key
/// that signed `cert_der`, so the signature algorithm stays what it declares).
pub(crate) fn replace_subject(
    cert_der: &[u8],
    subject: &[u8],
    ca_key: &PrivateKey,
) -> Result<Vec<u8>> {
    let cert = next_tlv(cert_der)?.content;
    let tbs = next_tlv(cert)?;
    let sig_alg = next_tlv(tbs.rest)?.whole;
    let mut fields = Vec::new();
    let mut rest = tbs.content;
    while !rest.is_empty() {
        let t = next_tlv(rest)?;
        fields.push((t.tag, t.whole));
        rest = t.rest;
    }
    // version?, serial, signature, issuer, validity, subject, ...
    let subject_at = if fields.first().map(|f| f.0) == Some(VERSION_TAG) {
        5
    } else {
        4
    };
    if fields.len() <= subject_at {
        return Err(Error::Crypto(
            "issued certificate has no subject field".to_owned(),
        ));
    }
    let body: Vec<u8> = fields
        .iter()
        .enumerate()
        .flat_map(|(i, (_, whole))| if i == subject_at { subject } else { whole })
        .copied()
        .collect();
    let new_tbs = tlv(SEQUENCE, &body);
    let signature = ca_key.pair().sign(&new_tbs).map_err(Error::crypto)?;
    let bits = [&[0u8][..], &signature].concat();
    Ok(tlv(
        SEQUENCE,
        &[new_tbs, sig_alg.to_vec(), tlv(BIT_STRING, &bits)].concat(),
    ))
}
