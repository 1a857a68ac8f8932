//! DRBD demote: `drbdadm secondary <res>` for the configured resources (or `all`), falling
//! back to `drbdadm secondary --force <res>` when the device is held open or IO is suspended,
//! and verified by reading the role back (`drbdadm role <res>`). Command lines are checked
//! against the real drbd-utils in the tests (`drbdadm -d`).
use super::{DriverReport, FenceContext, FenceDriver, FenceError};
use crate::config::DrbdConfig;
use futures::future::BoxFuture;
use std::time::Duration;

/// Demotes DRBD resources.
pub struct DrbdDriver {
    pub cfg: DrbdConfig,
}

/// The arguments of the demote command.
pub fn secondary_args(res: &str, force: bool) -> Vec<String> {
    let mut v = vec!["secondary".to_string()];
    if force {
        v.push("--force".into());
    }
    v.push(res.to_string());
    v
}

/// The arguments of the role query.
pub fn role_args(res: &str) -> Vec<String> {
    vec!["role".into(), res.to_string()]
}

/// Reads `drbdadm role` output: `Ok(())` when no resource is Primary. Accepts DRBD 9
/// (`Secondary`), DRBD 8.4 (`Secondary/Primary`, local role first) and per-resource lines
/// (`r0: Secondary`); a resource that is down (`Unconfigured`, `No such resource`) is not
/// Primary either.
pub fn check_role_output(out: &str) -> Result<(), String> {
    let mut seen = false;
    for line in out.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if line.contains("No such resource") || line.contains("Unconfigured") {
            seen = true;
            continue;
        }
        let role_part = match line.split_once(':') {
            Some((_, r)) => r.trim(),
            None => line,
        };
        let local = role_part
            .split_whitespace()
            .next()
            .unwrap_or("")
            .split('/')
            .next()
            .unwrap_or("");
        match local {
            "Secondary" => seen = true,
            "Primary" => return Err(format!("still Primary: {line:?}")),
            _ => return Err(format!("unexpected role output {line:?}")),
        }
    }
    if seen {
        Ok(())
    } else {
        Err("drbdadm role printed nothing".into())
    }
}

/// Runs drbdadm; the child is killed if the caller's deadline drops this future.
async fn drbdadm(prog: &str, args: &[String]) -> Result<(bool, String), String> {
    let out = tokio::process::Command::new(prog)
        .args(args)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| format!("cannot run {prog}: {e}"))?;
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    Ok((out.status.success(), text))
}

impl DrbdDriver {
    async fn demote(&self, res: &str) -> Result<String, FenceError> {
        let prog = &self.cfg.drbdadm;
        let (ok, out) = drbdadm(prog, &secondary_args(res, false))
            .await
            .map_err(FenceError::Failed)?;
        let mut how = "secondary";
        if !ok {
            // Held open by a process, or IO suspended: demoting anyway fails that IO, which is
            // exactly what fencing wants.
            tracing::warn!(
                resource = res,
                "drbdadm secondary failed ({}), forcing",
                out.trim()
            );
            let (ok, out2) = drbdadm(prog, &secondary_args(res, true))
                .await
                .map_err(FenceError::Failed)?;
            if !ok {
                return Err(FenceError::Failed(format!(
                    "{res}: drbdadm secondary --force failed: {}",
                    out2.trim()
                )));
            }
            how = "secondary --force";
        }
        let (_, role) = drbdadm(prog, &role_args(res))
            .await
            .map_err(FenceError::Failed)?;
        check_role_output(&role)
            .map_err(|e| FenceError::Failed(format!("{res}: after {how}: {e}")))?;
        Ok(format!("{res}: {how}, verified"))
    }
}

impl FenceDriver for DrbdDriver {
    fn name(&self) -> &'static str {
        "drbd"
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
                return Ok(DriverReport::skipped("drbd.enabled = false"));
            }
            let mut done = Vec::new();
            for res in &self.cfg.resources {
                done.push(self.demote(res).await?);
            }
            Ok(DriverReport::ok(done.join("; ")))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_output_of_each_drbd_generation_is_understood() {
        assert!(check_role_output("Secondary\n").is_ok());
        assert!(check_role_output("Secondary/Primary\n").is_ok());
        assert!(check_role_output("r0: Secondary\nr1: Secondary\n").is_ok());
        assert!(check_role_output("r0: No such resource\n").is_ok());
        assert!(check_role_output("Primary\n").is_err());
        assert!(check_role_output("r0: Secondary\nr1: Primary\n").is_err());
        assert!(check_role_output("").is_err());
        assert!(check_role_output("drbdsetup role r0\n").is_err());
    }
}
