//! The trust anchor with the key beside it, and the single-certificate signer files of `ca`.

use super::{all_unchanged, remove_if_present};
use crate::error::{Error, Result};
use crate::rotate::material::Material;
use crate::rotate::plan::Plan;
use crate::rotate::steps::{Bundle, Generation};
use crate::store::{self, MODE_PUBLIC, MODE_SECRET};

/// Writes the anchor (CA bundle or `sa.pub`) for `bundle` and the key matching its first entry.
pub(super) fn anchor(plan: &Plan, bundle: Bundle) -> Result<()> {
    let m = Material::load(plan)?;
    let (anchor, key) = (plan.anchor(), plan.key());
    let text = m.anchor_text(bundle);
    let key_bytes = m.key_bytes(bundle.signer());
    if all_unchanged(&[(&anchor, text.as_bytes()), (&key, key_bytes)]) {
        return Ok(());
    }
    // Key first: the moment between the renames never leaves a bundle whose first entry lacks
    // its key for longer than one rename.
    store::write_many_atomic(&[
        (&key, key_bytes, MODE_SECRET),
        (&anchor, text.as_bytes(), MODE_PUBLIC),
    ])
}

/// Writes the signer files (`ca-signer.crt`/`.key`) from one CA; nothing for other targets.
pub(super) fn signer(plan: &Plan, generation: Generation) -> Result<()> {
    let Some((crt, key)) = plan.signer() else {
        return Ok(());
    };
    let m = Material::load(plan)?;
    let cert = m
        .cert(generation)
        .ok_or_else(|| Error::invalid(&crt, "no CA certificate staged"))?;
    let pem = cert.pem();
    let key_pem = m.key_bytes(generation);
    if all_unchanged(&[(&crt, pem.as_bytes()), (&key, key_pem)]) {
        return Ok(());
    }
    store::write_many_atomic(&[
        (&key, key_pem, MODE_SECRET),
        (&crt, pem.as_bytes(), MODE_PUBLIC),
    ])
}

/// Removes the signer files.
pub(super) fn remove_signer(plan: &Plan) -> Result<()> {
    if let Some((crt, key)) = plan.signer() {
        for p in [crt, key] {
            remove_if_present(&p)?;
        }
    }
    Ok(())
}
