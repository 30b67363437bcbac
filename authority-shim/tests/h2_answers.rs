//! Every bound against a real h2 server: the same hostile input sent to h2 directly and to h2
//! behind the shim must get the same answer (GOAWAY code and debug data, stream resets, `431`),
//! whichever path the shim takes (rewriting from the start, rewriting after a path authority,
//! or deciding on the hostile block itself).

use authority_shim::{AuthorityShim, Limits, PREFACE, Rewrite};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

const HEADERS: u8 = 0x1;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let mut out = (payload.len() as u32).to_be_bytes()[1..].to_vec();
    out.extend_from_slice(&[kind, flags]);
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

fn integer(out: &mut Vec<u8>, first: u8, prefix_bits: u32, mut value: usize) {
    let max = (1usize << prefix_bits) - 1;
    if value < max {
        out.push(first | value as u8);
        return;
    }
    out.push(first | max as u8);
    value -= max;
    while value >= 128 {
        out.push((value % 128) as u8 | 0x80);
        value /= 128;
    }
    out.push(value as u8);
}

/// A literal field with a new name: `first` is 0x00 (without indexing) or 0x40 (indexing).
fn literal(first: u8, name: &[u8], value: &[u8]) -> Vec<u8> {
    let mut out = vec![first];
    integer(&mut out, 0, 7, name.len());
    out.extend_from_slice(name);
    integer(&mut out, 0, 7, value.len());
    out.extend_from_slice(value);
    out
}

/// `:method POST`, `:scheme http`, `:path /`, then `:authority`.
fn request_start(authority: &[u8]) -> Vec<u8> {
    let mut block = vec![0x83, 0x86, 0x84];
    block.push(0x01);
    integer(&mut block, 0, 7, authority.len());
    block.extend_from_slice(authority);
    block
}

/// `block` as HEADERS and CONTINUATION frames of at most 16 KiB on `stream`.
fn frames(stream: u32, flags: u8, block: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let chunks: Vec<&[u8]> = block.chunks(16_384).collect();
    for (i, chunk) in chunks.iter().enumerate() {
        let last = if i + 1 == chunks.len() {
            END_HEADERS
        } else {
            0
        };
        let kind = if i == 0 { HEADERS } else { CONTINUATION };
        let extra = if i == 0 { flags } else { 0 };
        out.extend(frame(kind, last | extra, stream, chunk));
    }
    out
}

fn request(stream: u32, authority: &[u8]) -> Vec<u8> {
    frames(stream, END_STREAM, &request_start(authority))
}

/// What the server said, in order, without SETTINGS, PING and WINDOW_UPDATE.
#[derive(Debug, PartialEq, Eq)]
enum Answer {
    Status(u32, String),
    Reset(u32, u32),
    GoAway(u32, String),
}

async fn h2_server(io: impl AsyncRead + AsyncWrite + Unpin) {
    let mut builder = h2::server::Builder::new();
    builder
        .max_header_list_size(Limits::DEFAULT.max_header_list_size())
        .max_frame_size(Limits::DEFAULT.max_frame_size());
    let Ok(mut connection) = builder.handshake::<_, bytes::Bytes>(io).await else {
        return;
    };
    while let Some(Ok((_, mut respond))) = connection.accept().await {
        let _ = respond.send_response(http::Response::new(()), true);
    }
}

/// Sends `input` after the preface and SETTINGS to an h2 server (behind the shim when `shim`
/// is set) and collects its answers until it closes or goes quiet.
async fn answers(input: &[u8], shim: Option<Rewrite>, skip_stream_1: bool) -> Vec<Answer> {
    let (mut client, server) = tokio::io::duplex(4 << 20);
    let serving = tokio::spawn(async move {
        match shim {
            Some(rewrite) => h2_server(AuthorityShim::with(server, Limits::DEFAULT, rewrite)).await,
            None => h2_server(server).await,
        }
    });
    let mut hello = PREFACE.to_vec();
    hello.extend(frame(0x4, 0, 0, &[]));
    hello.extend_from_slice(input);
    client.write_all(&hello).await.expect("write");
    let mut received = Vec::new();
    let mut chunk = vec![0u8; 1 << 16];
    while let Ok(Ok(n)) =
        tokio::time::timeout(Duration::from_millis(300), client.read(&mut chunk)).await
    {
        if n == 0 {
            break;
        }
        received.extend_from_slice(&chunk[..n]);
    }
    drop(client);
    let _ = serving.await;
    let mut decoder = loona_hpack::Decoder::new();
    let mut out = Vec::new();
    let mut rest = &received[..];
    while rest.len() >= 9 {
        let len = (usize::from(rest[0]) << 16) | (usize::from(rest[1]) << 8) | usize::from(rest[2]);
        let (kind, stream) = (
            rest[3],
            u32::from_be_bytes([rest[5], rest[6], rest[7], rest[8]]),
        );
        let payload = &rest[9..9 + len];
        let word = |at: usize| {
            u32::from_be_bytes([
                payload[at],
                payload[at + 1],
                payload[at + 2],
                payload[at + 3],
            ])
        };
        match kind {
            0x1 => {
                let fields = decoder.decode(payload).expect("server HPACK");
                let status = fields
                    .iter()
                    .find(|(n, _)| n == b":status")
                    .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
                    .unwrap_or_default();
                out.push(Answer::Status(stream, status));
            }
            0x3 => out.push(Answer::Reset(stream, word(0))),
            0x7 => out.push(Answer::GoAway(
                word(4),
                String::from_utf8_lossy(&payload[8..]).into_owned(),
            )),
            _ => {}
        }
        rest = &rest[9 + len..];
    }
    if skip_stream_1 {
        out.retain(|a| !matches!(a, Answer::Status(1, _) | Answer::Reset(1, _)));
    }
    out
}

/// Checks that h2 alone and h2 behind the shim answer `hostile` (sent on stream 3 after a
/// request on stream 1) the same way, on every path of the shim; returns h2's answer.
async fn same_answer(hostile: &[u8]) -> Vec<Answer> {
    let after = |authority: &[u8]| {
        let mut input = request(1, authority);
        input.extend_from_slice(hostile);
        input
    };
    let direct = answers(&after(b"localhost"), None, false).await;
    let every = answers(&after(b"localhost"), Some(Rewrite::EveryBlock), false).await;
    assert_eq!(every, direct, "rewriting every block");
    let direct_tail = answers(&after(b"localhost"), None, true).await;
    let after_path = answers(&after(b"/run/kms.sock"), Some(Rewrite::WhenNeeded), true).await;
    assert_eq!(after_path, direct_tail, "rewriting after a path authority");
    let first = answers(hostile, Some(Rewrite::WhenNeeded), false).await;
    let first_direct = answers(hostile, None, false).await;
    assert_eq!(first, first_direct, "hostile first block");
    direct
}

fn goaway(code: u32, debug: &str) -> Answer {
    Answer::GoAway(code, debug.to_owned())
}

/// The header bomb: one 4 KB literal added to the table, then one-byte references to it.
fn bomb(references: usize) -> Vec<u8> {
    let mut block = request_start(b"/run/kms.sock");
    block.extend(literal(0x40, b"x-bomb", &vec![b'b'; 4000]));
    block.resize(block.len() + references, 0x80 | 62);
    block
}

#[tokio::test]
async fn header_bomb_within_frame_limits_is_enhance_your_calm() {
    let answer = same_answer(&frames(3, END_STREAM, &bomb(80_000))).await;
    assert!(
        answer.contains(&goaway(0xb, "header_list_way_too_large")),
        "{answer:?}"
    );
}

#[tokio::test]
async fn header_bomb_in_one_frame_is_a_frame_size_error() {
    let answer = same_answer(&frame(HEADERS, END_HEADERS, 3, &bomb(250_000))).await;
    assert!(answer.contains(&goaway(0x6, "")), "{answer:?}");
}

#[tokio::test]
async fn mebibyte_frame_is_a_frame_size_error() {
    let answer = same_answer(&frame(HEADERS, END_HEADERS, 3, &vec![0x82; 1 << 20])).await;
    assert!(answer.contains(&goaway(0x6, "")), "{answer:?}");
}

#[tokio::test]
async fn continuation_flood_is_enhance_your_calm() {
    let mut input = frame(HEADERS, 0, 3, &request_start(b"/run/kms.sock"));
    for _ in 0..1000 {
        input.extend(frame(CONTINUATION, 0, 3, &[]));
    }
    let answer = same_answer(&input).await;
    assert!(
        answer.contains(&goaway(0xb, "too_many_continuations")),
        "{answer:?}"
    );
}

#[tokio::test]
async fn oversized_list_is_431_and_the_connection_lives_on() {
    let mut block = request_start(b"/run/kms.sock");
    block.extend(literal(0x00, b"x-big", &vec![b'v'; 20_000]));
    let mut input = frames(3, END_STREAM, &block);
    input.extend(request(5, b"localhost"));
    let answer = same_answer(&input).await;
    assert!(
        answer.contains(&Answer::Status(3, "431".into())),
        "{answer:?}"
    );
    assert!(
        answer.contains(&Answer::Status(5, "200".into())),
        "{answer:?}"
    );
}

#[tokio::test]
async fn oversized_and_malformed_is_a_reset() {
    let mut block = request_start(b"/run/kms.sock");
    block.extend(literal(0x00, b"x-big", &vec![b'v'; 20_000]));
    block.extend(literal(0x00, b"connection", b"close"));
    let mut input = frames(3, END_STREAM, &block);
    input.extend(request(5, b"localhost"));
    let answer = same_answer(&input).await;
    assert!(answer.contains(&Answer::Reset(3, 0x1)), "{answer:?}");
    assert!(
        !answer.contains(&Answer::Status(3, "431".into())),
        "{answer:?}"
    );
}

#[tokio::test]
async fn oversized_block_that_keeps_growing_is_a_compression_error() {
    let mut block = request_start(b"/run/kms.sock");
    block.extend(literal(0x00, b"x-a", &vec![b'a'; 16_300]));
    let mut pending = vec![0x00, 0x03, b'x', b'-', b'b'];
    integer(&mut pending, 0, 7, 40_000);
    block.extend(&pending);
    let mut input = frame(HEADERS, 0, 3, &block);
    input.extend(frame(CONTINUATION, 0, 3, &vec![b'b'; 16_384]));
    input.extend(frame(CONTINUATION, END_HEADERS, 3, &vec![b'b'; 16_384]));
    let answer = same_answer(&input).await;
    assert!(answer.contains(&goaway(0x9, "")), "{answer:?}");
}

#[tokio::test]
async fn protocol_errors_are_h2s() {
    let mut interrupted = frame(HEADERS, 0, 3, &request_start(b"/run/kms.sock"));
    interrupted.extend(frame(0x0, END_STREAM, 3, b"data"));
    let mut bad_index = request_start(b"/run/kms.sock");
    bad_index.push(0x80 | 100);
    let mut upper = request_start(b"/run/kms.sock");
    upper.extend(literal(0x00, b"X-Upper", b"v"));
    // A 4 KB `:path` in the table, then 80,000 repetitions of it (malformed, so uncounted):
    // h2 resets the stream at the first frame, then refuses the next CONTINUATION.
    let mut repeated = vec![0x83, 0x86];
    repeated.extend(literal(0x40, b":path", &vec![b'/'; 4000]));
    repeated.extend(&request_start(b"/run/kms.sock")[3..]);
    repeated.resize(repeated.len() + 80_000, 0x80 | 62);
    let mut binary_authority = vec![0x83, 0x86, 0x84, 0x01, 0x02, 0xff, 0xfe];
    binary_authority.push(0x82);
    for input in [
        interrupted,
        frames(3, END_STREAM, &bad_index),
        frames(3, END_STREAM, &upper),
        frames(3, END_STREAM, &binary_authority),
        frames(3, END_STREAM, &repeated),
        frame(CONTINUATION, END_HEADERS, 3, &[0x82]),
        // HEADERS on stream 0, and padding longer than the frame: refused before decoding.
        frame(HEADERS, END_HEADERS | END_STREAM, 0, &[0x83, 0x86, 0xbe]),
        frame(HEADERS, END_HEADERS | 0x8, 3, &[200, 0x82]),
        frame(0x5, END_HEADERS, 3, &[0, 0, 0, 4, 0x82]),
    ] {
        let answer = same_answer(&input).await;
        assert!(
            answer.iter().any(|a| matches!(a, Answer::GoAway(0x1, _))),
            "{answer:?}"
        );
    }
}

#[tokio::test]
async fn stream_level_refusals_are_h2s() {
    let self_dependent = {
        let mut payload = vec![0, 0, 0, 3, 15];
        payload.extend(request_start(b"/run/kms.sock"));
        frame(HEADERS, END_HEADERS | END_STREAM | 0x20, 3, &payload)
    };
    let mut te = request_start(b"/run/kms.sock");
    te.extend(literal(0x00, b"te", b"gzip"));
    for input in [self_dependent, frames(3, END_STREAM, &te)] {
        let mut input = input;
        input.extend(request(5, b"localhost"));
        let answer = same_answer(&input).await;
        assert!(answer.contains(&Answer::Reset(3, 0x1)), "{answer:?}");
    }
}

#[tokio::test]
async fn block_cut_off_by_eof_reaches_nobody() {
    let input = frame(HEADERS, 0, 3, &request_start(b"/run/kms.sock"));
    let (mut client, server) = tokio::io::duplex(1 << 16);
    let mut hello = PREFACE.to_vec();
    hello.extend(frame(0x4, 0, 0, &[]));
    hello.extend(input);
    client.write_all(&hello).await.expect("write");
    drop(client);
    let mut shim = AuthorityShim::with(server, Limits::DEFAULT, Rewrite::EveryBlock);
    let mut forwarded = Vec::new();
    shim.read_to_end(&mut forwarded).await.expect("read");
    assert_eq!(forwarded, [PREFACE, &frame(0x4, 0, 0, &[])].concat());
}
