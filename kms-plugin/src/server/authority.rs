//! Accepts every `:authority` that real gRPC clients send over a Unix socket.
//!
//! h2's server resets any stream whose `:authority` does not parse as a URI authority, and
//! grpc-go (kube-apiserver 1.29–1.31) and gRPC C-core clients send the socket path there, plain
//! or percent-encoded. [`AuthorityNormalizer`] sits between the socket and h2 and rewrites the
//! client-to-server byte stream: it decodes every header block with the client's HPACK state
//! (kept for the whole connection), replaces an unparsable `:authority` with `localhost`, and
//! re-encodes the block without touching h2's dynamic table (literals without indexing). Every
//! other frame passes through byte for byte, streamed rather than buffered.

use super::hpack::{HpackDecoder, static_index};
use bytes::{Buf, BufMut, BytesMut};
use http::uri::Authority;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The client connection preface every HTTP/2 connection starts with.
pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// What an unparsable `:authority` is replaced with.
pub const REPLACEMENT_AUTHORITY: &[u8] = b"localhost";

const FRAME_HEADER_LEN: usize = 9;
const TYPE_HEADERS: u8 = 0x1;
const TYPE_PUSH_PROMISE: u8 = 0x5;
const TYPE_CONTINUATION: u8 = 0x9;
const FLAG_END_STREAM: u8 = 0x1;
const FLAG_END_HEADERS: u8 = 0x4;
const FLAG_PADDED: u8 = 0x8;
const FLAG_PRIORITY: u8 = 0x20;
/// Frames we emit never exceed the HTTP/2 minimum SETTINGS_MAX_FRAME_SIZE, which every server accepts.
const OUT_MAX_FRAME: usize = 16_384;
/// Largest header block we are willing to hold while it arrives in pieces.
const MAX_HEADER_BLOCK: usize = 256 * 1024;
/// HPACK dynamic table size h2 grants clients (it never raises SETTINGS_HEADER_TABLE_SIZE).
const CLIENT_TABLE_SIZE: usize = 4096;
const READ_CHUNK: usize = 16 * 1024;

/// A header block being reassembled from HEADERS and CONTINUATION frames.
struct PendingBlock {
    stream_id: u32,
    end_stream: bool,
    priority: Option<[u8; 5]>,
    fragment: Vec<u8>,
}

/// Where the parser is in the client's byte stream.
enum Position {
    /// Inside the connection preface; this many bytes of it remain.
    Preface(usize),
    /// At a frame boundary.
    FrameStart,
    /// Copying the payload of a frame that passes through untouched; this many bytes remain.
    PassThrough(usize),
}

/// Rewrites the client-to-server half of an HTTP/2 connection; writes pass straight through.
pub struct AuthorityNormalizer<S> {
    inner: S,
    position: Position,
    raw: BytesMut,
    out: BytesMut,
    pending: Option<PendingBlock>,
    decoder: HpackDecoder,
    eof: bool,
    rewritten: u64,
}

impl<S> AuthorityNormalizer<S> {
    /// Wraps a freshly accepted connection.
    pub fn new(inner: S) -> Self {
        let decoder = HpackDecoder::new(CLIENT_TABLE_SIZE);
        Self {
            inner,
            position: Position::Preface(PREFACE.len()),
            raw: BytesMut::with_capacity(READ_CHUNK),
            out: BytesMut::with_capacity(READ_CHUNK),
            pending: None,
            decoder,
            eof: false,
            rewritten: 0,
        }
    }

    /// The wrapped connection.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// How many `:authority` values were replaced on this connection.
    pub fn rewritten(&self) -> u64 {
        self.rewritten
    }

    /// Moves as much of `raw` to `out` as can be decided now.
    fn process(&mut self) -> io::Result<()> {
        loop {
            match self.position {
                Position::Preface(remaining) => {
                    let take = remaining.min(self.raw.len());
                    if take == 0 {
                        return Ok(());
                    }
                    self.out.put(self.raw.split_to(take));
                    self.position = match remaining - take {
                        0 => Position::FrameStart,
                        left => Position::Preface(left),
                    };
                }
                Position::PassThrough(remaining) => {
                    let take = remaining.min(self.raw.len());
                    if take == 0 {
                        return Ok(());
                    }
                    self.out.put(self.raw.split_to(take));
                    self.position = match remaining - take {
                        0 => Position::FrameStart,
                        left => Position::PassThrough(left),
                    };
                }
                Position::FrameStart => {
                    if self.raw.len() < FRAME_HEADER_LEN {
                        return Ok(());
                    }
                    let header = &self.raw[..FRAME_HEADER_LEN];
                    let length = (usize::from(header[0]) << 16)
                        | (usize::from(header[1]) << 8)
                        | usize::from(header[2]);
                    let kind = header[3];
                    let flags = header[4];
                    let stream_id =
                        u32::from_be_bytes([header[5], header[6], header[7], header[8]])
                            & 0x7fff_ffff;
                    let carries_headers = kind == TYPE_HEADERS || kind == TYPE_CONTINUATION;
                    if self.pending.is_some() && kind != TYPE_CONTINUATION {
                        return Err(protocol_error(
                            "a header block was interrupted by another frame",
                        ));
                    }
                    if kind == TYPE_PUSH_PROMISE {
                        return Err(protocol_error("clients must not send PUSH_PROMISE"));
                    }
                    if !carries_headers {
                        self.out.put(self.raw.split_to(FRAME_HEADER_LEN));
                        self.position = match length {
                            0 => Position::FrameStart,
                            _ => Position::PassThrough(length),
                        };
                        continue;
                    }
                    if length > MAX_HEADER_BLOCK {
                        return Err(protocol_error("header frame too large"));
                    }
                    if self.raw.len() < FRAME_HEADER_LEN + length {
                        return Ok(());
                    }
                    self.raw.advance(FRAME_HEADER_LEN);
                    let payload = self.raw.split_to(length);
                    self.header_frame(kind, flags, stream_id, &payload)?;
                }
            }
        }
    }

    /// Handles one HEADERS or CONTINUATION frame.
    fn header_frame(
        &mut self,
        kind: u8,
        flags: u8,
        stream_id: u32,
        payload: &[u8],
    ) -> io::Result<()> {
        let fragment = if kind == TYPE_HEADERS {
            let mut body = payload;
            let mut padding = 0usize;
            if flags & FLAG_PADDED != 0 {
                let (&pad, rest) = body
                    .split_first()
                    .ok_or_else(|| protocol_error("padded HEADERS without pad length"))?;
                padding = usize::from(pad);
                body = rest;
            }
            let mut priority = None;
            if flags & FLAG_PRIORITY != 0 {
                if body.len() < 5 {
                    return Err(protocol_error("HEADERS priority field truncated"));
                }
                let mut fields = [0u8; 5];
                fields.copy_from_slice(&body[..5]);
                priority = Some(fields);
                body = &body[5..];
            }
            if padding > body.len() {
                return Err(protocol_error("HEADERS padding longer than the frame"));
            }
            self.pending = Some(PendingBlock {
                stream_id,
                end_stream: flags & FLAG_END_STREAM != 0,
                priority,
                fragment: Vec::with_capacity(body.len() - padding),
            });
            &body[..body.len() - padding]
        } else {
            match &self.pending {
                Some(block) if block.stream_id == stream_id => payload,
                _ => {
                    return Err(protocol_error(
                        "CONTINUATION without a preceding HEADERS on its stream",
                    ));
                }
            }
        };
        let block = self
            .pending
            .as_mut()
            .ok_or_else(|| protocol_error("no header block in progress"))?;
        if block.fragment.len() + fragment.len() > MAX_HEADER_BLOCK {
            return Err(protocol_error("header block too large"));
        }
        block.fragment.extend_from_slice(fragment);
        if flags & FLAG_END_HEADERS != 0
            && let Some(block) = self.pending.take()
        {
            self.emit_block(block)?;
        }
        Ok(())
    }

    /// Decodes a complete header block, fixes `:authority`, and writes it out re-encoded.
    fn emit_block(&mut self, block: PendingBlock) -> io::Result<()> {
        let mut encoded = Vec::with_capacity(block.fragment.len() + 64);
        let mut rewritten = false;
        self.decoder
            .decode(&block.fragment, |name, value| {
                let value = if name == b":authority" && Authority::try_from(value).is_err() {
                    rewritten = true;
                    REPLACEMENT_AUTHORITY
                } else {
                    value
                };
                encode_literal(&mut encoded, name, value);
            })
            .map_err(|error| protocol_error(&format!("HPACK decoding failed: {error}")))?;
        if rewritten {
            self.rewritten += 1;
        }
        let mut first_payload = Vec::new();
        if let Some(priority) = block.priority {
            first_payload.extend_from_slice(&priority);
        }
        let first_room = OUT_MAX_FRAME - first_payload.len();
        let split = encoded.len().min(first_room);
        first_payload.extend_from_slice(&encoded[..split]);
        let mut rest = &encoded[split..];
        let mut flags = 0u8;
        if block.end_stream {
            flags |= FLAG_END_STREAM;
        }
        if block.priority.is_some() {
            flags |= FLAG_PRIORITY;
        }
        if rest.is_empty() {
            flags |= FLAG_END_HEADERS;
        }
        put_frame(
            &mut self.out,
            TYPE_HEADERS,
            flags,
            block.stream_id,
            &first_payload,
        );
        while !rest.is_empty() {
            let take = rest.len().min(OUT_MAX_FRAME);
            let flags = if take == rest.len() {
                FLAG_END_HEADERS
            } else {
                0
            };
            put_frame(
                &mut self.out,
                TYPE_CONTINUATION,
                flags,
                block.stream_id,
                &rest[..take],
            );
            rest = &rest[take..];
        }
        Ok(())
    }
}

fn protocol_error(reason: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("HTTP/2 protocol error from client: {reason}"),
    )
}

fn put_frame(out: &mut BytesMut, kind: u8, flags: u8, stream_id: u32, payload: &[u8]) {
    let length = payload.len() as u32;
    out.put_slice(&length.to_be_bytes()[1..]);
    out.put_u8(kind);
    out.put_u8(flags);
    out.put_u32(stream_id & 0x7fff_ffff);
    out.put_slice(payload);
}

/// HPACK integer with an `prefix_bits`-bit prefix whose high bits are `first`.
fn encode_integer(out: &mut Vec<u8>, first: u8, prefix_bits: u32, mut value: usize) {
    let max_prefix = (1usize << prefix_bits) - 1;
    if value < max_prefix {
        out.push(first | value as u8);
        return;
    }
    out.push(first | max_prefix as u8);
    value -= max_prefix;
    while value >= 128 {
        out.push((value % 128) as u8 | 0x80);
        value /= 128;
    }
    out.push(value as u8);
}

/// Encodes one header without touching the dynamic table: fully indexed when the static table
/// holds the exact pair, otherwise a literal without indexing (with an indexed name when the
/// static table has the name). Strings are not Huffman-coded.
fn encode_literal(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    match static_index(name, value) {
        (Some(index), true) => encode_integer(out, 0x80, 7, index),
        (Some(index), false) => {
            encode_integer(out, 0x00, 4, index);
            encode_integer(out, 0x00, 7, value.len());
            out.extend_from_slice(value);
        }
        (None, _) => {
            out.push(0x00);
            encode_integer(out, 0x00, 7, name.len());
            out.extend_from_slice(name);
            encode_integer(out, 0x00, 7, value.len());
            out.extend_from_slice(value);
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for AuthorityNormalizer<S> {
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
                return Poll::Ready(Ok(()));
            }
            if this.eof {
                return Poll::Ready(Ok(()));
            }
            this.raw.reserve(READ_CHUNK);
            let read = ready!(tokio_util::io::poll_read_buf(
                Pin::new(&mut this.inner),
                cx,
                &mut this.raw
            ))?;
            if read == 0 {
                this.eof = true;
                // A connection cut mid-frame: hand h2 whatever arrived so it sees the truncation.
                if let Some(block) = this.pending.take() {
                    this.out.put_slice(&block.fragment);
                }
                let leftover = this.raw.split();
                this.out.put(leftover);
                continue;
            }
            this.process()?;
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for AuthorityNormalizer<S> {
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

impl<S: tonic::transport::server::Connected> tonic::transport::server::Connected
    for AuthorityNormalizer<S>
{
    type ConnectInfo = S::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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

    async fn run(input: Vec<u8>) -> Vec<u8> {
        let (mut client, server) = tokio::io::duplex(1 << 20);
        client.write_all(&input).await.expect("write");
        drop(client);
        let mut normalizer = AuthorityNormalizer::new(server);
        let mut output = Vec::new();
        normalizer.read_to_end(&mut output).await.expect("read");
        output
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
            assert!(length <= OUT_MAX_FRAME);
            match kind {
                TYPE_HEADERS => {
                    assert_eq!(flags & FLAG_PADDED, 0);
                    let start = if flags & FLAG_PRIORITY != 0 { 5 } else { 0 };
                    block.extend_from_slice(&payload[start..]);
                }
                TYPE_CONTINUATION => block.extend_from_slice(payload),
                _ => others.push((kind, flags, payload.to_vec())),
            }
            if (kind == TYPE_HEADERS || kind == TYPE_CONTINUATION) && flags & FLAG_END_HEADERS != 0
            {
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
        input.extend(frame(TYPE_HEADERS, FLAG_END_HEADERS, 1, &block));
        input.extend(frame(0x0, FLAG_END_STREAM, 1, &[0, 0, 0, 0, 0]));
        // Request 2: both referenced by index (62 = :path, 63 = :authority).
        input.extend(frame(
            TYPE_HEADERS,
            FLAG_END_HEADERS,
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
            (0x0, FLAG_END_STREAM, vec![0, 0, 0, 0, 0]),
            "DATA untouched"
        );
    }

    #[tokio::test]
    async fn valid_and_percent_encoded_authorities() {
        let mut input = PREFACE.to_vec();
        let mut block = indexed_literal(b":authority", b"localhost");
        input.extend(frame(TYPE_HEADERS, FLAG_END_HEADERS, 1, &block));
        block = indexed_literal(b":authority", b"%2Fvar%2Frun%2Fkms.sock");
        input.extend(frame(TYPE_HEADERS, FLAG_END_HEADERS, 3, &block));
        let (blocks, _) = decode_output(&run(input).await);
        assert_eq!(authority(&blocks[0]), b"localhost");
        assert_eq!(authority(&blocks[1]), b"localhost");
    }

    #[tokio::test]
    async fn padding_priority_and_continuation() {
        let mut header_block = vec![0x83];
        header_block.extend(indexed_literal(b":authority", b"/tmp/a.sock"));
        header_block.extend(indexed_literal(b"x-big", &vec![b'v'; 20_000]));
        let (first, second) = header_block.split_at(10);
        let mut payload = vec![3u8]; // pad length
        payload.extend_from_slice(&[0x80, 0, 0, 1, 15]); // exclusive dependency on stream 1, weight 15
        payload.extend_from_slice(first);
        payload.extend_from_slice(&[0, 0, 0]);
        let mut input = PREFACE.to_vec();
        input.extend(frame(
            TYPE_HEADERS,
            FLAG_PADDED | FLAG_PRIORITY | FLAG_END_STREAM,
            5,
            &payload,
        ));
        let (a, b) = second.split_at(5000);
        input.extend(frame(TYPE_CONTINUATION, 0, 5, a));
        input.extend(frame(TYPE_CONTINUATION, FLAG_END_HEADERS, 5, b));
        let output = run(input).await;
        // The first emitted frame keeps END_STREAM and the priority fields.
        let first_frame = &output[PREFACE.len()..];
        assert_eq!(first_frame[3], TYPE_HEADERS);
        assert_eq!(
            first_frame[4] & (FLAG_END_STREAM | FLAG_PRIORITY),
            FLAG_END_STREAM | FLAG_PRIORITY
        );
        assert_eq!(&first_frame[9..14], &[0x80, 0, 0, 1, 15]);
        let (blocks, _) = decode_output(&output);
        assert_eq!(blocks.len(), 1);
        assert_eq!(authority(&blocks[0]), b"localhost");
        assert!(blocks[0].contains(&(b"x-big".to_vec(), vec![b'v'; 20_000])));
    }

    #[tokio::test]
    async fn interleaved_frame_inside_header_block_is_an_error() {
        let mut input = PREFACE.to_vec();
        input.extend(frame(
            TYPE_HEADERS,
            0,
            1,
            &indexed_literal(b":authority", b"x"),
        ));
        input.extend(frame(0x0, 0, 1, b"data"));
        let (mut client, server) = tokio::io::duplex(1 << 16);
        client.write_all(&input).await.expect("write");
        drop(client);
        let mut output = Vec::new();
        let error = AuthorityNormalizer::new(server)
            .read_to_end(&mut output)
            .await
            .expect_err("protocol error");
        assert_eq!(error.kind(), io::ErrorKind::InvalidData);
    }

    #[tokio::test]
    async fn byte_at_a_time_delivery_gives_the_same_output() {
        let mut input = PREFACE.to_vec();
        input.extend(frame(
            TYPE_HEADERS,
            FLAG_END_HEADERS,
            1,
            &indexed_literal(b":authority", b"/s.sock"),
        ));
        input.extend(frame(0x0, FLAG_END_STREAM, 1, b"payload"));
        let whole = run(input.clone()).await;
        let (mut client, server) = tokio::io::duplex(1);
        let writer = tokio::spawn(async move {
            for byte in input {
                client.write_all(&[byte]).await.expect("write");
            }
        });
        let mut output = Vec::new();
        AuthorityNormalizer::new(server)
            .read_to_end(&mut output)
            .await
            .expect("read");
        writer.await.expect("writer");
        assert_eq!(output, whole);
    }
}
