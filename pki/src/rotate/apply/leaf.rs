//! Re-issuing a leaf certificate from the new CA at `switch`: same subject, SANs and usages,
//! fresh key.

use super::StepSettings;
use crate::error::Result;
use crate::layout;
use crate::profile::LeafProfile;
use crate::renew;
use crate::rotate::material::Material;
use crate::rotate::plan::Plan;

/// Re-issues `leaf` unless it is already signed by the new CA with a matching key. A missing
/// leaf is not created; the returned remark says so.
pub(super) fn reissue(
    plan: &Plan,
    leaf: &LeafProfile,
    settings: &StepSettings,
) -> Result<Option<String>> {
    let ca = Material::load(plan)?.new_ca()?;
    let crt = plan.layout.crt(leaf.base);
    let key_path = plan.layout.key(leaf.base);
    let Some(cert) = layout::load_cert(&crt)? else {
        return Ok(Some(format!("{} is missing; not re-issued", crt.display())));
    };
    let key_ok = layout::load_key(&key_path)?.is_some_and(|k| cert.matches_key(&k));
    if cert.is_signed_by(&ca.cert) && key_ok {
        return Ok(None);
    }
    let (new, key) = renew::reissue(&cert, &ca, settings.leaf_validity)?;
    layout::write_cert_and_key(&crt, &new, &key_path, &key)?;
    Ok(None)
}
