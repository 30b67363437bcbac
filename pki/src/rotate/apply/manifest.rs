//! kube-controller-manager's `--cluster-signing-*-file` flags during a rotation of `ca` (with
//! `--manifests-dir`): pointed at the single-certificate signer files at `start`, back to their
//! recorded original values at `finish`.

use std::path::Path;

use super::write_if_changed;
use crate::error::{Error, Result};
use crate::rotate::manifests::{self, SIGNING_CERT_FLAG, SIGNING_KEY_FLAG};
use crate::rotate::plan::{self, Plan};
use crate::rotate::state::{self, FlagEdit, State};
use crate::store::{self, MODE_SECRET};

/// Points the signing flags at the signer files, keeping the directory the pod sees. The
/// original values are recorded (and the state saved) before the manifest is edited, so a crash
/// right after the edit cannot make a rerun mistake the signer paths for the originals.
pub(super) fn to_signer(plan: &Plan, s: &mut State) -> Result<()> {
    let (Some(path), Some((signer_crt, signer_key))) = (plan.kcm_manifest(), plan.signer()) else {
        return Ok(());
    };
    let text = read_manifest(&path)?;
    if s.manifest_flags.is_empty() {
        for flag in [SIGNING_CERT_FLAG, SIGNING_KEY_FLAG] {
            let original = manifests::flag_value(&text, flag)
                .ok_or_else(|| Error::invalid(&path, format!("has no {flag} flag")))?;
            s.manifest_flags.push(FlagEdit {
                file: path.clone(),
                flag: flag.to_owned(),
                original,
            });
        }
        state::save(&plan::state_path(&plan.layout), s)?;
    }
    let mut out = text;
    for e in &s.manifest_flags {
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
        out = set_flag(&out, &path, &e.flag, &value)?;
    }
    write_if_changed(&path, out.as_bytes(), mode_or_secret(&path))
}

/// Puts the signing flags back to the values recorded at `start`.
pub(super) fn restore(plan: &Plan, s: &State) -> Result<()> {
    let Some(path) = plan.kcm_manifest() else {
        return Ok(());
    };
    let mut out = read_manifest(&path)?;
    for e in &s.manifest_flags {
        out = set_flag(&out, &path, &e.flag, &e.original)?;
    }
    write_if_changed(&path, out.as_bytes(), mode_or_secret(&path))
}

fn read_manifest(path: &Path) -> Result<String> {
    store::read_optional(path)?.ok_or_else(|| Error::invalid(path, "missing"))
}

fn set_flag(text: &str, path: &Path, flag: &str, value: &str) -> Result<String> {
    manifests::set_flag(text, flag, value)
        .ok_or_else(|| Error::invalid(path, format!("has no {flag} flag")))
}

/// The manifest keeps its mode; 0600 when it has none yet.
fn mode_or_secret(path: &Path) -> u32 {
    store::mode_of(path).unwrap_or(MODE_SECRET)
}
