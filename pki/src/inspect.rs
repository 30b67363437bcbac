//! Reading certificates: PEM/DER parsing, an owned summary of what matters to the kubeadm
//! profiles, signature and key-match checks.

use std::net::IpAddr;
use std::path::Path;

use time::OffsetDateTime;
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::error::{Error, Result};
use crate::key::PrivateKey;

/// A parsed certificate: its DER bytes and an owned summary of its fields.
#[derive(Debug, Clone)]
pub struct Cert {
    der: Vec<u8>,
    info: CertInfo,
}

/// The fields of a certificate the kubeadm profiles care about.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct CertInfo {
    /// Subject common name (empty when absent).
    pub common_name: String,
    /// Subject organizations, in order.
    pub organizations: Vec<String>,
    /// DNS subject alternative names.
    pub dns_names: Vec<String>,
    /// IP subject alternative names.
    pub ip_addresses: Vec<IpAddr>,
    /// Number of SANs of other kinds (email, URI, ...).
    pub other_sans: usize,
    /// basicConstraints cA flag.
    pub is_ca: bool,
    /// keyUsage digitalSignature.
    pub digital_signature: bool,
    /// keyUsage keyEncipherment.
    pub key_encipherment: bool,
    /// keyUsage keyCertSign.
    pub key_cert_sign: bool,
    /// extendedKeyUsage serverAuth.
    pub server_auth: bool,
    /// extendedKeyUsage clientAuth.
    pub client_auth: bool,
    /// Start of validity.
    pub not_before: OffsetDateTime,
    /// End of validity.
    pub not_after: OffsetDateTime,
    /// DER SubjectPublicKeyInfo.
    pub spki_der: Vec<u8>,
    /// Subject Key Identifier, when present.
    pub subject_key_id: Option<Vec<u8>>,
    /// Authority Key Identifier (keyIdentifier field), when present.
    pub authority_key_id: Option<Vec<u8>>,
    /// DER of the subject name.
    pub subject_der: Vec<u8>,
    /// DER of the issuer name.
    pub issuer_der: Vec<u8>,
}

impl Cert {
    /// Parses the first `CERTIFICATE` block of a PEM text.
    pub fn from_pem(pem: &str, origin: &Path) -> Result<Cert> {
        parse_bundle(pem, origin)?
            .into_iter()
            .next()
            .ok_or_else(|| Error::parse(origin, "no CERTIFICATE block"))
    }

    /// Parses a DER certificate.
    pub fn from_der(der: Vec<u8>, origin: &Path) -> Result<Cert> {
        let info = {
            let (rest, x509) =
                X509Certificate::from_der(&der).map_err(|e| Error::parse(origin, e))?;
            if !rest.is_empty() {
                return Err(Error::parse(origin, "trailing bytes after certificate"));
            }
            summarize(&x509)
        };
        Ok(Cert { der, info })
    }

    /// The DER encoding.
    pub fn der(&self) -> &[u8] {
        &self.der
    }

    /// The PEM encoding (one `CERTIFICATE` block).
    pub fn pem(&self) -> String {
        pem_encode("CERTIFICATE", &self.der)
    }

    /// The summary of the fields.
    pub fn info(&self) -> &CertInfo {
        &self.info
    }

    /// True when `issuer`'s subject is this certificate's issuer and `issuer`'s key verifies
    /// this certificate's signature.
    pub fn is_signed_by(&self, issuer: &Cert) -> bool {
        if self.info.issuer_der != issuer.info.subject_der {
            return false;
        }
        let (Ok((_, me)), Ok((_, them))) = (
            X509Certificate::from_der(&self.der),
            X509Certificate::from_der(&issuer.der),
        ) else {
            return false;
        };
        me.verify_signature(Some(them.public_key())).is_ok()
    }

    /// True when `key` is the private half of this certificate's public key.
    pub fn matches_key(&self, key: &PrivateKey) -> bool {
        same_public_key(&self.info.spki_der, &key.public_key_der())
    }
}

/// Compares two DER SubjectPublicKeyInfos by algorithm and key bits.
pub fn same_public_key(a: &[u8], b: &[u8]) -> bool {
    use x509_parser::x509::SubjectPublicKeyInfo;
    match (
        SubjectPublicKeyInfo::from_der(a),
        SubjectPublicKeyInfo::from_der(b),
    ) {
        (Ok((_, a)), Ok((_, b))) => {
            a.algorithm.algorithm == b.algorithm.algorithm
                && a.subject_public_key.data == b.subject_public_key.data
        }
        _ => false,
    }
}

/// Parses every `CERTIFICATE` block of a PEM text (a bundle); other block types are ignored.
pub fn parse_bundle(pem: &str, origin: &Path) -> Result<Vec<Cert>> {
    let blocks = pem::parse_many(pem).map_err(|e| Error::parse(origin, e))?;
    blocks
        .into_iter()
        .filter(|block| block.tag() == "CERTIFICATE")
        .map(|block| Cert::from_der(block.into_contents(), origin))
        .collect()
}

/// Writes `der` as a PEM block with the given label (64-column base64, `\n` line endings).
pub fn pem_encode(label: &str, der: &[u8]) -> String {
    pem::encode_config(&pem::Pem::new(label, der), pem_lf())
}

/// The encoding kubeadm writes: 64-column base64 and `\n` line endings.
pub(crate) fn pem_lf() -> pem::EncodeConfig {
    pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF)
}

/// Concatenates certificates into one PEM bundle (e.g. old+new CA during a rotation).
pub fn pem_bundle(certs: &[Cert]) -> String {
    certs.iter().map(Cert::pem).collect()
}

fn summarize(x: &X509Certificate<'_>) -> CertInfo {
    let subject = x.subject();
    let mut info = CertInfo {
        common_name: subject
            .iter_common_name()
            .next()
            .and_then(|a| a.as_str().ok())
            .unwrap_or_default()
            .to_owned(),
        organizations: subject
            .iter_organization()
            .filter_map(|a| a.as_str().ok().map(str::to_owned))
            .collect(),
        dns_names: Vec::new(),
        ip_addresses: Vec::new(),
        other_sans: 0,
        is_ca: x.is_ca(),
        digital_signature: false,
        key_encipherment: false,
        key_cert_sign: false,
        server_auth: false,
        client_auth: false,
        not_before: x.validity().not_before.to_datetime(),
        not_after: x.validity().not_after.to_datetime(),
        spki_der: x.public_key().raw.to_vec(),
        subject_key_id: None,
        authority_key_id: None,
        subject_der: subject.as_raw().to_vec(),
        issuer_der: x.issuer().as_raw().to_vec(),
    };
    for ext in x.extensions() {
        match ext.parsed_extension() {
            ParsedExtension::SubjectAlternativeName(san) => {
                for name in &san.general_names {
                    match name {
                        GeneralName::DNSName(d) => info.dns_names.push((*d).to_owned()),
                        GeneralName::IPAddress(bytes) => match ip_from_bytes(bytes) {
                            Some(ip) => info.ip_addresses.push(ip),
                            None => info.other_sans += 1,
                        },
                        _ => info.other_sans += 1,
                    }
                }
            }
            ParsedExtension::KeyUsage(ku) => {
                info.digital_signature = ku.digital_signature();
                info.key_encipherment = ku.key_encipherment();
                info.key_cert_sign = ku.key_cert_sign();
            }
            ParsedExtension::ExtendedKeyUsage(eku) => {
                info.server_auth = eku.server_auth;
                info.client_auth = eku.client_auth;
            }
            ParsedExtension::SubjectKeyIdentifier(id) => info.subject_key_id = Some(id.0.to_vec()),
            ParsedExtension::AuthorityKeyIdentifier(aki) => {
                info.authority_key_id = aki.key_identifier.as_ref().map(|k| k.0.to_vec());
            }
            _ => {}
        }
    }
    info
}

/// Decodes a 4- or 16-byte SAN IP address.
pub fn ip_from_bytes(bytes: &[u8]) -> Option<IpAddr> {
    match bytes.len() {
        4 => <[u8; 4]>::try_from(bytes).ok().map(IpAddr::from),
        16 => <[u8; 16]>::try_from(bytes).ok().map(IpAddr::from),
        _ => None,
    }
}
