//! The operator audit log: every use of the admin endpoint (who, when, from where, which
//! command, what came of it) is written durably before the answer is sent, both to the sled
//! tree `audit` (shown on the status page) and to `<data_dir>/audit.jsonl` (one JSON object a
//! line, for log shippers and humans with `tail`).
use crate::store::{Store, StoreError};
use serde::Serialize;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum AuditError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(
        "cannot append to the audit file {path}: {source}; check the data directory is writable"
    )]
    File {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// One audited admin request.
#[derive(Clone, Debug, Serialize)]
pub struct AuditEntry {
    /// RFC 3339 UTC.
    pub at: String,
    pub at_unix_ms: u64,
    /// The certificate identity URI (or "none").
    pub who: String,
    pub peer: String,
    pub cluster: String,
    /// The command as sent (JSON), or the raw text when it did not parse.
    pub command: serde_json::Value,
    /// ok, rejected (the arbiter refused it), or refused (never reached the arbiter).
    pub outcome: String,
    pub message: String,
    pub epoch_after: Option<u64>,
}

impl AuditEntry {
    pub fn now(
        who: String,
        peer: String,
        cluster: String,
        command: serde_json::Value,
    ) -> AuditEntry {
        let now = time::OffsetDateTime::now_utc();
        let at = now
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_else(|_| now.unix_timestamp().to_string());
        AuditEntry {
            at,
            at_unix_ms: (now.unix_timestamp_nanos() / 1_000_000) as u64,
            who,
            peer,
            cluster,
            command,
            outcome: String::new(),
            message: String::new(),
            epoch_after: None,
        }
    }
}

/// Writes audit entries durably.
pub struct AuditLog {
    store: Store,
    path: PathBuf,
    /// Serialises appends to the file (whole lines, in order).
    file_lock: tokio::sync::Mutex<()>,
}

impl AuditLog {
    pub fn new(store: Store, path: PathBuf) -> Arc<AuditLog> {
        Arc::new(AuditLog {
            store,
            path,
            file_lock: tokio::sync::Mutex::new(()),
        })
    }

    pub fn path(&self) -> &std::path::Path {
        &self.path
    }

    /// Appends an entry to both logs and flushes both.
    pub async fn append(&self, e: &AuditEntry) -> Result<(), AuditError> {
        let json = serde_json::to_vec(e).unwrap_or_else(|_| b"{}".to_vec());
        self.store.append_audit(json.clone()).await?;
        let _g = self.file_lock.lock().await;
        let path = self.path.clone();
        let res = tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)?;
            let mut line = json;
            line.push(b'\n');
            f.write_all(&line)?;
            f.sync_data()
        })
        .await;
        match res {
            Ok(Ok(())) => Ok(()),
            Ok(Err(source)) => Err(AuditError::File {
                path: self.path.clone(),
                source,
            }),
            Err(j) => Err(AuditError::File {
                path: self.path.clone(),
                source: std::io::Error::other(j.to_string()),
            }),
        }
    }

    pub fn recent(&self, n: usize) -> Vec<serde_json::Value> {
        self.store.recent_audit(n)
    }
}
