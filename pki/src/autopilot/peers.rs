//! Before an etcd member restarts, every other member of its cluster must answer healthy, or
//! the restart could cost the cluster its quorum: the members are read from the local member
//! (`/v3/cluster/member/list`), each asked `/health` on its client URL, over mutual TLS with the
//! healthcheck-client certificate and the etcd CA.

use std::time::{Duration, Instant};

use super::health::{Probe, exchange, healthy_answer, host_of};

/// One member as `member/list` tells it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Member {
    name: String,
    client_urls: Vec<String>,
}

/// Waits until every member but this one (`self_name`, etcd's `--name`) answers healthy;
/// `Err` names the members that did not within `timeout`.
pub fn wait_others_healthy(
    local: &Probe,
    self_name: &str,
    timeout: Duration,
) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    loop {
        let err = match others_unhealthy(local, self_name) {
            Ok(bad) if bad.is_empty() => return Ok(()),
            Ok(bad) => bad.join("; "),
            Err(e) => e,
        };
        if Instant::now() >= deadline {
            return Err(format!(
                "not restarting etcd member {self_name}: {err} (after waiting {timeout:?}); its quorum would be at risk"
            ));
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// The other members that do not answer healthy, with why.
fn others_unhealthy(local: &Probe, self_name: &str) -> Result<Vec<String>, String> {
    let (_, text) = exchange(local, "POST", "/v3/cluster/member/list", Some("{}"))
        .map_err(|e| format!("member list from {}: {e}", local.address))?;
    let members =
        parse_members(&text).map_err(|e| format!("member list from {}: {e}", local.address))?;
    if !members.iter().any(|m| m.name == self_name) {
        return Err(format!(
            "member list from {} does not name {self_name}",
            local.address
        ));
    }
    let mut bad = Vec::new();
    for m in members.iter().filter(|m| m.name != self_name) {
        let Some(url) = m.client_urls.iter().find(|u| u.starts_with("https://")) else {
            bad.push(format!(
                "member {:?} has no https client URL (not started?)",
                m.name
            ));
            continue;
        };
        let hostport = url
            .trim_start_matches("https://")
            .trim_end_matches('/')
            .to_owned();
        let probe = Probe {
            host: host_of(&hostport),
            address: hostport,
            path: "/health",
            ..local.clone()
        };
        let answer = exchange(&probe, "GET", "/health", None)
            .and_then(|(_, t)| healthy_answer("/health", &t));
        if let Err(e) = answer {
            bad.push(format!("member {} ({url}) is not healthy: {e}", m.name));
        }
    }
    Ok(bad)
}

/// The members of a `member/list` answer (HTTP, JSON body).
fn parse_members(text: &str) -> Result<Vec<Member>, String> {
    healthy_answer("/v3/cluster/member/list", text)?;
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    let body = dechunk(body);
    let v: serde_json::Value = serde_json::from_str(&body).map_err(|e| format!("not JSON: {e}"))?;
    let members = v["members"].as_array().ok_or("no members")?;
    Ok(members
        .iter()
        .map(|m| Member {
            name: m["name"].as_str().unwrap_or_default().to_owned(),
            client_urls: m["clientURLs"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|u| u.as_str().map(str::to_owned))
                .collect(),
        })
        .collect())
}

/// A body sent with chunked transfer encoding, joined (other bodies are returned as they are).
fn dechunk(body: &str) -> String {
    if body.trim_start().starts_with('{') {
        return body.to_owned();
    }
    let mut out = String::new();
    let mut rest = body;
    while let Some((size, after)) = rest.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || after.len() < n {
            break;
        }
        out.push_str(&after[..n]);
        rest = after[n..].trim_start_matches("\r\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_from_a_chunked_answer() -> Result<(), String> {
        let json = r#"{"header":{},"members":[{"name":"cp1","clientURLs":["https://127.0.0.1:2379"]},{"name":"cp2","peerURLs":["https://127.0.0.2:2380"]}]}"#;
        let chunked = format!(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{json}\r\n0\r\n\r\n",
            json.len()
        );
        let m = parse_members(&chunked)?;
        assert_eq!(m.len(), 2);
        assert_eq!(m[0].client_urls, ["https://127.0.0.1:2379"]);
        assert!(
            m[1].client_urls.is_empty(),
            "an unstarted member has no client URL"
        );
        let plain = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{json}",
            json.len()
        );
        assert_eq!(parse_members(&plain)?, m);
        assert!(parse_members("HTTP/1.1 503 x\r\n\r\n{}").is_err());
        Ok(())
    }
}
