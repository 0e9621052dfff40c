//! The logrotate file in `deploy/` keeps what README "Logs and privacy" promises
//! and no more: fourteen days of lines. Checked with `logrotate` itself; without
//! it the test is skipped, except in CI.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod support_logs;

use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;

use support_logs::{ROOT, have};

const LOGROTATE: &str = "deploy/logrotate/upslot";

/// deploy/logrotate/upslot parses, and, run for real on a copy pointed at a
/// temporary directory, keeps exactly fourteen days of lines: today's file and
/// thirteen rotated ones. The writer keeps one O_APPEND handle open throughout,
/// as the service does, and its lines land at the start of the truncated file.
#[test]
fn logrotate_keeps_fourteen_days() {
    if !have("logrotate") {
        return;
    }
    let shipped = Path::new(ROOT).join(LOGROTATE);
    let out = Command::new("logrotate")
        .arg("-d")
        .arg(&shipped)
        .output()
        .unwrap();
    let said =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{said}");
    assert!(!said.contains("error"), "{said}");
    assert!(said.contains("after 1 days (13 rotations)"), "{said}");
    assert!(said.contains("empty log files are rotated"), "{said}");

    let dir = common::tempdir();
    let logs = dir.path().join("logs");
    std::fs::create_dir(&logs).unwrap();
    let text = std::fs::read_to_string(&shipped).unwrap();
    assert!(text.contains("/var/log/upslot/*.log {"));
    let conf = dir.path().join("upslot.logrotate");
    std::fs::write(
        &conf,
        text.replace(
            "/var/log/upslot/*.log",
            &format!("{}/*.log", logs.display()),
        ),
    )
    .unwrap();
    let live = logs.join("upslot.log");
    let mut writer = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&live)
        .unwrap();
    let inode = std::fs::metadata(&live).unwrap().ino();
    let rotate = || {
        let out = Command::new("logrotate")
            .arg("-f")
            .arg("-s")
            .arg(dir.path().join("state"))
            .arg(&conf)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    // Day 12 is quiet: nothing logged, rotated all the same (ifempty).
    for day in 1..=21 {
        if day != 12 {
            writeln!(
                writer,
                "day-{day:02} WARN upslot::auth: authorization failed"
            )
            .unwrap();
        }
        rotate();
    }
    writeln!(writer, "day-22 (today, not yet rotated)").unwrap();
    assert_eq!(
        std::fs::metadata(&live).unwrap().ino(),
        inode,
        "copytruncate keeps the file"
    );

    let mut names: Vec<String> = std::fs::read_dir(&logs)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    let rotated: Vec<String> = (1..=13).map(|n| format!("upslot.log.{n}.gz")).collect();
    let mut expected = rotated.clone();
    expected.push("upslot.log".to_owned());
    expected.sort();
    assert_eq!(names, expected);

    let mut kept = std::fs::read_to_string(&live).unwrap();
    assert!(kept.starts_with("day-22"), "{kept:?}");
    for name in &rotated {
        let out = Command::new("gzip")
            .arg("-dc")
            .arg(logs.join(name))
            .output()
            .unwrap();
        assert!(out.status.success());
        let day = String::from_utf8(out.stdout).unwrap();
        assert!(!day.contains('\0'), "{name}: {day:?}");
        kept.push_str(&day);
    }
    let mut days: Vec<&str> = kept.lines().map(|l| &l[..6]).collect();
    days.sort_unstable();
    let want: Vec<String> = (9..=22)
        .filter(|&d| d != 12)
        .map(|d| format!("day-{d:02}"))
        .collect();
    assert_eq!(days, want, "fourteen days kept, the oldest first to go");
}
