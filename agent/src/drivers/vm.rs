//! VM stop: this node's KubeVirt VMs must stop. Through the API when it answers (stop
//! subresource, or `runStrategy: Halted`; a standalone VMI is deleted), and locally when it does
//! not, because a room cut off from the control plane cannot stop anything through the API:
//! the VM processes on this host (found in `/proc` by `vm.process_patterns`) get SIGTERM, then
//! SIGKILL. Fencing counts as confirmed only when no such process is left on this host.
use super::{DriverReport, FenceContext, FenceDriver, FenceError};
use crate::config::VmConfig;
use crate::kube::Kube;
use futures::future::BoxFuture;
use std::time::Duration;
use tokio::time::Instant;

/// How often the process table is re-read while waiting for VMs to go.
const POLL: Duration = Duration::from_millis(20);

/// Stops this node's VMs.
pub struct VmDriver {
    pub kube: Kube,
    pub node: String,
    pub cfg: VmConfig,
}

/// A process that looks like a VM.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VmProcess {
    pub pid: i32,
    pub name: String,
}

/// Finds the live (not zombie) processes on this host whose command name or `argv[0]` file
/// name contains one of `patterns`. Never returns this process itself.
pub fn find_vm_processes(patterns: &[String]) -> Vec<VmProcess> {
    let me = std::process::id() as i32;
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        if pid == me || pid <= 1 {
            continue;
        }
        let base = entry.path();
        // Field 3 of stat is the state; a zombie has already stopped running.
        let Ok(stat) = std::fs::read_to_string(base.join("stat")) else {
            continue;
        };
        let state = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .unwrap_or("");
        if state == "Z" || state == "X" {
            continue;
        }
        let comm = std::fs::read_to_string(base.join("comm"))
            .unwrap_or_default()
            .trim()
            .to_string();
        let argv0 = std::fs::read(base.join("cmdline"))
            .ok()
            .and_then(|b| {
                b.split(|c| *c == 0)
                    .next()
                    .map(|a| String::from_utf8_lossy(a).into_owned())
            })
            .unwrap_or_default();
        let argv0_base = argv0.rsplit('/').next().unwrap_or("").to_string();
        if patterns
            .iter()
            .any(|p| comm.contains(p.as_str()) || argv0_base.contains(p.as_str()))
        {
            let name = if argv0_base.is_empty() {
                comm
            } else {
                argv0_base
            };
            out.push(VmProcess { pid, name });
        }
    }
    out
}

fn signal(procs: &[VmProcess], sig: rustix::process::Signal) {
    for p in procs {
        if let Some(pid) = rustix::process::Pid::from_raw(p.pid) {
            // ESRCH: it is gone already, which is what we want.
            let _ = rustix::process::kill_process(pid, sig);
        }
    }
}

/// Waits until no VM process is left or `until` passes; returns what is left.
async fn wait_gone(patterns: &[String], until: Instant) -> Vec<VmProcess> {
    loop {
        let left = find_vm_processes(patterns);
        if left.is_empty() || Instant::now() >= until {
            return left;
        }
        tokio::time::sleep(POLL).await;
    }
}

fn names(p: &[VmProcess]) -> String {
    p.iter()
        .map(|p| format!("{}[{}]", p.name, p.pid))
        .collect::<Vec<_>>()
        .join(", ")
}

impl VmDriver {
    /// Asks the API to stop every VM on this node; returns how many were asked.
    async fn stop_via_api(&self) -> Result<usize, crate::kube::KubeError> {
        let vmis = self.kube.list_vmis(&self.node).await?;
        for v in &vmis {
            match (&v.vm, self.cfg.stop_mode.as_str()) {
                (Some(vm), "halt") => self.kube.halt_vm(&v.namespace, vm).await?,
                (Some(vm), _) => self.kube.stop_vm(&v.namespace, vm).await?,
                (None, _) => {
                    self.kube.delete_vmi(v).await?;
                }
            }
        }
        Ok(vmis.len())
    }

    async fn fence_inner(&self) -> Result<DriverReport, FenceError> {
        let start = Instant::now();
        let d = Duration::from_millis(self.cfg.deadline_ms);
        let mut detail = Vec::new();
        let api_ok = if self.kube.enabled() {
            match tokio::time::timeout(d / 3, self.stop_via_api()).await {
                Ok(Ok(n)) => {
                    detail.push(format!("asked the API to stop {n} VM(s) on {}", self.node));
                    true
                }
                Ok(Err(e)) => {
                    detail.push(format!("API: {e}"));
                    false
                }
                Err(_) => {
                    detail.push(format!(
                        "API did not answer within {} ms",
                        (d / 3).as_millis()
                    ));
                    false
                }
            }
        } else {
            false
        };
        if !self.cfg.local_kill {
            if !api_ok {
                return Err(FenceError::Failed(format!(
                    "{}; local_kill is off, so nothing can stop the VMs",
                    detail.join("; ")
                )));
            }
            // Only the API can tell: wait until it lists no VMI on this node.
            let until = start + d.mul_f64(0.95);
            loop {
                match self.kube.list_vmis(&self.node).await {
                    Ok(v) if v.is_empty() => {
                        detail.push("no VMI is left on this node".into());
                        return Ok(DriverReport::ok(detail.join("; ")));
                    }
                    _ if Instant::now() >= until => {
                        return Err(FenceError::Overran(format!(
                            "{}; VMIs still listed on this node",
                            detail.join("; ")
                        )))
                    }
                    _ => tokio::time::sleep(POLL * 5).await,
                }
            }
        }
        let pats = &self.cfg.process_patterns;
        // Give an API-initiated stop most of the deadline before killing locally.
        let left = if api_ok {
            wait_gone(pats, start + d.mul_f64(0.6)).await
        } else {
            find_vm_processes(pats)
        };
        if left.is_empty() {
            detail.push("no VM process remains on this host".into());
            return Ok(DriverReport::ok(detail.join("; ")));
        }
        signal(&left, rustix::process::Signal::TERM);
        detail.push(format!("SIGTERM to {}", names(&left)));
        let left = wait_gone(pats, start + d.mul_f64(0.8)).await;
        if !left.is_empty() {
            signal(&left, rustix::process::Signal::KILL);
            detail.push(format!("SIGKILL to {}", names(&left)));
        }
        let left = wait_gone(pats, start + d.mul_f64(0.95)).await;
        if left.is_empty() {
            detail.push("no VM process remains on this host".into());
            Ok(DriverReport::ok(detail.join("; ")))
        } else {
            Err(FenceError::Failed(format!(
                "{}; still running: {}",
                detail.join("; "),
                names(&left)
            )))
        }
    }
}

impl FenceDriver for VmDriver {
    fn name(&self) -> &'static str {
        "vm"
    }

    fn deadline(&self) -> Duration {
        Duration::from_millis(self.cfg.deadline_ms)
    }

    fn fence<'a>(
        &'a self,
        _ctx: &'a FenceContext,
    ) -> BoxFuture<'a, Result<DriverReport, FenceError>> {
        Box::pin(async move {
            if !self.cfg.enabled {
                return Ok(DriverReport::skipped("vm.enabled = false"));
            }
            self.fence_inner().await
        })
    }
}
