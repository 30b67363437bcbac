//! Log setup: text lines (see [`text_line`]) or JSON lines for collectors, always to stderr.
//!
//! Lines go through a small buffer that a background thread flushes every
//! [`FLUSH_INTERVAL`] (klog, Kubernetes' own logger, flushes every 5 s); warnings and errors are
//! flushed at once. This keeps the per-call log line off the write(2) path of every gRPC call.

mod text_line;

pub use text_line::TextLine;

use kms_config::LogFormat;
use std::io::{self, BufWriter, Stderr, Write};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tracing::{Level, Metadata};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

/// How long an informational line may wait in the buffer.
pub const FLUSH_INTERVAL: Duration = Duration::from_millis(100);

/// Shared, buffered stderr.
#[derive(Clone)]
pub struct BufferedStderr {
    inner: Arc<Mutex<BufWriter<Stderr>>>,
}

impl BufferedStderr {
    fn lock(&self) -> MutexGuard<'_, BufWriter<Stderr>> {
        match self.inner.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// Writes out everything buffered.
    pub fn flush(&self) {
        let _ = self.lock().flush();
    }
}

/// One log line's access to the buffer; flushes on drop when the line is a warning or error.
pub struct LineWriter<'a> {
    buffer: MutexGuard<'a, BufWriter<Stderr>>,
    flush_on_drop: bool,
}

impl Write for LineWriter<'_> {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.buffer.write(bytes)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.buffer.flush()
    }
}

impl Drop for LineWriter<'_> {
    fn drop(&mut self) {
        if self.flush_on_drop {
            let _ = self.buffer.flush();
        }
    }
}

impl<'a> MakeWriter<'a> for BufferedStderr {
    type Writer = LineWriter<'a>;

    fn make_writer(&'a self) -> Self::Writer {
        LineWriter {
            buffer: self.lock(),
            flush_on_drop: true,
        }
    }

    fn make_writer_for(&'a self, meta: &Metadata<'_>) -> Self::Writer {
        LineWriter {
            buffer: self.lock(),
            flush_on_drop: *meta.level() <= Level::WARN,
        }
    }
}

/// Flushes the log buffer when dropped; keep it alive until the process exits.
pub struct LogGuard(BufferedStderr);

impl Drop for LogGuard {
    fn drop(&mut self) {
        self.0.flush();
    }
}

/// Installs the global subscriber writing to stderr with `level` as the filter.
pub fn init_logging(format: LogFormat, level: &str) -> anyhow::Result<LogGuard> {
    let filter = EnvFilter::try_new(level)
        .map_err(|e| anyhow::anyhow!("invalid log level {level:?}: {e}"))?;
    let writer = BufferedStderr {
        inner: Arc::new(Mutex::new(BufWriter::with_capacity(
            64 * 1024,
            io::stderr(),
        ))),
    };
    let flusher = writer.clone();
    std::thread::Builder::new()
        .name("kms-plugin-log-flush".into())
        .spawn(move || {
            loop {
                std::thread::sleep(FLUSH_INTERVAL);
                flusher.flush();
            }
        })
        .map_err(|e| anyhow::anyhow!("cannot start the log flusher: {e}"))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer.clone())
        .with_ansi(false);
    let result = match format {
        LogFormat::Text => builder.event_format(TextLine).try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init(),
    };
    result.map_err(|e| anyhow::anyhow!("logging already initialised: {e}"))?;
    Ok(LogGuard(writer))
}
