//! Reading one request off a lease-port connection: the head (httparse), its framing checked,
//! then the body by `Content-Length` or chunked, all by the request's deadline.
use super::{MAX_HEADERS, MAX_HEAD_BYTES, READ_CHUNK};
use crate::api::Refusal;
use axum::body::Body;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, StatusCode, Uri, Version};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;

/// Why a request could not be read; each ends the connection.
pub(super) enum ReadFailure {
    /// The peer closed or reset the connection.
    Gone,
    /// The request did not arrive within `limits.header_timeout_ms` of its first byte.
    Slow,
}

/// A request read off the connection, ready for the handlers.
pub(super) struct Incoming {
    pub(super) asked: Asked,
    /// An HTTP/1.0 request: the connection is kept only when the answer says so.
    pub(super) http10: bool,
    /// The client asked to keep the connection open after the answer.
    pub(super) keep_alive: bool,
    pub(super) head_only: bool,
}

/// What a request asks for.
pub(super) enum Asked {
    /// `POST /v1/lease` with this body: a renewal needs nothing else of its request, so none
    /// of the head is kept for it.
    Lease(Vec<u8>),
    /// Anything else, whole, for the router (boxed: a request waiting for its turn holds
    /// only a pointer to it).
    Other(Box<Request<Body>>),
}

/// The request at the start of `buf` when all of it is there (a renewal read in one go, as a
/// rule), or when the bytes there already settle its refusal; `None` while more must be read,
/// which [`read_request`] then does. Takes the request's bytes out of `buf`. Gives what
/// `read_request` gives for the same bytes: a body already whole needs no `100 Continue`.
pub(super) fn take_whole(
    buf: &mut Vec<u8>,
    body_limit: usize,
) -> Option<Result<Incoming, Refusal>> {
    let (head, head_len) = match parse_head(buf) {
        Ok(Some((_, head_len))) if head_len > MAX_HEAD_BYTES => return Some(Err(head_too_large())),
        Ok(Some(done)) => done,
        Ok(None) if buf.len() >= MAX_HEAD_BYTES => return Some(Err(head_too_large())),
        Ok(None) => return None,
        Err(refusal) => return Some(Err(refusal)),
    };
    match head.framing {
        Framing::Length(n) if n > body_limit => Some(Err(body_too_large(body_limit))),
        Framing::Length(n) if buf.len() >= head_len + n => {
            let end = head_len + n;
            let body = buf[head_len..end].to_vec();
            buf.drain(..end);
            Some(Ok(head.incoming(body)))
        }
        Framing::Length(_) | Framing::Chunked => None,
    }
}

/// Reads one request: its head, then its body. `Ok(Err(_))` is a request refused as it stands
/// (the connection cannot be reused after it); `buf` keeps any bytes of a next request.
pub(super) async fn read_request<I: AsyncRead + AsyncWrite + Unpin>(
    io: &mut I,
    buf: &mut Vec<u8>,
    deadline: Instant,
    body_limit: usize,
) -> Result<Result<Incoming, Refusal>, ReadFailure> {
    let (parsed, head_len) = loop {
        match parse_head(buf) {
            // Judged on the head itself, not on how much of it one read brought: the same
            // bytes get the same answer whatever the reads' boundaries (a partial head of
            // MAX_HEAD_BYTES will be longer than that when complete).
            Ok(Some((_, head_len))) if head_len > MAX_HEAD_BYTES => {
                return Ok(Err(head_too_large()));
            }
            Ok(Some(done)) => break done,
            Ok(None) if buf.len() >= MAX_HEAD_BYTES => {
                return Ok(Err(head_too_large()));
            }
            Ok(None) => read_more(io, buf, deadline).await?,
            Err(refusal) => return Ok(Err(refusal)),
        }
    };
    let (framing, expect_continue) = (parsed.framing, parsed.expect_continue);
    if matches!(framing, Framing::Length(n) if n > body_limit) {
        return Ok(Err(body_too_large(body_limit)));
    }
    let body_started = match framing {
        Framing::Length(n) => buf.len() >= head_len + n,
        Framing::Chunked => buf.len() > head_len,
    };
    if expect_continue && !body_started {
        // The client waits for this before it sends the body.
        if io
            .write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
            .await
            .is_err()
            || io.flush().await.is_err()
        {
            return Err(ReadFailure::Gone);
        }
    }
    let body = match framing {
        Framing::Length(length) => {
            let end = head_len + length;
            while buf.len() < end {
                read_more(io, buf, deadline).await?;
            }
            // Copied out, a few hundred bytes: the read buffer (2 KiB) is then free before the
            // request waits for its turn and its answer, and thousands may wait at once.
            let body = buf[head_len..end].to_vec();
            buf.drain(..end);
            body
        }
        Framing::Chunked => match read_chunked(io, buf, head_len, deadline, body_limit).await? {
            Ok(body) => body,
            Err(refusal) => return Ok(Err(refusal)),
        },
    };
    Ok(Ok(parsed.incoming(body)))
}

impl Head {
    /// The request this head starts, with its body.
    fn incoming(self, body: Vec<u8>) -> Incoming {
        let asked = if self.lease {
            Asked::Lease(body)
        } else {
            let mut request = Request::new(Body::from(body));
            *request.method_mut() = self.method.clone();
            *request.uri_mut() = self.uri;
            *request.version_mut() = self.version;
            *request.headers_mut() = self.headers;
            Asked::Other(Box::new(request))
        };
        Incoming {
            asked,
            http10: self.version == Version::HTTP_10,
            keep_alive: self.keep_alive,
            head_only: self.method == Method::HEAD,
        }
    }
}

/// Most bytes of chunk framing (size lines, extensions, trailers) a body may carry beyond
/// its data.
const MAX_CHUNK_FRAMING: usize = 4096;

/// Reads a chunked body that starts at `start` in `buf` (RFC 9112, 7.1): its data, at most
/// `body_limit` bytes, and framing of at most `MAX_CHUNK_FRAMING`; chunk extensions and
/// trailer fields are read and dropped. Leaves in `buf` only what follows the body.
async fn read_chunked<I: AsyncRead + Unpin>(
    io: &mut I,
    buf: &mut Vec<u8>,
    start: usize,
    deadline: Instant,
    body_limit: usize,
) -> Result<Result<Vec<u8>, Refusal>, ReadFailure> {
    let bad = |what: &str| bad_request(format!("bad chunked body: {what}"));
    let mut body = Vec::new();
    let mut pos = start;
    let mut framing = 0usize;
    // One line (without its CRLF) starting at `pos`, read as far as needed.
    macro_rules! line {
        () => {{
            loop {
                if let Some(i) = buf[pos..].windows(2).position(|w| w == b"\r\n") {
                    break pos + i;
                }
                if buf.len() - pos > MAX_CHUNK_FRAMING.saturating_sub(framing) {
                    return Ok(Err(bad("a size line or trailer field too long")));
                }
                read_more(io, buf, deadline).await?;
            }
        }};
    }
    loop {
        let end = line!();
        framing += end - pos + 2;
        if framing > MAX_CHUNK_FRAMING {
            return Ok(Err(bad("more than 4096 bytes of chunk framing")));
        }
        let line = &buf[pos..end];
        if has_control(line) {
            return Ok(Err(bad("a control character in a size line")));
        }
        let size_text = line
            .split(|b| *b == b';')
            .next()
            .unwrap_or_default()
            .trim_ascii_end();
        if size_text.is_empty()
            || size_text.len() > 16
            || !size_text.iter().all(|b| b.is_ascii_hexdigit())
        {
            return Ok(Err(bad("a chunk size that is not a hexadecimal number")));
        }
        let size = std::str::from_utf8(size_text)
            .ok()
            .and_then(|t| usize::from_str_radix(t, 16).ok())
            .ok_or_else(|| bad("a chunk size out of range"));
        let size = match size {
            Ok(n) => n,
            Err(refusal) => return Ok(Err(refusal)),
        };
        pos = end + 2;
        if size == 0 {
            // Trailer fields, up to the empty line.
            loop {
                let end = line!();
                framing += end - pos + 2;
                if framing > MAX_CHUNK_FRAMING {
                    return Ok(Err(bad("more than 4096 bytes of chunk framing")));
                }
                if has_control(&buf[pos..end]) {
                    return Ok(Err(bad("a control character in a trailer field")));
                }
                let empty = end == pos;
                pos = end + 2;
                if empty {
                    break;
                }
            }
            break;
        }
        if body.len().saturating_add(size) > body_limit {
            return Ok(Err(body_too_large(body_limit)));
        }
        while buf.len() < pos + size + 2 {
            read_more(io, buf, deadline).await?;
        }
        if &buf[pos + size..pos + size + 2] != b"\r\n" {
            return Ok(Err(bad("a chunk not followed by CRLF")));
        }
        body.extend_from_slice(&buf[pos..pos + size]);
        pos += size + 2;
        framing += 2;
    }
    buf.drain(..pos);
    Ok(Ok(body))
}

/// A byte that no size line or trailer field may hold (a bare CR or LF would let another
/// reader end the line elsewhere).
fn has_control(line: &[u8]) -> bool {
    line.iter()
        .any(|b| (*b < 0x20 && *b != b'\t') || *b == 0x7f)
}

/// Appends at least one byte from the connection to `buf`, by `deadline`.
async fn read_more<I: AsyncRead + Unpin>(
    io: &mut I,
    buf: &mut Vec<u8>,
    deadline: Instant,
) -> Result<(), ReadFailure> {
    // Grown only when little room is left: reserving a whole chunk again for the rest of a
    // request begun with a few bytes would double every request's buffer to 4 KiB.
    if buf.capacity() - buf.len() < READ_CHUNK / 2 {
        buf.reserve(READ_CHUNK);
    }
    match tokio::time::timeout_at(deadline, io.read_buf(buf)).await {
        Ok(Ok(0)) | Ok(Err(_)) => Err(ReadFailure::Gone),
        Ok(Ok(_)) => Ok(()),
        Err(_) => Err(ReadFailure::Slow),
    }
}

/// A request head, checked.
struct Head {
    method: Method,
    uri: Uri,
    version: Version,
    headers: HeaderMap,
    /// `POST /v1/lease`: `uri` and `headers` are not read for it (nor built).
    lease: bool,
    keep_alive: bool,
    framing: Framing,
    expect_continue: bool,
}

/// How the body is delimited.
#[derive(Clone, Copy)]
enum Framing {
    Length(usize),
    Chunked,
}

fn body_too_large(limit: usize) -> Refusal {
    Refusal::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "body_too_large",
        format!("request body is larger than {limit} bytes (limits.body_limit_bytes)"),
    )
}

fn head_too_large() -> Refusal {
    Refusal::new(
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
        "head_too_large",
        format!(
            "the request head is larger than {MAX_HEAD_BYTES} bytes; send fewer or shorter headers"
        ),
    )
}

fn bad_request(message: String) -> Refusal {
    Refusal::new(StatusCode::BAD_REQUEST, "bad_http", message)
}

/// The head at the start of `buf` and its length, `None` while it is incomplete.
fn parse_head(buf: &[u8]) -> Result<Option<(Head, usize)>, Refusal> {
    // Left uninitialised: httparse writes a field before it is read, and a renewal has four.
    let mut fields = [std::mem::MaybeUninit::<httparse::Header<'_>>::uninit(); MAX_HEADERS];
    let mut req = httparse::Request::new(&mut []);
    let head_len = match req.parse_with_uninit_headers(buf, &mut fields) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(Refusal::new(
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "head_too_large",
                format!("the request has more than {MAX_HEADERS} header fields"),
            ))
        }
        Err(e) => return Err(bad_request(format!("malformed HTTP/1.1 request head: {e}"))),
    };
    let version = match req.version {
        Some(0) => Version::HTTP_10,
        _ => Version::HTTP_11,
    };
    // A renewal needs none of the head beyond its framing: its handler reads only the body.
    // Every other request gets the whole head, for the router and its handlers.
    let lease = req.method == Some("POST") && req.path == Some("/v1/lease");
    let (method, uri) = if lease {
        (Method::POST, Uri::default())
    } else {
        let method = Method::from_bytes(req.method.unwrap_or_default().as_bytes())
            .map_err(|e| bad_request(format!("bad request method: {e}")))?;
        let uri: Uri = req
            .path
            .unwrap_or_default()
            .parse()
            .map_err(|e| bad_request(format!("bad request target: {e}")))?;
        (method, uri)
    };
    let mut headers = HeaderMap::new();
    let (mut length, mut close, mut keep_alive_token, mut expect_continue) =
        (None::<usize>, false, false, false);
    let mut chunked = false;
    for field in req.headers.iter() {
        // Told apart by length first: most fields are none of these four.
        let name = field.name.as_bytes();
        let is = |known: &[u8]| name.len() == known.len() && name.eq_ignore_ascii_case(known);
        let (transfer_encoding, content_length, connection, expect) = match name.len() {
            17 => (is(b"transfer-encoding"), false, false, false),
            14 => (false, is(b"content-length"), false, false),
            10 => (false, false, is(b"connection"), false),
            6 => (false, false, false, is(b"expect")),
            _ => (false, false, false, false),
        };
        if transfer_encoding {
            // Only `chunked` alone: any other coding, or `chunked` twice, is refused rather than
            // guessed at.
            if chunked || !field.value.trim_ascii().eq_ignore_ascii_case(b"chunked") {
                return Err(Refusal::new(
                    StatusCode::NOT_IMPLEMENTED,
                    "bad_http",
                    format!(
                        "unsupported Transfer-Encoding {:?}: only chunked (or Content-Length) is understood",
                        String::from_utf8_lossy(field.value)
                    ),
                ));
            }
            chunked = true;
        }
        if content_length {
            let n = std::str::from_utf8(field.value)
                .ok()
                .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|s| s.parse::<usize>().ok())
                .ok_or_else(|| {
                    bad_request(format!(
                        "bad Content-Length {:?}: expected one decimal number",
                        String::from_utf8_lossy(field.value)
                    ))
                })?;
            if length.is_some_and(|l| l != n) {
                return Err(bad_request("conflicting Content-Length headers".into()));
            }
            length = Some(n);
        }
        if connection {
            for token in field.value.split(|b| *b == b',') {
                let token = token.trim_ascii();
                close |= token.eq_ignore_ascii_case(b"close");
                keep_alive_token |= token.eq_ignore_ascii_case(b"keep-alive");
            }
        }
        if expect {
            if field
                .value
                .trim_ascii()
                .eq_ignore_ascii_case(b"100-continue")
            {
                expect_continue = true;
            } else {
                return Err(Refusal::new(
                    StatusCode::EXPECTATION_FAILED,
                    "bad_http",
                    format!(
                        "unsupported Expect {:?}: only 100-continue is understood",
                        String::from_utf8_lossy(field.value)
                    ),
                ));
            }
        }
        if !lease {
            let name = HeaderName::from_bytes(field.name.as_bytes())
                .map_err(|e| bad_request(format!("bad header name {:?}: {e}", field.name)))?;
            let value = HeaderValue::from_bytes(field.value)
                .map_err(|e| bad_request(format!("bad value of header {name}: {e}")))?;
            headers.append(name, value);
        }
    }
    if chunked && length.is_some() {
        // The request-smuggling pattern: two framings that a proxy and this server could read
        // differently.
        return Err(bad_request(
            "both Content-Length and Transfer-Encoding: send one of them".into(),
        ));
    }
    let framing = match (chunked, length) {
        (true, _) => Framing::Chunked,
        (false, n) => Framing::Length(n.unwrap_or(0)),
    };
    let keep_alive = !close && (version == Version::HTTP_11 || keep_alive_token);
    Ok(Some((
        Head {
            method,
            uri,
            version,
            headers,
            lease,
            keep_alive,
            framing,
            expect_continue,
        },
        head_len,
    )))
}
