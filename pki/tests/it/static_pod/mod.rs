//! A small stand-in for the kubelet's static pod handling: runs the command of a kubeadm-shaped
//! static pod manifest as a process and, like the kubelet, restarts it whenever the manifest's
//! content changes (stop with SIGTERM, then SIGKILL after 10 s). A process that exits is not
//! restarted until the next change (the kubelet's back-off, simplified).
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::common::{append_log, terminate};

/// The command (`- ` items under `command:`) of a static pod manifest.
pub(crate) fn command_of(manifest: &str) -> Vec<String> {
    let mut lines = manifest.lines().skip_while(|l| l.trim() != "- command:");
    lines.next();
    lines
        .map_while(|l| l.strip_prefix("    - "))
        .map(|s| s.trim().trim_matches('"').to_owned())
        .collect()
}

/// Runs a manifest's command, restarting it on every change of the manifest.
pub(crate) struct Supervisor {
    stop: Arc<AtomicBool>,
    starts: Arc<AtomicUsize>,
    thread: Option<JoinHandle<()>>,
}

impl Supervisor {
    /// Starts watching `manifest` (polled every 100 ms); output goes to `log`.
    pub(crate) fn start(manifest: &Path, log: &Path) -> Supervisor {
        let stop = Arc::new(AtomicBool::new(false));
        let starts = Arc::new(AtomicUsize::new(0));
        let (m, l) = (manifest.to_owned(), log.to_owned());
        let (s, n) = (stop.clone(), starts.clone());
        let thread = std::thread::spawn(move || watch(&m, &l, &s, &n));
        Supervisor {
            stop,
            starts,
            thread: Some(thread),
        }
    }

    /// How many times the process was started.
    pub(crate) fn starts(&self) -> usize {
        self.starts.load(Ordering::SeqCst)
    }
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn watch(manifest: &PathBuf, log: &Path, stop: &AtomicBool, starts: &AtomicUsize) {
    let child: Mutex<Option<Child>> = Mutex::new(None);
    let mut seen: Option<String> = None;
    while !stop.load(Ordering::SeqCst) {
        let now = std::fs::read_to_string(manifest).ok();
        if now.is_some() && now != seen {
            if let Some(c) = child.lock().unwrap().take() {
                terminate(c);
            }
            let text = now.clone().unwrap();
            let cmd = command_of(&text);
            let out = append_log(log);
            let spawned = Command::new(&cmd[0])
                .args(&cmd[1..])
                .stdin(Stdio::null())
                .stdout(out.try_clone().unwrap())
                .stderr(out)
                .spawn()
                .unwrap_or_else(|e| panic!("{}: {e}", cmd[0]));
            starts.fetch_add(1, Ordering::SeqCst);
            *child.lock().unwrap() = Some(spawned);
            seen = now;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    if let Some(c) = child.lock().unwrap().take() {
        terminate(c);
    }
}
