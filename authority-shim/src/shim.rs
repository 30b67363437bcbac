//! [`AuthorityShim`]: the client-to-server half of an HTTP/2 connection, with unparsable
//! `:authority` values rewritten before h2 reads them; writes pass straight through.
//!
//! The first header block decides the connection's fate. When its `:authority` parses (or it
//! has none) the frames received so far go to h2 as they came and every later byte is read by
//! h2 directly, so h2 keeps its own HPACK state from the first byte and the shim costs nothing.
//! Otherwise every header block is decoded with the client's HPACK state and re-encoded without
//! touching h2's dynamic table (see [`crate::block`]); every other frame passes byte for byte,
//! streamed rather than buffered. A client that oversteps one of h2's bounds gets h2's own
//! answer ([`crate::refusal`]) and nothing more is read from it.

use crate::block::{Authority, HeaderBlock};
use crate::frame::{
    CONTINUATION, END_HEADERS, END_STREAM, HEAD_LEN, HEADERS, Head, HeadersRefusal, PADDED,
    PREFACE, PUSH_PROMISE, headers_parts, put_frame,
};
use crate::hpack::HpackDecoder;
use crate::limits::{CLIENT_TABLE_SIZE, Limits, Rewrite};
use crate::refusal::Violation;
use bytes::{Buf, BufMut, BytesMut};
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

const READ_CHUNK: usize = 16 * 1024;
/// Decoding pauses at a frame boundary once this much output waits for h2: a read full of
/// small blocks that each expand to a whole header list is decoded only as fast as h2 reads.
const OUTPUT_HIGH_WATER: usize = 64 * 1024;

/// What the shim does with the connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// Waiting for the first header block's `:authority`.
    Undecided,
    /// Every header block is decoded and re-encoded.
    Rewriting,
    /// h2 reads the socket directly.
    PassThrough,
    /// The client overstepped a bound; h2 has been told, nothing more is read.
    Refused,
}

/// Where the parser is in the client's byte stream.
#[derive(Clone, Copy, Debug)]
enum Position {
    /// Inside the connection preface; this many bytes of it matched.
    Preface(usize),
    /// At a frame boundary.
    FrameStart,
    /// Copying the payload of a frame that passes through untouched; this many bytes remain.
    Forward(usize),
}

/// Wraps an accepted connection for an h2 server: see the module documentation.
pub struct AuthorityShim<S> {
    inner: S,
    limits: Limits,
    mode: Mode,
    position: Position,
    raw: BytesMut,
    out: BytesMut,
    block: Option<HeaderBlock>,
    decoder: Option<HpackDecoder>,
    eof: bool,
    rewritten: u64,
}

impl<S> AuthorityShim<S> {
    /// Wraps a freshly accepted connection with h2's default limits.
    pub fn new(inner: S) -> Self {
        Self::with(inner, Limits::DEFAULT, Rewrite::WhenNeeded)
    }

    /// Wraps a freshly accepted connection for a server that advertises `limits`.
    pub fn with(inner: S, limits: Limits, rewrite: Rewrite) -> Self {
        Self {
            inner,
            limits,
            mode: match rewrite {
                Rewrite::WhenNeeded => Mode::Undecided,
                Rewrite::EveryBlock => Mode::Rewriting,
            },
            position: Position::Preface(0),
            raw: BytesMut::new(),
            out: BytesMut::new(),
            block: None,
            decoder: Some(HpackDecoder::new(CLIENT_TABLE_SIZE)),
            eof: false,
            rewritten: 0,
        }
    }

    /// The wrapped connection.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// How many header blocks had their `:authority` replaced on this connection.
    pub fn rewritten(&self) -> u64 {
        self.rewritten
    }

    /// True once the connection is handed to h2 untouched.
    pub fn passes_through(&self) -> bool {
        self.mode == Mode::PassThrough
    }

    /// True once the client overstepped a bound and h2 was made to answer it.
    pub fn refused(&self) -> bool {
        self.mode == Mode::Refused
    }

    /// Bytes held for this connection (for memory checks).
    pub fn buffered(&self) -> usize {
        let block = self.block.as_ref().map_or(0, |b| b.held());
        self.raw.capacity() + self.out.capacity() + block
    }

    /// Hands everything from here on to h2 untouched.
    fn pass_through(&mut self) {
        self.mode = Mode::PassThrough;
        self.decoder = None;
        self.block = None;
        let rest = self.raw.split();
        self.out.unsplit(rest);
    }

    /// Makes h2 answer `violation` and stops reading the client.
    fn refuse(&mut self, violation: Violation) {
        let stream_id = self
            .block
            .as_ref()
            .map(|b| b.stream_id)
            .filter(|&id| id != 0)
            .unwrap_or(1);
        self.out.put(violation.provocation(stream_id, self.limits));
        self.mode = Mode::Refused;
        self.block = None;
        self.decoder = None;
        self.raw = BytesMut::new();
    }

    /// Moves as much of `raw` to `out` as can be decided now.
    fn process(&mut self) {
        loop {
            match self.mode {
                Mode::PassThrough => return self.pass_through(),
                Mode::Refused => return self.raw.clear(),
                Mode::Undecided | Mode::Rewriting => {}
            }
            match self.position {
                Position::Preface(matched) => {
                    let take = (PREFACE.len() - matched).min(self.raw.len());
                    if take == 0 {
                        return;
                    }
                    if self.raw[..take] != PREFACE[matched..matched + take] {
                        // Not HTTP/2: h2 says so itself.
                        self.pass_through();
                        continue;
                    }
                    self.out.put(self.raw.split_to(take));
                    self.position = match matched + take {
                        done if done == PREFACE.len() => Position::FrameStart,
                        partial => Position::Preface(partial),
                    };
                }
                Position::Forward(remaining) => {
                    let take = remaining.min(self.raw.len());
                    if take == 0 {
                        return;
                    }
                    self.out.put(self.raw.split_to(take));
                    self.position = match remaining - take {
                        0 => Position::FrameStart,
                        left => Position::Forward(left),
                    };
                }
                Position::FrameStart => {
                    if self.raw.len() < HEAD_LEN || self.out.len() >= OUTPUT_HIGH_WATER {
                        return;
                    }
                    let head = Head::parse(&self.raw);
                    match self.frame(head) {
                        Ok(true) => {}
                        Ok(false) => return,
                        Err(violation) => self.refuse(violation),
                    }
                }
            }
        }
    }

    /// Handles the frame whose head is at the start of `raw`; false when more bytes are needed.
    fn frame(&mut self, head: Head) -> Result<bool, Violation> {
        let carries_block = matches!(head.kind, HEADERS | CONTINUATION | PUSH_PROMISE);
        if head.length > self.limits.frame() && (carries_block || self.block.is_some()) {
            return Err(Violation::FrameTooLarge(head.bytes));
        }
        if self.block.is_some() && head.kind != CONTINUATION {
            return Err(Violation::Protocol);
        }
        if !carries_block {
            self.out.put(self.raw.split_to(HEAD_LEN));
            if head.length > 0 {
                self.position = Position::Forward(head.length);
            }
            return Ok(true);
        }
        if head.kind == PUSH_PROMISE {
            return Err(Violation::Protocol);
        }
        if self.raw.len() < HEAD_LEN + head.length {
            return Ok(false);
        }
        let frame = self.raw.split_to(HEAD_LEN + head.length);
        let fragment = if head.kind == HEADERS {
            let parts = match headers_parts(&head, &frame[HEAD_LEN..]) {
                Ok(parts) => parts,
                // h2 refuses the frame before decoding it: undecided, let it see the frame as
                // it came; once rewriting, no byte of the client's HPACK reaches h2.
                Err(_) if self.mode == Mode::Undecided => {
                    self.out.put(frame);
                    return Ok(true);
                }
                Err(HeadersRefusal::Connection) => return Err(Violation::Protocol),
                Err(HeadersRefusal::SelfDependency(priority)) => {
                    // h2 resets the stream without decoding the block, so neither does the
                    // shim; the block is dropped, the frame kept for h2 to reset.
                    let flags = head.flags & !PADDED;
                    put_frame(&mut self.out, HEADERS, flags, head.stream_id, &priority);
                    return Ok(true);
                }
            };
            self.block = Some(HeaderBlock::new(
                head.stream_id,
                head.has(END_STREAM),
                parts.priority,
            ));
            HEAD_LEN + parts.fragment.start..HEAD_LEN + parts.fragment.end
        } else {
            match self.block.as_mut() {
                // h2 refuses a CONTINUATION outside a block; let it.
                None => {
                    self.out.put(frame);
                    return Ok(true);
                }
                Some(block) if block.stream_id != head.stream_id => {
                    return Err(Violation::Protocol);
                }
                Some(block) => {
                    block.continuation(frame.len(), head.has(END_HEADERS), self.limits)?;
                    HEAD_LEN..frame.len()
                }
            }
        };
        self.header_fragment(frame, fragment, head.has(END_HEADERS))?;
        Ok(true)
    }

    /// Feeds one frame's fragment to the open block and forwards what is decided.
    fn header_fragment(
        &mut self,
        frame: BytesMut,
        fragment: std::ops::Range<usize>,
        end_headers: bool,
    ) -> Result<(), Violation> {
        let undecided = self.mode == Mode::Undecided;
        let (Some(block), Some(decoder)) = (self.block.as_mut(), self.decoder.as_mut()) else {
            return Err(Violation::Protocol);
        };
        block.feed(
            &frame[fragment],
            end_headers,
            decoder,
            self.limits,
            undecided,
        )?;
        if undecided {
            match block.authority {
                Authority::Acceptable => {
                    self.hand_over(frame);
                    return Ok(());
                }
                Authority::Unseen if end_headers => {
                    self.hand_over(frame);
                    return Ok(());
                }
                Authority::Unseen => block.originals.get_or_insert_default().put(frame),
                Authority::Replaced => self.mode = Mode::Rewriting,
            }
        }
        if end_headers && let Some(block) = self.block.take() {
            if block.authority == Authority::Replaced {
                self.rewritten += 1;
            }
            let encoded = block.finish(self.limits)?;
            self.out.extend_from_slice(&encoded);
        }
        Ok(())
    }

    /// Forwards the first block's frames as they came and passes the connection through.
    fn hand_over(&mut self, last: BytesMut) {
        if let Some(originals) = self.block.take().and_then(|b| b.originals) {
            self.out.put(originals);
        }
        self.out.put(last);
        self.pass_through();
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for AuthorityShim<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        loop {
            if !this.out.is_empty() {
                let take = this.out.len().min(buf.remaining());
                buf.put_slice(&this.out[..take]);
                this.out.advance(take);
                if this.out.is_empty() && this.mode == Mode::PassThrough {
                    this.out = BytesMut::new();
                    this.raw = BytesMut::new();
                }
                return Poll::Ready(Ok(()));
            }
            match this.mode {
                Mode::PassThrough => return Pin::new(&mut this.inner).poll_read(cx, buf),
                Mode::Refused => return Poll::Ready(Ok(())),
                Mode::Undecided | Mode::Rewriting => {}
            }
            if this.eof {
                return Poll::Ready(Ok(()));
            }
            // Frames left undecoded when the output was full come before any new read.
            if !this.raw.is_empty() {
                let mode = this.mode;
                this.process();
                if !this.out.is_empty() || this.mode != mode {
                    continue;
                }
            }
            this.raw.reserve(READ_CHUNK);
            let read = ready!(tokio_util::io::poll_read_buf(
                Pin::new(&mut this.inner),
                cx,
                &mut this.raw
            ))?;
            if read == 0 {
                // A block cut off by the end of the connection is dropped, never handed to h2.
                this.eof = true;
                this.block = None;
                this.raw = BytesMut::new();
                continue;
            }
            this.process();
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for AuthorityShim<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(feature = "tonic")]
impl<S: tonic::transport::server::Connected> tonic::transport::server::Connected
    for AuthorityShim<S>
{
    type ConnectInfo = S::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::{PADDED, PRIORITY, put_frame};
    use crate::hpack::encode_integer;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let mut out = BytesMut::new();
        put_frame(&mut out, kind, flags, stream, payload);
        out.to_vec()
    }

    /// Literal with incremental indexing, new name (adds to the client's dynamic table).
    fn indexed_literal(name: &[u8], value: &[u8]) -> Vec<u8> {
        let mut out = vec![0x40];
        encode_integer(&mut out, 0, 7, name.len());
        out.extend_from_slice(name);
        encode_integer(&mut out, 0, 7, value.len());
        out.extend_from_slice(value);
        out
    }

    /// A shim over a client that wrote `input` (up to 1 MiB) at once and hung up.
    async fn shim_after(input: &[u8]) -> AuthorityShim<tokio::io::DuplexStream> {
        let (mut client, server) = tokio::io::duplex(1 << 20);
        client.write_all(input).await.expect("write");
        drop(client);
        AuthorityShim::new(server)
    }

    /// Everything the shim yields for `input`, and the shim, for its verdict.
    async fn run_keeping(input: &[u8]) -> (Vec<u8>, AuthorityShim<tokio::io::DuplexStream>) {
        let mut shim = shim_after(input).await;
        let mut output = Vec::new();
        shim.read_to_end(&mut output).await.expect("read");
        (output, shim)
    }

    async fn run(input: Vec<u8>) -> Vec<u8> {
        run_keeping(&input).await.0
    }

    /// Parses frames after the preface and decodes each header block with a fresh decoder
    /// state, as h2 would.
    type HeaderList = Vec<(Vec<u8>, Vec<u8>)>;
    type OtherFrame = (u8, u8, Vec<u8>);

    fn decode_output(output: &[u8]) -> (Vec<HeaderList>, Vec<OtherFrame>) {
        assert!(output.starts_with(PREFACE));
        let mut rest = &output[PREFACE.len()..];
        let mut decoder = loona_hpack::Decoder::new();
        let mut blocks = Vec::new();
        let mut others = Vec::new();
        let mut block = Vec::new();
        while !rest.is_empty() {
            let length =
                (usize::from(rest[0]) << 16) | (usize::from(rest[1]) << 8) | usize::from(rest[2]);
            let (kind, flags) = (rest[3], rest[4]);
            let payload = &rest[9..9 + length];
            assert!(length <= 16_384);
            match kind {
                HEADERS => {
                    assert_eq!(flags & PADDED, 0);
                    let start = if flags & PRIORITY != 0 { 5 } else { 0 };
                    block.extend_from_slice(&payload[start..]);
                }
                CONTINUATION => block.extend_from_slice(payload),
                _ => others.push((kind, flags, payload.to_vec())),
            }
            if (kind == HEADERS || kind == CONTINUATION) && flags & END_HEADERS != 0 {
                blocks.push(decoder.decode(&block).expect("valid HPACK"));
                block.clear();
            }
            rest = &rest[9 + length..];
        }
        (blocks, others)
    }

    fn authority(block: &[(Vec<u8>, Vec<u8>)]) -> Vec<u8> {
        block
            .iter()
            .find(|(n, _)| n == b":authority")
            .map(|(_, v)| v.clone())
            .expect(":authority")
    }

    #[tokio::test]
    async fn path_authority_indexed_then_referenced() {
        let mut input = PREFACE.to_vec();
        input.extend(frame(0x4, 0, 0, &[]));
        // Request 1: :authority sent with incremental indexing (dynamic index 62).
        let mut block = vec![0x83, 0x86]; // :method POST, :scheme http
        block.extend(indexed_literal(b":authority", b"/var/run/kms.sock"));
        block.extend(indexed_literal(
            b":path",
            b"/v2.KeyManagementService/Status",
        ));
        input.extend(frame(HEADERS, END_HEADERS, 1, &block));
        input.extend(frame(0x0, END_STREAM, 1, &[0, 0, 0, 0, 0]));
        // Request 2: both referenced by index (62 = :path, 63 = :authority).
        input.extend(frame(
            HEADERS,
            END_HEADERS,
            3,
            &[0x83, 0x86, 0x80 | 63, 0x80 | 62],
        ));
        let output = run(input).await;
        let (blocks, others) = decode_output(&output);
        assert_eq!(blocks.len(), 2);
        for block in &blocks {
            assert_eq!(authority(block), b"localhost");
            assert!(block.contains(&(
                b":path".to_vec(),
                b"/v2.KeyManagementService/Status".to_vec()
            )));
        }
        assert_eq!(
            others[1],
            (0x0, END_STREAM, vec![0, 0, 0, 0, 0]),
            "DATA untouched"
        );
    }

    #[tokio::test]
    async fn percent_encoded_authority_is_rewritten() {
        let mut input = PREFACE.to_vec();
        let block = indexed_literal(b":authority", b"%2Fvar%2Frun%2Fkms.sock");
        input.extend(frame(HEADERS, END_HEADERS, 1, &block));
        input.extend(frame(HEADERS, END_HEADERS, 3, &[0x80 | 62]));
        let (blocks, _) = decode_output(&run(input).await);
        assert_eq!(authority(&blocks[0]), b"localhost");
        assert_eq!(authority(&blocks[1]), b"localhost");
    }

    #[tokio::test]
    async fn acceptable_first_authority_passes_the_connection_through_untouched() {
        let mut input = PREFACE.to_vec();
        input.extend(frame(0x4, 0, 0, &[]));
        let mut block = vec![0x83, 0x86];
        block.extend(indexed_literal(b":authority", b"localhost"));
        block.extend(indexed_literal(b"x-big", &vec![b'v'; 3000]));
        let (first, second) = block.split_at(20);
        input.extend(frame(HEADERS, 0, 1, first));
        input.extend(frame(CONTINUATION, END_HEADERS, 1, second));
        // Later blocks are h2's business alone, even a path authority or an unknown index.
        input.extend(frame(
            HEADERS,
            END_HEADERS,
            3,
            &indexed_literal(b":authority", b"/s"),
        ));
        input.extend(frame(HEADERS, END_HEADERS, 5, &[0x80 | 100]));
        let (output, shim) = run_keeping(&input).await;
        assert_eq!(output, input);
        assert!(shim.passes_through());
        assert_eq!(shim.buffered(), 0, "buffers released");
    }

    #[tokio::test]
    async fn padding_priority_and_continuation() {
        let mut header_block = vec![0x83];
        header_block.extend(indexed_literal(b":authority", b"/tmp/a.sock"));
        header_block.extend(indexed_literal(b"x-big", &vec![b'v'; 10_000]));
        let (first, second) = header_block.split_at(10);
        let mut payload = vec![3u8]; // pad length
        payload.extend_from_slice(&[0x80, 0, 0, 1, 15]); // exclusive dependency on stream 1, weight 15
        payload.extend_from_slice(first);
        payload.extend_from_slice(&[0, 0, 0]);
        let mut input = PREFACE.to_vec();
        input.extend(frame(HEADERS, PADDED | PRIORITY | END_STREAM, 5, &payload));
        let (a, b) = second.split_at(5000);
        input.extend(frame(CONTINUATION, 0, 5, a));
        input.extend(frame(CONTINUATION, END_HEADERS, 5, b));
        let output = run(input).await;
        // The first emitted frame keeps END_STREAM and the priority fields.
        let first_frame = &output[PREFACE.len()..];
        assert_eq!(first_frame[3], HEADERS);
        assert_eq!(
            first_frame[4] & (END_STREAM | PRIORITY),
            END_STREAM | PRIORITY
        );
        assert_eq!(&first_frame[9..14], &[0x80, 0, 0, 1, 15]);
        let (blocks, _) = decode_output(&output);
        assert_eq!(blocks.len(), 1);
        assert_eq!(authority(&blocks[0]), b"localhost");
        assert!(blocks[0].contains(&(b"x-big".to_vec(), vec![b'v'; 10_000])));
    }

    #[tokio::test]
    async fn headers_on_stream_zero_while_rewriting_is_refused() {
        // The fuzz finding: a rewritten first block adds entries to the client's table; a
        // HEADERS frame on stream 0 that references them must not reach h2 as it came.
        let mut input = PREFACE.to_vec();
        let mut block = vec![0x83, 0x86];
        block.extend(indexed_literal(b":authority", b"/run/kms.sock"));
        input.extend(frame(HEADERS, END_HEADERS, 1, &block));
        input.extend(frame(
            HEADERS,
            END_HEADERS | END_STREAM,
            0,
            &[0x83, 0x86, 0xbe],
        ));
        let (output, shim) = run_keeping(&input).await;
        assert!(shim.refused());
        assert!(!output.windows(3).any(|w| w == [0x83, 0x86, 0xbe]));
        assert!(output.ends_with(&frame(CONTINUATION, END_HEADERS, 1, &[])));
    }

    #[tokio::test]
    async fn self_dependent_headers_while_rewriting_reach_h2_without_their_block() {
        let mut input = PREFACE.to_vec();
        input.extend(frame(
            HEADERS,
            END_HEADERS,
            1,
            &indexed_literal(b":authority", b"/run/kms.sock"),
        ));
        // Stream 3 depends on itself: h2 resets it and decodes nothing, and so does the shim.
        let mut payload = vec![0, 0, 0, 3, 15];
        payload.extend(indexed_literal(b"x-skipped", b"v"));
        input.extend(frame(HEADERS, END_HEADERS | PRIORITY, 3, &payload));
        input.extend(frame(HEADERS, END_HEADERS, 5, &[0x80 | 62]));
        let output = run(input).await;
        let stripped = frame(HEADERS, END_HEADERS | PRIORITY, 3, &[0, 0, 0, 3, 15]);
        assert!(output.windows(stripped.len()).any(|w| w == stripped));
        // The only dynamic entry is the first block's :authority, for client and shim alike.
        let (blocks, _) = decode_output(&output);
        assert_eq!(blocks.len(), 3);
        assert!(blocks[1].is_empty());
        assert_eq!(authority(&blocks[2]), b"localhost");
    }

    #[tokio::test]
    async fn small_blocks_expanding_to_large_lists_are_decoded_as_h2_reads() {
        // One 4 KB entry, then 800 four-byte blocks each referencing it three times: about
        // 10 MB of decoded headers from 16 KB on the wire. Held bytes stay near one read.
        let mut input = PREFACE.to_vec();
        let mut first = vec![0x83, 0x86];
        first.extend(indexed_literal(b":authority", b"/run/kms.sock"));
        first.extend(indexed_literal(b"x-big", &vec![b'b'; 4000]));
        input.extend(frame(HEADERS, END_HEADERS, 1, &first));
        for i in 0..800u32 {
            input.extend(frame(HEADERS, END_HEADERS, 3 + 2 * i, &[0x80 | 62; 3]));
        }
        let mut shim = shim_after(&input).await;
        let (mut total, mut peak) = (0, 0);
        let mut chunk = [0u8; 4096];
        loop {
            let n = shim.read(&mut chunk).await.expect("read");
            peak = peak.max(shim.buffered());
            if n == 0 {
                break;
            }
            total += n;
        }
        assert!(!shim.refused());
        assert!(total > 800 * 3 * 4000, "every block forwarded: {total}");
        assert!(peak < 256 * 1024, "held {peak} bytes");
    }

    #[tokio::test]
    async fn interleaved_frame_inside_header_block_is_an_error() {
        let mut input = PREFACE.to_vec();
        input.extend(frame(HEADERS, 0, 1, &indexed_literal(b":authority", b"/x")));
        input.extend(frame(0x0, 0, 1, b"data"));
        let (output, shim) = run_keeping(&input).await;
        assert!(shim.refused());
        // h2 is handed a CONTINUATION it has no block for: its GOAWAY PROTOCOL_ERROR.
        assert!(output.ends_with(&frame(CONTINUATION, END_HEADERS, 1, &[])));
    }

    #[tokio::test]
    async fn byte_at_a_time_delivery_gives_the_same_output() {
        let mut input = PREFACE.to_vec();
        input.extend(frame(
            HEADERS,
            END_HEADERS,
            1,
            &indexed_literal(b":authority", b"/s.sock"),
        ));
        input.extend(frame(0x0, END_STREAM, 1, b"payload"));
        let whole = run(input.clone()).await;
        let (mut client, server) = tokio::io::duplex(1);
        let writer = tokio::spawn(async move {
            for byte in input {
                client.write_all(&[byte]).await.expect("write");
            }
        });
        let mut output = Vec::new();
        AuthorityShim::new(server)
            .read_to_end(&mut output)
            .await
            .expect("read");
        writer.await.expect("writer");
        assert_eq!(output, whole);
    }

    #[tokio::test]
    async fn header_bomb_costs_a_bounded_amount() {
        let (output, refused, peak) = bomb_through_shim(b"x-bomb").await;
        assert!(refused);
        // The preface and h2's provocation (a 4 KB entry and 17 references), nothing decoded.
        assert!(output.len() < PREFACE.len() + 4200, "{}", output.len());
        assert!(peak < 128 * 1024, "held {peak} bytes");
    }

    #[tokio::test]
    async fn repeated_pseudo_header_bomb_forwards_one_marker() {
        // h2 counts and keeps no malformed field; the shim forwards one marker in their place,
        // and, the block going on past its first frame, ends the connection as h2 does.
        let (output, refused, peak) = bomb_through_shim(b":path").await;
        assert!(refused);
        let (blocks, _) = decode_output(&output);
        assert_eq!(blocks[0], [(b"connection".to_vec(), Vec::new())]);
        assert!(output.len() < PREFACE.len() + 4200, "{}", output.len());
        assert!(peak < 256 * 1024, "held {peak} bytes");
    }

    /// A 4 KB field named `name` added to the table, then 80,000 references to it, in 16 KiB
    /// frames; returns what reached h2, whether the shim refused, and the most it held.
    async fn bomb_through_shim(name: &[u8]) -> (Vec<u8>, bool, usize) {
        let mut block = vec![0x83, 0x86];
        block.extend(indexed_literal(b":authority", b"/run/kms.sock"));
        block.extend(indexed_literal(name, &vec![b'b'; 4000]));
        block.resize(block.len() + 80_000, 0x80 | 62);
        let mut input = PREFACE.to_vec();
        let chunks: Vec<&[u8]> = block.chunks(16_384).collect();
        for (i, chunk) in chunks.iter().enumerate() {
            let kind = if i == 0 { HEADERS } else { CONTINUATION };
            let flags = if i + 1 == chunks.len() {
                END_HEADERS
            } else {
                0
            };
            input.extend(frame(kind, flags, 1, chunk));
        }
        let mut shim = shim_after(&input).await;
        let mut output = Vec::new();
        let mut chunk = [0u8; 4096];
        let mut peak = 0;
        loop {
            let n = shim.read(&mut chunk).await.expect("read");
            peak = peak.max(shim.buffered());
            if n == 0 {
                break;
            }
            output.extend_from_slice(&chunk[..n]);
        }
        (output, shim.refused(), peak)
    }
}
