//! The persist-before-reply contract around `Arbiter::step`: a step's record is flushed before
//! the reply that depends on it is sent; a failed write withholds the reply and marks the
//! cluster stale, and a stale cluster is rebuilt from disk before it is stepped again. Then the
//! step's events are logged, counted and noted in the history.
use super::{ClusterTable, SlotState, TableError};
use crate::store::StoredCluster;
use crate::view::ClusterMode;
use proto::arbiter::{ArbiterEvent, ArbiterStep};
use proto::{ClusterId, Millis};

impl ClusterTable {
    /// Makes a slot fit to step: after a failed write of this cluster, refuses (503) until the
    /// store is writable again and then rebuilds the arbiter from disk, so nothing is granted
    /// that the disk does not hold; writes a pending recovering marker. A cluster whose writes
    /// all succeeded holds exactly what its durable record says, so it keeps answering
    /// renewals that change nothing while the disk is full (a survivor keeps its right).
    pub(super) async fn ensure_marked(
        &self,
        cluster: &ClusterId,
        st: &mut SlotState,
    ) -> Result<(), TableError> {
        if st.stale {
            self.store.check_available()?;
            let now = self.clock.now();
            self.rebuild(cluster, st, now);
            st.stale = false;
            self.update_gauges(cluster, st, now);
        }
        if st.needs_mark {
            self.store.mark_recovering(cluster).await?;
            st.needs_mark = false;
            st.recovering_marked = true;
        }
        Ok(())
    }

    /// Rebuilds a cluster's arbiter from disk after a failed write.
    fn rebuild(&self, cluster: &ClusterId, st: &mut SlotState, now: Millis) {
        let stored = match self.store.load(cluster) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(%cluster, error = %e, "cannot read the cluster back after a failed write; treating its state as lost");
                StoredCluster {
                    record: None,
                    recovering: true,
                    marker_on_disk: false,
                }
            }
        };
        // Read from the reopened database, so from disk: an absent record means no reply of this
        // cluster ever depended on one (every grant follows a flushed record), so the cluster is
        // new; a present one is restarted from, as after a witness restart.
        let (a, marked, needs) = self.build(cluster, stored, now);
        st.arbiter = a;
        st.recovering_marked = marked;
        st.needs_mark = needs;
    }

    /// Makes a step's record durable, then logs and counts what it did. On a failed write the
    /// arbiter is rebuilt from disk and the caller must not send the step's reply.
    pub(super) async fn commit(
        &self,
        cluster: &ClusterId,
        st: &mut SlotState,
        step: &ArbiterStep,
        now: Millis,
    ) -> Result<(), TableError> {
        if let Some(rec) = &step.persist {
            let recovery_done = st.recovering_marked && st.arbiter.recovering_until().is_none();
            let t0 = tokio::time::Instant::now();
            let r = self.store.save(cluster, rec, recovery_done).await;
            self.metrics
                .persist_duration
                .observe(t0.elapsed().as_secs_f64());
            if let Err(e) = r {
                self.metrics.persist_failures.inc();
                if let Some(suppressed) = self.write_errors.allow() {
                    tracing::error!(
                        %cluster,
                        epoch = %rec.epoch,
                        error = %e,
                        suppressed,
                        "durable write failed: the reply is withheld and the cluster is rebuilt from disk once the store is writable"
                    );
                }
                // The arbiter now holds a step the disk may not: never step it again before it
                // is rebuilt from disk (`ensure_marked`).
                st.stale = true;
                return Err(e.into());
            }
            if recovery_done {
                st.recovering_marked = false;
            }
        }
        for ev in &step.events {
            match ev {
                ArbiterEvent::ModeChanged {
                    epoch,
                    from,
                    to,
                    why,
                } => {
                    self.metrics
                        .mode_changes
                        .with_label_values(&[ClusterMode::of_mode(to).as_str()])
                        .inc();
                    st.history.mode(now, from, to, epoch.0);
                    tracing::info!(
                        %cluster,
                        %epoch,
                        from = ?from,
                        to = ?to,
                        survivor = to.survivor().map(|r| r.as_str()).unwrap_or("-"),
                        why = %why,
                        "mode changed"
                    );
                }
                ArbiterEvent::RecoveryFinished { epoch } => {
                    st.history.recovery_finished(now, epoch.0);
                    tracing::info!(%cluster, %epoch, "forgotten-state wait is over; the cluster is granted again");
                }
                ArbiterEvent::EpochJumped { from, to } => {
                    tracing::warn!(%cluster, %from, %to, "a node reported a higher epoch than the stored one; epoch jumped past it");
                }
                ArbiterEvent::Refused { node, reason } => {
                    st.history.refused(now, node.as_str());
                    tracing::warn!(%cluster, %node, %reason, "arbiter refused a node");
                }
                ArbiterEvent::MemberChanged {
                    version,
                    node,
                    room,
                    from,
                    to,
                    why,
                } => {
                    self.metrics
                        .member_changes
                        .with_label_values(&[member_status_name(*to)])
                        .inc();
                    if *to == proto::wire::MemberStatus::Excluded {
                        tracing::warn!(%cluster, %node, %room, version, from = ?from, why = %why, "node excluded from the contact rule: proven stopped while its room runs");
                    } else {
                        tracing::info!(%cluster, %node, %room, version, from = ?from, to = ?to, why = %why, "membership changed");
                    }
                }
                ArbiterEvent::EpochExhausted { epoch } => {
                    if let Some(suppressed) = self.write_errors.allow() {
                        tracing::error!(%cluster, %epoch, suppressed, "the cluster's epoch cannot grow any more: who may act alone cannot change (see docs/witness.md, out-of-range epochs)");
                    }
                }
            }
        }
        self.update_gauges(cluster, st, now);
        Ok(())
    }
}

/// The `to` label of `witness_member_changes_total`.
fn member_status_name(s: proto::wire::MemberStatus) -> &'static str {
    use proto::wire::MemberStatus;
    match s {
        MemberStatus::Member => "member",
        MemberStatus::Excluded => "excluded",
        MemberStatus::Removed => "removed",
        MemberStatus::Decommissioned => "decommissioned",
    }
}
