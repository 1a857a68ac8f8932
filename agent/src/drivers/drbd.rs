//! DRBD demote: `drbdadm secondary <res>` for the configured resources (or `all`), falling
//! back to `drbdadm secondary --force <res>` when the device is held open or IO is suspended,
//! and verified by reading the role back (`drbdadm role <res>`). Command lines are checked
//! against the real drbd-utils in the tests (`drbdadm -d`).
//!
//! DRBD 8.4 (the in-tree module of Debian's and most distributions' kernels, driven by
//! drbd-utils 9 through `drbdadm-84`) has no `secondary --force` (it came with DRBD 9.1.7): a
//! device held open cannot be demoted at all ("Device is held open by someone", drbdsetup exit
//! 11). On 8.4 (read from `/proc/drbd`) the driver therefore does not try `--force`: a failed
//! demote fails the fencing step at once, naming the cause, and the state machine stops
//! petting the watchdog, which resets the node (the escalation the protocol counts on). That
//! is what the VM lab verifies against the real module (tests/vmlab, scenario "device held
//! open"): stop the workload first (the `vm` driver or a `fence` hook) so the demote succeeds.
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

/// What one drbdadm run printed: its standard output alone (where `role` answers) and both
/// streams together (for messages).
struct Output {
    ok: bool,
    stdout: String,
    text: String,
}

/// Runs drbdadm; the child is killed if the caller's deadline drops this future.
async fn drbdadm(prog: &str, args: &[String]) -> Result<Output, String> {
    let out = tokio::process::Command::new(prog)
        .args(args)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| format!("cannot run {prog}: {e}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut text = stdout.clone();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    Ok(Output {
        ok: out.status.success(),
        stdout,
        text,
    })
}

/// The kernel module's version from the first line of `/proc/drbd`
/// (`version: 8.4.11 (api:1/proto:86-101)`), as (major, minor).
pub fn module_version(proc_drbd: &str) -> Option<(u32, u32)> {
    let v = proc_drbd.lines().next()?.strip_prefix("version:")?.trim();
    let mut parts = v.split_whitespace().next()?.split('.');
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

/// Whether `secondary --force` may exist: not on a module older than 9 (read from
/// `/proc/drbd`); when the version cannot be read, the driver tries it.
fn force_available() -> bool {
    match std::fs::read_to_string("/proc/drbd")
        .ok()
        .as_deref()
        .and_then(module_version)
    {
        Some((major, _)) => major >= 9,
        None => true,
    }
}

impl DrbdDriver {
    async fn demote(&self, res: &str) -> Result<String, FenceError> {
        let prog = &self.cfg.drbdadm;
        let Output { ok, text: out, .. } = drbdadm(prog, &secondary_args(res, false))
            .await
            .map_err(FenceError::Failed)?;
        let mut how = "secondary";
        if !ok && !force_available() {
            return Err(FenceError::Failed(format!(
                "{res}: drbdadm secondary failed ({}); DRBD 8.4 has no secondary --force, so \
                 the node cannot be demoted while the device is held open: the watchdog resets \
                 it (stop the workload before the drbd step: vm driver or a fence hook)",
                out.trim()
            )));
        }
        if !ok {
            // Held open by a process, or IO suspended: demoting anyway fails that IO, which is
            // exactly what fencing wants.
            tracing::warn!(
                resource = res,
                "drbdadm secondary failed ({}), forcing",
                out.trim()
            );
            let Output { ok, text: out2, .. } = drbdadm(prog, &secondary_args(res, true))
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
        // The role from standard output only: drbd-utils print warnings on standard error
        // (`drbdadm-84` run directly: "DRBD module version: 8.4.11 / userland version: ...";
        // a missing `modinfo`), and a warning there must not fail a demote that worked.
        let role = drbdadm(prog, &role_args(res))
            .await
            .map_err(FenceError::Failed)?;
        check_role_output(&role.stdout).map_err(|e| {
            FenceError::Failed(format!("{res}: after {how}: {e} ({})", role.text.trim()))
        })?;
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
    fn module_version_is_read_from_proc_drbd_of_each_generation() {
        assert_eq!(
            module_version("version: 8.4.11 (api:1/proto:86-101)\nsrcversion: F73C\n"),
            Some((8, 4))
        );
        assert_eq!(
            module_version("version: 9.2.12 (api:2/proto:86-122)\n"),
            Some((9, 2))
        );
        assert_eq!(module_version(""), None);
        assert_eq!(module_version("garbage\n"), None);
    }

    #[tokio::test]
    async fn a_warning_on_standard_error_does_not_fail_a_demote_that_worked() {
        use std::os::unix::fs::PermissionsExt;
        // drbdadm-84 run directly warns about the userland version on standard error, as it
        // did in the VM lab; the role it prints on standard output is what counts.
        let dir = tempfile::tempdir().expect("temp dir");
        let prog = dir.path().join("drbdadm");
        std::fs::write(
            &prog,
            "#!/bin/sh\necho 'DRBD module version: 8.4.11' >&2\n\
             echo '   userland version: 9.22.0' >&2\n\
             case \"$1\" in role) echo Secondary/Unknown;; esac\nexit 0\n",
        )
        .expect("write the stand-in");
        std::fs::set_permissions(&prog, std::fs::Permissions::from_mode(0o755))
            .expect("chmod the stand-in");
        let d = DrbdDriver {
            cfg: DrbdConfig {
                enabled: true,
                drbdadm: prog.display().to_string(),
                resources: vec!["r0".into()],
                deadline_ms: 1000,
            },
        };
        let r = d.demote("r0").await;
        assert_eq!(r.ok(), Some("r0: secondary, verified".to_string()));
    }

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
