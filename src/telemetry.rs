//! Logging (DESIGN §6). Lines name files by a short id and never carry client
//! addresses, User-Agent, Referer, query strings, secrets or file names, with one
//! exception kept in one place: [`auth_failure`], a fixed WARN line for fail2ban.

use std::io::IsTerminal;
use std::net::IpAddr;

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
