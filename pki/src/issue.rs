//! Issuing certificates: self-signed CAs and leaves signed by a loaded CA, from a
//! [`CertSpec`] (subject, SANs, usages, validity).

use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyUsagePurpose, SanType, SerialNumber,
};
use time::OffsetDateTime;

use crate::error::{Error, Result};
use crate::inspect::{Cert, CertInfo};
use crate::key::PrivateKey;
use crate::profile::{Sans, Usage};
use crate::spec::BACKDATE;

/// What to put in a certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct CertSpec {
    /// Subject CN.
    pub common_name: String,
    /// Subject O values (more than two only for leaves signed by [`issue`]).
    pub organizations: Vec<String>,
    /// Subject alternative names.
    pub sans: Sans,
    /// Extended key usages for a leaf; ignored for a CA.
    pub usage: Usage,
    /// Whether this is a CA certificate.
    pub is_ca: bool,
    /// Whether a leaf carries keyEncipherment next to digitalSignature (kubeadm: yes).
    pub key_encipherment: bool,
    /// Lifetime from now.
    pub validity: Duration,
}

impl CertSpec {
    /// A leaf spec.
    pub fn leaf(
        common_name: impl Into<String>,
        organizations: &[&str],
        sans: Sans,
        usage: Usage,
        validity: Duration,
    ) -> Self {
        CertSpec {
            common_name: common_name.into(),
            organizations: organizations.iter().map(|s| (*s).to_owned()).collect(),
            sans,
            usage,
            is_ca: false,
            key_encipherment: true,
            validity,
        }
    }

    /// A CA spec.
    pub fn ca(common_name: impl Into<String>, dns_names: &[&str], validity: Duration) -> Self {
        let mut sans = Sans::default();
        for d in dns_names {
            sans.add(d);
        }
        CertSpec {
            common_name: common_name.into(),
            organizations: Vec::new(),
            sans,
            usage: Usage::Client,
            is_ca: true,
            key_encipherment: true,
            validity,
        }
    }

    /// The spec of an existing leaf (for renewal: same subject, SANs and usages).
    pub fn from_existing(info: &CertInfo, validity: Duration) -> Self {
        let usage = match (info.server_auth, info.client_auth) {
            (true, true) => Usage::ServerClient,
            (true, false) => Usage::Server,
            _ => Usage::Client,
        };
        CertSpec {
            common_name: info.common_name.clone(),
            organizations: info.organizations.clone(),
            sans: Sans {
                dns: info.dns_names.clone(),
                ips: info.ip_addresses.clone(),
                ..Sans::default()
            },
            usage,
            is_ca: info.is_ca,
            key_encipherment: info.key_encipherment,
            validity,
        }
    }
}

/// A CA certificate with, unless it is externally managed, its private key.
#[derive(Debug)]
pub struct Ca {
    /// The CA certificate.
    pub cert: Cert,
    /// The signing key; `None` in external CA mode.
    pub key: Option<PrivateKey>,
}

impl Ca {
    /// True when the key is absent (external CA mode: trust anchor only).
    pub fn is_external(&self) -> bool {
        self.key.is_none()
    }
}

/// Issues a self-signed CA certificate for `key`.
pub fn self_signed_ca(spec: &CertSpec, key: &PrivateKey) -> Result<Cert> {
    let params = params(spec, None)?;
    let cert = params.self_signed(key.pair()).map_err(Error::crypto)?;
    Cert::from_der(cert.der().to_vec(), std::path::Path::new("<new CA>"))
}

/// Issues a certificate for the public key `spki_der` (DER SubjectPublicKeyInfo) signed by `ca`.
/// The leaf never outlives its CA: notAfter is capped at the CA's notAfter.
pub fn issue(
    spec: &CertSpec,
    spki_der: &[u8],
    ca_cert: &Cert,
    ca_key: &PrivateKey,
) -> Result<Cert> {
    let params = params(spec, Some(ca_cert.info().not_after))?;
    let issuer = Issuer::from_ca_cert_der(&ca_cert.der().to_vec().into(), ca_key.pair())
        .map_err(Error::crypto)?;
    let public = rcgen::SubjectPublicKeyInfo::from_der(spki_der).map_err(Error::crypto)?;
    let cert = params.signed_by(&public, &issuer).map_err(Error::crypto)?;
    let mut der = cert.der().to_vec();
    if spec.organizations.len() > 2 {
        // rcgen wrote the first two O values; put the full subject in and sign again.
        let name = crate::subject::name_der(&spec.organizations, &spec.common_name);
        der = crate::subject::replace_subject(&der, &name, ca_key)?;
    }
    let cert = Cert::from_der(der, std::path::Path::new("<new certificate>"))?;
    // rcgen re-encodes the issuer name from the CA certificate; make sure the result still
    // chains (it would not for names rcgen cannot represent, e.g. repeated attribute types).
    if !cert.is_signed_by(ca_cert) {
        return Err(Error::Crypto(format!(
            "issued certificate does not chain to CA {:?} (unsupported CA subject name)",
            ca_cert.info().common_name
        )));
    }
    Ok(cert)
}

/// Issues a leaf for `key` signed by `ca`; errors when the CA has no key.
pub fn issue_for_key(spec: &CertSpec, key: &PrivateKey, ca: &Ca) -> Result<Cert> {
    let ca_key = ca
        .key
        .as_ref()
        .ok_or_else(|| Error::Crypto("CA has no private key".to_owned()))?;
    issue(spec, &key.public_key_der(), &ca.cert, ca_key)
}

/// A PEM PKCS#10 request for `key` asking for what `spec` describes (subject, SANs, key usages
/// and extended key usages as requested extensions), for an external CA to sign.
pub fn csr_pem(spec: &CertSpec, key: &PrivateKey) -> Result<String> {
    let mut p = params(spec, None)?;
    // The signer chooses serial and authority key identifier; a request carries neither.
    p.serial_number = None;
    p.use_authority_key_identifier_extension = false;
    let csr = p.serialize_request(key.pair()).map_err(Error::crypto)?;
    csr.pem().map_err(Error::crypto)
}

fn params(spec: &CertSpec, cap: Option<OffsetDateTime>) -> Result<CertificateParams> {
    let now = OffsetDateTime::now_utc();
    let mut p = CertificateParams::default();
    p.not_before = now - BACKDATE;
    let mut not_after = now + spec.validity;
    if let Some(cap) = cap
        && not_after > cap
    {
        not_after = cap;
    }
    p.not_after = not_after;
    p.serial_number = Some(random_serial()?);
    p.distinguished_name = distinguished_name(&spec.common_name, &spec.organizations)?;
    for d in &spec.sans.dns {
        p.subject_alt_names
            .push(SanType::DnsName(ia5(d, "DNS name")?));
    }
    for ip in &spec.sans.ips {
        p.subject_alt_names.push(SanType::IpAddress(*ip));
    }
    for e in &spec.sans.emails {
        p.subject_alt_names
            .push(SanType::Rfc822Name(ia5(e, "email address")?));
    }
    for u in &spec.sans.uris {
        p.subject_alt_names.push(SanType::URI(ia5(u, "URI")?));
    }
    p.use_authority_key_identifier_extension = true;
    if spec.is_ca {
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
            KeyUsagePurpose::KeyCertSign,
        ];
    } else {
        // ExplicitNoCa writes basicConstraints CA:FALSE and a Subject Key Identifier.
        p.is_ca = IsCa::ExplicitNoCa;
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        if spec.key_encipherment {
            p.key_usages.push(KeyUsagePurpose::KeyEncipherment);
        }
        if spec.usage.server() {
            p.extended_key_usages
                .push(ExtendedKeyUsagePurpose::ServerAuth);
        }
        if spec.usage.client() {
            p.extended_key_usages
                .push(ExtendedKeyUsagePurpose::ClientAuth);
        }
    }
    Ok(p)
}

/// `value` as the IA5 string of a SAN of kind `what` (DNS name, email address, URI).
fn ia5(value: &str, what: &str) -> Result<rcgen::string::Ia5String> {
    rcgen::string::Ia5String::try_from(value)
        .map_err(|_| Error::Config(format!("invalid {what} {value:?}")))
}

/// Subject with O values first, then CN (Go's order, as kubeadm writes).
fn distinguished_name(cn: &str, orgs: &[String]) -> Result<DistinguishedName> {
    let mut dn = DistinguishedName::new();
    match orgs {
        [] => {}
        [one] => dn.push(DnType::OrganizationName, one.as_str()),
        // rcgen keys names by attribute type; a second O goes in under its OID spelled as custom.
        [one, two] => {
            dn.push(DnType::OrganizationName, one.as_str());
            dn.push(DnType::CustomDnType(vec![2, 5, 4, 10]), two.as_str());
        }
        // More than two: the first two as a placeholder; `issue` writes the full subject.
        [one, two, ..] => {
            dn.push(DnType::OrganizationName, one.as_str());
            dn.push(DnType::CustomDnType(vec![2, 5, 4, 10]), two.as_str());
        }
    }
    if !cn.is_empty() {
        dn.push(DnType::CommonName, cn);
    }
    Ok(dn)
}

/// A random positive 127-bit serial number.
fn random_serial() -> Result<SerialNumber> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).map_err(Error::crypto)?;
    bytes[0] = (bytes[0] & 0x7f) | 0x40;
    Ok(SerialNumber::from_slice(&bytes))
}
