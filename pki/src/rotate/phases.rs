//! The steps of each phase and how each is carried out. Every step computes its end state from
//! the staged old/new material and writes only when the file differs, so rerunning a step
//! (after a crash before its marker was recorded) reaches the same end state.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use time::OffsetDateTime;
use zeroize::Zeroizing;

use super::backup::create_private_dir;
use super::manifests::{self, SIGNING_CERT_FLAG, SIGNING_KEY_FLAG};
use super::plan::{Phase, Plan};
use super::state::{FlagEdit, State};
use crate::error::{Error, Result};
use crate::inspect::{Cert, parse_bundle, same_public_key};
use crate::issue::{self, Ca, CertSpec};
use crate::key::{PrivateKey, algorithm_of_spki};
use crate::kubeconfig;
use crate::layout;
use crate::profile::{self, LeafProfile};
use crate::renew;
use crate::store::{self, MODE_PUBLIC, MODE_SECRET};

/// Which trust set a bundle holds, signer first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bundle {
    /// Old (signing) then new.
    OldNew,
    /// New (signing) then old.
    NewOld,
    /// New only.
    New,
}

impl Bundle {
    fn name(self) -> &'static str {
        match self {
            Bundle::OldNew => "old+new",
            Bundle::NewOld => "new+old",
            Bundle::New => "new",
        }
    }
}

/// One idempotent step.
#[derive(Debug, Clone)]
pub enum Step {
    /// Copy the current CA (or key) to the staging area, verbatim.
    StageOld,
    /// Generate the new CA (or key) in the staging area.
    StageNew,
    /// Write the single-certificate signer files from the old (`false`) or new (`true`) CA.
    Signer(bool),
    /// Point kube-controller-manager's signing flags at the signer files.
    ManifestsToSigner,
    /// Put kube-controller-manager's signing flags back to their original values.
    ManifestsRestore,
    /// Write the trust anchor (CA bundle or `sa.pub`) and the key file matching its first entry.
    Anchor(Bundle),
    /// Rewrite a kubeconfig's CA data, re-issuing its client certificate from the new CA when
    /// the flag is set.
    Kubeconfig(PathBuf, Bundle, bool),
    /// Re-issue a leaf from the new CA (same subject, SANs, usages; fresh key).
    Leaf(&'static LeafProfile),
    /// Remove the signer files.
    RemoveSigner,
    /// Remove the staging area (the old key stays in the backups).
    Unstage,
}

impl Step {
    /// The marker recorded in the state file once the step is done.
    pub fn name(&self, plan: &Plan) -> String {
        match self {
            Step::StageOld => "stage-old".into(),
            Step::StageNew => "stage-new".into(),
            Step::Signer(false) => "signer:old".into(),
            Step::Signer(true) => "signer:new".into(),
            Step::ManifestsToSigner => "manifests:signer".into(),
            Step::ManifestsRestore => "manifests:restore".into(),
            Step::Anchor(b) => format!("anchor:{}", b.name()),
            Step::Kubeconfig(p, b, _) => format!("kubeconfig:{}:{}", plan.label(p), b.name()),
            Step::Leaf(l) => format!("leaf:{}", l.name),
            Step::RemoveSigner => "signer:remove".into(),
            Step::Unstage => "unstage".into(),
        }
    }
}

/// The steps of `phase` for `plan`, in order.
pub fn steps(plan: &Plan, phase: Phase) -> Vec<Step> {
    let has_signer = plan.signer().is_some();
    let has_manifest = plan.kcm_manifest().is_some();
    let mut v = Vec::new();
    match phase {
        Phase::Start => {
            v.push(Step::StageOld);
            v.push(Step::StageNew);
            if has_signer {
                v.push(Step::Signer(false));
            }
            if has_manifest {
                v.push(Step::ManifestsToSigner);
            }
            v.push(Step::Anchor(Bundle::OldNew));
            for k in plan.kubeconfigs() {
                v.push(Step::Kubeconfig(k, Bundle::OldNew, false));
            }
        }
        Phase::Switch => {
            for l in plan.leaves() {
                v.push(Step::Leaf(l));
            }
            for k in plan.kubeconfigs() {
                v.push(Step::Kubeconfig(k, Bundle::NewOld, true));
            }
            if has_signer {
                v.push(Step::Signer(true));
            }
            v.push(Step::Anchor(Bundle::NewOld));
        }
        Phase::Finish => {
            v.push(Step::Anchor(Bundle::New));
            for k in plan.kubeconfigs() {
                v.push(Step::Kubeconfig(k, Bundle::New, false));
            }
            if has_manifest {
                v.push(Step::ManifestsRestore);
            }
            if has_signer {
                v.push(Step::RemoveSigner);
            }
            v.push(Step::Unstage);
        }
    }
    v
}

/// Settings the steps need.
#[derive(Debug, Clone, Copy)]
pub struct StepSettings {
    /// Lifetime of the new CA.
    pub ca_validity: Duration,
    /// Lifetime of re-issued leaves.
    pub leaf_validity: Duration,
}

/// The staged old and new material.
struct Material {
    old_key_pem: Zeroizing<Vec<u8>>,
    old_key: PrivateKey,
    old_cert: Option<Cert>,
    new_key_pem: Zeroizing<Vec<u8>>,
    new_key: PrivateKey,
    new_cert: Option<Cert>,
}

impl Material {
    fn load(plan: &Plan) -> Result<Material> {
        let (old_key_pem, old_key) = read_key(&plan.staged_old_key())?;
        let (new_key_pem, new_key) = read_key(&plan.staged_new_key())?;
        let (old_cert, new_cert) = if plan.target.ca_id().is_some() {
            (
                Some(read_ca_cert(&plan.staged_old_crt(), &old_key)?),
                Some(read_ca_cert(&plan.staged_new_crt(), &new_key)?),
            )
        } else {
            (None, None)
        };
        Ok(Material {
            old_key_pem,
            old_key,
            old_cert,
            new_key_pem,
            new_key,
            new_cert,
        })
    }

    /// The anchor file content for a bundle.
    fn anchor_text(&self, b: Bundle) -> String {
        let entry = |new: bool| -> String {
            match (new, &self.old_cert, &self.new_cert) {
                (false, Some(c), _) | (true, _, Some(c)) => c.pem(),
                (false, None, _) => self.old_key.public_key_pem(),
                (true, _, None) => self.new_key.public_key_pem(),
            }
        };
        match b {
            Bundle::OldNew => entry(false) + &entry(true),
            Bundle::NewOld => entry(true) + &entry(false),
            Bundle::New => entry(true),
        }
    }

    /// The key file content matching the first entry of a bundle.
    fn key_bytes(&self, b: Bundle) -> &[u8] {
        match b {
            Bundle::OldNew => &self.old_key_pem,
            Bundle::NewOld | Bundle::New => &self.new_key_pem,
        }
    }

    fn new_ca(&self) -> Result<Ca> {
        let cert = self
            .new_cert
            .clone()
            .ok_or_else(|| Error::Config("the service-account key has no CA".into()))?;
        let key = PrivateKey::from_pem(
            &String::from_utf8_lossy(&self.new_key_pem),
            Path::new("<staged new key>"),
        )?;
        Ok(Ca {
            cert,
            key: Some(key),
        })
    }
}

fn read_key(path: &Path) -> Result<(Zeroizing<Vec<u8>>, PrivateKey)> {
    let bytes = Zeroizing::new(fs::read(path).map_err(|e| Error::io(path, e))?);
    let text = Zeroizing::new(
        String::from_utf8(bytes.to_vec()).map_err(|_| Error::parse(path, "not UTF-8 text"))?,
    );
    let key = PrivateKey::from_pem(&text, path)?;
    Ok((bytes, key))
}

fn read_ca_cert(path: &Path, key: &PrivateKey) -> Result<Cert> {
    let cert = layout::load_cert(path)?.ok_or_else(|| Error::invalid(path, "missing"))?;
    layout::check_is_ca(&cert, path)?;
    if !cert.matches_key(key) {
        return Err(Error::invalid(path, "does not match its staged key"));
    }
    Ok(cert)
}

/// Writes `data` unless the file already holds exactly it.
fn write_if_changed(path: &Path, data: &[u8], mode: u32) -> Result<bool> {
    if fs::read(path).ok().as_deref() == Some(data) {
        return Ok(false);
    }
    store::write_atomic(path, data, mode)?;
    Ok(true)
}

/// Checks that nothing prevents `start`: the anchor holds exactly one CA (or public key) and
/// its key is present and matches.
pub fn precheck_start(plan: &Plan) -> Result<()> {
    let anchor = plan.anchor();
    let key_path = plan.key();
    let text = store::read_optional(&anchor)?
        .ok_or_else(|| Error::invalid(&anchor, "missing (run `pki init` first)"))?;
    let key = layout::load_key(&key_path)?;
    match plan.target.ca_id() {
        Some(_) => {
            let certs = parse_bundle(&text, &anchor)?;
            if certs.len() != 1 {
                return Err(Error::invalid(
                    &anchor,
                    format!(
                        "holds {} certificates; a rotation starts from exactly one CA",
                        certs.len()
                    ),
                ));
            }
            let key = key.ok_or_else(|| Error::CaKeyMissing {
                ca: anchor.clone(),
                key: key_path.clone(),
            })?;
            layout::check_is_ca(&certs[0], &anchor)?;
            layout::check_key_matches(&certs[0], &anchor, &key, &key_path)?;
        }
        None => {
            let key =
                key.ok_or_else(|| Error::invalid(&key_path, "missing (run `pki init` first)"))?;
            let keys = public_keys(&text);
            if keys.len() != 1 || !same_public_key(&keys[0], &key.public_key_der()) {
                return Err(Error::invalid(
                    &anchor,
                    format!(
                        "holds {} public keys; a rotation starts from exactly the public key of {}",
                        keys.len(),
                        key_path.display()
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// The DER SubjectPublicKeyInfos of the `PUBLIC KEY` blocks of a PEM text.
pub fn public_keys(text: &str) -> Vec<Vec<u8>> {
    x509_parser::pem::Pem::iter_from_buffer(text.as_bytes())
        .flatten()
        .filter(|b| b.label == "PUBLIC KEY")
        .map(|b| b.contents)
        .collect()
}

/// Carries out one step. `state` may be updated (and saved by the caller) — only the manifest
/// step records values, and it saves the state itself before editing anything.
pub fn run_step(
    step: &Step,
    plan: &Plan,
    state: &mut State,
    state_path: &Path,
    settings: &StepSettings,
    notes: &mut Vec<String>,
) -> Result<()> {
    match step {
        Step::StageOld => stage_old(plan),
        Step::StageNew => stage_new(plan, settings),
        Step::Signer(new) => {
            let m = Material::load(plan)?;
            let Some((crt, key)) = plan.signer() else {
                return Ok(());
            };
            let (cert, key_pem) = if *new {
                (m.new_cert.as_ref(), &m.new_key_pem)
            } else {
                (m.old_cert.as_ref(), &m.old_key_pem)
            };
            let cert = cert.ok_or_else(|| Error::invalid(&crt, "no CA certificate staged"))?;
            let pem = cert.pem();
            if fs::read(&crt).ok().as_deref() == Some(pem.as_bytes())
                && fs::read(&key).ok().as_deref() == Some(&key_pem[..])
            {
                return Ok(());
            }
            store::write_many_atomic(&[
                (&key, key_pem, MODE_SECRET),
                (&crt, pem.as_bytes(), MODE_PUBLIC),
            ])
        }
        Step::ManifestsToSigner => manifests_to_signer(plan, state, state_path),
        Step::ManifestsRestore => {
            let Some(path) = plan.kcm_manifest() else {
                return Ok(());
            };
            let text = read_manifest(&path)?;
            let mut out = text.clone();
            for e in &state.manifest_flags {
                out = manifests::set_flag(&out, &e.flag, &e.original)
                    .ok_or_else(|| Error::invalid(&path, format!("has no {} flag", e.flag)))?;
            }
            write_if_changed(&path, out.as_bytes(), mode_or(&path, MODE_SECRET))?;
            Ok(())
        }
        Step::Anchor(b) => {
            let m = Material::load(plan)?;
            let anchor = plan.anchor();
            let key = plan.key();
            let text = m.anchor_text(*b);
            let key_bytes = m.key_bytes(*b);
            let same = fs::read(&anchor).ok().as_deref() == Some(text.as_bytes())
                && fs::read(&key).ok().as_deref() == Some(key_bytes);
            if !same {
                // Key first: the moment between the renames never leaves a bundle whose first
                // entry lacks its key for longer than one rename.
                store::write_many_atomic(&[
                    (&key, key_bytes, MODE_SECRET),
                    (&anchor, text.as_bytes(), MODE_PUBLIC),
                ])?;
            }
            Ok(())
        }
        Step::Kubeconfig(path, b, reissue) => {
            kubeconfig_step(plan, path, *b, *reissue, settings, notes)
        }
        Step::Leaf(leaf) => {
            let m = Material::load(plan)?;
            let ca = m.new_ca()?;
            let crt = plan.layout.crt(leaf.base);
            let key_path = plan.layout.key(leaf.base);
            let Some(cert) = layout::load_cert(&crt)? else {
                notes.push(format!("{} is missing; not re-issued", crt.display()));
                return Ok(());
            };
            let key_ok = layout::load_key(&key_path)?.is_some_and(|k| cert.matches_key(&k));
            if cert.is_signed_by(&ca.cert) && key_ok {
                return Ok(());
            }
            let (new, key) = renew::reissue(&cert, &ca, settings.leaf_validity)?;
            layout::write_cert_and_key(&crt, &new, &key_path, &key)
        }
        Step::RemoveSigner => {
            if let Some((crt, key)) = plan.signer() {
                for p in [crt, key] {
                    remove_if_present(&p)?;
                }
            }
            Ok(())
        }
        Step::Unstage => {
            let dir = plan.staged_dir();
            match fs::remove_dir_all(&dir) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(Error::io(&dir, e)),
            }
        }
    }
}

/// Removes a file if it exists and syncs its directory.
pub fn remove_if_present(p: &Path) -> Result<()> {
    match fs::remove_file(p) {
        Ok(()) => {
            if let Some(d) = p.parent() {
                store::sync_dir(d)?;
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io(p, e)),
    }
}

fn mode_or(path: &Path, default: u32) -> u32 {
    store::mode_of(path).unwrap_or(default)
}

fn stage_old(plan: &Plan) -> Result<()> {
    let dir = plan.staged_dir();
    create_private_dir(&plan.rotation_dir())?;
    create_private_dir(&dir)?;
    let (old_crt, old_key) = (plan.staged_old_crt(), plan.staged_old_key());
    let staged_ok = match plan.target.ca_id() {
        Some(_) => old_key.exists() && old_crt.exists(),
        None => old_key.exists(),
    };
    if staged_ok {
        // Staged by an earlier (interrupted) run of this phase: it must still load and still be
        // the first entry of the anchor (nothing but this rotation may have changed it).
        let (_, key) = read_key(&old_key)?;
        let anchor = plan.anchor();
        let text = store::read_optional(&anchor)?.unwrap_or_default();
        let first_matches = match plan.target.ca_id() {
            Some(_) => {
                let staged = read_ca_cert(&old_crt, &key)?;
                parse_bundle(&text, &anchor)?
                    .first()
                    .is_some_and(|c| c.der() == staged.der())
            }
            None => public_keys(&text)
                .first()
                .is_some_and(|k| same_public_key(k, &key.public_key_der())),
        };
        if !first_matches {
            return Err(Error::invalid(
                &anchor,
                format!(
                    "its first entry is not the staged old {} ({}); run `pki rotate {} abort`",
                    plan.target,
                    old_key.display(),
                    plan.target
                ),
            ));
        }
        return Ok(());
    }
    precheck_start(plan)?;
    let key_path = plan.key();
    let key_bytes = Zeroizing::new(fs::read(&key_path).map_err(|e| Error::io(&key_path, e))?);
    match plan.target.ca_id() {
        Some(_) => {
            let anchor = plan.anchor();
            let text = store::read_optional(&anchor)?.unwrap_or_default();
            let cert = Cert::from_pem(&text, &anchor)?;
            store::write_many_atomic(&[
                (&old_key, &key_bytes, MODE_SECRET),
                (&old_crt, cert.pem().as_bytes(), MODE_SECRET),
            ])
        }
        None => store::write_atomic(&old_key, &key_bytes, MODE_SECRET),
    }
}

fn stage_new(plan: &Plan, settings: &StepSettings) -> Result<()> {
    let (old_key_pem, old_key) = read_key(&plan.staged_old_key())?;
    drop(old_key_pem);
    let (new_crt, new_key_path) = (plan.staged_new_crt(), plan.staged_new_key());
    let key = match layout::load_key(&new_key_path)? {
        Some(k) => k,
        None => {
            let alg = algorithm_of_spki(&old_key.public_key_der()).unwrap_or_default();
            let k = PrivateKey::generate(alg)?;
            store::write_atomic(&new_key_path, k.pem().as_bytes(), MODE_SECRET)?;
            k
        }
    };
    let Some(id) = plan.target.ca_id() else {
        return Ok(());
    };
    if let Some(c) = layout::load_cert(&new_crt)?
        && c.matches_key(&key)
        && c.info().is_ca
    {
        return Ok(());
    }
    let old = read_ca_cert(&plan.staged_old_crt(), &old_key)?;
    let p = profile::ca_profile(id);
    let now = OffsetDateTime::now_utc();
    // A distinguishable subject (and, being a new key, a different subject key id), so every
    // verifier picks the right CA of the bundle by issuer name.
    let mut cn = format!(
        "{}-{:04}{:02}{:02}{:02}{:02}{:02}",
        p.common_name,
        now.year(),
        u8::from(now.month()),
        now.day(),
        now.hour(),
        now.minute(),
        now.second()
    );
    if cn == old.info().common_name {
        cn.push_str("-2");
    }
    let cert = issue::self_signed_ca(&CertSpec::ca(cn, p.dns_names, settings.ca_validity), &key)?;
    store::write_atomic(&new_crt, cert.pem().as_bytes(), MODE_SECRET)
}

fn read_manifest(path: &Path) -> Result<String> {
    store::read_optional(path)?.ok_or_else(|| Error::invalid(path, "missing"))
}

fn manifests_to_signer(plan: &Plan, state: &mut State, state_path: &Path) -> Result<()> {
    let (Some(path), Some((signer_crt, signer_key))) = (plan.kcm_manifest(), plan.signer()) else {
        return Ok(());
    };
    let text = read_manifest(&path)?;
    if state.manifest_flags.is_empty() {
        // Record the original values before editing, so a crash right after the edit cannot
        // make a rerun mistake the signer paths for the originals.
        for flag in [SIGNING_CERT_FLAG, SIGNING_KEY_FLAG] {
            let original = manifests::flag_value(&text, flag)
                .ok_or_else(|| Error::invalid(&path, format!("has no {flag} flag")))?;
            state.manifest_flags.push(FlagEdit {
                file: path.clone(),
                flag: flag.to_owned(),
                original,
            });
        }
        super::state::save(state_path, state)?;
    }
    let mut out = text.clone();
    for e in &state.manifest_flags {
        // Keep the directory the pod sees (the manifest's own path), change only the file name.
        let file = if e.flag == SIGNING_CERT_FLAG {
            &signer_crt
        } else {
            &signer_key
        };
        let name = file
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let value = match Path::new(&e.original).parent() {
            Some(d) if !d.as_os_str().is_empty() => d.join(&name).display().to_string(),
            _ => name,
        };
        out = manifests::set_flag(&out, &e.flag, &value)
            .ok_or_else(|| Error::invalid(&path, format!("has no {} flag", e.flag)))?;
    }
    write_if_changed(&path, out.as_bytes(), mode_or(&path, MODE_SECRET))?;
    Ok(())
}

fn kubeconfig_step(
    plan: &Plan,
    path: &Path,
    b: Bundle,
    reissue: bool,
    settings: &StepSettings,
    notes: &mut Vec<String>,
) -> Result<()> {
    let Some(text) = store::read_secret_optional(path)? else {
        return Ok(());
    };
    let m = Material::load(plan)?;
    let ca_pem = m.anchor_text(b);
    let embedded = kubeconfig::client_is_embedded(&text, path)?;
    let mut issued = None;
    if reissue && embedded {
        let parsed = kubeconfig::parse(&text, path)?;
        let ca = m.new_ca()?;
        if let Some(cert) = parsed.client_cert
            && !cert.is_signed_by(&ca.cert)
        {
            issued = Some(renew::reissue(&cert, &ca, settings.leaf_validity)?);
        }
    } else if reissue {
        notes.push(format!(
            "{}: client certificate is a file reference (kubelet-managed); issue a new one with `pki kubelet` or let the kubelet rotate it through a CSR",
            path.display()
        ));
    }
    let out =
        kubeconfig::rewrite_embedded(&text, path, &ca_pem, issued.as_ref().map(|(c, k)| (c, k)))?
            .ok_or_else(|| Error::invalid(path, "client credentials are not embedded"))?;
    write_if_changed(path, out.as_bytes(), MODE_SECRET)?;
    Ok(())
}

/// Before `finish` of a CA: every leaf and embedded kubeconfig client certificate must already
/// be signed by the new CA, or dropping the old CA would break it.
pub fn precheck_finish_ca(plan: &Plan) -> Result<()> {
    let m = Material::load(plan)?;
    let ca = m.new_ca()?;
    for leaf in plan.leaves() {
        let crt = plan.layout.crt(leaf.base);
        if let Some(cert) = layout::load_cert(&crt)?
            && !cert.is_signed_by(&ca.cert)
        {
            return Err(Error::invalid(
                &crt,
                format!(
                    "is not signed by the new CA {:?}; rerun `pki rotate {} switch` (or `pki renew {}`) first",
                    ca.cert.info().common_name,
                    plan.target,
                    leaf.name
                ),
            ));
        }
    }
    for path in plan.kubeconfigs() {
        let Some(text) = store::read_secret_optional(&path)? else {
            continue;
        };
        let embedded = kubeconfig::client_is_embedded(&text, &path)?;
        let parsed = match kubeconfig::parse(&text, &path) {
            Ok(p) => p,
            // A referenced client certificate that is not on this machine (another node's
            // kubelet) cannot be checked here.
            Err(Error::Io { .. }) if !embedded => continue,
            Err(e) => return Err(e),
        };
        if let Some(cert) = parsed.client_cert
            && !cert.is_signed_by(&ca.cert)
        {
            let how = if embedded {
                "rerun `pki rotate ca switch` first".to_owned()
            } else {
                "it is the kubelet's own certificate: issue a new one with `pki kubelet` (or let the kubelet rotate it through a CSR) first".to_owned()
            };
            return Err(Error::invalid(
                &path,
                format!(
                    "client certificate is not signed by the new CA {:?}; {how}",
                    ca.cert.info().common_name
                ),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::Layout;
    use crate::rotate::plan::Target;

    fn names(plan: &Plan, phase: Phase) -> Vec<String> {
        steps(plan, phase).iter().map(|s| s.name(plan)).collect()
    }

    #[test]
    fn step_order_per_phase() {
        let layout = Layout::new("/k/pki", "/k");
        let ca = Plan::new(Target::Ca, layout.clone(), Some("/m".into()));
        let start = names(&ca, Phase::Start);
        assert_eq!(
            start[..5],
            [
                "stage-old",
                "stage-new",
                "signer:old",
                "manifests:signer",
                "anchor:old+new"
            ]
        );
        assert_eq!(start.len(), 5 + 5, "five kubeconfigs");
        let switch = names(&ca, Phase::Switch);
        assert_eq!(switch[0], "leaf:apiserver");
        // The signer switches before the anchor's first entry (and ca.key) does.
        assert_eq!(switch[switch.len() - 2..], ["signer:new", "anchor:new+old"]);
        let finish = names(&ca, Phase::Finish);
        // ca.crt is a single certificate again before the manifest points back at it.
        let anchor = finish.iter().position(|n| n == "anchor:new");
        let restore = finish.iter().position(|n| n == "manifests:restore");
        assert!(anchor < restore && anchor.is_some());
        assert_eq!(finish[finish.len() - 2..], ["signer:remove", "unstage"]);

        let sa = Plan::new(Target::Sa, layout, None);
        assert_eq!(
            names(&sa, Phase::Start),
            ["stage-old", "stage-new", "anchor:old+new"]
        );
        assert_eq!(names(&sa, Phase::Switch), ["anchor:new+old"]);
        assert_eq!(names(&sa, Phase::Finish), ["anchor:new", "unstage"]);
    }
}
