//! Native HTTPS: rustls (ring provider) with ALPN `h2` and `http/1.1`, and a
//! certificate that can be swapped while the service runs. A swap affects new
//! handshakes only; established connections keep the session they negotiated.
//!
//! [`Reloader::reload`] is called on SIGHUP (by `main`) and by [`Reloader::watch`]
//! when the certificate or key file changes. A reload that fails keeps the
//! certificate being served.

use std::fmt;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use crate::config::TlsFiles;

/// How often [`Reloader::watch`] looks at the files, unless told otherwise.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{key}: cannot read {path}: {source}")]
    Read {
        key: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("tls.cert_file: {path}: no PEM certificate in it")]
    NoCertificate { path: PathBuf },
    #[error("tls.cert_file: {path}: {why}")]
    Certificate { path: PathBuf, why: String },
    // Never echo the key file's content, not even in part.
    #[error("tls.key_file: {path}: no usable PEM private key (PKCS#8, PKCS#1 or SEC1)")]
    Key { path: PathBuf },
    #[error("tls.key_file: {key} does not belong to the certificate in {cert}")]
    Mismatch { cert: PathBuf, key: PathBuf },
    #[error("TLS setup: {0}")]
    Setup(rustls::Error),
}

/// The TLS side of the public listener: the acceptor for the accept loop, and
/// the handle that swaps its certificate.
pub struct Tls {
    pub acceptor: TlsAcceptor,
    pub reloader: Reloader,
}

impl Tls {
    /// Loads the certificate and key (both must parse and match) and builds the
    /// server configuration around a swappable certificate.
    pub fn load(files: &TlsFiles) -> Result<Tls, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let first = load(files, &provider)?;
        let resolver = Arc::new(Resolver {
            current: RwLock::new(Arc::new(first)),
        });
        let mut config = ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .map_err(TlsError::Setup)?
            .with_no_client_auth()
            .with_cert_resolver(Arc::clone(&resolver) as Arc<dyn ResolvesServerCert>);
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let (poll, _) = watch::channel(DEFAULT_POLL_INTERVAL);
        let reloader = Reloader {
            inner: Arc::new(Inner {
                files: files.clone(),
                provider,
                resolver,
                seen: Mutex::new(Fingerprint::of(files)),
                poll,
            }),
        };
        Ok(Tls {
            acceptor: TlsAcceptor::from(Arc::new(config)),
            reloader,
        })
    }
}

/// Checks that the files can be served (read, parsed, key matching), as the
/// service would at start; for `upslot check-config`.
pub fn check(files: &TlsFiles) -> Result<(), TlsError> {
    load(files, &rustls::crypto::ring::default_provider()).map(drop)
}

fn load(files: &TlsFiles, provider: &CryptoProvider) -> Result<CertifiedKey, TlsError> {
    let read = |key, path: &Path| {
        std::fs::read(path).map_err(|source| TlsError::Read {
            key,
            path: path.to_owned(),
            source,
        })
    };
    let cert_pem = read("tls.cert_file", &files.cert_file)?;
    let key_pem = read("tls.key_file", &files.key_file)?;
    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Certificate {
            path: files.cert_file.clone(),
            why: e.to_string(),
        })?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate {
            path: files.cert_file.clone(),
        });
    }
    let key_error = || TlsError::Key {
        path: files.key_file.clone(),
    };
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|_| key_error())?;
    let key = provider
        .key_provider
        .load_private_key(key)
        .map_err(|_| key_error())?;
    let certified = CertifiedKey::new(chain, key);
    match certified.keys_match() {
        Ok(()) => Ok(certified),
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => {
            Err(TlsError::Mismatch {
                cert: files.cert_file.clone(),
                key: files.key_file.clone(),
            })
        }
        // ring's keys all know their public half; should one not, rustls' own
        // `CertifiedKey::from_der` accepts it too.
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => Ok(certified),
        Err(e) => Err(TlsError::Certificate {
            path: files.cert_file.clone(),
            why: e.to_string(),
        }),
    }
}

/// Hands every handshake the current certificate.
struct Resolver {
    current: RwLock<Arc<CertifiedKey>>,
}

impl fmt::Debug for Resolver {
    // CertifiedKey's Debug would print the key's description; nothing to see here.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Resolver")
    }
}

impl ResolvesServerCert for Resolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let current = self.current.read().unwrap_or_else(PoisonError::into_inner);
        Some(Arc::clone(&current))
    }
}

/// What the poller compares: identity, modification time and length of both
/// files, following symlinks (certbot's `live/` links move to new files).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Fingerprint([Option<FileState>; 2]);

/// Device, inode, modification time (s, ns) and length.
type FileState = (u64, u64, i64, i64, u64);

impl Fingerprint {
    fn of(files: &TlsFiles) -> Fingerprint {
        let one = |path: &Path| {
            std::fs::metadata(path)
                .ok()
                .map(|m| (m.dev(), m.ino(), m.mtime(), m.mtime_nsec(), m.len()))
        };
        Fingerprint([one(&files.cert_file), one(&files.key_file)])
    }
}

struct Inner {
    files: TlsFiles,
    provider: Arc<CryptoProvider>,
    resolver: Arc<Resolver>,
    /// The files as they were at the last load or reload attempt.
    seen: Mutex<Fingerprint>,
    poll: watch::Sender<Duration>,
}

/// Swaps the served certificate; cheap to clone.
#[derive(Clone)]
pub struct Reloader {
    inner: Arc<Inner>,
}

impl Reloader {
    /// What SIGHUP does: re-reads both files and, if they parse and match, serves
    /// them to new handshakes. On failure logs an error and keeps the current
    /// certificate. Blocking (it reads files).
    pub fn reload(&self) -> Result<(), TlsError> {
        self.reload_because("sighup")
    }

    /// `trigger` goes in the log line, so that an operator (and a test) can tell a
    /// signal from the file watch.
    fn reload_because(&self, trigger: &'static str) -> Result<(), TlsError> {
        let inner = &self.inner;
        *inner.seen.lock().unwrap_or_else(PoisonError::into_inner) = Fingerprint::of(&inner.files);
        match load(&inner.files, &inner.provider) {
            Ok(certified) => {
                *inner
                    .resolver
                    .current
                    .write()
                    .unwrap_or_else(PoisonError::into_inner) = Arc::new(certified);
                tracing::info!(
                    trigger = %trigger,
                    cert = %inner.files.cert_file.display(),
                    "certificate reloaded"
                );
                Ok(())
            }
            Err(e) => {
                tracing::error!(error = %e, "certificate reload failed; still serving the previous certificate");
                Err(e)
            }
        }
    }

    /// The end-entity certificate that new handshakes get.
    pub fn current_certificate(&self) -> Option<CertificateDer<'static>> {
        let current = self
            .inner
            .resolver
            .current
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        current.cert.first().cloned()
    }

    /// How often [`Reloader::watch`] looks at the files; takes effect at once.
    /// Not a config key: tests shorten it.
    pub fn set_poll_interval(&self, interval: Duration) {
        self.inner.poll.send_replace(interval);
    }

    pub fn poll_interval(&self) -> Duration {
        *self.inner.poll.borrow()
    }

    /// Polls the files for ever and reloads once a change has held still for one
    /// interval (so that a renewal caught halfway is not loaded halfway).
    /// Polling rather than inotify: it sees renamed and re-linked files alike.
    pub async fn watch(self) {
        let mut interval = self.inner.poll.subscribe();
        let mut last = None;
        loop {
            let wait = *interval.borrow_and_update();
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                // A new interval: start waiting afresh with it.
                Ok(()) = interval.changed() => continue,
            }
            let this = self.clone();
            // metadata() and the reload read files: keep them off the runtime's threads.
            let Ok(now) = tokio::task::spawn_blocking(move || this.check(last)).await else {
                return;
            };
            last = Some(now);
        }
    }

    /// One poll: reloads if the files differ from the last attempt and are as
    /// they were at the previous poll. Returns what it saw.
    fn check(&self, previous: Option<Fingerprint>) -> Fingerprint {
        let now = Fingerprint::of(&self.inner.files);
        let seen = self
            .inner
            .seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        if now != seen && previous.as_ref() == Some(&now) {
            tracing::info!(cert = %self.inner.files.cert_file.display(), "certificate or key file changed");
            let _ = self.reload_because("watch");
        }
        now
    }
}
