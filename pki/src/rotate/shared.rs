//! The shared-material file of a rotation (`start --export FILE` writes it on the first
//! control-plane node, `start --join FILE` reads it on every other node): the target, the rotation
//! id, the old and new trust-anchor entries (CA certificates, or `sa.pub` keys) and the new
//! private key, encrypted with AES-256-GCM under a 32-byte key given as 64 hex characters
//! (kubeadm's `--certificate-key` format).
//!
//! The public part (anchors) and the secret part (new key) are sealed separately, each bound to
//! the target, the rotation id, the file's expiry and its own name. A wrong key, an edited
//! header or a swapped part fails to decrypt; a file past its expiry (default 2 h after
//! `--export`, as kubeadm's uploaded certificates) is refused.
//!
//! Workers never get this file: `--export FILE` also writes `FILE.public`, the old and new CA
//! certificates in the clear (no key, nothing secret), pinned by the SHA-256 of the new CA's
//! SubjectPublicKeyInfo, printed as `sha256:<hex>` like kubeadm's
//! `--discovery-token-ca-cert-hash`. A worker's `--join FILE.public --ca-cert-hash sha256:<hex>`
//! refuses a bundle whose new CA has another hash, and refuses the control-plane file.

use std::path::{Path, PathBuf};
use std::time::Duration;

use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::plan::Target;
use crate::error::{Error, Result};
use crate::store::{self, MODE_SECRET};

/// Format marker of the control-plane file.
const KIND: &str = "pki-rotation-shared-material/v2";
/// Format marker of the control-plane file before it carried an expiry.
const KIND_V1: &str = "pki-rotation-shared-material/v1";
/// Format marker of the workers' public bundle.
const PUBLIC_KIND: &str = "pki-rotation-public/v1";
/// How long a control-plane file is accepted after `--export` unless told otherwise.
pub const DEFAULT_EXPORT_TTL: Duration = Duration::from_secs(2 * 3600);

/// The workers' bundle written beside the control-plane file `export`: `<export>.public`.
pub fn public_path(export: &Path) -> PathBuf {
    let mut name = export.as_os_str().to_owned();
    name.push(".public");
    PathBuf::from(name)
}

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

    /// Reads the 64 hex characters from `path` (`-`: standard input), at most 1 KiB, so the key
    /// never appears on a command line.
    pub fn from_file(path: &Path) -> Result<Self> {
        use std::io::Read;
        // Room for the whole bounded read up front: no reallocation leaves a copy behind.
        let mut text = Zeroizing::new(String::with_capacity(1025));
        let read = if path.as_os_str() == "-" {
            std::io::stdin().take(1024).read_to_string(&mut text)
        } else {
            std::fs::File::open(path).and_then(|f| f.take(1024).read_to_string(&mut text))
        };
        read.map_err(|e| Error::io(path, e))?;
        Self::from_hex(&text)
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
    /// RFC 3339; the file is refused after it.
    expires_at: String,
    public: Sealed,
    secret: Sealed,
}

/// Just the format marker, to tell the files apart before parsing one.
#[derive(Deserialize)]
struct Kind {
    kind: String,
}

/// The workers' bundle: CA certificates only, in the clear.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct PublicFile {
    kind: String,
    target: Target,
    rotation_id: String,
    old_anchor: String,
    new_anchor: String,
}

fn aad(target: Target, rotation_id: &str, expires_at: &str, part: &str) -> Vec<u8> {
    format!("{KIND}|{target}|{rotation_id}|{expires_at}|{part}").into_bytes()
}

fn kind_of(path: &Path, text: &str) -> Result<String> {
    serde_json::from_str::<Kind>(text)
        .map(|k| k.kind)
        .map_err(|e| Error::parse(path, format!("not a rotation file: {e}")))
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

/// Writes the shared material to `path` (mode 0600, atomically), accepted for `ttl` from now;
/// returns the expiry written into it (RFC 3339).
pub(crate) fn write(
    path: &Path,
    key: &CertificateKey,
    m: &SharedMaterial,
    ttl: Duration,
) -> Result<String> {
    let new_key = m
        .new_key_pem
        .as_ref()
        .ok_or_else(|| Error::Config("the new private key is missing".into()))?;
    let public = serde_json::to_vec(&m.public).map_err(|e| Error::Config(e.to_string()))?;
    let expires_at = super::state::format_rfc3339(
        (OffsetDateTime::now_utc() + ttl)
            .replace_nanosecond(0)
            .map_err(|e| Error::Config(e.to_string()))?,
    );
    let aad = |part| aad(m.target, &m.rotation_id, &expires_at, part);
    let file = FileFormat {
        kind: KIND.to_owned(),
        target: m.target,
        rotation_id: m.rotation_id.clone(),
        public: seal(key, &aad("public"), &public)?,
        secret: seal(key, &aad("secret"), new_key.as_bytes())?,
        expires_at: expires_at.clone(),
    };
    let text = serde_json::to_string_pretty(&file).map_err(|e| Error::Config(e.to_string()))?;
    store::write_atomic(path, text.as_bytes(), MODE_SECRET)?;
    Ok(expires_at)
}

/// Writes the workers' bundle of `m` to `path` (mode 0644: nothing in it is secret) and
/// returns the pin of its new CA, `sha256:<hex>` (see [`ca_cert_hash`]).
pub(crate) fn write_public(path: &Path, m: &SharedMaterial) -> Result<String> {
    let file = PublicFile {
        kind: PUBLIC_KIND.to_owned(),
        target: m.target,
        rotation_id: m.rotation_id.clone(),
        old_anchor: m.public.old_anchor.clone(),
        new_anchor: m.public.new_anchor.clone(),
    };
    let text = serde_json::to_string_pretty(&file).map_err(|e| Error::Config(e.to_string()))?;
    let pin = ca_cert_hash(m.target, &m.public.new_anchor, path)?;
    store::write_atomic(path, text.as_bytes(), store::MODE_PUBLIC)?;
    Ok(pin)
}

/// The pin of a new anchor, as kubeadm's `--discovery-token-ca-cert-hash`: `sha256:` and the
/// hex SHA-256 of the (first) CA certificate's DER SubjectPublicKeyInfo, or of the public key
/// (`sa`).
pub(crate) fn ca_cert_hash(target: Target, anchor: &str, origin: &Path) -> Result<String> {
    let spki = match target.ca_id() {
        Some(_) => crate::inspect::parse_bundle(anchor, origin)?
            .first()
            .map(|c| c.info().spki_der.clone()),
        None => super::anchor::public_keys(anchor, origin)?
            .into_iter()
            .next(),
    }
    .ok_or_else(|| Error::invalid(origin, "no new CA certificate (public key) in it"))?;
    Ok(format!("sha256:{}", hex::encode(Sha256::digest(&spki))))
}

/// Reads a workers' bundle for a rotation of `target` and checks its new CA against `pin`
/// (`sha256:<hex>`); returns the rotation id and the anchors. Refuses the control-plane file.
pub(crate) fn read_public(path: &Path, target: Target, pin: &str) -> Result<(String, PublicPart)> {
    let text = store::read_optional(path)?.ok_or_else(|| Error::invalid(path, "missing"))?;
    match kind_of(path, &text)?.as_str() {
        PUBLIC_KIND => {}
        KIND | KIND_V1 => {
            return Err(Error::invalid(
                path,
                "this is the control-plane file, which holds the new CA's private key: a worker \
                 takes its public bundle (the same path with `.public`) and --ca-cert-hash",
            ));
        }
        _ => return Err(Error::parse(path, "not a rotation public bundle")),
    }
    let file: PublicFile = serde_json::from_str(&text)
        .map_err(|e| Error::parse(path, format!("not a rotation public bundle: {e}")))?;
    if file.target != target {
        return Err(Error::invalid(
            path,
            format!("it holds a rotation of {}, not of {target}", file.target),
        ));
    }
    let found = ca_cert_hash(target, &file.new_anchor, path)?;
    if !found.eq_ignore_ascii_case(pin.trim()) {
        return Err(Error::invalid(
            path,
            format!(
                "its new CA's public key hash is {found}, not the --ca-cert-hash given ({}): do \
                 not use this file",
                pin.trim()
            ),
        ));
    }
    Ok((
        file.rotation_id,
        PublicPart {
            old_anchor: file.old_anchor,
            new_anchor: file.new_anchor,
        },
    ))
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
    match kind_of(path, &text)?.as_str() {
        KIND => {}
        KIND_V1 => {
            return Err(Error::invalid(
                path,
                "written by an earlier pki without an expiry: export it again with `start --export`",
            ));
        }
        PUBLIC_KIND => {
            return Err(Error::invalid(
                path,
                "this is the workers' public bundle; control-plane nodes join with the control-plane file",
            ));
        }
        _ => return Err(Error::parse(path, "not a rotation shared-material file")),
    }
    let file: FileFormat = serde_json::from_str(&text)
        .map_err(|e| Error::parse(path, format!("not a rotation shared-material file: {e}")))?;
    let (id, expires) = (&file.rotation_id, &file.expires_at);
    let public = open(
        path,
        key,
        &aad(file.target, id, expires, "public"),
        &file.public,
    )?;
    let expiry = OffsetDateTime::parse(expires, &Rfc3339)
        .map_err(|_| Error::parse(path, "its expiry is not an RFC 3339 time"))?;
    if OffsetDateTime::now_utc() > expiry {
        return Err(Error::invalid(
            path,
            format!(
                "it expired at {expires}: run `pki rotate {} start --export FILE` again on the node \
                 that started the rotation (it re-exports while the rotation is in progress)",
                file.target
            ),
        ));
    }
    if file.target != target {
        return Err(Error::invalid(
            path,
            format!("it holds a rotation of {}, not of {target}", file.target),
        ));
    }
    let public: PublicPart = serde_json::from_slice(&public)
        .map_err(|e| Error::parse(path, format!("public part: {e}")))?;
    let new_key_pem = if with_secret {
        let bytes = open(path, key, &aad(target, id, expires, "secret"), &file.secret)?;
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
        write(&path, &key, &material(), DEFAULT_EXPORT_TTL)?;
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

    #[test]
    fn an_expired_file_or_an_edited_expiry_is_refused() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| Error::io("tmp", e))?;
        let path = dir.path().join("shared");
        let key = CertificateKey::generate()?;
        write(&path, &key, &material(), Duration::ZERO)?;
        let err = read(&path, &key, Target::EtcdCa, true)
            .err()
            .map(|e| e.to_string());
        assert!(
            err.as_deref().is_some_and(|e| e.contains("expired at")),
            "{err:?}"
        );
        write(&path, &key, &material(), DEFAULT_EXPORT_TTL)?;
        let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
        let file: FileFormat = serde_json::from_str(&text).map_err(|e| Error::parse(&path, e))?;
        let later = text.replace(&file.expires_at, "2999-01-01T00:00:00Z");
        std::fs::write(&path, later).map_err(|e| Error::io(&path, e))?;
        let err = read(&path, &key, Target::EtcdCa, true)
            .err()
            .map(|e| e.to_string());
        assert!(
            err.as_deref()
                .is_some_and(|e| e.contains("cannot be decrypted")),
            "{err:?}"
        );
        Ok(())
    }
}
