//! Cost of the per-call log line: this crate's text formatter against tracing-subscriber's
//! stock format, in the same run, each writing the KMS service's "rpc" line to a sink.
//!
//! Run: `cargo bench -p kms-plugin --bench log_line`. Prints the median of 9 alternating rounds
//! of 200,000 lines each, in nanoseconds per line, and the ratio.

use kms_plugin::telemetry::TextLine;
use std::io;
use std::time::{Duration, Instant};
use tracing_subscriber::fmt::MakeWriter;

/// Counts bytes and drops them.
#[derive(Clone, Copy)]
struct Sink;

impl io::Write for Sink {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        Ok(std::hint::black_box(bytes).len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Sink {
    type Writer = Sink;

    fn make_writer(&'a self) -> Self::Writer {
        Sink
    }
}

const LINES: u32 = 200_000;

/// Time per line of the KMS service's success line under `dispatch`.
fn per_line(dispatch: &tracing::Dispatch) -> Duration {
    tracing::dispatcher::with_default(dispatch, || {
        let uid = "0b7c5d5e-3f55-4b8e-9a66-8c4f2a1d9e01";
        let started = Instant::now();
        for n in 0..LINES {
            let duration_us = u64::from(n % 500);
            tracing::info!(method = "Decrypt", uid, outcome = "ok", duration_us, "rpc");
        }
        started.elapsed() / LINES
    })
}

fn median(mut values: Vec<Duration>) -> Duration {
    values.sort();
    values[values.len() / 2]
}

fn main() {
    let ours = tracing::Dispatch::new(
        tracing_subscriber::fmt()
            .with_ansi(false)
            .with_writer(Sink)
            .event_format(TextLine)
            .finish(),
    );
    let stock = tracing::Dispatch::new(
        tracing_subscriber::fmt()
            .with_ansi(false)
            .with_writer(Sink)
            .finish(),
    );
    let (mut o, mut s) = (Vec::new(), Vec::new());
    for _ in 0..9 {
        o.push(per_line(&ours));
        s.push(per_line(&stock));
    }
    let (o, s) = (median(o), median(s));
    println!(
        "log line (median of 9 alternating rounds): kms-plugin text {} ns, tracing-subscriber full format {} ns, {:.2}x faster",
        o.as_nanos(),
        s.as_nanos(),
        s.as_secs_f64() / o.as_secs_f64()
    );
}
