//! HTTP/1.1 on the lease port, without hyper.
//!
//! A fleet witness keeps one mutual-TLS connection open per node, 19,800 of them for 9,900
//! two-node sites. hyper reserves a 16 KiB pair of buffers for each connection for as long as
//! it lives (8 KiB header write buffer, 8 KiB read buffer; its builder allows nothing smaller),
//! which alone was more than the whole memory goal per connection (docs/benchmarks.md). This
//! server holds nothing while a connection waits for its next request: it waits on a one-byte
//! read, takes a buffer for the request, answers it in one write and gives the buffer back.
//!
//! It accepts the subset of HTTP/1.1 the lease API needs and refuses the rest clearly:
//! - heads are parsed by `httparse` (hyper's parser), at most 16 KiB and 64 headers (431);
//! - bodies by `Content-Length` or `Transfer-Encoding: chunked` (never both: the smuggling
//!   pattern, 400; other codings 501), at most `limits.body_limit_bytes` (413);
//! - the head and body must arrive within `limits.header_timeout_ms` of the request's first
//!   byte; a connection with no request for `limits.idle_timeout_ms` is closed;
//! - keep-alive as HTTP/1.1 (1.0 only on request), pipelined requests answered in order,
//!   `Expect: 100-continue` honoured; every refusal of the connection layer is a JSON refusal
//!   like the API's, says `connection: close`, and is counted in `witness_refusals_total`.
use crate::api::Refusal;
use crate::app::{App, Peer};
use axum::body::Body;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::{header, HeaderMap, HeaderName, HeaderValue, Method, Request, StatusCode, Uri, Version};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;
use tokio::time::Instant;
use tower::ServiceExt;

/// Largest request head (request line and headers).
pub const MAX_HEAD_BYTES: usize = 16 * 1024;
/// Most header fields in one request.
pub const MAX_HEADERS: usize = 64;
/// What one read asks for; a renewal (head and body) fits in one.
const READ_CHUNK: usize = 2048;

/// Why a request could not be read; each ends the connection.
enum ReadFailure {
    /// The peer closed or reset the connection.
    Gone,
    /// The request did not arrive within `limits.header_timeout_ms` of its first byte.
    Slow,
}

/// A request read off the connection, ready for the handlers.
struct Incoming {
    request: Request<Body>,
    /// The client asked to keep the connection open after the answer.
    keep_alive: bool,
    head_only: bool,
}

/// Serves one lease-port connection until it closes, idles out, sends a request it cannot
/// finish in time, or the witness stops.
pub(super) async fn serve<I>(
    mut io: I,
    peer: Peer,
    router: axum::Router,
    app: &Arc<App>,
    mut stop: watch::Receiver<bool>,
) where
    I: AsyncRead + AsyncWrite + Unpin,
{
    let limits = &app.config.limits;
    let header_timeout = Duration::from_millis(limits.header_timeout_ms);
    let idle_timeout = Duration::from_millis(limits.idle_timeout_ms);
    // Bytes received and not yet answered; empty (and unallocated) between requests.
    let mut buf: Vec<u8> = Vec::new();
    loop {
        if buf.is_empty() {
            if *stop.borrow() {
                break;
            }
            let mut first = [0u8; 1];
            let read = tokio::select! {
                r = tokio::time::timeout(idle_timeout, io.read(&mut first)) => r,
                _ = stop.changed() => break,
            };
            match read {
                Ok(Ok(1)) => {
                    buf.reserve(READ_CHUNK);
                    buf.push(first[0]);
                }
                // Idle for limits.idle_timeout_ms, closed by the peer, or reset.
                Err(_) | Ok(Ok(_)) | Ok(Err(_)) => break,
            }
        }
        let deadline = Instant::now() + header_timeout;
        // Boxed, as the answer below: the connection's allocation holds only what waiting for
        // a request needs.
        let read = Box::pin(read_request(
            &mut io,
            &mut buf,
            deadline,
            limits.body_limit_bytes,
        ));
        let incoming = match read.await {
            Ok(Ok(incoming)) => incoming,
            Ok(Err(refusal)) => {
                app.metrics
                    .refusals
                    .with_label_values(&[refusal.reason])
                    .inc();
                if let Some(suppressed) = app.conn_log.allow() {
                    tracing::warn!(peer = %peer.addr, reason = refusal.reason, error = %refusal.message, suppressed, "request refused before it reached a handler; connection closed");
                }
                let answer = refusal.into_response();
                let _ = Box::pin(write_response(
                    &mut io,
                    answer,
                    false,
                    Persist::Close,
                    idle_timeout,
                ))
                .await;
                break;
            }
            Err(ReadFailure::Gone) => break,
            Err(ReadFailure::Slow) => {
                app.metrics
                    .refusals
                    .with_label_values(&["header_timeout"])
                    .inc();
                if let Some(suppressed) = app.conn_log.allow() {
                    tracing::warn!(peer = %peer.addr, suppressed, "request not complete within limits.header_timeout_ms of its first byte; connection closed");
                }
                break;
            }
        };
        if buf.is_empty() {
            // Nothing pipelined behind this request: hold no buffer while it is answered or
            // while the connection waits for the next one.
            buf = Vec::new();
        }
        let Incoming {
            mut request,
            keep_alive,
            head_only,
        } = incoming;
        // An HTTP/1.0 client keeps the connection only when the answer says so.
        let http10 = request.version() == Version::HTTP_10;
        // Boxed: the handlers' futures (down to the durable write) are several KiB, and a
        // future awaited here would be part of the connection's allocation for its whole life.
        let answer: futures::future::BoxFuture<'_, Response> =
            if request.method() == Method::POST && request.uri().path() == "/v1/lease" {
                let (head, body) = request.into_parts();
                drop(head);
                Box::pin(crate::api::lease_for(app, &peer, body))
            } else {
                request.extensions_mut().insert(peer.clone());
                let router = router.clone();
                Box::pin(async move {
                    match router.oneshot(request).await {
                        Ok(r) => r,
                        Err(never) => match never {},
                    }
                })
            };
        let response = answer.await;
        let close = !keep_alive || *stop.borrow() || says_close(response.headers());
        let persist = match (close, http10) {
            (true, _) => Persist::Close,
            (false, true) => Persist::KeepAlive,
            (false, false) => Persist::Default,
        };
        if Box::pin(write_response(
            &mut io,
            response,
            head_only,
            persist,
            idle_timeout,
        ))
        .await
        .is_err()
            || close
        {
            break;
        }
    }
    let _ = tokio::time::timeout(Duration::from_secs(1), io.shutdown()).await;
}

/// Reads one request: its head, then its body. `Ok(Err(_))` is a request refused as it stands
/// (the connection cannot be reused after it); `buf` keeps any bytes of a next request.
async fn read_request<I: AsyncRead + AsyncWrite + Unpin>(
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
    let Head {
        method,
        uri,
        version,
        headers,
        keep_alive,
        framing,
        expect_continue,
    } = parsed;
    let too_large = || {
        Refusal::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("request body is larger than {body_limit} bytes (limits.body_limit_bytes)"),
        )
    };
    if matches!(framing, Framing::Length(n) if n > body_limit) {
        return Ok(Err(too_large()));
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
            // The body without a copy: the buffer becomes shared bytes and the body a slice
            // of it; only bytes of a pipelined next request are copied back.
            let all = Bytes::from(std::mem::take(buf));
            if all.len() > end {
                buf.extend_from_slice(&all[end..]);
            }
            all.slice(head_len..end)
        }
        Framing::Chunked => match read_chunked(io, buf, head_len, deadline, body_limit).await? {
            Ok(body) => body,
            Err(refusal) => return Ok(Err(refusal)),
        },
    };
    let mut request = Request::new(Body::from(body));
    *request.method_mut() = method.clone();
    *request.uri_mut() = uri;
    *request.version_mut() = version;
    *request.headers_mut() = headers;
    Ok(Ok(Incoming {
        request,
        keep_alive,
        head_only: method == Method::HEAD,
    }))
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
) -> Result<Result<Bytes, Refusal>, ReadFailure> {
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
            return Ok(Err(Refusal::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                format!("request body is larger than {body_limit} bytes (limits.body_limit_bytes)"),
            )));
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
    Ok(Ok(Bytes::from(body)))
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
    buf.reserve(READ_CHUNK);
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
    let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut fields);
    let head_len = match req.parse(buf) {
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
        (Method::POST, Uri::from_static("/v1/lease"))
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
        let is = |name: &HeaderName| field.name.eq_ignore_ascii_case(name.as_str());
        if is(&header::TRANSFER_ENCODING) {
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
        if is(&header::CONTENT_LENGTH) {
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
        if is(&header::CONNECTION) {
            for token in field.value.split(|b| *b == b',') {
                let token = token.trim_ascii();
                close |= token.eq_ignore_ascii_case(b"close");
                keep_alive_token |= token.eq_ignore_ascii_case(b"keep-alive");
            }
        }
        if is(&header::EXPECT) {
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
            keep_alive,
            framing,
            expect_continue,
        },
        head_len,
    )))
}

/// The handler asked for the connection to close after this answer.
fn says_close(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .any(|v| v.as_bytes().eq_ignore_ascii_case(b"close"))
}

/// What an answer says about the connection.
#[derive(Clone, Copy, PartialEq)]
enum Persist {
    /// `connection: close`, and the connection is closed after it.
    Close,
    /// `connection: keep-alive`: an HTTP/1.0 client that asked to keep the connection.
    KeepAlive,
    /// Nothing: HTTP/1.1 keeps the connection by default.
    Default,
}

/// Writes a whole answer in one write: status line, the handler's headers, the length, the
/// date, the connection's fate when it is not the default, then the body (none for HEAD).
async fn write_response<I: AsyncWrite + Unpin>(
    io: &mut I,
    response: Response,
    head_only: bool,
    persist: Persist,
    timeout: Duration,
) -> std::io::Result<()> {
    let (parts, body) = response.into_parts();
    let body = axum::body::to_bytes(body, usize::MAX)
        .await
        .map_err(std::io::Error::other)?;
    let mut out = Vec::with_capacity(256 + if head_only { 0 } else { body.len() });
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(parts.status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(
        parts
            .status
            .canonical_reason()
            .unwrap_or("Unknown")
            .as_bytes(),
    );
    out.extend_from_slice(b"\r\n");
    for (name, value) in parts.headers.iter() {
        if name == header::CONTENT_LENGTH
            || name == header::TRANSFER_ENCODING
            || name == header::CONNECTION
            || name == header::DATE
        {
            continue;
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    let bodiless = parts.status.is_informational()
        || parts.status == StatusCode::NO_CONTENT
        || parts.status == StatusCode::NOT_MODIFIED;
    let handler_length = parts.headers.get(header::CONTENT_LENGTH);
    if head_only && handler_length.is_some() {
        // The length of the body a GET would have had, as the handler said.
        if let Some(v) = handler_length {
            out.extend_from_slice(b"content-length: ");
            out.extend_from_slice(v.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
    } else if !bodiless {
        use std::io::Write as _;
        let _ = write!(out, "content-length: {}\r\n", body.len());
    }
    out.extend_from_slice(b"date: ");
    write_http_date(&mut out);
    out.extend_from_slice(b"\r\n");
    match persist {
        Persist::Close => out.extend_from_slice(b"connection: close\r\n"),
        Persist::KeepAlive => out.extend_from_slice(b"connection: keep-alive\r\n"),
        Persist::Default => {}
    }
    out.extend_from_slice(b"\r\n");
    if !head_only && !bodiless {
        out.extend_from_slice(&body);
    }
    tokio::time::timeout(timeout, async {
        io.write_all(&out).await?;
        io.flush().await
    })
    .await
    .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "answer not taken in time"))?
}

/// Appends the `Date` header's value, formatted at most once a second per thread.
fn write_http_date(out: &mut Vec<u8>) {
    use std::cell::RefCell;
    use std::time::SystemTime;
    thread_local! {
        static CACHED: RefCell<(u64, String)> = const { RefCell::new((0, String::new())) };
    }
    let now = SystemTime::now();
    let secs = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    CACHED.with(|c| {
        let mut c = c.borrow_mut();
        if c.0 != secs || c.1.is_empty() {
            *c = (secs, httpdate::fmt_http_date(now));
        }
        out.extend_from_slice(c.1.as_bytes());
    })
}

/// What the layer made of one request, for [`replay`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A request handed to the handlers.
    Request {
        method: String,
        target: String,
        keep_alive: bool,
        head_only: bool,
        body: Vec<u8>,
    },
    /// Refused with this status and `witness_refusals_total` reason; the connection closes.
    Refused { status: u16, reason: &'static str },
    /// The bytes ended inside a request (the peer closed).
    Gone,
}

/// Feeds `pieces`, in order and as separate reads, to the request reader, as one connection
/// would, and returns what it made of them, request by request, up to the first refusal or
/// the end of the bytes. For the fuzz target and the tests: whatever the pieces' boundaries,
/// the outcomes must be the same.
pub fn replay(pieces: &[&[u8]], body_limit: usize) -> Vec<Outcome> {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => panic!("cannot start a runtime to replay a connection: {e}"),
    };
    let mut io = Pieces {
        pieces: pieces.iter().map(|p| p.to_vec()).collect(),
    };
    rt.block_on(async move {
        let mut out = Vec::new();
        let mut buf = Vec::new();
        // Far enough that a replay never times out: the pieces are all there at once.
        let deadline = Instant::now() + Duration::from_secs(3600);
        loop {
            if buf.is_empty() {
                let mut first = [0u8; 1];
                match io.read(&mut first).await {
                    Ok(1) => buf.push(first[0]),
                    _ => break,
                }
            }
            match read_request(&mut io, &mut buf, deadline, body_limit).await {
                Ok(Ok(incoming)) => {
                    let (head, body) = incoming.request.into_parts();
                    let body = axum::body::to_bytes(body, usize::MAX)
                        .await
                        .map(|b| b.to_vec())
                        .unwrap_or_default();
                    out.push(Outcome::Request {
                        method: head.method.to_string(),
                        target: head.uri.to_string(),
                        keep_alive: incoming.keep_alive,
                        head_only: incoming.head_only,
                        body,
                    });
                }
                Ok(Err(refusal)) => {
                    out.push(Outcome::Refused {
                        status: refusal.status.as_u16(),
                        reason: refusal.reason,
                    });
                    break;
                }
                Err(_) => {
                    out.push(Outcome::Gone);
                    break;
                }
            }
        }
        out
    })
}

/// A connection whose reads return the given pieces one by one, then end; writes are taken
/// and dropped (the `100 Continue`).
struct Pieces {
    pieces: std::collections::VecDeque<Vec<u8>>,
}

impl AsyncRead for Pieces {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        while let Some(front) = self.pieces.front_mut() {
            if front.is_empty() {
                self.pieces.pop_front();
                continue;
            }
            let n = front.len().min(buf.remaining());
            buf.put_slice(&front[..n]);
            front.drain(..n);
            break;
        }
        std::task::Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Pieces {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::task::Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMIT: usize = 1024;

    fn renewal(body: &str, extra: &str) -> Vec<u8> {
        format!(
            "POST /v1/lease HTTP/1.1\r\nHost: w\r\nContent-Length: {}\r\n{extra}\r\n{body}",
            body.len()
        )
        .into_bytes()
    }

    /// Every way of cutting `bytes` in two and in three gives the outcomes of the whole.
    fn same_whatever_the_cuts(bytes: &[u8]) -> Vec<Outcome> {
        let whole = replay(&[bytes], LIMIT);
        let step = (bytes.len() / 40).max(1);
        for i in (0..=bytes.len()).step_by(step) {
            let (a, b) = bytes.split_at(i);
            assert_eq!(
                replay(&[a, b], LIMIT),
                whole,
                "cut at {i} of {:?}",
                String::from_utf8_lossy(bytes)
            );
            for j in (i..=bytes.len()).step_by(step * 3) {
                let (b1, b2) = b.split_at(j - i);
                assert_eq!(replay(&[a, b1, b2], LIMIT), whole, "cuts at {i}, {j}");
            }
        }
        whole
    }

    #[test]
    fn requests_are_read_the_same_whatever_the_reads_boundaries() {
        let two = [
            renewal("{\"a\":1}", ""),
            renewal("{}", "Connection: close\r\n"),
        ]
        .concat();
        let out = same_whatever_the_cuts(&two);
        assert_eq!(out.len(), 2, "{out:?}");
        assert!(
            matches!(&out[0], Outcome::Request { body, keep_alive: true, .. } if body == b"{\"a\":1}"),
            "{out:?}"
        );
        assert!(
            matches!(&out[1], Outcome::Request { body, keep_alive: false, .. } if body == b"{}"),
            "{out:?}"
        );

        let cont = renewal("{\"x\":2}", "Expect: 100-continue\r\n");
        assert!(
            matches!(&same_whatever_the_cuts(&cont)[0], Outcome::Request { body, .. } if body == b"{\"x\":2}")
        );

        let old =
            b"GET /v1/jwks?x=1 HTTP/1.0\r\nConnection: keep-alive\r\n\r\nHEAD / HTTP/1.0\r\n\r\n";
        let out = same_whatever_the_cuts(old);
        assert!(
            matches!(&out[0], Outcome::Request { target, keep_alive: true, .. } if target == "/v1/jwks?x=1"),
            "{out:?}"
        );
        assert!(
            matches!(
                &out[1],
                Outcome::Request {
                    keep_alive: false,
                    head_only: true,
                    ..
                }
            ),
            "{out:?}"
        );

        // Chunked: extensions and trailers read and dropped, the data joined.
        let chunked = b"POST /v1/lease HTTP/1.1\r\nTransfer-Encoding: Chunked\r\n\r\n3;ext=1\r\n{\"a\r\n4 \r\n\":1}\r\n0\r\nX-Trailer: t\r\n\r\nGET / HTTP/1.1\r\n\r\n";
        let out = same_whatever_the_cuts(chunked);
        assert!(
            matches!(&out[0], Outcome::Request { body, .. } if body == b"{\"a\":1}"),
            "{out:?}"
        );
        assert!(
            matches!(&out[1], Outcome::Request { method, .. } if method == "GET"),
            "{out:?}"
        );
        let cut = b"POST /v1/lease HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n";
        assert_eq!(same_whatever_the_cuts(cut), vec![Outcome::Gone]);

        // A truncated body is the peer going away, never a request.
        let cut = renewal("{\"abc\":1}", "");
        assert_eq!(
            same_whatever_the_cuts(&cut[..cut.len() - 2]),
            vec![Outcome::Gone]
        );
    }

    #[test]
    fn framing_that_could_be_read_two_ways_is_refused() {
        let refused = |bytes: &[u8]| match same_whatever_the_cuts(bytes).last() {
            Some(Outcome::Refused { status, reason }) => (*status, *reason),
            other => panic!(
                "not refused: {other:?} for {:?}",
                String::from_utf8_lossy(bytes)
            ),
        };
        assert_eq!(refused(b"POST /v1/lease HTTP/1.1\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"), (400, "bad_http"));
        assert_eq!(refused(b"POST /v1/lease HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"), (501, "bad_http"));
        assert_eq!(
            refused(
                b"POST /v1/lease HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n"
            ),
            (501, "bad_http")
        );
        let chunked = |body: &str| {
            format!("POST /v1/lease HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n{body}")
        };
        assert_eq!(refused(chunked("x\r\n").as_bytes()), (400, "bad_http"));
        assert_eq!(
            refused(chunked("+2\r\nab\r\n0\r\n\r\n").as_bytes()),
            (400, "bad_http")
        );
        assert_eq!(
            refused(chunked("2\r\nabc\r\n0\r\n\r\n").as_bytes()),
            (400, "bad_http")
        );
        assert_eq!(
            refused(chunked("2;a\nb\r\nab\r\n0\r\n\r\n").as_bytes()),
            (400, "bad_http")
        );
        assert_eq!(
            refused(chunked("fffffffffffffffff\r\n").as_bytes()),
            (400, "bad_http")
        );
        assert_eq!(
            refused(chunked("ffffffffffffffff\r\n").as_bytes()),
            (413, "body_too_large")
        );
        assert_eq!(
            refused(chunked(&format!("200\r\n{}\r\n201\r\n", "a".repeat(512))).as_bytes()),
            (413, "body_too_large")
        );
        assert_eq!(
            refused(chunked(&"1;e\r\na\r\n".repeat(800)).as_bytes()),
            (400, "bad_http")
        );
        assert_eq!(
            refused(b"POST /v1/lease HTTP/1.1\r\nTransfer-Encoding: identity\r\n\r\n"),
            (501, "bad_http")
        );
        assert_eq!(
            refused(
                b"POST /v1/lease HTTP/1.1\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nabc"
            ),
            (400, "bad_http")
        );
        assert_eq!(
            refused(b"POST /v1/lease HTTP/1.1\r\nContent-Length: 2, 2\r\n\r\nab"),
            (400, "bad_http")
        );
        assert_eq!(
            refused(b"POST /v1/lease HTTP/1.1\r\nContent-Length: -1\r\n\r\n"),
            (400, "bad_http")
        );
        assert_eq!(
            refused(b"POST /v1/lease HTTP/1.1\r\nContent-Length: 99999999999999999999999\r\n\r\n"),
            (400, "bad_http")
        );
        assert_eq!(
            refused(b"POST /v1/lease HTTP/1.1\r\nContent-Length: 1025\r\n\r\n"),
            (413, "body_too_large")
        );
        assert_eq!(
            refused(b"POST /v1/lease HTTP/1.1\r\nContent Length: 2\r\n\r\nab"),
            (400, "bad_http")
        );
        assert_eq!(
            refused(b"POST /v1/lease HTTP/1.1\r\n Content-Length: 2\r\n\r\nab"),
            (400, "bad_http")
        );
        assert_eq!(
            refused(b"POST /v1/lease HTTP/2.0\r\n\r\n"),
            (400, "bad_http")
        );
        assert_eq!(refused(b"GET /\x01 HTTP/1.1\r\n\r\n"), (400, "bad_http"));
        let big = format!(
            "GET / HTTP/1.1\r\nX: {}\r\n\r\n",
            "y".repeat(MAX_HEAD_BYTES)
        );
        assert_eq!(refused(big.as_bytes()), (431, "head_too_large"));
        // A refusal ends the connection: nothing after it is read as a request.
        let after = [
            &b"POST /v1/lease HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"[..],
            &renewal("{}", ""),
        ]
        .concat();
        assert_eq!(replay(&[&after], LIMIT).len(), 1);
    }
}
