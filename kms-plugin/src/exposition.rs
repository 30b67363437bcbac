//! The two text formats `/metrics` speaks: OpenMetrics, which the metrics library writes and a
//! scraper gets when its `Accept` asks for it, and the Prometheus text format 0.0.4 for every
//! other client (promtool, curl, older scrapers), in which a counter's `HELP` and `TYPE` name
//! its `_total` series.

/// Content type of OpenMetrics text.
pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// Content type of the Prometheus text format.
pub const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Whether an `Accept` header value asks for OpenMetrics.
pub fn wants_openmetrics(accept: &str) -> bool {
    accept.split(',').any(|range| {
        let mut parts = range.split(';').map(str::trim);
        let kind = parts.next().unwrap_or_default();
        let refused = parts.any(|p| p.replace(' ', "") == "q=0");
        kind.eq_ignore_ascii_case("application/openmetrics-text") && !refused
    })
}

/// OpenMetrics text rewritten in the Prometheus text format: no `# EOF` or `# UNIT` lines, a
/// counter's `HELP` and `TYPE` lines name its `_total` series, and `_created` samples of
/// counters are dropped.
pub fn prometheus_text(openmetrics: &str) -> String {
    let counters: std::collections::HashSet<&str> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let rewritten = ["# HELP ", "# TYPE "].iter().find_map(|tag| {
            let rest = line.strip_prefix(tag)?;
            let (name, tail) = rest.split_once(' ')?;
            counters
                .contains(name)
                .then(|| format!("{tag}{name}_total {tail}"))
        });
        if let Some(line) = rewritten {
            out.push_str(&line);
        } else if counters.iter().any(|c| is_sample_of(line, c, "_created")) {
            continue;
        } else {
            out.push_str(line);
        }
        out.push('\n');
    }
    out
}

/// Whether `line` is a sample of `name` + `suffix` (with or without labels).
fn is_sample_of(line: &str, name: &str, suffix: &str) -> bool {
    line.strip_prefix(name)
        .and_then(|rest| rest.strip_prefix(suffix))
        .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
}

#[cfg(test)]
mod tests {
    use super::*;

    const OPENMETRICS_TEXT: &str = "# HELP a_hits Hits.\n# TYPE a_hits counter\na_hits_total 3\na_hits_created 1.5\n# HELP a_size Size.\n# TYPE a_size gauge\n# UNIT a_size bytes\na_size{x=\"1\"} 2\n# EOF\n";

    #[test]
    fn counters_are_named_by_their_total_series() {
        assert_eq!(
            prometheus_text(OPENMETRICS_TEXT),
            "# HELP a_hits_total Hits.\n# TYPE a_hits_total counter\na_hits_total 3\n# HELP a_size Size.\n# TYPE a_size gauge\na_size{x=\"1\"} 2\n"
        );
    }

    #[test]
    fn accept_negotiation() {
        let prometheus = "application/openmetrics-text;version=1.0.0;q=0.5,text/plain;version=0.0.4;q=0.4,*/*;q=0.1";
        assert!(wants_openmetrics(prometheus));
        assert!(!wants_openmetrics("text/plain"));
        assert!(!wants_openmetrics("*/*"));
        assert!(!wants_openmetrics("application/openmetrics-text; q=0"));
    }
}
