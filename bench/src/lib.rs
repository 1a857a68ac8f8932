//! Shared pieces of the benchmarks and the demo: finding the real `witness` and
//! `witness-agent` binaries, and [`lab::Lab`], a witness plus two rooms of real agents on
//! 127.0.0.1 with log-only drivers and one merged timeline of what they do. Certificates and
//! config files come from `witness-harness`, as in the namespace harness.

pub mod http1;
pub mod lab;
pub mod report;
pub mod sys;

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};

/// The workspace root this crate was built in (used to build missing binaries).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// Finds a release binary: `$ENV` if set; else one already built beside the running
/// executable, in `CARGO_TARGET_DIR` or in the workspace's target dir (unless `BENCH_REBUILD`
/// is set); else, when the workspace and `cargo` are at hand, builds it
/// (`cargo build --release -p PKG`) and takes it from there.
pub fn find_bin(env: &str, name: &str, package: &str) -> Result<PathBuf> {
    if let Ok(p) = std::env::var(env) {
        let p = PathBuf::from(p);
        if !p.is_file() {
            bail!("{env}={} is not a file", p.display());
        }
        return Ok(p);
    }
    let candidates = candidate_dirs();
    let find = || {
        candidates
            .iter()
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    };
    // Binaries already built are used as they are (a rebuild is a minute of cargo on a small
    // machine); BENCH_REBUILD=1 asks for `cargo build --release` first.
    if std::env::var_os("BENCH_REBUILD").is_none() {
        if let Some(p) = find() {
            eprintln!(
                "using {} (set BENCH_REBUILD=1 to rebuild it first, or {env} to pick another)",
                p.display()
            );
            return Ok(p);
        }
    }
    let root = workspace_root();
    if root.join("Cargo.toml").is_file() && std::env::var_os("BENCH_NO_BUILD").is_none() {
        eprintln!(
            "building {package} if needed (cargo build --release -p {package}; BENCH_NO_BUILD=1 skips this)"
        );
        let status = std::process::Command::new(std::env::var("CARGO").unwrap_or("cargo".into()))
            .args(["build", "--release", "--quiet", "-p", package])
            .current_dir(&root)
            .status();
        match status {
            Ok(s) if s.success() => {}
            Ok(s) => eprintln!("note: cargo build -p {package} exited with {s}"),
            Err(e) => eprintln!("note: could not run cargo to build {package}: {e}"),
        }
    }
    find().with_context(|| {
        format!(
            "cannot find the {name} binary in {:?}; build it with `cargo build --release -p {package}` or set {env}",
            candidates
        )
    })
}

fn candidate_dirs() -> Vec<PathBuf> {
    let mut v = Vec::new();
    if let Ok(exe) = std::env::current_exe() {
        if let Some(d) = exe.parent() {
            v.push(d.to_path_buf());
            // examples/ or deps/ one level down
            if let Some(up) = d.parent() {
                v.push(up.to_path_buf());
            }
        }
    }
    if let Ok(t) = std::env::var("CARGO_TARGET_DIR") {
        v.push(PathBuf::from(t).join("release"));
    }
    v.push(workspace_root().join("target").join("release"));
    v
}

/// A free TCP port on 127.0.0.1 (bound and released; fine on a quiet loopback), never one this
/// process was given before: the kernel may hand a just-released port out again, and two
/// listeners of one witness on the same port is a configuration the witness refuses.
pub fn free_port() -> Result<u16> {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    for _ in 0..100 {
        let l = std::net::TcpListener::bind("127.0.0.1:0").context("binding 127.0.0.1:0")?;
        let port = l.local_addr()?.port();
        let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
        if !given.contains(&port) {
            given.push(port);
            return Ok(port);
        }
    }
    bail!("no free port on 127.0.0.1 not given out before in 100 tries")
}

/// Milliseconds as seconds with three decimals.
pub fn secs(ms: f64) -> String {
    format!("{:.3} s", ms / 1000.0)
}
