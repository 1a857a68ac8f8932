//! The per-cluster gauges (`witness_clusters{mode}`, `witness_cluster_epoch`,
//! `witness_room_alone`) and the ticker's hot set, kept in step with each cluster's arbiter
//! after every step: only what changed is written.
use super::{ClusterTable, SlotState};
use crate::shortlock::lock;
use crate::view::ClusterMode;
use proto::{ClusterId, Millis};

impl ClusterTable {
    pub(super) fn update_gauges(&self, cluster: &ClusterId, st: &mut SlotState, now: Millis) {
        let mode = ClusterMode::of(&st.arbiter);
        if mode != st.mode_shown {
            self.metrics
                .clusters
                .with_label_values(&[st.mode_shown.as_str()])
                .dec();
            self.metrics
                .clusters
                .with_label_values(&[mode.as_str()])
                .inc();
            st.mode_shown = mode;
        }
        let rec = st.arbiter.record();
        if rec.epoch.0 != st.epoch_shown {
            self.metrics
                .cluster_epoch
                .with_label_values(&[cluster.as_str()])
                .set(rec.epoch.0 as i64);
            st.epoch_shown = rec.epoch.0;
        }
        let alone = rec.mode.survivor().cloned();
        if alone != st.alone_shown {
            for r in &rec.rooms {
                let v = i64::from(Some(r) == alone.as_ref());
                self.metrics
                    .room_alone
                    .with_label_values(&[cluster.as_str(), r.as_str()])
                    .set(v);
            }
            st.alone_shown = alone;
        }
        let hot = st.arbiter.wants_tick(now);
        if hot != st.hot {
            let mut set = lock(&self.hot);
            if hot {
                set.insert(cluster.clone());
            } else {
                set.remove(cluster);
            }
            st.hot = hot;
        }
    }
}
