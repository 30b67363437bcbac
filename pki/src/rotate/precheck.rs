//! What must hold before a phase begins (an interrupted phase resumes without them): `start`
//! needs exactly one CA (or public key) with its matching key; `finish` of a CA needs every leaf
//! and kubeconfig client already signed by the new CA; `sa finish` needs every token signed by
//! the old key to have expired, which must be established from the state file or overridden with
//! `--force`. Each check fails closed.

use time::OffsetDateTime;

use super::anchor::public_keys;
use super::material::Material;
use super::plan::{self, Phase, Plan, Target};
use super::state::{self, State};
use crate::error::{Error, Result};
use crate::inspect::{parse_bundle, same_public_key};
use crate::kubeconfig;
use crate::layout;
use crate::store;

/// Checks what must hold before `phase` of `plan` begins. `force` lets `sa finish` run without
/// waiting for the old key's tokens to expire.
pub(crate) fn precheck(plan: &Plan, s: &State, phase: Phase, force: bool) -> Result<()> {
    match phase {
        Phase::Start => precheck_start(plan),
        Phase::Switch => Ok(()),
        Phase::Finish if plan.target == Target::Sa => old_tokens_expired(plan, s, force),
        Phase::Finish => precheck_finish_ca(plan),
    }
}

/// Checks that nothing prevents `start`: the anchor holds exactly one CA (or public key) and
/// its key is present and matches.
pub(crate) fn precheck_start(plan: &Plan) -> Result<()> {
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
            let keys = public_keys(&text, &anchor)?;
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

/// Before `sa finish`: the maximum token lifetime must have passed since `switch`. When the
/// state file cannot tell (no switch time or lifetime recorded), that is a refusal too.
fn old_tokens_expired(plan: &Plan, s: &State, force: bool) -> Result<()> {
    if force {
        return Ok(());
    }
    let state_path = plan::state_path(&plan.layout);
    let Some(until) = s.tokens_valid_until() else {
        return Err(Error::RotationRefused {
            state: state_path,
            reason: "refusing to drop the old service-account key: the state file records no switch time or token lifetime, so when the tokens it signed expire is unknown; once the longest token lifetime has passed since switch, pass --force".into(),
        });
    };
    if OffsetDateTime::now_utc() < until {
        return Err(Error::TokensStillValid {
            state: state_path,
            until: state::format_rfc3339(until),
            lifetime_secs: s.max_token_lifetime_secs.unwrap_or_default(),
        });
    }
    Ok(())
}

/// Before `finish` of a CA: every leaf and embedded kubeconfig client certificate must already
/// be signed by the new CA, or dropping the old CA would break it.
fn precheck_finish_ca(plan: &Plan) -> Result<()> {
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

    fn sa_after_switch() -> (Plan, State) {
        let plan = Plan::new(Target::Sa, Layout::new("/k/pki", "/k"), None);
        let mut s = State::new(Target::Sa, None);
        s.completed = vec![Phase::Start, Phase::Switch];
        s.max_token_lifetime_secs = Some(3600);
        s.switched_at = Some(OffsetDateTime::now_utc());
        (plan, s)
    }

    #[test]
    fn sa_finish_waits_for_the_token_lifetime() {
        let (plan, mut s) = sa_after_switch();
        assert!(matches!(
            precheck(&plan, &s, Phase::Finish, false),
            Err(Error::TokensStillValid {
                lifetime_secs: 3600,
                ..
            })
        ));
        assert!(precheck(&plan, &s, Phase::Finish, true).is_ok());
        s.switched_at = Some(OffsetDateTime::now_utc() - time::Duration::hours(2));
        assert!(precheck(&plan, &s, Phase::Finish, false).is_ok());
    }

    #[test]
    fn sa_finish_fails_closed_without_switch_time_or_lifetime() {
        let (plan, mut s) = sa_after_switch();
        s.switched_at = None;
        let Err(Error::RotationRefused { reason, state }) =
            precheck(&plan, &s, Phase::Finish, false)
        else {
            panic!("finish admitted without a switch time");
        };
        assert!(reason.contains("--force"), "{reason}");
        assert_eq!(state, plan::state_path(&plan.layout));
        assert!(precheck(&plan, &s, Phase::Finish, true).is_ok());
        let (plan, mut s) = sa_after_switch();
        s.max_token_lifetime_secs = None;
        assert!(precheck(&plan, &s, Phase::Finish, false).is_err());
    }
}
