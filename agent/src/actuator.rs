//! The action executors: they carry out what the state machine decided, and nothing else.
//!
//! Two workers, each working through its own queue in order:
//! - the **own-node worker** fences (every driver in the fixed order, each under its deadline)
//!   and unfences (removes our taint, runs unfence hooks) this node;
//! - the **takeover worker** applies and lifts the out-of-service taint on the other room's
//!   nodes and runs the takeover/release hooks.
//!
//! Fencing reports `FenceDone{ok:false}` as soon as one driver fails or overruns (so the state
//! machine stops petting the watchdog at once) and still runs the remaining drivers, because
//! each of them makes the node safer if the watchdog is slow or missing. Unfence, takeover and
//! release are retried every [`RETRY`] until they succeed or a newer job supersedes them; the
//! shell persists them as pending so a restarted agent finishes them too.
use crate::drivers::hooks::Hooks;
use crate::drivers::{run_one, FenceContext, FenceDriver, Outcome, StepResult};
use crate::events::EventSink;
use crate::metrics::Metrics;
use crate::takeover::{NodeResult, Takeover};
use proto::agent::AgentAction;
use proto::Epoch;
use serde::Serialize;
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};

/// How long a failed unfence, takeover or release waits before it tries again.
pub const RETRY: Duration = Duration::from_secs(1);

/// Work for a worker.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Job {
    Fence { epoch: Epoch, reason: String },
    Unfence { epoch: Epoch },
    TakeOver { epoch: Epoch, proof: Option<String> },
    Release { epoch: Epoch },
}

impl Job {
    /// The job for an action, if the action is one the workers carry out.
    pub fn from_action(a: &AgentAction) -> Option<Job> {
        Some(match a {
            AgentAction::Fence { epoch, reason } => Job::Fence {
                epoch: *epoch,
                reason: reason.clone(),
            },
            AgentAction::Unfence { epoch } => Job::Unfence { epoch: *epoch },
            AgentAction::TakeOver { epoch, proof } => Job::TakeOver {
                epoch: *epoch,
                proof: proof.clone(),
            },
            AgentAction::ReleaseTakeover { epoch } => Job::Release { epoch: *epoch },
            _ => return None,
        })
    }

    /// The action this job carries out (what the shell keeps as pending).
    pub fn action(&self) -> AgentAction {
        match self.clone() {
            Job::Fence { epoch, reason } => AgentAction::Fence { epoch, reason },
            Job::Unfence { epoch } => AgentAction::Unfence { epoch },
            Job::TakeOver { epoch, proof } => AgentAction::TakeOver { epoch, proof },
            Job::Release { epoch } => AgentAction::ReleaseTakeover { epoch },
        }
    }
}

/// What the workers tell the main loop.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Feedback {
    /// Every fencing driver confirmed (`ok`), or one failed or overran.
    FenceDone { ok: bool },
    /// A pending action is done and can be forgotten.
    Done(AgentAction),
}

/// The fencing part of the status page.
#[derive(Clone, Debug, Default, Serialize)]
pub struct FencingStatus {
    /// idle, running, confirmed, failed.
    pub state: String,
    pub epoch: Option<u64>,
    pub reason: Option<String>,
    pub drivers: Vec<StepResult>,
    /// The last unfence: what happened.
    pub unfence: Option<String>,
}

/// The takeover part of the status page.
#[derive(Clone, Debug, Default, Serialize)]
pub struct TakeoverStatus {
    /// none, applying, applied, releasing, released.
    pub state: String,
    pub epoch: Option<u64>,
    pub nodes: Vec<NodeResult>,
    pub hooks: Option<String>,
}

/// Handles for queueing jobs and reading their status.
#[derive(Clone)]
pub struct Actuators {
    own: mpsc::UnboundedSender<Job>,
    takeover: mpsc::UnboundedSender<Job>,
    pub fencing: watch::Receiver<FencingStatus>,
    pub takeover_status: watch::Receiver<TakeoverStatus>,
}

/// Everything the workers need.
pub struct Parts {
    /// The fencing drivers, in the order they run.
    pub drivers: Vec<Arc<dyn FenceDriver>>,
    /// Our taint, for unfencing.
    pub taint: Arc<dyn FenceDriver>,
    pub hooks: Hooks,
    pub takeover: Takeover,
    pub metrics: Metrics,
    pub events: EventSink,
}

impl Actuators {
    /// Starts both workers; their reports go to `feedback`.
    pub fn start(parts: Parts, feedback: mpsc::Sender<Feedback>) -> Actuators {
        let (own_tx, own_rx) = mpsc::unbounded_channel();
        let (to_tx, to_rx) = mpsc::unbounded_channel();
        let (fs_tx, fs_rx) = watch::channel(FencingStatus {
            state: "idle".into(),
            ..Default::default()
        });
        let (ts_tx, ts_rx) = watch::channel(TakeoverStatus {
            state: "none".into(),
            ..Default::default()
        });
        let parts = Arc::new(parts);
        tokio::spawn(own_worker(parts.clone(), own_rx, feedback.clone(), fs_tx));
        tokio::spawn(takeover_worker(parts, to_rx, feedback, ts_tx));
        Actuators {
            own: own_tx,
            takeover: to_tx,
            fencing: fs_rx,
            takeover_status: ts_rx,
        }
    }

    /// Queues a job on the worker it belongs to.
    pub fn submit(&self, job: Job) {
        let q = match job {
            Job::Fence { .. } | Job::Unfence { .. } => &self.own,
            Job::TakeOver { .. } | Job::Release { .. } => &self.takeover,
        };
        if q.send(job).is_err() {
            tracing::error!("an action worker has stopped; the job is lost");
        }
    }
}

/// Waits [`RETRY`] or until a new job arrives (which supersedes the one being retried).
async fn retry_or_next(rx: &mut mpsc::UnboundedReceiver<Job>) -> Option<Job> {
    tokio::select! {
        j = rx.recv() => j,
        _ = tokio::time::sleep(RETRY) => None,
    }
}

async fn own_worker(
    parts: Arc<Parts>,
    mut rx: mpsc::UnboundedReceiver<Job>,
    feedback: mpsc::Sender<Feedback>,
    status: watch::Sender<FencingStatus>,
) {
    let mut next = None;
    loop {
        let job = match next.take() {
            Some(j) => j,
            None => match rx.recv().await {
                Some(j) => j,
                None => return,
            },
        };
        match job {
            Job::Fence { epoch, reason } => {
                let ctx = FenceContext { epoch, reason };
                fence(&parts, &ctx, &feedback, &status).await;
            }
            Job::Unfence { epoch } => {
                let ctx = FenceContext {
                    epoch,
                    reason: "unfence".into(),
                };
                loop {
                    let r = run_one(parts.taint.as_ref(), &ctx, true).await;
                    if r.outcome.confirmed() {
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
                            s.state = "idle".into();
                            s.unfence = Some(msg);
                        });
                        let _ = feedback
                            .send(Feedback::Done(AgentAction::Unfence { epoch }))
                            .await;
                        break;
                    }
                    tracing::warn!(epoch = epoch.0, "unfence failed, retrying: {}", r.detail);
                    status.send_modify(|s| s.unfence = Some(format!("retrying: {}", r.detail)));
                    if let Some(j) = retry_or_next(&mut rx).await {
                        next = Some(j);
                        break;
                    }
                }
            }
            other => tracing::error!("own-node worker got {other:?}"),
        }
    }
}

async fn fence(
    parts: &Parts,
    ctx: &FenceContext,
    feedback: &mpsc::Sender<Feedback>,
    status: &watch::Sender<FencingStatus>,
) {
    tracing::warn!(epoch = ctx.epoch.0, reason = %ctx.reason, "fencing this node");
    status.send_modify(|s| {
        *s = FencingStatus {
            state: "running".into(),
            epoch: Some(ctx.epoch.0),
            reason: Some(ctx.reason.clone()),
            drivers: Vec::new(),
            unfence: None,
        }
    });
    let mut reported = false;
    for d in &parts.drivers {
        let r = run_one(d.as_ref(), ctx, false).await;
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
            status.send_modify(|s| s.state = "failed".into());
            let _ = feedback.send(Feedback::FenceDone { ok: false }).await;
        }
    }
    if !reported {
        status.send_modify(|s| s.state = "confirmed".into());
        let _ = feedback.send(Feedback::FenceDone { ok: true }).await;
    }
}

async fn takeover_worker(
    parts: Arc<Parts>,
    mut rx: mpsc::UnboundedReceiver<Job>,
    feedback: mpsc::Sender<Feedback>,
    status: watch::Sender<TakeoverStatus>,
) {
    let mut next = None;
    loop {
        let job = match next.take() {
            Some(j) => j,
            None => match rx.recv().await {
                Some(j) => j,
                None => return,
            },
        };
        let (event, epoch) = match &job {
            Job::TakeOver { epoch, .. } => ("takeover", *epoch),
            Job::Release { epoch } => ("release", *epoch),
            other => {
                tracing::error!("takeover worker got {other:?}");
                continue;
            }
        };
        status.send_modify(|s| {
            s.state = if event == "takeover" {
                "applying"
            } else {
                "releasing"
            }
            .into();
            s.epoch = Some(epoch.0);
            s.hooks = None;
        });
        loop {
            let (ok, nodes) = match &job {
                Job::TakeOver { epoch, proof } => {
                    parts.takeover.apply(*epoch, proof.as_deref()).await
                }
                _ => parts.takeover.release().await,
            };
            let summary: Vec<_> = nodes
                .iter()
                .map(|n| json!({"node": n.node, "ok": n.ok, "detail": n.detail}))
                .collect();
            status.send_modify(|s| s.nodes = nodes);
            if ok {
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
                status.send_modify(|s| {
                    s.state = if event == "takeover" {
                        "applied"
                    } else {
                        "released"
                    }
                    .into();
                    s.hooks = Some(h);
                });
                let _ = feedback.send(Feedback::Done(job.action())).await;
                break;
            }
            tracing::error!(epoch = epoch.0, "{event} incomplete, retrying: {summary:?}");
            if let Some(j) = retry_or_next(&mut rx).await {
                next = Some(j);
                break;
            }
        }
    }
}
