//! Private keys: generation, loading, PEM encoding, and a secret-holding type that zeroizes on drop.

use std::fmt;
use std::str::FromStr;

use rcgen::{KeyPair, PublicKeyData, RsaKeySize};
use zeroize::{Zeroize, Zeroizing};

use crate::error::{Error, Result};

/// Key algorithms kubeadm offers through `encryptionAlgorithm` / `--encryption-algorithm`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum KeyAlgorithm {
    /// RSA with a 2048-bit modulus (kubeadm's default).
    #[default]
    Rsa2048,
    /// RSA with a 3072-bit modulus.
    Rsa3072,
    /// RSA with a 4096-bit modulus.
    Rsa4096,
    /// ECDSA on NIST P-256, signatures with SHA-256.
    EcdsaP256,
    /// ECDSA on NIST P-384, signatures with SHA-384.
    EcdsaP384,
}

impl KeyAlgorithm {
    /// The spelling kubeadm uses (`RSA-2048`, `ECDSA-P256`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            KeyAlgorithm::Rsa2048 => "RSA-2048",
            KeyAlgorithm::Rsa3072 => "RSA-3072",
            KeyAlgorithm::Rsa4096 => "RSA-4096",
            KeyAlgorithm::EcdsaP256 => "ECDSA-P256",
            KeyAlgorithm::EcdsaP384 => "ECDSA-P384",
        }
    }
}

impl fmt::Display for KeyAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for KeyAlgorithm {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_uppercase().as_str() {
            "RSA-2048" | "RSA" => Ok(KeyAlgorithm::Rsa2048),
            "RSA-3072" => Ok(KeyAlgorithm::Rsa3072),
            "RSA-4096" => Ok(KeyAlgorithm::Rsa4096),
            "ECDSA-P256" | "ECDSA" => Ok(KeyAlgorithm::EcdsaP256),
            "ECDSA-P384" => Ok(KeyAlgorithm::EcdsaP384),
            _ => Err(Error::Config(format!(
                "unknown encryption algorithm {s:?} (expected RSA-2048, RSA-3072, RSA-4096, ECDSA-P256 or ECDSA-P384)"
            ))),
        }
    }
}

/// A private key. The PEM text and the parsed key are wiped from memory on drop; `Debug` prints
/// only the algorithm. Deliberately not `Clone`.
pub struct PrivateKey {
    pair: KeyPair,
    pem: Zeroizing<String>,
}

impl PrivateKey {
    /// Generates a fresh key of the given algorithm.
    pub fn generate(alg: KeyAlgorithm) -> Result<Self> {
        let pair = match alg {
            KeyAlgorithm::Rsa2048 => {
                KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, RsaKeySize::_2048)
            }
            KeyAlgorithm::Rsa3072 => {
                KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, RsaKeySize::_3072)
            }
            KeyAlgorithm::Rsa4096 => {
                KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, RsaKeySize::_4096)
            }
            KeyAlgorithm::EcdsaP256 => KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256),
            KeyAlgorithm::EcdsaP384 => KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384),
        }
        .map_err(Error::crypto)?;
        Ok(Self::from_pair(pair))
    }

    fn from_pair(pair: KeyPair) -> Self {
        let pem = Zeroizing::new(pair.serialize_pem());
        PrivateKey { pair, pem }
    }

    /// Parses a PEM private key (PKCS#8 `PRIVATE KEY`, PKCS#1 `RSA PRIVATE KEY` or SEC1
    /// `EC PRIVATE KEY`, as kubeadm writes). `origin` names the file in errors.
    /// The text may hold other PEM blocks (a certificate before the key, as in the kubelet's
    /// `kubelet-client-current.pem`); the first private key block is used.
    pub fn from_pem(pem: &str, origin: &std::path::Path) -> Result<Self> {
        let pem = key_block(pem)
            .map_err(|e| Error::parse(origin, format!("not PEM: {e}")))?
            .ok_or_else(|| Error::parse(origin, "no PRIVATE KEY block"))?;
        let pair = KeyPair::from_pem(&pem)
            .map_err(|e| Error::parse(origin, format!("private key: {e}")))?;
        // Keep the key's own type (PKCS#8, PKCS#1 or SEC1) as given: only the block is kept.
        Ok(PrivateKey { pair, pem })
    }

    /// The PEM text of the key (secret; write it only with mode 0600).
    pub fn pem(&self) -> &str {
        &self.pem
    }

    /// DER SubjectPublicKeyInfo of the public half.
    pub fn public_key_der(&self) -> Vec<u8> {
        self.pair.subject_public_key_info()
    }

    /// PEM `PUBLIC KEY` of the public half (what kubeadm writes to `sa.pub`).
    pub fn public_key_pem(&self) -> String {
        self.pair.public_key_pem()
    }

    /// The algorithm family and size of this key, when it is one kubeadm knows.
    pub fn algorithm(&self) -> Option<KeyAlgorithm> {
        algorithm_of_spki(&self.public_key_der())
    }

    pub(crate) fn pair(&self) -> &KeyPair {
        &self.pair
    }
}

impl Drop for PrivateKey {
    fn drop(&mut self) {
        // `pem` is a Zeroizing<String> and wipes itself; the parsed key's DER copy is wiped here.
        self.pair.zeroize();
    }
}

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PrivateKey")
            .field("algorithm", &self.algorithm())
            .finish_non_exhaustive()
    }
}

/// The first `... PRIVATE KEY` block of a PEM text, re-encoded alone as kubeadm writes PEM
/// (64 columns, with the text's own line ending, so a kubeadm file round-trips byte for byte).
/// The decoded DER of every block is wiped once encoded.
fn key_block(text: &str) -> std::result::Result<Option<Zeroizing<String>>, pem::PemError> {
    let config = if text.contains("\r\n") {
        crate::inspect::pem_lf().set_line_ending(pem::LineEnding::CRLF)
    } else {
        crate::inspect::pem_lf()
    };
    let mut found = None;
    for block in pem::parse_many(text)? {
        if found.is_none() && block.tag().ends_with("PRIVATE KEY") {
            found = Some(Zeroizing::new(pem::encode_config(&block, config)));
        }
        drop(Zeroizing::new(block.into_contents()));
    }
    Ok(found)
}

/// Works out which [`KeyAlgorithm`] a DER SubjectPublicKeyInfo belongs to.
pub fn algorithm_of_spki(spki_der: &[u8]) -> Option<KeyAlgorithm> {
    use x509_parser::prelude::FromDer;
    use x509_parser::public_key::PublicKey;
    let (_, spki) = x509_parser::x509::SubjectPublicKeyInfo::from_der(spki_der).ok()?;
    match spki.parsed().ok()? {
        PublicKey::RSA(rsa) => match rsa.key_size() {
            0..=2048 => Some(KeyAlgorithm::Rsa2048),
            2049..=3072 => Some(KeyAlgorithm::Rsa3072),
            _ => Some(KeyAlgorithm::Rsa4096),
        },
        PublicKey::EC(point) => match point.key_size() {
            256 => Some(KeyAlgorithm::EcdsaP256),
            384 => Some(KeyAlgorithm::EcdsaP384),
            _ => None,
        },
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_prints_key_material() {
        let k = PrivateKey::generate(KeyAlgorithm::EcdsaP256).ok();
        let k = k.as_ref().map(|k| (format!("{k:?}"), k.pem().to_owned()));
        let (debug, pem) = k.unwrap_or_default();
        assert_eq!(debug, "PrivateKey { algorithm: Some(EcdsaP256), .. }");
        let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
        assert!(body.len() > 40 && !debug.contains(&body[..16]));
    }

    #[test]
    fn finds_the_key_block_after_a_certificate() {
        let text = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n-----BEGIN EC PRIVATE KEY-----\nBBBB\n-----END EC PRIVATE KEY-----\n";
        assert_eq!(
            key_block(text)
                .ok()
                .flatten()
                .as_deref()
                .map(String::as_str),
            Some("-----BEGIN EC PRIVATE KEY-----\nBBBB\n-----END EC PRIVATE KEY-----\n")
        );
        let crlf = text.replace('\n', "\r\n");
        assert_eq!(
            key_block(&crlf)
                .ok()
                .flatten()
                .as_deref()
                .map(String::as_str),
            Some("-----BEGIN EC PRIVATE KEY-----\r\nBBBB\r\n-----END EC PRIVATE KEY-----\r\n")
        );
        assert_eq!(
            key_block("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n").ok(),
            Some(None)
        );
        assert!(
            key_block("-----BEGIN EC PRIVATE KEY-----\n!!\n-----END EC PRIVATE KEY-----\n")
                .is_err()
        );
    }

    #[test]
    fn a_loaded_key_keeps_its_file_bytes() {
        let generated = PrivateKey::generate(KeyAlgorithm::EcdsaP256).ok();
        let text = generated
            .as_ref()
            .map(|k| k.pem().to_owned())
            .unwrap_or_default();
        let loaded = PrivateKey::from_pem(&text, std::path::Path::new("k.key"));
        assert_eq!(loaded.ok().map(|k| k.pem().to_owned()), Some(text));
    }

    #[test]
    fn algorithm_names_round_trip() {
        for a in [
            KeyAlgorithm::Rsa2048,
            KeyAlgorithm::Rsa3072,
            KeyAlgorithm::Rsa4096,
            KeyAlgorithm::EcdsaP256,
            KeyAlgorithm::EcdsaP384,
        ] {
            assert_eq!(a.as_str().parse::<KeyAlgorithm>().ok(), Some(a));
        }
        assert!("ED25519".parse::<KeyAlgorithm>().is_err());
    }
}
