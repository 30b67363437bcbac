//! A deliberately minimal HTTP/2 client that writes its own frames, so a test controls exactly
//! which `:authority` bytes reach the server and how they are HPACK-encoded.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

pub(crate) const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// How `:authority` is represented in the header block.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum AuthorityEncoding {
    /// Literal without indexing.
    Plain,
    /// Literal with incremental indexing on first use, then an indexed reference (index 62).
    Indexed,
}

pub(crate) struct RawConnection {
    stream: UnixStream,
    next_stream: u32,
    decoder: loona_hpack::Decoder<'static>,
    authority_indexed: bool,
}

pub(crate) fn integer(out: &mut Vec<u8>, first: u8, prefix_bits: u32, mut value: usize) {
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

pub(crate) fn string(out: &mut Vec<u8>, bytes: &[u8]) {
    integer(out, 0, 7, bytes.len());
    out.extend_from_slice(bytes);
}

pub(crate) fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let mut out = (payload.len() as u32).to_be_bytes()[1..].to_vec();
    out.extend_from_slice(&[kind, flags]);
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// The outcome of one unary call.
#[derive(Debug)]
pub(crate) struct Reply {
    pub grpc_status: Option<String>,
    pub message: Vec<u8>,
}

impl RawConnection {
    pub(crate) fn connect(path: &Path) -> Self {
        let stream = UnixStream::connect(path).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        let mut connection = Self {
            stream,
            next_stream: 1,
            decoder: loona_hpack::Decoder::new(),
            authority_indexed: false,
        };
        let mut hello = PREFACE.to_vec();
        hello.extend(frame(0x4, 0, 0, &[]));
        connection.stream.write_all(&hello).expect("preface");
        connection
    }

    /// One unary gRPC call of `method` with `message` (already protobuf-encoded).
    pub(crate) fn unary(
        &mut self,
        method: &str,
        authority: &[u8],
        encoding: AuthorityEncoding,
        message: &[u8],
    ) -> Result<Reply, String> {
        let stream_id = self.next_stream;
        self.next_stream += 2;
        let mut block = vec![0x83, 0x86]; // :method POST, :scheme http (static table)
        match encoding {
            AuthorityEncoding::Plain => {
                block.push(0x01); // literal without indexing, name = static index 1 (:authority)
                string(&mut block, authority);
            }
            AuthorityEncoding::Indexed if !self.authority_indexed => {
                block.push(0x41); // literal with incremental indexing, name = :authority
                string(&mut block, authority);
                self.authority_indexed = true;
            }
            AuthorityEncoding::Indexed => block.push(0x80 | 62),
        }
        block.push(0x04); // :path, literal without indexing
        string(&mut block, method.as_bytes());
        block.push(0x00);
        string(&mut block, b"content-type");
        string(&mut block, b"application/grpc");
        block.push(0x00);
        string(&mut block, b"te");
        string(&mut block, b"trailers");
        let mut body = vec![0u8];
        body.extend_from_slice(&(message.len() as u32).to_be_bytes());
        body.extend_from_slice(message);
        let mut out = frame(0x1, 0x4, stream_id, &block);
        out.extend(frame(0x0, 0x1, stream_id, &body));
        self.stream.write_all(&out).map_err(|e| e.to_string())?;
        self.read_reply(stream_id)
    }

    fn read_exact(&mut self, len: usize) -> Result<Vec<u8>, String> {
        let mut buf = vec![0u8; len];
        self.stream
            .read_exact(&mut buf)
            .map_err(|e| format!("read: {e}"))?;
        Ok(buf)
    }

    fn read_reply(&mut self, stream_id: u32) -> Result<Reply, String> {
        let mut reply = Reply {
            grpc_status: None,
            message: Vec::new(),
        };
        let mut data = Vec::new();
        loop {
            let header = self.read_exact(9)?;
            let length = (usize::from(header[0]) << 16)
                | (usize::from(header[1]) << 8)
                | usize::from(header[2]);
            let (kind, flags) = (header[3], header[4]);
            let id = u32::from_be_bytes([header[5], header[6], header[7], header[8]]) & 0x7fff_ffff;
            let payload = self.read_exact(length)?;
            match kind {
                0x4 if flags & 0x1 == 0 => self
                    .stream
                    .write_all(&frame(0x4, 0x1, 0, &[]))
                    .map_err(|e| e.to_string())?,
                0x6 if flags & 0x1 == 0 => self
                    .stream
                    .write_all(&frame(0x6, 0x1, 0, &payload))
                    .map_err(|e| e.to_string())?,
                0x7 => return Err(format!("GOAWAY {:?}", &payload[4..8])),
                0x3 if id == stream_id => {
                    return Err(format!(
                        "RST_STREAM code {}",
                        u32::from_be_bytes([payload[0], payload[1], payload[2], payload[3]])
                    ));
                }
                0x1 if id == stream_id => {
                    let headers = self
                        .decoder
                        .decode(&payload)
                        .map_err(|e| format!("hpack: {e:?}"))?;
                    for (name, value) in headers {
                        if name == b"grpc-status" {
                            reply.grpc_status = Some(String::from_utf8_lossy(&value).into_owned());
                        }
                    }
                }
                0x0 if id == stream_id => data.extend_from_slice(&payload),
                _ => {}
            }
            if id == stream_id && (kind == 0x0 || kind == 0x1) && flags & 0x1 != 0 {
                if data.len() >= 5 {
                    reply.message = data[5..].to_vec();
                }
                return Ok(reply);
            }
        }
    }
}
