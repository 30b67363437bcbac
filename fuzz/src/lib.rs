//! Helpers shared by the fuzz targets: running a byte stream through [`AuthorityShim`] over an
//! in-memory duplex, and cutting an HTTP/2 client stream into its HPACK header blocks.

use authority_shim::{AuthorityShim, Limits, PREFACE, Rewrite};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// What h2 would read from the shim, and the shim's verdict on the connection.
pub struct ShimRun {
    /// The bytes the shim handed to h2.
    pub output: Vec<u8>,
    /// The client overstepped a bound.
    pub refused: bool,
    /// The connection was handed to h2 untouched.
    pub passed_through: bool,
    /// Most bytes the shim held at once between reads.
    pub peak_buffered: usize,
}

/// Writes `input` in `chunk`-byte writes into a duplex whose other end the shim reads, and
/// collects what the shim yields until the client's end closes.
pub fn run_shim(input: &[u8], chunk: usize, limits: Limits, rewrite: Rewrite) -> ShimRun {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let chunk = chunk.max(1);
        let (mut client, server) = tokio::io::duplex(chunk);
        let writer = async move {
            for piece in input.chunks(chunk) {
                if client.write_all(piece).await.is_err() {
                    break;
                }
            }
            drop(client);
        };
        let reader = async move {
            let mut shim = AuthorityShim::with(server, limits, rewrite);
            let mut output = Vec::new();
            let mut peak_buffered = 0;
            let mut buf = vec![0u8; 4096];
            loop {
                let n = shim.read(&mut buf).await.expect("in-memory read");
                peak_buffered = peak_buffered.max(shim.buffered());
                if n == 0 {
                    break;
                }
                output.extend_from_slice(&buf[..n]);
            }
            ShimRun {
                output,
                refused: shim.refused(),
                passed_through: shim.passes_through(),
                peak_buffered,
            }
        };
        let ((), run) = tokio::join!(writer, reader);
        run
    })
}

const HEADERS: u8 = 0x1;
const CONTINUATION: u8 = 0x9;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;

/// The complete header blocks (fragments joined, padding and priority removed) of a client
/// stream that h2 decodes, in order, up to the first frame h2 would refuse outright (a
/// malformed HEADERS or one on stream 0, a CONTINUATION outside a block, another frame inside
/// one, PUSH_PROMISE). A HEADERS frame on a stream depending on itself is skipped: h2 resets
/// that stream without decoding the block. A block cut off by
/// the end of the stream is left out. `None` when the stream does not start with the preface.
pub fn header_blocks(stream: &[u8]) -> Option<Vec<Vec<u8>>> {
    let mut rest = stream.strip_prefix(PREFACE)?;
    let mut blocks = Vec::new();
    let mut open: Option<(u32, Vec<u8>)> = None;
    while rest.len() >= 9 {
        let length =
            (usize::from(rest[0]) << 16) | (usize::from(rest[1]) << 8) | usize::from(rest[2]);
        let (kind, flags) = (rest[3], rest[4]);
        let stream_id = u32::from_be_bytes([rest[5], rest[6], rest[7], rest[8]]) & 0x7fff_ffff;
        if rest.len() < 9 + length {
            break;
        }
        let payload = &rest[9..9 + length];
        rest = &rest[9 + length..];
        let fragment = match (kind, open.as_mut()) {
            (HEADERS, None) if stream_id == 0 => break,
            (HEADERS, None) => {
                let mut body = payload;
                let mut pad = 0;
                if flags & PADDED != 0 {
                    let Some((&p, tail)) = body.split_first() else {
                        break;
                    };
                    pad = usize::from(p);
                    body = tail;
                }
                if flags & PRIORITY != 0 {
                    if body.len() < 5 {
                        break;
                    }
                    let dependency =
                        u32::from_be_bytes([body[0], body[1], body[2], body[3]]) & 0x7fff_ffff;
                    if dependency == stream_id {
                        // h2 resets the stream without decoding its block.
                        continue;
                    }
                    body = &body[5..];
                }
                if pad > body.len() {
                    break;
                }
                open = Some((stream_id, Vec::new()));
                &body[..body.len() - pad]
            }
            (CONTINUATION, Some((id, _))) if *id == stream_id => payload,
            (HEADERS | CONTINUATION | 0x5, _) | (_, Some(_)) => break,
            _ => continue,
        };
        if let Some((_, block)) = open.as_mut() {
            block.extend_from_slice(fragment);
        }
        if flags & END_HEADERS != 0 {
            if let Some((_, block)) = open.take() {
                blocks.push(block);
            }
        }
    }
    Some(blocks)
}

/// Limits from two input bytes: small ones reach every bound with short inputs.
pub fn limits_from(a: u8, b: u8) -> Limits {
    let header_list = 64 + u32::from(a) * 128;
    let frame = 16_384 + u32::from(b) * 256;
    Limits::new(header_list, frame).unwrap_or(Limits::DEFAULT)
}
