//! What /proc says about a process and the machine, and sending signals without `unsafe`.
use std::time::Duration;

/// Resident set size of a process in KiB (`VmRSS`), if it is alive.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Peak resident set size in KiB (`VmHWM`).
pub fn peak_rss_kib(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// CPU time (user + system) a process has used so far.
pub fn cpu_time(pid: u32) -> Option<Duration> {
    cpu_split(pid).map(|(user, kernel)| user + kernel)
}

/// CPU time a process has used so far, split into user space and the kernel (its system
/// calls, the network stack's work on its behalf): the two parts answer to different changes.
pub fn cpu_split(pid: u32) -> Option<(Duration, Duration)> {
    parse_cpu(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

fn parse_cpu(stat: &str) -> Option<(Duration, Duration)> {
    // Fields after the command name (which may hold spaces) in parentheses.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    // USER_HZ is 100 on every Linux we run on.
    Some((
        Duration::from_millis(utime * 10),
        Duration::from_millis(stime * 10),
    ))
}

/// A process's `/proc/<pid>/stat`, opened once and read again in place: for a measurement
/// taken while this process holds nearly every file descriptor it may open (a load generator
/// with one connection per lease), when opening the file anew can fail.
pub struct StatFile(std::fs::File);

impl StatFile {
    pub fn open(pid: u32) -> Option<StatFile> {
        std::fs::File::open(format!("/proc/{pid}/stat"))
            .ok()
            .map(StatFile)
    }

    /// CPU time used so far, user and kernel together.
    pub fn cpu_time(&mut self) -> Option<Duration> {
        use std::io::{Read, Seek, SeekFrom};
        self.0.seek(SeekFrom::Start(0)).ok()?;
        let mut stat = String::new();
        self.0.read_to_string(&mut stat).ok()?;
        parse_cpu(&stat).map(|(user, kernel)| user + kernel)
    }
}

/// Sends a signal by name (`TERM`, `KILL`) with the `kill` utility.
pub fn signal(pid: u32, sig: &str) -> bool {
    std::process::Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status()
        .is_ok_and(|s| s.success())
}

/// One line describing the machine: cores, CPU model, memory, kernel.
pub fn machine() -> String {
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, m)| m.trim().to_string())
        .unwrap_or_else(|| "unknown CPU".into());
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|k| k.parse::<u64>().ok())
        })
        .map(|k| format!("{:.1} GiB", k as f64 / 1024.0 / 1024.0))
        .unwrap_or_else(|| "?".into());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    format!("{cpus} cores, {model}, {mem} RAM, Linux {kernel}")
}

/// This process's soft limit on open files (`/proc/self/limits`).
pub fn nofile_limit() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/limits").ok()?;
    s.lines()
        .find(|l| l.starts_with("Max open files"))?
        .split_whitespace()
        .nth(3)?
        .parse()
        .ok()
}

/// Time the threads of a process spent waiting on a run queue for a CPU (sum of the second
/// field of `/proc/<pid>/task/*/schedstat`): direct evidence of CPU contention.
pub fn runqueue_wait(pid: u32) -> Option<Duration> {
    let mut ns: u64 = 0;
    for t in std::fs::read_dir(format!("/proc/{pid}/task"))
        .ok()?
        .flatten()
    {
        let s = std::fs::read_to_string(t.path().join("schedstat")).unwrap_or_default();
        ns += s
            .split_whitespace()
            .nth(1)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
    }
    Some(Duration::from_nanos(ns))
}

/// Machine-wide CPU time (busy, total) in clock ticks from the first line of `/proc/stat`.
pub fn machine_cpu_ticks() -> Option<(u64, u64)> {
    let s = std::fs::read_to_string("/proc/stat").ok()?;
    let v: Vec<u64> = s
        .lines()
        .next()?
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    let total: u64 = v.iter().take(8).sum();
    let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
    Some((total - idle, total))
}
