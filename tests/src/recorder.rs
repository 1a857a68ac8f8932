//! The recorder: a unix stream socket every agent's `event_socket` points to (unix sockets work
//! across network namespaces), plus the harness's own events (faults, kills, resets, watchdog
//! pets, drbdadm calls). Every event is stamped on arrival with the harness's monotonic clock,
//! which never runs under faketime: the one clock the checker judges on.
use serde::Serialize;
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The recorder's threads never outlive this (a bound on their loops).
const MAX_LIFE: Duration = Duration::from_secs(3600);

/// One recorded event.
#[derive(Clone, Debug, Serialize)]
pub struct Event {
    /// Milliseconds since the recorder started, on the harness's monotonic clock.
    pub t: u64,
    /// The node (or `witness` / `harness`).
    pub node: String,
    /// The node's room (empty for the witness and the harness).
    pub room: String,
    /// `phase`, `takeover`, `lease`, ... (agent events) or `fault`, `reset`, `power_off`,
    /// `boot`, `agent_kill`, `agent_start`, `pet`, `wd_armed`, `wd_disarmed`, `drbdadm`,
    /// `vm_start`, `vm_stopped`, `witness_kill`, `witness_start`, `admin` (harness events).
    pub kind: String,
    pub data: Value,
}

impl Event {
    pub fn str(&self, key: &str) -> &str {
        self.data.get(key).and_then(Value::as_str).unwrap_or("")
    }
    pub fn u64(&self, key: &str) -> Option<u64> {
        self.data.get(key).and_then(Value::as_u64)
    }
}

/// The shared timeline.
#[derive(Clone)]
pub struct Recorder {
    start: Instant,
    events: Arc<Mutex<Vec<Event>>>,
    stop: Arc<AtomicBool>,
    pub socket: PathBuf,
}

impl Recorder {
    /// Listens on `socket` (a thread accepts; one thread per agent connection).
    pub fn start(socket: &Path) -> anyhow::Result<Recorder> {
        let listener = UnixListener::bind(socket)?;
        listener.set_nonblocking(true)?;
        let r = Recorder {
            start: Instant::now(),
            events: Arc::new(Mutex::new(Vec::new())),
            stop: Arc::new(AtomicBool::new(false)),
            socket: socket.to_path_buf(),
        };
        let me = r.clone();
        std::thread::spawn(move || me.accept_loop(listener));
        Ok(r)
    }

    /// Milliseconds since the start, on the harness clock.
    pub fn now(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    fn accept_loop(&self, listener: UnixListener) {
        while !self.stop.load(Ordering::SeqCst) && self.start.elapsed() < MAX_LIFE {
            match listener.accept() {
                Ok((s, _)) => {
                    let _ = s.set_nonblocking(false);
                    let _ = s.set_read_timeout(Some(Duration::from_millis(200)));
                    let me = self.clone();
                    std::thread::spawn(move || me.read_conn(s));
                }
                Err(_) => std::thread::sleep(Duration::from_millis(5)),
            }
        }
    }

    fn read_conn(&self, s: std::os::unix::net::UnixStream) {
        let mut r = BufReader::new(s);
        let mut line = String::new();
        while !self.stop.load(Ordering::SeqCst) && self.start.elapsed() < MAX_LIFE {
            match r.read_line(&mut line) {
                Ok(0) => return,
                Ok(_) => {
                    if line.ends_with('\n') {
                        self.agent_line(line.trim());
                        line.clear();
                    }
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(_) => return,
            }
        }
    }

    fn agent_line(&self, line: &str) {
        let Ok(v) = serde_json::from_str::<Value>(line) else {
            self.push("harness", "", "bad_event", Value::String(line.to_string()));
            return;
        };
        let kind = v.get("event").and_then(Value::as_str).unwrap_or("?");
        let node = v.get("node").and_then(Value::as_str).unwrap_or("?");
        let room = v.get("room").and_then(Value::as_str).unwrap_or("");
        self.push(node, room, kind, v.clone());
    }

    /// Records an event now.
    pub fn push(&self, node: &str, room: &str, kind: &str, data: Value) {
        // Stamped under the lock, so arrival order is time order.
        if let Ok(mut v) = self.events.lock() {
            v.push(Event {
                t: self.now(),
                node: node.to_string(),
                room: room.to_string(),
                kind: kind.to_string(),
                data,
            });
        }
    }

    /// A copy of the timeline so far (in arrival order, which is time order).
    pub fn events(&self) -> Vec<Event> {
        self.events.lock().map(|v| v.clone()).unwrap_or_default()
    }

    pub fn shutdown(&self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}
