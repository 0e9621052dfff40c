//! What the log tests share: the real `upslot serve` at `UPSLOT_LOG=debug` with
//! stderr in a file ([`service`]), reading that file back ([`log`]), a workload
//! full of things that must not be logged ([`workload`]) and the privacy checks
//! that every log must pass ([`check`]). Each test file uses part of it.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

pub mod check;
pub mod log;
pub mod requests;
pub mod service;
pub mod workload;

use std::time::{SystemTime, UNIX_EPOCH};

use log::Log;
use requests::Workload;
use service::start;
use workload::workload;

pub const ROOT: &str = env!("CARGO_MANIFEST_DIR");

pub const SECRET: &str = "Sx7q-logging-secret-0123";
pub const OTHER_SECRET: &str = "Oy6w-not-the-secret-4567";
pub const PEER: &str = "127.0.0.1";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Text,
    Json,
}

impl Format {
    pub const BOTH: [Format; 2] = [Format::Text, Format::Json];

    pub fn name(self) -> &'static str {
        match self {
            Format::Text => "text",
            Format::Json => "json",
        }
    }
}

/// How the service is told to treat client addresses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scenario {
    /// Defaults: the peer (127.0.0.1) is not a trusted proxy.
    Untrusted,
    /// `trusted_proxies = ["127.0.0.1/32"]`: forwarding headers are believed.
    Trusted,
    /// `failed_auth_ip = false` (with 127.0.0.1 trusted, so that a forwarded
    /// address would show if the switch were ignored).
    NoAddress,
}

impl Scenario {
    pub fn config(self) -> &'static str {
        match self {
            Scenario::Untrusted => "",
            Scenario::Trusted | Scenario::NoAddress => "trusted_proxies = [\"127.0.0.1/32\"]\n",
        }
    }

    pub fn log_section(self) -> &'static str {
        match self {
            Scenario::NoAddress => "failed_auth_ip = false\n",
            _ => "",
        }
    }
}

/// Starts the binary, drives the whole workload, stops it and reads the log.
pub async fn run(format: Format, scenario: Scenario) -> (Log, Workload) {
    let running = start(format, scenario);
    let w = workload(running.addr).await;
    (running.stop(format), w)
}

pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Whether an operator tool is here (skipped locally, required in CI).
pub fn have(tool: &str) -> bool {
    crate::common::have_tool(tool)
}
