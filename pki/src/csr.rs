//! Signing PEM certificate signing requests under the rules of the Kubernetes built-in signers
//! (`kubernetes.io/kube-apiserver-client-kubelet`, `kubernetes.io/kubelet-serving`,
//! `kubernetes.io/kube-apiserver-client`).

use std::collections::BTreeSet;
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;
use std::time::Duration;

use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::prelude::FromDer;

use crate::error::{Error, Result};
use crate::inspect::{Cert, ip_from_bytes};
use crate::issue::{self, CertSpec};
use crate::key::PrivateKey;
use crate::profile::{Sans, Usage};
use crate::version::SYSTEM_MASTERS;

/// Largest CSR accepted (PEM text), to bound work on hostile input.
pub const MAX_CSR_BYTES: usize = 64 * 1024;

/// The built-in Kubernetes signers this tool implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Signer {
    /// `kubernetes.io/kube-apiserver-client-kubelet`: kubelet client certificates.
    KubeletClient,
    /// `kubernetes.io/kubelet-serving`: kubelet serving certificates.
    KubeletServing,
    /// `kubernetes.io/kube-apiserver-client`: any client certificate for the API server.
    ApiserverClient,
}

impl Signer {
    /// The signer name as Kubernetes spells it.
    pub fn name(self) -> &'static str {
        match self {
            Signer::KubeletClient => "kubernetes.io/kube-apiserver-client-kubelet",
            Signer::KubeletServing => "kubernetes.io/kubelet-serving",
            Signer::ApiserverClient => "kubernetes.io/kube-apiserver-client",
        }
    }

    /// Usages granted when neither the caller nor the CSR asks for any.
    pub fn default_usages(self) -> Vec<String> {
        let v: &[&str] = match self {
            Signer::KubeletServing => &["digital signature", "key encipherment", "server auth"],
            _ => &["digital signature", "key encipherment", "client auth"],
        };
        v.iter().map(|s| (*s).to_owned()).collect()
    }
}

impl fmt::Display for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Signer {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        [Signer::KubeletClient, Signer::KubeletServing, Signer::ApiserverClient]
            .into_iter()
            .find(|x| x.name() == s)
            .ok_or_else(|| {
                Error::Config(format!(
                    "unknown signer {s:?} (supported: kubernetes.io/kube-apiserver-client-kubelet, kubernetes.io/kubelet-serving, kubernetes.io/kube-apiserver-client)"
                ))
            })
    }
}

/// What a verified CSR asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct CsrRequest {
    /// Subject CN.
    pub common_name: String,
    /// Subject O values.
    pub organizations: Vec<String>,
    /// DNS SANs.
    pub dns_names: Vec<String>,
    /// IP SANs.
    pub ip_addresses: Vec<IpAddr>,
    /// Email SANs.
    pub emails: Vec<String>,
    /// URI SANs.
    pub uris: Vec<String>,
    /// Other SAN kinds, by description.
    pub other_sans: Vec<String>,
    /// Usages requested through keyUsage / extendedKeyUsage extensions (Kubernetes names).
    pub usages: Vec<String>,
    /// Whether basicConstraints CA:TRUE was requested.
    pub wants_ca: bool,
    /// DER SubjectPublicKeyInfo.
    pub spki_der: Vec<u8>,
}

/// Parses a PEM CSR and verifies its self-signature.
pub fn parse_csr(pem: &str) -> Result<CsrRequest> {
    if pem.len() > MAX_CSR_BYTES {
        return Err(Error::CsrRefused(format!(
            "larger than {MAX_CSR_BYTES} bytes"
        )));
    }
    let block = pem::parse_many(pem)
        .unwrap_or_default()
        .into_iter()
        .find(|b| b.tag() == "CERTIFICATE REQUEST" || b.tag() == "NEW CERTIFICATE REQUEST")
        .ok_or_else(|| Error::CsrRefused("no PEM CERTIFICATE REQUEST block".to_owned()))?;
    let (rest, csr) = X509CertificationRequest::from_der(block.contents())
        .map_err(|e| Error::CsrRefused(format!("not a valid PKCS#10 request: {e}")))?;
    if !rest.is_empty() {
        return Err(Error::CsrRefused(
            "trailing bytes after the request".to_owned(),
        ));
    }
    csr.verify_signature().map_err(|_| {
        Error::CsrRefused("the request's self-signature does not verify".to_owned())
    })?;
    let info = &csr.certification_request_info;
    let mut req = CsrRequest {
        common_name: info
            .subject
            .iter_common_name()
            .next()
            .and_then(|a| a.as_str().ok())
            .unwrap_or_default()
            .to_owned(),
        organizations: info
            .subject
            .iter_organization()
            .filter_map(|a| a.as_str().ok().map(str::to_owned))
            .collect(),
        dns_names: Vec::new(),
        ip_addresses: Vec::new(),
        emails: Vec::new(),
        uris: Vec::new(),
        other_sans: Vec::new(),
        usages: Vec::new(),
        wants_ca: false,
        spki_der: info.subject_pki.raw.to_vec(),
    };
    if let Some(exts) = csr.requested_extensions() {
        for ext in exts {
            match ext {
                ParsedExtension::SubjectAlternativeName(san) => {
                    for n in &san.general_names {
                        match n {
                            GeneralName::DNSName(d) => req.dns_names.push((*d).to_owned()),
                            GeneralName::IPAddress(b) => match ip_from_bytes(b) {
                                Some(ip) => req.ip_addresses.push(ip),
                                None => req.other_sans.push("malformed IP".to_owned()),
                            },
                            GeneralName::RFC822Name(e) => req.emails.push((*e).to_owned()),
                            GeneralName::URI(u) => req.uris.push((*u).to_owned()),
                            other => req.other_sans.push(format!("{other:?}")),
                        }
                    }
                }
                ParsedExtension::KeyUsage(ku) => {
                    let flags = [
                        (ku.digital_signature(), "digital signature"),
                        (ku.non_repudiation(), "content commitment"),
                        (ku.key_encipherment(), "key encipherment"),
                        (ku.data_encipherment(), "data encipherment"),
                        (ku.key_agreement(), "key agreement"),
                        (ku.key_cert_sign(), "cert sign"),
                        (ku.crl_sign(), "crl sign"),
                        (ku.encipher_only(), "encipher only"),
                        (ku.decipher_only(), "decipher only"),
                    ];
                    req.usages
                        .extend(flags.iter().filter(|f| f.0).map(|f| f.1.to_owned()));
                }
                ParsedExtension::ExtendedKeyUsage(eku) => {
                    let flags = [
                        (eku.any, "any"),
                        (eku.server_auth, "server auth"),
                        (eku.client_auth, "client auth"),
                        (eku.code_signing, "code signing"),
                        (eku.email_protection, "email protection"),
                        (eku.time_stamping, "timestamping"),
                        (eku.ocsp_signing, "ocsp signing"),
                    ];
                    req.usages
                        .extend(flags.iter().filter(|f| f.0).map(|f| f.1.to_owned()));
                    req.usages
                        .extend(eku.other.iter().map(|o| format!("extended key usage {o}")));
                }
                ParsedExtension::BasicConstraints(bc) => req.wants_ca = bc.ca,
                // Other requested extensions are discarded, as the Kubernetes signers do.
                _ => {}
            }
        }
    }
    Ok(req)
}

/// Checks `req` against `signer`'s rules with the given usages; the error says which rule broke.
pub fn check_rules(signer: Signer, req: &CsrRequest, usages: &BTreeSet<String>) -> Result<()> {
    let refuse = |m: String| Err(Error::CsrRefused(format!("{signer}: {m}")));
    if req.wants_ca {
        return refuse(
            "requests basicConstraints CA:TRUE; only leaf certificates are signed".into(),
        );
    }
    let all_sans = req.dns_names.len()
        + req.ip_addresses.len()
        + req.emails.len()
        + req.uris.len()
        + req.other_sans.len();
    match signer {
        Signer::KubeletClient | Signer::KubeletServing => {
            if req.organizations != ["system:nodes"] {
                return refuse(format!(
                    "subject organization must be exactly [\"system:nodes\"], got {:?}",
                    req.organizations
                ));
            }
            match req.common_name.strip_prefix("system:node:") {
                Some(n) if !n.is_empty() => {}
                _ => {
                    return refuse(format!(
                        "subject CN must be \"system:node:<nodeName>\", got {:?}",
                        req.common_name
                    ));
                }
            }
        }
        Signer::ApiserverClient => {
            if req.common_name.is_empty() {
                return refuse("subject CN (the user name) must not be empty".into());
            }
            // kube-apiserver's CertificateSubjectRestriction admission refuses these too: a
            // certificate in system:masters bypasses every authorizer and cannot be revoked.
            if req.organizations.iter().any(|o| o == SYSTEM_MASTERS) {
                return refuse(format!(
                    "subject organization {SYSTEM_MASTERS:?} is not permitted for this signer"
                ));
            }
        }
    }
    let (allowed, required): (&[&str], &[&str]) = match signer {
        Signer::KubeletClient => (
            &["digital signature", "key encipherment", "client auth"],
            &["digital signature", "client auth"],
        ),
        Signer::KubeletServing => (
            &["digital signature", "key encipherment", "server auth"],
            &["digital signature", "server auth"],
        ),
        Signer::ApiserverClient => (
            &["digital signature", "key encipherment", "client auth"],
            &["client auth"],
        ),
    };
    if let Some(bad) = usages.iter().find(|u| !allowed.contains(&u.as_str())) {
        return refuse(format!(
            "usage {bad:?} is not permitted (allowed: {})",
            allowed.join(", ")
        ));
    }
    if let Some(missing) = required.iter().find(|r| !usages.contains(**r)) {
        return refuse(format!("usage {missing:?} is required"));
    }
    match signer {
        Signer::KubeletClient if all_sans > 0 => {
            refuse("subject alternative names are not permitted".into())
        }
        Signer::KubeletServing
            if !req.emails.is_empty() || !req.uris.is_empty() || !req.other_sans.is_empty() =>
        {
            refuse("only DNS and IP subject alternative names are permitted".into())
        }
        Signer::KubeletServing if req.dns_names.is_empty() && req.ip_addresses.is_empty() => {
            refuse("at least one DNS or IP subject alternative name is required".into())
        }
        Signer::ApiserverClient if !req.other_sans.is_empty() => refuse(format!(
            "only DNS, IP, email and URI subject alternative names are supported, got {}",
            req.other_sans.join(", ")
        )),
        _ => Ok(()),
    }
}

/// Verifies, checks and signs a PEM CSR for `signer` with the CA `ca_cert`/`ca_key`.
/// `usages` overrides the usages requested inside the CSR (which in turn override the signer's
/// defaults). The certificate lives `validity`, capped at the CA's notAfter.
pub fn sign(
    pem: &str,
    signer: Signer,
    usages: Option<&[String]>,
    validity: Duration,
    ca_cert: &Cert,
    ca_key: &PrivateKey,
) -> Result<Cert> {
    let req = parse_csr(pem)?;
    let usages: BTreeSet<String> = match usages {
        Some(u) if !u.is_empty() => u.iter().map(|s| s.trim().to_ascii_lowercase()).collect(),
        _ if !req.usages.is_empty() => req.usages.iter().cloned().collect(),
        _ => signer.default_usages().into_iter().collect(),
    };
    check_rules(signer, &req, &usages)?;
    let usage = match (
        usages.contains("server auth"),
        usages.contains("client auth"),
    ) {
        (true, true) => Usage::ServerClient,
        (true, false) => Usage::Server,
        _ => Usage::Client,
    };
    let mut sans = Sans::default();
    for d in &req.dns_names {
        sans.add(d);
    }
    for ip in &req.ip_addresses {
        sans.add_ip(*ip);
    }
    sans.emails = req.emails.clone();
    sans.uris = req.uris.clone();
    let orgs: Vec<&str> = req.organizations.iter().map(String::as_str).collect();
    let mut spec = CertSpec::leaf(req.common_name.clone(), &orgs, sans, usage, validity);
    spec.key_encipherment = usages.contains("key encipherment");
    issue::issue(&spec, &req.spki_der, ca_cert, ca_key)
}
