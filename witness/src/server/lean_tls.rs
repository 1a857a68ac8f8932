//! The lease port's TLS stream: rustls's unbuffered connection over the TCP socket, holding no
//! buffer while the connection waits for its next request.
//!
//! tokio-rustls drives rustls's buffered connection, whose record buffer (4 KiB, allocated on the
//! first read and never shrunk) and plaintext queues stay allocated for the connection's whole
//! life: at 19,800 idle agent connections that buffer was the largest item of the witness's heap
//! (docs/benchmarks.md). Here records are read into a buffer on the stack and decrypted there;
//! the heap holds only what the HTTP layer has not yet taken, the rest of a record split across
//! reads, and an answer the socket has not yet taken, each freed as soon as it is used up.
use rustls::server::{ServerConnectionData, UnbufferedServerConnection};
use rustls::unbuffered::{
    ConnectionState, EncodeError, EncryptError, UnbufferedStatus, WriteTraffic,
};
use rustls::ServerConfig;
use rustls_pki_types::CertificateDer;
use std::future::poll_fn;
use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// The largest TLS record on the wire (16 KiB of plaintext, the AEAD's expansion, the header):
/// one read this large can always hold a whole record.
const MAX_RECORD: usize = 16 * 1024 + 256 + 5;
/// The most received bytes held before they form a record, or a handshake message split across
/// records (kept until whole). A valid peer never gets near it: a client's certificate flight is
/// a few KiB.
const MAX_HELD: usize = 64 * 1024;
/// The most plaintext taken into one write: answers on the lease port are a few hundred bytes.
const MAX_WRITE: usize = 64 * 1024;
/// Bounds the walks through rustls's states (each step consumes a record or emits one).
const MAX_STEPS: usize = 1024;

/// A server-side TLS 1.3 connection on one TCP socket.
pub(super) struct LeanTls {
    tcp: TcpStream,
    conn: UnbufferedServerConnection,
    /// Received bytes that do not yet form a whole record; unallocated when empty.
    incoming: Vec<u8>,
    /// Decrypted bytes the HTTP layer has not read yet, from `plain_read` on.
    plaintext: Vec<u8>,
    plain_read: usize,
    /// Records to send, from `out_sent` on.
    outgoing: Vec<u8>,
    out_sent: usize,
    /// The peer sent close_notify or closed its side: reads see the end of the stream.
    read_closed: bool,
    /// A fatal alert was queued (after a TLS error): no close_notify follows it.
    failed: bool,
    sent_close_notify: bool,
}

fn tls_error(e: rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

/// Performs the handshake of a new connection: reads the client's flights, answers them, and
/// returns once the connection carries application data (any the client sent along with its
/// last flight is kept for the first read).
pub(super) async fn accept(tcp: TcpStream, config: Arc<ServerConfig>) -> io::Result<LeanTls> {
    let conn = UnbufferedServerConnection::new(config).map_err(tls_error)?;
    let mut tls = LeanTls {
        tcp,
        conn,
        incoming: Vec::new(),
        plaintext: Vec::new(),
        plain_read: 0,
        outgoing: Vec::new(),
        out_sent: 0,
        read_closed: false,
        failed: false,
        sent_close_notify: false,
    };
    let shaken = tls.handshake().await;
    // Our last flight, or the alert that ends a failed handshake, goes out either way.
    let sent = poll_fn(|cx| tls.poll_send(cx)).await;
    shaken?;
    sent?;
    Ok(tls)
}

/// Appends to `out` what `write` puts into a buffer of `need` bytes, retrying once with the
/// size it says it requires.
fn append(
    out: &mut Vec<u8>,
    mut need: usize,
    mut write: impl FnMut(&mut [u8]) -> Result<usize, Option<usize>>,
) -> io::Result<()> {
    for _ in 0..2 {
        let start = out.len();
        out.resize(start + need, 0);
        match write(&mut out[start..]) {
            Ok(n) => {
                out.truncate(start + n);
                return Ok(());
            }
            Err(Some(required)) if required > need => {
                out.truncate(start);
                need = required;
            }
            Err(_) => {
                out.truncate(start);
                break;
            }
        }
    }
    Err(io::Error::other("rustls refused to encode a TLS record"))
}

fn encode_size(e: EncodeError) -> Option<usize> {
    match e {
        EncodeError::InsufficientSize(s) => Some(s.required_size),
        _ => None,
    }
}

fn encrypt_size(e: EncryptError) -> Option<usize> {
    match e {
        EncryptError::InsufficientSize(s) => Some(s.required_size),
        _ => None,
    }
}

impl LeanTls {
    async fn handshake(&mut self) -> io::Result<()> {
        loop {
            self.process_held(None)?;
            poll_fn(|cx| self.poll_send(cx)).await?;
            if !self.conn.is_handshaking() {
                return Ok(());
            }
            if self.read_closed {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the client closed the connection during the TLS handshake",
                ));
            }
            poll_fn(|cx| self.poll_receive(cx, None)).await?;
        }
    }

    /// The certificates the client presented, its own first.
    pub(super) fn peer_certificates(&self) -> Option<&[CertificateDer<'static>]> {
        self.conn.peer_certificates()
    }

    /// Runs rustls over `data`, received and not yet processed: decrypted bytes go to `reader`
    /// as far as it has room (the HTTP layer's buffer: a renewal is copied once, not held here
    /// first), the rest to `plaintext`; records to send go to `outgoing`. Returns how many bytes
    /// were used; the rest is the beginning of a record.
    fn process(
        &mut self,
        data: &mut [u8],
        mut reader: Option<&mut ReadBuf<'_>>,
    ) -> io::Result<usize> {
        let mut used = 0;
        for _ in 0..MAX_STEPS {
            let UnbufferedStatus { mut discard, state } =
                self.conn.process_tls_records(&mut data[used..]);
            let mut settled = false;
            match state {
                Ok(ConnectionState::ReadTraffic(mut records)) => {
                    while let Some(record) = records.next_record() {
                        let record = record.map_err(tls_error)?;
                        discard += record.discard;
                        let mut payload = record.payload;
                        if let Some(reader) = reader.as_mut().filter(|_| self.plaintext.is_empty())
                        {
                            let n = reader.remaining().min(payload.len());
                            reader.put_slice(&payload[..n]);
                            payload = &payload[n..];
                        }
                        self.plaintext.extend_from_slice(payload);
                    }
                }
                Ok(ConnectionState::EncodeTlsData(mut record)) => {
                    append(&mut self.outgoing, 512, |b| {
                        record.encode(b).map_err(encode_size)
                    })?;
                }
                // The encoded records are in `outgoing`; they are sent by `poll_send`.
                Ok(ConnectionState::TransmitTlsData(records)) => records.done(),
                Ok(ConnectionState::WriteTraffic(_)) | Ok(ConnectionState::BlockedHandshake) => {
                    settled = true;
                }
                Ok(ConnectionState::PeerClosed) | Ok(ConnectionState::Closed) => {
                    self.read_closed = true;
                    settled = true;
                }
                Ok(other) => {
                    // Early data is never enabled on the lease port.
                    return Err(io::Error::other(format!("unexpected TLS state {other:?}")));
                }
                Err(e) => return Err(self.fail(e, &mut data[used + discard..])),
            }
            used += discard;
            if settled {
                return Ok(used);
            }
        }
        Err(io::Error::other("TLS records kept coming without end"))
    }

    /// Queues the alert rustls prepared for a fatal error, to be sent before the connection
    /// closes, and returns the error. `rest` is the received data not yet discarded: rustls may
    /// look at it again (its handshake reassembly points into it), so it is never a stand-in.
    /// Nothing calls rustls for this connection afterwards.
    fn fail(&mut self, e: rustls::Error, rest: &mut [u8]) -> io::Error {
        self.failed = true;
        // rustls hands out what it queued (the alert) before it reads anything more; once the
        // queue is empty it would read `rest` again and fail again, so the walk stops there.
        for _ in 0..MAX_STEPS {
            if !self.conn.wants_write() {
                break;
            }
            match self.conn.process_tls_records(rest).state {
                Ok(ConnectionState::EncodeTlsData(mut record)) => {
                    if append(&mut self.outgoing, 64, |b| {
                        record.encode(b).map_err(encode_size)
                    })
                    .is_err()
                    {
                        break;
                    }
                }
                // Records decrypted before the failure: the connection ends unread.
                Ok(ConnectionState::ReadTraffic(mut records)) => {
                    while records.next_record().is_some() {}
                }
                _ => break,
            }
        }
        tls_error(e)
    }

    /// Processes the bytes held from earlier reads (the handshake's flights, a split record).
    fn process_held(&mut self, reader: Option<&mut ReadBuf<'_>>) -> io::Result<()> {
        let mut held = std::mem::take(&mut self.incoming);
        let used = self.process(&mut held, reader)?;
        held.drain(..used);
        if !held.is_empty() {
            self.incoming = held;
        }
        Ok(())
    }

    /// Reads once from the socket and processes what came, keeping the rest of a split record;
    /// decrypted bytes go to `reader` first (see [`Self::process`]).
    fn poll_receive(
        &mut self,
        cx: &mut Context<'_>,
        reader: Option<&mut ReadBuf<'_>>,
    ) -> Poll<io::Result<()>> {
        let mut chunk = [MaybeUninit::<u8>::uninit(); MAX_RECORD];
        let mut read = ReadBuf::uninit(&mut chunk);
        ready!(Pin::new(&mut self.tcp).poll_read(cx, &mut read))?;
        let fresh = read.filled_mut();
        if fresh.is_empty() {
            self.read_closed = true;
            return Poll::Ready(Ok(()));
        }
        if self.incoming.is_empty() {
            let used = self.process(fresh, reader)?;
            if used < fresh.len() {
                self.incoming.extend_from_slice(&fresh[used..]);
            }
        } else {
            if self.incoming.len() + fresh.len() > MAX_HELD {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "more than 64 KiB received without a complete TLS record or handshake message",
                )));
            }
            self.incoming.extend_from_slice(fresh);
            self.process_held(reader)?;
        }
        Poll::Ready(Ok(()))
    }

    /// Writes `outgoing` to the socket; frees it once all of it is taken.
    fn poll_send(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.out_sent < self.outgoing.len() {
            let n =
                ready!(Pin::new(&mut self.tcp).poll_write(cx, &self.outgoing[self.out_sent..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.out_sent += n;
        }
        if self.outgoing.capacity() > 0 {
            self.outgoing = Vec::new();
            self.out_sent = 0;
        }
        Poll::Ready(Ok(()))
    }

    /// Walks rustls's states until it may send application data, then lets `write` encode
    /// into `outgoing`. The bytes held from earlier reads are passed along (never an empty
    /// stand-in: rustls's handshake reassembly may point into them) and what it discards of
    /// them is dropped.
    fn send_traffic(
        &mut self,
        write: impl FnOnce(&mut WriteTraffic<'_, ServerConnectionData>, &mut Vec<u8>) -> io::Result<()>,
    ) -> io::Result<()> {
        if self.failed {
            return Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "the TLS connection failed and cannot send",
            ));
        }
        let mut held = std::mem::take(&mut self.incoming);
        let sent = self.send_traffic_over(&mut held, write);
        if !held.is_empty() {
            self.incoming = held;
        }
        sent
    }

    fn send_traffic_over(
        &mut self,
        held: &mut Vec<u8>,
        write: impl FnOnce(&mut WriteTraffic<'_, ServerConnectionData>, &mut Vec<u8>) -> io::Result<()>,
    ) -> io::Result<()> {
        let mut write = Some(write);
        for _ in 0..MAX_STEPS {
            let UnbufferedStatus { mut discard, state } = self.conn.process_tls_records(held);
            match state {
                Ok(ConnectionState::WriteTraffic(mut traffic)) => {
                    return match write.take() {
                        Some(write) => write(&mut traffic, &mut self.outgoing),
                        None => Ok(()),
                    };
                }
                Ok(ConnectionState::EncodeTlsData(mut record)) => {
                    append(&mut self.outgoing, 512, |b| {
                        record.encode(b).map_err(encode_size)
                    })?;
                }
                Ok(ConnectionState::TransmitTlsData(records)) => records.done(),
                Ok(ConnectionState::ReadTraffic(mut records)) => {
                    while let Some(record) = records.next_record() {
                        let record = record.map_err(tls_error)?;
                        discard += record.discard;
                        self.plaintext.extend_from_slice(record.payload);
                    }
                }
                Ok(ConnectionState::PeerClosed) => self.read_closed = true,
                Ok(other) => {
                    return Err(io::Error::new(
                        io::ErrorKind::BrokenPipe,
                        format!("the TLS connection cannot send ({other:?})"),
                    ));
                }
                Err(e) => {
                    let e = self.fail(e, &mut held[discard..]);
                    return Err(e);
                }
            }
            held.drain(..discard);
        }
        Err(io::Error::other(
            "the TLS connection did not become writable",
        ))
    }

    /// Encrypts `data` into `outgoing` as application data records.
    fn encrypt(&mut self, data: &[u8]) -> io::Result<()> {
        self.send_traffic(|traffic, outgoing| {
            let records = data.len() / (16 * 1024) + 1;
            append(outgoing, data.len() + records * 32, |b| {
                traffic.encrypt(data, b).map_err(encrypt_size)
            })
        })
    }
}

impl AsyncRead for LeanTls {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if this.plain_read < this.plaintext.len() {
                let n = buf.remaining().min(this.plaintext.len() - this.plain_read);
                buf.put_slice(&this.plaintext[this.plain_read..this.plain_read + n]);
                this.plain_read += n;
                if this.plain_read == this.plaintext.len() {
                    this.plaintext = Vec::new();
                    this.plain_read = 0;
                }
                return Poll::Ready(Ok(()));
            }
            if this.read_closed {
                return Poll::Ready(Ok(()));
            }
            if this.failed {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "the TLS connection failed",
                )));
            }
            let before = buf.filled().len();
            ready!(this.poll_receive(cx, Some(buf)))?;
            if buf.filled().len() > before {
                return Poll::Ready(Ok(()));
            }
            // Records rustls answers by itself (a key update) go out now if the socket takes them,
            // else with the next write.
            if this.out_sent < this.outgoing.len() {
                let _ = this.poll_send(cx)?;
            }
        }
    }
}

impl AsyncWrite for LeanTls {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        // One answer waits for the socket at most.
        ready!(this.poll_send(cx))?;
        if data.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let n = data.len().min(MAX_WRITE);
        this.encrypt(&data[..n])?;
        // What the socket does not take now is sent by the next write, flush or shutdown.
        let _ = this.poll_send(cx)?;
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_send(cx))?;
        Pin::new(&mut this.tcp).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.sent_close_notify && !this.failed {
            this.sent_close_notify = true;
            let _ = this.send_traffic(|traffic, outgoing| {
                append(outgoing, 64, |b| {
                    traffic.queue_close_notify(b).map_err(encrypt_size)
                })
            });
        }
        ready!(this.poll_send(cx))?;
        Pin::new(&mut this.tcp).poll_shutdown(cx)
    }
}
