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
use proto::arbiter::ClusterRecord;
use proto::ClusterId;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak};
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
}

/// What the store said about its own history when it was opened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoreOrigin {
    /// Created by a witness and never lost: a cluster with no record was never granted anything.
    Intact,
    /// Empty or missing (first install, or the disk was lost), or a previous run had not yet
    /// waited out the forgotten state: unknown clusters may hold forgotten leases.
    LostState,
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

/// The sled database and its trees. Cheap to clone (sled handles are reference counted).
#[derive(Clone)]
pub struct Store {
    /// Shared by every handle; the flusher holds only a `Weak`, so dropping the last handle
    /// closes the database (and releases its file lock) at once.
    db: Arc<sled::Db>,
    clusters: sled::Tree,
    recovering: sled::Tree,
    meta: sled::Tree,
    audit: sled::Tree,
    path: PathBuf,
    /// Requests to the group-commit task; each is answered once a flush that started after the
    /// request was sent has completed.
    flusher: tokio::sync::mpsc::UnboundedSender<FlushWaiter>,
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
        let db = sled::Config::new()
            .path(path)
            .mode(sled::Mode::HighThroughput)
            .open()
            .map_err(open_err)?;
        let tree = |n: &str| db.open_tree(n).map_err(open_err);
        let (clusters, recovering, meta, audit) = (
            tree("clusters")?,
            tree("recovering")?,
            tree("meta")?,
            tree("audit")?,
        );
        let (flush_tx, flush_rx) = tokio::sync::mpsc::unbounded_channel();
        let db = Arc::new(db);
        tokio::spawn(flusher(Arc::downgrade(&db), flush_rx));
        let store = Store {
            flusher: flush_tx,
            clusters,
            recovering,
            meta,
            audit,
            db,
            path: path.to_path_buf(),
        };
        let initialised = store.meta.get(INITIALISED).map_err(open_err)?.is_some();
        let origin = if !initialised {
            // New or wiped: anything found here cannot be trusted to be complete.
            for k in store.clusters.iter().keys() {
                let k = k.map_err(open_err)?;
                store.recovering.insert(k, &b"1"[..]).map_err(open_err)?;
            }
            store
                .meta
                .insert(LOST_WINDOW, &b"1"[..])
                .map_err(open_err)?;
            store
                .meta
                .insert(INITIALISED, &b"1"[..])
                .map_err(open_err)?;
            store.flush("the store markers").await?;
            StoreOrigin::LostState
        } else if store.meta.get(LOST_WINDOW).map_err(open_err)?.is_some() {
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
        &self.path
    }

    async fn flush(&self, what: &str) -> Result<(), StoreError> {
        let err = |source| StoreError::Write {
            what: what.to_string(),
            source,
        };
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.flusher.send(tx).map_err(|_| {
            err(sled::Error::ReportableBug(
                "the store flusher has stopped".into(),
            ))
        })?;
        match rx.await {
            Ok(r) => r.map_err(err),
            Err(_) => Err(err(sled::Error::ReportableBug(
                "the store flusher stopped before flushing".into(),
            ))),
        }
    }

    /// Flushes everything (shutdown).
    pub async fn flush_all(&self) -> Result<(), StoreError> {
        self.flush("the final flush").await
    }

    /// The lost-state window is over: unknown clusters are new from now on.
    pub async fn close_lost_window(&self) -> Result<(), StoreError> {
        self.meta
            .remove(LOST_WINDOW)
            .map_err(|source| StoreError::Write {
                what: "the lost-state marker".into(),
                source,
            })?;
        self.flush("the lost-state marker").await
    }

    /// Reads one cluster. An unreadable record is reported as recovering (the witness cannot
    /// know what it granted), with an error log.
    pub fn load(&self, cluster: &ClusterId) -> Result<StoredCluster, StoreError> {
        let what = || format!("cluster {cluster}");
        let key = cluster.as_str().as_bytes();
        let recovering = self
            .recovering
            .contains_key(key)
            .map_err(|source| StoreError::Read {
                what: what(),
                source,
            })?;
        let raw = self.clusters.get(key).map_err(|source| StoreError::Read {
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
        self.recovering
            .insert(cluster.as_str().as_bytes(), &b"1"[..])
            .map_err(|source| StoreError::Write {
                what: format!("the recovering marker of cluster {cluster}"),
                source,
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
        self.clusters
            .insert(cluster.as_str().as_bytes(), json)
            .map_err(|source| StoreError::Write {
                what: what.clone(),
                source,
            })?;
        self.flush(&what).await?;
        if recovery_done {
            self.recovering
                .remove(cluster.as_str().as_bytes())
                .map_err(|source| StoreError::Write {
                    what: format!("the recovering marker of cluster {cluster}"),
                    source,
                })?;
            self.flush(&format!("the recovering marker of cluster {cluster}"))
                .await?;
        }
        Ok(())
    }

    /// Every cluster name with a record or a recovering marker.
    pub fn cluster_names(&self) -> Vec<ClusterId> {
        let mut out: Vec<ClusterId> = self
            .clusters
            .iter()
            .keys()
            .chain(self.recovering.iter().keys())
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
        let id = self.db.generate_id().map_err(|source| StoreError::Write {
            what: "the audit sequence".into(),
            source,
        })?;
        self.audit
            .insert(id.to_be_bytes(), json)
            .map_err(|source| StoreError::Write {
                what: "the audit log".into(),
                source,
            })?;
        self.flush("the audit log").await
    }

    /// The newest `n` audit entries, newest first.
    pub fn recent_audit(&self, n: usize) -> Vec<serde_json::Value> {
        self.audit
            .iter()
            .rev()
            .take(n)
            .filter_map(|kv| kv.ok())
            .filter_map(|(_, v)| serde_json::from_slice(&v).ok())
            .collect()
    }

    /// A cheap check that the store answers (for /readyz).
    pub fn healthy(&self) -> bool {
        self.meta
            .get(INITIALISED)
            .map(|v| v.is_some())
            .unwrap_or(false)
    }
}
