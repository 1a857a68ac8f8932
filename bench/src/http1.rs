//! A tiny plain-HTTP/1.0 GET for status pages on 127.0.0.1 (no client library needed).
use anyhow::{bail, Context, Result};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// `GET path` on `addr` (`127.0.0.1:port`); returns the status code and the body.
pub async fn get(addr: &str, path: &str, timeout: Duration) -> Result<(u16, String)> {
    tokio::time::timeout(timeout, async {
        let mut s = TcpStream::connect(addr)
            .await
            .with_context(|| format!("connecting to {addr}"))?;
        s.write_all(
            format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await?;
        let text = String::from_utf8_lossy(&buf);
        let Some((head, body)) = text.split_once("\r\n\r\n") else {
            bail!("no HTTP head from {addr}{path}");
        };
        let code = head
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .context("no status code")?;
        Ok((code, body.to_string()))
    })
    .await
    .with_context(|| format!("GET {addr}{path} timed out"))?
}

/// `GET path` and parse the body as JSON (status 200 only).
pub async fn get_json(addr: &str, path: &str) -> Result<serde_json::Value> {
    let (code, body) = get(addr, path, Duration::from_secs(2)).await?;
    if code != 200 {
        bail!("GET {addr}{path}: status {code}");
    }
    Ok(serde_json::from_str(&body)?)
}
