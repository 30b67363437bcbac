//! `start --export` and `start --join`: the new CA (key) of a rotation is generated once, on the
//! first control-plane node, and carried to every other node in the encrypted [`super::shared`]
//! file. A joining node checks everything before changing anything: the file decrypts, is of
//! this target, its old CA (old service-account public key) is this node's current one, and its
//! new key matches its new CA.

use std::path::Path;

use zeroize::Zeroizing;

use super::anchor::public_keys;
use super::material::Material;
use super::options::Options;
use super::plan::Plan;
use super::shared::{self, CertificateKey, PublicPart, SharedMaterial};
use super::state::State;
use super::steps::Generation;
use crate::error::{Error, Result};
use crate::inspect::{Cert, parse_bundle, same_public_key};
use crate::key::PrivateKey;
use crate::store::{self, MODE_SECRET};

fn key_of<'a>(opts: &'a Options, flag: &str) -> Result<&'a CertificateKey> {
    opts.certificate_key
        .as_ref()
        .ok_or_else(|| Error::Config(format!("{flag} needs --certificate-key")))
}

/// The DER of the first entry of an anchor text: a CA certificate, or a public key (`sa`).
fn first_entry(plan: &Plan, text: &str, origin: &Path) -> Result<Option<Vec<u8>>> {
    Ok(match plan.target.ca_id() {
        Some(_) => parse_bundle(text, origin)?
            .first()
            .map(|c| c.der().to_vec()),
        None => public_keys(text, origin)?.into_iter().next(),
    })
}

/// Reads `--join`'s file and checks it against this node; `None` without `--join`.
pub(crate) fn load(plan: &Plan, opts: &Options) -> Result<Option<SharedMaterial>> {
    let Some(path) = opts.join.as_deref() else {
        return Ok(None);
    };
    let m = shared::read(path, key_of(opts, "--join")?, plan.target, true)?;
    let anchor = plan.anchor();
    let current = store::read_optional(&anchor)?.unwrap_or_default();
    let theirs = first_entry(plan, &m.public.old_anchor, path)?;
    let ours = first_entry(plan, &current, &anchor)?;
    let same = match (&theirs, &ours) {
        (Some(a), Some(b)) if plan.target.ca_id().is_some() => a == b,
        (Some(a), Some(b)) => same_public_key(a, b),
        _ => false,
    };
    if !same {
        return Err(Error::invalid(
            path,
            format!(
                "its old {} is not this node's current one ({}): this node belongs to another cluster, or is already rotated",
                plan.target,
                anchor.display()
            ),
        ));
    }
    new_key(plan, &m, path)?;
    Ok(Some(m))
}

/// The new key of the file, checked against its new anchor entry.
fn new_key(plan: &Plan, m: &SharedMaterial, path: &Path) -> Result<PrivateKey> {
    let pem = m
        .new_key_pem
        .as_ref()
        .ok_or_else(|| Error::invalid(path, "the new private key was not opened"))?;
    let key = PrivateKey::from_pem(pem, path)?;
    let matches = match plan.target.ca_id() {
        Some(_) => {
            let cert = Cert::from_pem(&m.public.new_anchor, path)?;
            cert.info().is_ca && cert.matches_key(&key)
        }
        None => public_keys(&m.public.new_anchor, path)?
            .first()
            .is_some_and(|k| same_public_key(k, &key.public_key_der())),
    };
    if !matches {
        return Err(Error::invalid(
            path,
            "its new key does not match its new CA (public key)",
        ));
    }
    Ok(key)
}

/// Puts the file's new CA (key) into the staging area, where `stage-new` keeps it.
pub(crate) fn stage(plan: &Plan, m: &SharedMaterial) -> Result<()> {
    store::ensure_private_dir(&plan.rotation_dir())?;
    store::ensure_private_dir(&plan.staged_dir())?;
    let pem = m
        .new_key_pem
        .as_ref()
        .ok_or_else(|| Error::Config("the new private key was not opened".into()))?;
    let key_path = plan.staged_new_key();
    match plan.target.ca_id() {
        Some(_) => store::write_many_atomic(&[
            (&key_path, pem.as_bytes(), MODE_SECRET),
            (
                &plan.staged_new_crt(),
                m.public.new_anchor.as_bytes(),
                MODE_SECRET,
            ),
        ]),
        None => store::write_atomic(&key_path, pem.as_bytes(), MODE_SECRET),
    }
}

/// Writes `--export`'s control-plane file and the workers' public bundle beside it from the
/// staged material of the rotation's `start`; returns the note that tells the operator where the
/// bundle is and its pin (`None` without `--export`).
pub(crate) fn export(plan: &Plan, s: &State, opts: &Options) -> Result<Option<String>> {
    let Some(path) = opts.export.as_deref() else {
        return Ok(None);
    };
    let key = key_of(opts, "--export")?;
    let material = Material::load(plan)?;
    let new_key_pem = String::from_utf8(material.key_bytes(Generation::New).to_vec())
        .map_err(|_| Error::parse(plan.staged_new_key(), "not UTF-8 text"))?;
    let m = SharedMaterial {
        target: plan.target,
        rotation_id: s.rotation_id.clone().unwrap_or_default(),
        public: PublicPart {
            old_anchor: material.anchor_entry(Generation::Old),
            new_anchor: material.anchor_entry(Generation::New),
        },
        new_key_pem: Some(Zeroizing::new(new_key_pem)),
    };
    let expires_at = shared::write(path, key, &m, opts.export_ttl)?;
    let public = opts
        .export_public
        .clone()
        .unwrap_or_else(|| shared::public_path(path));
    let pin = shared::write_public(&public, &m)?;
    let workers = if plan.target == super::plan::Target::Ca {
        format!(
            "; on every worker node: `pki rotate ca start --worker --join {} --ca-cert-hash {pin}`",
            public.display()
        )
    } else {
        String::new()
    };
    Ok(Some(format!(
        "{} (control-plane nodes only: it holds the new private key) is accepted until {}; the \
         public bundle {} holds CA certificates only, new CA pinned by {pin}{workers}",
        path.display(),
        expires_at,
        public.display()
    )))
}
