//! The workers that carry out what the state machine decided, and nothing else. They reconcile
//! toward a desired state instead of replaying a queue of commands.
//!
//! After every step the shell publishes [`Desired`]: the fencing run last asked for (numbered;
//! each number runs the drivers once) and the unfinished Kubernetes work ([`PendingWork`],
//! persisted with the run state, so the next agent process on this boot derives the same desired
//! state). Two workers look at the latest desired state, never at a backlog:
//! - the **own-node worker** runs the fencing drivers (in order, each under its deadline) for a
//!   new fencing run, else brings about the pending unfence (our taint removed, unfence hooks);
//! - the **other-room worker** brings about the pending takeover or release (the out-of-service
//!   taint on the other room's nodes, and the hooks).
//!
//! A failed step is tried again after [`RETRY`], or at once when the desired state changes;
//! work the state machine superseded meanwhile (a fence cancels an unfence, a release a
//! takeover) is simply no longer desired. Every step is idempotent, so a crash or a repeat is
//! harmless. Fencing reports `FenceDone{ok:false}` as soon as one driver fails or overruns (so the
//! state machine stops petting the watchdog at once) and still runs the remaining drivers: each
//! makes the node safer if the watchdog is slow or missing.
use crate::drivers::hooks::Hooks;
use crate::drivers::{run_one, FenceContext, FenceDrivers, Outcome, StepResult};
use crate::events::EventSink;
use crate::metrics::Metrics;
use crate::takeover::{NodeResult, Takeover};
use proto::agent::AgentAction;
use proto::pending::PendingWork;
use proto::Epoch;
use serde::Serialize;
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};

/// How long a failed unfence, takeover or release waits before it tries again.
pub const RETRY: Duration = Duration::from_secs(1);

/// One run of the fencing drivers, asked for by the state machine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FenceRun {
    /// Counts the runs asked for by this process; a worker runs each number once.
    pub number: u64,
    pub epoch: Epoch,
    pub reason: String,
}

/// What the workers are to bring about.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Desired {
    pub fence: Option<FenceRun>,
    pub work: PendingWork,
}

/// What the workers tell the main loop.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Feedback {
    /// Every fencing driver confirmed (`ok`), or one failed or overran.
    FenceDone { ok: bool },
    /// A pending action is done and can be forgotten.
    Done(AgentAction),
}

/// Where the last fencing run is (`fencing.state` on the status page).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FenceState {
    #[default]
    Idle,
    Running,
    Confirmed,
    Failed,
}

/// The fencing part of the status page.
#[derive(Clone, Debug, Default, Serialize)]
pub struct FencingStatus {
    pub state: FenceState,
    pub epoch: Option<u64>,
    pub reason: Option<String>,
    pub drivers: Vec<StepResult>,
    /// The last unfence: what happened.
    pub unfence: Option<String>,
}

/// Where the work on the other room's nodes is (`takeover.work.state` on the status page).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TakeoverState {
    #[default]
    None,
    Applying,
    Applied,
    Releasing,
    Released,
}

/// The takeover part of the status page.
#[derive(Clone, Debug, Default, Serialize)]
pub struct TakeoverStatus {
    pub state: TakeoverState,
    pub epoch: Option<u64>,
    pub nodes: Vec<NodeResult>,
    pub hooks: Option<String>,
}

/// The desired state's sender and the workers' status.
pub struct Actuators {
    desired: watch::Sender<Desired>,
    pub fencing: watch::Receiver<FencingStatus>,
    pub takeover_status: watch::Receiver<TakeoverStatus>,
}

/// Everything the workers need.
pub struct Parts {
    pub drivers: FenceDrivers,
    pub hooks: Hooks,
    pub takeover: Takeover,
    pub metrics: Metrics,
    pub events: EventSink,
}

impl Actuators {
    /// Starts both workers toward `initial`; their reports go to `feedback`.
    pub fn start(parts: Parts, initial: Desired, feedback: mpsc::Sender<Feedback>) -> Actuators {
        let (desired, rx) = watch::channel(initial);
        let (fs_tx, fs_rx) = watch::channel(FencingStatus::default());
        let (ts_tx, ts_rx) = watch::channel(TakeoverStatus::default());
        let parts = Arc::new(parts);
        tokio::spawn(own_worker(
            parts.clone(),
            rx.clone(),
            feedback.clone(),
            fs_tx,
        ));
        tokio::spawn(other_room_worker(parts, rx, feedback, ts_tx));
        Actuators {
            desired,
            fencing: fs_rx,
            takeover_status: ts_rx,
        }
    }

    /// Sets the desired state; the workers look again only if it changed.
    pub fn desire(&self, d: Desired) {
        self.desired.send_if_modified(|cur| {
            let changed = *cur != d;
            if changed {
                *cur = d;
            }
            changed
        });
    }
}

/// Waits until the desired state changes, or `retry` passes when something failed. `false`
/// when the shell is gone.
async fn wait(rx: &mut watch::Receiver<Desired>, retry: Option<Duration>) -> bool {
    match retry {
        None => rx.changed().await.is_ok(),
        Some(d) => tokio::select! {
            r = rx.changed() => r.is_ok(),
            _ = tokio::time::sleep(d) => true,
        },
    }
}

/// A worker: what it has achieved so far, and one pass toward the desired state.
trait Worker {
    /// Looks at the latest desired state and does what is missing; returns whether something
    /// failed (then it looks again after [`RETRY`]).
    async fn pass(&mut self, desired: Desired) -> bool;
}

/// The one reconcile loop of both workers.
async fn reconcile(mut rx: watch::Receiver<Desired>, mut worker: impl Worker) {
    loop {
        let desired = rx.borrow_and_update().clone();
        let failed = worker.pass(desired).await;
        if !wait(&mut rx, failed.then_some(RETRY)).await {
            return;
        }
    }
}

/// What the own-node worker has achieved.
struct OwnDone {
    parts: Arc<Parts>,
    feedback: mpsc::Sender<Feedback>,
    status: watch::Sender<FencingStatus>,
    /// The last fencing run carried out.
    fenced: u64,
    /// The unfence confirmed and reported, while it is still pending in the shell.
    unfenced: Option<Epoch>,
}

async fn own_worker(
    parts: Arc<Parts>,
    rx: watch::Receiver<Desired>,
    feedback: mpsc::Sender<Feedback>,
    status: watch::Sender<FencingStatus>,
) {
    let worker = OwnDone {
        parts,
        feedback,
        status,
        fenced: 0,
        unfenced: None,
    };
    reconcile(rx, worker).await
}

impl Worker for OwnDone {
    async fn pass(&mut self, desired: Desired) -> bool {
        if let Some(run) = desired.fence.filter(|r| r.number > self.fenced) {
            self.fenced = run.number;
            fence(&self.parts, &run, &self.feedback, &self.status).await;
        }
        let want = desired.work.unfence();
        if want != self.unfenced {
            self.unfenced = None;
        }
        let Some(epoch) = want.filter(|_| self.unfenced.is_none()) else {
            return false;
        };
        if !unfence(&self.parts, epoch, &self.status).await {
            return true;
        }
        self.unfenced = Some(epoch);
        let _ = self
            .feedback
            .send(Feedback::Done(AgentAction::Unfence { epoch }))
            .await;
        false
    }
}

/// Removes our taint and runs the unfence hooks; whether the taint is gone.
async fn unfence(parts: &Parts, epoch: Epoch, status: &watch::Sender<FencingStatus>) -> bool {
    let ctx = FenceContext {
        epoch,
        reason: "unfence".into(),
    };
    let r = run_one(parts.drivers.taint.as_ref(), &ctx, true).await;
    if !r.outcome.confirmed() {
        tracing::warn!(epoch = epoch.0, "unfence failed, retrying: {}", r.detail);
        status.send_modify(|s| s.unfence = Some(format!("retrying: {}", r.detail)));
        return false;
    }
    let hooks = parts.hooks.run("unfence", epoch).await;
    let msg = format!(
        "{}; hooks: {}",
        r.detail,
        match &hooks {
            Ok(h) => h.detail.clone(),
            Err(e) => e.to_string(),
        }
    );
    tracing::info!(epoch = epoch.0, "unfenced: {msg}");
    parts
        .events
        .emit("unfenced", json!({"epoch": epoch.0, "detail": msg}));
    status.send_modify(|s| {
        s.state = FenceState::Idle;
        s.unfence = Some(msg);
    });
    true
}

async fn fence(
    parts: &Parts,
    run: &FenceRun,
    feedback: &mpsc::Sender<Feedback>,
    status: &watch::Sender<FencingStatus>,
) {
    let ctx = FenceContext {
        epoch: run.epoch,
        reason: run.reason.clone(),
    };
    tracing::warn!(epoch = ctx.epoch.0, reason = %ctx.reason, "fencing this node");
    status.send_modify(|s| {
        *s = FencingStatus {
            state: FenceState::Running,
            epoch: Some(ctx.epoch.0),
            reason: Some(ctx.reason.clone()),
            drivers: Vec::new(),
            unfence: None,
        }
    });
    let mut reported = false;
    for d in parts.drivers.ordered() {
        let r = run_one(d, &ctx, false).await;
        parts
            .metrics
            .fence_actions
            .with_label_values(&[r.driver, r.outcome.label()])
            .inc();
        parts.events.emit(
            "driver",
            json!({"driver": r.driver, "result": r.outcome.label(), "detail": r.detail,
                   "elapsed_ms": r.elapsed_ms, "epoch": ctx.epoch.0}),
        );
        match r.outcome {
            Outcome::Ok | Outcome::Skipped => {
                tracing::info!(
                    driver = r.driver,
                    result = r.outcome.label(),
                    "{}",
                    r.detail
                )
            }
            _ => tracing::error!(
                driver = r.driver,
                result = r.outcome.label(),
                "{}",
                r.detail
            ),
        }
        let failed = !r.outcome.confirmed();
        status.send_modify(|s| s.drivers.push(r));
        if failed && !reported {
            // Escalate now: the state machine stops petting and the watchdog resets us. The
            // remaining drivers still run; each makes the node safer meanwhile.
            reported = true;
            status.send_modify(|s| s.state = FenceState::Failed);
            let _ = feedback.send(Feedback::FenceDone { ok: false }).await;
        }
    }
    if !reported {
        status.send_modify(|s| s.state = FenceState::Confirmed);
        let _ = feedback.send(Feedback::FenceDone { ok: true }).await;
    }
}

/// What the other-room worker has achieved.
struct OtherRoomDone {
    parts: Arc<Parts>,
    feedback: mpsc::Sender<Feedback>,
    status: watch::Sender<TakeoverStatus>,
    /// The work confirmed and reported, while it is still pending in the shell.
    confirmed: Option<AgentAction>,
    /// The work the status page shows as in progress.
    started: Option<AgentAction>,
}

async fn other_room_worker(
    parts: Arc<Parts>,
    rx: watch::Receiver<Desired>,
    feedback: mpsc::Sender<Feedback>,
    status: watch::Sender<TakeoverStatus>,
) {
    let worker = OtherRoomDone {
        parts,
        feedback,
        status,
        confirmed: None,
        started: None,
    };
    reconcile(rx, worker).await
}

impl Worker for OtherRoomDone {
    async fn pass(&mut self, desired: Desired) -> bool {
        let want = desired.work.other_room().cloned();
        if want != self.confirmed {
            self.confirmed = None;
        }
        let Some(action) = want.filter(|_| self.confirmed.is_none()) else {
            return false;
        };
        if !other_room(self, &action).await {
            return true;
        }
        self.confirmed = Some(action.clone());
        let _ = self.feedback.send(Feedback::Done(action)).await;
        false
    }
}

/// One attempt at a takeover or release of the other room's nodes; whether it is complete.
async fn other_room(done: &mut OtherRoomDone, action: &AgentAction) -> bool {
    let parts = &done.parts;
    let (event, epoch, working, finished) = match action {
        AgentAction::TakeOver { epoch, .. } => (
            "takeover",
            *epoch,
            TakeoverState::Applying,
            TakeoverState::Applied,
        ),
        AgentAction::ReleaseTakeover { epoch } => (
            "release",
            *epoch,
            TakeoverState::Releasing,
            TakeoverState::Released,
        ),
        _ => return true,
    };
    if done.started.as_ref() != Some(action) {
        done.started = Some(action.clone());
        done.status.send_modify(|s| {
            s.state = working;
            s.epoch = Some(epoch.0);
            s.hooks = None;
        });
    }
    let (ok, nodes) = match action {
        AgentAction::TakeOver { epoch, proof } => {
            parts.takeover.apply(*epoch, proof.as_deref()).await
        }
        _ => parts.takeover.release().await,
    };
    let summary: Vec<_> = nodes
        .iter()
        .map(|n| json!({"node": n.node, "ok": n.ok, "detail": n.detail}))
        .collect();
    done.status.send_modify(|s| s.nodes = nodes);
    if !ok {
        tracing::error!(epoch = epoch.0, "{event} incomplete, retrying: {summary:?}");
        return false;
    }
    let hooks = parts.hooks.run(event, epoch).await;
    let h = match &hooks {
        Ok(h) => h.detail.clone(),
        Err(e) => e.to_string(),
    };
    tracing::warn!(
        epoch = epoch.0,
        "{event} done on the other room's nodes; hooks: {h}"
    );
    parts.events.emit(
        &format!("{event}_applied"),
        json!({"epoch": epoch.0, "nodes": summary, "hooks": h}),
    );
    done.status.send_modify(|s| {
        s.state = finished;
        s.hooks = Some(h);
    });
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::drivers::watchdog::WatchdogStatus;
    use crate::kube::Kube;

    fn parts() -> Parts {
        let mut cfg = crate::config::tests::sample();
        cfg.vm.enabled = false;
        cfg.drbd.enabled = false;
        cfg.kubernetes.enabled = false;
        cfg.hooks.clear();
        let hooks = Hooks {
            hooks: Vec::new(),
            names: cfg.names(),
        };
        let (_tx, rx) = watch::channel(WatchdogStatus::default());
        Parts {
            drivers: FenceDrivers::build(&cfg, &Kube::disabled(), rx, &hooks),
            hooks,
            takeover: Takeover {
                kube: Kube::disabled(),
                other_nodes: crate::takeover::OtherNodes::new(["b1".to_string()]),
                delete: Default::default(),
            },
            metrics: Metrics::new(),
            events: EventSink::disabled(),
        }
    }

    fn run(number: u64) -> Option<FenceRun> {
        Some(FenceRun {
            number,
            epoch: Epoch(2),
            reason: "test".into(),
        })
    }

    /// Nothing more is reported while the desired state stays as it is (the clock is paused:
    /// waiting several retry periods takes no real time).
    async fn quiet(rx: &mut mpsc::Receiver<Feedback>) {
        let r = tokio::time::timeout(RETRY * 3, rx.recv()).await;
        assert!(r.is_err(), "unexpected report {r:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn the_workers_bring_about_the_desired_state_once_and_drop_superseded_work() {
        let (tx, mut rx) = mpsc::channel(16);
        let unfence = AgentAction::Unfence { epoch: Epoch(1) };
        let takeover = AgentAction::TakeOver {
            epoch: Epoch(1),
            proof: None,
        };
        let work = PendingWork::from_actions([unfence.clone(), takeover.clone()]);
        let a = Actuators::start(
            parts(),
            Desired {
                fence: None,
                work: work.clone(),
            },
            tx,
        );
        let mut done = vec![rx.recv().await.unwrap(), rx.recv().await.unwrap()];
        done.sort_by_key(|f| format!("{f:?}"));
        assert_eq!(
            done,
            vec![Feedback::Done(takeover.clone()), Feedback::Done(unfence)]
        );
        quiet(&mut rx).await;

        // A fencing run is asked for while the confirmed work is still pending in the shell:
        // the drivers run once, the confirmed work is not repeated.
        a.desire(Desired {
            fence: run(1),
            work: work.clone(),
        });
        assert!(matches!(
            rx.recv().await.unwrap(),
            Feedback::FenceDone { .. }
        ));
        assert_eq!(
            a.fencing.borrow().drivers.len(),
            crate::drivers::DRIVERS.len()
        );
        quiet(&mut rx).await;

        // The same desired state again (as after every step): nothing happens.
        a.desire(Desired {
            fence: run(1),
            work,
        });
        quiet(&mut rx).await;

        // A release supersedes the takeover: only the release is carried out.
        let release = AgentAction::ReleaseTakeover { epoch: Epoch(2) };
        a.desire(Desired {
            fence: run(1),
            work: PendingWork::from_actions([takeover, release.clone()]),
        });
        assert_eq!(rx.recv().await.unwrap(), Feedback::Done(release));
        assert_eq!(a.takeover_status.borrow().state, TakeoverState::Released);
        quiet(&mut rx).await;
    }
}
