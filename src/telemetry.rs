//! Logging (DESIGN §6). Lines name files by a short id and never carry client
//! addresses, User-Agent, Referer, query strings, secrets or file names, with one
//! exception kept in one place: [`auth_failure`], a fixed WARN line for fail2ban.

use std::io::IsTerminal;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use tracing::{Level, Metadata};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::filter::{FilterExt, filter_fn};
use tracing_subscriber::layer::{Layer, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;

use crate::auth::{AuthError, Scheme};
use crate::config::LogFormat;

/// The variable that sets the log level (`debug`, `upslot=debug`, ...).
pub const LEVEL_ENV: &str = "UPSLOT_LOG";

/// Dependencies log request details (paths, headers) at their debug levels; they
/// are held at warn whatever `UPSLOT_LOG` asks for, however specific its directive.
const DEPENDENCIES: [&str; 4] = ["h2", "hyper", "hyper_util", "rustls"];

pub fn filter(level: &str) -> EnvFilter {
    EnvFilter::try_new(level).unwrap_or_else(|_| EnvFilter::new("info"))
}

/// False for a dependency's event or span below warn.
pub fn dependency_cap(meta: &Metadata<'_>) -> bool {
    let target = meta.target();
    *meta.level() <= Level::WARN
        || !DEPENDENCIES.iter().any(|d| {
            target
                .strip_prefix(d)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with("::"))
        })
}

/// Installs the global subscriber, writing to stderr.
pub fn init(format: LogFormat) {
    let level = std::env::var(LEVEL_ENV).unwrap_or_else(|_| "info".into());
    let only = filter(&level).and(filter_fn(dependency_cap));
    let layer = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let _ = match format {
        LogFormat::Text => tracing_subscriber::registry()
            .with(layer.with_filter(only))
            .try_init(),
        LogFormat::Json => tracing_subscriber::registry()
            .with(layer.json().flatten_event(true).with_filter(only))
            .try_init(),
    };
}

/// The one line that may carry a client address: a refused slot. `client` is
/// `None` when `log.failed_auth_ip = false`.
pub fn auth_failure(client: Option<IpAddr>, scheme: Option<Scheme>, error: AuthError) {
    let scheme = scheme.map_or("none", Scheme::as_str);
    match client {
        Some(ip) => tracing::warn!(
            target: "upslot::auth",
            client = %ip,
            scheme = %scheme,
            reason = %error.label(),
            "authorization failed"
        ),
        None => tracing::warn!(
            target: "upslot::auth",
            scheme = %scheme,
            reason = %error.label(),
            "authorization failed"
        ),
    }
}

/// Lets a repeated warning through at most once a minute, and says how many
/// were held back meanwhile: a flood (no descriptors left, say) must not bury
/// the log or fill the disk.
pub struct Throttle {
    /// Unix seconds of the last line let through; 0 before the first.
    last: AtomicU64,
    held: AtomicU64,
}

const THROTTLE_INTERVAL: u64 = 60;

impl Throttle {
    pub const fn new() -> Throttle {
        Throttle {
            last: AtomicU64::new(0),
            held: AtomicU64::new(0),
        }
    }

    /// `Some(held back since the last line)` if a line may be written now.
    pub fn ready(&self) -> Option<u64> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let last = self.last.load(Ordering::Relaxed);
        if now.saturating_sub(last) >= THROTTLE_INTERVAL
            && self
                .last
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            return Some(self.held.swap(0, Ordering::Relaxed));
        }
        self.held.fetch_add(1, Ordering::Relaxed);
        None
    }
}

impl Default for Throttle {
    fn default() -> Self {
        Throttle::new()
    }
}

/// A client-chosen string (a method, say) cut to `max` characters for a log line.
pub fn clip(s: &str, max: usize) -> std::borrow::Cow<'_, str> {
    match s.char_indices().nth(max) {
        None => s.into(),
        Some((end, _)) => format!("{}…", &s[..end]).into(),
    }
}
