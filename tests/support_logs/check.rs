//! The privacy checks every log must pass (DESIGN §6, README "Logs and
//! privacy"): the workload was logged in full at debug level; no secret at any
//! level, nor on stdout; a client address only in the one `authorization failed`
//! line per refused slot, and there exactly the one the scenario calls for.
//! They return errors rather than panic, so that
//! `the_checks_catch_what_they_promise` can show each one biting.

use std::net::SocketAddr;

use super::log::Log;
use super::requests::Workload;
use super::workload::{FORWARDED_ADDRS, expected_clients};
use super::{Format, PEER, Scenario};

/// Whether `s` holds something that looks like an IPv4 address.
fn has_ipv4(s: &str) -> bool {
    let b = s.as_bytes();
    (0..b.len()).any(|start| {
        if start > 0 && (b[start - 1].is_ascii_digit() || b[start - 1] == b'.') {
            return false;
        }
        let mut i = start;
        for part in 0..4 {
            let digits = b[i..].iter().take_while(|c| c.is_ascii_digit()).count();
            if digits == 0 || digits > 3 {
                return false;
            }
            i += digits;
            if part < 3 {
                if b.get(i) != Some(&b'.') {
                    return false;
                }
                i += 1;
            }
        }
        true
    })
}

/// Fails the check with a message.
macro_rules! ensure {
    ($cond:expr, $($msg:tt)+) => {
        if !$cond {
            return Err(format!($($msg)+));
        }
    };
}

pub fn check(log: &Log, w: &Workload, scenario: Scenario) -> Result<(), String> {
    let all = log.dump();
    // The workload really was logged: an empty or truncated log fails here.
    ensure!(!log.lines.is_empty(), "empty log");
    for line in &log.lines {
        let level = log.level(line);
        ensure!(
            ["TRACE", "DEBUG", "INFO", "WARN", "ERROR"].contains(&level.as_str()),
            "not a log line: {line}"
        );
    }
    let requests = log.with("request");
    ensure!(
        requests.len() == w.requests,
        "{} request lines for {} requests:\n{all}",
        requests.len(),
        w.requests
    );
    let status = |code: &str| {
        requests
            .iter()
            .filter(|l| log.field(l, "status").as_deref() == Some(code))
            .count()
    };
    ensure!(status("201") == w.uploads, "201 lines:\n{all}");
    ensure!(status("403") == w.failures.len(), "403 lines:\n{all}");
    for code in [
        "200", "204", "206", "304", "400", "404", "405", "409", "411", "413", "416",
    ] {
        ensure!(status(code) > 0, "no {code} request line:\n{all}");
    }
    // UPSLOT_LOG=debug took effect: the debug line of each upload is there.
    ensure!(
        log.with("body received").len() == w.uploads,
        "debug lines:\n{all}"
    );
    ensure!(log.with("stopped").len() == 1, "no clean stop:\n{all}");
    // UPSLOT_LOG asks the dependencies for trace too (see service.rs): they
    // stay at warn all the same.
    for line in &log.lines {
        let target = log.target(line);
        let dependency = ["h2", "hyper", "hyper_util", "rustls"]
            .iter()
            .any(|d| target == *d || target.starts_with(&format!("{d}::")));
        ensure!(
            !dependency || ["WARN", "ERROR"].contains(&log.level(line).as_str()),
            "a dependency below warn: {line}"
        );
    }

    // One failure line per refused slot, in order, naming the right address.
    let failures = log.with("authorization failed");
    let expected = expected_clients(w, scenario);
    ensure!(
        failures.len() == w.failures.len(),
        "{} failure lines for {} refused slots:\n{all}",
        failures.len(),
        w.failures.len()
    );
    for ((line, f), client) in failures.iter().zip(&w.failures).zip(&expected) {
        ensure!(log.level(line) == "WARN", "{line}");
        ensure!(log.target(line) == "upslot::auth", "{line}");
        ensure!(
            log.field(line, "scheme").as_deref() == Some(f.scheme),
            "not {}: {line}",
            f.scheme
        );
        ensure!(
            log.field(line, "reason").as_deref() == Some(f.reason),
            "not {}: {line}",
            f.reason
        );
        ensure!(
            log.field(line, "client").as_deref() == *client,
            "client should be {client:?}: {line}"
        );
        if log.format == Format::Text {
            let head = match client {
                Some(ip) => format!(" WARN upslot::auth: authorization failed client={ip} "),
                None => " WARN upslot::auth: authorization failed scheme=".to_owned(),
            };
            ensure!(line.contains(&head), "not the fixed line: {line}");
        }
    }

    // Nothing the clients sent, nothing secret, at any level, nor on stdout.
    for line in log
        .lines
        .iter()
        .map(String::as_str)
        .chain(log.stdout.lines())
    {
        for secret in &w.secrets {
            ensure!(!line.contains(secret.as_str()), "{secret:?} leaked: {line}");
        }
    }

    // Addresses: only in failure lines, exactly the expected one in each.
    for line in &log.lines {
        if failures.contains(&line) {
            continue;
        }
        let mut rest = line.clone();
        if log.is(line, "listening") {
            // The service's own addresses (public and admin listeners), not a
            // client's: the public one is the banner's, the admin one is on
            // 127.0.0.1 as configured, on a port of its own.
            ensure!(
                log.field(line, "listen").as_deref() == Some(log.listen.as_str()),
                "{line}"
            );
            rest = rest.replace(&log.listen, "<listen>");
            if let Some(admin) = log.field(line, "admin") {
                let parsed: SocketAddr = admin.parse().map_err(|_| format!("admin: {line}"))?;
                ensure!(
                    parsed.ip().to_string() == PEER && admin != log.listen,
                    "{line}"
                );
                rest = rest.replace(&admin, "<admin>");
            }
        }
        ensure!(!rest.contains(PEER), "client address logged: {line}");
        ensure!(!has_ipv4(&rest), "an address logged: {line}");
        for addr in FORWARDED_ADDRS {
            ensure!(!rest.contains(addr), "{addr} logged: {line}");
        }
    }
    for (line, client) in failures.iter().zip(&expected) {
        for addr in FORWARDED_ADDRS.iter().chain([&PEER]) {
            let times = line.matches(addr).count();
            let want = usize::from(*client == Some(*addr));
            ensure!(times == want, "{addr} {times} times in {line}");
        }
        ensure!(client.is_some() || !has_ipv4(line), "{line}");
    }
    // The banner on stdout (which under systemd lands in the journal too)
    // names the service's own address and nothing else.
    let stdout = log.stdout.replace(&log.listen, "<listen>");
    ensure!(log.stdout.contains(&log.listen), "no banner: {stdout}");
    ensure!(!has_ipv4(&stdout), "an address on stdout: {stdout}");
    Ok(())
}
