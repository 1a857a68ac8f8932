//! The watchdog: the last line of fencing. The agent holds the device open and pets it (writes
//! one byte) only when the state machine emits `PetWatchdog`; when fencing fails or overruns the
//! state machine stops petting and the machine resets within the device's timeout.
//!
//! The device is held by a dedicated thread, so a device or FIFO that blocks can never stall the
//! agent: pets are queued with `try_send` and dropped if the thread is stuck (a stuck thread
//! does not pet, which is the safe direction).
//!
//! Timeout: the crate forbids `unsafe`, and the `WDIOC_SETTIMEOUT` ioctl has no safe binding,
//! so the agent sets the timeout with util-linux `wdctl -s <seconds>` before it opens the device
//! (when `watchdog.wdctl` is set), then reads it back from sysfs and reports a device whose
//! timeout is longer than `timings.watchdog_timeout_ms` (the bound the takeover wait relies on).
//! The driver's module parameter (e.g. `softdog.soft_margin`, `iTCO_wdt.heartbeat`) does the
//! same where wdctl cannot.
//!
//! A device already held by another process (EBUSY: SBD, self-node-remediation) is reported in
//! the status, the `agent_watchdog_held` metric and the log, and the open is retried every
//! second.
//!
//! Magic close (`V`) is written only on a clean shutdown of a node that runs no workloads
//! (phase starting or fenced); a node that is active or fencing keeps the watchdog armed when
//! the agent exits, so the machine resets unless a successor agent takes the device over in
//! time. That is what lets the other room's takeover wait count on this node being stopped.
use super::{DriverReport, FenceContext, FenceDriver, FenceError};
use crate::config::WatchdogConfig;
use futures::future::BoxFuture;
use serde::Serialize;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{sync_channel, RecvTimeoutError, SyncSender, TrySendError};
use std::time::Duration;
use tokio::sync::watch;

/// How often the thread retries opening a device it could not open.
const REOPEN: Duration = Duration::from_secs(1);

/// What the status page shows about the watchdog.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct WatchdogStatus {
    pub enabled: bool,
    pub device: String,
    pub held: bool,
    /// Why the device is not held, or what is wrong with it.
    pub error: Option<String>,
    /// The device's timeout in seconds as read back from sysfs (real devices only).
    pub timeout_s: Option<u64>,
    pub pets: u64,
    /// Set once the agent let go of the device: `magic close` or `left armed`.
    pub released: Option<String>,
}

enum Cmd {
    Pet,
    Close { magic: bool },
}

/// The handle the agent uses.
pub struct Watchdog {
    tx: Option<SyncSender<Cmd>>,
    status: watch::Receiver<WatchdogStatus>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Watchdog {
    /// Starts holding the device (if enabled). `timeout_ms` is `timings.watchdog_timeout_ms`.
    pub fn start(cfg: &WatchdogConfig, timeout_ms: u64) -> Watchdog {
        let (stx, srx) = watch::channel(WatchdogStatus {
            enabled: cfg.enabled,
            device: cfg.device.display().to_string(),
            ..Default::default()
        });
        if !cfg.enabled {
            return Watchdog {
                tx: None,
                status: srx,
                thread: None,
            };
        }
        let (tx, rx) = sync_channel::<Cmd>(8);
        let cfg = cfg.clone();
        let thread = std::thread::Builder::new()
            .name("watchdog".into())
            .spawn(move || hold(cfg, timeout_ms, rx, stx))
            .map_err(|e| tracing::error!("cannot start the watchdog thread: {e}"))
            .ok();
        Watchdog {
            tx: Some(tx),
            status: srx,
            thread,
        }
    }

    /// Pets the device (no-op when disabled or not held).
    pub fn pet(&self) {
        if let Some(tx) = &self.tx {
            if let Err(TrySendError::Full(_)) = tx.try_send(Cmd::Pet) {
                tracing::warn!("watchdog thread is not keeping up; pet dropped");
            }
        }
    }

    pub fn status(&self) -> watch::Receiver<WatchdogStatus> {
        self.status.clone()
    }

    /// Lets go of the device: with `magic` the device is disarmed (`V`), else it stays armed.
    pub fn close(mut self, magic: bool) {
        if let Some(tx) = self.tx.take() {
            let _ = tx.send(Cmd::Close { magic });
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn open_device(path: &Path) -> Result<File, String> {
    OpenOptions::new()
        .append(true)
        // A FIFO stand-in without a reader fails at once (ENXIO) instead of blocking.
        .custom_flags(rustix::fs::OFlags::NONBLOCK.bits() as i32)
        .open(path)
        .map_err(|e| {
            if e.raw_os_error() == Some(rustix::io::Errno::BUSY.raw_os_error()) {
                format!(
                    "{} is held by another process (EBUSY): SBD or self-node-remediation may \
                     be using it; the agent cannot use the watchdog as its last line until it \
                     is free",
                    path.display()
                )
            } else {
                format!("cannot open {}: {e}", path.display())
            }
        })
}

/// The sysfs file holding a real watchdog device's timeout.
fn sysfs_timeout_path(path: &Path) -> Option<PathBuf> {
    let md = std::fs::metadata(path).ok()?;
    if !md.file_type().is_char_device() {
        return None;
    }
    let dev = md.rdev();
    let (maj, min) = (rustix::fs::major(dev), rustix::fs::minor(dev));
    let p = PathBuf::from(format!("/sys/dev/char/{maj}:{min}/timeout"));
    if p.exists() {
        return Some(p);
    }
    // The legacy /dev/watchdog (misc 10:130) is an alias of watchdog0.
    Some(PathBuf::from("/sys/class/watchdog/watchdog0/timeout"))
}

/// Sets the timeout with wdctl and reads it back; returns (timeout, problem).
fn prepare(cfg: &WatchdogConfig, timeout_ms: u64) -> (Option<u64>, Option<String>) {
    let Some(sysfs) = sysfs_timeout_path(&cfg.device) else {
        return (None, None); // a stand-in (FIFO or file): nothing to configure
    };
    let want = timeout_ms.div_ceil(1000);
    if !cfg.wdctl.is_empty() {
        let r = std::process::Command::new(&cfg.wdctl)
            .arg("-s")
            .arg(want.to_string())
            .arg(&cfg.device)
            .stdin(std::process::Stdio::null())
            .output();
        match r {
            Ok(o) if o.status.success() => {}
            Ok(o) => tracing::warn!(
                "{} -s {want} failed: {}",
                cfg.wdctl,
                String::from_utf8_lossy(&o.stderr).trim()
            ),
            Err(e) => tracing::warn!("cannot run {}: {e}", cfg.wdctl),
        }
    }
    let got = std::fs::read_to_string(&sysfs)
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok());
    match got {
        Some(s) if s > want => (
            Some(s),
            Some(format!(
                "device timeout is {s} s but timings.watchdog_timeout_ms is {timeout_ms}: the \
                 takeover wait does not cover this reset; set the driver's timeout to {want} s"
            )),
        ),
        Some(s) => (Some(s), None),
        None => (
            None,
            Some(format!(
                "cannot read the device timeout from {}: make sure it is at most {want} s",
                sysfs.display()
            )),
        ),
    }
}

fn hold(
    cfg: WatchdogConfig,
    timeout_ms: u64,
    rx: std::sync::mpsc::Receiver<Cmd>,
    status: watch::Sender<WatchdogStatus>,
) {
    let mut file: Option<File> = None;
    let mut last_error: Option<String> = None;
    let mut prepared = false;
    loop {
        if file.is_none() {
            if !prepared {
                let (t, problem) = prepare(&cfg, timeout_ms);
                prepared = true;
                if let Some(p) = &problem {
                    tracing::error!("watchdog: {p}");
                }
                status.send_modify(|s| {
                    s.timeout_s = t;
                    s.error = problem;
                });
            }
            match open_device(&cfg.device) {
                Ok(f) => {
                    tracing::info!(device = %cfg.device.display(), "watchdog device held");
                    file = Some(f);
                    last_error = None;
                    status.send_modify(|s| {
                        s.held = true;
                        if s.error.as_deref().is_some_and(|e| e.contains("open")) {
                            s.error = None;
                        }
                    });
                }
                Err(e) => {
                    if last_error.as_ref() != Some(&e) {
                        tracing::error!("watchdog: {e}");
                        last_error = Some(e.clone());
                    }
                    status.send_modify(|s| {
                        s.held = false;
                        s.error = Some(e);
                    });
                }
            }
        }
        match rx.recv_timeout(REOPEN) {
            Ok(Cmd::Pet) => {
                if let Some(f) = file.as_mut() {
                    match f.write_all(b"\0") {
                        Ok(()) => status.send_modify(|s| s.pets += 1),
                        Err(e) => {
                            let msg = format!("petting {} failed: {e}", cfg.device.display());
                            if last_error.as_ref() != Some(&msg) {
                                tracing::error!("watchdog: {msg}");
                                last_error = Some(msg.clone());
                            }
                            status.send_modify(|s| s.error = Some(msg));
                        }
                    }
                }
            }
            Ok(Cmd::Close { magic }) => {
                if let Some(mut f) = file.take() {
                    let how = if magic {
                        let _ = f.write_all(b"V");
                        "magic close: watchdog disarmed"
                    } else {
                        "left armed: the machine resets unless a new agent takes over the device"
                    };
                    tracing::warn!("watchdog {how}");
                    drop(f);
                    status.send_modify(|s| {
                        s.held = false;
                        s.released = Some(how.into());
                    });
                }
                return;
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
    }
}

/// The fencing step for the watchdog: confirms the last line is armed.
pub struct WatchdogDriver {
    pub status: watch::Receiver<WatchdogStatus>,
}

impl FenceDriver for WatchdogDriver {
    fn name(&self) -> &'static str {
        "watchdog"
    }

    fn deadline(&self) -> Duration {
        Duration::from_millis(100)
    }

    fn fence<'a>(
        &'a self,
        _ctx: &'a FenceContext,
    ) -> BoxFuture<'a, Result<DriverReport, FenceError>> {
        Box::pin(async move {
            let s = self.status.borrow().clone();
            if !s.enabled {
                return Ok(DriverReport::skipped("watchdog.enabled = false"));
            }
            if s.held {
                Ok(DriverReport::ok(format!(
                    "{} is held and armed: it resets the machine if fencing does not complete",
                    s.device
                )))
            } else {
                Err(FenceError::Failed(format!(
                    "{} is not held: {}",
                    s.device,
                    s.error.unwrap_or_default()
                )))
            }
        })
    }
}
