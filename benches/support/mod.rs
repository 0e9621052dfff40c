//! What the benches share: settings from the environment, byte sizes, scratch
//! directories and figure formatting here; the HTTP client side and the
//! in-process server in `http`; servers as processes of their own in
//! `process`; readings from /proc in `procfs`; kernel counters per request in
//! `perf`.
//!
//! Each bench declares `mod support;` and uses a part of it, hence the
//! `dead_code` allowance. Cargo does not build this directory as a bench of its
//! own: only files directly in `benches/` are bench targets.
#![allow(dead_code)]

pub mod http;
pub mod perf;
pub mod process;
pub mod procfs;

use std::path::Path;
use std::time::Duration;

pub const KIB: u64 = 1024;
pub const MIB: u64 = 1024 * KIB;
pub const GIB: u64 = 1024 * MIB;

/// The multi-threaded tokio runtime every bench runs in.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// Runs `run` on [`runtime`] until it ends, `limit` passes or Ctrl-C comes,
/// and exits with 1 unless it returned true. Cutting it short drops it: its
/// guards stop what it started and remove its scratch directory.
pub fn run_bounded(name: &str, limit: Duration, run: impl std::future::Future<Output = bool>) {
    let runtime = runtime();
    let ok = runtime.block_on(async {
        tokio::select! {
            ok = run => ok,
            r = tokio::time::timeout(limit, tokio::signal::ctrl_c()) => {
                eprintln!("{name}: {}; stopping", if r.is_ok() { "interrupted" } else { "run time limit reached" });
                false
            }
        }
    });
    drop(runtime);
    if !ok {
        std::process::exit(1);
    }
}

// ---------------------------------------------------------------------------
// Settings from the environment.

/// The variable `name`, or `default` if it is unset (or not UTF-8).
pub fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.into())
}

/// The non-empty, trimmed items of the comma-separated variable `name`.
pub fn env_list(name: &str, default: &str) -> Vec<String> {
    env_or(name, default)
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// A list of byte sizes, e.g. `4KiB,1MiB` (see `parse_size`).
pub fn env_sizes(name: &str, default: &str) -> Vec<u64> {
    env_list(name, default)
        .iter()
        .map(|s| parse_size(s).unwrap_or_else(|| panic!("{name}: bad size {s:?}")))
        .collect()
}

/// A list of on/off settings, e.g. `off,on`.
pub fn env_switches(name: &str, default: &str) -> Vec<bool> {
    env_list(name, default)
        .iter()
        .map(|s| match s.to_ascii_lowercase().as_str() {
            "on" | "true" | "1" | "yes" => true,
            "off" | "false" | "0" | "no" => false,
            _ => panic!("{name}: expected on/off, got {s:?}"),
        })
        .collect()
}

/// A number (underscores allowed), or `default` if the variable is unset.
pub fn env_number(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(v) => v
            .trim()
            .replace('_', "")
            .parse()
            .unwrap_or_else(|_| panic!("{name}: expected a number, got {v:?}")),
        Err(_) => default,
    }
}

/// A positive number, or `default` if the variable is unset.
pub fn env_positive(name: &str, default: usize) -> usize {
    env_or(name, &default.to_string())
        .parse::<usize>()
        .ok()
        .filter(|&n| n > 0)
        .unwrap_or_else(|| panic!("{name}: expected a positive number"))
}

/// One row of a load matrix: `n` files of `size` bytes at concurrency `conc`.
#[derive(Clone, Copy, Debug)]
pub struct Case {
    pub size: u64,
    pub n: usize,
    pub conc: usize,
}

/// The rows of the variable `name`, `SIZE:N:C,...` (e.g. `4KiB:1000:32`), or
/// of `default` if it is unset; a size of `default` alone (`1MiB`) takes its N
/// and C there. Panics on a bad row.
pub fn env_matrix(name: &str, default: &str) -> Vec<Case> {
    let parse = |item: &str| -> Option<Case> {
        let mut parts = item.split(':').map(str::trim);
        let size = parse_size(parts.next()?)?;
        let (n, conc) = match (parts.next(), parts.next(), parts.next()) {
            (Some(n), Some(c), None) => (n.parse().ok()?, c.parse().ok()?),
            _ => return None,
        };
        (n > 0 && conc > 0).then_some(Case { size, n, conc })
    };
    let defaults: Vec<Case> = default
        .split(',')
        .map(|d| parse(d).unwrap_or_else(|| panic!("default matrix: bad row {d:?}")))
        .collect();
    let matrix: Vec<Case> = env_list(name, default)
        .iter()
        .map(|item| {
            parse(item)
                .or_else(|| {
                    let size = parse_size(item)?;
                    defaults.iter().copied().find(|d| d.size == size)
                })
                .unwrap_or_else(|| {
                    panic!(
                        "{name}: bad row {item:?}: expected SIZE:N:C (e.g. 1MiB:200:16), or a \
                         size of the default {default} alone"
                    )
                })
        })
        .collect();
    assert!(!matrix.is_empty(), "{name}: no rows");
    matrix
}

// ---------------------------------------------------------------------------
// Byte sizes.

/// `4KiB`, `1 MiB`, `100MB`...: units B, KiB/K, MiB/M, GiB/G (binary) or KB,
/// MB, GB (decimal). None for zero or anything else.
pub fn parse_size(s: &str) -> Option<u64> {
    let digits = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let n: u64 = s[..digits].parse().ok()?;
    let unit = match s[digits..].trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "ki" | "kib" => KIB,
        "m" | "mi" | "mib" => MIB,
        "g" | "gi" | "gib" => GIB,
        "kb" => 1000,
        "mb" => 1000 * 1000,
        "gb" => 1000 * 1000 * 1000,
        _ => return None,
    };
    n.checked_mul(unit).filter(|&n| n > 0)
}

/// `4 KiB`, `1 GiB`, `1000 B`: the largest binary unit that divides `n`.
pub fn show_size(n: u64) -> String {
    for (unit, name) in [(GIB, "GiB"), (MIB, "MiB"), (KIB, "KiB")] {
        if n >= unit && n.is_multiple_of(unit) {
            return format!("{} {name}", n / unit);
        }
    }
    format!("{n} B")
}

/// `show_size` without the space: `4KiB`.
pub fn show_size_tight(n: u64) -> String {
    show_size(n).replace(' ', "")
}

// ---------------------------------------------------------------------------
// Scratch directories.

/// A fresh directory under `parent`, removed with everything in it when the
/// returned guard is dropped (also while unwinding from a panic).
pub fn scratch_dir(parent: &Path, prefix: &str, what: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in(parent)
        .unwrap_or_else(|e| panic!("{what} under {}: {e}", parent.display()))
}

// ---------------------------------------------------------------------------
// Figures.

/// The `p` quantile (0 to 1) of `sorted`, nearest rank.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// The median of `v` (mean of the middle two for an even count; NaN if empty).
pub fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        f64::NAN
    } else if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// A duration in the unit that suits it: `850 ns`, `12.3 µs`, `4.56 ms`, `1.23 s`.
pub fn show_duration(d: Duration) -> String {
    let us = d.as_secs_f64() * 1e6;
    if us < 1.0 {
        format!("{} ns", d.as_nanos())
    } else if us < 1000.0 {
        format!("{us:.1} µs")
    } else if us < 1e6 {
        format!("{:.2} ms", us / 1000.0)
    } else {
        format!("{:.2} s", us / 1e6)
    }
}

/// `1234567` as `1,234,567`.
pub fn count(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// `n` over `d`, as `12,345/s`.
pub fn rate(n: u64, d: Duration) -> String {
    format!("{}/s", count((n as f64 / d.as_secs_f64()).round() as u64))
}

/// A rate with as many decimals as a small one needs: `2727`, `13.2`, `0.31`.
pub fn per_s(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// Seconds as milliseconds with about three significant digits (`-` for NaN).
pub fn ms(secs: f64) -> String {
    let ms = secs * 1e3;
    if ms.is_nan() {
        "-".into()
    } else if ms < 10.0 {
        format!("{ms:.2}")
    } else if ms < 100.0 {
        format!("{ms:.1}")
    } else {
        format!("{ms:.0}")
    }
}

/// `"on"` or `"off"`.
pub fn on_off(b: bool) -> &'static str {
    if b { "on" } else { "off" }
}

// ---------------------------------------------------------------------------
// Limits for one address that stands for many clients.

/// Every bench client is 127.0.0.1, so per-address caps would cap the whole
/// load: they go up to the totals, and the totals to what this many clients
/// (and their racing PUTs) hold at once. Timeouts and the minimum rate stay as
/// they are. As `[limits]` TOML, for a server run from its binary.
pub fn limits_toml(clients: usize) -> String {
    let l = limits(clients);
    format!(
        "[limits]\nmax_connections = {c}\nmax_connections_per_client = {c}\n\
         max_uploads = {u}\nmax_uploads_per_client = {u}\n",
        c = l.max_connections,
        u = l.max_uploads
    )
}

/// [`limits_toml`] for a server run in this process.
pub fn limits(clients: usize) -> upslot::config::Limits {
    let connections = (4 * clients).max(1024);
    let uploads = (2 * clients).max(128);
    upslot::config::Limits {
        max_connections: connections,
        max_connections_per_client: connections,
        max_uploads: uploads,
        max_uploads_per_client: uploads,
        ..upslot::config::Config::default().limits
    }
}
