//! The text a pass prints and its exit status: 0 success, 1 failure (the reason is printed),
//! 2 success but a CA expires within a year (rotate it: autopilot never renews CAs).

use std::fmt::Write as _;

use super::Outcome;

impl Outcome {
    /// The exit status of the pass.
    pub fn exit_code(&self) -> u8 {
        if self.failure.is_some() {
            1
        } else if !self.expiring_cas.is_empty() {
            2
        } else {
            0
        }
    }

    /// Human-readable lines; `dry_run` words them as what would happen.
    pub fn render(&self, dry_run: bool) -> String {
        let (p, renew, restart) = if dry_run {
            ("[dry-run] ", "would renew", "would restart")
        } else {
            ("", "renewed", "restarted")
        };
        let mut s = String::new();
        if let Some(b) = &self.backup {
            let _ = writeln!(s, "backup of the previous files: {}", b.display());
        }
        for (name, path) in &self.renewed {
            let _ = writeln!(s, "{p}{renew} {name} ({})", path.display());
        }
        if self.renewed.is_empty() && self.failure.is_none() {
            let _ = writeln!(s, "{p}nothing is due for renewal");
        }
        for c in &self.restarted {
            let _ = writeln!(s, "{p}{restart} {c}");
        }
        for (c, why) in &self.not_restarted {
            let _ = writeln!(s, "{p}not restarting {c}: {why}");
        }
        for c in &self.rolled_back {
            let _ = writeln!(s, "rolled back {c} to its previous certificate and key");
        }
        for n in &self.notes {
            let _ = writeln!(s, "note: {n}");
        }
        for w in &self.warnings {
            let _ = writeln!(s, "WARNING: {w}");
        }
        for (ca, t) in &self.expiring_cas {
            let _ = writeln!(
                s,
                "WARNING: CA {ca} expires {t}, within a year: autopilot never renews CAs; plan `pki rotate`"
            );
        }
        if let Some(f) = &self.failure {
            let _ = writeln!(s, "FAILED ({}): {f}", f.code());
        }
        s
    }
}
