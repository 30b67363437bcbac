//! Hostile HTTP/2 clients against the real binary: header bombs, CONTINUATION floods, oversized
//! frames, blocks cut off by EOF, small blocks that expand through the HPACK table, malformed
//! one-byte blocks and floods of requests whose answers are never read, on connections the
//! `:authority` shim rewrites. Each gets h2's own GOAWAY, the plugin's peak memory stays small
//! with 64 such clients at once, honest callers keep being served, and SIGTERM still ends the
//! process within `shutdown_grace`.

use crate::common;

use common::raw_h2::{PREFACE, frame, integer};
use common::*;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Held by each test that runs 64 hostile connections, so two such tests never share the
/// machine's cores: each judges how the plugin answers beside its own attack.
static ONE_FLOOD_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const HEADERS: u8 = 0x1;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const FRAME_SIZE_ERROR: u32 = 0x6;
const ENHANCE_YOUR_CALM: u32 = 0xb;
/// The plugin's largest request message.
const MAX_DECODING_MESSAGE_SIZE: usize = 64 * 1024;

/// `:method POST`, `:scheme http`, `:path` Status, and a socket-path `:authority` (rewritten).
fn request_start() -> Vec<u8> {
    let mut block = vec![0x83, 0x86, 0x04];
    let path = b"/v2.KeyManagementService/Status";
    integer(&mut block, 0, 7, path.len());
    block.extend_from_slice(path);
    block.push(0x01);
    let authority = b"/var/run/kms.sock";
    integer(&mut block, 0, 7, authority.len());
    block.extend_from_slice(authority);
    block
}

/// One 4 KB literal added to the HPACK table, then `references` one-byte references to it.
fn bomb(references: usize) -> Vec<u8> {
    let mut block = request_start();
    block.extend_from_slice(&[0x40, 6]);
    block.extend_from_slice(b"x-bomb");
    integer(&mut block, 0, 7, 4000);
    block.resize(block.len() + 4000, b'b');
    block.resize(block.len() + references, 0x80 | 62);
    block
}

/// `block` in HEADERS and CONTINUATION frames of 16 KiB.
fn frames(stream: u32, block: &[u8]) -> Vec<u8> {
    let chunks: Vec<&[u8]> = block.chunks(16_384).collect();
    let mut out = Vec::new();
    for (i, chunk) in chunks.iter().enumerate() {
        let end = if i + 1 == chunks.len() {
            END_HEADERS
        } else {
            0
        };
        let (kind, flags) = if i == 0 {
            (HEADERS, END_STREAM | end)
        } else {
            (CONTINUATION, end)
        };
        out.extend(frame(kind, flags, stream, chunk));
    }
    out
}

#[derive(Clone, Copy, Debug)]
enum Attack {
    /// The header bomb in 16 KiB frames.
    Bomb,
    /// The header bomb as one 254 KB HEADERS frame.
    BombInOneFrame,
    /// A HEADERS frame announcing 1 MiB.
    MebibyteFrame,
    /// A HEADERS frame followed by CONTINUATION frames that never end the block.
    ContinuationFlood,
    /// Half a header block, then the connection is closed.
    EofMidBlock,
    /// 20,000 blocks of eight bytes, each within every per-block bound, that each expand to
    /// 16 KB through the client's HPACK table: the shim's output across blocks (a 16 KiB read
    /// holds 960 of them).
    CrossBlock,
    /// 400,000 one-byte header blocks (4 MB), each a request h2 resets as malformed.
    MalformedBlocks,
    /// Half a header block, then silence with the connection open.
    HoldMidBlock,
}

const ATTACKS: [Attack; 8] = [
    Attack::Bomb,
    Attack::BombInOneFrame,
    Attack::MebibyteFrame,
    Attack::ContinuationFlood,
    Attack::EofMidBlock,
    Attack::CrossBlock,
    Attack::MalformedBlocks,
    Attack::HoldMidBlock,
];

impl Attack {
    /// The attack's bytes after a first, honest request that puts the shim in rewriting mode.
    fn bytes(self) -> Vec<u8> {
        let mut out = PREFACE.to_vec();
        out.extend(frame(0x4, 0, 0, &[]));
        out.extend(frames(1, &request_start()));
        match self {
            Attack::Bomb => out.extend(frames(3, &bomb(80_000))),
            Attack::BombInOneFrame => out.extend(frame(HEADERS, END_HEADERS, 3, &bomb(250_000))),
            Attack::MebibyteFrame => {
                out.extend(frame(HEADERS, END_HEADERS, 3, &vec![0x82; 1 << 20]))
            }
            Attack::ContinuationFlood => {
                out.extend(frame(HEADERS, 0, 3, &request_start()));
                for _ in 0..10_000 {
                    out.extend(frame(CONTINUATION, 0, 3, &[]));
                }
            }
            Attack::EofMidBlock | Attack::HoldMidBlock => {
                out.extend(frame(HEADERS, 0, 3, &request_start()))
            }
            Attack::CrossBlock => {
                // Stream 3 adds `:path`, `:authority` and a 3,900-byte field to the table
                // (indices 64, 63, 62); each later block is eight bytes of references to them.
                let path = b"/v2.KeyManagementService/Status";
                let authority = b"/var/run/kms.sock";
                let mut first = vec![0x83, 0x86, 0x44];
                integer(&mut first, 0, 7, path.len());
                first.extend_from_slice(path);
                first.push(0x41);
                integer(&mut first, 0, 7, authority.len());
                first.extend_from_slice(authority);
                first.extend_from_slice(&[0x40, 6]);
                first.extend_from_slice(b"x-bomb");
                integer(&mut first, 0, 7, 3900);
                first.resize(first.len() + 3900, b'b');
                out.extend(frames(3, &first));
                let block = [
                    0x83,
                    0x86,
                    0x80 | 64,
                    0x80 | 63,
                    0x80 | 62,
                    0x80 | 62,
                    0x80 | 62,
                    0x80 | 62,
                ];
                for i in 0..20_000 {
                    out.extend(frame(HEADERS, END_STREAM | END_HEADERS, 5 + 2 * i, &block));
                }
            }
            Attack::MalformedBlocks => {
                for i in 0..400_000 {
                    out.extend(frame(HEADERS, END_STREAM | END_HEADERS, 3 + 2 * i, &[0x82]));
                }
            }
        }
        out
    }

    /// The GOAWAY code h2 answers with, if the attack is one it refuses.
    fn expected(self) -> Option<u32> {
        match self {
            Attack::Bomb | Attack::ContinuationFlood => Some(ENHANCE_YOUR_CALM),
            Attack::BombInOneFrame | Attack::MebibyteFrame => Some(FRAME_SIZE_ERROR),
            Attack::EofMidBlock | Attack::HoldMidBlock => None,
            Attack::CrossBlock | Attack::MalformedBlocks => Some(ENHANCE_YOUR_CALM),
        }
    }

    /// Runs the attack once; returns the GOAWAY code received, if any. A held connection stays
    /// open until `hold` is cleared.
    fn run(self, socket: &Path, hold: &AtomicBool) -> Option<u32> {
        let mut stream = UnixStream::connect(socket).ok()?;
        stream
            .set_write_timeout(Some(Duration::from_secs(2)))
            .ok()?;
        stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        let _ = stream.write_all(&self.bytes());
        match self {
            Attack::EofMidBlock => {
                let _ = stream.shutdown(std::net::Shutdown::Write);
            }
            Attack::HoldMidBlock => {
                while hold.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(50));
                }
                return None;
            }
            _ => {}
        }
        read_goaway(&mut stream)
    }
}

/// Reads frames until a GOAWAY (its error code), the end of the connection or the timeout.
fn read_goaway(stream: &mut UnixStream) -> Option<u32> {
    let mut head = [0u8; 9];
    loop {
        stream.read_exact(&mut head).ok()?;
        let len = (usize::from(head[0]) << 16) | (usize::from(head[1]) << 8) | usize::from(head[2]);
        let mut payload = vec![0u8; len];
        stream.read_exact(&mut payload).ok()?;
        if head[3] == 0x7 && payload.len() >= 8 {
            return Some(u32::from_be_bytes([
                payload[4], payload[5], payload[6], payload[7],
            ]));
        }
    }
}

/// The process's peak resident set, from /proc.
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM")
}

#[test]
fn each_attack_gets_h2s_answer_and_the_plugin_serves_on() {
    let temp = tempfile::tempdir().expect("tempdir");
    let plugin = Plugin::start_local(temp.path());
    let hold = AtomicBool::new(false);
    for attack in ATTACKS {
        let answer = attack.run(&plugin.socket, &hold);
        assert_eq!(answer, attack.expected(), "{attack:?}");
        assert!(probe_healthy(&plugin.address()), "after {attack:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_four_hostile_connections_stay_under_64_mib() {
    let _alone = ONE_FLOOD_AT_A_TIME.lock().await;
    let temp = tempfile::tempdir().expect("tempdir");
    let mut plugin = Plugin::start_local(temp.path());
    let pid = plugin.pid();
    let before = peak_rss_kib(pid);
    let attacking = Arc::new(AtomicBool::new(true));
    let holding = Arc::new(AtomicBool::new(true));
    let refused = Arc::new(AtomicUsize::new(0));
    let mut attackers = Vec::new();
    for worker in 0..64 {
        let (socket, attacking, holding, refused) = (
            plugin.socket.clone(),
            attacking.clone(),
            holding.clone(),
            refused.clone(),
        );
        attackers.push(std::thread::spawn(move || {
            let mut round = worker;
            while attacking.load(Ordering::Relaxed) {
                let attack = ATTACKS[round % (ATTACKS.len() - 1)];
                if attack.run(&socket, &holding).is_some() {
                    refused.fetch_add(1, Ordering::Relaxed);
                }
                round += 1;
            }
            // Finally hold a half-sent block open through shutdown.
            Attack::HoldMidBlock.run(&socket, &holding);
        }));
    }
    // Honest calls on their own connection keep succeeding throughout.
    let mut client = plugin.client().await;
    let deadline = Instant::now() + Duration::from_secs(4);
    let mut calls = 0;
    while Instant::now() < deadline {
        let sealed = bounded(
            "encrypt under attack",
            Duration::from_secs(3),
            encrypt(&mut client, b"seed"),
        )
        .await;
        let opened = decrypt(&mut client, &sealed)
            .await
            .expect("decrypt under attack");
        assert_eq!(opened, b"seed");
        calls += 1;
    }
    attacking.store(false, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let peak = peak_rss_kib(pid);
    let answered = refused.load(Ordering::Relaxed);
    eprintln!(
        "peak RSS {} KiB (before the attack {before} KiB), {answered} attacks answered with GOAWAY, {calls} honest round trips",
        peak
    );
    assert!(answered >= 64, "attacks were not answered: {answered}");
    assert!(
        peak < 64 * 1024,
        "peak RSS {peak} KiB with 64 hostile connections"
    );
    assert_eq!(status(&mut client).await.healthz, "ok");
    // SIGTERM with hostile connections still open: out within shutdown_grace (5 s).
    let stopping = Instant::now();
    plugin.signal("TERM");
    let exit = plugin.wait_exit(Duration::from_secs(15));
    let took = stopping.elapsed();
    holding.store(false, Ordering::Relaxed);
    for attacker in attackers {
        attacker.join().expect("attacker");
    }
    eprintln!("SIGTERM to exit: {took:?}");
    assert!(exit.success(), "{exit}");
    assert!(took < Duration::from_secs(6), "SIGTERM took {took:?}");
}

/// A Status call carrying one `x-big` metadata value of `len` bytes, over tonic (an authority h2
/// accepts, so the connection passes through the shim untouched).
async fn status_with_metadata(plugin: &Plugin, len: usize) -> Result<(), tonic::Status> {
    let mut client = kms_plugin::client::connect(&plugin.address(), Duration::from_secs(10))
        .await
        .expect("connect");
    let mut request = tonic::Request::new(kms_proto::kms_v2::StatusRequest {});
    let value = "v".repeat(len).parse().expect("metadata value");
    request.metadata_mut().insert("x-big", value);
    client.status(request).await.map(|_| ())
}

/// A rewritten connection (socket-path authority) whose request carries a `len`-byte header;
/// returns the GOAWAY code received, if any.
fn rewritten_request_with_header(socket: &Path, len: usize) -> Option<u32> {
    let mut block = request_start();
    block.push(0x00);
    integer(&mut block, 0, 7, 5);
    block.extend_from_slice(b"x-big");
    integer(&mut block, 0, 7, len);
    block.resize(block.len() + len, b'v');
    let mut bytes = PREFACE.to_vec();
    bytes.extend(frame(0x4, 0, 0, &[]));
    bytes.extend(frames(1, &block));
    let mut stream = UnixStream::connect(socket).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    stream.write_all(&bytes).expect("write");
    read_goaway(&mut stream)
}

/// `max_header_list_size` is what both h2 and the shim enforce: at 4096 bytes a 6 KB metadata
/// value is refused and a 20 KB header (over four times the cap) gets h2's GOAWAY
/// ENHANCE_YOUR_CALM from the shim; at the default 16 KiB the 6 KB value is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_header_list_cap_is_configurable() {
    let temp = tempfile::tempdir().expect("tempdir");
    let capped = Plugin::start_with(temp.path(), "max_header_list_size: 4096\n");
    assert!(
        status_with_metadata(&capped, 6_000).await.is_err(),
        "a 6 KB header list must be refused under a 4096-byte cap"
    );
    assert!(status_with_metadata(&capped, 100).await.is_ok());
    let socket = capped.socket.clone();
    let answer =
        tokio::task::spawn_blocking(move || rewritten_request_with_header(&socket, 20_000))
            .await
            .expect("join");
    assert_eq!(answer, Some(ENHANCE_YOUR_CALM));
    drop(capped);

    let temp = tempfile::tempdir().expect("tempdir");
    let default = Plugin::start_local(temp.path());
    status_with_metadata(&default, 6_000)
        .await
        .expect("the default 16 KiB cap serves a 6 KB header list");
}

/// One connection opens `streams` Status requests back to back (HEADERS with END_STREAM on
/// streams 1, 3, 5, …) and never reads an answer: the answers must not pile up in the plugin.
/// Returns the GOAWAY code received once it stopped writing, if any.
fn stream_flood(socket: &Path, streams: u32) -> Option<u32> {
    let mut stream = UnixStream::connect(socket).ok()?;
    stream
        .set_write_timeout(Some(Duration::from_secs(5)))
        .ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let mut out = PREFACE.to_vec();
    out.extend(frame(0x4, 0, 0, &[]));
    let block = request_start();
    for i in 0..streams {
        out.extend(frame(HEADERS, END_HEADERS | END_STREAM, 2 * i + 1, &block));
        if out.len() > 1 << 16 {
            // The plugin may stop reading (or close) once it has refused enough.
            if stream.write_all(&out).is_err() {
                break;
            }
            out.clear();
        }
    }
    let _ = stream.write_all(&out);
    read_goaway(&mut stream)
}

/// 64 connections each opening 20,000 Status requests without reading the answers: the plugin
/// answers within its stream limits, its memory stays small, and Status keeps answering.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_four_stream_floods_stay_under_64_mib() {
    let _alone = ONE_FLOOD_AT_A_TIME.lock().await;
    let temp = tempfile::tempdir().expect("tempdir");
    let plugin = Plugin::start_local(temp.path());
    let pid = plugin.pid();
    let before = peak_rss_kib(pid);
    let attackers: Vec<_> = (0..64)
        .map(|_| {
            let socket = plugin.socket.clone();
            std::thread::spawn(move || stream_flood(&socket, 20_000))
        })
        .collect();
    let mut client = plugin.client().await;
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline {
        let answered = bounded(
            "status under a stream flood",
            Duration::from_secs(3),
            async { status(&mut client).await },
        )
        .await;
        assert_eq!(answered.healthz, "ok");
    }
    let goaways: Vec<Option<u32>> = attackers
        .into_iter()
        .map(|a| a.join().expect("attacker"))
        .collect();
    let peak = peak_rss_kib(pid);
    eprintln!(
        "peak RSS {peak} KiB (before {before} KiB); GOAWAY codes: {:?}",
        goaways
            .iter()
            .flatten()
            .collect::<std::collections::BTreeSet<_>>()
    );
    assert!(
        peak < before + 64 * 1024,
        "peak RSS {peak} KiB with 64 stream floods (before {before} KiB)"
    );
    let calmed = goaways
        .iter()
        .filter(|g| **g == Some(ENHANCE_YOUR_CALM))
        .count();
    assert_eq!(
        calmed, 64,
        "each flood ends with GOAWAY ENHANCE_YOUR_CALM: {goaways:?}"
    );
    assert_eq!(status(&mut client).await.healthz, "ok");
}

/// 64 connections of one attack at once, each attacking once: the plugin's peak RSS over its
/// resting figure, in KiB, and the GOAWAY codes received. Status answers throughout.
async fn sixty_four_at_once(attack: Attack) -> (u64, Vec<Option<u32>>) {
    let temp = tempfile::tempdir().expect("tempdir");
    let plugin = Plugin::start_local(temp.path());
    let pid = plugin.pid();
    let mut client = plugin.client().await;
    assert_eq!(status(&mut client).await.healthz, "ok");
    let before = peak_rss_kib(pid);
    let start = Arc::new(std::sync::Barrier::new(64));
    let attackers: Vec<_> = (0..64)
        .map(|_| {
            let (socket, start) = (plugin.socket.clone(), start.clone());
            std::thread::spawn(move || {
                start.wait();
                attack.run(&socket, &AtomicBool::new(false))
            })
        })
        .collect();
    while !attackers.iter().all(|a| a.is_finished()) {
        let answered = bounded("status under attack", Duration::from_secs(10), async {
            status(&mut client).await
        })
        .await;
        assert_eq!(answered.healthz, "ok", "{attack:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let answers = attackers
        .into_iter()
        .map(|a| a.join().expect("attacker"))
        .collect();
    assert_eq!(status(&mut client).await.healthz, "ok", "after {attack:?}");
    (peak_rss_kib(pid) - before, answers)
}

/// The amplifying attacks one kind at a time, 64 connections each: many small blocks that each
/// expand through the client's HPACK table (the shim decodes only as fast as h2 reads), 4 MB of
/// one-byte malformed blocks (h2's local reset cap), and the 254 KB header bomb.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_four_amplifying_connections_of_each_kind_stay_under_64_mib_extra() {
    let _alone = ONE_FLOOD_AT_A_TIME.lock().await;
    for attack in [Attack::CrossBlock, Attack::MalformedBlocks, Attack::Bomb] {
        let (extra, answers) = sixty_four_at_once(attack).await;
        let codes: std::collections::BTreeSet<_> = answers.iter().collect();
        eprintln!("{attack:?}: +{extra} KiB peak RSS; GOAWAY codes {codes:?}");
        assert!(
            extra < 64 * 1024,
            "{attack:?}: peak RSS +{extra} KiB with 64 connections"
        );
        assert!(
            answers.iter().all(|a| *a == attack.expected()),
            "{attack:?}: each connection gets h2's answer: {answers:?}"
        );
    }
}

/// One connection that opens `streams` Encrypt calls, each a gRPC message announcing
/// `announced` bytes of which all but one are sent, and never finishes them; it stays open
/// until `hold` clears. Returns how many calls the plugin let it open.
async fn unfinished_messages(
    socket: PathBuf,
    streams: usize,
    announced: usize,
    hold: Arc<AtomicBool>,
) -> usize {
    let Ok(io) = tokio::net::UnixStream::connect(&socket).await else {
        return 0;
    };
    let Ok((mut client, connection)) = h2::client::handshake(io).await else {
        return 0;
    };
    let driver = tokio::spawn(connection);
    let mut message = Vec::with_capacity(announced + 4);
    message.push(0);
    message.extend_from_slice(&(announced as u32).to_be_bytes());
    message.resize(announced + 4, 0x0a);
    let message = bytes::Bytes::from(message);
    let mut open = Vec::new();
    for _ in 0..streams {
        let Ok(Ok(ready)) =
            tokio::time::timeout(Duration::from_secs(2), client.clone().ready()).await
        else {
            break;
        };
        client = ready;
        let request = http::Request::post("http://localhost/v2.KeyManagementService/Encrypt")
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(())
            .expect("request");
        let Ok((response, mut body)) = client.send_request(request, false) else {
            break;
        };
        if body.send_data(message.clone(), false).is_err() {
            break;
        }
        open.push((response, body));
    }
    let opened = open.len();
    while hold.load(Ordering::Relaxed) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(open);
    driver.abort();
    opened
}

/// 64 connections each holding as many unfinished Encrypt messages of just under the decoding
/// limit as the plugin lets it open: what the plugin holds for them stays small, and Status
/// keeps answering on a connection of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_four_connections_of_unfinished_messages_stay_under_64_mib_extra() {
    let _alone = ONE_FLOOD_AT_A_TIME.lock().await;
    let temp = tempfile::tempdir().expect("tempdir");
    let plugin = Plugin::start_local(temp.path());
    let pid = plugin.pid();
    let mut client = plugin.client().await;
    assert_eq!(status(&mut client).await.healthz, "ok");
    let before = peak_rss_kib(pid);
    let hold = Arc::new(AtomicBool::new(true));
    let attackers: Vec<_> = (0..64)
        .map(|_| {
            tokio::spawn(unfinished_messages(
                plugin.socket.clone(),
                100,
                MAX_DECODING_MESSAGE_SIZE - 1,
                hold.clone(),
            ))
        })
        .collect();
    // Long enough for every connection to push all its window allows.
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        let answered = bounded(
            "status beside unfinished messages",
            Duration::from_secs(5),
            async { status(&mut client).await },
        )
        .await;
        assert_eq!(answered.healthz, "ok");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let extra = peak_rss_kib(pid) - before;
    hold.store(false, Ordering::Relaxed);
    let mut opened = Vec::new();
    for attacker in attackers {
        opened.push(attacker.await.expect("attacker"));
    }
    eprintln!("+{extra} KiB peak RSS; calls opened per connection: {opened:?}");
    assert!(
        opened.iter().all(|&n| n > 0),
        "every connection opened calls: {opened:?}"
    );
    assert!(
        extra < 64 * 1024,
        "peak RSS +{extra} KiB with 64 connections of unfinished messages"
    );
    assert_eq!(status(&mut client).await.healthz, "ok");
}
