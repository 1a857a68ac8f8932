//! HTTP/1.1 on the lease port, without hyper.
//!
//! A fleet witness keeps one mutual-TLS connection open per node, 19,800 of them for 9,900
//! two-node sites. hyper reserves a 16 KiB pair of buffers for each connection for as long as
//! it lives (8 KiB header write buffer, 8 KiB read buffer; its builder allows nothing smaller),
//! which alone was more than the whole memory goal per connection (docs/benchmarks.md). This
//! server holds nothing while a connection waits for its next request: it reads into the stack,
//! takes a buffer for the request once bytes come, answers it in one write and gives the buffer
//! back. A renewal's answer is written straight from the handler's JSON, with no response value
//! around it.
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
use http::{header, HeaderMap, StatusCode};
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
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

use read::{read_request, take_whole, Asked, Incoming, ReadFailure};
pub use replay::{replay, Outcome};

/// Serves one lease-port connection until it closes, idles out, sends a request it cannot
/// finish in time, or the witness stops.
pub(super) async fn serve<I>(
    mut io: I,
    peer: Peer,
    router: axum::Router,
    app: &Arc<App>,
    stop: watch::Receiver<bool>,
) where
    I: AsyncRead + AsyncWrite + Unpin,
{
    let idle_timeout = Duration::from_millis(app.config.limits.idle_timeout_ms);
    // One timer and one wait for the stop signal for the connection's whole life, both
    // registered once: setting up and tearing down a timeout and a watch waiter for every
    // request cost as much as parsing it. The timer is moved only when it fires early.
    let idle = tokio::time::sleep(idle_timeout);
    tokio::pin!(idle);
    let mut idle_from = Instant::now();
    let stopped = stopped(stop.clone());
    tokio::pin!(stopped);
    // Bytes received and not yet answered; empty (and unallocated) between requests.
    let mut buf: Vec<u8> = Vec::new();
    'connection: loop {
        while buf.is_empty() {
            tokio::select! {
                biased;
                () = &mut stopped => break 'connection,
                first = first_bytes(&mut io) => match first {
                    Some(first) => buf = first,
                    // Closed by the peer, or reset.
                    None => break 'connection,
                },
                () = &mut idle => {
                    let due = idle_from + idle_timeout;
                    if Instant::now() >= due {
                        // Idle for limits.idle_timeout_ms.
                        break 'connection;
                    }
                    idle.as_mut().reset(due);
                }
            }
        }
        // Boxed: this future lives as long as the connection, and a request in progress
        // (its reading, its turn, the handler down to the durable write, the answer) needs
        // more than a kilobyte that a waiting connection does not.
        let next = Box::pin(exchange(&mut io, &mut buf, &peer, &router, app, &stop)).await;
        if next == Next::Close {
            break;
        }
        idle_from = Instant::now();
    }
    let _ = tokio::time::timeout(Duration::from_secs(1), io.shutdown()).await;
}

/// Completes once the witness stops (the stop signal is set or its sender is gone).
async fn stopped(mut stop: watch::Receiver<bool>) {
    while !*stop.borrow_and_update() {
        if stop.changed().await.is_err() {
            return;
        }
    }
}

/// Waits for the next request's first bytes and returns what one read brought (a whole
/// renewal, as a rule) in a buffer taken for it; `None` when the peer closed or failed. The
/// read goes to the stack, so a waiting connection holds no buffer, and a renewal is read
/// whole in one go rather than one byte first.
async fn first_bytes<I: AsyncRead + Unpin>(io: &mut I) -> Option<Vec<u8>> {
    std::future::poll_fn(|cx| {
        let mut stack = [std::mem::MaybeUninit::<u8>::uninit(); READ_CHUNK];
        let mut read = ReadBuf::uninit(&mut stack);
        match std::pin::Pin::new(&mut *io).poll_read(cx, &mut read) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Err(_)) => Poll::Ready(None),
            Poll::Ready(Ok(())) if read.filled().is_empty() => Poll::Ready(None),
            Poll::Ready(Ok(())) => {
                let mut buf = Vec::with_capacity(READ_CHUNK);
                buf.extend_from_slice(read.filled());
                Poll::Ready(Some(buf))
            }
        }
    })
    .await
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
    // A request already whole in `buf` is taken as it is; the reader (boxed, it is large) only
    // for one that needs more reads.
    let read = match take_whole(buf, limits.body_limit_bytes) {
        Some(taken) => Ok(taken),
        None => Box::pin(read_request(io, buf, deadline, limits.body_limit_bytes)).await,
    };
    let incoming = match read {
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
        asked,
        http10,
        keep_alive,
        head_only,
    } = incoming;
    let answer = match asked {
        Asked::Lease(body) => match Box::pin(crate::api::lease_json(app, peer, &body)).await {
            Ok(json) => Answer::Json(json),
            Err(refused) => Answer::Response(refused),
        },
        Asked::Other(mut request) => {
            request.extensions_mut().insert(peer.clone());
            match Box::pin(router.clone().oneshot(*request)).await {
                Ok(r) => Answer::Response(r),
                Err(never) => match never {},
            }
        }
    };
    // The answer is written outside the turn: a client that does not read its answers must not
    // hold a turn for as long as the write may wait.
    drop(turn);
    let close = !keep_alive
        || *stop.borrow()
        || matches!(&answer, Answer::Response(r) if says_close(r.headers()));
    let persist = match (close, http10) {
        (true, _) => Persist::Close,
        (false, true) => Persist::KeepAlive,
        (false, false) => Persist::Default,
    };
    // A renewal's answer is encoded here and written without a box; a handler's response may
    // have a body to collect first (boxed: that takes more state).
    let written = match answer {
        Answer::Json(json) => {
            let out = encode(
                StatusCode::OK,
                &[("content-type", b"application/json")],
                None,
                &json,
                head_only,
                persist,
            );
            drop(json);
            send(io, &out, idle_timeout).await
        }
        Answer::Response(response) => {
            Box::pin(write_response(
                io,
                response,
                head_only,
                persist,
                idle_timeout,
            ))
            .await
        }
    };
    if written.is_err() || close {
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

/// An answer to write.
enum Answer {
    /// A 200 with this JSON body: a lease reply, written without a response value around it.
    Json(Vec<u8>),
    /// Whatever a handler answered.
    Response(Response),
}

/// Writes a handler's whole response in one write: status line, the handler's headers, the
/// length, the date, the connection's fate when it is not the default, then the body (none
/// for HEAD).
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
    // The framing and the connection's fate are this layer's to say.
    let fields: Vec<(&str, &[u8])> = parts
        .headers
        .iter()
        .filter(|(name, _)| {
            ![
                header::CONTENT_LENGTH,
                header::TRANSFER_ENCODING,
                header::CONNECTION,
                header::DATE,
            ]
            .contains(name)
        })
        .map(|(name, value)| (name.as_str(), value.as_bytes()))
        .collect();
    let handler_length = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .map(|v| v.as_bytes());
    let out = encode(
        parts.status,
        &fields,
        handler_length,
        &body,
        head_only,
        persist,
    );
    send(io, &out, timeout).await
}

/// Writes `out` whole, within `timeout`.
async fn send<I: AsyncWrite + Unpin>(
    io: &mut I,
    out: &[u8],
    timeout: Duration,
) -> std::io::Result<()> {
    let mut write = std::pin::pin!(async {
        io.write_all(out).await?;
        io.flush().await
    });
    // Tried once before a timer is set: the socket takes a renewal's answer at once unless the
    // client stopped reading.
    match std::future::poll_fn(|cx| Poll::Ready(std::future::Future::poll(write.as_mut(), cx)))
        .await
    {
        Poll::Ready(written) => written,
        // Boxed: only a client that does not read its answers needs the timer.
        Poll::Pending => Box::pin(tokio::time::timeout(timeout, write))
            .await
            .map_err(|_| {
                std::io::Error::new(std::io::ErrorKind::TimedOut, "answer not taken in time")
            })?,
    }
}

/// An answer's bytes: the status line, `fields`, the length (for HEAD, `handler_length`, the
/// length of the body a GET would have had), the date, the connection's fate when it is not
/// the default, then the body (none for HEAD).
fn encode(
    status: StatusCode,
    fields: &[(&str, &[u8])],
    handler_length: Option<&[u8]>,
    body: &[u8],
    head_only: bool,
    persist: Persist,
) -> Vec<u8> {
    // Sized once: the status line, date, length and connection lines fit in 128 bytes.
    let fields_len: usize = fields
        .iter()
        .map(|(name, value)| name.len() + value.len() + 4)
        .sum();
    let mut out = Vec::with_capacity(128 + fields_len + if head_only { 0 } else { body.len() });
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("Unknown").as_bytes());
    out.extend_from_slice(b"\r\n");
    for (name, value) in fields {
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value);
        out.extend_from_slice(b"\r\n");
    }
    let bodiless = status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    match handler_length {
        Some(length) if head_only => {
            out.extend_from_slice(b"content-length: ");
            out.extend_from_slice(length);
            out.extend_from_slice(b"\r\n");
        }
        _ if !bodiless => {
            out.extend_from_slice(b"content-length: ");
            write_decimal(&mut out, body.len());
            out.extend_from_slice(b"\r\n");
        }
        _ => {}
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
        out.extend_from_slice(body);
    }
    out
}

/// Appends `n` in decimal.
fn write_decimal(out: &mut Vec<u8>, n: usize) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    let mut rest = n;
    loop {
        at -= 1;
        digits[at] = b'0' + (rest % 10) as u8;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
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
