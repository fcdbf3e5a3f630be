//! Lets through the `:authority` that etcd's own Go client sends.
//!
//! etcdctl 3.4 dials some calls (`endpoint status`, `hashkv`, `defrag`,
//! `snapshot save`, and everything under `--cluster`) with the endpoint's
//! whole URL as the HTTP/2 `:authority`: `http://127.0.0.1:2379`. etcd's Go
//! server lets that through; the `h2` crate under tonic refuses it as a
//! malformed authority and resets the stream, and has no option to relax
//! the check (hyperium/h2#525). So each client connection is read through
//! [`AuthorityFix`], which takes the byte stream apart into HTTP/2 frames
//! and decodes the connection's first header block. If its `:authority` is
//! a URL, every header block of the connection is decoded (HPACK keeps a
//! table per connection, so every block must be decoded to follow it) and
//! handed to the server with a URL-shaped `:authority` cut down to its
//! `host:port`. Otherwise the connection passes unchanged from then on, at
//! no cost: a gRPC client sends one authority on all the requests of a
//! connection (grpc-go sets it once per connection; so do tonic and the
//! `etcd-client` crate).
//!
//! Only what the client sends passes through here; what the server writes
//! goes straight to the socket. Frames other than HEADERS and CONTINUATION
//! pass unchanged and without being buffered whole. Rewritten header blocks
//! are encoded as literals without indexing, so the server's HPACK table
//! stays as it was and never has to mirror the client's. A block that does
//! not decode, or that is larger than [`MAX_BLOCK`] encoded or
//! [`MAX_HEADER_LIST`] decoded, closes the connection with an error, as the
//! server would have on the same input.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tracing::debug;

/// The client connection preface (RFC 9113 section 3.4).
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const FRAME_HEADER: usize = 9;
const HEADERS: u8 = 0x1;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;
/// Every HTTP/2 peer accepts frames this large (the protocol's minimum for
/// SETTINGS_MAX_FRAME_SIZE), so re-encoded blocks are cut at it.
const MAX_FRAME: usize = 16_384;
/// The largest encoded header block (HEADERS and its CONTINUATIONs) read.
pub const MAX_BLOCK: usize = 256 * 1024;
/// The largest decoded header list (names and values) accepted.
pub const MAX_HEADER_LIST: usize = 1024 * 1024;
/// The HPACK table size the server allows (h2's default; tonic does not
/// change it), which bounds the client's table size updates.
const HPACK_TABLE: usize = 4096;

/// Where the reader is in the client's byte stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum At {
    /// Bytes of the connection preface still to come.
    Preface(usize),
    /// At a frame boundary.
    Frame,
    /// Inside a frame that passes unchanged: this many bytes remain.
    Pass(usize),
    /// The stream is not HTTP/2 as expected: everything passes unchanged
    /// and the server says what is wrong with it.
    Raw,
}

/// A header block being gathered from HEADERS and CONTINUATION frames.
struct Block {
    stream: u32,
    flags: u8,
    priority: Option<[u8; 5]>,
    fragment: BytesMut,
    /// The frames as they came, while the connection is undecided.
    frames: Vec<Bytes>,
}

/// A client connection read as its server should see it: every request's
/// `:authority` in `host:port` form (see the module documentation).
pub struct AuthorityFix<S> {
    io: S,
    at: At,
    /// Read from the client, not yet looked at.
    raw: BytesMut,
    /// Ready for the server.
    out: BytesMut,
    block: Option<Block>,
    decoder: loona_hpack::Decoder<'static>,
    /// Whether the connection's header blocks are rewritten; decided by
    /// its first (`None` until then).
    rewriting: Option<bool>,
    eof: bool,
}

impl<S> AuthorityFix<S> {
    /// Reads `io`, a client connection, for an HTTP/2 server.
    pub fn new(io: S) -> Self {
        let mut decoder = loona_hpack::Decoder::new();
        decoder.set_max_allowed_table_size(HPACK_TABLE);
        AuthorityFix {
            io,
            at: At::Preface(0),
            raw: BytesMut::new(),
            out: BytesMut::new(),
            block: None,
            decoder,
            rewriting: None,
            eof: false,
        }
    }

    /// Moves what can be decided from `raw` to `out`.
    fn advance(&mut self) -> io::Result<()> {
        loop {
            match self.at {
                At::Raw => {
                    let all = self.raw.split();
                    self.out.extend_from_slice(&all);
                    return Ok(());
                }
                At::Preface(seen) => {
                    let n = (PREFACE.len() - seen).min(self.raw.len());
                    if n == 0 {
                        return Ok(());
                    }
                    if self.raw[..n] != PREFACE[seen..seen + n] {
                        self.at = At::Raw;
                        continue;
                    }
                    let part = self.raw.split_to(n);
                    self.out.extend_from_slice(&part);
                    self.at = if seen + n == PREFACE.len() {
                        At::Frame
                    } else {
                        At::Preface(seen + n)
                    };
                }
                At::Pass(0) => self.at = At::Frame,
                At::Pass(left) => {
                    let n = left.min(self.raw.len());
                    if n == 0 {
                        return Ok(());
                    }
                    let part = self.raw.split_to(n);
                    self.out.extend_from_slice(&part);
                    self.at = At::Pass(left - n);
                }
                At::Frame => {
                    if self.raw.len() < FRAME_HEADER {
                        return Ok(());
                    }
                    let head = &self.raw[..FRAME_HEADER];
                    let len = (usize::from(head[0]) << 16)
                        | (usize::from(head[1]) << 8)
                        | usize::from(head[2]);
                    let kind = head[3];
                    let flags = head[4];
                    let stream =
                        u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
                    let in_block = self.block.is_some();
                    if kind != HEADERS && kind != CONTINUATION && !in_block {
                        let part = self.raw.split_to(FRAME_HEADER);
                        self.out.extend_from_slice(&part);
                        self.at = At::Pass(len);
                        continue;
                    }
                    if kind == CONTINUATION && !in_block {
                        // Out of place: the server will say so.
                        self.at = At::Raw;
                        continue;
                    }
                    if in_block && (kind != CONTINUATION || self.block_stream() != Some(stream)) {
                        return Err(invalid(
                            "a header block interrupted by another frame (RFC 9113 6.10)",
                        ));
                    }
                    let gathered = self.block.as_ref().map_or(0, |b| b.fragment.len());
                    if gathered + len > MAX_BLOCK {
                        return Err(invalid(format!(
                            "a header block larger than {MAX_BLOCK} bytes"
                        )));
                    }
                    if self.raw.len() < FRAME_HEADER + len {
                        self.raw.reserve(FRAME_HEADER + len - self.raw.len());
                        return Ok(());
                    }
                    let frame = self.raw.split_to(FRAME_HEADER + len).freeze();
                    let mut payload = frame.slice(FRAME_HEADER..);
                    if kind == HEADERS {
                        let mut priority = None;
                        if flags & PADDED != 0 {
                            let pad = usize::from(*payload.first().ok_or_else(|| {
                                invalid("a padded HEADERS frame without its pad length")
                            })?);
                            payload.advance(1);
                            if pad > payload.len() {
                                return Err(invalid("HEADERS padding longer than the frame"));
                            }
                            payload.truncate(payload.len() - pad);
                        }
                        if flags & PRIORITY != 0 {
                            if payload.len() < 5 {
                                return Err(invalid("HEADERS priority fields cut short"));
                            }
                            let mut p = [0u8; 5];
                            p.copy_from_slice(&payload[..5]);
                            payload.advance(5);
                            priority = Some(p);
                        }
                        self.block = Some(Block {
                            stream,
                            flags,
                            priority,
                            fragment: BytesMut::from(&payload[..]),
                            frames: Vec::new(),
                        });
                    } else if let Some(block) = self.block.as_mut() {
                        block.fragment.extend_from_slice(&payload);
                        block.flags |= flags & END_HEADERS;
                    }
                    if self.rewriting.is_none() {
                        if let Some(block) = self.block.as_mut() {
                            block.frames.push(frame);
                        }
                    }
                    if self
                        .block
                        .as_ref()
                        .is_some_and(|b| b.flags & END_HEADERS != 0)
                    {
                        if let Some(block) = self.block.take() {
                            self.rewrite(block)?;
                        }
                        if self.rewriting == Some(false) {
                            self.at = At::Raw;
                        }
                    }
                }
            }
        }
    }

    fn block_stream(&self) -> Option<u32> {
        self.block.as_ref().map(|b| b.stream)
    }

    /// Decodes one whole header block and writes it to `out` again, with
    /// literals only and the `:authority` in `host:port` form; or, if it is
    /// the connection's first and its authority needs nothing, as it came.
    fn rewrite(&mut self, block: Block) -> io::Result<()> {
        let mut encoded = Vec::with_capacity(block.fragment.len() + 64);
        let mut size = 0usize;
        let mut fixed = false;
        self.decoder
            .decode_with_cb(&block.fragment, |name, value| {
                size += name.len() + value.len() + 32;
                if size > MAX_HEADER_LIST {
                    return;
                }
                let value: &[u8] = if name.as_ref() == b":authority" {
                    let host_port = host_port(&value);
                    fixed |= host_port.len() != value.len();
                    host_port
                } else {
                    &value
                };
                put_literal(&mut encoded, &name, value);
            })
            .map_err(|e| invalid(format!("a header block that does not decode: {e}")))?;
        if size > MAX_HEADER_LIST {
            return Err(invalid(format!(
                "a header list larger than {MAX_HEADER_LIST} bytes"
            )));
        }
        if self.rewriting.is_none() {
            self.rewriting = Some(fixed);
            if !fixed {
                for frame in &block.frames {
                    self.out.extend_from_slice(frame);
                }
                return Ok(());
            }
            debug!("a client sent a URL as its :authority; its connection is read as host:port");
        }
        // HEADERS with the priority fields and what fits after them, then
        // CONTINUATIONs; END_HEADERS on the last.
        let prio: &[u8] = block.priority.as_ref().map_or(&[], |p| &p[..]);
        let (head, mut rest) = encoded.split_at((MAX_FRAME - prio.len()).min(encoded.len()));
        let end = |rest: &[u8]| if rest.is_empty() { END_HEADERS } else { 0 };
        let flags = block.flags & (END_STREAM | PRIORITY) | end(rest);
        self.put_frame(HEADERS, flags, block.stream, &[prio, head]);
        while !rest.is_empty() {
            let (piece, tail) = rest.split_at(MAX_FRAME.min(rest.len()));
            rest = tail;
            self.put_frame(CONTINUATION, end(rest), block.stream, &[piece]);
        }
        Ok(())
    }

    /// Appends one frame, its payload the concatenation of `parts`.
    fn put_frame(&mut self, kind: u8, flags: u8, stream: u32, parts: &[&[u8]]) {
        let len: usize = parts.iter().map(|p| p.len()).sum();
        self.out.reserve(FRAME_HEADER + len);
        self.out.put_uint(len as u64, 3);
        self.out.put_u8(kind);
        self.out.put_u8(flags);
        self.out.put_u32(stream);
        for p in parts {
            self.out.extend_from_slice(p);
        }
    }
}

/// The `host:port` of an authority written as a URL (`http://h:p/` gives
/// `h:p`); any other value unchanged.
fn host_port(value: &[u8]) -> &[u8] {
    let Some(at) = value.windows(3).position(|w| w == b"://") else {
        return value;
    };
    let rest = &value[at + 3..];
    let end = rest.iter().position(|&b| b == b'/').unwrap_or(rest.len());
    &rest[..end]
}

/// Appends a literal header field without indexing, with a literal name
/// (RFC 7541 section 6.2.2) and no Huffman coding.
fn put_literal(dst: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    dst.push(0);
    put_string(dst, name);
    put_string(dst, value);
}

fn put_string(dst: &mut Vec<u8>, s: &[u8]) {
    // A string's length: an integer with a 7-bit prefix, the Huffman bit
    // clear. Writing to a `Vec` cannot fail.
    let _ = loona_hpack::encoder::encode_integer_into(s.len(), 7, 0, dst);
    dst.extend_from_slice(s);
}

fn invalid(msg: impl Into<String>) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("HTTP/2 from the client: {}", msg.into()),
    )
}

impl<S: AsyncRead + Unpin> AsyncRead for AuthorityFix<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if !this.out.is_empty() {
                let n = this.out.len().min(buf.remaining());
                buf.put_slice(&this.out[..n]);
                this.out.advance(n);
                return Poll::Ready(Ok(()));
            }
            if this.eof {
                return Poll::Ready(Ok(()));
            }
            // The body of a frame that passes unchanged goes straight to
            // the server's buffer, copied once.
            let direct = match this.at {
                At::Pass(left) if this.raw.is_empty() && left > 0 => Some(left),
                At::Raw if this.raw.is_empty() => Some(usize::MAX),
                _ => None,
            };
            if let Some(left) = direct {
                let room = buf.remaining().min(left);
                if room == 0 {
                    return Poll::Ready(Ok(()));
                }
                let mut part = ReadBuf::new(buf.initialize_unfilled_to(room));
                ready!(Pin::new(&mut this.io).poll_read(cx, &mut part))?;
                let n = part.filled().len();
                buf.advance(n);
                if n == 0 {
                    this.eof = true;
                } else if let At::Pass(left) = this.at {
                    this.at = At::Pass(left - n);
                }
                return Poll::Ready(Ok(()));
            }
            let mut chunk = [0u8; 8192];
            let mut rb = ReadBuf::new(&mut chunk);
            ready!(Pin::new(&mut this.io).poll_read(cx, &mut rb))?;
            if rb.filled().is_empty() {
                // The client is gone, perhaps in mid-frame: the server gets
                // what came and then the end.
                this.eof = true;
                let rest = this.raw.split();
                this.out.extend_from_slice(&rest);
                continue;
            }
            this.raw.extend_from_slice(rb.filled());
            this.advance()?;
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for AuthorityFix<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

impl<S: tonic::transport::server::Connected> tonic::transport::server::Connected
    for AuthorityFix<S>
{
    type ConnectInfo = S::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.io.connect_info()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A client connection that hands over at most `chunk` bytes per read.
    struct Chunked {
        data: Vec<u8>,
        at: usize,
        chunk: usize,
    }

    impl AsyncRead for Chunked {
        fn poll_read(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            let n = self
                .chunk
                .min(buf.remaining())
                .min(self.data.len() - self.at);
            let at = self.at;
            buf.put_slice(&self.data[at..at + n]);
            self.at += n;
            Poll::Ready(Ok(()))
        }
    }

    /// Everything the server reads through an `AuthorityFix` over `data`,
    /// `read` bytes at a time.
    fn through(data: Vec<u8>, chunk: usize, read: usize) -> io::Result<Vec<u8>> {
        let mut fix = AuthorityFix::new(Chunked { data, at: 0, chunk });
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let mut all = Vec::new();
        loop {
            let mut space = vec![0u8; read];
            let mut buf = ReadBuf::new(&mut space);
            match Pin::new(&mut fix).poll_read(&mut cx, &mut buf) {
                Poll::Ready(Ok(())) if buf.filled().is_empty() => return Ok(all),
                Poll::Ready(Ok(())) => all.extend_from_slice(buf.filled()),
                Poll::Ready(Err(e)) => return Err(e),
                Poll::Pending => unreachable!("the test connection is always ready"),
            }
        }
    }

    fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let mut f = BytesMut::new();
        f.put_uint(payload.len() as u64, 3);
        f.put_u8(kind);
        f.put_u8(flags);
        f.put_u32(stream);
        f.extend_from_slice(payload);
        f.to_vec()
    }

    #[derive(Debug, Clone, PartialEq)]
    enum Seen {
        Headers {
            stream: u32,
            end_stream: bool,
            priority: Option<Vec<u8>>,
            fields: Vec<(Vec<u8>, Vec<u8>)>,
        },
        Other(Vec<u8>),
    }

    /// Takes the server's side apart again: frames, with header blocks
    /// decoded by a decoder of its own (as the server's would be).
    fn frames(mut data: &[u8]) -> Vec<Seen> {
        assert!(data.starts_with(PREFACE));
        data = &data[PREFACE.len()..];
        let mut decoder = loona_hpack::Decoder::new();
        let mut seen = Vec::new();
        // A header block being gathered: stream, END_STREAM, priority, bytes.
        type Open = (u32, bool, Option<Vec<u8>>, Vec<u8>);
        let mut block: Option<Open> = None;
        while !data.is_empty() {
            let len =
                (usize::from(data[0]) << 16) | (usize::from(data[1]) << 8) | usize::from(data[2]);
            let (kind, flags) = (data[3], data[4]);
            let stream = u32::from_be_bytes([data[5], data[6], data[7], data[8]]);
            let payload = &data[9..9 + len];
            data = &data[9 + len..];
            match kind {
                HEADERS => {
                    assert!(block.is_none());
                    assert!(len <= MAX_FRAME);
                    let payload = if flags & PADDED != 0 {
                        &payload[1..payload.len() - usize::from(payload[0])]
                    } else {
                        payload
                    };
                    let (priority, rest) = if flags & PRIORITY != 0 {
                        (Some(payload[..5].to_vec()), &payload[5..])
                    } else {
                        (None, payload)
                    };
                    block = Some((stream, flags & END_STREAM != 0, priority, rest.to_vec()));
                }
                CONTINUATION => {
                    let b = block.as_mut().expect("a CONTINUATION after HEADERS");
                    assert_eq!(b.0, stream);
                    b.3.extend_from_slice(payload);
                }
                _ => {
                    assert!(block.is_none(), "no frame inside a header block");
                    seen.push(Seen::Other(
                        [
                            &(len as u32).to_be_bytes()[1..],
                            &[kind, flags],
                            &stream.to_be_bytes()[..],
                            payload,
                        ]
                        .concat(),
                    ));
                    continue;
                }
            }
            if flags & END_HEADERS != 0 {
                let (stream, end_stream, priority, bytes) = block.take().unwrap_or_default();
                // Literals without indexing only: the server's table stays empty.
                let fields = decoder.decode(&bytes).expect("the rewritten block decodes");
                seen.push(Seen::Headers {
                    stream,
                    end_stream,
                    priority,
                    fields,
                });
            }
        }
        assert!(block.is_none());
        seen
    }

    #[test]
    fn a_url_authority_is_cut_to_host_and_port() {
        assert_eq!(host_port(b"http://127.0.0.1:2379"), b"127.0.0.1:2379");
        assert_eq!(host_port(b"https://a.example:443/x/y"), b"a.example:443");
        assert_eq!(host_port(b"127.0.0.1:2379"), b"127.0.0.1:2379");
        assert_eq!(host_port(b""), b"");
        assert_eq!(host_port(b"unix://"), b"");
    }

    /// One request as etcdctl 3.4's `endpoint status` sends it.
    fn request(authority: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
        vec![
            (b":method".to_vec(), b"POST".to_vec()),
            (b":scheme".to_vec(), b"http".to_vec()),
            (
                b":path".to_vec(),
                b"/etcdserverpb.Maintenance/Status".to_vec(),
            ),
            (b":authority".to_vec(), authority.to_vec()),
            (b"content-type".to_vec(), b"application/grpc".to_vec()),
            (b"te".to_vec(), b"trailers".to_vec()),
        ]
    }

    #[test]
    fn the_request_etcdctl_sends_reaches_the_server_as_host_and_port() {
        let mut enc = loona_hpack::Encoder::new();
        let mut wire = PREFACE.to_vec();
        wire.extend(frame(0x4, 0, 0, &[])); // SETTINGS
        for stream in [1u32, 3, 5] {
            let fields = request(b"http://127.0.0.1:2379");
            let block = enc.encode(fields.iter().map(|(n, v)| (&n[..], &v[..])));
            wire.extend(frame(HEADERS, END_HEADERS, stream, &block));
            wire.extend(frame(0x0, END_STREAM, stream, b"\0\0\0\0\0"));
        }
        let out = through(wire, 7, 13).expect("a well-formed stream passes");
        let seen = frames(&out);
        assert_eq!(seen.len(), 7);
        for s in &seen {
            if let Seen::Headers { fields, .. } = s {
                let authority = fields.iter().find(|(n, _)| n == b":authority");
                assert_eq!(authority.map(|(_, v)| &v[..]), Some(&b"127.0.0.1:2379"[..]));
                assert_eq!(fields.len(), 6);
            }
        }
    }

    #[test]
    fn a_rewritten_block_larger_than_a_frame_goes_on_in_continuations() {
        let mut enc = loona_hpack::Encoder::new();
        let mut fields = request(b"http://127.0.0.1:2379");
        fields.push((b"x-big".to_vec(), vec![b'v'; 3 * MAX_FRAME]));
        let block = enc.encode(fields.iter().map(|(n, v)| (&n[..], &v[..])));
        let mut wire = PREFACE.to_vec();
        let prio = [0, 0, 0, 1, 16];
        wire.extend(frame(
            HEADERS,
            END_HEADERS | PRIORITY | END_STREAM,
            1,
            &[&prio[..], &block].concat(),
        ));
        let out = through(wire, 1000, 4096).expect("a well-formed stream passes");
        let kinds: Vec<u8> = {
            let mut at = PREFACE.len();
            let mut kinds = Vec::new();
            while at < out.len() {
                let len = (usize::from(out[at]) << 16)
                    | (usize::from(out[at + 1]) << 8)
                    | usize::from(out[at + 2]);
                kinds.push(out[at + 3]);
                at += FRAME_HEADER + len;
            }
            kinds
        };
        assert_eq!(kinds, [HEADERS, CONTINUATION, CONTINUATION, CONTINUATION]);
        let mut want = fields;
        want[3].1 = b"127.0.0.1:2379".to_vec();
        assert_eq!(
            frames(&out),
            [Seen::Headers {
                stream: 1,
                end_stream: true,
                priority: Some(prio.to_vec()),
                fields: want,
            }]
        );
    }

    #[test]
    fn a_connection_whose_first_authority_is_fine_passes_unchanged() {
        let mut enc = loona_hpack::Encoder::new();
        let mut wire = PREFACE.to_vec();
        for (stream, authority) in [
            (1u32, &b"127.0.0.1:2379"[..]),
            (3, b"http://127.0.0.1:2379"),
        ] {
            let fields = request(authority);
            let block = enc.encode(fields.iter().map(|(n, v)| (&n[..], &v[..])));
            wire.extend(frame(
                HEADERS,
                END_HEADERS | PADDED,
                stream,
                &[&[2u8][..], &block, &[0, 0]].concat(),
            ));
        }
        assert_eq!(through(wire.clone(), 5, 11).ok(), Some(wire));
    }

    #[test]
    fn a_block_that_does_not_decode_closes_the_connection() {
        let mut wire = PREFACE.to_vec();
        // Indexed field 70: the dynamic table is empty.
        wire.extend(frame(HEADERS, END_HEADERS, 1, &[0x80 | 70]));
        let e = through(wire, 64, 64).expect_err("an index out of the table");
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        assert!(e.to_string().contains("does not decode"), "{e}");
    }

    #[test]
    fn a_header_bomb_is_refused() {
        // One field in the table, then thousands of references to it:
        // a small block that decodes to megabytes.
        let mut enc = loona_hpack::Encoder::new();
        let big = vec![b'x'; 4000];
        let first = enc.encode([(&b"x-big"[..], &big[..])]);
        let mut block = first.clone();
        for _ in 0..MAX_BLOCK / 2 {
            block.push(0x80 | 62);
        }
        let mut wire = PREFACE.to_vec();
        let mut rest = &block[..];
        let mut kind = HEADERS;
        while !rest.is_empty() {
            let n = rest.len().min(MAX_FRAME);
            let flags = if n == rest.len() { END_HEADERS } else { 0 };
            wire.extend(frame(kind, flags, 1, &rest[..n]));
            rest = &rest[n..];
            kind = CONTINUATION;
        }
        let e = through(wire, 1 << 16, 1 << 16).expect_err("too large decoded");
        assert!(e.to_string().contains("header list larger"), "{e}");
    }

    #[test]
    fn an_oversized_block_is_refused_before_it_is_gathered() {
        let mut wire = PREFACE.to_vec();
        for i in 0..20 {
            let kind = if i == 0 { HEADERS } else { CONTINUATION };
            wire.extend(frame(kind, 0, 1, &vec![0u8; MAX_FRAME]));
        }
        let e = through(wire, 1 << 16, 1 << 16).expect_err("too large encoded");
        assert!(e.to_string().contains("header block larger"), "{e}");
    }

    #[test]
    fn a_header_block_interrupted_by_another_frame_is_refused() {
        let mut wire = PREFACE.to_vec();
        wire.extend(frame(HEADERS, 0, 1, &[0x82]));
        wire.extend(frame(0x6, 0, 0, &[0; 8])); // PING
        let e = through(wire, 64, 64).expect_err("interleaved");
        assert!(e.to_string().contains("interrupted"), "{e}");
    }

    #[test]
    fn what_is_not_http2_passes_unchanged() {
        let wire = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec();
        assert_eq!(through(wire.clone(), 5, 3).ok(), Some(wire));
    }

    #[test]
    fn a_stream_cut_in_mid_frame_passes_what_came() {
        let mut wire = PREFACE.to_vec();
        wire.extend(frame(0x0, 0, 1, b"abcdef"));
        wire.truncate(wire.len() - 2);
        assert_eq!(through(wire.clone(), 4, 5).ok(), Some(wire));
    }

    fn field() -> impl Strategy<Value = (Vec<u8>, Vec<u8>)> {
        (
            prop::sample::select(vec![
                b"content-type".to_vec(),
                b"te".to_vec(),
                b"user-agent".to_vec(),
                b"x-a".to_vec(),
                b"grpc-timeout".to_vec(),
            ]),
            prop::collection::vec(any::<u8>(), 0..40),
        )
    }

    #[derive(Debug, Clone)]
    enum Step {
        Request {
            authority: Vec<u8>,
            extra: Vec<(Vec<u8>, Vec<u8>)>,
            pad: Option<u8>,
            priority: bool,
            split: usize,
            end_stream: bool,
        },
        Data(Vec<u8>),
        Ping,
        TableSize(u16),
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            4 => (
                prop::sample::select(vec![
                    b"http://127.0.0.1:2379".to_vec(),
                    b"127.0.0.1:2379".to_vec(),
                    b"https://node-2.example:2379/".to_vec(),
                    b"localhost:1".to_vec(),
                ]),
                prop::collection::vec(field(), 0..6),
                prop::option::of(any::<u8>()),
                any::<bool>(),
                1usize..64,
                any::<bool>(),
            )
                .prop_map(|(authority, extra, pad, priority, split, end_stream)| {
                    Step::Request {
                        authority,
                        extra,
                        pad,
                        priority,
                        split,
                        end_stream,
                    }
                }),
            2 => prop::collection::vec(any::<u8>(), 0..300).prop_map(Step::Data),
            1 => Just(Step::Ping),
            1 => (0u16..=4096).prop_map(Step::TableSize),
        ]
    }

    proptest! {
        /// Whatever the client's HPACK state, framing and read sizes, the
        /// server sees every frame it would have, in order, with the same
        /// headers but for a URL `:authority` cut to `host:port`.
        #[test]
        fn the_server_sees_what_the_client_sent(
            steps in prop::collection::vec(step(), 1..40),
            chunk in 1usize..200,
            read in 1usize..200,
        ) {
            let mut enc = loona_hpack::Encoder::new();
            let mut wire = PREFACE.to_vec();
            let mut want = Vec::new();
            let mut stream = 1u32;
            let mut size_update: Option<u16> = None;
            // The first request decides whether the connection is rewritten.
            let rewritten = steps.iter().find_map(|s| match s {
                Step::Request { authority, .. } => Some(host_port(authority) != &authority[..]),
                _ => None,
            });
            for s in steps {
                match s {
                    Step::Request { authority, extra, pad, priority, split, end_stream } => {
                        let mut fields = request(&authority);
                        fields.extend(extra);
                        let mut block = Vec::new();
                        if let Some(size) = size_update.take() {
                            // A dynamic table size update starts the block.
                            let _ = loona_hpack::encoder::encode_integer_into(
                                usize::from(size), 5, 0x20, &mut block,
                            );
                            enc.set_max_table_size(usize::from(size));
                        }
                        block.extend(enc.encode(fields.iter().map(|(n, v)| (&n[..], &v[..]))));
                        let prio = priority.then(|| vec![0, 0, 0, 3, 200]);
                        let mut first = Vec::new();
                        let mut flags = if end_stream { END_STREAM } else { 0 };
                        if let Some(p) = pad {
                            flags |= PADDED;
                            first.push(p);
                        }
                        if let Some(p) = &prio {
                            flags |= PRIORITY;
                            first.extend_from_slice(p);
                        }
                        let cut = split.min(block.len());
                        first.extend_from_slice(&block[..cut]);
                        if let Some(p) = pad {
                            first.extend(std::iter::repeat_n(0u8, usize::from(p)));
                        }
                        let pieces: Vec<&[u8]> = block[cut..].chunks(split).collect();
                        if pieces.is_empty() {
                            flags |= END_HEADERS;
                        }
                        wire.extend(frame(HEADERS, flags, stream, &first));
                        for (i, piece) in pieces.iter().enumerate() {
                            let f = if i + 1 == pieces.len() { END_HEADERS } else { 0 };
                            wire.extend(frame(CONTINUATION, f, stream, piece));
                        }
                        let fields = fields
                            .into_iter()
                            .map(|(n, v)| {
                                let v = if n == b":authority" && rewritten == Some(true) {
                                    host_port(&v).to_vec()
                                } else {
                                    v
                                };
                                (n, v)
                            })
                            .collect();
                        want.push(Seen::Headers { stream, end_stream, priority: prio, fields });
                        stream += 2;
                    }
                    Step::Data(body) => {
                        let f = frame(0x0, 0, 1, &body);
                        wire.extend_from_slice(&f);
                        want.push(Seen::Other(f));
                    }
                    Step::Ping => {
                        let f = frame(0x6, 0, 0, &[7; 8]);
                        wire.extend_from_slice(&f);
                        want.push(Seen::Other(f));
                    }
                    Step::TableSize(n) => size_update = Some(n),
                }
            }
            let out = through(wire.clone(), chunk, read)
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            if rewritten != Some(true) {
                prop_assert!(out == wire, "a connection with nothing to rewrite passes unchanged");
            }
            prop_assert_eq!(frames(&out), want);
        }
    }
}
