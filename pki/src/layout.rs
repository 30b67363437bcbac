//! Where files live (kubeadm's layout) and how CAs, leaves and keys are loaded from it.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::inspect::Cert;
use crate::issue::Ca;
use crate::key::PrivateKey;
use crate::profile::{CaProfile, KubeconfigProfile};
use crate::store;

/// Default cert dir.
pub const DEFAULT_CERT_DIR: &str = "/etc/kubernetes/pki";
/// Default kubeconfig dir.
pub const DEFAULT_KUBECONFIG_DIR: &str = "/etc/kubernetes";

/// The two directories kubeadm uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// Certificates and keys (`/etc/kubernetes/pki`).
    pub cert_dir: PathBuf,
    /// kubeconfig files (`/etc/kubernetes`).
    pub kubeconfig_dir: PathBuf,
}

impl Layout {
    /// A layout for the given directories.
    pub fn new(cert_dir: impl Into<PathBuf>, kubeconfig_dir: impl Into<PathBuf>) -> Self {
        Layout {
            cert_dir: cert_dir.into(),
            kubeconfig_dir: kubeconfig_dir.into(),
        }
    }

    /// `<cert dir>/<base>.crt`.
    pub fn crt(&self, base: &str) -> PathBuf {
        self.cert_dir.join(format!("{base}.crt"))
    }

    /// `<cert dir>/<base>.key`.
    pub fn key(&self, base: &str) -> PathBuf {
        self.cert_dir.join(format!("{base}.key"))
    }

    /// `<kubeconfig dir>/<file>`.
    pub fn kubeconfig(&self, profile: &KubeconfigProfile) -> PathBuf {
        self.kubeconfig_dir.join(profile.file)
    }

    /// `<cert dir>/sa.key`.
    pub fn sa_key(&self) -> PathBuf {
        self.cert_dir.join("sa.key")
    }

    /// `<cert dir>/sa.pub`.
    pub fn sa_pub(&self) -> PathBuf {
        self.cert_dir.join("sa.pub")
    }

    /// The directories a command of this layout writes: the cert dir, its `etcd/` and the
    /// kubeconfig dir.
    pub fn dirs(&self) -> [PathBuf; 3] {
        [
            self.cert_dir.clone(),
            self.cert_dir.join("etcd"),
            self.kubeconfig_dir.clone(),
        ]
    }

    /// Locks the cert dir, its `etcd/` and the kubeconfig dir (waiting for other holders), then
    /// completes the commits and removes the temporary files a killed run left in each. Refuses,
    /// naming the journal, when a commit cannot be completed.
    pub fn lock_and_recover(&self) -> Result<store::DirLocks> {
        let [cert, etcd, kubeconfig] = self.dirs();
        let locks = store::lock_dirs(&[&cert, &kubeconfig], &[&etcd], durable::LockWait::Block)?
            .ok_or_else(|| Error::Config("directory lock refused while blocking".into()))?;
        for dir in self.dirs() {
            store::clean_stale_temps(&dir)?;
        }
        Ok(locks)
    }

    /// For commands that only read: when a directory of this layout holds a pending commit
    /// journal, completes it under the directories' locks (waiting for a writer that is still
    /// at work), so what is read is never a half-committed pair; refuses, naming the journal,
    /// when it cannot be completed here (no write permission, or a rename that fails).
    pub fn settle_for_reading(&self) -> Result<()> {
        let mut pending = false;
        for dir in self.dirs() {
            pending |= !durable::pending_journals(&dir)
                .map_err(|e| Error::io(&dir, e.into()))?
                .is_empty();
        }
        if !pending {
            return Ok(());
        }
        let [cert, etcd, kubeconfig] = self.dirs();
        let locked = store::lock_dirs(&[], &[&cert, &etcd, &kubeconfig], durable::LockWait::Block);
        let Ok(Some(_locks)) = locked else {
            return self
                .dirs()
                .iter()
                .try_for_each(|d| store::refuse_pending(d));
        };
        for dir in self.dirs() {
            store::clean_stale_temps(&dir)?;
        }
        Ok(())
    }
}

/// Loads a certificate file; `Ok(None)` when absent.
pub fn load_cert(path: &Path) -> Result<Option<Cert>> {
    store::read_optional(path)?
        .map(|t| Cert::from_pem(&t, path))
        .transpose()
}

/// Loads a private key file; `Ok(None)` when absent.
pub fn load_key(path: &Path) -> Result<Option<PrivateKey>> {
    store::read_secret_optional(path)?
        .map(|t| PrivateKey::from_pem(&t, path))
        .transpose()
}

/// Loads a CA (certificate and, if present, key) and checks it: the certificate must be a CA and
/// the key must match. `Ok(None)` when the certificate does not exist (a key without its
/// certificate is left for the caller: `init` reuses it, as a run killed between writing the key
/// and the certificate leaves exactly that).
pub fn load_ca(layout: &Layout, profile: &CaProfile) -> Result<Option<Ca>> {
    load_ca_at(&layout.crt(profile.base), &layout.key(profile.base))
}

/// Loads a CA from explicit paths (e.g. a new CA staged beside the current one during a
/// rotation), with the same checks as [`load_ca`].
pub fn load_ca_at(crt_path: &Path, key_path: &Path) -> Result<Option<Ca>> {
    let Some(cert) = load_cert(crt_path)? else {
        return Ok(None);
    };
    check_is_ca(&cert, crt_path)?;
    let key = load_key(key_path)?;
    if let Some(k) = &key {
        check_key_matches(&cert, crt_path, k, key_path)?;
    }
    Ok(Some(Ca { cert, key }))
}

/// Error unless `cert` is a CA certificate allowed to sign certificates.
pub fn check_is_ca(cert: &Cert, path: &Path) -> Result<()> {
    if !cert.info().is_ca {
        return Err(Error::invalid(
            path,
            "is not a CA certificate (basicConstraints CA:TRUE missing)",
        ));
    }
    Ok(())
}

/// Error unless `key` is the private half of `cert`.
pub fn check_key_matches(
    cert: &Cert,
    crt_path: &Path,
    key: &PrivateKey,
    key_path: &Path,
) -> Result<()> {
    if !cert.matches_key(key) {
        return Err(Error::invalid(
            key_path,
            format!(
                "private key does not match certificate {}",
                crt_path.display()
            ),
        ));
    }
    Ok(())
}

/// Error unless `cert` is signed by `ca`.
pub fn check_signed_by(cert: &Cert, path: &Path, ca: &Cert, ca_path: &Path) -> Result<()> {
    if !cert.is_signed_by(ca) {
        return Err(Error::invalid(
            path,
            format!(
                "is not signed by CA {} ({})",
                ca.info().common_name,
                ca_path.display()
            ),
        ));
    }
    Ok(())
}

/// Replaces a certificate and its key together, as one generation commit (see
/// [`durable::generation`]): both names link through `..data`, whose one rename swaps the pair,
/// so the files as they lie never pair a key with another key's certificate. Modes: certificate
/// 0644, key 0600.
pub fn write_cert_and_key(
    crt_path: &Path,
    cert: &Cert,
    key_path: &Path,
    key: &PrivateKey,
) -> Result<()> {
    store::write_many_atomic(&[
        (key_path, key.pem().as_bytes(), store::MODE_SECRET),
        (crt_path, cert.pem().as_bytes(), store::MODE_PUBLIC),
    ])
}

/// Writes a PEM bundle of certificates (e.g. old and new CA while a rotation is in progress)
/// atomically with mode 0644.
pub fn write_bundle(path: &Path, certs: &[Cert]) -> Result<()> {
    store::write_atomic(
        path,
        crate::inspect::pem_bundle(certs).as_bytes(),
        store::MODE_PUBLIC,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::issue::{self, CertSpec};
    use crate::key::KeyAlgorithm;
    use std::time::Duration;

    #[test]
    fn bundle_round_trip_and_ca_loading() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| Error::io("tempdir", e))?;
        let day = Duration::from_secs(86_400);
        let mut cas = Vec::new();
        for cn in ["old-ca", "new-ca"] {
            let key = PrivateKey::generate(KeyAlgorithm::EcdsaP256)?;
            let cert = issue::self_signed_ca(&CertSpec::ca(cn, &[], day), &key)?;
            let (crt_path, key_path) = (
                dir.path().join(format!("{cn}.crt")),
                dir.path().join(format!("{cn}.key")),
            );
            write_cert_and_key(&crt_path, &cert, &key_path, &key)?;
            let loaded = load_ca_at(&crt_path, &key_path)?
                .ok_or_else(|| Error::invalid(&crt_path, "gone"))?;
            assert!(!loaded.is_external());
            assert_eq!(loaded.cert.der(), cert.der());
            assert_eq!(store::mode_of(&key_path), Some(0o600));
            cas.push(cert);
        }
        let bundle = dir.path().join("ca-bundle.crt");
        write_bundle(&bundle, &cas)?;
        let text = store::read_optional(&bundle)?.unwrap_or_default();
        let back = crate::inspect::parse_bundle(&text, &bundle)?;
        assert_eq!(back.len(), 2);
        assert_eq!(back[0].info().common_name, "old-ca");
        assert_eq!(back[1].der(), cas[1].der());
        assert_eq!(store::mode_of(&bundle), Some(0o644));
        Ok(())
    }
}
