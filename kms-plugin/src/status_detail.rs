//! What Status adds beside `healthz` for `kms-plugin status`: the backend outage, its grace and
//! the last successful probe, as gRPC response metadata (kube-apiserver ignores it). Times are
//! Unix seconds; nothing secret is in it.

use crate::health::{HealthState, Outage, OutagePolicy};
use crate::time_text::{compact, rfc3339};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tonic::metadata::{MetadataMap, MetadataValue};

const LAST_SUCCESS: &str = "kms-plugin-last-probe-success";
const OUTAGE_SINCE: &str = "kms-plugin-outage-since";
const OUTAGE_SERVING: &str = "kms-plugin-outage-serving";
const GRACE_UNTIL: &str = "kms-plugin-outage-grace-until";
const POLICY: &str = "kms-plugin-outage-policy";

/// The detail of one Status answer, as `kms-plugin status` reads it back.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StatusDetail {
    /// When a root key round trip last succeeded.
    pub last_success: Option<SystemTime>,
    /// The outage in progress, if any.
    pub outage: Option<Outage>,
    /// `serve <grace seconds>` or `report`.
    pub policy: Option<String>,
}

/// Adds `state`'s detail and `policy` to a Status response's metadata.
pub fn insert(metadata: &mut MetadataMap, state: &HealthState, policy: OutagePolicy) {
    let mut put = |key: &'static str, value: String| {
        if let Ok(value) = MetadataValue::try_from(value) {
            metadata.insert(key, value);
        }
    };
    if let Some(at) = state.last_success {
        put(LAST_SUCCESS, unix(at).to_string());
    }
    if let Some(outage) = &state.outage {
        put(OUTAGE_SINCE, unix(outage.since).to_string());
        put(OUTAGE_SERVING, outage.serving.to_string());
        if let Some(until) = outage.grace_until {
            put(GRACE_UNTIL, unix(until).to_string());
        }
    }
    let policy = if policy.serve {
        format!("serve {}", policy.grace.as_secs())
    } else {
        "report".to_owned()
    };
    put(POLICY, policy);
}

/// The detail a Status response carried (absent fields stay `None`).
pub fn read(metadata: &MetadataMap) -> StatusDetail {
    let text = |key: &str| metadata.get(key).and_then(|v| v.to_str().ok());
    let time = |key: &str| {
        text(key)
            .and_then(|v| v.parse::<u64>().ok())
            .map(|s| UNIX_EPOCH + Duration::from_secs(s))
    };
    StatusDetail {
        last_success: time(LAST_SUCCESS),
        outage: time(OUTAGE_SINCE).map(|since| Outage {
            since,
            serving: text(OUTAGE_SERVING) == Some("true"),
            grace_until: time(GRACE_UNTIL),
        }),
        policy: text(POLICY).map(str::to_owned),
    }
}

impl StatusDetail {
    /// One sentence on the outage at `now`, e.g. "serving from cache, backend unreachable for
    /// 3m12s, grace until 2026-12-08T16:10:00Z"; `None` while the backend answers.
    pub fn outage_line(&self, now: SystemTime) -> Option<String> {
        let outage = self.outage?;
        let down = compact(now.duration_since(outage.since).unwrap_or_default());
        Some(match (outage.serving, outage.grace_until) {
            (true, Some(until)) => format!(
                "serving from cache, backend unreachable for {down}, grace until {}",
                rfc3339(until)
            ),
            (_, Some(until)) => format!(
                "backend unreachable for {down}, grace ended at {}",
                rfc3339(until)
            ),
            (_, None) if self.policy.as_deref() == Some("report") => {
                format!("backend unreachable for {down} (health.backend_outage: report)")
            }
            (_, None) => {
                format!("backend unreachable for {down}, no local KEK can seal without it")
            }
        })
    }

    /// The `--verbose` lines: the last successful probe, the outage and the policy.
    pub fn verbose_lines(&self, now: SystemTime) -> Vec<String> {
        let mut lines = Vec::new();
        match self.last_success {
            Some(at) => lines.push(format!(
                "last successful probe: {} ({} ago)",
                rfc3339(at),
                compact(now.duration_since(at).unwrap_or_default())
            )),
            None => lines.push("last successful probe: none yet".to_owned()),
        }
        match &self.outage {
            Some(outage) => lines.push(format!(
                "backend: unreachable since {}",
                rfc3339(outage.since)
            )),
            None => lines.push("backend: reachable".to_owned()),
        }
        let policy = match self.policy.as_deref().map(|p| p.split_once(' ')) {
            Some(Some(("serve", grace))) => {
                let grace = grace.parse().map(Duration::from_secs).unwrap_or_default();
                format!("serve, outage_grace {}", compact(grace))
            }
            Some(_) => self.policy.clone().unwrap_or_default(),
            None => "unknown".to_owned(),
        };
        lines.push(format!("health.backend_outage: {policy}"));
        lines
    }
}

fn unix(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(s)
    }

    #[test]
    fn travels_through_metadata_and_reads_as_the_issue_shows() {
        let state = HealthState {
            healthy: true,
            healthz: "ok".into(),
            last_success: Some(at(1_796_918_400)),
            outage: Some(Outage {
                since: at(1_796_918_408),
                serving: true,
                grace_until: Some(at(1_797_004_808)),
            }),
        };
        let mut metadata = MetadataMap::new();
        insert(&mut metadata, &state, OutagePolicy::default());
        let detail = read(&metadata);
        assert_eq!(detail.outage, state.outage);
        assert_eq!(detail.last_success, state.last_success);
        assert_eq!(
            detail.outage_line(at(1_796_918_600)).as_deref(),
            Some(
                "serving from cache, backend unreachable for 3m12s, grace until 2026-12-11T16:00:08Z"
            )
        );
        let verbose = detail.verbose_lines(at(1_796_918_600));
        assert_eq!(
            verbose,
            [
                "last successful probe: 2026-12-10T16:00:00Z (3m20s ago)",
                "backend: unreachable since 2026-12-10T16:00:08Z",
                "health.backend_outage: serve, outage_grace 24h0m0s",
            ]
        );
        let healthy = read(&MetadataMap::new());
        assert_eq!(healthy.outage_line(at(0)), None);
    }
}
