//! Servers under test as processes of their own: started with their output in
//! files, on a free 127.0.0.1 port, waited for (bounded), and stopped by PID when
//! dropped, also while unwinding from a panic.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::net::TcpStream;

/// A child process stopped (SIGTERM, then SIGKILL after 5 s) when dropped.
pub struct Proc {
    pub name: &'static str,
    pub child: Child,
    pub stderr: PathBuf,
    stopped: bool,
}

impl Proc {
    /// Starts `cmd` with stdout and stderr in `<log_dir>/<name>.stdout` and `.stderr`.
    pub fn spawn(name: &'static str, cmd: &mut Command, log_dir: &Path) -> Proc {
        let out = std::fs::File::create(log_dir.join(format!("{name}.stdout"))).expect("log file");
        let stderr = log_dir.join(format!("{name}.stderr"));
        let err = std::fs::File::create(&stderr).expect("log file");
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {name}: {e}"));
        Proc {
            name,
            child,
            stderr,
            stopped: false,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether it is still running (false once it exited, whyever).
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// The last `n` lines of its stderr.
    pub fn stderr_tail(&self, n: usize) -> Vec<String> {
        let err = std::fs::read_to_string(&self.stderr).unwrap_or_default();
        let mut tail: Vec<String> = err.lines().rev().take(n).map(str::to_owned).collect();
        tail.reverse();
        tail
    }

    pub fn stop(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            if !self.stopped {
                // It died on its own: say how, before its directory goes.
                eprintln!(
                    "{} exited on its own ({status}); its stderr ends:",
                    self.name
                );
                for line in self.stderr_tail(20) {
                    eprintln!("  {line}");
                }
                self.stopped = true;
            }
            return;
        }
        self.stopped = true;
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .stderr(Stdio::null())
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        eprintln!("{} did not stop on SIGTERM; killing it", self.name);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A port nothing listens on now, below Linux's ephemeral range (32768 and up)
/// so that no client connection of this run can take it before the server binds.
pub fn free_port() -> u16 {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let base = 20_000 + (std::process::id() as usize * 7) % 6000;
    for _ in 0..6000 {
        let port = (base + NEXT.fetch_add(1, Ordering::Relaxed) % 12_000) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port between 20000 and 32000 on 127.0.0.1");
}

/// Waits (at most 5 s) until `addr` accepts connections; panics with the
/// process's stderr if it exits first.
pub async fn wait_listening(addr: SocketAddr, proc: &mut Proc) {
    for _ in 0..200 {
        if TcpStream::connect(addr).await.is_ok() {
            return;
        }
        if let Ok(Some(status)) = proc.child.try_wait() {
            let err = std::fs::read_to_string(&proc.stderr).unwrap_or_default();
            panic!("{} exited ({status}) before listening:\n{err}", proc.name);
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("{} is not listening on {addr} after 5 s", proc.name);
}
