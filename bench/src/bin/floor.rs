//! The transport floor: the witness's stack with nothing behind it. A server that accepts
//! TLS 1.3 with a required client certificate from the witness CA (rustls, ring), speaks
//! HTTP/1.1 keep-alive (hyper), reads each request body whole and answers every request with
//! one fixed JSON reply of a given size. `loadgen --floor` drives it with the same load as the
//! witness in the same run, so the witness's CPU per renewal can be held against what TLS,
//! HTTP and the kernel alone cost on this machine.
//!
//! `floor --listen 127.0.0.1:7443 --ca ca.pem --cert server.pem --key server-key.pem --reply-bytes 180`

use anyhow::{Context, Result};
use clap::Parser;
use hyper::body::Body;
use hyper_util::rt::TokioIo;
use rustls::server::WebPkiClientVerifier;
use std::path::PathBuf;
use std::sync::Arc;

#[derive(Parser)]
#[command(about = "Fixed-reply mTLS + HTTP/1.1 server: the floor the witness is measured against")]
struct Args {
    /// Address to listen on.
    #[arg(long)]
    listen: std::net::SocketAddr,
    /// CA bundle that client certificates must chain to (PEM).
    #[arg(long)]
    ca: PathBuf,
    /// Server certificate chain (PEM).
    #[arg(long)]
    cert: PathBuf,
    /// Server private key (PEM).
    #[arg(long)]
    key: PathBuf,
    /// Size of the fixed JSON reply body in bytes (the witness's reply size, for a like-for-like floor).
    #[arg(long, default_value_t = 160)]
    reply_bytes: usize,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    rt.block_on(serve(args))
}

fn read_pem(path: &PathBuf) -> Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("reading {}", path.display()))
}

/// A JSON object shaped like a paired grant, padded to exactly `n` bytes (at least its size
/// without padding), so the load generator counts it as a grant.
fn fixed_reply(n: usize) -> String {
    let head = r#"{"version":1,"verdict":{"verdict":"grant","mode":"paired","valid_ms":0},"pad":""#;
    let tail = r#""}"#;
    let pad = n.saturating_sub(head.len() + tail.len());
    let mut s = String::with_capacity(n);
    s.push_str(head);
    s.extend(std::iter::repeat_n('x', pad));
    s.push_str(tail);
    s
}

async fn serve(args: Args) -> Result<()> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pemfile::certs(&mut &read_pem(&args.ca)?[..]) {
        roots.add(c.with_context(|| format!("{}: not a PEM certificate", args.ca.display()))?)?;
    }
    let chain = rustls_pemfile::certs(&mut &read_pem(&args.cert)?[..])
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("{}: not a PEM certificate chain", args.cert.display()))?;
    let key = rustls_pemfile::private_key(&mut &read_pem(&args.key)?[..])
        .with_context(|| format!("{}: not a PEM private key", args.key.display()))?
        .with_context(|| format!("{}: holds no private key", args.key.display()))?;
    let verifier =
        WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone()).build()?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    let reply = fixed_reply(args.reply_bytes);
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                // Out of descriptors and the like: keep serving the connections we have.
                eprintln!("accept failed: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let (acceptor, reply) = (acceptor.clone(), reply.clone());
        tokio::spawn(async move {
            let Ok(tls) = acceptor.accept(stream).await else {
                return;
            };
            let svc =
                hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let reply = reply.clone();
                    async move {
                        // Read the body whole, as the witness does before it parses it.
                        let mut body = req.into_body();
                        while let Some(Ok(_)) =
                            std::future::poll_fn(|cx| std::pin::Pin::new(&mut body).poll_frame(cx))
                                .await
                        {}
                        let mut r = hyper::Response::new(reply);
                        r.headers_mut().insert(
                            http::header::CONTENT_TYPE,
                            http::HeaderValue::from_static("application/json"),
                        );
                        Ok::<_, std::convert::Infallible>(r)
                    }
                });
            let _ = hyper::server::conn::http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(tls), svc)
                .await;
        });
    }
}
