//! The fail2ban files in `deploy/` do what README "Logs and privacy" says, checked
//! with fail2ban's own tools: `fail2ban-regex` finds exactly one match per refused
//! slot, with the address the scenario calls for and the time the line was
//! written, in logs the real binary wrote (`support_logs`); `fail2ban-client -t`
//! loads the jail as shipped and in its log-file variant. Without the tools the
//! tests are skipped, except in CI.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod support_logs;

use std::path::Path;
use std::process::Command;

use support_logs::workload::expected_clients;
use support_logs::{Format, ROOT, Scenario, have, now, run};

const FILTER: &str = "deploy/fail2ban/filter.d/upslot.conf";
const JAIL: &str = "deploy/fail2ban/jail.d/upslot.conf";

struct Fail2banRun {
    matched: usize,
    /// The address of each match, in log order.
    ips: Vec<String>,
    /// The time fail2ban read for each match (Unix seconds).
    times: Vec<u64>,
    summary: String,
}

fn fail2ban_regex(log: &Path) -> Fail2banRun {
    let filter = Path::new(ROOT).join(FILTER);
    let out = Command::new("fail2ban-regex")
        .arg("--print-no-missed")
        .arg(log)
        .arg(&filter)
        .output()
        .unwrap();
    let summary = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{summary}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // "Lines: 40 lines, 0 ignored, 6 matched, 34 missed"
    let counts = summary
        .lines()
        .find_map(|l| l.strip_prefix("Lines: "))
        .unwrap_or_else(|| panic!("no summary: {summary}"));
    let matched = counts
        .split(", ")
        .find_map(|part| part.strip_suffix(" matched"))
        .unwrap()
        .parse()
        .unwrap();
    let ips = regex_out(log, &filter, "ip", None);
    // Timestamps as fail2ban reads them, in a zone far from UTC: the log's
    // trailing Z must be honoured, or fail2ban would see every failure hours
    // away from now and never ban (findtime).
    let times = regex_out(log, &filter, "row", Some("UPSLOT-05:45"))
        .iter()
        .map(|row| {
            let t: f64 = row.split(',').nth(1).unwrap().trim().parse().unwrap();
            t as u64
        })
        .collect();
    Fail2banRun {
        matched,
        ips,
        times,
        summary,
    }
}

fn regex_out(log: &Path, filter: &Path, token: &str, tz: Option<&str>) -> Vec<String> {
    let mut cmd = Command::new("fail2ban-regex");
    cmd.args(["-o", token]).arg(log).arg(filter);
    if let Some(tz) = tz {
        cmd.env("TZ", tz);
    }
    let out = cmd.output().unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(str::to_owned)
        .collect()
}

/// Runs the workload, then fail2ban-regex on its log: one match per failure line
/// that names an address, that address, at the time of the run.
async fn fail2ban_on(format: Format, scenario: Scenario) {
    if !have("fail2ban-regex") {
        return;
    }
    let started = now();
    let (log, w) = run(format, scenario).await;
    let finished = now();
    let found = fail2ban_regex(&log.path);
    let expected: Vec<&str> = expected_clients(&w, scenario)
        .into_iter()
        .flatten()
        .collect();
    // The log really holds the failures, so a filter that matches nothing fails.
    assert_eq!(log.with("authorization failed").len(), w.failures.len());
    assert_eq!(
        found.matched,
        expected.len(),
        "{}\n{}",
        found.summary,
        log.dump()
    );
    assert_eq!(found.ips, expected, "{}", found.summary);
    assert_eq!(found.times.len(), expected.len());
    for t in &found.times {
        assert!(
            (started - 1..=finished + 1).contains(t),
            "fail2ban read time {t}, the run was {started}..{finished}"
        );
    }
    println!(
        "fail2ban-regex {} ({format:?}, {scenario:?}): {}",
        FILTER,
        found
            .summary
            .lines()
            .find(|l| l.starts_with("Lines: "))
            .unwrap()
    );
}

#[tokio::test]
async fn fail2ban_filter_matches_each_failure_text() {
    fail2ban_on(Format::Text, Scenario::Untrusted).await;
}

#[tokio::test]
async fn fail2ban_filter_matches_each_failure_json() {
    fail2ban_on(Format::Json, Scenario::Untrusted).await;
}

#[tokio::test]
async fn fail2ban_filter_bans_the_forwarded_client() {
    fail2ban_on(Format::Text, Scenario::Trusted).await;
    fail2ban_on(Format::Json, Scenario::Trusted).await;
}

#[tokio::test]
async fn fail2ban_filter_has_nothing_to_ban_without_addresses() {
    fail2ban_on(Format::Text, Scenario::NoAddress).await;
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let dest = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &dest);
        } else if entry.file_type().unwrap().is_file() {
            std::fs::copy(entry.path(), dest).unwrap();
        }
    }
}

/// The jail loads in fail2ban's own configuration reader, as shipped (journal
/// namespace) and in the log-file variant its comments describe.
#[test]
fn fail2ban_jail_is_valid() {
    if !have("fail2ban-client") {
        return;
    }
    let system = Path::new("/etc/fail2ban");
    assert!(
        system.join("jail.conf").exists(),
        "fail2ban without /etc/fail2ban"
    );
    let dir = common::tempdir();
    let conf = dir.path().join("fail2ban");
    copy_dir(system, &conf);
    // Only our jail: the distribution's defaults may enable others.
    for entry in std::fs::read_dir(conf.join("jail.d")).unwrap() {
        std::fs::remove_file(entry.unwrap().path()).unwrap();
    }
    std::fs::copy(
        Path::new(ROOT).join(FILTER),
        conf.join("filter.d/upslot.conf"),
    )
    .unwrap();
    let jail = std::fs::read_to_string(Path::new(ROOT).join(JAIL)).unwrap();

    let dump = |jail: &str| {
        std::fs::write(conf.join("jail.d/upslot.conf"), jail).unwrap();
        let test = Command::new("fail2ban-client")
            .arg("-c")
            .arg(&conf)
            .arg("-t")
            .output()
            .unwrap();
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&test.stdout),
            String::from_utf8_lossy(&test.stderr)
        );
        assert!(test.status.success(), "{said}");
        assert!(said.contains("OK"), "{said}");
        let out = Command::new("fail2ban-client")
            .arg("-c")
            .arg(&conf)
            .arg("-d")
            .output()
            .unwrap();
        assert!(out.status.success());
        String::from_utf8(out.stdout).unwrap()
    };

    let shipped = dump(&jail);
    for expected in [
        "['add', 'upslot', 'systemd[namespace=upslot]']",
        "['set', 'upslot', 'addjournalmatch', '_SYSTEMD_UNIT=upslot.service']",
        "['set', 'upslot', 'maxretry', 5]",
        "['set', 'upslot', 'findtime', '10m']",
        "['set', 'upslot', 'bantime', '1h']",
        "['start', 'upslot']",
    ] {
        assert!(shipped.contains(expected), "{expected} not in:\n{shipped}");
    }
    assert!(shipped.contains("'addfailregex'") && shipped.contains("upslot::auth"));

    // The documented alternative: a log file.
    let log = dir.path().join("upslot.log");
    std::fs::write(&log, "").unwrap();
    let file_jail: String = jail
        .lines()
        .filter(|l| !l.starts_with("backend") && !l.starts_with("journalmatch"))
        .map(|l| match l {
            "#backend = auto" => "backend = auto".to_owned(),
            "#logpath = /var/log/upslot/upslot.log" => format!("logpath = {}", log.display()),
            other => other.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("\n");
    assert_ne!(file_jail, jail);
    let with_file = dump(&file_jail);
    assert!(
        with_file.contains("['add', 'upslot', 'auto']"),
        "{with_file}"
    );
    assert!(with_file.contains("addlogpath"), "{with_file}");
    assert!(
        with_file.contains(&log.display().to_string()),
        "{with_file}"
    );
}
