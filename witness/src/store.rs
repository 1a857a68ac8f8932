//! The witness's durable state in sled: one `ClusterRecord` (JSON) per cluster, the markers
//! that tell an intact store from a lost one, and the operator audit log.
//!
//! Trees:
//! - `clusters`: key = cluster name, value = `proto::arbiter::ClusterRecord` as JSON.
//! - `recovering`: key = cluster name; present while that cluster is waiting out state the
//!   witness may have forgotten. Written (and flushed) before any record of such a cluster, and
//!   removed only after the record that ends the wait is flushed, so a crash in between makes
//!   the cluster wait again (safe) rather than skip the wait.
//! - `meta`: `initialised` (the store was created by a witness; absent in a new or wiped store)
//!   and `lost_state_window` (present from the start on an empty store until the witness has run
//!   the whole forgotten-state wait: until then a cluster with no record may hold leases this
//!   witness forgot, so it is recovered, not created).
//! - `audit`: key = big-endian sequence number, value = one `AuditEntry` as JSON.
//!
//! Nothing is durable before `flush_async` returns; every write that a reply depends on is
//! flushed before the reply leaves.
//!
//! A failed write (a full or failing disk) leaves sled's memory holding what never reached the
//! disk, and sled refuses every later write: so the store turns *unavailable* at the first
//! failure (every read and write is refused, `/readyz` says not ready), closes the database,
//! and reopens it from disk every second until a probe write is flushed again. What it reads
//! after that is what the disk holds: the cluster table rebuilds from it every cluster whose
//! write failed (as a restart would).
use crate::shortlock::{lock, ShortLock, ShortRwLock};
use proto::arbiter::ClusterRecord;
use proto::ClusterId;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak};
use std::time::Duration;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum StoreError {
    #[error("cannot open the store at {path}: {source}; check that the data directory is writable and that no other witness uses it")]
    Open {
        path: PathBuf,
        #[source]
        source: sled::Error,
    },
    #[error("store write for {what} failed: {source}; the disk may be full or failing")]
    Write {
        what: String,
        #[source]
        source: sled::Error,
    },
    #[error("store read for {what} failed: {source}; the disk may be failing")]
    Read {
        what: String,
        #[source]
        source: sled::Error,
    },
    #[error("cannot encode {what}: {source}")]
    Encode {
        what: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("the store at {path} is not writable since a write failed ({reason}); the witness retries every second and recovers by itself once the disk accepts writes again: free space on its file system or replace the disk")]
    Unavailable { path: PathBuf, reason: String },
}

/// What the store said about its own history when it was opened (`intact` or `lost_state` in
/// the status JSON).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StoreOrigin {
    /// Created by a witness and never lost: a cluster with no record was never granted anything.
    Intact,
    /// Empty or missing (first install, or the disk was lost), or a previous run had not yet
    /// waited out the forgotten state: unknown clusters may hold forgotten leases.
    LostState,
}

impl std::fmt::Display for StoreOrigin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            StoreOrigin::Intact => "intact",
            StoreOrigin::LostState => "lost_state",
        })
    }
}

/// One cluster as found on disk.
#[derive(Clone, Debug, Default)]
pub struct StoredCluster {
    pub record: Option<ClusterRecord>,
    /// The cluster had not finished waiting out forgotten state (or its record is unreadable).
    pub recovering: bool,
    /// The `recovering` marker is on disk (false for an unreadable record without one: the
    /// marker must then be written before anything else).
    pub marker_on_disk: bool,
}

/// The store. Cheap to clone: every handle shares one open database (or none, while it is
/// being reopened after a failed write).
#[derive(Clone)]
pub struct Store {
    shared: Arc<Shared>,
}

struct Shared {
    path: PathBuf,
    /// `None` between closing a failed database and reopening it.
    open: ShortRwLock<Option<Open>>,
    /// Why the store is unavailable (a write failed and no reopen has succeeded since).
    failed: ShortLock<Option<String>>,
}

/// One open sled database and its trees.
#[derive(Clone)]
struct Open {
    /// Shared by every handle; the flusher holds only a `Weak`, so dropping the last handle
    /// closes the database (and releases its file lock) at once.
    db: Arc<sled::Db>,
    clusters: sled::Tree,
    recovering: sled::Tree,
    meta: sled::Tree,
    audit: sled::Tree,
    /// Requests to the group-commit task; each is answered once a flush that started after the
    /// request was sent has completed.
    flusher: tokio::sync::mpsc::UnboundedSender<FlushWaiter>,
}

impl Open {
    fn at(path: &Path) -> Result<Open, sled::Error> {
        let db = sled::Config::new()
            .path(path)
            .mode(sled::Mode::HighThroughput)
            .open()?;
        let (clusters, recovering, meta, audit) = (
            db.open_tree("clusters")?,
            db.open_tree("recovering")?,
            db.open_tree("meta")?,
            db.open_tree("audit")?,
        );
        let (flush_tx, flush_rx) = tokio::sync::mpsc::unbounded_channel();
        let db = Arc::new(db);
        tokio::spawn(flusher(Arc::downgrade(&db), flush_rx));
        Ok(Open {
            db,
            clusters,
            recovering,
            meta,
            audit,
            flusher: flush_tx,
        })
    }
}

/// Reopens a failed store every second until a probe write is flushed. Holds only a `Weak`,
/// so it ends when every handle is dropped.
async fn repairer(shared: Weak<Shared>) {
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let Some(sh) = shared.upgrade() else {
            return;
        };
        let failed = lock(&sh.failed).clone();
        if let Some(reason) = failed {
            let store = Store { shared: sh };
            store.try_reopen(&reason).await;
        }
    }
}

type FlushWaiter = tokio::sync::oneshot::Sender<Result<(), sled::Error>>;

/// Group commit: one `fsync` for every write waiting when it starts. Writes that arrive during
/// a flush wait for the next one (they may not be covered by the one in progress). Runs the
/// blocking flush on tokio's blocking pool (sled's own `flush_async` stalls when many run at
/// once). Ends when every `Store` handle is dropped.
async fn flusher(db: Weak<sled::Db>, mut rx: tokio::sync::mpsc::UnboundedReceiver<FlushWaiter>) {
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while let Ok(w) = rx.try_recv() {
            batch.push(w);
        }
        let Some(d) = db.upgrade() else {
            return;
        };
        let r = match tokio::task::spawn_blocking(move || d.flush()).await {
            Ok(r) => r.map(|_| ()),
            Err(e) => Err(sled::Error::ReportableBug(format!(
                "the flush task failed: {e}"
            ))),
        };
        for w in batch {
            let _ = w.send(r.clone());
        }
    }
}

/// Decodes one stored cluster record (the value of the `clusters` tree). Public so the fuzz
/// targets (`fuzz/`) exercise exactly what the witness reads back at start.
pub fn decode_record(raw: &[u8]) -> Result<ClusterRecord, serde_json::Error> {
    serde_json::from_slice(raw)
}

const INITIALISED: &[u8] = b"initialised";
const LOST_WINDOW: &[u8] = b"lost_state_window";

impl Store {
    /// Opens (or creates) the store at `path` and tells whether its state is intact.
    pub async fn open(path: &Path) -> Result<(Store, StoreOrigin), StoreError> {
        let open_err = |source| StoreError::Open {
            path: path.to_path_buf(),
            source,
        };
        let o = Open::at(path).map_err(open_err)?;
        let shared = Arc::new(Shared {
            path: path.to_path_buf(),
            open: ShortRwLock::new(Some(o.clone())),
            failed: ShortLock::new(None),
        });
        tokio::spawn(repairer(Arc::downgrade(&shared)));
        let store = Store { shared };
        let initialised = o.meta.get(INITIALISED).map_err(open_err)?.is_some();
        let origin = if !initialised {
            // New or wiped: anything found here cannot be trusted to be complete.
            for k in o.clusters.iter().keys() {
                let k = k.map_err(open_err)?;
                o.recovering.insert(k, &b"1"[..]).map_err(open_err)?;
            }
            o.meta.insert(LOST_WINDOW, &b"1"[..]).map_err(open_err)?;
            o.meta.insert(INITIALISED, &b"1"[..]).map_err(open_err)?;
            drop(o);
            store.flush("the store markers").await?;
            StoreOrigin::LostState
        } else if o.meta.get(LOST_WINDOW).map_err(open_err)?.is_some() {
            StoreOrigin::LostState
        } else {
            StoreOrigin::Intact
        };
        Ok((store, origin))
    }

    /// Creates a brand-new store that counts as intact: for a first install where it is
    /// certain that no witness ever granted anything to the clusters that will call (tests,
    /// benchmarks, a lab). Refuses a path that already exists. Without this, a new store is
    /// treated as lost state and waits out the protocol's forgotten-state bound first.
    pub async fn init_fresh(path: &Path) -> Result<(), StoreError> {
        if path.exists() {
            return Err(StoreError::Open {
                path: path.to_path_buf(),
                source: sled::Error::Unsupported(
                    "the store already exists; only a new store can be initialised as intact"
                        .into(),
                ),
            });
        }
        let (s, _) = Store::open(path).await?;
        s.close_lost_window().await?;
        drop(s);
        Ok(())
    }

    pub fn path(&self) -> &Path {
        &self.shared.path
    }

    /// The open database, or why there is none usable.
    fn open_db(&self) -> Result<Open, StoreError> {
        if let Some(reason) = lock(&self.shared.failed).clone() {
            return Err(self.unavailable(reason));
        }
        let g = self.shared.open.read().unwrap_or_else(|p| p.into_inner());
        g.clone()
            .ok_or_else(|| self.unavailable("the store is being reopened".into()))
    }

    fn unavailable(&self, reason: String) -> StoreError {
        StoreError::Unavailable {
            path: self.shared.path.clone(),
            reason,
        }
    }

    /// Marks the store failed after a write error: nothing is read from or written to the
    /// database in memory any more (it may hold what never reached the disk).
    fn fail(&self, e: &StoreError) {
        let mut f = lock(&self.shared.failed);
        if f.is_none() {
            tracing::error!(error = %e, store = %self.shared.path.display(), "store write failed: the witness answers 503 and is not ready until the disk accepts writes again; it retries every second");
            *f = Some(e.to_string());
        }
    }

    /// Writes of every kind go through here, so that any failure makes the store unavailable.
    fn write_err(&self, what: String, source: sled::Error) -> StoreError {
        let e = StoreError::Write { what, source };
        self.fail(&e);
        e
    }

    /// `Err(Unavailable)` from a failed write until the store is reopened and writes are
    /// flushed again.
    pub fn check_available(&self) -> Result<(), StoreError> {
        self.open_db().map(|_| ())
    }

    /// False from a failed write until the store is reopened and writes are flushed again.
    pub fn available(&self) -> bool {
        lock(&self.shared.failed).is_none()
    }

    /// Closes the failed database and opens it again from disk, then proves that writes are
    /// flushed again with a probe write. Leaves the store unavailable on any failure.
    async fn try_reopen(&self, reason: &str) {
        // Drop this process's handles first: sled holds an exclusive lock on its files.
        let old = self
            .shared
            .open
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        drop(old);
        let path = self.shared.path.clone();
        let opened = tokio::task::spawn_blocking(move || Open::at(&path)).await;
        let o = match opened {
            Ok(Ok(o)) => o,
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "store not reopened yet");
                return;
            }
            Err(e) => {
                tracing::debug!(error = %e, "store reopen task failed");
                return;
            }
        };
        let probe = o.meta.insert(b"probe", &b"1"[..]).map(|_| ());
        *self.shared.open.write().unwrap_or_else(|p| p.into_inner()) = Some(o);
        let flushed = match probe {
            Ok(()) => self.flush_raw().await,
            Err(e) => Err(e),
        };
        match flushed {
            Ok(()) => {
                *lock(&self.shared.failed) = None;
                tracing::info!(store = %self.shared.path.display(), was = %reason, "store writable again: reopened from disk; clusters are rebuilt from what it holds");
            }
            Err(e) => {
                tracing::debug!(error = %e, "store still not writable");
                // Close it again: the next attempt reopens from disk.
                let _ = self
                    .shared
                    .open
                    .write()
                    .unwrap_or_else(|p| p.into_inner())
                    .take();
            }
        }
    }

    /// One group-commit flush of the open database, failures not recorded.
    async fn flush_raw(&self) -> Result<(), sled::Error> {
        let sender = {
            let g = self.shared.open.read().unwrap_or_else(|p| p.into_inner());
            match g.as_ref() {
                Some(o) => o.flusher.clone(),
                None => {
                    return Err(sled::Error::ReportableBug(
                        "the store is being reopened".into(),
                    ))
                }
            }
        };
        let (tx, rx) = tokio::sync::oneshot::channel();
        sender
            .send(tx)
            .map_err(|_| sled::Error::ReportableBug("the store flusher has stopped".into()))?;
        drop(sender);
        match rx.await {
            Ok(r) => r,
            Err(_) => Err(sled::Error::ReportableBug(
                "the store flusher stopped before flushing".into(),
            )),
        }
    }

    async fn flush(&self, what: &str) -> Result<(), StoreError> {
        if let Some(reason) = lock(&self.shared.failed).clone() {
            return Err(self.unavailable(reason));
        }
        self.flush_raw()
            .await
            .map_err(|source| self.write_err(what.to_string(), source))
    }

    /// Flushes everything (shutdown).
    pub async fn flush_all(&self) -> Result<(), StoreError> {
        self.flush("the final flush").await
    }

    /// The lost-state window is over: unknown clusters are new from now on.
    pub async fn close_lost_window(&self) -> Result<(), StoreError> {
        self.open_db()?
            .meta
            .remove(LOST_WINDOW)
            .map_err(|source| self.write_err("the lost-state marker".into(), source))?;
        self.flush("the lost-state marker").await
    }

    /// Reads one cluster. An unreadable record is reported as recovering (the witness cannot
    /// know what it granted), with an error log.
    pub fn load(&self, cluster: &ClusterId) -> Result<StoredCluster, StoreError> {
        let what = || format!("cluster {cluster}");
        let key = cluster.as_str().as_bytes();
        let o = self.open_db()?;
        let recovering = o
            .recovering
            .contains_key(key)
            .map_err(|source| StoreError::Read {
                what: what(),
                source,
            })?;
        let raw = o.clusters.get(key).map_err(|source| StoreError::Read {
            what: what(),
            source,
        })?;
        let Some(raw) = raw else {
            return Ok(StoredCluster {
                record: None,
                recovering,
                marker_on_disk: recovering,
            });
        };
        match decode_record(&raw) {
            Ok(r) => Ok(StoredCluster {
                record: Some(r),
                recovering,
                marker_on_disk: recovering,
            }),
            Err(e) => {
                tracing::error!(
                    %cluster,
                    error = %e,
                    "the stored record of this cluster is unreadable; treating its state as lost \
                     (it grants nothing until the forgotten-state wait is over)"
                );
                Ok(StoredCluster {
                    record: None,
                    recovering: true,
                    marker_on_disk: recovering,
                })
            }
        }
    }

    /// Marks a cluster as waiting out forgotten state, durably.
    pub async fn mark_recovering(&self, cluster: &ClusterId) -> Result<(), StoreError> {
        self.open_db()?
            .recovering
            .insert(cluster.as_str().as_bytes(), &b"1"[..])
            .map_err(|source| {
                self.write_err(
                    format!("the recovering marker of cluster {cluster}"),
                    source,
                )
            })?;
        self.flush(&format!("the recovering marker of cluster {cluster}"))
            .await
    }

    /// Writes a cluster's record durably; with `recovery_done`, then clears its recovering
    /// marker (after the record is on disk).
    pub async fn save(
        &self,
        cluster: &ClusterId,
        record: &ClusterRecord,
        recovery_done: bool,
    ) -> Result<(), StoreError> {
        let what = format!("the record of cluster {cluster}");
        let json = serde_json::to_vec(record).map_err(|source| StoreError::Encode {
            what: what.clone(),
            source,
        })?;
        self.open_db()?
            .clusters
            .insert(cluster.as_str().as_bytes(), json)
            .map_err(|source| self.write_err(what.clone(), source))?;
        self.flush(&what).await?;
        if recovery_done {
            self.open_db()?
                .recovering
                .remove(cluster.as_str().as_bytes())
                .map_err(|source| {
                    self.write_err(
                        format!("the recovering marker of cluster {cluster}"),
                        source,
                    )
                })?;
            self.flush(&format!("the recovering marker of cluster {cluster}"))
                .await?;
        }
        Ok(())
    }

    /// Every cluster name with a record or a recovering marker.
    pub fn cluster_names(&self) -> Vec<ClusterId> {
        let Ok(o) = self.open_db() else {
            return Vec::new();
        };
        let mut out: Vec<ClusterId> = o
            .clusters
            .iter()
            .keys()
            .chain(o.recovering.iter().keys())
            .filter_map(|k| k.ok())
            .filter_map(|k| String::from_utf8(k.to_vec()).ok())
            .map(ClusterId::new)
            .collect();
        out.sort();
        out.dedup();
        out
    }

    /// Appends one audit entry durably.
    pub async fn append_audit(&self, json: Vec<u8>) -> Result<(), StoreError> {
        let o = self.open_db()?;
        let id =
            o.db.generate_id()
                .map_err(|source| self.write_err("the audit sequence".into(), source))?;
        o.audit
            .insert(id.to_be_bytes(), json)
            .map_err(|source| self.write_err("the audit log".into(), source))?;
        drop(o);
        self.flush("the audit log").await
    }

    /// The newest `n` audit entries, newest first.
    pub fn recent_audit(&self, n: usize) -> Vec<serde_json::Value> {
        let Ok(o) = self.open_db() else {
            return Vec::new();
        };
        o.audit
            .iter()
            .rev()
            .take(n)
            .filter_map(|kv| kv.ok())
            .filter_map(|(_, v)| serde_json::from_slice(&v).ok())
            .collect()
    }

    /// A cheap check that the store answers and its last write did not fail (for /readyz).
    pub fn healthy(&self) -> bool {
        let Ok(o) = self.open_db() else {
            return false;
        };
        o.meta
            .get(INITIALISED)
            .map(|v| v.is_some())
            .unwrap_or(false)
    }
}
