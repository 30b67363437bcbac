//! The standard `process_*` metrics of the plugin's own process (CPU time, memory, file
//! descriptors, start time), read from `/proc/self` at each scrape.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

/// The process metrics, registered without the plugin's prefix, as every exporter names them.
pub struct ProcessMetrics {
    cpu_seconds: Counter<f64, AtomicU64>,
    resident_bytes: Gauge,
    virtual_bytes: Gauge,
    open_fds: Gauge,
    max_fds: Gauge,
    start_time: Gauge<f64, AtomicU64>,
}

impl ProcessMetrics {
    /// Registers the process metrics in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self {
            cpu_seconds: Counter::default(),
            resident_bytes: Gauge::default(),
            virtual_bytes: Gauge::default(),
            open_fds: Gauge::default(),
            max_fds: Gauge::default(),
            start_time: Gauge::default(),
        };
        registry.register(
            "process_cpu_seconds",
            "Total user and system CPU time spent in seconds",
            metrics.cpu_seconds.clone(),
        );
        registry.register(
            "process_resident_memory_bytes",
            "Resident memory size in bytes",
            metrics.resident_bytes.clone(),
        );
        registry.register(
            "process_virtual_memory_bytes",
            "Virtual memory size in bytes",
            metrics.virtual_bytes.clone(),
        );
        registry.register(
            "process_open_fds",
            "Number of open file descriptors",
            metrics.open_fds.clone(),
        );
        registry.register(
            "process_max_fds",
            "Maximum number of open file descriptors",
            metrics.max_fds.clone(),
        );
        registry.register(
            "process_start_time_seconds",
            "Start time of the process since the Unix epoch in seconds",
            metrics.start_time.clone(),
        );
        metrics
    }

    /// Reads the current values; a value that cannot be read keeps its last one.
    pub fn refresh(&self) {
        if let Some(stat) = read_stat() {
            let cpu = stat.cpu_seconds - self.cpu_seconds.get();
            if cpu > 0.0 {
                self.cpu_seconds.inc_by(cpu);
            }
            self.resident_bytes.set(stat.resident_bytes);
            self.virtual_bytes.set(stat.virtual_bytes);
            if let Some(start) = stat.start_time {
                self.start_time.set(start);
            }
        }
        if let Ok(entries) = std::fs::read_dir("/proc/self/fd") {
            // The directory handle being read is one of them.
            let count = entries.count().saturating_sub(1);
            self.open_fds.set(i64::try_from(count).unwrap_or(i64::MAX));
        }
        if let Some(max) = max_open_files() {
            self.max_fds.set(max);
        }
    }
}

struct Stat {
    cpu_seconds: f64,
    virtual_bytes: i64,
    resident_bytes: i64,
    start_time: Option<f64>,
}

/// The fields of `/proc/self/stat` these metrics need.
fn read_stat() -> Option<Stat> {
    let text = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The command name (field 2) may hold spaces and parentheses: fields start after the last `)`.
    let fields: Vec<&str> = text.rsplit_once(") ")?.1.split_whitespace().collect();
    // Field N of proc(5) is fields[N - 3].
    let field = |n: usize| fields.get(n - 3)?.parse::<u64>().ok();
    let ticks = rustix::param::clock_ticks_per_second() as f64;
    let page = rustix::param::page_size() as u64;
    let start_time = boot_time().map(|boot| boot as f64 + field(22).unwrap_or(0) as f64 / ticks);
    Some(Stat {
        cpu_seconds: (field(14)? + field(15)?) as f64 / ticks,
        virtual_bytes: i64::try_from(field(23)?).ok()?,
        resident_bytes: i64::try_from(field(24)?.saturating_mul(page)).ok()?,
        start_time,
    })
}

/// Boot time in seconds since the epoch (`btime` of `/proc/stat`).
fn boot_time() -> Option<u64> {
    std::fs::read_to_string("/proc/stat")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()
}

/// The soft limit of open files (`Max open files` of `/proc/self/limits`).
fn max_open_files() -> Option<i64> {
    std::fs::read_to_string("/proc/self/limits")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("Max open files"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process() {
        let mut registry = Registry::default();
        let metrics = ProcessMetrics::register(&mut registry);
        metrics.refresh();
        assert!(metrics.resident_bytes.get() > 0);
        assert!(metrics.virtual_bytes.get() >= metrics.resident_bytes.get());
        assert!(metrics.open_fds.get() >= 3, "stdin, stdout, stderr");
        assert!(metrics.max_fds.get() >= metrics.open_fds.get());
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_secs_f64();
        let start = metrics.start_time.get();
        assert!(
            start <= now + 1.0 && start > now - 86_400.0 * 365.0,
            "{start}"
        );
    }
}
