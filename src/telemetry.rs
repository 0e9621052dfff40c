//! Logging (DESIGN §6). Lines name files by a short id and never carry client
//! addresses, User-Agent, Referer, query strings, secrets or file names, with one
//! exception kept in one place: [`auth_failure`], a fixed WARN line for fail2ban.

use std::io::IsTerminal;
use std::net::IpAddr;

use tracing_subscriber::EnvFilter;

use crate::auth::{AuthError, Scheme};
use crate::config::LogFormat;

/// The variable that sets the log level (`debug`, `upslot=debug`, ...).
pub const LEVEL_ENV: &str = "UPSLOT_LOG";

/// Dependencies log request details (paths, headers) at their debug levels; they
/// are held at warn whatever level is asked for.
const QUIET_DEPENDENCIES: &str = "h2=warn,hyper=warn,hyper_util=warn,rustls=warn";

pub fn filter(level: &str) -> EnvFilter {
    EnvFilter::try_new(format!("{level},{QUIET_DEPENDENCIES}"))
        .unwrap_or_else(|_| EnvFilter::new(format!("info,{QUIET_DEPENDENCIES}")))
}

/// Installs the global subscriber, writing to stderr.
pub fn init(format: LogFormat) {
    let level = std::env::var(LEVEL_ENV).unwrap_or_else(|_| "info".into());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter(&level))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
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
