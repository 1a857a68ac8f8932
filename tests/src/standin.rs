//! Stand-ins for what this machine lacks, faithful at the interface:
//!
//! * **Watchdog**: a FIFO per node, given to the agent as `[watchdog] device` (`wdctl = ""`).
//!   The agent opens it (a real device arms on open), writes one byte per pet and `V` before a
//!   magic close. [`WatchdogFifo`] reads it without blocking, stamps pets with the harness clock
//!   and says when pets stopped for longer than the timeout (the harness then resets the node).
//! * **drbdadm**: a shell script at the agent's `[drbd] drbdadm` path that appends its command
//!   line to a log the harness polls (stamped on read) and answers `role` with `Primary` until a
//!   `secondary` ran, `Secondary` after.
use anyhow::{Context, Result};
use std::fs::File;
use std::io::{ErrorKind, Read};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// What one poll of a watchdog FIFO saw.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct WdPoll {
    /// The device was opened (armed) since the last poll.
    pub armed: bool,
    pub pets: u32,
    /// Magic close: `V` then close: disarmed.
    pub disarmed: bool,
    /// Closed without `V`: still armed (the timer runs on).
    pub closed_armed: bool,
    /// Pets stopped for longer than the timeout while armed: reset the node.
    pub expired: bool,
}

/// The harness's side of one node's watchdog.
pub struct WatchdogFifo {
    pub path: PathBuf,
    file: File,
    timeout: Duration,
    armed: bool,
    writer_open: bool,
    last_pet: Instant,
    last_byte_v: bool,
}

impl WatchdogFifo {
    /// Makes the FIFO and opens it for reading (non-blocking, so the agent's open succeeds).
    pub fn create(path: &Path, timeout: Duration) -> Result<WatchdogFifo> {
        crate::net::run("mkfifo", &["-m", "0600", &path.to_string_lossy()])?;
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(path)
            .with_context(|| format!("open {}", path.display()))?;
        Ok(WatchdogFifo {
            path: path.to_path_buf(),
            file,
            timeout,
            armed: false,
            writer_open: false,
            last_pet: Instant::now(),
            last_byte_v: false,
        })
    }

    /// Reads what is there; `now` is the harness clock.
    pub fn poll(&mut self, now: Instant) -> WdPoll {
        let mut out = WdPoll::default();
        let mut buf = [0u8; 256];
        for _ in 0..64 {
            match self.file.read(&mut buf) {
                Ok(0) => {
                    // No writer (never opened, or closed).
                    if self.writer_open {
                        self.writer_open = false;
                        if self.armed && self.last_byte_v {
                            self.armed = false;
                            out.disarmed = true;
                        } else if self.armed {
                            out.closed_armed = true;
                        }
                    }
                    break;
                }
                Ok(n) => {
                    self.note_open(now, &mut out);
                    let bytes = &buf[..n];
                    let pets = bytes.iter().filter(|b| **b != b'V').count() as u32;
                    if pets > 0 {
                        self.last_pet = now;
                        out.pets += pets;
                    }
                    self.last_byte_v = bytes.last() == Some(&b'V');
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    // A writer holds it open (a real device is armed by the open).
                    self.note_open(now, &mut out);
                    break;
                }
                Err(_) => break,
            }
        }
        if self.armed && now.duration_since(self.last_pet) > self.timeout {
            out.expired = true;
        }
        out
    }

    fn note_open(&mut self, now: Instant, out: &mut WdPoll) {
        if !self.writer_open {
            self.writer_open = true;
            self.last_byte_v = false;
            if !self.armed {
                self.armed = true;
                self.last_pet = now;
                out.armed = true;
            }
        }
    }

    /// After a reset: the node's watchdog is disarmed until its next agent opens it.
    pub fn reset(&mut self) {
        self.armed = false;
        self.last_byte_v = false;
        // Drain anything left from the dead agent.
        let mut buf = [0u8; 256];
        for _ in 0..64 {
            match self.file.read(&mut buf) {
                Ok(n) if n > 0 => continue,
                _ => break,
            }
        }
        self.writer_open = false;
    }
}

/// Writes the drbdadm stand-in for one node into `dir`; returns (script, log).
pub fn drbdadm_script(dir: &Path) -> Result<(PathBuf, PathBuf)> {
    let script = dir.join("drbdadm");
    let log = dir.join("drbdadm.log");
    let demoted = dir.join("drbd-secondary");
    let text = format!(
        "#!/bin/sh\n\
         # drbdadm stand-in (no DRBD kernel module here): records the command line, answers role.\n\
         echo \"$*\" >> '{log}'\n\
         case \" $* \" in\n\
         *' role '*) if [ -e '{d}' ]; then echo Secondary; else echo Primary; fi ;;\n\
         *' secondary '*) touch '{d}' ;;\n\
         *' primary '*) rm -f '{d}' ;;\n\
         esac\n\
         exit 0\n",
        log = log.display(),
        d = demoted.display()
    );
    std::fs::write(&script, text)?;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755))?;
    std::fs::write(&log, "")?;
    Ok((script, log))
}

/// Tails a log file: returns the complete lines added since the last call.
pub struct Tail {
    path: PathBuf,
    pos: usize,
}

impl Tail {
    pub fn new(path: &Path) -> Tail {
        Tail {
            path: path.to_path_buf(),
            pos: 0,
        }
    }

    pub fn lines(&mut self) -> Vec<String> {
        let Ok(text) = std::fs::read_to_string(&self.path) else {
            return Vec::new();
        };
        if text.len() < self.pos {
            self.pos = 0;
        }
        let new = &text[self.pos..];
        let Some(end) = new.rfind('\n') else {
            return Vec::new();
        };
        self.pos += end + 1;
        new[..end].lines().map(str::to_string).collect()
    }
}
