//! How often an unwrap naming an unknown root key version may make a backend look for new
//! versions (a token listing, a state directory rescan): at most once a second, so Decrypt
//! calls naming made-up versions cannot keep the backend busy. A version another node added is
//! still found within a second, and by the next refresh in any case.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Least time between two look-ups caused by unknown versions.
const INTERVAL: Duration = Duration::from_secs(1);

/// When a miss last made the backend look.
#[derive(Default)]
pub(crate) struct MissThrottle {
    last: Mutex<Option<Instant>>,
}

impl MissThrottle {
    /// True when a miss may make the backend look now (and records that it does).
    pub(crate) fn allow(&self) -> bool {
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        if last.is_some_and(|at| at.elapsed() < INTERVAL) {
            return false;
        }
        *last = Some(Instant::now());
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_look_a_second() {
        let throttle = MissThrottle::default();
        assert!(throttle.allow());
        assert!(!throttle.allow());
        *throttle.last.lock().expect("lock") = Some(Instant::now() - INTERVAL);
        assert!(throttle.allow());
    }
}
