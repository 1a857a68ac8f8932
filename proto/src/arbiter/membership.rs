//! Membership (docs/protocol.md §4.1): who counts for the contact rule. A node joins when it
//! first calls, is admitted once the other room's older members count it, is excluded once
//! proven stopped while its room runs, and is taken out or let back by the operator. Part of the
//! arbiter's state machine: these are `impl Arbiter` methods over its record and its memory.
use super::*;

impl Arbiter {
    /// Whether `node` counts for the contact rule (a member, not excluded or taken out).
    /// Nodes the witness never recorded count too: an agent's configuration may name them.
    pub(super) fn counted(&self, node: &NodeId) -> bool {
        self.record
            .members
            .get(node)
            .is_none_or(|m| m.status == MemberStatus::Member)
    }

    /// Changes one node's membership: a new version, persisted with the record.
    pub(super) fn change_member(
        &mut self,
        node: &NodeId,
        room: &RoomId,
        to: MemberStatus,
        why: String,
        out: &mut ArbiterStep,
    ) {
        let version = self.record.members_version + 1;
        self.record.members_version = version;
        let from = self.record.members.get(node).map(|m| m.status);
        let entry = self
            .record
            .members
            .entry(node.clone())
            .or_insert_with(|| MemberRecord {
                room: room.clone(),
                status: to,
                since: version,
                acked: 0,
                address: None,
                counted_by: Default::default(),
            });
        entry.status = to;
        if to == MemberStatus::Member {
            entry.since = version;
            entry.counted_by.clear();
        }
        out.events.push(ArbiterEvent::MemberChanged {
            version,
            node: node.clone(),
            room: room.clone(),
            from,
            to,
            why,
        });
    }

    /// The membership side of a report (docs/protocol.md §Membership): a node the witness
    /// does not know joins; an excluded or decommissioned one is readmitted; a removed one is
    /// refused (`Some(reason)`, nothing else changes). Records the version the node reports
    /// holding (its acknowledgement) and its heartbeat address.
    pub(super) fn note_member(
        &mut self,
        req: &LeaseRequest,
        out: &mut ArbiterStep,
    ) -> Option<String> {
        if req.members_version > self.record.members_version {
            // The witness lost its state (or was restored from an old backup): a version the
            // agents hold must never be issued again for another membership, or they would
            // ignore the new one. Bounded by `members_version_refusal`.
            self.record.members_version = req.members_version + 1;
        }
        let known = self.record.members.get(&req.node).map(|m| m.status);
        if let Some(m) = self
            .record
            .members
            .get(&req.node)
            .filter(|m| m.room != req.room)
        {
            return Some(format!(
                "node {} is a member of room {} and now reports from room {}; a node belongs to \
                 one room (decommission it first to move it)",
                req.node, m.room, req.room
            ));
        }
        let joins = match known {
            Some(MemberStatus::Removed) => {
                return Some(format!(
                    "node {} was removed from cluster {} by the operator; it is granted nothing \
                     until `witness admin member add`",
                    req.node, self.cluster
                ))
            }
            Some(MemberStatus::Member) => None,
            Some(MemberStatus::Excluded | MemberStatus::Decommissioned) => {
                Some(format!("node {} called again and is readmitted", req.node))
            }
            None => Some(format!(
                "node {} joined room {} (first call)",
                req.node, req.room
            )),
        };
        if let Some(joins) = joins {
            let other = self.other_room_text(&req.room);
            self.change_member(
                &req.node,
                &req.room,
                MemberStatus::Member,
                format!("{joins}; it runs once {other}'s nodes have acknowledged it"),
                out,
            );
        }
        // Read before written: a renewal that changes nothing must not touch the record
        // mutably (that copies it aside to tell whether it changed; see `tracked`).
        let version = self.record.members_version;
        let mut moved = false;
        let (acks, moves) = self
            .record
            .members
            .get(&req.node)
            .map_or((false, false), |m| {
                (
                    req.members_version > m.acked && req.members_version <= version,
                    req.address.is_some() && req.address != m.address,
                )
            });
        if acks || moves {
            if let Some(m) = self.record.members.get_mut(&req.node) {
                if acks {
                    m.acked = req.members_version;
                }
                if moves {
                    m.address = req.address.clone();
                    moved = true;
                }
            }
        }
        // What this node counts (its report names them) acknowledges the newer members of the
        // other room it names; kept durably so a witness restart loses no acknowledgement.
        if let Some(since) = self.record.members.get(&req.node).map(|m| m.since) {
            for p in &req.peers {
                let counts_newly = self.record.members.get(&p.node).is_some_and(|n| {
                    n.room != req.room && n.since > since && !n.counted_by.contains(&req.node)
                });
                if counts_newly {
                    if let Some(n) = self.record.members.get_mut(&p.node) {
                        n.counted_by.insert(req.node.clone());
                    }
                }
            }
        }
        if moved {
            // The other room's nodes learn the new address with the next version.
            self.record.members_version = version + 1;
        }
        None
    }

    /// "room X" for the room other than `room`, for messages.
    fn other_room_text(&self, room: &RoomId) -> String {
        self.other_room(room)
            .map_or("the other room".to_string(), |o| format!("room {o}"))
    }

    /// Why `node` may not be granted yet: a counted member of the other room that joined
    /// before it has not acknowledged the version that made it a member.
    pub(super) fn awaiting_acks(&self, now: Millis, node: &NodeId) -> Option<String> {
        if mutated!(self.cfg.mutation, AdmitWithoutAck) {
            return None;
        }
        let m = self.record.members.get(node)?;
        if let Mode::Alone(survivor) = &self.record.mode {
            if *survivor == m.room && now >= self.takeover_at {
                // The takeover bound has passed: no node of the other room can run, and each
                // receives the membership with the grant that lets it run again.
                return None;
            }
        }
        // An older member acknowledges `node` by holding a membership that names it, or by
        // naming it among the nodes it counts in its latest report (its configuration lists it).
        let missing: Vec<&str> = self
            .record
            .members
            .iter()
            .filter(|(o_name, o)| {
                o.room != m.room
                    && o.status == MemberStatus::Member
                    && o.since < m.since
                    && o.acked < m.since
                    && !m.counted_by.contains(*o_name)
                    && !self
                        .nodes
                        .get(*o_name)
                        .is_some_and(|s| s.counts.contains(node))
            })
            .map(|(n, _)| n.as_str())
            .collect();
        (!missing.is_empty()).then(|| {
            format!(
                "node {node} became a member at membership version {}; it is granted nothing \
                 until node(s) {} of the other room have acknowledged that version (a dead one \
                 stops counting once proven stopped)",
                m.since,
                missing.join(", ")
            )
        })
    }

    /// Whether `node` (of `room`) is proven stopped at `now`, or why not: no grant to it for
    /// `k·(L+F+W)` (its lease ran out, then its fence deadline and watchdog), not heard for as
    /// long, and every counted member of the other room reports, freshly, that it has given it
    /// no vouch for at least `k·(P+F+W)` (so it has had no peer contact either). A node without
    /// authority for that long has fenced or been reset, and nothing lets it run again without a
    /// new grant.
    pub(super) fn proven_stopped(
        &self,
        node: &NodeId,
        room: &RoomId,
        now: Millis,
    ) -> Result<(), String> {
        let lease_bound = self.cfg.timings.witness_takeover_wait_ms();
        let granted_ago = now.since(self.last_grant_to(node));
        if granted_ago < lease_bound {
            return Err(format!(
                "it was granted a lease {granted_ago} ms ago (this witness waits {lease_bound} ms)"
            ));
        }
        if let Some(seen) = self.nodes.get(node) {
            if now.since(seen.last_seen) < lease_bound {
                return Err(format!(
                    "the witness heard it {} ms ago",
                    now.since(seen.last_seen)
                ));
            }
        }
        self.unvouched_by_the_other_room(node, room, now)
    }

    /// When this incarnation last granted `node` anything (its start if never).
    fn last_grant_to(&self, node: &NodeId) -> Millis {
        self.last_node_grant
            .get(node)
            .copied()
            .unwrap_or(self.incarnation_start)
            .max(self.incarnation_start)
    }

    /// Granted a lease, or heard, within the lease bound k·(L+F+W): the first two conditions of
    /// [`Self::proven_stopped`], without building its reasons.
    fn recently_active(&self, node: &NodeId, now: Millis) -> bool {
        let lease_bound = self.cfg.timings.witness_takeover_wait_ms();
        now.since(self.last_grant_to(node)) < lease_bound
            || self
                .nodes
                .get(node)
                .is_some_and(|seen| now.since(seen.last_seen) < lease_bound)
    }

    /// The second half of [`Self::proven_stopped`]: every counted member of the other room
    /// reports, freshly, no vouch given to `node` for k·(P+F+W).
    fn unvouched_by_the_other_room(
        &self,
        node: &NodeId,
        room: &RoomId,
        now: Millis,
    ) -> Result<(), String> {
        let vouch_bound = self.cfg.timings.node_takeover_wait_ms();
        let mut witnesses = 0;
        for (name, m) in &self.record.members {
            if m.room == *room || m.status != MemberStatus::Member {
                continue;
            }
            let Some(seen) = self.nodes.get(name).filter(|n| self.fresh(n, now)) else {
                return Err(format!(
                    "node {name} of the other room has not reported recently, so it may still \
                     vouch for it"
                ));
            };
            match seen.unvouched.get(node) {
                Some(u) if *u >= vouch_bound => witnesses += 1,
                Some(u) => {
                    return Err(format!(
                        "node {name} vouched for it {u} ms ago (needs {vouch_bound} ms without)"
                    ))
                }
                None => {
                    return Err(format!(
                        "node {name} does not report on it (an older agent, or it does not \
                         count it)"
                    ))
                }
            }
        }
        if witnesses == 0 {
            return Err("no node of the other room reports on it".to_string());
        }
        Ok(())
    }

    /// The dead-node rule (docs/protocol.md §Membership, M3): a counted member that is proven
    /// stopped, in a room another of whose counted members the witness hears, stops counting.
    /// Nodes that the other room's agents count from their configuration but that never called
    /// this witness (a store lost, a node dead before its first call) are recorded as excluded
    /// under the same proof.
    pub(super) fn exclude_stopped_members(&mut self, now: Millis, out: &mut ArbiterStep) {
        if self.record.rooms.len() < 2 {
            return;
        }
        // A node granted or heard within the lease bound is never proven stopped, and nothing
        // below changes when it was: leaving it out first spares every renewal the copies.
        let mut candidates: std::collections::BTreeMap<NodeId, RoomId> = self
            .record
            .members
            .iter()
            .filter(|(n, m)| m.status == MemberStatus::Member && !self.recently_active(n, now))
            .map(|(n, m)| (n.clone(), m.room.clone()))
            .collect();
        for seen in self.nodes.values().filter(|n| self.fresh(n, now)) {
            let Some(other) = self.other_room(&seen.room) else {
                continue;
            };
            for named in seen.unvouched.keys() {
                if !self.record.members.contains_key(named) && !self.recently_active(named, now) {
                    candidates.insert(named.clone(), other.clone());
                }
            }
        }
        for (node, room) in candidates {
            let room_alive = self.record.members.iter().any(|(n, m)| {
                *n != node
                    && m.room == room
                    && m.status == MemberStatus::Member
                    && self.nodes.get(n).is_some_and(|s| self.fresh(s, now))
            });
            if !room_alive || self.proven_stopped(&node, &room, now).is_err() {
                continue;
            }
            self.change_member(
                &node,
                &room,
                MemberStatus::Excluded,
                format!(
                    "node {node} of room {room} is proven stopped (no lease, no vouch from the \
                     other room, for the takeover bounds) while its room runs: it no longer \
                     counts for the contact rule; it is readmitted when it calls again"
                ),
                out,
            );
        }
    }

    /// `member remove` and `member decommission`: only a node proven stopped, or one the
    /// operator certifies powered off, stops counting (a running node that stopped counting
    /// could keep the other room's contact alive without its own vouch).
    pub(super) fn admin_take_out(
        &mut self,
        now: Millis,
        node: NodeId,
        powered_off: bool,
        to: MemberStatus,
        out: &mut ArbiterStep,
    ) -> Result<String, String> {
        let verb = if to == MemberStatus::Removed {
            "removed"
        } else {
            "decommissioned"
        };
        let Some(m) = self.record.members.get(&node) else {
            let known: Vec<&str> = self.record.members.keys().map(|n| n.as_str()).collect();
            return Err(format!(
                "cluster {} has no node {node}; nothing changed (known nodes: {})",
                self.cluster,
                if known.is_empty() {
                    "none yet".to_string()
                } else {
                    known.join(", ")
                }
            ));
        };
        if m.status == to {
            return Err(format!("node {node} is already {verb}; nothing changed"));
        }
        let room = m.room.clone();
        if m.status == MemberStatus::Member && !powered_off {
            if let Err(why) = self.proven_stopped(&node, &room, now) {
                return Err(format!(
                    "node {node} may still run: {why}. Stop its agent or power it off and try \
                     again once it is proven stopped, or certify that it is powered off \
                     (--powered-off); nothing changed"
                ));
            }
        }
        self.change_member(
            &node,
            &room,
            to,
            format!(
                "operator: node {node} of room {room} {verb}{}",
                if powered_off {
                    " (certified powered off)"
                } else {
                    ""
                }
            ),
            out,
        );
        Ok(format!(
            "node {node} {verb} at membership version {}",
            self.record.members_version
        ))
    }
}

/// A reported membership version above 2^53 (the largest integer every JSON reader keeps
/// exact) is corrupt or forged: refused before anything changes, so the version cannot be
/// moved to the end of its range.
pub(super) fn members_version_refusal(req: &LeaseRequest) -> Option<String> {
    (req.members_version > Epoch::CEILING.0).then(|| {
        format!(
            "node {} reports membership version {}, above {}: its state is corrupt or forged; \
             stop its agent and clear its state file",
            req.node,
            req.members_version,
            Epoch::CEILING.0
        )
    })
}

/// A reported heartbeat address must look like `host:port` (it is handed to the other
/// room's agents): anything else is refused before anything changes.
pub(super) fn address_refusal(req: &LeaseRequest) -> Option<String> {
    let a = req.address.as_deref()?;
    let port_ok = a
        .rsplit_once(':')
        .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p > 0));
    // By byte: a non-ASCII character's bytes are neither alphanumeric ASCII nor punctuation.
    let chars_ok = a
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']' | b'_'));
    (a.len() > 255 || !port_ok || !chars_ok).then(|| {
        format!(
            "node {} reports heartbeat address {:?}; expected host:port (at most 255 \
             characters): fix `advertise` in its agent configuration",
            req.node,
            a.chars().take(64).collect::<String>()
        )
    })
}
