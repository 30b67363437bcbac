//! The PKI expiry export (a systemd service and timer) and the Prometheus alert rules that read
//! it: the rules use exactly the metric names the pki crate writes.

use cross_crate_tests::command_line::{assert_subcommand, flag_value};
use cross_crate_tests::files::{read, repo_root};
use cross_crate_tests::unit::{last, last_words, unit};
use cross_crate_tests::yaml::{at, str_at, yaml};
use std::path::Path;

#[test]
fn pki_expiry_export_feeds_the_alert_rules() {
    let file = "deploy/systemd/pki-expiry.service";
    let service = unit("systemd/pki-expiry.service");
    assert_eq!(last(&service, "Service", "Type", file), "oneshot");
    let exec = last_words(&service, "Service", "ExecStart", file);
    assert_subcommand(&exec, "check-expiration", &format!("{file}: ExecStart"));
    assert_eq!(
        flag_value(&exec, "-o").as_deref(),
        Some("prometheus"),
        "{file}: -o prometheus"
    );
    let output =
        flag_value(&exec, "--output-file").unwrap_or_else(|| panic!("{file}: --output-file"));
    assert!(
        output.ends_with(".prom"),
        "{file}: node-exporter only reads *.prom"
    );
    let state = last(&service, "Service", "StateDirectory", file);
    assert_eq!(
        Path::new(&output).parent(),
        Some(Path::new("/var/lib").join(state).as_path()),
        "{file}: --output-file must be in the writable StateDirectory"
    );
    let timer_file = "deploy/systemd/pki-expiry.timer";
    let timer = unit("systemd/pki-expiry.timer");
    assert!(
        timer["Timer"].contains_key("OnCalendar"),
        "{timer_file}: OnCalendar"
    );
    assert_eq!(
        last(&timer, "Install", "WantedBy", timer_file),
        "timers.target"
    );

    // The alert rules use exactly the metric names the pki crate writes.
    let exporter = rust_sources(&repo_root().join("pki/src"));
    let rules_file = "deploy/prometheus/pki-alerts.yaml";
    let rules = yaml("prometheus/pki-alerts.yaml");
    let mut exprs = Vec::new();
    for group in at(&rules, &["groups"], rules_file)
        .as_sequence()
        .expect("groups")
    {
        for rule in at(group, &["rules"], rules_file)
            .as_sequence()
            .expect("rules")
        {
            exprs.push(str_at(rule, &["expr"], rules_file).to_owned());
        }
    }
    let metric_names: Vec<&str> = exprs
        .iter()
        .flat_map(|expr| expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')))
        .filter(|word| word.starts_with("pki_"))
        .collect();
    assert!(
        !metric_names.is_empty(),
        "{rules_file}: no pki_* metric used"
    );
    for name in metric_names {
        assert!(
            mentions_identifier(&exporter, name),
            "{rules_file}: pki does not write a metric named {name}"
        );
    }
    assert!(
        exprs
            .iter()
            .any(|e| e.contains("pki_certificate_expiry_timestamp_seconds")
                && e.contains("- time() < 30*24*3600")),
        "{rules_file}: the 30-day expiry alert is gone"
    );
}

/// The text of every `.rs` file under `dir`.
fn rust_sources(dir: &Path) -> String {
    let mut text = String::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|ext| ext == "rs") {
                text.push_str(&read(&path));
                text.push('\n');
            }
        }
    }
    text
}

/// Whether `name` occurs in `text` as a whole identifier (not as a prefix of a longer one).
fn mentions_identifier(text: &str, name: &str) -> bool {
    let is_ident = |c: char| c.is_ascii_alphanumeric() || c == '_';
    text.match_indices(name).any(|(at, _)| {
        let before = text[..at].chars().next_back();
        let after = text[at + name.len()..].chars().next();
        !before.is_some_and(is_ident) && !after.is_some_and(is_ident)
    })
}
