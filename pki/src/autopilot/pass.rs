//! The pass itself: lock, admission, jitter, plan, backup, renewal, restarts with rollback,
//! metrics. Each step is a function below; `run` reads as the procedure.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use time::OffsetDateTime;

use super::backoff::Backoff;
use super::backup::Backup;
use super::health;
use super::metrics::{self, PassMetrics};
use super::pending;
use super::plan::{self, Plan};
use super::reload::reloads_by_itself;
use super::restart;
use super::{Failure, Options, Outcome, RestartGate, peers};
use crate::error::{Error, Result};
use crate::layout::Layout;
use crate::renew::{self, RenewOptions};
use crate::rotate;
use crate::store;

/// Backups kept under `.autopilot/backups` (they hold private keys: older ones are removed).
const KEEP_BACKUPS: usize = 5;

/// How long a component that reloads files by itself has to serve the restored ones.
const ROLLBACK_RELOAD_TIMEOUT: Duration = Duration::from_secs(180);

/// Runs one pass. `Err` is an error before anything was decided (unreadable files); a pass
/// that stops on purpose returns an [`Outcome`] with `failure` set.
pub fn run(layout: &Layout, opts: &Options) -> Result<Outcome> {
    let work = layout.cert_dir.join(".autopilot");
    let _lock = match lock(&work, opts.dry_run)? {
        Ok(l) => l,
        Err(f) => {
            return Ok(Outcome {
                failure: Some(f),
                ..Outcome::default()
            });
        }
    };
    let started = OffsetDateTime::now_utc();
    let mut out = Outcome::default();
    if let Err(f) = rotation_admits(layout) {
        out.failure = Some(f);
        return finish(layout, opts, started, out);
    }
    let backoff = Backoff::load(&Backoff::path(&work))?;
    if backoff.active(started) {
        let until = crate::rotate::state::format_rfc3339(
            OffsetDateTime::from_unix_timestamp(backoff.until).unwrap_or(started),
        );
        out.failure = Some(Failure::BackingOff(format!(
            "{} pass(es) in a row failed or rolled back: no new attempt before {until} (fix the \
             cause, then remove {} to try at once)",
            backoff.consecutive_failures,
            Backoff::path(&work).display()
        )));
        return finish(layout, opts, started, out);
    }
    if !opts.dry_run {
        sleep_jitter(opts.jitter)?;
    }
    let now = OffsetDateTime::now_utc();
    let plan = plan::scan(layout, &opts.policy, now)?;
    out.warnings.clone_from(&plan.warnings);
    out.expiring_cas = plan
        .expiring_cas
        .iter()
        .map(|(n, t)| ((*n).to_owned(), *t))
        .collect();
    let pending_path = work.join("pending-restarts.json");
    let mut pending = pending::load(&pending_path)?;
    pending.extend(plan.restarts().into_iter().map(str::to_owned));
    if opts.dry_run {
        for d in &plan.due {
            out.renewed.push((d.name.to_owned(), d.files[0].clone()));
        }
        for c in ordered(&pending) {
            match (manifest_of(opts, c), reloads(layout, opts, c)) {
                (Some(_), Some(why)) => {
                    out.notes.push(format!("{c} would not be restarted: {why}"))
                }
                (Some(_), None) => out.restarted.push(c.to_owned()),
                (None, _) => out.not_restarted.push((c.to_owned(), no_manifest(opts, c))),
            }
        }
        return Ok(out);
    }
    // Nothing changes before this node may restart what it will restart, and etcd's peers
    // can spare this member.
    let restarts: Vec<&str> = ordered(&pending)
        .into_iter()
        .filter(|c| manifest_of(opts, c).is_some() && reloads(layout, opts, c).is_none())
        .collect();
    let _permit = match permit(opts, !restarts.is_empty(), &mut out.notes) {
        Ok(p) => p,
        Err(why) => {
            out.failure = Some(Failure::Waiting(why));
            return finish(layout, opts, started, out);
        }
    };
    if restarts.contains(&"etcd")
        && let Err(why) = etcd_peers_healthy(layout, opts)
    {
        out.failure = Some(Failure::Waiting(why));
        return finish(layout, opts, started, out);
    }
    let backup = if plan.due.is_empty() {
        None
    } else {
        let files: Vec<PathBuf> = plan.due.iter().flat_map(|d| d.files.clone()).collect();
        let stamp = started
            .format(&time::macros::format_description!(
                "[year][month][day]T[hour][minute][second]Z"
            ))
            .unwrap_or_default();
        let b = Backup::take(&work.join("backups"), &stamp, &files)?;
        Backup::prune(&work.join("backups"), KEEP_BACKUPS)?;
        out.backup = Some(b.dir().to_owned());
        // Recorded before renewing: a renewal that stops half-way still gets its restarts.
        pending::save(&pending_path, &pending)?;
        if let Err(e) = renew_due(layout, opts, &plan, &mut out) {
            out.failure = Some(Failure::Renew(format!(
                "renewal failed: {e}; previous files are in {}",
                b.dir().display()
            )));
            return finish(layout, opts, started, out);
        }
        Some(b)
    };
    let stamp = crate::rotate::state::format_rfc3339(OffsetDateTime::now_utc());
    for component in ordered(&pending.clone()) {
        match restart_one(
            layout,
            opts,
            &plan,
            backup.as_ref(),
            component,
            &stamp,
            &mut out,
        ) {
            Ok(()) => {
                pending.remove(component);
                pending::save(&pending_path, &pending)?;
            }
            Err(f) => {
                out.failure = Some(f);
                break;
            }
        }
    }
    finish(layout, opts, started, out)
}

/// Takes the pass lock; `Ok(Err(Locked))` when another pass holds it. A dry run locks only an
/// existing directory (it creates nothing).
/// The cluster-wide restart permission, held until dropped (`None`: not needed, or no
/// cluster view).
struct Permit(Arc<dyn RestartGate>);

impl Drop for Permit {
    fn drop(&mut self) {
        self.0.release();
    }
}

fn permit(
    opts: &Options,
    needed: bool,
    notes: &mut Vec<String>,
) -> std::result::Result<Option<Permit>, String> {
    match &opts.restart_gate {
        Some(g) if needed => {
            notes.push(g.acquire()?);
            Ok(Some(Permit(Arc::clone(g))))
        }
        _ => Ok(None),
    }
}

/// Every other etcd member answers healthy (waiting up to the health timeout).
fn etcd_peers_healthy(layout: &Layout, opts: &Options) -> std::result::Result<(), String> {
    let manifest = restart::manifest_path(&opts.manifests_dir, "etcd");
    let text = store::read_optional(&manifest)
        .map_err(|e| e.to_string())?
        .unwrap_or_default();
    let probe = health::probe_for("etcd", &text, layout).ok_or_else(|| {
        format!(
            "not restarting etcd: {} has no https --listen-client-urls to reach its peers through",
            manifest.display()
        )
    })?;
    let name = restart::flag_value(&text, "name").unwrap_or_else(|| "default".to_owned());
    peers::wait_others_healthy(&probe, &name, opts.health_timeout)
}

fn lock(
    work: &Path,
    dry_run: bool,
) -> Result<std::result::Result<Option<durable::DirLock>, Failure>> {
    if dry_run && !work.exists() {
        return Ok(Ok(None));
    }
    store::ensure_private_dir(work)?;
    match durable::lock_dir(work, durable::LockWait::Try) {
        Ok(l) => Ok(Ok(Some(l))),
        Err(e) if durable::is_held(&e) => Ok(Err(Failure::Locked)),
        Err(e) => Err(Error::io(work, e)),
    }
}

/// Refuses while a rotation is in progress; an unreadable state file refuses too.
fn rotation_admits(layout: &Layout) -> std::result::Result<(), Failure> {
    let path = layout.cert_dir.join(".rotation").join("state.json");
    match rotate::state::load(&path) {
        Ok(Some(s)) if s.is_active() => Err(Failure::RotationInProgress(format!(
            "a rotation of {} is in progress ({}): autopilot acts again after it finishes or is aborted",
            s.target.as_str(),
            path.display()
        ))),
        Ok(_) => Ok(()),
        Err(e) => Err(Failure::RotationInProgress(format!(
            "cannot tell whether a rotation is in progress: {e}"
        ))),
    }
}

fn sleep_jitter(jitter: Duration) -> Result<()> {
    let max = u64::try_from(jitter.as_millis()).unwrap_or(u64::MAX);
    if max == 0 {
        return Ok(());
    }
    let mut b = [0u8; 8];
    getrandom::fill(&mut b).map_err(|e| Error::invalid("/dev/urandom", e.to_string()))?;
    std::thread::sleep(Duration::from_millis(u64::from_le_bytes(b) % max));
    Ok(())
}

fn renew_due(layout: &Layout, opts: &Options, plan: &Plan, out: &mut Outcome) -> Result<()> {
    let names: Vec<String> = plan.due.iter().map(|d| d.name.to_owned()).collect();
    let report = renew::renew(layout, &names, &RenewOptions::new(opts.validity))?;
    out.renewed = report.renewed;
    out.notes.extend(report.notes);
    if let Some(name) = &opts.break_renewed
        && let Some(d) = plan.due.iter().find(|d| d.name == name)
    {
        let broken = b"-----BEGIN CERTIFICATE-----\nYnJva2Vu\n-----END CERTIFICATE-----\n";
        store::write_atomic(&d.files[0], broken, store::MODE_PUBLIC)?;
    }
    Ok(())
}

fn ordered(pending: &BTreeSet<String>) -> Vec<&'static str> {
    restart::ORDER
        .iter()
        .copied()
        .filter(|c| pending.contains(*c))
        .collect()
}

/// Why `component`, as its manifest runs it, picks up the renewed files without a restart (and
/// can be checked to have done so); `None`: it is restarted.
fn reloads(layout: &Layout, opts: &Options, component: &str) -> Option<&'static str> {
    let text = store::read_optional(&manifest_of(opts, component)?)
        .ok()
        .flatten()?;
    health::probe_for(component, &text, layout)?;
    reloads_by_itself(component, &text)
}

fn manifest_of(opts: &Options, component: &str) -> Option<PathBuf> {
    let p = restart::manifest_path(&opts.manifests_dir, component);
    p.exists().then_some(p)
}

fn no_manifest(opts: &Options, component: &str) -> String {
    format!(
        "no manifest {}: renewed but not restarted; restart it yourself",
        restart::manifest_path(&opts.manifests_dir, component).display()
    )
}

/// Restarts `component` through its manifest and waits for it; on failure restores its
/// previous files from `backup`, restarts it again and reports the failure.
fn restart_one(
    layout: &Layout,
    opts: &Options,
    plan: &Plan,
    backup: Option<&Backup>,
    component: &'static str,
    stamp: &str,
    out: &mut Outcome,
) -> std::result::Result<(), Failure> {
    let fail = |what: String| Failure::Restart(format!("{component}: {what}"));
    let Some(manifest) = manifest_of(opts, component) else {
        out.not_restarted
            .push((component.to_owned(), no_manifest(opts, component)));
        return Ok(());
    };
    let text = store::read_optional(&manifest)
        .map_err(|e| fail(e.to_string()))?
        .unwrap_or_default();
    if let Some(g) = &opts.restart_gate {
        g.renew()
            .map_err(|e| fail(format!("lost the cluster-wide restart permission: {e}")))?;
    }
    let probe = health::probe_for(component, &text, layout);
    // A component that reads the renewed files again by itself is not restarted: it must
    // serve the renewed certificate within the health timeout, else it is rolled back.
    let reloads = reloads_by_itself(component, &text).filter(|_| probe.is_some());
    if let (Some(why), Some(p)) = (reloads, probe.as_ref()) {
        let Err(why_not) = health::wait_healthy(p, opts.health_timeout) else {
            out.notes.push(format!(
                "{component} not restarted: {why}; it serves the renewed certificate"
            ));
            return Ok(());
        };
        return roll_back(plan, backup, component, &manifest, p, None, why_not, out);
    }
    let watch = probe.as_ref().and_then(|p| health::watch(p).ok());
    restart::annotate(&manifest, stamp).map_err(|e| fail(e.to_string()))?;
    let Some(probe) = probe else {
        out.restarted.push(component.to_owned());
        out.notes.push(format!(
            "{component} restarted through {}; no TLS health check for it",
            manifest.display()
        ));
        return Ok(());
    };
    let Err(why) = health::wait_restarted(&probe, watch, opts.health_timeout) else {
        out.restarted.push(component.to_owned());
        return Ok(());
    };
    roll_back(
        plan,
        backup,
        component,
        &manifest,
        &probe,
        Some((stamp, opts)),
        why,
        out,
    )
}

/// After `component` did not come back healthy with the renewed files: restores this pass's
/// files of it and, when it was restarted (`restarted`: the pass's stamp), restarts it again;
/// always a failure, saying whether it is healthy again.
#[allow(clippy::too_many_arguments)]
fn roll_back(
    plan: &Plan,
    backup: Option<&Backup>,
    component: &'static str,
    manifest: &Path,
    probe: &health::Probe,
    restarted: Option<(&str, &Options)>,
    why: String,
    out: &mut Outcome,
) -> std::result::Result<(), Failure> {
    let fail = |what: String| Failure::Restart(format!("{component}: {what}"));
    let files: Vec<PathBuf> = plan
        .due
        .iter()
        .filter(|d| d.restart.contains(&component))
        .flat_map(|d| d.files.clone())
        .collect();
    let Some(backup) = backup.filter(|_| !files.is_empty()) else {
        return Err(fail(format!(
            "not healthy and nothing of this pass to roll back: {why}"
        )));
    };
    let restored = backup
        .restore(&files)
        .map_err(|e| fail(format!("{why}; rollback failed: {e}")))?;
    out.rolled_back.push(component.to_owned());
    let list: Vec<String> = restored.iter().map(|p| p.display().to_string()).collect();
    let healthy_again = match restarted {
        Some((stamp, opts)) => {
            let again = format!("{stamp}-rollback");
            let watch = health::watch(probe).ok();
            restart::annotate(manifest, &again)
                .map_err(|e| fail(format!("{why}; rollback: {e}")))?;
            health::wait_restarted(probe, watch, opts.health_timeout)
        }
        // Not restarted: it reads the restored files again as it read the renewed ones.
        None => health::wait_healthy(probe, ROLLBACK_RELOAD_TIMEOUT),
    };
    match healthy_again {
        Ok(()) => Err(fail(format!(
            "not healthy with the renewed certificates ({why}); restored {} and it is healthy again; later components were not restarted",
            list.join(", ")
        ))),
        Err(e) => Err(fail(format!(
            "not healthy with the renewed certificates ({why}); restored {} but still not healthy: {e}",
            list.join(", ")
        ))),
    }
}

/// Writes the metrics file (unless dry run) and returns the outcome.
fn finish(
    layout: &Layout,
    opts: &Options,
    started: OffsetDateTime,
    out: Outcome,
) -> Result<Outcome> {
    if opts.dry_run {
        return Ok(out);
    }
    let work = layout.cert_dir.join(".autopilot");
    let mut backoff = Backoff::load(&Backoff::path(&work))?;
    match &out.failure {
        Some(f) if !f.acted() => {}
        failure => {
            backoff = backoff.after(failure.is_some(), started);
            backoff.save(&Backoff::path(&work))?;
        }
    }
    if let Some(path) = &opts.metrics_file {
        let prev = metrics::carried(path);
        let pass = PassMetrics {
            run_at: started.unix_timestamp(),
            failure: out.failure.as_ref().map(|f| f.code().to_owned()),
            renewed: out.renewed.iter().map(|(n, _)| n.clone()).collect(),
            expiring_cas: out.expiring_cas.iter().map(|(n, _)| n.clone()).collect(),
            restarted: out.restarted.clone(),
            rolled_back: out.rolled_back.clone(),
            refusal: out
                .failure
                .as_ref()
                .filter(|f| !f.acted())
                .map(|f| f.code().to_owned()),
            backoff,
        };
        metrics::write(path, &metrics::render(layout, &prev, &pass)?)?;
    }
    Ok(out)
}
