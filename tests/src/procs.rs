//! Child processes run inside a host's namespace (`ip netns exec`, which execs the command, so
//! the child's pid is the program's own): killed with SIGKILL and reaped on `Drop`.
use anyhow::{Context, Result};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// Where libfaketime lives on Debian (the multi-threaded variant, for tokio programs).
pub const LIBFAKETIME: &[&str] = &[
    "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1",
    "/usr/lib/aarch64-linux-gnu/faketime/libfaketimeMT.so.1",
    "/usr/lib/faketime/libfaketimeMT.so.1",
];

/// The libfaketime library, when installed.
pub fn libfaketime() -> Option<PathBuf> {
    LIBFAKETIME.iter().map(PathBuf::from).find(|p| p.exists())
}

/// A running process.
pub struct Proc {
    pub name: String,
    child: Option<Child>,
}

impl Proc {
    /// Starts `program args` in namespace `ns`, output appended to `log`. `faketime`: a
    /// libfaketime spec such as `+0 x1.005` (the clock rate of this process).
    pub fn spawn(
        name: &str,
        ns: &str,
        program: &Path,
        args: &[String],
        env: &[(String, String)],
        faketime: Option<&str>,
        log: &Path,
    ) -> Result<Proc> {
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .with_context(|| format!("log {}", log.display()))?;
        let err = out.try_clone()?;
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", ns])
            .arg(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        for (k, v) in env {
            cmd.env(k, v);
        }
        if let Some(spec) = faketime {
            let lib = libfaketime().context("libfaketime is not installed (package faketime)")?;
            cmd.env("LD_PRELOAD", lib)
                .env("FAKETIME", spec)
                .env("FAKETIME_NO_CACHE", "1")
                .env("DONT_FAKE_MONOTONIC", "0");
        }
        let child = cmd
            .spawn()
            .with_context(|| format!("cannot start {name}"))?;
        Ok(Proc {
            name: name.to_string(),
            child: Some(child),
        })
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether it still runs (reaps it when it has exited).
    pub fn alive(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// SIGKILL and reap.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, then SIGKILL after `grace_ms`.
    pub fn terminate(&mut self, grace_ms: u64) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
            let deadline = std::time::Instant::now() + std::time::Duration::from_millis(grace_ms);
            while std::time::Instant::now() < deadline {
                if !matches!(c.try_wait(), Ok(None)) {
                    return;
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// The built binary `name` (`witness` or `witness-agent`): `$WITNESS_BIN` / `$AGENT_BIN`, else
/// the newer of `target/{release,debug}/<name>` of this workspace (`$CARGO_TARGET_DIR`
/// honoured), built with cargo when missing.
pub fn binary(name: &str) -> Result<PathBuf> {
    let var = if name == "witness" {
        "WITNESS_BIN"
    } else {
        "AGENT_BIN"
    };
    if let Ok(p) = std::env::var(var) {
        return Ok(PathBuf::from(p));
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .context("workspace root")?
        .to_path_buf();
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| root.join("target"));
    // The newer of the release and debug builds (a stale release build must not win).
    let newest = ["release", "debug"]
        .iter()
        .map(|p| target.join(p).join(name))
        .filter_map(|p| {
            let t = std::fs::metadata(&p).and_then(|m| m.modified()).ok()?;
            Some((t, p))
        })
        .max();
    if let Some((_, p)) = newest {
        return Ok(p);
    }
    let _guard = BUILD.lock();
    let p = target.join("release").join(name);
    if !p.exists() {
        let st = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .current_dir(&root)
            .args(["build", "--release", "-p", "witness", "-p", "witness-agent"])
            .status()
            .context("cannot run cargo build")?;
        anyhow::ensure!(st.success(), "cargo build of the binaries failed");
    }
    Ok(p)
}

static BUILD: std::sync::Mutex<()> = std::sync::Mutex::new(());
