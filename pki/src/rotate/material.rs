//! The staged old and new CA (or service-account key) of a rotation, read back from
//! `.rotation/staged/<target>/` and checked: each key loads, each certificate is a CA and matches
//! its key. The anchor text of every bundle and the key beside it are built from here.

use std::fs;
use std::path::Path;

use zeroize::Zeroizing;

use super::plan::Plan;
use super::steps::{Bundle, Generation};
use crate::error::{Error, Result};
use crate::inspect::Cert;
use crate::issue::Ca;
use crate::key::PrivateKey;
use crate::layout;

/// One staged CA (or key): the key file's exact bytes, the key, and the CA certificate (`None`
/// for the service-account key).
struct Staged {
    key_pem: Zeroizing<Vec<u8>>,
    key: PrivateKey,
    cert: Option<Cert>,
}

impl Staged {
    fn load(plan: &Plan, key_path: &Path, crt_path: &Path) -> Result<Staged> {
        let (key_pem, key) = read_key(key_path)?;
        let cert = match plan.target.ca_id() {
            Some(_) => Some(read_ca_cert(crt_path, &key)?),
            None => None,
        };
        Ok(Staged { key_pem, key, cert })
    }

    /// Its entry in an anchor: the CA certificate, or the public key.
    fn anchor_entry(&self) -> String {
        match &self.cert {
            Some(c) => c.pem(),
            None => self.key.public_key_pem(),
        }
    }
}

/// The staged old and new material.
pub(crate) struct Material {
    old: Staged,
    new: Staged,
}

impl Material {
    /// Reads and checks both staged CAs (keys) of `plan`.
    pub(crate) fn load(plan: &Plan) -> Result<Material> {
        Ok(Material {
            old: Staged::load(plan, &plan.staged_old_key(), &plan.staged_old_crt())?,
            new: Staged::load(plan, &plan.staged_new_key(), &plan.staged_new_crt())?,
        })
    }

    fn get(&self, g: Generation) -> &Staged {
        match g {
            Generation::Old => &self.old,
            Generation::New => &self.new,
        }
    }

    /// The anchor file content for a bundle.
    pub(crate) fn anchor_text(&self, b: Bundle) -> String {
        b.entries()
            .iter()
            .map(|g| self.get(*g).anchor_entry())
            .collect()
    }

    /// The anchor entry of one generation: its CA certificate, or its public key (PEM).
    pub(crate) fn anchor_entry(&self, g: Generation) -> String {
        self.get(g).anchor_entry()
    }

    /// The exact bytes of the key file of a CA (key).
    pub(crate) fn key_bytes(&self, g: Generation) -> &[u8] {
        &self.get(g).key_pem
    }

    /// The CA certificate of a generation; `None` for the service-account key.
    pub(crate) fn cert(&self, g: Generation) -> Option<&Cert> {
        self.get(g).cert.as_ref()
    }

    /// The new CA with its key, to issue from.
    pub(crate) fn new_ca(&self) -> Result<Ca> {
        let cert = self
            .new
            .cert
            .clone()
            .ok_or_else(|| Error::Config("the service-account key has no CA".into()))?;
        let key = PrivateKey::from_pem(
            &String::from_utf8_lossy(&self.new.key_pem),
            Path::new("<staged new key>"),
        )?;
        Ok(Ca {
            cert,
            key: Some(key),
        })
    }
}

/// Reads a private key file: its exact bytes and the parsed key.
pub(crate) fn read_key(path: &Path) -> Result<(Zeroizing<Vec<u8>>, PrivateKey)> {
    let bytes = Zeroizing::new(fs::read(path).map_err(|e| Error::io(path, e))?);
    let text = Zeroizing::new(
        String::from_utf8(bytes.to_vec()).map_err(|_| Error::parse(path, "not UTF-8 text"))?,
    );
    let key = PrivateKey::from_pem(&text, path)?;
    Ok((bytes, key))
}

/// Reads a staged CA certificate and checks that it is a CA matching `key`.
pub(crate) fn read_ca_cert(path: &Path, key: &PrivateKey) -> Result<Cert> {
    let cert = layout::load_cert(path)?.ok_or_else(|| Error::invalid(path, "missing"))?;
    layout::check_is_ca(&cert, path)?;
    if !cert.matches_key(key) {
        return Err(Error::invalid(path, "does not match its staged key"));
    }
    Ok(cert)
}
