//! The shared-material file of a rotation (`start --export FILE` writes it on the first
//! control-plane node, `start --join FILE` reads it on every other node): the target, the rotation
//! id, the old and new trust-anchor entries (CA certificates, or `sa.pub` keys) and the new
//! private key, encrypted with AES-256-GCM under a 32-byte key given as 64 hex characters
//! (kubeadm's `--certificate-key` format).
//!
//! The public part (anchors) and the secret part (new key) are sealed separately, each bound to
//! the target, the rotation id and its own name: a worker node decrypts the public part only.
//! A wrong key, an edited header or a swapped part fails to decrypt.

use std::path::Path;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::plan::Target;
use crate::error::{Error, Result};
use crate::store::{self, MODE_SECRET};

/// Format marker of the file.
const KIND: &str = "pki-rotation-shared-material/v1";

/// The 32-byte key the file is encrypted under. Never printed except once, on request.
pub struct CertificateKey(Zeroizing<[u8; 32]>);

impl CertificateKey {
    /// Parses 64 hex characters.
    pub fn from_hex(text: &str) -> Result<Self> {
        let mut key = Zeroizing::new([0u8; 32]);
        hex::decode_to_slice(text.trim(), key.as_mut_slice()).map_err(|_| {
            Error::Config("--certificate-key must be 64 hex characters (32 bytes)".into())
        })?;
        Ok(CertificateKey(key))
    }

    /// A fresh random key.
    pub fn generate() -> Result<Self> {
        let mut key = Zeroizing::new([0u8; 32]);
        getrandom::fill(key.as_mut_slice()).map_err(Error::crypto)?;
        Ok(CertificateKey(key))
    }

    /// The key as 64 hex characters (to print once when it was generated).
    pub fn to_hex(&self) -> Zeroizing<String> {
        Zeroizing::new(hex::encode(self.0.as_slice()))
    }

    fn cipher(&self) -> Aes256Gcm {
        Aes256Gcm::new(self.0.as_slice().into())
    }
}

/// The public part: what every node (workers included) needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct PublicPart {
    /// The anchor entry in use before the rotation (CA certificate or public key, PEM).
    pub(crate) old_anchor: String,
    /// The new anchor entry (PEM).
    pub(crate) new_anchor: String,
}

/// The decrypted content of a shared-material file.
pub(crate) struct SharedMaterial {
    pub(crate) target: Target,
    pub(crate) rotation_id: String,
    pub(crate) public: PublicPart,
    /// The new private key (PEM); `None` when only the public part was opened.
    pub(crate) new_key_pem: Option<Zeroizing<String>>,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Sealed {
    nonce: String,
    ciphertext: String,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct FileFormat {
    kind: String,
    target: Target,
    rotation_id: String,
    public: Sealed,
    secret: Sealed,
}

fn aad(target: Target, rotation_id: &str, part: &str) -> Vec<u8> {
    format!("{KIND}|{target}|{rotation_id}|{part}").into_bytes()
}

fn seal(key: &CertificateKey, aad: &[u8], plaintext: &[u8]) -> Result<Sealed> {
    let mut nonce = [0u8; 12];
    getrandom::fill(&mut nonce).map_err(Error::crypto)?;
    let ciphertext = key
        .cipher()
        .encrypt(
            Nonce::from_slice(&nonce),
            Payload {
                msg: plaintext,
                aad,
            },
        )
        .map_err(|_| Error::Crypto("AES-256-GCM encryption failed".into()))?;
    Ok(Sealed {
        nonce: B64.encode(nonce),
        ciphertext: B64.encode(ciphertext),
    })
}

fn open(
    path: &Path,
    key: &CertificateKey,
    aad: &[u8],
    sealed: &Sealed,
) -> Result<Zeroizing<Vec<u8>>> {
    let undecryptable = || {
        Error::invalid(
            path,
            "cannot be decrypted with this --certificate-key (wrong key, or the file was altered)",
        )
    };
    let nonce = B64.decode(&sealed.nonce).map_err(|_| undecryptable())?;
    let ciphertext = B64
        .decode(&sealed.ciphertext)
        .map_err(|_| undecryptable())?;
    if nonce.len() != 12 {
        return Err(undecryptable());
    }
    key.cipher()
        .decrypt(
            Nonce::from_slice(&nonce),
            Payload {
                msg: &ciphertext,
                aad,
            },
        )
        .map(Zeroizing::new)
        .map_err(|_| undecryptable())
}

/// Writes the shared material to `path` (mode 0600, atomically).
pub(crate) fn write(path: &Path, key: &CertificateKey, m: &SharedMaterial) -> Result<()> {
    let new_key = m
        .new_key_pem
        .as_ref()
        .ok_or_else(|| Error::Config("the new private key is missing".into()))?;
    let public = serde_json::to_vec(&m.public).map_err(|e| Error::Config(e.to_string()))?;
    let file = FileFormat {
        kind: KIND.to_owned(),
        target: m.target,
        rotation_id: m.rotation_id.clone(),
        public: seal(key, &aad(m.target, &m.rotation_id, "public"), &public)?,
        secret: seal(
            key,
            &aad(m.target, &m.rotation_id, "secret"),
            new_key.as_bytes(),
        )?,
    };
    let text = serde_json::to_string_pretty(&file).map_err(|e| Error::Config(e.to_string()))?;
    store::write_atomic(path, text.as_bytes(), MODE_SECRET)
}

/// Reads and decrypts `path` for a rotation of `target`; the secret part only when
/// `with_secret`. Refuses a file of another target or one that does not decrypt.
pub(crate) fn read(
    path: &Path,
    key: &CertificateKey,
    target: Target,
    with_secret: bool,
) -> Result<SharedMaterial> {
    let text = store::read_optional(path)?.ok_or_else(|| Error::invalid(path, "missing"))?;
    let file: FileFormat = serde_json::from_str(&text)
        .map_err(|e| Error::parse(path, format!("not a rotation shared-material file: {e}")))?;
    if file.kind != KIND {
        return Err(Error::parse(path, "not a rotation shared-material file"));
    }
    let id = &file.rotation_id;
    let public = open(path, key, &aad(file.target, id, "public"), &file.public)?;
    if file.target != target {
        return Err(Error::invalid(
            path,
            format!("it holds a rotation of {}, not of {target}", file.target),
        ));
    }
    let public: PublicPart = serde_json::from_slice(&public)
        .map_err(|e| Error::parse(path, format!("public part: {e}")))?;
    let new_key_pem = if with_secret {
        let bytes = open(path, key, &aad(target, id, "secret"), &file.secret)?;
        let text = String::from_utf8(bytes.to_vec())
            .map_err(|_| Error::parse(path, "secret part is not UTF-8"))?;
        Some(Zeroizing::new(text))
    } else {
        None
    };
    Ok(SharedMaterial {
        target,
        rotation_id: file.rotation_id,
        public,
        new_key_pem,
    })
}

/// A fresh rotation id: 16 random bytes in hex.
pub(crate) fn new_rotation_id() -> Result<String> {
    let mut id = [0u8; 16];
    getrandom::fill(&mut id).map_err(Error::crypto)?;
    Ok(hex::encode(id))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn material() -> SharedMaterial {
        SharedMaterial {
            target: Target::EtcdCa,
            rotation_id: "abc".into(),
            public: PublicPart {
                old_anchor: "old".into(),
                new_anchor: "new".into(),
            },
            new_key_pem: Some(Zeroizing::new("secret key".into())),
        }
    }

    #[test]
    fn round_trip_and_refusals() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| Error::io("tmp", e))?;
        let path = dir.path().join("shared");
        let key = CertificateKey::generate()?;
        write(&path, &key, &material())?;
        assert_eq!(store::mode_of(&path), Some(0o600));
        let back = read(&path, &key, Target::EtcdCa, true)?;
        assert_eq!(back.public, material().public);
        assert_eq!(
            back.new_key_pem.as_deref().map(String::as_str),
            Some("secret key")
        );
        assert!(
            read(&path, &key, Target::EtcdCa, false)?
                .new_key_pem
                .is_none()
        );
        let other = CertificateKey::from_hex(&"11".repeat(32))?;
        assert!(read(&path, &other, Target::EtcdCa, true).is_err());
        assert!(read(&path, &key, Target::Ca, true).is_err());
        // A header edited to another target no longer decrypts.
        let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
        std::fs::write(&path, text.replace("\"etcd-ca\"", "\"ca\""))
            .map_err(|e| Error::io(&path, e))?;
        assert!(read(&path, &key, Target::Ca, false).is_err());
        assert!(CertificateKey::from_hex("zz").is_err());
        Ok(())
    }
}
