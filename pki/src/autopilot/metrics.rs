//! The Prometheus textfile of a pass: `check-expiration`'s metrics plus the autopilot's own.
//! Counters and the last success survive from the previous file (the textfile is the only
//! state), so `pki_autopilot_renewed_total` keeps counting across passes.

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
        } else if let Some(rest) = line.strip_prefix("pki_autopilot_renewed_total{certificate=\"")
            && let Some((name, value)) = rest.split_once("\"} ")
            && let Ok(n) = value.trim().parse()
        {
            c.renewed_total.insert(name.to_owned(), n);
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
}

/// Renders the whole textfile.
pub fn render(layout: &Layout, prev: &Carried, pass: &PassMetrics) -> Result<String> {
    let mut out = expiry::collect(layout)?.render(expiry::Format::Prometheus)?;
    let mut totals = prev.renewed_total.clone();
    for n in &pass.renewed {
        *totals.entry(n.clone()).or_default() += 1;
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
    out.push_str("# HELP pki_autopilot_renewed_total Certificates renewed by autopilot.\n");
    out.push_str("# TYPE pki_autopilot_renewed_total counter\n");
    for (name, n) in &totals {
        let _ = writeln!(
            out,
            "pki_autopilot_renewed_total{{certificate=\"{}\"}} {n}",
            escape(name)
        );
    }
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
