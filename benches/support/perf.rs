//! What a batch of requests costs a server, per request, from the kernel's
//! counters (`perf stat` attached to the server's processes): CPU time, context
//! switches, system calls, page faults and, when asked, `malloc` calls (a
//! uprobe on libc's). docs/performance.md says how the figures are read.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// The counters, in `perf stat`'s names, and how they are shown.
const EVENTS: &[(&str, &str)] = &[
    ("task-clock", "CPU µs"),
    ("context-switches", "ctx sw"),
    ("raw_syscalls:sys_enter", "syscalls"),
    ("page-faults", "faults"),
];
/// The uprobe `perf probe -x <libc> malloc` makes.
const MALLOC: (&str, &str) = ("probe_libc:malloc", "mallocs");

/// Whether, and what, to count (`UPSLOT_LOADGEN_PERF`: `stat`, or `alloc` to
/// count `malloc` calls too (the uprobe slows every call, so times taken with
/// it are not comparable), or `record` to sample call stacks into
/// `UPSLOT_LOADGEN_PERF_DIR` (default /var/tmp/upslot-perf), one file per
/// server and batch, for `perf report -i`).
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Off,
    Stat,
    Alloc,
    Record,
}

impl Mode {
    pub fn from_env() -> Mode {
        match std::env::var("UPSLOT_LOADGEN_PERF").as_deref() {
            Ok("stat") | Ok("1") => Mode::Stat,
            Ok("alloc") => Mode::Alloc,
            Ok("record") => Mode::Record,
            Ok("") | Err(_) | Ok("0") | Ok("off") => Mode::Off,
            Ok(other) => panic!("UPSLOT_LOADGEN_PERF={other}: stat, alloc, record or off"),
        }
    }

    /// The counters' labels, in the order [`Counting::finish`] returns them.
    pub fn labels(self) -> Vec<&'static str> {
        if matches!(self, Mode::Off | Mode::Record) {
            return Vec::new();
        }
        let mut labels: Vec<_> = EVENTS.iter().map(|e| e.1).collect();
        if self == Mode::Alloc {
            labels.push(MALLOC.1);
        }
        labels
    }

    fn events(self) -> Vec<&'static str> {
        let mut events: Vec<_> = EVENTS.iter().map(|e| e.0).collect();
        if self == Mode::Alloc {
            events.push(MALLOC.0);
        }
        events
    }

    /// Makes the malloc uprobe if the mode needs it; panics if perf cannot.
    pub fn prepare(self) {
        if self != Mode::Alloc {
            return;
        }
        let libc = [
            "/lib/x86_64-linux-gnu/libc.so.6",
            "/usr/lib/x86_64-linux-gnu/libc.so.6",
        ]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("libc.so.6 for the malloc uprobe");
        let out = Command::new("perf")
            .args(["probe", "-q", "-x", libc, "malloc"])
            .output()
            .expect("perf probe");
        let text = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() || text.contains("already exists"),
            "perf probe -x {libc} malloc: {text}"
        );
    }
}

/// `perf stat` attached to some processes until [`Counting::finish`].
pub struct Counting {
    child: Child,
    output: PathBuf,
    mode: Mode,
}

impl Counting {
    /// Starts counting for `pids` and every thread they have or start; `name`
    /// names the recording in [`Mode::Record`], `output` the counts otherwise.
    pub fn start(mode: Mode, pids: &[u32], name: &str, output: PathBuf) -> Option<Counting> {
        if mode == Mode::Off {
            return None;
        }
        let pids = pids
            .iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(",");
        let mut perf = Command::new("perf");
        if mode == Mode::Record {
            let dir = PathBuf::from(
                std::env::var("UPSLOT_LOADGEN_PERF_DIR").unwrap_or("/var/tmp/upslot-perf".into()),
            );
            std::fs::create_dir_all(&dir).expect("UPSLOT_LOADGEN_PERF_DIR");
            perf.args(["record", "-q", "-F", "9999", "-g", "-o"])
                .arg(dir.join(format!("{name}.data")));
        } else {
            perf.args(["stat", "-x", ",", "-e", &mode.events().join(",")])
                .arg("-o")
                .arg(&output);
        }
        let child = perf
            .args(["-p", &pids])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("perf stat (install linux-perf)");
        // perf attaches asynchronously: give it a moment before the load.
        std::thread::sleep(std::time::Duration::from_millis(200));
        Some(Counting {
            child,
            output,
            mode,
        })
    }

    /// Stops counting; the totals, in [`Mode::labels`] order (NaN where perf
    /// had none). Task-clock is in microseconds.
    pub fn finish(mut self) -> Vec<f64> {
        let _ = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
        if self.mode == Mode::Record {
            return Vec::new();
        }
        let text = std::fs::read_to_string(&self.output).unwrap_or_default();
        self.mode
            .events()
            .iter()
            .map(|event| {
                text.lines()
                    .map(|l| l.split(',').collect::<Vec<_>>())
                    .find(|f| f.len() > 2 && f[2] == *event)
                    .and_then(|f| f[0].parse::<f64>().ok())
                    // task-clock comes in milliseconds.
                    .map_or(f64::NAN, |v| {
                        if *event == "task-clock" {
                            v * 1000.0
                        } else {
                            v
                        }
                    })
            })
            .collect()
    }
}

/// A process and its children (nginx's master and workers).
pub fn with_children(pid: u32) -> Vec<u32> {
    let mut pids = vec![pid];
    let children =
        std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
    pids.extend(
        children
            .split_whitespace()
            .filter_map(|c| c.parse::<u32>().ok()),
    );
    pids
}
