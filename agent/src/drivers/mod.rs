//! The fencing drivers. Each stops one kind of thing this node could still be doing, sits
//! behind the small [`FenceDriver`] trait, is idempotent (safe to repeat after a crash) and
//! runs with its own deadline.
//!
//! [`FenceDrivers::build`] is the one place that lists them, in the fixed order they run:
//! VM stop → DRBD demote → node taint → watchdog → hooks. The fence budget (how long a fence
//! may take without any driver overrunning) is derived from that list, never written by hand.
//! A new driver: a file here implementing [`FenceDriver`], one line in `build`, its label in
//! [`DRIVERS`] (the metrics pre-register every label; a test keeps both lists equal).
use crate::config::Config;
use crate::kube::Kube;
use futures::future::BoxFuture;
use hooks::{Hooks, HooksDriver};
use proto::Epoch;
use serde::Serialize;
use std::sync::Arc;
use std::time::Duration;
use taint::TaintDriver;
use tokio::sync::watch;
use watchdog::{WatchdogDriver, WatchdogStatus};

pub mod drbd;
pub mod hooks;
pub mod taint;
pub mod vm;
pub mod watchdog;

/// The drivers' metric labels, in the order [`FenceDrivers::build`] runs them.
pub const DRIVERS: [&str; 5] = ["vm", "drbd", "taint", "watchdog", "hooks"];

/// One driver in the fencing order.
struct Listed {
    driver: Arc<dyn FenceDriver>,
    /// Its deadline counts toward the fence budget: it waits on something outside the agent
    /// (the Kubernetes API, `drbdadm`, a VM process, a hook). A driver configured off returns at
    /// once, and the watchdog driver only reads the device thread's status in memory.
    counts: bool,
}

/// This node's fencing drivers, in the order they run.
pub struct FenceDrivers {
    list: Vec<Listed>,
    /// Our own taint: unfencing removes it.
    pub taint: Arc<dyn FenceDriver>,
}

impl FenceDrivers {
    /// The drivers for `cfg`, in order.
    pub fn build(
        cfg: &Config,
        kube: &Kube,
        watchdog: watch::Receiver<WatchdogStatus>,
        hooks: &Hooks,
    ) -> FenceDrivers {
        let taint: Arc<dyn FenceDriver> = Arc::new(TaintDriver {
            kube: kube.clone(),
            node: cfg.node.clone(),
            key: cfg.kubernetes.fence_taint_key.clone(),
            deadline: Duration::from_millis(cfg.kubernetes.deadline_ms),
            rejoin: crate::takeover::RejoinGate::new(Duration::from_millis(
                cfg.kubernetes.unfence_settle_ms,
            )),
        });
        let fence_hooks = cfg.hooks.iter().any(|h| h.on.iter().any(|e| e == "fence"));
        let list = vec![
            Listed {
                driver: Arc::new(vm::VmDriver {
                    kube: kube.clone(),
                    node: cfg.node.clone(),
                    cfg: cfg.vm.clone(),
                }),
                counts: cfg.vm.enabled,
            },
            Listed {
                driver: Arc::new(drbd::DrbdDriver {
                    cfg: cfg.drbd.clone(),
                }),
                counts: cfg.drbd.enabled,
            },
            Listed {
                driver: taint.clone(),
                counts: cfg.kubernetes.enabled,
            },
            Listed {
                driver: Arc::new(WatchdogDriver { status: watchdog }),
                counts: false,
            },
            Listed {
                driver: Arc::new(HooksDriver {
                    hooks: hooks.clone(),
                }),
                counts: fence_hooks,
            },
        ];
        FenceDrivers { list, taint }
    }

    /// The drivers in the order they run.
    pub fn ordered(&self) -> impl Iterator<Item = &dyn FenceDriver> {
        self.list.iter().map(|l| l.driver.as_ref())
    }

    /// How long fencing can take without any driver overrunning: the sum of the deadlines of
    /// the drivers that wait on something. Above `timings.fence_deadline_ms` the state machine
    /// stops petting the watchdog before slow but healthy drivers finish.
    pub fn budget(&self) -> Duration {
        budget(
            self.list
                .iter()
                .filter(|l| l.counts)
                .map(|l| l.driver.deadline()),
        )
    }
}

/// The sum of `deadlines`, saturating: the deadlines come from the file unbounded, and a sum
/// that wrapped would look small and hide the overrun it is computed to warn about.
pub fn budget(deadlines: impl IntoIterator<Item = Duration>) -> Duration {
    deadlines
        .into_iter()
        .fold(Duration::ZERO, Duration::saturating_add)
}

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

#[cfg(test)]
mod tests {
    use super::*;

    fn drivers(cfg: &Config) -> FenceDrivers {
        let (_tx, rx) = watch::channel(WatchdogStatus::default());
        let hooks = Hooks {
            hooks: cfg.hooks.clone(),
            names: cfg.names(),
        };
        FenceDrivers::build(cfg, &Kube::disabled(), rx, &hooks)
    }

    #[test]
    fn the_drivers_run_in_the_order_their_metric_labels_are_listed() {
        let cfg = crate::config::tests::sample();
        let names: Vec<_> = drivers(&cfg).ordered().map(|d| d.name()).collect();
        assert_eq!(names, DRIVERS);
    }

    #[test]
    fn the_fence_budget_adds_the_deadlines_of_the_drivers_that_wait_and_saturates() {
        let mut c = crate::config::tests::sample();
        c.vm.enabled = true;
        c.drbd.enabled = true;
        c.kubernetes.enabled = true;
        c.hooks.clear();
        c.drbd.deadline_ms = 1_000;
        c.vm.deadline_ms = 1_500;
        c.kubernetes.deadline_ms = 1_000;
        assert_eq!(drivers(&c).budget(), Duration::from_millis(3_500));
        c.kubernetes.enabled = false;
        assert_eq!(drivers(&c).budget(), Duration::from_millis(2_500));
        // The agent_config fuzz target once crashed on this: two deadlines near i64::MAX
        // overflowed the hand-written sum this replaces.
        c.vm.deadline_ms = i64::MAX as u64;
        c.drbd.deadline_ms = i64::MAX as u64;
        c.kubernetes.enabled = true;
        assert!(drivers(&c).budget() >= Duration::from_millis(u64::MAX));
    }
}
