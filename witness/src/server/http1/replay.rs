//! The request reader run over given bytes, cut into given reads: what the property tests and
//! the `lease_port_http` fuzz target check.
use super::read::{read_request, take_whole, Asked};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio::time::Instant;

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
            // As a connection does: a request already whole is taken at once, the reader reads
            // the rest of one that is not.
            let read = match take_whole(&mut buf, body_limit) {
                Some(taken) => Ok(taken),
                None => read_request(&mut io, &mut buf, deadline, body_limit).await,
            };
            match read {
                Ok(Ok(incoming)) => {
                    let (method, target, body) = match incoming.asked {
                        Asked::Lease(body) => ("POST".to_string(), "/v1/lease".to_string(), body),
                        Asked::Other(request) => {
                            let (head, body) = (*request).into_parts();
                            let body = axum::body::to_bytes(body, usize::MAX)
                                .await
                                .map(|b| b.to_vec())
                                .unwrap_or_default();
                            (head.method.to_string(), head.uri.to_string(), body)
                        }
                    };
                    out.push(Outcome::Request {
                        method,
                        target,
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
