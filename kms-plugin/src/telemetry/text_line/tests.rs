use super::*;
use std::io;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tracing_subscriber::fmt::MakeWriter;

/// Captures what a subscriber writes.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl io::Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.0.lock().expect("lock").extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Captured {
    type Writer = Captured;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8(self.0.lock().expect("lock").clone()).expect("utf-8")
    }
}

/// Runs `emit` under a subscriber with this formatter and under tracing-subscriber's own
/// default format (colour off); returns both outputs.
fn both(emit: impl Fn()) -> (String, String) {
    let ours = Captured::default();
    let stock = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(Level::TRACE)
        .with_ansi(false)
        .with_writer(ours.clone())
        .event_format(TextLine)
        .finish();
    tracing::subscriber::with_default(subscriber, &emit);
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(Level::TRACE)
        .with_ansi(false)
        .with_writer(stock.clone())
        .finish();
    tracing::subscriber::with_default(subscriber, &emit);
    (ours.text(), stock.text())
}

/// Each line without its leading timestamp.
fn after_timestamps(text: &str) -> Vec<&str> {
    text.lines()
        .map(|line| line.split_once(' ').expect("timestamp").1)
        .collect()
}

#[derive(Debug)]
struct Outer(std::io::Error);

impl fmt::Display for Outer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("outer failed")
    }
}

impl std::error::Error for Outer {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.0)
    }
}

#[test]
fn lines_match_the_stock_format_after_the_timestamp() {
    let (ours, stock) = both(|| {
        let uid = "0b7c5d5e-3f55-4b8e-9a66-8c4f2a1d9e01";
        tracing::info!(
            method = "Decrypt",
            uid,
            outcome = "ok",
            duration_us = 17u64,
            "rpc"
        );
        tracing::warn!(method = "Encrypt", error = %"backend \"down\"", "rpc");
        tracing::debug!(
            flag = true,
            delta = -3i64,
            r#type = "x",
            "message with {} args",
            2
        );
        tracing::error!(quoted = "a \"b\" \\c\td", empty = "", "plain");
        tracing::trace!(list = ?vec![1, 2], "debug value");
        let error = Outer(io::Error::other("disk gone"));
        tracing::warn!(
            error = &error as &(dyn std::error::Error + 'static),
            "with sources"
        );
        tracing::info!("message only");
        let span = tracing::info_span!("outer", a = 1, name = "x");
        let _outer = span.enter();
        let inner = tracing::info_span!("inner");
        let _inner = inner.enter();
        tracing::info!(n = 5u64, "in spans");
    });
    assert_eq!(ours.lines().count(), 8, "{ours}");
    assert_eq!(after_timestamps(&ours), after_timestamps(&stock));
}

#[test]
fn log_records_show_their_own_target_and_no_log_fields() {
    let (ours, stock) = both(|| {
        let record = log::Record::builder()
            .target("cryptoki::session")
            .level(log::Level::Warn)
            .args(format_args!("session closed"))
            .build();
        tracing_log::format_trace(&record).expect("log record");
    });
    assert_eq!(after_timestamps(&ours), after_timestamps(&stock));
    assert_eq!(
        after_timestamps(&ours),
        [" WARN cryptoki::session: session closed"]
    );
}

#[test]
fn control_characters_cannot_start_a_line_or_reach_a_terminal() {
    let (ours, _) = both(|| {
        let forged = "ok\n2026-01-01T00:00:00.000000Z  INFO forged\x1b[2J\u{85}";
        tracing::warn!(reason = %forged, quoted = forged, "{forged}");
    });
    assert_eq!(ours.lines().count(), 1, "{ours}");
    assert!(!ours.contains('\x1b') && !ours.contains('\u{85}'), "{ours}");
    let line = after_timestamps(&ours)[0];
    assert!(
        line.contains(r"ok\u{a}2026-01-01T00:00:00.000000Z  INFO forged\u{1b}[2J\u{85}"),
        "{line}"
    );
    assert!(line.contains(r#"quoted="ok\n2026"#), "{line}");
}

#[test]
fn timestamps_are_rfc3339_utc_with_microseconds() {
    for (seconds, micros, expected) in [
        (0, 0, "1970-01-01T00:00:00.000000Z "),
        (951_782_400, 7, "2000-02-29T00:00:00.000007Z "),
        (1_764_387_335, 123_456, "2025-11-29T03:35:35.123456Z "),
        (4_102_444_799, 999_999, "2099-12-31T23:59:59.999999Z "),
    ] {
        let at = UNIX_EPOCH + Duration::from_secs(seconds) + Duration::from_micros(micros);
        let mut out = String::new();
        write_timestamp(&mut out, at).expect("write");
        // Twice: the second comes from the per-thread cache.
        write_timestamp(&mut out, at).expect("write");
        assert_eq!(out, format!("{expected}{expected}"));
    }
    let (ours, _) = both(|| tracing::info!("now"));
    let stamp = ours.split_once(" ").expect("timestamp").0;
    let parsed = time::OffsetDateTime::parse(stamp, &time::format_description::well_known::Rfc3339)
        .expect("RFC 3339");
    let skew = (time::OffsetDateTime::now_utc() - parsed).abs();
    assert!(skew < time::Duration::seconds(5), "{stamp}");
}
