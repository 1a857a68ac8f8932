//! The watchdog: the last line of fencing. The agent holds the device open and pets it (writes
//! one byte) only when the state machine emits `PetWatchdog`; when fencing fails or overruns the
//! state machine stops petting and the machine resets within the device's timeout.
//!
//! The device is held by a dedicated thread, so a device or FIFO that blocks can never stall the
//! agent: pets are queued with `try_send` and dropped if the thread is stuck (a stuck thread
//! does not pet, which is the safe direction).
//!
//! Timeout: once it holds a real device (a character device) the agent sets its timeout to
//! `timings.watchdog_timeout_ms` (rounded up to whole seconds) with the `WDIOC_SETTIMEOUT` ioctl
//! on its own descriptor, and reads back what the driver accepted (`WDIOC_GETTIMEOUT`; drivers
//! round to what the hardware can count). A device whose timeout stays longer than W is
//! reported (status, log): the takeover wait of the other room relies on it. The ioctl is the
//! one `unsafe` call of the crate ([`ioctl_int`]). Verified against the emulated Intel 6300ESB
//! of qemu (`-device i6300esb -action watchdog=reset`) in the VM lab (`tests/vmlab/`). Stand-ins
//! (FIFOs, files) are not character devices and are left alone.
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
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;
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

/// `_IOR('W', 5, int)`, `_IOWR('W', 6, int)`, `_IOR('W', 7, int)` of `<linux/watchdog.h>`.
const WDIOC_KEEPALIVE: u64 = 0x8004_5705;
const WDIOC_SETTIMEOUT: u64 = 0xC004_5706;
const WDIOC_GETTIMEOUT: u64 = 0x8004_5707;

/// One watchdog ioctl whose argument is an `int` the kernel reads and/or writes back.
#[allow(unsafe_code)]
fn ioctl_int(f: &File, request: u64, value: i32) -> std::io::Result<i32> {
    use std::os::fd::AsRawFd;
    let mut v: libc::c_int = value;
    // SAFETY: `f` is an open descriptor borrowed for the whole call, and the three watchdog
    // requests above take a pointer to exactly one `int`, which `v` is and which outlives the
    // call; the kernel writes at most that `int` back.
    let r = unsafe { libc::ioctl(f.as_raw_fd(), request as _, &mut v as *mut libc::c_int) };
    if r < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(v)
    }
}

/// Sets a real device's timeout by ioctl and reads it back; returns (timeout, problem).
/// Stand-ins (not character devices) are left alone.
fn set_timeout(cfg: &WatchdogConfig, f: &File, timeout_ms: u64) -> (Option<u64>, Option<String>) {
    let is_chr = f.metadata().map(|m| m.file_type().is_char_device());
    if !matches!(is_chr, Ok(true)) {
        return (None, None);
    }
    let want = timeout_ms.div_ceil(1000);
    let dev = cfg.device.display();
    let set = i32::try_from(want)
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))
        .and_then(|w| ioctl_int(f, WDIOC_SETTIMEOUT, w));
    if let Err(e) = &set {
        tracing::warn!("WDIOC_SETTIMEOUT {want} s on {dev} failed: {e}");
    }
    // Pet once so the new timeout counts from now, whatever the driver did with the old one.
    let _ = ioctl_int(f, WDIOC_KEEPALIVE, 0);
    let got = ioctl_int(f, WDIOC_GETTIMEOUT, 0)
        .ok()
        .or(set.ok())
        .and_then(|v| u64::try_from(v).ok());
    match got {
        Some(s) if s > want => (
            Some(s),
            Some(format!(
                "{dev}: the driver kept a timeout of {s} s but timings.watchdog_timeout_ms is \
                 {timeout_ms}: the takeover wait does not cover this reset; use a device that \
                 accepts {want} s or raise timings.watchdog_timeout_ms to {}",
                s * 1000
            )),
        ),
        Some(s) => {
            tracing::info!(device = %dev, timeout_s = s, "watchdog timeout set by ioctl");
            (Some(s), None)
        }
        None => (
            None,
            Some(format!(
                "{dev}: the driver answers neither WDIOC_SETTIMEOUT nor WDIOC_GETTIMEOUT: make \
                 sure its timeout is at most {want} s (module parameter) or use another device"
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
    loop {
        if file.is_none() {
            match open_device(&cfg.device) {
                Ok(f) => {
                    tracing::info!(device = %cfg.device.display(), "watchdog device held");
                    let (t, problem) = set_timeout(&cfg, &f, timeout_ms);
                    if let Some(p) = &problem {
                        tracing::error!("watchdog: {p}");
                    }
                    file = Some(f);
                    last_error = None;
                    status.send_modify(|s| {
                        s.held = true;
                        s.timeout_s = t;
                        s.error = problem;
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
                        Ok(()) => {
                            // The VM lab times "last pet -> reset" from this line.
                            tracing::debug!(target: "watchdog_pet", "pet");
                            status.send_modify(|s| s.pets += 1)
                        }
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
