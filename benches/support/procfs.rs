//! Readings from /proc: memory, thread and descriptor counts, CPU time, read syscalls, the
//! filesystem under a path, the load average and what the machine is. Linux only, like the benches.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;

/// A numeric field of /proc/`pid`/status as written (kB for sizes); `pid` may
/// be `"self"`.
pub fn status_raw_of(pid: &str, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    line[field.len()..]
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

/// A numeric field of /proc/self/status as written (kB for sizes).
pub fn status_raw(field: &str) -> Option<u64> {
    status_raw_of("self", field)
}

/// A size field (`VmHWM:`, `VmRSS:`...) of /proc/self/status, in bytes.
pub fn status(field: &str) -> Option<u64> {
    Some(status_raw(field)? * 1024)
}

/// A size field of /proc/`pid`/status, in bytes.
pub fn status_of(pid: u32, field: &str) -> Option<u64> {
    Some(status_raw_of(&pid.to_string(), field)? * 1024)
}

/// Resets process `pid`'s VmHWM to its current RSS (/proc/`pid`/clear_refs,
/// which needs the right to write there: the same user, or root); false if
/// that was refused.
pub fn reset_peak_of(pid: u32) -> bool {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").is_ok()
}

/// How many file descriptors process `pid` has open (entries of /proc/`pid`/fd).
pub fn fd_count(pid: u32) -> Option<u64> {
    let dir = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?;
    Some(dir.count() as u64)
}

/// Tracks the process's peak RSS across rows: VmHWM is reset to the current RSS
/// before each row (via /proc/self/clear_refs, if permitted) so each row gets its
/// own peak, and the lifetime peak is the maximum of every reading.
pub struct Peak {
    pub lifetime: u64,
    resettable: bool,
}

impl Peak {
    pub fn new() -> Peak {
        Peak {
            lifetime: status("VmHWM:").unwrap_or(0),
            resettable: true,
        }
    }

    pub fn reset(&mut self) {
        self.lifetime = self.lifetime.max(status("VmHWM:").unwrap_or(0));
        if self.resettable {
            self.resettable = std::fs::write("/proc/self/clear_refs", "5").is_ok();
        }
    }

    /// The peak since the last reset (None if resetting is not possible).
    pub fn read(&mut self) -> Option<u64> {
        let hwm = status("VmHWM:")?;
        self.lifetime = self.lifetime.max(hwm);
        self.resettable.then_some(hwm)
    }
}

/// CPU seconds used by the process so far (/proc/self/stat utime + stime).
pub fn process_cpu() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return 0.0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = [11, 12]
        .iter()
        .filter_map(|&i| fields.get(i)?.parse::<u64>().ok())
        .sum();
    // USER_HZ is 100 on every Linux this runs on.
    ticks as f64 / 100.0
}

/// CPU seconds process `pid` has used so far (utime + stime), and with
/// `reaped` also those of its children that exited and were waited for
/// (cutime + cstime); None once it is gone.
pub fn cpu_of(pid: u32, reaped: bool) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let wanted: &[usize] = if reaped { &[11, 12, 13, 14] } else { &[11, 12] };
    let ticks: u64 = wanted
        .iter()
        .filter_map(|&i| fields.get(i)?.parse::<u64>().ok())
        .sum();
    // USER_HZ is 100 on every Linux this runs on.
    Some(ticks as f64 / 100.0)
}

/// The processes whose parent is `pid` (a scan of /proc).
pub fn children_of(pid: u32) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|entry| {
        let child: u32 = entry.ok()?.file_name().to_str()?.parse().ok()?;
        let stat = std::fs::read_to_string(format!("/proc/{child}/stat")).ok()?;
        let (_, rest) = stat.rsplit_once(')')?;
        let parent: u32 = rest.split_whitespace().nth(1)?.parse().ok()?;
        (parent == pid).then_some(child)
    })
    .collect()
}

/// The process's read syscalls and bytes read so far (/proc/self/io).
pub fn reads_so_far() -> Option<(u64, u64)> {
    let io = std::fs::read_to_string("/proc/self/io").ok()?;
    let field = |name: &str| -> Option<u64> {
        io.lines()
            .find_map(|l| l.strip_prefix(name))?
            .trim()
            .parse()
            .ok()
    };
    Some((field("syscr:")?, field("rchar:")?))
}

/// What the process did over a window: CPU used (utime + stime, in seconds)
/// and the most threads it had (workers + blocking pool + the bench's).
#[derive(Clone, Copy)]
pub struct Process {
    pub cpu: f64,
    pub secs: f64,
    pub max_threads: u64,
}

/// Samples the thread count every 10 ms until finished.
pub struct Monitor {
    started: Instant,
    cpu: f64,
    stop: Arc<AtomicBool>,
    task: JoinHandle<u64>,
}

impl Monitor {
    pub fn start() -> Monitor {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let task = tokio::spawn(async move {
            let mut max = 0;
            while !flag.load(Ordering::Relaxed) {
                max = max.max(status_raw("Threads:").unwrap_or(0));
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            max
        });
        Monitor {
            started: Instant::now(),
            cpu: process_cpu(),
            stop,
            task,
        }
    }

    pub async fn finish(self) -> Process {
        let cpu = process_cpu() - self.cpu;
        let secs = self.started.elapsed().as_secs_f64();
        self.stop.store(true, Ordering::Relaxed);
        let max_threads = self.task.await.expect("monitor");
        Process {
            cpu,
            secs,
            max_threads,
        }
    }
}

/// The filesystem type holding `path`, from /proc/mounts (longest mount point).
pub fn filesystem_of(path: &Path) -> String {
    let path = path.canonicalize().unwrap_or_else(|_| path.to_owned());
    let Ok(mounts) = std::fs::read_to_string("/proc/mounts") else {
        return "unknown filesystem".into();
    };
    mounts
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let (dev, at, fs) = (f.next()?, f.next()?, f.next()?);
            let at = at.replace("\\040", " ");
            path.starts_with(&at)
                .then(|| (at.len(), format!("{fs} on {dev}")))
        })
        .max_by_key(|(len, _)| *len)
        .map_or_else(|| "unknown filesystem".into(), |(_, fs)| fs)
}

/// /proc/loadavg's 1, 5 and 15 minute figures: other work on the machine skews
/// every bench figure.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|| "unknown".into())
}

/// The machine in one line: CPUs (and their model), memory, kernel.
pub fn machine() -> String {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map_or_else(|| "unknown model".into(), |(_, m)| m.trim().to_owned());
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_kib: u64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map_or_else(|_| "unknown".into(), |k| k.trim().to_owned());
    format!(
        "{cpus} CPU(s) ({model}), {:.1} GiB memory, Linux {kernel}",
        mem_kib as f64 / (1024.0 * 1024.0)
    )
}
