//! Hooks: site-specific commands run on fencing events (like booth's handlers), each with its
//! own timeout, with `WITNESS_EVENT`, `WITNESS_EPOCH`, `WITNESS_CLUSTER`, `WITNESS_ROOM` and
//! `WITNESS_NODE` in the environment. A hook bound to `fence` is part of fencing: if it fails or
//! times out, fencing is not confirmed and the watchdog takes over.
use super::{DriverReport, FenceContext, FenceDriver, FenceError};
use crate::config::{HookConfig, Names};
use futures::future::BoxFuture;
use std::time::Duration;

/// Runs the hooks bound to one event.
#[derive(Clone, Debug)]
pub struct Hooks {
    pub hooks: Vec<HookConfig>,
    pub names: Names,
}

impl Hooks {
    fn bound(&self, event: &str) -> Vec<&HookConfig> {
        self.hooks
            .iter()
            .filter(|h| h.on.iter().any(|e| e == event))
            .collect()
    }

    /// The longest the hooks of `event` can take together.
    pub fn budget(&self, event: &str) -> Duration {
        Duration::from_millis(self.bound(event).iter().map(|h| h.timeout_ms).sum::<u64>() + 50)
    }

    /// Runs every hook bound to `event`, in order; reports all of them.
    pub async fn run(&self, event: &str, epoch: proto::Epoch) -> Result<DriverReport, FenceError> {
        let hooks = self.bound(event);
        if hooks.is_empty() {
            return Ok(DriverReport::skipped(format!("no hook for {event}")));
        }
        let mut done = Vec::new();
        let mut failure: Option<FenceError> = None;
        for h in hooks {
            let mut cmd = tokio::process::Command::new(&h.command[0]);
            cmd.args(&h.command[1..])
                .env("WITNESS_EVENT", event)
                .env("WITNESS_EPOCH", epoch.0.to_string())
                .env("WITNESS_CLUSTER", self.names.cluster.as_str())
                .env("WITNESS_ROOM", self.names.room.as_str())
                .env("WITNESS_NODE", self.names.node.as_str())
                .stdin(std::process::Stdio::null())
                .kill_on_drop(true);
            let t = Duration::from_millis(h.timeout_ms);
            let r = match cmd.output_with_timeout(t).await {
                Ok(Ok(o)) if o.status.success() => Ok(format!("{}: ok", h.name)),
                Ok(Ok(o)) => Err(FenceError::Failed(format!(
                    "{}: exited with {}: {}",
                    h.name,
                    o.status,
                    String::from_utf8_lossy(&o.stderr).trim()
                ))),
                Ok(Err(e)) => Err(FenceError::Failed(format!("{}: cannot run: {e}", h.name))),
                Err(_) => Err(FenceError::Overran(format!(
                    "{}: did not finish within {} ms (killed)",
                    h.name, h.timeout_ms
                ))),
            };
            match r {
                Ok(s) => done.push(s),
                Err(e) => {
                    tracing::error!(hook = %h.name, event, "hook failed: {e}");
                    done.push(e.to_string());
                    failure.get_or_insert(e);
                }
            }
        }
        match failure {
            None => Ok(DriverReport::ok(done.join("; "))),
            Some(FenceError::Failed(_)) => Err(FenceError::Failed(done.join("; "))),
            Some(FenceError::Overran(_)) => Err(FenceError::Overran(done.join("; "))),
        }
    }
}

trait OutputWithTimeout {
    async fn output_with_timeout(
        &mut self,
        t: Duration,
    ) -> Result<std::io::Result<std::process::Output>, tokio::time::error::Elapsed>;
}

impl OutputWithTimeout for tokio::process::Command {
    async fn output_with_timeout(
        &mut self,
        t: Duration,
    ) -> Result<std::io::Result<std::process::Output>, tokio::time::error::Elapsed> {
        tokio::time::timeout(t, self.output()).await
    }
}

/// The fencing step that runs the `fence` hooks.
pub struct HooksDriver {
    pub hooks: Hooks,
}

impl FenceDriver for HooksDriver {
    fn name(&self) -> &'static str {
        "hooks"
    }

    fn deadline(&self) -> Duration {
        self.hooks.budget("fence")
    }

    fn fence<'a>(
        &'a self,
        ctx: &'a FenceContext,
    ) -> BoxFuture<'a, Result<DriverReport, FenceError>> {
        Box::pin(self.hooks.run("fence", ctx.epoch))
    }
}
