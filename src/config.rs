//! Configuration in two stages: [`RawConfig`] mirrors the TOML file (unknown keys are
//! errors), [`Config`] is the validated form with real types that the rest of the
//! service uses. Every default lives in [`RawConfig::default`].

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytesize::ByteSize;
use ipnet::IpNet;
use serde::Deserialize;

use crate::auth::Scheme;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{key}: {why}")]
    Invalid { key: &'static str, why: String },
}

fn invalid(key: &'static str, why: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key,
        why: why.into(),
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawConfig {
    pub listen: String,
    pub base_path: String,
    pub data_dir: PathBuf,
    pub secret: Option<String>,
    pub secret_file: Option<PathBuf>,
    pub previous_secrets: Vec<RawPreviousSecret>,
    pub schemes: Vec<String>,
    pub max_file_size: ByteSize,
    #[serde(with = "humantime_serde")]
    pub retention: Duration,
    #[serde(with = "humantime_serde")]
    pub reap_interval: Duration,
    pub min_free_space: ByteSize,
    pub fsync: bool,
    pub trusted_proxies: Vec<String>,
    #[serde(with = "humantime_serde")]
    pub shutdown_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    pub quota: RawQuota,
    pub limits: RawLimits,
    pub admin: RawAdmin,
    pub cors: RawCors,
    pub log: RawLog,
    pub tls: RawTls,
    pub storage: RawStorage,
    pub index: RawIndex,
}

/// `[storage]`: where file bodies live (docs/storage.md).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawStorage {
    pub backend: String,
    pub endpoint: Option<String>,
    pub region: String,
    pub bucket: Option<String>,
    pub prefix: String,
    pub access_key_id: Option<String>,
    pub access_key_id_file: Option<PathBuf>,
    pub secret_access_key: Option<String>,
    pub secret_access_key_file: Option<PathBuf>,
    pub path_style: bool,
}

/// `[index]`: where metadata, claims, quotas and expiry order live.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawIndex {
    pub backend: String,
    pub url: Option<String>,
    pub url_file: Option<PathBuf>,
}

/// A secret replaced by a rotation, still accepted until `until` (RFC 3339).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPreviousSecret {
    #[serde(default)]
    pub secret: Option<String>,
    #[serde(default)]
    pub secret_file: Option<PathBuf>,
    pub until: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawQuota {
    pub total: ByteSize,
    pub per_user: ByteSize,
}

/// hyper's own default; other values cost a heap allocation per request.
pub const DEFAULT_MAX_HEADERS: usize = 100;

/// What one client, or all of them together, may hold (docs/limits.md).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawLimits {
    pub max_connections: usize,
    pub max_connections_per_client: usize,
    pub max_uploads: usize,
    pub max_uploads_per_client: usize,
    #[serde(with = "humantime_serde")]
    pub header_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub discard_timeout: Duration,
    pub min_upload_rate: ByteSize,
    pub max_header_size: ByteSize,
    pub max_headers: usize,
    pub max_streams: u32,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawAdmin {
    pub listen: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawCors {
    pub allow_origins: Vec<String>,
}

/// Native HTTPS on the public listener; both keys or neither. The default (none)
/// is plain HTTP, for a reverse proxy in front.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawTls {
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawLog {
    pub format: String,
    pub failed_auth_ip: bool,
}

impl Default for RawConfig {
    fn default() -> Self {
        RawConfig {
            listen: "127.0.0.1:5050".into(),
            base_path: "/upload/".into(),
            data_dir: "./upslot-data".into(),
            secret: None,
            secret_file: None,
            previous_secrets: Vec::new(),
            schemes: Scheme::ALL.iter().map(|s| s.as_str().to_owned()).collect(),
            max_file_size: ByteSize::mib(100),
            retention: Duration::from_secs(7 * 24 * 3600),
            reap_interval: Duration::from_secs(60),
            min_free_space: ByteSize::gib(1),
            fsync: true,
            trusted_proxies: Vec::new(),
            shutdown_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
            quota: RawQuota::default(),
            limits: RawLimits::default(),
            admin: RawAdmin::default(),
            cors: RawCors::default(),
            log: RawLog::default(),
            tls: RawTls::default(),
            storage: RawStorage::default(),
            index: RawIndex::default(),
        }
    }
}

impl Default for RawStorage {
    fn default() -> Self {
        RawStorage {
            backend: "fs".into(),
            endpoint: None,
            region: "us-east-1".into(),
            bucket: None,
            prefix: String::new(),
            access_key_id: None,
            access_key_id_file: None,
            secret_access_key: None,
            secret_access_key_file: None,
            path_style: true,
        }
    }
}

impl Default for RawIndex {
    fn default() -> Self {
        RawIndex {
            backend: "local".into(),
            url: None,
            url_file: None,
        }
    }
}

impl Default for RawQuota {
    fn default() -> Self {
        RawQuota {
            total: ByteSize(0),
            per_user: ByteSize(0),
        }
    }
}

impl Default for RawLimits {
    fn default() -> Self {
        RawLimits {
            max_connections: 1024,
            max_connections_per_client: 64,
            max_uploads: 128,
            max_uploads_per_client: 8,
            header_timeout: Duration::from_secs(30),
            discard_timeout: Duration::from_secs(5),
            min_upload_rate: ByteSize::kib(1),
            max_header_size: ByteSize::kib(16),
            max_headers: DEFAULT_MAX_HEADERS,
            max_streams: 32,
        }
    }
}

impl Default for RawAdmin {
    fn default() -> Self {
        RawAdmin {
            listen: "127.0.0.1:5051".into(),
        }
    }
}

impl Default for RawCors {
    fn default() -> Self {
        RawCors {
            allow_origins: vec!["*".into()],
        }
    }
}

impl Default for RawLog {
    fn default() -> Self {
        RawLog {
            format: "text".into(),
            failed_auth_ip: true,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// Where the HMAC secret comes from; resolved to bytes by [`crate::secret`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    Inline(String),
    File(PathBuf),
    /// `<data_dir>/secret`, generated on first start.
    Generated,
}

/// A secret from before a rotation: slots it signed are accepted until
/// `until` (Unix seconds), so that none fails while the XMPP server switches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreviousSecret {
    /// `Inline` or `File`; never `Generated`.
    pub source: SecretSource,
    pub until: u64,
}

/// PEM files for native HTTPS: the certificate chain (leaf first) and its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AllowOrigins {
    Any,
    List(Vec<String>),
}

/// `[limits]`, validated: every cap is above 0.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    pub max_connections: usize,
    pub max_connections_per_client: usize,
    pub max_uploads: usize,
    pub max_uploads_per_client: usize,
    pub header_timeout: Duration,
    pub discard_timeout: Duration,
    /// Bytes per second an upload must average once `idle_timeout` has passed;
    /// 0: no minimum.
    pub min_upload_rate: u64,
    pub max_header_size: usize,
    pub max_headers: usize,
    pub max_streams: u32,
}

/// A value given in the configuration, in a file it names, or (when neither)
/// in an environment variable; read at start-up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Setting {
    Inline(String),
    File(PathBuf),
    Env(&'static str),
}

impl Setting {
    fn of(
        inline: Option<String>,
        file: Option<PathBuf>,
        env: &'static str,
        key: &'static str,
    ) -> Result<Setting, ConfigError> {
        match (inline, file) {
            (Some(_), Some(_)) => Err(invalid(
                key,
                format!("set either {key} or {key}_file, not both"),
            )),
            (Some(v), None) => Ok(Setting::Inline(v)),
            (None, Some(f)) => Ok(Setting::File(f)),
            (None, None) => Ok(Setting::Env(env)),
        }
    }

    /// The value; a file's is trimmed of surrounding whitespace.
    pub fn resolve(&self) -> std::io::Result<String> {
        match self {
            Setting::Inline(v) => Ok(v.clone()),
            Setting::File(path) => Ok(std::fs::read_to_string(path)
                .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", path.display())))?
                .trim()
                .to_owned()),
            Setting::Env(name) => std::env::var(name).map_err(|_| {
                std::io::Error::new(std::io::ErrorKind::NotFound, format!("{name} is not set"))
            }),
        }
    }
}

/// `[storage]`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Storage {
    /// `data_dir` on local disk.
    Fs,
    S3(S3),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3 {
    /// `None`: AWS, at the region's endpoint.
    pub endpoint: Option<String>,
    pub region: String,
    pub bucket: String,
    pub prefix: String,
    pub access_key_id: Setting,
    pub secret_access_key: Setting,
    pub path_style: bool,
}

/// `[index]`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IndexBackend {
    /// In this process's memory, rebuilt from the store at start-up.
    Local,
    Postgres {
        url: Setting,
    },
}

/// S3's largest single PUT: bodies are streamed into one (docs/storage.md).
pub const S3_MAX_OBJECT: u64 = 5 * 1024 * 1024 * 1024;

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub base_path: String,
    pub data_dir: PathBuf,
    pub secret: SecretSource,
    pub previous_secrets: Vec<PreviousSecret>,
    pub schemes: Vec<Scheme>,
    pub max_file_size: u64,
    pub retention: Duration,
    pub reap_interval: Duration,
    pub min_free_space: u64,
    pub fsync: bool,
    pub trusted_proxies: Vec<IpNet>,
    pub shutdown_timeout: Duration,
    pub idle_timeout: Duration,
    pub quota_total: u64,
    pub quota_per_user: u64,
    pub limits: Limits,
    pub admin_listen: SocketAddr,
    pub allow_origins: AllowOrigins,
    pub log_format: LogFormat,
    pub failed_auth_ip: bool,
    /// Set: the public listener speaks TLS only (the admin one stays plain).
    pub tls: Option<TlsFiles>,
    pub storage: Storage,
    pub index: IndexBackend,
}

impl Default for Config {
    fn default() -> Self {
        // The built-in defaults are valid by construction; a test keeps it so.
        RawConfig::default()
            .validate()
            .expect("built-in defaults are valid")
    }
}

impl Config {
    /// Reads and validates a TOML file. Unknown keys and bad values name the key.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Config::parse(&text).map_err(|e| match e {
            ConfigError::Parse { message, .. } => ConfigError::Parse {
                path: path.to_owned(),
                message,
            },
            other => other,
        })
    }

    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: PathBuf::from("config"),
            message: e.to_string().trim_end().to_owned(),
        })?;
        raw.validate()
    }

    pub fn allows(&self, scheme: Scheme) -> bool {
        self.schemes.contains(&scheme)
    }
}

impl RawConfig {
    pub fn validate(self) -> Result<Config, ConfigError> {
        let listen = parse_addr("listen", &self.listen)?;
        let admin_listen = parse_addr("admin.listen", &self.admin.listen)?;
        if !self.base_path.starts_with('/') || !self.base_path.ends_with('/') {
            return Err(invalid(
                "base_path",
                format!("{:?} must start and end with '/'", self.base_path),
            ));
        }
        if self
            .base_path
            .bytes()
            .any(|b| !(b.is_ascii_alphanumeric() || b"/-._~".contains(&b)))
        {
            return Err(invalid(
                "base_path",
                format!(
                    "{:?} may only hold letters, digits and '/-._~'",
                    self.base_path
                ),
            ));
        }
        if self.data_dir.as_os_str().is_empty() {
            return Err(invalid("data_dir", "must not be empty"));
        }
        let secret = match (self.secret, self.secret_file) {
            (Some(_), Some(_)) => {
                return Err(invalid(
                    "secret",
                    "set either secret or secret_file, not both",
                ));
            }
            (Some(s), None) if s.len() < crate::secret::MIN_LEN => {
                return Err(invalid("secret", "must be at least 16 characters"));
            }
            (Some(s), None) => SecretSource::Inline(s),
            (None, Some(f)) => SecretSource::File(f),
            (None, None) => SecretSource::Generated,
        };
        let previous_secrets = self
            .previous_secrets
            .into_iter()
            .map(parse_previous)
            .collect::<Result<Vec<_>, _>>()?;
        let mut schemes = Vec::new();
        for name in &self.schemes {
            let scheme: Scheme = name.parse().map_err(|_| {
                invalid(
                    "schemes",
                    format!("unknown scheme {name:?} (known: v1, v2, token, jwt)"),
                )
            })?;
            if !schemes.contains(&scheme) {
                schemes.push(scheme);
            }
        }
        if schemes.is_empty() {
            return Err(invalid("schemes", "at least one scheme must be enabled"));
        }
        if self.max_file_size.0 == 0 {
            return Err(invalid("max_file_size", "must be above 0"));
        }
        if self.retention.is_zero() {
            return Err(invalid("retention", "must be above 0"));
        }
        if self.reap_interval.is_zero() {
            return Err(invalid("reap_interval", "must be above 0"));
        }
        if self.idle_timeout.is_zero() {
            return Err(invalid("idle_timeout", "must be above 0"));
        }
        let trusted_proxies = self
            .trusted_proxies
            .iter()
            .map(|s| parse_cidr(s))
            .collect::<Result<Vec<_>, _>>()?;
        let allow_origins = parse_origins(self.cors.allow_origins)?;
        let log_format = match self.log.format.as_str() {
            "text" => LogFormat::Text,
            "json" => LogFormat::Json,
            other => {
                return Err(invalid(
                    "log.format",
                    format!("{other:?} is neither \"text\" nor \"json\""),
                ));
            }
        };
        let tls = parse_tls(self.tls)?;
        let limits = parse_limits(self.limits)?;
        let storage = parse_storage(self.storage)?;
        let index = parse_index(self.index)?;
        if storage == Storage::Fs && index != IndexBackend::Local {
            return Err(invalid(
                "index.backend",
                "a shared index needs shared storage: set storage.backend = \"s3\" too",
            ));
        }
        if matches!(storage, Storage::S3(_)) && self.max_file_size.0 > S3_MAX_OBJECT {
            return Err(invalid(
                "max_file_size",
                "at most 5 GiB with storage.backend = \"s3\" (one PUT per file)",
            ));
        }
        Ok(Config {
            listen,
            base_path: self.base_path,
            data_dir: self.data_dir,
            secret,
            previous_secrets,
            schemes,
            max_file_size: self.max_file_size.0,
            retention: self.retention,
            reap_interval: self.reap_interval,
            min_free_space: self.min_free_space.0,
            fsync: self.fsync,
            trusted_proxies,
            shutdown_timeout: self.shutdown_timeout,
            idle_timeout: self.idle_timeout,
            quota_total: self.quota.total.0,
            quota_per_user: self.quota.per_user.0,
            limits,
            admin_listen,
            allow_origins,
            log_format,
            failed_auth_ip: self.log.failed_auth_ip,
            tls,
            storage,
            index,
        })
    }
}

fn parse_storage(raw: RawStorage) -> Result<Storage, ConfigError> {
    match raw.backend.as_str() {
        "fs" => Ok(Storage::Fs),
        "s3" => {
            let bucket = raw
                .bucket
                .filter(|b| !b.is_empty())
                .ok_or_else(|| invalid("storage.bucket", "required with backend = \"s3\""))?;
            if let Some(endpoint) = &raw.endpoint {
                let url: url::Url = endpoint
                    .parse()
                    .map_err(|e| invalid("storage.endpoint", format!("{endpoint:?}: {e}")))?;
                if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
                    return Err(invalid(
                        "storage.endpoint",
                        format!("{endpoint:?} is not an http(s) URL"),
                    ));
                }
            }
            if raw.region.is_empty() {
                return Err(invalid("storage.region", "must not be empty"));
            }
            Ok(Storage::S3(S3 {
                endpoint: raw.endpoint,
                region: raw.region,
                bucket,
                prefix: raw.prefix,
                access_key_id: Setting::of(
                    raw.access_key_id,
                    raw.access_key_id_file,
                    "AWS_ACCESS_KEY_ID",
                    "storage.access_key_id",
                )?,
                secret_access_key: Setting::of(
                    raw.secret_access_key,
                    raw.secret_access_key_file,
                    "AWS_SECRET_ACCESS_KEY",
                    "storage.secret_access_key",
                )?,
                path_style: raw.path_style,
            }))
        }
        other => Err(invalid(
            "storage.backend",
            format!("{other:?} is neither \"fs\" nor \"s3\""),
        )),
    }
}

fn parse_index(raw: RawIndex) -> Result<IndexBackend, ConfigError> {
    match raw.backend.as_str() {
        "local" => Ok(IndexBackend::Local),
        "postgres" => Ok(IndexBackend::Postgres {
            url: Setting::of(raw.url, raw.url_file, "UPSLOT_INDEX_URL", "index.url")?,
        }),
        other => Err(invalid(
            "index.backend",
            format!("{other:?} is neither \"local\" nor \"postgres\""),
        )),
    }
}

fn parse_previous(raw: RawPreviousSecret) -> Result<PreviousSecret, ConfigError> {
    const KEY: &str = "previous_secrets";
    let source = match (raw.secret, raw.secret_file) {
        (Some(s), None) if s.len() < crate::secret::MIN_LEN => {
            return Err(invalid(KEY, "secret must be at least 16 characters"));
        }
        (Some(s), None) => SecretSource::Inline(s),
        (None, Some(f)) => SecretSource::File(f),
        _ => {
            return Err(invalid(
                KEY,
                "each entry needs secret or secret_file, not both",
            ));
        }
    };
    let until = humantime::parse_rfc3339_weak(&raw.until)
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .ok_or_else(|| {
            invalid(
                KEY,
                format!(
                    "until {:?} is not a time like 2027-01-31T12:00:00Z",
                    raw.until
                ),
            )
        })?;
    Ok(PreviousSecret {
        source,
        until: until.as_secs(),
    })
}

fn parse_limits(raw: RawLimits) -> Result<Limits, ConfigError> {
    for (key, value) in [
        ("limits.max_connections", raw.max_connections),
        (
            "limits.max_connections_per_client",
            raw.max_connections_per_client,
        ),
        ("limits.max_uploads", raw.max_uploads),
        ("limits.max_uploads_per_client", raw.max_uploads_per_client),
        ("limits.max_headers", raw.max_headers),
        ("limits.max_streams", raw.max_streams as usize),
    ] {
        if value == 0 {
            return Err(invalid(key, "must be above 0"));
        }
    }
    if raw.header_timeout.is_zero() {
        return Err(invalid("limits.header_timeout", "must be above 0"));
    }
    if raw.discard_timeout.is_zero() {
        return Err(invalid("limits.discard_timeout", "must be above 0"));
    }
    // A request head must hold a slot URL and a JWT, and fit the read buffer.
    if !(1024..=64 * 1024).contains(&raw.max_header_size.0) {
        return Err(invalid(
            "limits.max_header_size",
            "must be between 1 KiB and 64 KiB",
        ));
    }
    Ok(Limits {
        max_connections: raw.max_connections,
        max_connections_per_client: raw.max_connections_per_client,
        max_uploads: raw.max_uploads,
        max_uploads_per_client: raw.max_uploads_per_client,
        header_timeout: raw.header_timeout,
        discard_timeout: raw.discard_timeout,
        min_upload_rate: raw.min_upload_rate.0,
        max_header_size: raw.max_header_size.0 as usize,
        max_headers: raw.max_headers,
        max_streams: raw.max_streams,
    })
}

fn parse_addr(key: &'static str, s: &str) -> Result<SocketAddr, ConfigError> {
    s.parse()
        .map_err(|_| invalid(key, format!("{s:?} is not an address like 127.0.0.1:5050")))
}

fn parse_tls(raw: RawTls) -> Result<Option<TlsFiles>, ConfigError> {
    let empty = |p: &Option<PathBuf>| p.as_ref().is_some_and(|p| p.as_os_str().is_empty());
    if empty(&raw.cert_file) {
        return Err(invalid("tls.cert_file", "must not be empty"));
    }
    if empty(&raw.key_file) {
        return Err(invalid("tls.key_file", "must not be empty"));
    }
    match (raw.cert_file, raw.key_file) {
        (Some(cert_file), Some(key_file)) => Ok(Some(TlsFiles {
            cert_file,
            key_file,
        })),
        (None, None) => Ok(None),
        (Some(_), None) => Err(invalid(
            "tls.key_file",
            "missing: tls.cert_file is set, and its private key is needed too",
        )),
        (None, Some(_)) => Err(invalid(
            "tls.cert_file",
            "missing: tls.key_file is set, and its certificate is needed too",
        )),
    }
}

fn parse_cidr(s: &str) -> Result<IpNet, ConfigError> {
    if let Ok(net) = s.parse::<IpNet>() {
        return Ok(net.trunc());
    }
    s.parse::<std::net::IpAddr>().map(IpNet::from).map_err(|_| {
        invalid(
            "trusted_proxies",
            format!("{s:?} is not an IP address or CIDR"),
        )
    })
}

fn parse_origins(list: Vec<String>) -> Result<AllowOrigins, ConfigError> {
    if list.iter().any(|o| o == "*") {
        return Ok(AllowOrigins::Any);
    }
    for origin in &list {
        let ok = (origin.starts_with("https://") || origin.starts_with("http://"))
            && !origin.ends_with('/')
            && origin.is_ascii()
            && http::HeaderValue::from_str(origin).is_ok();
        if !ok {
            return Err(invalid(
                "cors.allow_origins",
                format!("{origin:?} is not an origin like https://chat.example.org"),
            ));
        }
    }
    Ok(AllowOrigins::List(list))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        let c = Config::parse("").expect("empty file is valid");
        assert_eq!(c.listen.to_string(), "127.0.0.1:5050");
        assert_eq!(c.max_file_size, 100 * 1024 * 1024);
        assert_eq!(c.retention, Duration::from_secs(604_800));
        assert_eq!(c.schemes.len(), 4);
        assert_eq!(c.allow_origins, AllowOrigins::Any);
        assert_eq!(c.tls, None);
    }

    #[test]
    fn tls_takes_both_files() {
        let c =
            Config::parse("[tls]\ncert_file = \"c.pem\"\nkey_file = \"k.pem\"\n").expect("valid");
        assert_eq!(
            c.tls,
            Some(TlsFiles {
                cert_file: "c.pem".into(),
                key_file: "k.pem".into(),
            })
        );
    }

    #[test]
    fn previous_secrets_have_an_end() {
        let c = Config::parse(
            "[[previous_secrets]]\nsecret_file = \"/etc/upslot/secret.old\"\nuntil = \"2027-01-31T12:00:00Z\"\n\
             [[previous_secrets]]\nsecret = \"0123456789abcdef\"\nuntil = \"2027-01-01 00:00:00\"\n",
        )
        .expect("valid");
        assert_eq!(
            c.previous_secrets,
            [
                PreviousSecret {
                    source: SecretSource::File("/etc/upslot/secret.old".into()),
                    until: 1_801_396_800,
                },
                PreviousSecret {
                    source: SecretSource::Inline("0123456789abcdef".into()),
                    until: 1_798_761_600,
                },
            ]
        );
    }

    #[test]
    fn unknown_key_is_named() {
        let e = Config::parse("listen = \"127.0.0.1:1\"\nmax_filesize = 3\n").unwrap_err();
        assert!(e.to_string().contains("max_filesize"), "{e}");
        let e = Config::parse("[quota]\nperuser = \"1 MiB\"\n").unwrap_err();
        assert!(e.to_string().contains("peruser"), "{e}");
    }

    #[test]
    fn bad_values_say_which_and_why() {
        for (text, key) in [
            ("retention = \"seven days\"", "retention"),
            ("max_file_size = \"lots\"", "max_file_size"),
            ("base_path = \"upload\"", "base_path"),
            ("schemes = [\"v3\"]", "schemes"),
            ("trusted_proxies = [\"10.0.0.0/33\"]", "trusted_proxies"),
            ("listen = \"localhost\"", "listen"),
            ("[log]\nformat = \"xml\"", "log.format"),
            (
                "[cors]\nallow_origins = [\"example.org\"]",
                "cors.allow_origins",
            ),
            ("[tls]\ncert_file = \"/etc/c.pem\"", "tls.key_file"),
            ("[tls]\nkey_file = \"/etc/k.pem\"", "tls.cert_file"),
            ("[tls]\ncert_file = \"\"\nkey_file = \"k\"", "tls.cert_file"),
            ("[tls]\ncertfile = \"c\"", "certfile"),
            ("[limits]\nmax_connections = 0", "limits.max_connections"),
            ("[storage]\nbackend = \"nfs\"", "storage.backend"),
            ("[storage]\nbackend = \"s3\"", "storage.bucket"),
            (
                "[storage]\nbackend = \"s3\"\nbucket = \"b\"\nendpoint = \"ftp://h\"",
                "storage.endpoint",
            ),
            (
                "[storage]\nbackend = \"s3\"\nbucket = \"b\"\naccess_key_id = \"k\"\naccess_key_id_file = \"f\"",
                "storage.access_key_id",
            ),
            (
                "max_file_size = \"6 GiB\"\n[storage]\nbackend = \"s3\"\nbucket = \"b\"",
                "max_file_size",
            ),
            ("[index]\nbackend = \"sqlite\"", "index.backend"),
            ("[index]\nbackend = \"postgres\"", "index.backend"),
            (
                "[[previous_secrets]]\nsecret = \"0123456789abcdef\"\nuntil = \"soon\"",
                "previous_secrets",
            ),
            (
                "[[previous_secrets]]\nsecret = \"short\"\nuntil = \"2027-01-01T00:00:00Z\"",
                "previous_secrets",
            ),
            (
                "[[previous_secrets]]\nuntil = \"2027-01-01T00:00:00Z\"",
                "previous_secrets",
            ),
            ("[limits]\nheader_timeout = \"0s\"", "limits.header_timeout"),
            (
                "[limits]\nmax_header_size = \"100\"",
                "limits.max_header_size",
            ),
            ("[limits]\nmax_conections = 5", "max_conections"),
            ("[limits]\nmax_connections = 0", "limits.max_connections"),
            ("[storage]\nbackend = \"nfs\"", "storage.backend"),
            ("[storage]\nbackend = \"s3\"", "storage.bucket"),
            (
                "[storage]\nbackend = \"s3\"\nbucket = \"b\"\nendpoint = \"ftp://h\"",
                "storage.endpoint",
            ),
            (
                "[storage]\nbackend = \"s3\"\nbucket = \"b\"\naccess_key_id = \"k\"\naccess_key_id_file = \"f\"",
                "storage.access_key_id",
            ),
            (
                "max_file_size = \"6 GiB\"\n[storage]\nbackend = \"s3\"\nbucket = \"b\"",
                "max_file_size",
            ),
            ("[index]\nbackend = \"sqlite\"", "index.backend"),
            ("[index]\nbackend = \"postgres\"", "index.backend"),
            ("[limits]\nheader_timeout = \"0s\"", "limits.header_timeout"),
            (
                "[limits]\nmax_header_size = \"100\"",
                "limits.max_header_size",
            ),
            ("[limits]\nmax_conections = 5", "max_conections"),
        ] {
            let e = Config::parse(text).unwrap_err().to_string();
            assert!(e.contains(key), "{text}: {e}");
        }
    }

    #[test]
    fn the_documented_example_parses() {
        let text = r#"
listen = "127.0.0.1:5050"
base_path = "/upload/"
data_dir = "./upslot-data"
secret = "0123456789abcdef0123"
schemes = ["v1", "v2", "token", "jwt"]
max_file_size = "100 MiB"
retention = "7d"
reap_interval = "1m"
min_free_space = "1 GiB"
fsync = true
trusted_proxies = ["10.0.0.0/8", "::1"]
[quota]
total = "0"
per_user = "0"
[admin]
listen = "127.0.0.1:5051"
[cors]
allow_origins = ["*"]
[log]
format = "text"
failed_auth_ip = true
"#;
        let c = Config::parse(text).expect("valid");
        assert_eq!(c.reap_interval, Duration::from_secs(60));
        assert_eq!(c.min_free_space, 1 << 30);
        assert_eq!(c.trusted_proxies.len(), 2);
    }
}
