//! The Prometheus textfile of a pass: `check-expiration`'s metrics plus the autopilot's own.
//! Counters and the last success survive from the previous file (their only record), so
//! `pki_autopilot_renewed_total`, `…_restarts_total`, `…_rollbacks_total` and `…_refusals_total`
//! keep counting across passes.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use crate::error::Result;
use crate::expiry;
use crate::layout::Layout;
use crate::store;

/// What the previous textfile recorded.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Carried {
    /// `pki_autopilot_last_success_timestamp_seconds`.
    pub last_success: Option<i64>,
    /// `pki_autopilot_renewed_total` by certificate.
    pub renewed_total: BTreeMap<String, u64>,
    /// `pki_autopilot_restarts_total` by component.
    pub restarts_total: BTreeMap<String, u64>,
    /// `pki_autopilot_rollbacks_total` by component.
    pub rollbacks_total: BTreeMap<String, u64>,
    /// `pki_autopilot_refusals_total` by reason.
    pub refusals_total: BTreeMap<String, u64>,
}

/// The counters of the textfile: metric name, label, and where [`Carried`] keeps them.
const COUNTERS: [(&str, &str); 4] = [
    ("pki_autopilot_renewed_total", "certificate"),
    ("pki_autopilot_restarts_total", "component"),
    ("pki_autopilot_rollbacks_total", "component"),
    ("pki_autopilot_refusals_total", "reason"),
];

impl Carried {
    fn counter(&mut self, i: usize) -> &mut BTreeMap<String, u64> {
        match i {
            0 => &mut self.renewed_total,
            1 => &mut self.restarts_total,
            2 => &mut self.rollbacks_total,
            _ => &mut self.refusals_total,
        }
    }
}

/// Reads the autopilot lines of an existing textfile (absent or unreadable: nothing carried).
pub fn carried(path: &Path) -> Carried {
    let mut c = Carried::default();
    let Ok(Some(text)) = store::read_optional(path) else {
        return c;
    };
    for line in text.lines() {
        if let Some(v) = line.strip_prefix("pki_autopilot_last_success_timestamp_seconds ") {
            c.last_success = v.trim().parse().ok();
            continue;
        }
        for (i, (metric, label)) in COUNTERS.iter().enumerate() {
            if let Some(rest) = line.strip_prefix(&format!("{metric}{{{label}=\""))
                && let Some((name, value)) = rest.split_once("\"} ")
                && let Ok(n) = value.trim().parse()
            {
                c.counter(i).insert(name.to_owned(), n);
            }
        }
    }
    c
}

/// The outcome of a pass, as metrics see it.
#[derive(Debug, Clone, PartialEq)]
pub struct PassMetrics {
    /// Start of the pass (unix seconds).
    pub run_at: i64,
    /// `None` on success, else a short reason code (`renew-failed`, `restart-failed`,
    /// `rotation-in-progress`, ...).
    pub failure: Option<String>,
    /// Certificates renewed by this pass.
    pub renewed: Vec<String>,
    /// CAs expiring within a year.
    pub expiring_cas: Vec<String>,
    /// Components restarted healthy by this pass.
    pub restarted: Vec<String>,
    /// Components whose previous files this pass restored.
    pub rolled_back: Vec<String>,
    /// The reason code when the pass refused before acting (locked, rotation, backing off).
    pub refusal: Option<String>,
    /// The backoff after this pass.
    pub backoff: super::backoff::Backoff,
}

/// Renders the whole textfile.
pub fn render(layout: &Layout, prev: &Carried, pass: &PassMetrics) -> Result<String> {
    let mut out = expiry::collect(layout)?.render(expiry::Format::Prometheus)?;
    let mut counts = prev.clone();
    let refusal: Vec<String> = pass.refusal.iter().cloned().collect();
    for (i, names) in [&pass.renewed, &pass.restarted, &pass.rolled_back, &refusal]
        .into_iter()
        .enumerate()
    {
        for n in names {
            *counts.counter(i).entry(n.clone()).or_default() += 1;
        }
    }
    let last_success = if pass.failure.is_none() {
        Some(pass.run_at)
    } else {
        prev.last_success
    };
    gauge(
        &mut out,
        "pki_autopilot_last_run_timestamp_seconds",
        "Unix time of the last autopilot pass.",
    );
    let _ = writeln!(
        out,
        "pki_autopilot_last_run_timestamp_seconds {}",
        pass.run_at
    );
    gauge(
        &mut out,
        "pki_autopilot_last_success_timestamp_seconds",
        "Unix time of the last autopilot pass that succeeded.",
    );
    if let Some(t) = last_success {
        let _ = writeln!(out, "pki_autopilot_last_success_timestamp_seconds {t}");
    }
    let helps = [
        "Certificates renewed by autopilot.",
        "Components autopilot restarted and saw healthy.",
        "Components whose renewed files autopilot replaced by the previous ones.",
        "Passes that refused to act, by reason.",
    ];
    for (i, ((metric, label), help)) in COUNTERS.iter().zip(helps).enumerate() {
        let _ = writeln!(out, "# HELP {metric} {help}\n# TYPE {metric} counter");
        for (name, n) in counts.counter(i).iter() {
            let _ = writeln!(out, "{metric}{{{label}=\"{}\"}} {n}", escape(name));
        }
    }
    gauge(
        &mut out,
        "pki_autopilot_consecutive_failures",
        "Passes in a row whose renewal or restart failed (a rollback included); 0 after a success.",
    );
    let _ = writeln!(
        out,
        "pki_autopilot_consecutive_failures {}",
        pass.backoff.consecutive_failures
    );
    gauge(
        &mut out,
        "pki_autopilot_backoff_until_timestamp_seconds",
        "Unix time before which passes refuse after failures (0: none).",
    );
    let _ = writeln!(
        out,
        "pki_autopilot_backoff_until_timestamp_seconds {}",
        pass.backoff.until
    );
    gauge(
        &mut out,
        "pki_autopilot_failure",
        "1 with the reason when the last autopilot pass failed.",
    );
    if let Some(reason) = &pass.failure {
        let _ = writeln!(
            out,
            "pki_autopilot_failure{{reason=\"{}\"}} 1",
            escape(reason)
        );
    }
    gauge(
        &mut out,
        "pki_autopilot_ca_expiring_within_year",
        "1 for a CA that expires within a year (rotate it: autopilot never renews CAs).",
    );
    for ca in &pass.expiring_cas {
        let _ = writeln!(
            out,
            "pki_autopilot_ca_expiring_within_year{{name=\"{}\"}} 1",
            escape(ca)
        );
    }
    Ok(out)
}

/// Writes the textfile atomically (mode 0644).
pub fn write(path: &Path, text: &str) -> Result<()> {
    store::write_atomic(path, text.as_bytes(), store::MODE_PUBLIC)
}

fn gauge(out: &mut String, name: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
}

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_and_last_success_are_carried() {
        let dir = tempfile::tempdir().expect("test");
        let f = dir.path().join("pki.prom");
        std::fs::write(
            &f,
            "pki_autopilot_last_success_timestamp_seconds 100\npki_autopilot_renewed_total{certificate=\"etcd-server\"} 2\n",
        )
        .expect("test");
        let c = carried(&f);
        assert_eq!(c.last_success, Some(100));
        assert_eq!(c.renewed_total.get("etcd-server"), Some(&2));
    }
}
