//! Worker nodes in a `ca` rotation (`start --join FILE --worker`, `finish --worker`): a worker
//! holds only trust files, `ca.crt` (the kubelet's `clientCAFile`) and `kubelet.conf`'s CA data.
//! Both become old+new at `start` and new alone at `finish`, from the workers' public bundle
//! (`FILE.public` of `--export`, pinned by `--ca-cert-hash`): a worker never receives the
//! control-plane file or its key. What `finish` needs is kept in `.rotation/worker.json`.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::coordinator::{Move, NodeReport};
use super::options::Options;
use super::outcome::Outcome;
use super::plan::{self, Phase, Target};
use super::restart::RestartStep;
use super::session;
use super::shared;
use crate::error::{Error, Result};
use crate::inspect::parse_bundle;
use crate::kubeconfig;
use crate::layout::Layout;
use crate::store::{self, MODE_PUBLIC, MODE_SECRET};

/// What a worker records at `start`.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct WorkerState {
    rotation_id: String,
    old_anchor: String,
    new_anchor: String,
    phase: Phase,
}

fn state_path(layout: &Layout) -> PathBuf {
    plan::rotation_dir(layout).join("worker.json")
}

fn refused(layout: &Layout, reason: impl Into<String>) -> Error {
    Error::RotationRefused {
        state: state_path(layout),
        reason: reason.into(),
    }
}

/// `pki rotate ca start --worker --join FILE.public --ca-cert-hash sha256:<hex>`.
pub fn start(
    layout: &Layout,
    target: Target,
    join: &Path,
    pin: &str,
    opts: &mut Options,
) -> Result<Outcome> {
    if target != Target::Ca {
        return Err(refused(
            layout,
            "--worker applies to `ca` only: a worker holds no other CA",
        ));
    }
    let _lock = session::open(layout, None)?;
    let (rotation_id, public) = shared::read_public(join, target, pin)?;
    let ca_path = layout.cert_dir.join("ca.crt");
    let current = store::read_optional(&ca_path)?.unwrap_or_default();
    let first = parse_bundle(&current, &ca_path)?;
    let old = parse_bundle(&public.old_anchor, join)?;
    if first.first().map(|c| c.der()) != old.first().map(|c| c.der()) {
        return Err(Error::invalid(
            join,
            format!(
                "its old ca is not this node's current one ({})",
                ca_path.display()
            ),
        ));
    }
    let me = report(layout, &rotation_id, &public.old_anchor, &public.new_anchor)?;
    if let Some(s) = load(layout)?
        && s.rotation_id == rotation_id
    {
        // Started (or finished) already: published again (e.g. with the kubelet's renewed
        // client certificate), nothing else changes.
        let step = match s.phase {
            Phase::Finish => Move::Finish,
            _ => Move::Start,
        };
        let published = opts.coordinator().complete(target, step, &me)?;
        let mut o = outcome(target, Phase::Start, Some(WORKER_FINISH));
        o.already_done = true;
        o.steps.clear();
        o.restart.clear();
        o.notes = published;
        return Ok(o);
    }
    let notes = opts.coordinator().begin(target, Move::Start, &me)?;
    let bundle = format!("{}{}", public.old_anchor, public.new_anchor);
    write_trust(layout, &bundle)?;
    store::ensure_private_dir(&plan::rotation_dir(layout))?;
    let s = WorkerState {
        rotation_id,
        old_anchor: public.old_anchor,
        new_anchor: public.new_anchor,
        phase: Phase::Start,
    };
    save(layout, &s)?;
    let published = opts.coordinator().complete(target, Move::Start, &me)?;
    let mut o = outcome(target, Phase::Start, Some(WORKER_FINISH));
    o.notes = notes;
    o.notes.extend(published);
    Ok(o)
}

/// What a worker runs after `start`.
const WORKER_FINISH: &str =
    "pki rotate ca finish --worker (once switch is complete on every control-plane node)";

/// This worker's report to its peers.
fn report(layout: &Layout, rotation_id: &str, old: &str, new: &str) -> Result<NodeReport> {
    NodeReport::worker(
        state_path(layout),
        rotation_id,
        old,
        new,
        &layout.kubeconfig_dir.join("kubelet.conf"),
    )
}

/// The worker state, if a worker rotation was started here.
fn load(layout: &Layout) -> Result<Option<WorkerState>> {
    let path = state_path(layout);
    store::read_optional(&path)?
        .map(|text| serde_json::from_str(&text).map_err(|e| Error::parse(&path, e)))
        .transpose()
}

/// `pki rotate ca finish --worker`.
pub fn finish(layout: &Layout, target: Target, opts: &mut Options) -> Result<Outcome> {
    if target != Target::Ca {
        return Err(refused(layout, "--worker applies to `ca` only"));
    }
    let _lock = session::open(layout, None)?;
    let mut s = load(layout)?.ok_or_else(|| {
        refused(
            layout,
            "no worker rotation here: run `pki rotate ca start --join FILE --worker` first",
        )
    })?;
    let me = report(layout, &s.rotation_id, &s.old_anchor, &s.new_anchor)?;
    let notes = if s.phase == Phase::Finish {
        Vec::new()
    } else {
        opts.coordinator().begin(target, Move::Finish, &me)?
    };
    write_trust(layout, &s.new_anchor)?;
    s.phase = Phase::Finish;
    save(layout, &s)?;
    let published = opts.coordinator().complete(target, Move::Finish, &me)?;
    let mut o = outcome(target, Phase::Finish, None);
    o.notes = notes;
    o.notes.extend(published);
    Ok(o)
}

fn save(layout: &Layout, s: &WorkerState) -> Result<()> {
    let text = serde_json::to_string_pretty(s).map_err(|e| Error::Config(e.to_string()))?;
    store::write_atomic(&state_path(layout), text.as_bytes(), MODE_SECRET)
}

/// `ca.crt` and `kubelet.conf`'s CA data (when it embeds one) become `bundle`.
fn write_trust(layout: &Layout, bundle: &str) -> Result<()> {
    let ca_path = layout.cert_dir.join("ca.crt");
    let mode = store::mode_of(&ca_path).unwrap_or(MODE_PUBLIC);
    store::write_atomic(&ca_path, bundle.as_bytes(), mode)?;
    let conf = layout.kubeconfig_dir.join("kubelet.conf");
    if let Some(text) = store::read_secret_optional(&conf)? {
        let out = kubeconfig::rewrite_embedded(&text, &conf, bundle, None)?
            .ok_or_else(|| Error::invalid(&conf, "cannot rewrite its CA data"))?;
        let mode = store::mode_of(&conf).unwrap_or(MODE_SECRET);
        store::write_atomic(&conf, out.as_bytes(), mode)?;
    }
    Ok(())
}

fn outcome(target: Target, phase: Phase, next: Option<&str>) -> Outcome {
    Outcome {
        target,
        phase: Some(phase),
        already_done: false,
        steps: vec!["ca.crt".into(), "kubeconfig:kubelet.conf".into()],
        backup: None,
        notes: Vec::new(),
        restart: vec![RestartStep {
            action: "restart",
            component: "kubelet",
            nodes: "this worker node",
            reason: "loads clientCAFile and kubelet.conf CA data at start",
        }],
        next: next.map(str::to_owned),
    }
}
