//! The table of clusters: one `proto::arbiter::Arbiter` per cluster, loaded from the store on
//! first use, stepped by lease requests, operator commands and the ticker; the persist-before-
//! reply contract around each step is in [`commit`], the gauges in [`gauges`], and the status
//! the pages show is built by `crate::view` from what the slots hold.
//!
//! Concurrency: the table is split into shards (`crate::sharded`, each behind a `std::sync::Mutex`),
//! each held only to find or insert a cluster's slot. A slot holds its arbiter behind a `tokio::sync::Mutex`, held
//! across the durable write: a reply that depends on a new record is sent only after that record
//! is flushed, and no later reply of the same cluster can overtake the write. Different clusters
//! never wait for each other. Plain renewals change no record, so they touch no disk.
use crate::config::Config;
use crate::history::History;
use crate::metrics::Metrics;
use crate::sharded::Sharded;
use crate::shortlock::{lock, ShortLock};
use crate::store::{Store, StoreError, StoredCluster};
use crate::view::{admin_label, mode_text, room_last_seen, status_of, status_unloaded};
use crate::view::{ClusterMode, ClusterStatus, LoadedHow, Timeline, VerdictKind};
use proto::arbiter::{Arbiter, ArbiterInput, NodeSeen};
use proto::small::SmallMap;
use proto::wire::{AdminCommand, LeaseReply, LeaseRequest};
use proto::{ClusterId, Millis, NodeId, RoomId};
use serde::Serialize;
use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use thiserror::Error;

mod commit;
mod gauges;

/// The witness's monotonic clock in protocol milliseconds. `tokio::time`, so tests can pause it.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    origin: tokio::time::Instant,
}

impl Clock {
    pub fn start() -> Clock {
        Clock {
            origin: tokio::time::Instant::now(),
        }
    }
    pub fn now(&self) -> Millis {
        Millis(self.origin.elapsed().as_millis() as u64)
    }
}

#[derive(Debug, Error)]
pub enum TableError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the witness keeps at most {0} clusters (limits.max_clusters); raise the limit to add cluster {1}")]
    TooManyClusters(usize, ClusterId),
    #[error("cluster {0} is unknown: no node of it has called this witness and the store has no record of it; check the name")]
    UnknownCluster(ClusterId),
    #[error("internal error: {0}")]
    Internal(String),
    /// The arbiter refused the request and changed nothing (an out-of-range epoch).
    #[error("{0}")]
    Refused(String),
}

const SHARDS: usize = 64;

/// One cluster: its arbiter and what the shell keeps beside it.
pub struct Slot {
    cluster: ClusterId,
    /// Held for one step and its durable write (never while awaiting anything else).
    state: tokio::sync::Mutex<SlotState>,
}

struct SlotState {
    arbiter: Arbiter,
    /// The store holds this cluster's recovering marker.
    recovering_marked: bool,
    /// The marker must be written (and flushed) before this cluster's next write or reply.
    needs_mark: bool,
    /// The mode under which the cluster is counted in `witness_clusters{mode}`.
    mode_shown: ClusterMode,
    /// The epoch shown in `witness_cluster_epoch`.
    epoch_shown: u64,
    /// The room shown as 1 in `witness_room_alone`.
    alone_shown: Option<RoomId>,
    /// The cluster is in the ticker's set.
    hot: bool,
    /// What each node was last answered (label, when), for logs and the status page.
    last_verdict: SmallMap<NodeId, (VerdictKind, Millis)>,
    /// When this slot was loaded (a room not heard since counts as silent since then).
    loaded_at: Millis,
    /// A durable write of this cluster failed: the arbiter holds what the disk may not, and is
    /// rebuilt from disk once the store is writable again.
    stale: bool,
    /// The last hour of what happened, for the status page's timeline (bounded, in memory).
    history: History,
}

/// What a lease request got.
pub struct LeaseOutcome {
    pub reply: LeaseReply,
    /// The `witness_lease_requests_total` result label.
    pub result: &'static str,
}

/// What an admin command got.
#[derive(Clone, Debug, Serialize, serde::Deserialize)]
pub struct AdminOutcome {
    pub cluster: String,
    pub ok: bool,
    pub message: String,
    pub epoch: u64,
    pub mode: String,
}

/// The table of every cluster this witness knows.
pub struct ClusterTable {
    slots: Sharded<ClusterId, Arc<Slot>>,
    /// Clusters loaded (bounded by `limits.max_clusters`).
    count: AtomicUsize,
    /// Clusters with a pending time-based decision; the ticker steps only these.
    hot: ShortLock<HashSet<ClusterId>>,
    /// While set and not passed: the store lost its state and an unknown cluster may hold
    /// leases this witness forgot, so it is recovered rather than created.
    lost_until: ShortLock<Option<Millis>>,
    store: Store,
    config: Arc<Config>,
    clock: Clock,
    metrics: Arc<Metrics>,
    /// At most one error line per few seconds while writes fail (a full disk).
    write_errors: identity::LogLimiter,
}

impl ClusterTable {
    pub fn new(
        store: Store,
        lost_state: bool,
        config: Arc<Config>,
        clock: Clock,
        metrics: Arc<Metrics>,
    ) -> ClusterTable {
        let lost_until = lost_state.then(|| clock.now() + config.max_forgotten_state_wait_ms());
        ClusterTable {
            slots: Sharded::new(SHARDS),
            count: AtomicUsize::new(0),
            hot: ShortLock::new(HashSet::new()),
            lost_until: ShortLock::new(lost_until),
            store,
            config,
            clock,
            metrics,
            write_errors: identity::LogLimiter::new(std::time::Duration::from_secs(10)),
        }
    }

    pub fn clock(&self) -> Clock {
        self.clock
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Milliseconds left in the lost-state window (None when the store is intact).
    pub fn lost_window_left(&self) -> Option<u64> {
        let now = self.clock.now();
        (*lock(&self.lost_until)).map(|u| u.since(now))
    }

    /// Builds an arbiter from what the store says. Returns it with whether the `recovering`
    /// marker is on disk and whether it must be written before anything else.
    fn build(
        &self,
        cluster: &ClusterId,
        stored: StoredCluster,
        now: Millis,
    ) -> (Arbiter, bool, bool) {
        let cfg = self.config.cluster_config(cluster);
        let lost_open = (*lock(&self.lost_until)).is_some_and(|u| now < u);
        match (stored.recovering, stored.record) {
            (true, _) => (
                Arbiter::recover(cfg, cluster.clone(), now),
                stored.marker_on_disk,
                !stored.marker_on_disk,
            ),
            (false, Some(rec)) => (
                Arbiter::restart(cfg, cluster.clone(), rec, now),
                false,
                false,
            ),
            (false, None) if lost_open => {
                (Arbiter::recover(cfg, cluster.clone(), now), false, true)
            }
            (false, None) => (Arbiter::create(cfg, cluster.clone(), now), false, false),
        }
    }

    /// The slot of a cluster, loading it from the store; `may_create` lets a cluster unknown to
    /// the store be created (a node with a valid certificate called).
    fn slot(&self, cluster: &ClusterId, may_create: bool) -> Result<Arc<Slot>, TableError> {
        let mut map = self.slots.lock(cluster);
        if let Some(s) = map.get(cluster) {
            return Ok(s.clone());
        }
        let stored = self.store.load(cluster)?;
        if !may_create && stored.record.is_none() && !stored.recovering {
            return Err(TableError::UnknownCluster(cluster.clone()));
        }
        let max = self.config.limits.max_clusters;
        if self.count.load(Ordering::Relaxed) >= max {
            return Err(TableError::TooManyClusters(max, cluster.clone()));
        }
        let now = self.clock.now();
        let (arbiter, recovering_marked, needs_mark) = self.build(cluster, stored, now);
        let how = if recovering_marked || needs_mark {
            "recovering (state may have been lost: grants nothing until the forgotten-state wait is over)"
        } else if arbiter.record().rooms.is_empty() {
            "new"
        } else {
            "restarted from its stored record"
        };
        tracing::info!(
            %cluster,
            epoch = %arbiter.record().epoch,
            mode = ClusterMode::of(&arbiter).as_str(),
            "cluster loaded: {how}"
        );
        let label = ClusterMode::of(&arbiter);
        self.metrics
            .clusters
            .with_label_values(&[label.as_str()])
            .inc();
        let mut history = History::default();
        history.loaded(
            now,
            if recovering_marked || needs_mark {
                LoadedHow::Recovering
            } else if arbiter.record().rooms.is_empty() {
                LoadedHow::New
            } else {
                LoadedHow::Restarted
            },
        );
        let slot = Arc::new(Slot {
            cluster: cluster.clone(),
            state: tokio::sync::Mutex::new(SlotState {
                arbiter,
                recovering_marked,
                needs_mark,
                mode_shown: label,
                epoch_shown: 0,
                alone_shown: None,
                hot: false,
                last_verdict: SmallMap::new(),
                loaded_at: now,
                stale: false,
                history,
            }),
        });
        map.insert_new(cluster.clone(), slot.clone());
        self.count.fetch_add(1, Ordering::Relaxed);
        Ok(slot)
    }

    fn loaded(&self, cluster: &ClusterId) -> Option<Arc<Slot>> {
        self.slots.lock(cluster).get(cluster).cloned()
    }

    fn all_slots(&self) -> Vec<Arc<Slot>> {
        let mut v: Vec<Arc<Slot>> = Vec::new();
        self.slots
            .each_shard(|table| v.extend(table.iter().map(|(_, slot)| slot.clone())));
        v.sort_by(|a, b| a.cluster.cmp(&b.cluster));
        v
    }

    /// Answers a lease request whose identity the caller has already checked.
    pub async fn lease(&self, req: LeaseRequest) -> Result<LeaseOutcome, TableError> {
        let slot = self.slot(&req.cluster, true)?;
        let cluster = &slot.cluster;
        let mut st = slot.state.lock().await;
        self.ensure_marked(cluster, &mut st).await?;
        let now = self.clock.now();
        let before = st.arbiter.nodes().get(&req.node).map(Reported::of);
        let step = st.arbiter.step(now, ArbiterInput::Lease(req));
        self.commit(cluster, &mut st, &step, now).await?;
        if let Some(reason) = step.refused {
            return Err(TableError::Refused(reason));
        }
        let reply = step.reply.ok_or_else(|| {
            TableError::Internal("the arbiter gave no reply to a lease request".into())
        })?;
        // The reply names the request's room and node.
        let (room, node) = (&reply.room, &reply.node);
        let verdict = VerdictKind::of(&reply.verdict);
        let result = verdict.as_str();
        let silence_ms = st.arbiter.config().timings.silence_ms;
        record_report(&mut st, node, before, now, silence_ms);
        let prev = match st.last_verdict.get_mut(node) {
            Some(last) => Some(std::mem::replace(last, (verdict, now))),
            None => st.last_verdict.insert(node.clone(), (verdict, now)),
        };
        if prev.map(|p| p.0) != Some(verdict) {
            st.history.verdict(now, node.as_str(), verdict);
            tracing::info!(%cluster, %room, %node, epoch = %reply.epoch, verdict = ?reply.verdict, "verdict for this node changed");
        } else {
            tracing::debug!(%cluster, %room, %node, epoch = %reply.epoch, verdict = result, "lease answered");
        }
        Ok(LeaseOutcome { reply, result })
    }

    /// Runs an operator command on a known cluster.
    pub async fn admin(
        &self,
        cluster: &ClusterId,
        cmd: AdminCommand,
    ) -> Result<AdminOutcome, TableError> {
        let slot = self.slot(cluster, false)?;
        let mut st = slot.state.lock().await;
        self.ensure_marked(cluster, &mut st).await?;
        let now = self.clock.now();
        let cmd_name = cmd.clone();
        let step = st.arbiter.step(now, ArbiterInput::Admin(cmd));
        self.commit(cluster, &mut st, &step, now).await?;
        let result = step
            .admin_result
            .unwrap_or_else(|| Err("the arbiter gave no result".into()));
        let (ok, message) = match result {
            Ok(m) => (true, m),
            Err(m) => (false, m),
        };
        st.history.admin(now, admin_label(&cmd_name), ok);
        let rec = st.arbiter.record();
        Ok(AdminOutcome {
            cluster: cluster.to_string(),
            ok,
            message,
            epoch: rec.epoch.0,
            mode: mode_text(&st.arbiter),
        })
    }

    /// Steps every cluster with a pending time-based decision. Bounded work: only the hot set,
    /// and a cluster busy with a request is skipped (that request evaluates it anyway).
    pub async fn tick(&self) {
        let now = self.clock.now();
        let close = {
            let mut lu = lock(&self.lost_until);
            match *lu {
                Some(u) if now >= u => {
                    *lu = None;
                    true
                }
                _ => false,
            }
        };
        if close {
            match self.store.close_lost_window().await {
                Ok(()) => tracing::info!(
                    "the lost-state window is over: clusters that call from now on are new"
                ),
                Err(e) => {
                    if let Some(suppressed) = self.write_errors.allow() {
                        tracing::error!(error = %e, suppressed, "cannot record the end of the lost-state window; it stays open");
                    }
                    *lock(&self.lost_until) = Some(now);
                }
            }
        }
        let hot: Vec<ClusterId> = lock(&self.hot).iter().cloned().collect();
        for cluster in hot {
            let Some(slot) = self.loaded(&cluster) else {
                lock(&self.hot).remove(&cluster);
                continue;
            };
            let Ok(mut st) = slot.state.try_lock() else {
                continue;
            };
            if !self.store.available() {
                // Nothing can be decided durably; the store reports its own failure once.
                return;
            }
            if let Err(e) = self.ensure_marked(&cluster, &mut st).await {
                if let Some(suppressed) = self.write_errors.allow() {
                    tracing::error!(%cluster, error = %e, suppressed, "cannot write the recovering marker");
                }
                continue;
            }
            let now = self.clock.now();
            let step = st.arbiter.step(now, ArbiterInput::Tick);
            if let Err(e) = self.commit(&cluster, &mut st, &step, now).await {
                if let Some(suppressed) = self.write_errors.allow() {
                    tracing::error!(%cluster, error = %e, suppressed, "tick could not persist its decision");
                }
            }
        }
    }

    /// Refreshes the gauges that age with time (`witness_room_last_seen_seconds`).
    pub fn refresh_age_gauges(&self) {
        let now = self.clock.now();
        for slot in self.all_slots() {
            let Ok(st) = slot.state.try_lock() else {
                continue;
            };
            for (room, seen) in room_last_seen(&st.arbiter) {
                let since = seen.unwrap_or(st.loaded_at);
                self.metrics
                    .room_last_seen
                    .with_label_values(&[slot.cluster.as_str(), room.as_str()])
                    .set(now.since(since) as f64 / 1000.0);
            }
        }
    }

    pub fn cluster_count(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }

    /// What the status page shows: every loaded cluster, and every cluster in the store that
    /// has not called since this witness started.
    pub async fn snapshot(&self) -> Vec<ClusterStatus> {
        let now = self.clock.now();
        let mut out = Vec::new();
        let mut seen = HashSet::new();
        for slot in self.all_slots() {
            let st = slot.state.lock().await;
            seen.insert(slot.cluster.clone());
            out.push(status_of(
                &slot.cluster,
                &st.arbiter,
                &st.last_verdict,
                st.loaded_at,
                now,
            ));
        }
        for name in self.store.cluster_names() {
            if seen.contains(&name) {
                continue;
            }
            let stored = self.store.load(&name).unwrap_or(StoredCluster {
                record: None,
                recovering: true,
                marker_on_disk: false,
            });
            out.push(status_unloaded(&name, stored));
        }
        out.sort_by(|a, b| a.cluster.cmp(&b.cluster));
        out
    }

    /// One cluster's status and the events of its last `window_ms` (at most
    /// [`crate::history::WINDOW_MS`]), for the cluster's page. None for a cluster that has not
    /// called since the witness started (its status is in [`ClusterTable::snapshot`]).
    pub async fn timeline(&self, cluster: &ClusterId, window_ms: u64) -> Option<Timeline> {
        let slot = self.loaded(cluster)?;
        let st = slot.state.lock().await;
        let now = self.clock.now();
        Some(Timeline {
            status: status_of(cluster, &st.arbiter, &st.last_verdict, st.loaded_at, now),
            events: st
                .history
                .events(now, window_ms.min(crate::history::WINDOW_MS)),
            silence_ms: st.arbiter.config().timings.silence_ms,
            loaded_ms_ago: now.since(st.loaded_at),
        })
    }

    /// Heap bytes held by every cluster's event history (for the fleet memory check).
    pub async fn history_bytes(&self) -> usize {
        let mut total = 0;
        for slot in self.all_slots() {
            total += slot.state.lock().await.history.heap_bytes();
        }
        total
    }
}

/// What the history compares between two reports of a node (copied, not the whole entry).
#[derive(Clone, Copy)]
struct Reported {
    phase: proto::wire::NodePhase,
    last_seen: Millis,
    takeover: bool,
    claim: bool,
    peer_contact: bool,
}

impl Reported {
    fn of(seen: &NodeSeen) -> Reported {
        Reported {
            phase: seen.phase,
            last_seen: seen.last_seen,
            takeover: seen.takeover,
            claim: seen.claim,
            peer_contact: seen.peer_contact,
        }
    }
}

/// Notes in the history what changed in a node's report (phase, takeover, claim, peer contact,
/// a silence that ended).
fn record_report(
    st: &mut SlotState,
    node: &NodeId,
    before: Option<Reported>,
    now: Millis,
    silence_ms: u64,
) {
    let Some(after) = st.arbiter.nodes().get(node).map(Reported::of) else {
        return;
    };
    let n = node.as_str();
    let h = &mut st.history;
    match before {
        None => h.phase(now, n, after.phase, after.phase),
        Some(b) => {
            if b.phase != after.phase {
                h.phase(now, n, b.phase, after.phase);
            }
            let gap = now.since(b.last_seen);
            if gap > silence_ms {
                h.returned(now, n, gap);
            }
            if b.takeover != after.takeover {
                h.takeover(now, n, after.takeover);
            }
            if b.claim != after.claim {
                h.claim(now, n, after.claim);
            }
            if b.peer_contact != after.peer_contact {
                h.peer_contact(now, n, after.peer_contact);
            }
        }
    }
}
