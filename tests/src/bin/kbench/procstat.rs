//! CPU time and memory of a process, read from `/proc` (Linux).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// User plus system CPU seconds of process `pid` (`self` for this one).
pub(crate) fn cpu_seconds(pid: &str) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return f64::NAN;
    };
    // The command name may hold spaces: the fields start after its ')'.
    let Some((_, fields)) = stat.rsplit_once(')') else {
        return f64::NAN;
    };
    let fields: Vec<&str> = fields.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of stat(5); here they sit at 11 and 12.
    let ticks: f64 = fields[11].parse::<f64>().unwrap_or(f64::NAN)
        + fields[12].parse::<f64>().unwrap_or(f64::NAN);
    ticks / clock_ticks_per_second()
}

fn clock_ticks_per_second() -> f64 {
    use nix::unistd::{sysconf, SysconfVar};
    match sysconf(SysconfVar::CLK_TCK) {
        Ok(Some(ticks)) if ticks > 0 => ticks as f64,
        _ => 100.0,
    }
}

/// Resident memory of `pid` in bytes (`VmRSS`).
pub(crate) fn rss_bytes(pid: &str) -> u64 {
    status_kib(pid, "VmRSS:") * 1024
}

fn status_kib(pid: &str, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|line| line.starts_with(field))
                .and_then(|line| line.split_whitespace().nth(1))
                .and_then(|kib| kib.parse().ok())
        })
        .unwrap_or(0)
}

/// Page cache waiting to be written back (`Dirty` + `Writeback` of
/// `/proc/meminfo`), in bytes.
pub(crate) fn dirty_bytes() -> u64 {
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let kib = |field: &str| {
        meminfo
            .lines()
            .find(|line| line.starts_with(field))
            .and_then(|line| line.split_whitespace().nth(1))
            .and_then(|kib| kib.parse::<u64>().ok())
            .unwrap_or(0)
    };
    (kib("Dirty:") + kib("Writeback:")) * 1024
}

/// Waits until at most `bytes` of page cache wait for writeback, or `limit`.
pub(crate) fn wait_for_writeback(bytes: u64, limit: Duration) {
    let started = std::time::Instant::now();
    while dirty_bytes() > bytes && started.elapsed() < limit {
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Samples a process's RSS every 50 ms and keeps the peak, for one phase.
pub(crate) struct PeakRss {
    stop: Arc<AtomicBool>,
    peak: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
}

impl PeakRss {
    pub(crate) fn start(pid: u32) -> PeakRss {
        let stop = Arc::new(AtomicBool::new(false));
        let peak = Arc::new(AtomicU64::new(0));
        let thread = {
            let (stop, peak) = (stop.clone(), peak.clone());
            let pid = pid.to_string();
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    peak.fetch_max(rss_bytes(&pid), Ordering::Relaxed);
                    std::thread::sleep(Duration::from_millis(50));
                }
            })
        };
        PeakRss {
            stop,
            peak,
            thread: Some(thread),
        }
    }

    /// Stops sampling; the peak in bytes.
    pub(crate) fn finish(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        self.peak.load(Ordering::Relaxed)
    }
}

/// CPU seconds of the broker and of this process over a phase.
pub(crate) struct CpuMeter {
    broker_pid: String,
    broker_start: f64,
    own_start: f64,
}

impl CpuMeter {
    pub(crate) fn start(broker_pid: u32) -> CpuMeter {
        let broker_pid = broker_pid.to_string();
        CpuMeter {
            broker_start: cpu_seconds(&broker_pid),
            own_start: cpu_seconds("self"),
            broker_pid,
        }
    }

    /// `(broker, load generator)` CPU seconds since `start`.
    pub(crate) fn read(&self) -> (f64, f64) {
        (
            cpu_seconds(&self.broker_pid) - self.broker_start,
            cpu_seconds("self") - self.own_start,
        )
    }
}
