//! The staging area `.rotation/staged/<target>/`: a verbatim copy of the old CA (key), the new
//! CA (key) generated once, and its removal at the end.

use std::fs;

use time::OffsetDateTime;
use zeroize::Zeroizing;

use super::StepSettings;
use crate::error::{Error, Result};
use crate::inspect::{Cert, parse_bundle, same_public_key};
use crate::issue::{self, CertSpec};
use crate::key::{PrivateKey, algorithm_of_spki};
use crate::layout;
use crate::profile;
use crate::rotate::anchor::public_keys;
use crate::rotate::material::{read_ca_cert, read_key};
use crate::rotate::plan::Plan;
use crate::rotate::precheck::precheck_start;
use crate::store::{self, MODE_SECRET};

/// Copies the current CA (or key) to the staging area. When an interrupted run staged it
/// already, checks that it is still the first entry of the anchor instead.
pub(super) fn stage_old(plan: &Plan) -> Result<()> {
    store::ensure_private_dir(&plan.rotation_dir())?;
    store::ensure_private_dir(&plan.staged_dir())?;
    let (old_crt, old_key) = (plan.staged_old_crt(), plan.staged_old_key());
    let staged = match plan.target.ca_id() {
        Some(_) => old_key.exists() && old_crt.exists(),
        None => old_key.exists(),
    };
    if staged {
        return check_staged_old_is_current(plan);
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

/// The old CA (key) staged by an earlier (interrupted) run must still load and still be the
/// first entry of the anchor: nothing but this rotation may have changed it.
fn check_staged_old_is_current(plan: &Plan) -> Result<()> {
    let old_key = plan.staged_old_key();
    let (_, key) = read_key(&old_key)?;
    let anchor = plan.anchor();
    let text = store::read_optional(&anchor)?.unwrap_or_default();
    let first_matches = match plan.target.ca_id() {
        Some(_) => {
            let staged = read_ca_cert(&plan.staged_old_crt(), &key)?;
            parse_bundle(&text, &anchor)?
                .first()
                .is_some_and(|c| c.der() == staged.der())
        }
        None => public_keys(&text, &anchor)?
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
    Ok(())
}

/// Generates the new key (same algorithm as the old one) and, for a CA, its self-signed
/// certificate; keeps what an interrupted run already generated.
pub(super) fn stage_new(plan: &Plan, settings: &StepSettings) -> Result<()> {
    let (_, old_key) = read_key(&plan.staged_old_key())?;
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
    // A distinguishable subject (and, being a new key, a different subject key id), so every
    // verifier picks the right CA of the bundle by issuer name.
    let mut cn = format!(
        "{}-{}",
        p.common_name,
        compact_timestamp(OffsetDateTime::now_utc())
    );
    if cn == old.info().common_name {
        cn.push_str("-2");
    }
    let cert = issue::self_signed_ca(&CertSpec::ca(cn, p.dns_names, settings.ca_validity), &key)?;
    store::write_atomic(&new_crt, cert.pem().as_bytes(), MODE_SECRET)
}

/// `YYYYMMDDhhmmss`.
fn compact_timestamp(t: OffsetDateTime) -> String {
    format!(
        "{:04}{:02}{:02}{:02}{:02}{:02}",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// Removes the staging area (the old key stays in the backups).
pub(super) fn unstage(plan: &Plan) -> Result<()> {
    let dir = plan.staged_dir();
    match fs::remove_dir_all(&dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io(&dir, e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_ca_names_carry_a_compact_timestamp() {
        let t = time::macros::datetime!(2026-03-04 05:06:07 UTC);
        assert_eq!(compact_timestamp(t), "20260304050607");
    }
}
