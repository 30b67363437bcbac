//! Rewriting a kubeconfig during a rotation of `ca`: its CA data becomes the phase's bundle, and
//! at `switch` its embedded client certificate is re-issued from the new CA.

use std::path::Path;

use super::{StepSettings, write_if_changed};
use crate::error::{Error, Result};
use crate::kubeconfig;
use crate::renew;
use crate::rotate::material::Material;
use crate::rotate::plan::Plan;
use crate::rotate::steps::{Bundle, ClientCert};
use crate::store::{self, MODE_SECRET};

/// Writes `path` with CA data `trust` and, when `client` says so, a client certificate from the
/// new CA. A missing kubeconfig is left alone; a client certificate held in a file (the
/// kubelet's) cannot be re-issued here, and the returned remark says what to do.
pub(super) fn rewrite(
    plan: &Plan,
    path: &Path,
    trust: Bundle,
    client: ClientCert,
    settings: &StepSettings,
) -> Result<Option<String>> {
    let Some(text) = store::read_secret_optional(path)? else {
        return Ok(None);
    };
    let m = Material::load(plan)?;
    let ca_pem = m.anchor_text(trust);
    let embedded = kubeconfig::client_is_embedded(&text, path)?;
    let mut issued = None;
    let mut note = None;
    match (client, embedded) {
        (ClientCert::Keep, _) => {}
        (ClientCert::Reissue, true) => {
            let parsed = kubeconfig::parse(&text, path)?;
            let ca = m.new_ca()?;
            if let Some(cert) = parsed.client_cert
                && !cert.is_signed_by(&ca.cert)
            {
                issued = Some(renew::reissue(&cert, &ca, settings.leaf_validity)?);
            }
        }
        (ClientCert::Reissue, false) => {
            note = Some(format!(
                "{}: client certificate is a file reference (kubelet-managed); issue a new one with `pki kubelet` or let the kubelet rotate it through a CSR",
                path.display()
            ));
        }
    }
    let out =
        kubeconfig::rewrite_embedded(&text, path, &ca_pem, issued.as_ref().map(|(c, k)| (c, k)))?
            .ok_or_else(|| Error::invalid(path, "client credentials are not embedded"))?;
    write_if_changed(path, out.as_bytes(), MODE_SECRET)?;
    Ok(note)
}
