//! The event socket: one JSON line per phase change and per protocol action, written to a unix
//! stream socket for the test harness's recorder (or any local collector).
//!
//! It never blocks the agent: events go through a bounded queue ([`QUEUE`] entries) and are
//! dropped when the queue is full or the socket is absent; a writer task keeps one connection
//! and reconnects (at most every [`RECONNECT`]) after an error.
use serde_json::{json, Value};
use std::path::PathBuf;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

/// Events queued beyond this are dropped.
pub const QUEUE: usize = 1024;
/// The writer does not retry a failed connection more often than this.
pub const RECONNECT: Duration = Duration::from_millis(200);

/// Sends events; cheap to clone. A sink without a socket discards everything.
#[derive(Clone, Debug)]
pub struct EventSink {
    tx: Option<mpsc::Sender<String>>,
    base: (String, String, String),
}

impl EventSink {
    /// A sink that writes to `socket` (if not empty), tagging every event with our names.
    pub fn new(socket: &str, cluster: &str, room: &str, node: &str) -> EventSink {
        let base = (cluster.to_string(), room.to_string(), node.to_string());
        if socket.is_empty() {
            return EventSink { tx: None, base };
        }
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(writer(PathBuf::from(socket), rx));
        EventSink { tx: Some(tx), base }
    }

    /// A sink that discards everything.
    pub fn disabled() -> EventSink {
        EventSink {
            tx: None,
            base: Default::default(),
        }
    }

    /// Queues one event: `fields` must be a JSON object; `event`, names and a wall-clock
    /// timestamp (`ts_ms`, for humans reading the recording only) are added.
    pub fn emit(&self, event: &str, fields: Value) {
        let Some(tx) = &self.tx else { return };
        let mut obj = match fields {
            Value::Object(m) => m,
            _ => serde_json::Map::new(),
        };
        obj.insert("event".into(), json!(event));
        obj.insert("cluster".into(), json!(self.base.0));
        obj.insert("room".into(), json!(self.base.1));
        obj.insert("node".into(), json!(self.base.2));
        let ts = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        obj.insert("ts_ms".into(), json!(ts));
        let mut line = Value::Object(obj).to_string();
        line.push('\n');
        // Full queue: the recorder is slower than we are; dropping beats blocking the agent.
        let _ = tx.try_send(line);
    }
}

async fn writer(path: PathBuf, mut rx: mpsc::Receiver<String>) {
    let mut conn: Option<tokio::net::UnixStream> = None;
    let mut last_attempt: Option<tokio::time::Instant> = None;
    while let Some(line) = rx.recv().await {
        if conn.is_none() {
            if last_attempt.is_some_and(|t| t.elapsed() < RECONNECT) {
                continue; // socket absent: drop
            }
            last_attempt = Some(tokio::time::Instant::now());
            conn = tokio::time::timeout(RECONNECT, tokio::net::UnixStream::connect(&path))
                .await
                .ok()
                .and_then(Result::ok);
        }
        if let Some(c) = conn.as_mut() {
            let ok = tokio::time::timeout(Duration::from_secs(1), c.write_all(line.as_bytes()))
                .await
                .is_ok_and(|r| r.is_ok());
            if !ok {
                conn = None;
            }
        }
    }
}
