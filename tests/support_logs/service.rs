//! The real binary, as an operator runs it: a config file, `UPSLOT_LOG` at debug
//! (trace for the dependencies), stdout (the banner) and stderr (the log) in
//! files of a temporary directory.
//! Every wait is bounded, so a service that hangs fails the test.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::log::Log;
use super::{Format, SECRET, Scenario};

const BIN: &str = env!("CARGO_BIN_EXE_upslot");
/// 400 polls of 25 ms: 10 s for the banner, and again for the exit.
const POLLS: usize = 400;
const POLL: Duration = Duration::from_millis(25);

/// Debug for upslot, as an operator would ask for it; trace for the
/// dependencies, which must stay at warn however they are asked.
const LEVEL: &str = "debug,h2=trace,h2::codec=trace,hyper=trace,hyper_util=trace,rustls=trace";

pub struct Running {
    child: Child,
    pub addr: SocketAddr,
    /// Config, data, stdout and the log; handed to the [`Log`] at the end.
    dir: Option<tempfile::TempDir>,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn start(format: Format, scenario: Scenario) -> Running {
    start_in(crate::common::tempdir(), format, scenario)
}

/// Starts on `dir` (which may hold the data of an earlier run).
pub fn start_in(dir: tempfile::TempDir, format: Format, scenario: Scenario) -> Running {
    let config = dir.path().join("upslot.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:0\"\n\
             data_dir = \"{data}\"\n\
             secret = \"{SECRET}\"\n\
             min_free_space = \"0\"\n\
             fsync = false\n\
             {extra}\
             [admin]\nlisten = \"127.0.0.1:0\"\n\
             [log]\nformat = \"{format}\"\n{log}",
            data = dir.path().join("data").display(),
            extra = scenario.config(),
            format = format.name(),
            log = scenario.log_section(),
        ),
    )
    .unwrap();
    let stdout = dir.path().join("stdout.log");
    let mut child = Command::new(BIN)
        .args(["serve", "-c"])
        .arg(&config)
        .current_dir(dir.path())
        .env("UPSLOT_LOG", LEVEL)
        .env_remove("UPSLOT_SECRET")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&stdout).unwrap())
        .stderr(std::fs::File::create(dir.path().join("upslot.log")).unwrap())
        .spawn()
        .unwrap();
    let mut addr = None;
    for _ in 0..POLLS {
        let banner = std::fs::read_to_string(&stdout).unwrap_or_default();
        addr = banner
            .lines()
            .find_map(|l| l.strip_prefix("upslot listening on http://"))
            .map(|rest| rest.split('/').next().unwrap().parse().unwrap());
        if addr.is_some() {
            break;
        }
        if let Some(status) = child.try_wait().unwrap() {
            let log = std::fs::read_to_string(dir.path().join("upslot.log")).unwrap();
            panic!("upslot exited at start ({status}): {log}");
        }
        std::thread::sleep(POLL);
    }
    Running {
        addr: addr.expect("the banner names the address within 10 s"),
        child,
        dir: Some(dir),
    }
}

impl Running {
    /// SIGTERM, wait (bounded) for a clean exit, and read what it logged.
    pub fn stop(mut self, format: Format) -> Log {
        let pid = self.child.id().to_string();
        let kill = Command::new("kill").args(["-TERM", &pid]).status();
        assert!(kill.unwrap().success());
        let exit = (0..POLLS).find_map(|_| {
            let status = self.child.try_wait().unwrap();
            if status.is_none() {
                std::thread::sleep(POLL);
            }
            status
        });
        let dir = self.dir.take().unwrap();
        let path = dir.path().join("upslot.log");
        let text = std::fs::read_to_string(&path).unwrap();
        let exit = exit.expect("upslot exits within 10 s of SIGTERM");
        assert!(exit.success(), "{exit}: {text}");
        Log {
            format,
            lines: text.lines().map(str::to_owned).collect(),
            path,
            stdout: std::fs::read_to_string(dir.path().join("stdout.log")).unwrap(),
            listen: self.addr.to_string(),
            dir: Some(dir),
        }
    }
}
