//! The fencing drivers. Each stops one kind of thing this node could still be doing, sits
//! behind the small [`FenceDriver`] trait, is idempotent (safe to repeat after a crash) and
//! runs with its own deadline. [`run_fence`] runs them in the fixed order
//! VM stop → DRBD demote → node taint → watchdog → hooks.
use futures::future::BoxFuture;
use proto::Epoch;
use serde::Serialize;
use std::time::Duration;

pub mod drbd;
pub mod hooks;
pub mod taint;
pub mod vm;
pub mod watchdog;

/// The drivers' metric labels, in the order they run.
pub const DRIVERS: [&str; 5] = ["vm", "drbd", "taint", "watchdog", "hooks"];

/// How one driver run ended (the `result` label of `agent_fence_actions_total`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Ok,
    Failed,
    Overran,
    Skipped,
}

impl Outcome {
    pub fn label(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Failed => "failed",
            Outcome::Overran => "overran",
            Outcome::Skipped => "skipped",
        }
    }

    /// Whether fencing may count on this step: done, or nothing to do.
    pub fn confirmed(self) -> bool {
        matches!(self, Outcome::Ok | Outcome::Skipped)
    }
}

/// What a driver did, when it did not fail.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DriverReport {
    /// `Ok` or `Skipped`.
    pub outcome: Outcome,
    /// What was done, for the status page and the log.
    pub detail: String,
}

impl DriverReport {
    pub fn ok(detail: impl Into<String>) -> DriverReport {
        DriverReport {
            outcome: Outcome::Ok,
            detail: detail.into(),
        }
    }
    pub fn skipped(detail: impl Into<String>) -> DriverReport {
        DriverReport {
            outcome: Outcome::Skipped,
            detail: detail.into(),
        }
    }
}

/// Why a driver could not confirm its part.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FenceError {
    #[error("{0}")]
    Failed(String),
    /// The driver gave up because its own deadline (or a part's timeout) passed.
    #[error("overran: {0}")]
    Overran(String),
}

impl FenceError {
    pub fn outcome(&self) -> Outcome {
        match self {
            FenceError::Failed(_) => Outcome::Failed,
            FenceError::Overran(_) => Outcome::Overran,
        }
    }
}

/// What a fencing (or unfencing) run is about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FenceContext {
    pub epoch: Epoch,
    pub reason: String,
}

/// One fencing back-end.
pub trait FenceDriver: Send + Sync {
    /// The metric label (one of [`DRIVERS`]).
    fn name(&self) -> &'static str;
    /// How long [`FenceDriver::fence`] may take; past it the run counts as overrun.
    fn deadline(&self) -> Duration;
    /// Makes sure this node no longer does what the driver covers. Idempotent.
    fn fence<'a>(
        &'a self,
        ctx: &'a FenceContext,
    ) -> BoxFuture<'a, Result<DriverReport, FenceError>>;
    /// Undoes what `fence` did where that is the agent's business (our taint); most drivers
    /// leave recovery to the workloads' own controllers.
    fn unfence<'a>(
        &'a self,
        _ctx: &'a FenceContext,
    ) -> BoxFuture<'a, Result<DriverReport, FenceError>> {
        Box::pin(async { Ok(DriverReport::skipped("nothing to undo")) })
    }
}

/// One driver's result in a fencing run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct StepResult {
    pub driver: &'static str,
    pub outcome: Outcome,
    pub detail: String,
    pub elapsed_ms: u64,
}

/// Runs one driver under its deadline.
pub async fn run_one(d: &dyn FenceDriver, ctx: &FenceContext, unfence: bool) -> StepResult {
    let start = tokio::time::Instant::now();
    let fut = if unfence {
        d.unfence(ctx)
    } else {
        d.fence(ctx)
    };
    let (outcome, detail) = match tokio::time::timeout(d.deadline(), fut).await {
        Ok(Ok(r)) => (r.outcome, r.detail),
        Ok(Err(e)) => (e.outcome(), e.to_string()),
        Err(_) => (
            Outcome::Overran,
            format!(
                "did not finish within its deadline of {} ms",
                d.deadline().as_millis()
            ),
        ),
    };
    StepResult {
        driver: d.name(),
        outcome,
        detail,
        elapsed_ms: start.elapsed().as_millis() as u64,
    }
}
