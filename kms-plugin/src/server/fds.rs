//! Descriptors: the soft `RLIMIT_NOFILE` is raised to the hard limit at start (the default soft
//! limit of 1,024 is small beside what local users can open towards a listener), and a failed
//! accept (out of descriptors) pauses its listener instead of retrying at once.

use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
use std::time::Duration;

/// How long a gRPC listener waits after a failed accept before it tries again.
pub(super) const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// Raises the soft open-file limit to the hard one; returns the soft limit before and after
/// (`None`: unlimited).
pub(super) fn raise_limit() -> std::io::Result<(Option<u64>, Option<u64>)> {
    let limit = getrlimit(Resource::Nofile);
    let before = limit.current;
    if before == limit.maximum {
        return Ok((before, before));
    }
    setrlimit(
        Resource::Nofile,
        Rlimit {
            current: limit.maximum,
            maximum: limit.maximum,
        },
    )?;
    Ok((before, getrlimit(Resource::Nofile).current))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_soft_limit_reaches_the_hard_limit() {
        let (_, after) = raise_limit().expect("raise");
        assert_eq!(after, getrlimit(Resource::Nofile).maximum);
    }
}
