//! A local user floods the metrics port, which the static pod's host network puts on the node's
//! loopback: with the open-file limit the review found on nodes (1,024, soft and hard, so raising
//! it does not help), 1,100 idle connections from uid 65534 used to take every descriptor, and
//! the gRPC socket stopped accepting. Now Status keeps answering, the plugin holds few
//! descriptors and does not spin, and the port answers again once the idle ones time out.

use crate::common::*;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Opens `count` TCP connections to the port and holds them, idle, as uid 65534 when run as
/// root; prints `open N` once they are open.
fn flood(port: u16, count: usize) -> Child {
    let script = format!(
        r#"
import resource, socket, sys, time
_, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
held = []
for _ in range({count}):
    s = socket.socket()
    s.connect(("127.0.0.1", {port}))
    held.append(s)
print("open", len(held), flush=True)
time.sleep(120)
"#
    );
    let mut command = if rustix::process::getuid().is_root() {
        // The system interpreter: a user's (pyenv's, under /root) is not readable by uid 65534.
        let python = ["/usr/bin/python3", "/usr/local/bin/python3"]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists())
            .expect("a system python3 that uid 65534 can run");
        let mut c = Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups", python]);
        c
    } else {
        Command::new("python3")
    };
    command
        .arg("-c")
        .arg(script)
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3")
}

/// Clock ticks of CPU time the process has used (user + system).
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    let fields: Vec<&str> = stat.rsplit_once(") ").expect("comm").1.split(' ').collect();
    fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime")
}

/// One GET of `/metrics`: the status code and body, `None` when the connection was refused or
/// reset (a busy answer may be cut short by the close).
fn scrape(port: u16) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let code = response.split_whitespace().nth(1)?.parse().ok()?;
    Some((code, response))
}

fn descriptors(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("fds")
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_idle_metrics_connections_leaves_status_answering() {
    let temp = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let plugin = Plugin::start_with(temp.path(), &format!("metrics_address: 127.0.0.1:{port}\n"));
    let pid = plugin.pid();
    let limited = Command::new("prlimit")
        .arg(format!("--pid={pid}"))
        .arg("--nofile=1024:1024")
        .status()
        .expect("prlimit");
    assert!(limited.success(), "prlimit");
    let before = descriptors(pid);

    let mut holder = flood(port, 1_100);
    let mut line = String::new();
    BufReader::new(holder.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("read");
    assert_eq!(
        line.trim(),
        "open 1100",
        "the flood did not open its connections"
    );
    // Every slot is taken: a scrape now is turned away at once.
    let turned_away = scrape(port);
    assert!(
        matches!(turned_away, None | Some((503, _))),
        "a scrape during the flood was served: {turned_away:?}"
    );

    let mut client = plugin.client().await;
    let answered = status(&mut client).await;
    assert_eq!(answered.healthz, "ok");
    let held = descriptors(pid);
    assert!(
        held < before + 64,
        "the plugin holds {held} descriptors (it held {before} before the flood)"
    );
    let ticks = cpu_ticks(pid);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let spent = cpu_ticks(pid) - ticks;
    assert!(
        spent < 50,
        "the plugin used {spent} ticks of CPU in 2 s of the flood"
    );
    // A fresh connection gets Status through a new gRPC connection too.
    let mut fresh = plugin.client().await;
    assert_eq!(status(&mut fresh).await.healthz, "ok");

    // The idle connections inside the cap are closed after the header timeout; the port then
    // serves scrapes again while the flood still holds its sockets.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match scrape(port) {
            Some((200, body)) => {
                assert!(body.contains("kms_plugin_build_info"), "{body}");
                break;
            }
            Some((503, _)) | None => {}
            Some((code, body)) => panic!("/metrics answered {code}: {body}"),
        }
        assert!(Instant::now() < deadline, "/metrics never answered again");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let _ = holder.kill();
    let _ = holder.wait();
}
