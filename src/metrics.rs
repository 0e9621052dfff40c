//! Every metric, defined once (DESIGN §7). Labels are bounded: outcomes, status
//! codes, methods, schemes and reasons; never a path, name, user or address.
//!
//! Each service has its own registry, so several can run in one process (tests).

use prometheus::{
    Encoder, Gauge, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts,
    Registry, TextEncoder,
};

use crate::index::Usage;

pub struct Metrics {
    registry: Registry,
    pub uploads: IntCounterVec,
    pub upload_bytes: IntCounter,
    pub downloads: IntCounterVec,
    pub download_bytes: IntCounter,
    pub request_duration: HistogramVec,
    pub uploads_in_flight: IntGauge,
    stored_files: IntGauge,
    stored_bytes: IntGauge,
    oldest_file_age: Gauge,
    pub expired_deleted: IntCounter,
    pub reaper_last_run: Gauge,
    pub auth_failures: IntCounterVec,
    pub quota_rejections: IntCounterVec,
    pub connections_open: IntGauge,
    pub connections_refused: IntCounterVec,
    pub connections_closed: IntCounterVec,
    pub busy_rejections: IntCounterVec,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

/// Labels that name one of a fixed set of values.
macro_rules! labels {
    ($(#[$doc:meta])* $name:ident { $($variant:ident => $label:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum $name {
            $($variant),+
        }

        impl $name {
            pub const ALL: &[$name] = &[$($name::$variant),+];

            pub fn label(self) -> &'static str {
                match self {
                    $($name::$variant => $label),+
                }
            }
        }
    };
}

labels! {
    /// How a PUT ended: `upslot_uploads_total{outcome}`.
    Outcome {
        Created => "created",
        Refused => "refused",
        TooLarge => "too_large",
        Conflict => "conflict",
        Quota => "quota",
        NoSpace => "no_space",
        BadRequest => "bad_request",
        Aborted => "aborted",
        Timeout => "timeout",
        Busy => "busy",
        Error => "error",
    }
}

labels! {
    /// Why a request was answered 503 for want of room:
    /// `upslot_busy_rejections_total{reason}`; `Total` and `PerClient` also
    /// label `upslot_connections_refused_total`.
    Busy {
        Total => "total",
        PerClient => "per_client",
        Descriptors => "descriptors",
    }
}

labels! {
    /// Which limit refused an upload: `upslot_quota_rejections_total{kind}`.
    QuotaKind {
        User => "user",
        Total => "total",
        FreeSpace => "free_space",
        DiskFull => "disk_full",
    }
}

fn counter(registry: &Registry, name: &str, help: &str) -> IntCounter {
    let c = IntCounter::new(name, help).expect("valid metric");
    registry
        .register(Box::new(c.clone()))
        .expect("unique metric");
    c
}

fn counter_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
    registry
        .register(Box::new(c.clone()))
        .expect("unique metric");
    c
}

fn int_gauge(registry: &Registry, name: &str, help: &str) -> IntGauge {
    let g = IntGauge::new(name, help).expect("valid metric");
    registry
        .register(Box::new(g.clone()))
        .expect("unique metric");
    g
}

fn gauge(registry: &Registry, name: &str, help: &str) -> Gauge {
    let g = Gauge::new(name, help).expect("valid metric");
    registry
        .register(Box::new(g.clone()))
        .expect("unique metric");
    g
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// The names and labels are fixed at compile time; registration cannot fail.
    pub fn new() -> Metrics {
        let r = Registry::new();
        let request_duration = HistogramVec::new(
            HistogramOpts::new(
                "upslot_http_request_duration_seconds",
                "Time from request head to response head.",
            )
            .buckets(vec![
                0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
            ]),
            &["method", "status_class"],
        )
        .expect("valid metric");
        r.register(Box::new(request_duration.clone()))
            .expect("unique metric");
        #[cfg(target_os = "linux")]
        {
            let process = prometheus::process_collector::ProcessCollector::for_self();
            // Without /proc there are no process metrics, and nothing else is lost.
            let _ = r.register(Box::new(process));
        }
        let metrics = Metrics {
            uploads: counter_vec(
                &r,
                "upslot_uploads_total",
                "PUT requests by outcome.",
                &["outcome"],
            ),
            upload_bytes: counter(
                &r,
                "upslot_upload_bytes_total",
                "Body bytes received by PUT requests.",
            ),
            downloads: counter_vec(
                &r,
                "upslot_downloads_total",
                "GET and HEAD requests by status code.",
                &["status"],
            ),
            download_bytes: counter(
                &r,
                "upslot_download_bytes_total",
                "Body bytes sent by GET requests.",
            ),
            request_duration,
            uploads_in_flight: int_gauge(
                &r,
                "upslot_uploads_in_flight",
                "PUT requests being handled now.",
            ),
            stored_files: int_gauge(
                &r,
                "upslot_stored_files",
                "Files stored and not yet deleted.",
            ),
            stored_bytes: int_gauge(&r, "upslot_stored_bytes", "Bytes of the files stored."),
            oldest_file_age: gauge(
                &r,
                "upslot_oldest_file_age_seconds",
                "Age of the oldest stored file; 0 when there is none.",
            ),
            expired_deleted: counter(
                &r,
                "upslot_expired_files_deleted_total",
                "Files deleted because they expired.",
            ),
            reaper_last_run: gauge(
                &r,
                "upslot_reaper_last_run_timestamp_seconds",
                "When the reaper last completed a pass (Unix time).",
            ),
            auth_failures: counter_vec(
                &r,
                "upslot_auth_failures_total",
                "Refused slots by scheme and reason.",
                &["scheme", "reason"],
            ),
            quota_rejections: counter_vec(
                &r,
                "upslot_quota_rejections_total",
                "Uploads refused for space, by kind.",
                &["kind"],
            ),
            connections_open: int_gauge(
                &r,
                "upslot_connections_open",
                "Client connections open now, on every listener.",
            ),
            connections_refused: counter_vec(
                &r,
                "upslot_connections_refused_total",
                "Connections closed at once, by the cap they would break.",
                &["reason"],
            ),
            connections_closed: counter_vec(
                &r,
                "upslot_connections_closed_total",
                "Connections that upslot closed: idle too long, evicted for room, at shutdown, or a response not read.",
                &["reason"],
            ),
            busy_rejections: counter_vec(
                &r,
                "upslot_busy_rejections_total",
                "Requests answered 503: upload caps reached, or no file descriptor left.",
                &["reason"],
            ),
            registry: r,
        };
        // Series that dashboards and alerts rely on exist from the start, at 0.
        for o in Outcome::ALL {
            metrics.uploads.with_label_values(&[o.label()]);
        }
        for k in QuotaKind::ALL {
            metrics.quota_rejections.with_label_values(&[k.label()]);
        }
        for reason in [Busy::Total, Busy::PerClient] {
            metrics
                .connections_refused
                .with_label_values(&[reason.label()]);
        }
        for reason in ["idle", "evicted", "shutdown", "stalled"] {
            metrics.connections_closed.with_label_values(&[reason]);
        }
        for reason in Busy::ALL {
            metrics.busy_rejections.with_label_values(&[reason.label()]);
        }
        for status in ["200", "206", "304", "404", "416"] {
            metrics.downloads.with_label_values(&[status]);
        }
        metrics
    }

    /// Prometheus text format, after bringing the storage gauges up to date.
    pub fn render(&self, usage: Usage, oldest_created: Option<u64>, now: u64) -> String {
        self.stored_files.set(usage.files as i64);
        self.stored_bytes.set(usage.bytes as i64);
        self.oldest_file_age
            .set(oldest_created.map_or(0.0, |c| now.saturating_sub(c) as f64));
        let mut out = Vec::new();
        // Encoding into a Vec only fails on invalid metrics, which we do not make.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }
}

/// Counts one unit of a gauge for as long as it lives.
pub struct GaugeGuard(IntGauge);

impl GaugeGuard {
    pub fn new(gauge: &IntGauge) -> GaugeGuard {
        gauge.inc();
        GaugeGuard(gauge.clone())
    }
}

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// `2xx`, `4xx`, ...: the only form of a status that labels a histogram.
pub fn status_class(status: u16) -> &'static str {
    match status {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

/// Methods we serve keep their name; anything else is `other`.
pub fn method_label(method: &http::Method) -> &'static str {
    match *method {
        http::Method::GET => "GET",
        http::Method::HEAD => "HEAD",
        http::Method::PUT => "PUT",
        http::Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}
