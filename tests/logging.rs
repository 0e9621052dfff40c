//! What the logs keep (DESIGN §6, README "Logs and privacy"), proved on the real
//! binary: `upslot serve` at `UPSLOT_LOG=debug`, stderr in a file, a realistic
//! workload over real sockets, SIGTERM, then every line of the log is read.
//!
//! The promise: no file names, paths, query strings, tokens, secrets, User-Agent,
//! Referer or Cookie values at any level; a client address only in the one
//! `authorization failed` line per refused slot (honouring `trusted_proxies`, or
//! none with `[log] failed_auth_ip = false`). The machinery and the checks are in
//! `support_logs/`; the operator files in `deploy/` are checked against the same
//! logs in `fail2ban.rs` and `log_retention.rs`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod support_logs;

use std::time::Duration;

use http::{Method, StatusCode};
use upslot::auth::Scheme;
use upslot::path::SlotPath;

use support_logs::check::check;
use support_logs::log::Log;
use support_logs::requests::{COOKIE, Credential, REFERER, USER_AGENT, Workload, target};
use support_logs::service::{start, start_in};
use support_logs::workload::{TOKEN_PATH, V2_PATH};
use support_logs::{Format, SECRET, Scenario, run};

/// Runs the workload and checks its log, which it hands back for more.
async fn logged(format: Format, scenario: Scenario) -> (Log, Workload) {
    let (log, w) = run(format, scenario).await;
    if format == Format::Json {
        for line in &log.lines {
            Log::json(line);
        }
    }
    check(&log, &w, scenario).unwrap();
    (log, w)
}

#[tokio::test]
async fn text_log_names_clients_only_in_failed_authorizations() {
    logged(Format::Text, Scenario::Untrusted).await;
}

#[tokio::test]
async fn json_log_names_clients_only_in_failed_authorizations() {
    logged(Format::Json, Scenario::Untrusted).await;
}

#[tokio::test]
async fn trusted_proxy_forwarded_address_is_the_one_logged_text() {
    let (log, _) = logged(Format::Text, Scenario::Trusted).await;
    let all = log.dump();
    for ip in ["198.51.100.23", "198.51.100.24", "2001:db8::23"] {
        let line = format!(" WARN upslot::auth: authorization failed client={ip} ");
        assert_eq!(all.matches(&line).count(), 1, "{line}\n{all}");
    }
}

#[tokio::test]
async fn trusted_proxy_forwarded_address_is_the_one_logged_json() {
    logged(Format::Json, Scenario::Trusted).await;
}

#[tokio::test]
async fn failed_auth_ip_off_logs_no_address_at_all() {
    for format in Format::BOTH {
        let (log, _) = logged(format, Scenario::NoAddress).await;
        assert!(!log.dump().contains("client"), "{}", log.dump());
    }
}

/// Bad versions of a real log, each what a leaking or silent service would
/// write, named by what is wrong with it.
fn corruptions(log: &Log, w: &Workload) -> Vec<(&'static str, Vec<String>)> {
    let first = |message: &str| log.with(message)[0].clone();
    let request = first("request");
    let failure = first("authorization failed");
    let debug = first("body received");
    let start = first("secret taken from the configuration");
    let without =
        |line: &str| -> Vec<String> { log.lines.iter().filter(|x| *x != line).cloned().collect() };
    let mut twice = log.lines.clone();
    twice.push(failure.clone());
    let no_debug = log.lines.iter().filter(|x| log.level(x) != "DEBUG");
    let believed = log
        .lines
        .iter()
        .map(|x| match log.is(x, "authorization failed") {
            true => x.replace("127.0.0.1", "198.51.100.23"),
            false => x.clone(),
        });
    let mut chatty = log.lines.clone();
    chatty.push(match log.format {
        Format::Text => {
            "2026-11-28T20:00:00.000000Z DEBUG h2::codec::framed_read: received frame=Headers"
                .into()
        }
        Format::Json => serde_json::json!({
            "timestamp": "2026-11-28T20:00:00.000000Z",
            "level": "DEBUG",
            "target": "h2::codec::framed_read",
            "message": "received",
        })
        .to_string(),
    });
    let mut bad = vec![
        ("empty log", vec![]),
        ("a dependency at debug", chatty),
        ("failure lines lost", without(&failure)),
        ("a failure logged twice", twice),
        ("request lines lost", without(&request)),
        ("debug not in effect", no_debug.cloned().collect()),
        (
            "forwarded address believed from an untrusted peer",
            believed.collect(),
        ),
    ];

    let secret = |prefix: &str| w.secrets.iter().find(|s| s.starts_with(prefix)).unwrap();
    let path = format!("/upload/{}", SlotPath::encode(V2_PATH));
    let file_name = TOKEN_PATH.split_once('/').unwrap().1;
    // (what, the line, a field added to it in the line's own format)
    let added: [(&str, &String, &str, &str); 10] = [
        (
            "client address on a request line",
            &request,
            "peer",
            "127.0.0.1:51234",
        ),
        ("user agent", &request, "ua", USER_AGENT),
        ("referer", &request, "referer", REFERER),
        ("cookie", &request, "cookie", COOKIE),
        ("percent-encoded path", &request, "path", &path),
        ("JWT at debug", &debug, "token", secret("eyJ")),
        ("file name at debug", &debug, "name", file_name),
        ("query string at debug", &debug, "query", secret("v2=")),
        ("secret", &start, "secret", SECRET),
        (
            "spoofed hop logged next to the client",
            &failure,
            "via",
            "203.0.113.77",
        ),
    ];
    for (what, line, key, value) in added {
        let by = match log.format {
            Format::Text => format!("{line} {key}={value:?}"),
            Format::Json => {
                let mut v = Log::json(line);
                v[key] = serde_json::Value::String(value.to_owned());
                v.to_string()
            }
        };
        let mut lines = log.lines.clone();
        let i = lines.iter().position(|x| x == line).unwrap();
        lines[i] = by;
        bad.push((what, lines));
    }
    bad
}

/// The checks are only worth something if they fail on a bad log: each
/// corruption of a real log must be caught, while the real log passes.
#[tokio::test]
async fn the_checks_catch_what_they_promise() {
    for format in Format::BOTH {
        let (log, w) = logged(format, Scenario::Untrusted).await;
        for (what, lines) in corruptions(&log, &w) {
            let caught = check(&log.with_lines(lines), &w, Scenario::Untrusted)
                .expect_err(&format!("{format:?}: a log with {what} passed the checks"));
            println!("{format:?}, {what}: {}", caught.lines().next().unwrap());
        }
        // And the right address in the wrong scenario is caught too.
        assert!(check(&log, &w, Scenario::Trusted).is_err());
        assert!(check(&log, &w, Scenario::NoAddress).is_err());
    }
}

/// A metadata file that is valid JSON of the wrong shape (a hand edit, or a format
/// change between versions) must not bring its values into the log: serde_json's
/// messages quote them, e.g. the file name.
#[tokio::test]
async fn unreadable_metadata_is_logged_without_its_contents() {
    let running = start(Format::Text, Scenario::Untrusted);
    let path = "Kq3slotM1/Zq9-meta-name.txt";
    let mut w = Workload::default();
    let (put_target, _) = w.sign(path, Credential::Query(Scheme::V1, SECRET, 5, None));
    let r = w
        .ok(running.addr, Method::PUT, &put_target, &[], b"hello")
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    let dir = running.stop(Format::Text).dir.take().unwrap();

    let body = common::walk(&dir.path().join("data/files"))
        .into_iter()
        .next()
        .unwrap();
    let mut fields = common::stored_meta(&body);
    fields["size"] = fields["name"].clone();
    common::set_stored_meta(&body, fields.to_string().as_bytes());

    let running = start_in(dir, Format::Text, Scenario::Untrusted);
    let r = w
        .ok(running.addr, Method::GET, &target(path), &[], b"")
        .await;
    assert_ne!(r.status, StatusCode::OK);
    let log = running.stop(Format::Text);
    assert!(
        log.lines.iter().any(|l| l.contains("metadata")),
        "the bad metadata went unnoticed:\n{}",
        log.dump()
    );
    for line in &log.lines {
        assert!(!line.contains("Zq9"), "file name leaked: {line}");
    }
}

/// A method is the client's to choose, and hyper takes any token: the log
/// line carries at most 16 characters of it, not 10 KB.
#[tokio::test]
async fn a_long_method_is_cut_in_the_log() {
    let running = start(Format::Text, Scenario::Untrusted);
    let method = "M".repeat(10_000);
    let head = format!("{method} /upload/a/b HTTP/1.1\r\nHost: t\r\n\r\n");
    let answer = common::raw(running.addr, head.as_bytes(), Duration::from_secs(2)).await;
    assert_eq!(common::raw_status(&answer), Some(405), "{answer}");
    let log = running.stop(Format::Text);
    let line = log
        .with("request")
        .into_iter()
        .find(|l| l.contains("status=405"))
        .unwrap_or_else(|| panic!("no request line:\n{}", log.dump()));
    assert!(
        line.contains(&format!("method={}…", "M".repeat(16))),
        "{line}"
    );
    assert!(log.lines.iter().all(|l| l.len() < 1000), "{}", log.dump());
}
