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
//!
//! `read` reads and checks requests; `replay` runs the reader over given bytes (tests, fuzz).
use crate::app::{App, Peer};
use axum::response::{IntoResponse, Response};
use http::{header, HeaderMap, Method, StatusCode, Version};
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
/// The most requests answered at once (from the parsed request to the reply, not its writing);
/// the others wait for a turn, each holding only its parsed request. Answering is CPU and one
/// batched disk write, so more at once would not be faster; but after a witness restart all of
/// a fleet's nodes send their first request at the same moment, each waiting for its cluster's
/// first durable write, and every answer in progress holds the handler's state (1.4 KiB) and
/// what the write and the reply allocate.
pub const MAX_ANSWERING: usize = 512;

mod read;
mod replay;
#[cfg(test)]
mod tests;

use read::{read_request, Incoming, ReadFailure};
pub use replay::{replay, Outcome};

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
    let idle_timeout = Duration::from_millis(app.config.limits.idle_timeout_ms);
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
        // Boxed: this future lives as long as the connection, and a request in progress
        // (its reading, its turn, the handler down to the durable write, the answer) needs
        // more than a kilobyte that a waiting connection does not.
        let next = Box::pin(exchange(&mut io, &mut buf, &peer, &router, app, &stop)).await;
        if next == Next::Close {
            break;
        }
    }
    let _ = tokio::time::timeout(Duration::from_secs(1), io.shutdown()).await;
}

/// What the connection does after an exchange.
#[derive(PartialEq)]
enum Next {
    Wait,
    Close,
}

/// Reads one request (begun in `buf`), answers it and writes the answer.
async fn exchange<I>(
    io: &mut I,
    buf: &mut Vec<u8>,
    peer: &Peer,
    router: &axum::Router,
    app: &Arc<App>,
    stop: &watch::Receiver<bool>,
) -> Next
where
    I: AsyncRead + AsyncWrite + Unpin,
{
    let limits = &app.config.limits;
    let header_timeout = Duration::from_millis(limits.header_timeout_ms);
    let idle_timeout = Duration::from_millis(limits.idle_timeout_ms);
    let deadline = Instant::now() + header_timeout;
    // Each phase boxed in turn: this future is allocated whole while the request waits for its
    // turn, so it holds only what is common to the phases.
    let incoming = match Box::pin(read_request(io, buf, deadline, limits.body_limit_bytes)).await {
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
                io,
                answer,
                false,
                Persist::Close,
                idle_timeout,
            ))
            .await;
            return Next::Close;
        }
        Err(ReadFailure::Gone) => return Next::Close,
        Err(ReadFailure::Slow) => {
            app.metrics
                .refusals
                .with_label_values(&["header_timeout"])
                .inc();
            if let Some(suppressed) = app.conn_log.allow() {
                tracing::warn!(peer = %peer.addr, suppressed, "request not complete within limits.header_timeout_ms of its first byte; connection closed");
            }
            return Next::Close;
        }
    };
    if buf.is_empty() {
        // Nothing pipelined behind this request: hold no buffer while it is answered or
        // while the connection waits for the next one.
        *buf = Vec::new();
    }
    let Ok(turn) = app.answering.acquire().await else {
        return Next::Close;
    };
    let Incoming {
        mut request,
        keep_alive,
        head_only,
    } = incoming;
    // An HTTP/1.0 client keeps the connection only when the answer says so.
    let http10 = request.version() == Version::HTTP_10;
    let response = if request.method() == Method::POST && request.uri().path() == "/v1/lease" {
        let (head, body) = request.into_parts();
        drop(head);
        Box::pin(crate::api::lease_for(app, peer, body)).await
    } else {
        request.extensions_mut().insert(peer.clone());
        match Box::pin(router.clone().oneshot(request)).await {
            Ok(r) => r,
            Err(never) => match never {},
        }
    };
    // The answer is written outside the turn: a client that does not read its answers must not
    // hold a turn for as long as the write may wait.
    drop(turn);
    let close = !keep_alive || *stop.borrow() || says_close(response.headers());
    let persist = match (close, http10) {
        (true, _) => Persist::Close,
        (false, true) => Persist::KeepAlive,
        (false, false) => Persist::Default,
    };
    if Box::pin(write_response(
        io,
        response,
        head_only,
        persist,
        idle_timeout,
    ))
    .await
    .is_err()
        || close
    {
        return Next::Close;
    }
    Next::Wait
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
    // Sized once: the status line, date, length and connection lines fit in 128 bytes.
    let fields: usize = parts
        .headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum();
    let mut out = Vec::with_capacity(128 + fields + if head_only { 0 } else { body.len() });
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
