//! The deploy kit (`deploy/`) kept true to the code it deploys:
//! - the Prosody and ejabberd snippets are, line for line, what `upslot serve` prints;
//! - the example `upslot.toml` parses and names every key `RawConfig` knows (the key
//!   list is read from serde itself, so a new key without an entry fails here);
//! - every metric the Grafana dashboard and the alert rules query exists in a real
//!   scrape of a running service, every upslot metric is on the dashboard, and each
//!   query is valid PromQL (`promtool`);
//! - the alert rules pass `promtool check rules` and their unit tests;
//! - the numbers the files repeat (ports, base path, sizes, timeouts, retention, the
//!   reaper deadline) are the code's defaults.
//!
//! The tools themselves (systemd-analyze, nginx, caddy) are run by `.ci/run` and
//! `deploy/check-proxies.sh`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use common::Server;
use http::{Method, StatusCode};
use upslot::config::Config;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const BASE_URL: &str = "https://upload.example.org/upload/";
const SECRET_PLACEHOLDER: &str = "<secret>";

const PROSODY_EXTERNAL: &str = "deploy/prosody/upload-external.cfg.lua";
const PROSODY_FILE_SHARE: &str = "deploy/prosody/file-share.cfg.lua";
const EJABBERD: &str = "deploy/ejabberd/mod_http_upload.yml";
const EXAMPLE_CONFIG: &str = "deploy/upslot.toml";
const DASHBOARD: &str = "deploy/grafana/upslot-dashboard.json";
const ALERTS: &str = "deploy/prometheus/upslot-alerts.yml";
const ALERT_TESTS: &str = "deploy/prometheus/upslot-alerts.test.yml";
const UNIT: &str = "deploy/systemd/upslot.service";
const NGINX: &str = "deploy/nginx/upslot.conf";
const CADDY: &str = "deploy/caddy/Caddyfile";

fn read(rel: &str) -> String {
    std::fs::read_to_string(Path::new(ROOT).join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

// ---------------------------------------------------------------------------
// XMPP server snippets

/// `name = value` (Lua) or `name: value` (YAML): a setting, even when commented out.
fn is_setting(s: &str) -> bool {
    let name_len = s
        .find(|c: char| !(c.is_ascii_lowercase() || c == '_'))
        .unwrap_or(s.len());
    name_len > 0 && (s[name_len..].starts_with(" = ") || s[name_len..].starts_with(": "))
}

/// The lines that configure something: everything but blank lines and comments,
/// where a commented-out setting (`-- http_upload_external_protocol = "v2"`)
/// counts as configuration. Indentation is kept (YAML needs it).
fn significant(text: &str, comment: &str) -> Vec<String> {
    text.lines()
        .filter(|line| {
            let t = line.trim();
            match t.strip_prefix(comment) {
                _ if t.is_empty() => false,
                Some(rest) => is_setting(rest.trim()),
                None => true,
            }
        })
        .map(|line| line.trim_end().to_owned())
        .collect()
}

/// The snippet `upslot serve` prints for the defaults, with the placeholders the
/// deploy files use, cut into its three parts.
fn printed_section(marker: &str) -> String {
    let printed = upslot::hints::xmpp_snippets(&Config::default(), BASE_URL, SECRET_PLACEHOLDER);
    let sections: Vec<&str> = printed
        .split("\n\n")
        .filter(|s| s.contains(marker))
        .collect();
    assert_eq!(sections.len(), 1, "one printed section holds {marker:?}");
    sections[0].to_owned()
}

fn assert_same_lines(file: &str, comment: &str, marker: &str, structural: &[&str]) {
    let ours: Vec<String> = significant(&read(file), comment)
        .into_iter()
        .filter(|l| !structural.contains(&l.as_str()))
        .collect();
    let printed = significant(&printed_section(marker), comment);
    assert_eq!(
        ours, printed,
        "{file} and what `upslot serve` prints (src/hints.rs) differ; the deploy \
         file must hold the printed lines, in order, with the placeholders \
         {BASE_URL} and {SECRET_PLACEHOLDER}"
    );
}

#[test]
fn prosody_external_snippet_is_what_serve_prints() {
    assert_same_lines(PROSODY_EXTERNAL, "--", "\"http_upload_external\"", &[]);
    // v1 is active, v2 is one uncommented line away.
    let text = read(PROSODY_EXTERNAL);
    assert!(text.contains("\n    -- http_upload_external_protocol = \"v2\"\n"));
}

#[test]
fn prosody_file_share_snippet_is_what_serve_prints() {
    assert_same_lines(PROSODY_FILE_SHARE, "--", "\"http_file_share\"", &[]);
}

#[test]
fn ejabberd_snippet_is_what_serve_prints() {
    // `modules:` is the parent key the printed snippet names in its comment.
    assert_same_lines(EJABBERD, "#", "mod_http_upload:", &["modules:"]);
}

#[test]
fn the_comparison_sees_drift() {
    let printed = printed_section("\"http_upload_external\"");
    let drifted = printed.replace("104857600", "10485760");
    assert_ne!(significant(&printed, "--"), significant(&drifted, "--"));
    let uncommented = printed.replace(
        "-- http_upload_external_protocol",
        "http_upload_external_protocol",
    );
    assert_ne!(significant(&printed, "--"), significant(&uncommented, "--"));
    assert!(is_setting("http_upload_external_protocol = \"v2\""));
    assert!(is_setting("max_size: 1"));
    assert!(!is_setting(
        "Protocol v1 (the default) signs path and size."
    ));
}

// ---------------------------------------------------------------------------
// The example configuration

/// DESIGN §5's keys, and the ones src/config.rs adds, as `table.key`.
const DOCUMENTED_KEYS: &[&str] = &[
    "listen",
    "base_path",
    "data_dir",
    "secret",
    "secret_file",
    "previous_secrets",
    "schemes",
    "max_file_size",
    "retention",
    "reap_interval",
    "min_free_space",
    "fsync",
    "trusted_proxies",
    "shutdown_timeout",
    "idle_timeout",
    "quota.total",
    "quota.per_user",
    "limits.max_connections",
    "limits.max_connections_per_client",
    "limits.max_uploads",
    "limits.max_uploads_per_client",
    "limits.header_timeout",
    "limits.discard_timeout",
    "limits.min_upload_rate",
    "limits.max_header_size",
    "limits.max_headers",
    "limits.max_streams",
    "admin.listen",
    "cors.allow_origins",
    "log.format",
    "log.failed_auth_ip",
    "tls.cert_file",
    "tls.key_file",
    "storage.backend",
    "storage.endpoint",
    "storage.region",
    "storage.bucket",
    "storage.prefix",
    "storage.access_key_id",
    "storage.access_key_id_file",
    "storage.secret_access_key",
    "storage.secret_access_key_file",
    "storage.path_style",
    "index.backend",
    "index.url",
    "index.url_file",
];

/// Keys the example shows commented out: `secret` and `secret_file` exclude each
/// other and the generated secret is the better default; `previous_secrets` is
/// for the weeks after a rotation; `[tls]` is for running without a proxy;
/// the S3 and PostgreSQL keys are for several instances.
const COMMENTED_KEYS: &[&str] = &[
    "secret",
    "secret_file",
    "previous_secrets",
    "tls.cert_file",
    "tls.key_file",
    "storage.endpoint",
    "storage.region",
    "storage.bucket",
    "storage.prefix",
    "storage.access_key_id",
    "storage.access_key_id_file",
    "storage.secret_access_key",
    "storage.secret_access_key_file",
    "storage.path_style",
    "index.url",
    "index.url_file",
];

/// The field names serde lists when `text` holds an unknown key.
fn fields_in_error(text: &str) -> Option<Vec<String>> {
    let e = Config::parse(text).unwrap_err().to_string();
    let (_, expected) = e.split_once("unknown field `zz_probe`, expected ")?;
    Some(
        expected
            .split('`')
            .skip(1)
            .step_by(2)
            .map(str::to_owned)
            .collect(),
    )
}

/// Every key `RawConfig` accepts, as serde reports them: the top-level fields, and
/// for each field that is a table, its fields.
fn accepted_keys() -> BTreeSet<String> {
    let top = fields_in_error("zz_probe = 1").expect("serde names the fields");
    let mut keys = BTreeSet::new();
    for field in top {
        match fields_in_error(&format!("[{field}]\nzz_probe = 1")) {
            Some(nested) => {
                for key in nested {
                    keys.insert(format!("{field}.{key}"));
                }
            }
            None => {
                keys.insert(field);
            }
        }
    }
    keys
}

fn flatten(table: &toml::Table, prefix: &str, out: &mut BTreeSet<String>) {
    for (key, value) in table {
        let name = format!("{prefix}{key}");
        match value {
            toml::Value::Table(t) => flatten(t, &format!("{name}."), out),
            _ => {
                out.insert(name);
            }
        }
    }
}

/// The example with `# key = value` lines of `keys` (and their `# [table]`
/// headers) uncommented.
fn uncomment(text: &str, keys: &[&str]) -> String {
    let mut table = String::new();
    let mut out = String::new();
    for line in text.lines() {
        let mut line = line.to_owned();
        if let Some(header) = line.strip_prefix("# [") {
            let name = header.trim_end_matches(']');
            if keys.iter().any(|k| k.starts_with(&format!("{name}."))) {
                line = format!("[{header}");
            }
        }
        if let Some(header) = line.strip_prefix('[') {
            table = format!("{}.", header.trim_end_matches(']'));
        }
        if let Some(rest) = line.strip_prefix("# ")
            && let Some((key, _)) = rest.split_once(" = ")
            && keys.contains(&format!("{table}{key}").trim_start_matches('.'))
        {
            line = rest.to_owned();
        }
        out.push_str(&line);
        out.push('\n');
    }
    out
}

#[test]
fn the_key_list_is_what_the_code_accepts() {
    let documented: BTreeSet<String> = DOCUMENTED_KEYS.iter().map(|k| k.to_string()).collect();
    assert_eq!(
        accepted_keys(),
        documented,
        "src/config.rs accepts other keys than this test (and deploy/upslot.toml) documents"
    );
}

#[test]
fn example_config_parses_and_names_every_key() {
    let text = read(EXAMPLE_CONFIG);
    let config = Config::parse(&text).unwrap_or_else(|e| panic!("{EXAMPLE_CONFIG}: {e}"));

    let table: toml::Table = text.parse().unwrap();
    let mut set = BTreeSet::new();
    flatten(&table, "", &mut set);
    for key in DOCUMENTED_KEYS {
        if COMMENTED_KEYS.contains(key) {
            assert!(!set.contains(*key), "{key} is meant to be commented out");
        } else {
            assert!(set.contains(*key), "{EXAMPLE_CONFIG} does not set {key}");
        }
    }
    assert!(set.iter().all(|k| DOCUMENTED_KEYS.contains(&k.as_str())));

    // The commented keys are there, and valid once uncommented.
    for keys in [
        &["secret"][..],
        &["secret_file"],
        &["tls.cert_file", "tls.key_file"],
        &[
            "storage.endpoint",
            "storage.region",
            "storage.bucket",
            "storage.prefix",
            "storage.access_key_id_file",
            "storage.secret_access_key_file",
            "storage.path_style",
        ],
        &["index.url"],
        &["index.url_file"],
    ] {
        let text = uncomment(&text, keys);
        let parsed: toml::Table = text.parse().unwrap();
        let mut set = BTreeSet::new();
        flatten(&parsed, "", &mut set);
        for key in keys {
            assert!(
                set.contains(*key),
                "{EXAMPLE_CONFIG} has no `# {key} = ...` line"
            );
        }
        Config::parse(&text).unwrap_or_else(|e| panic!("{keys:?} uncommented: {e}"));
    }

    // The values are the built-in defaults, except the two the file says it
    // changes for the systemd + proxy deployment.
    let defaults = Config::default();
    assert_eq!(config.data_dir, Path::new("/var/lib/upslot"));
    assert_eq!(config.trusted_proxies.len(), 2);
    let same = |c: &Config| {
        format!(
            "{} {} {:?} {} {:?} {:?} {} {} {:?} {:?} {} {} {} {:?} {:?} {} {:?}",
            c.listen,
            c.base_path,
            c.schemes,
            c.max_file_size,
            c.retention,
            c.reap_interval,
            c.min_free_space,
            c.fsync,
            c.shutdown_timeout,
            c.idle_timeout,
            c.quota_total,
            c.quota_per_user,
            c.admin_listen,
            c.allow_origins,
            c.log_format,
            c.failed_auth_ip,
            c.limits
        )
    };
    assert_eq!(same(&config), same(&defaults));
    assert_eq!(config.tls, None);
    for line in text
        .lines()
        .filter(|l| l.contains(" = ") && !l.starts_with('#'))
    {
        let (key, _) = line.split_once(" = ").unwrap();
        let before = text.split(line).next().unwrap();
        let comment = before.lines().last().unwrap_or("");
        assert!(
            comment.starts_with('#'),
            "{key} has no explanation above it"
        );
    }
}

#[test]
fn uncomment_finds_commented_keys() {
    let text = "a = 1\n# secret = \"x\"\n# [tls]\n# cert_file = \"c\"\n";
    assert_eq!(
        uncomment(text, &["tls.cert_file"]),
        "a = 1\n# secret = \"x\"\n[tls]\ncert_file = \"c\"\n"
    );
    assert_eq!(
        uncomment(text, &["secret"]),
        "a = 1\nsecret = \"x\"\n# [tls]\n# cert_file = \"c\"\n"
    );
}

// ---------------------------------------------------------------------------
// Numbers repeated across deploy/

/// The value of `Key=` in the unit's [Service] section (the last one wins).
fn unit_value(unit: &str, key: &str) -> Option<String> {
    unit.lines()
        .filter_map(|l| l.strip_prefix(&format!("{key}=")))
        .next_back()
        .map(str::to_owned)
}

#[test]
fn unit_config_and_proxies_agree_with_the_defaults() {
    let defaults = Config::default();
    let unit = read(UNIT);
    let example = Config::parse(&read(EXAMPLE_CONFIG)).unwrap();

    let stop: std::time::Duration =
        humantime::parse_duration(&unit_value(&unit, "TimeoutStopSec").unwrap()).unwrap();
    assert!(
        stop > example.shutdown_timeout + std::time::Duration::from_secs(5),
        "TimeoutStopSec must leave the drain its shutdown_timeout"
    );
    assert_eq!(unit_value(&unit, "KillSignal").as_deref(), Some("SIGTERM"));
    assert_eq!(
        unit_value(&unit, "ExecStart").as_deref(),
        Some("/usr/bin/upslot serve -c /etc/upslot/upslot.toml")
    );
    assert_eq!(
        unit_value(&unit, "ConfigurationDirectory").as_deref(),
        Some("upslot")
    );
    assert_eq!(
        unit_value(&unit, "StateDirectory").as_deref(),
        Some("upslot")
    );
    assert_eq!(example.data_dir, Path::new("/var/lib/upslot"));
    assert_eq!(unit_value(&unit, "LogNamespace").as_deref(), Some("upslot"));
    // The namespace's retention comes from the journald file the unit points to:
    // entries go after 14 days, and a file a day keeps any from outliving them
    // by more (journald deletes whole files).
    assert!(unit.contains("deploy/journald/journald@upslot.conf"));
    let journald = read(&format!("{ROOT}/deploy/journald/journald@upslot.conf"));
    let retention = unit_value(&journald, "MaxRetentionSec").expect("MaxRetentionSec");
    let file_span = unit_value(&journald, "MaxFileSec").expect("MaxFileSec");
    let days = |v: &str| humantime::parse_duration(v).unwrap().as_secs() / 86_400;
    assert_eq!(days(&retention), 14, "{retention}");
    assert!(days(&file_span) <= 1, "{file_span}");
    assert_eq!(
        unit_value(&journald, "ForwardToSyslog").as_deref(),
        Some("no")
    );
    // IPAddressAllow=localhost: both listeners must be on loopback.
    if unit_value(&unit, "IPAddressAllow").as_deref() == Some("localhost") {
        assert!(example.listen.ip().is_loopback());
        assert!(example.admin_listen.ip().is_loopback());
    }

    let listen = defaults.listen.to_string();
    let mib = defaults.max_file_size / (1024 * 1024);
    assert_eq!(defaults.max_file_size % (1024 * 1024), 0);
    let nginx = read(NGINX);
    assert!(
        nginx.contains(&format!("server {listen};")),
        "nginx upstream is {listen}"
    );
    assert!(nginx.contains(&format!("location {} {{", defaults.base_path)));
    assert!(nginx.contains(&format!("client_max_body_size {mib}m;")));
    assert!(
        nginx.contains("proxy_pass http://upslot;\n"),
        "no URI part after the upstream"
    );
    let caddy = read(CADDY);
    assert!(caddy.contains(&format!("reverse_proxy {listen} {{")));
    assert!(caddy.contains(&format!("handle {}* {{", defaults.base_path)));
    assert!(caddy.contains(&format!("max_size {mib}MiB")));
    for file in [&nginx, &caddy] {
        assert!(
            file.contains(&defaults.admin_listen.to_string()),
            "names the admin listener it must not proxy"
        );
    }

    // Alerts and dashboard: the reaper deadline (as /readyz computes it) and the
    // retention, in seconds.
    let deadline = upslot::admin::reaper_deadline(defaults.reap_interval);
    assert_eq!(deadline, 240);
    let retention = defaults.retention.as_secs();
    let alerts = read(ALERTS);
    assert!(alerts.contains(
        "time() - upslot_reaper_last_run_timestamp_seconds{job=\"upslot\"} > 3 * 60 + 60"
    ));
    assert!(alerts.contains(&format!(
        "upslot_oldest_file_age_seconds{{job=\"upslot\"}} > {retention}"
    )));
    let dashboard: serde_json::Value = serde_json::from_str(&read(DASHBOARD)).unwrap();
    let thresholds: BTreeSet<u64> = panels(&dashboard)
        .flat_map(|p| {
            p["fieldConfig"]["defaults"]["thresholds"]["steps"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .filter_map(|s| s["value"].as_f64())
        .map(|v| v as u64)
        .collect();
    assert!(thresholds.contains(&deadline) && thresholds.contains(&retention));
}

// ---------------------------------------------------------------------------
// Metrics: dashboard and alerts

fn panels(dashboard: &serde_json::Value) -> impl Iterator<Item = &serde_json::Value> {
    dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| std::iter::once(p).chain(p["panels"].as_array().into_iter().flatten()))
}

fn strings<'a>(v: &'a serde_json::Value, out: &mut Vec<&'a str>) {
    match v {
        serde_json::Value::String(s) => out.push(s),
        serde_json::Value::Array(a) => a.iter().for_each(|v| strings(v, out)),
        serde_json::Value::Object(o) => o.values().for_each(|v| strings(v, out)),
        _ => {}
    }
}

/// Every `upslot_*` and `process_*` name in `text`.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for prefix in ["upslot_", "process_"] {
        let mut from = 0;
        while let Some(at) = text[from..].find(prefix) {
            let start = from + at;
            let boundary = text[..start]
                .chars()
                .next_back()
                .is_none_or(|c| !(c.is_ascii_alphanumeric() || c == '_'));
            let len = text[start..]
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(text.len() - start);
            if boundary {
                names.insert(text[start..start + len].to_owned());
            }
            from = start + len;
        }
    }
    names
}

/// Every sample name a running service exposes (histograms with their
/// `_bucket`, `_count` and `_sum` series), after a workload that makes every
/// labelled family appear, and the names of the upslot families.
async fn scraped_names() -> (BTreeSet<String>, BTreeSet<String>) {
    let server = Server::start().await;
    server.upload("dash/a.txt", b"hello").await;
    let r = server.get("dash/a.txt", &[]).await;
    assert_eq!(r.status, StatusCode::OK);
    let bad = format!("{}?v={}", server.target("dash/b.txt"), "0".repeat(64));
    let r = server.request(Method::PUT, &bad, &[], vec![0; 5]).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let r = common::request(server.admin, Method::GET, "/metrics", &[], vec![]).await;
    assert_eq!(r.status, StatusCode::OK);
    let text = r.text();
    let mut samples = BTreeSet::new();
    let mut families = BTreeSet::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split_whitespace();
            let (name, kind) = (parts.next().unwrap(), parts.next().unwrap());
            families.insert(name.to_owned());
            samples.insert(name.to_owned());
            if kind == "histogram" || kind == "summary" {
                for suffix in ["_bucket", "_count", "_sum"] {
                    samples.insert(format!("{name}{suffix}"));
                }
            }
        } else if !line.starts_with('#') && !line.is_empty() {
            let name = line.split(['{', ' ']).next().unwrap();
            samples.insert(name.to_owned());
        }
    }
    families.retain(|n| n.starts_with("upslot_"));
    (samples, families)
}

#[tokio::test]
async fn dashboard_and_alerts_query_metrics_that_exist() {
    let dashboard: serde_json::Value = serde_json::from_str(&read(DASHBOARD)).unwrap();
    assert!(dashboard["schemaVersion"].as_u64().unwrap() >= 36);
    assert!(
        dashboard["__inputs"]
            .as_array()
            .unwrap()
            .iter()
            .any(|i| i["name"] == "DS_PROMETHEUS" && i["pluginId"] == "prometheus")
    );
    let mut ids = BTreeSet::new();
    for panel in panels(&dashboard) {
        assert!(
            ids.insert(panel["id"].as_u64().unwrap()),
            "panel ids are unique"
        );
        if panel["type"] == "row" {
            continue;
        }
        let title = panel["title"].as_str().unwrap();
        assert_eq!(panel["datasource"]["uid"], "${DS_PROMETHEUS}", "{title}");
        let targets = panel["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "{title} queries nothing");
        for t in targets {
            assert!(t["expr"].as_str().is_some_and(|e| !e.is_empty()), "{title}");
        }
    }

    let (exists, families) = scraped_names().await;
    let mut texts = Vec::new();
    strings(&dashboard, &mut texts);
    let on_dashboard = metric_names(&texts.join("\n"));
    for name in &on_dashboard {
        assert!(
            exists.contains(name),
            "the dashboard uses {name}, which upslot does not export"
        );
    }
    for family in &families {
        assert!(
            on_dashboard.iter().any(|n| n.starts_with(family.as_str())),
            "the dashboard does not show {family}"
        );
    }
    for name in metric_names(&read(ALERTS)) {
        assert!(
            exists.contains(&name),
            "the alerts use {name}, which upslot does not export"
        );
    }
}

/// `promtool` when installed; in CI (`CI` set) it must be.
fn promtool() -> bool {
    common::have_tool("promtool")
}

fn run_promtool(args: &[&str], dir: &Path) {
    let out = Command::new("promtool")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "promtool {args:?}:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn alert_rules_pass_promtool() {
    if !promtool() {
        return;
    }
    let dir = Path::new(ROOT).join("deploy/prometheus");
    run_promtool(&["check", "rules", "upslot-alerts.yml"], &dir);
    run_promtool(
        &[
            "test",
            "rules",
            Path::new(ALERT_TESTS)
                .file_name()
                .unwrap()
                .to_str()
                .unwrap(),
        ],
        &dir,
    );
}

#[test]
fn dashboard_queries_are_promql() {
    if !promtool() {
        return;
    }
    let dashboard: serde_json::Value = serde_json::from_str(&read(DASHBOARD)).unwrap();
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    let mut exprs: Vec<String> = panels(&dashboard)
        .flat_map(|p| p["targets"].as_array().cloned().unwrap_or_default())
        .map(|t| t["expr"].as_str().unwrap().to_owned())
        .collect();
    for var in dashboard["templating"]["list"].as_array().unwrap() {
        if let Some(q) = var["query"]["query"].as_str() {
            // label_values(metric{...}, label) is Grafana's, not PromQL: check the selector.
            let inner = q
                .trim_start_matches("label_values(")
                .rsplit_once(',')
                .unwrap()
                .0;
            exprs.push(inner.to_owned());
        }
    }
    for (i, expr) in exprs.iter().enumerate() {
        let expr = expr
            .replace("$__rate_interval", "5m")
            .replace("$job", "upslot")
            .replace("$instance", ".*")
            .replace("$retention", "604800");
        assert!(
            !expr.contains('$'),
            "a variable the test does not know: {expr}"
        );
        rules.push_str(&format!(
            "      - record: dashboard:query_{i}\n        expr: {}\n",
            serde_json::to_string(&expr).unwrap()
        ));
    }
    let dir = common::tempdir();
    std::fs::write(dir.path().join("dashboard-rules.yml"), rules).unwrap();
    run_promtool(&["check", "rules", "dashboard-rules.yml"], dir.path());
}

#[test]
fn the_cluster_example_names_shared_storage_and_index() {
    let path = "deploy/cluster/upslot.toml";
    let config = Config::parse(&read(path)).unwrap_or_else(|e| panic!("{path}: {e}"));
    let upslot::config::Storage::S3(s3) = &config.storage else {
        panic!("{path}: storage is not s3");
    };
    assert_eq!(s3.bucket, "upslot");
    assert!(matches!(s3.access_key_id, upslot::config::Setting::File(_)));
    assert!(matches!(
        config.index,
        upslot::config::IndexBackend::Postgres {
            url: upslot::config::Setting::File(_)
        }
    ));
}
