//! upslot: an HTTP File Upload service for XMPP (XEP-0363).
//!
//! An XMPP server hands its users signed upload URLs; clients PUT files to upslot,
//! which checks the signature, stores the file atomically and serves it back until
//! it expires. [`Service`] is the whole service; `main.rs` and the tests start it
//! the same way.

pub mod admin;
pub mod app;
pub mod auth;
pub mod catalog;
pub mod cli;
pub mod client_ip;
pub mod clock;
pub mod config;
pub mod connections;
pub mod control;
pub mod download;
pub mod error;
pub mod files;
pub mod hints;
pub mod http;
pub mod index;
pub mod limits;
pub mod metrics;
pub mod migrate;
pub mod path;
pub mod reaper;
pub mod routes;
pub mod secret;
pub mod server;
pub mod store;
pub mod telemetry;
pub mod tls;
pub mod upload;

use std::future::Future;
use std::io;
use std::sync::Arc;

use tokio::net::TcpListener;

use crate::app::App;
use crate::auth::Verifier;
use crate::catalog::{Catalog, Opener};
use crate::clock::SharedClock;
use crate::config::Config;
use crate::secret::Secret;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("secret: {0}")]
    Secret(#[source] io::Error),
    #[error(transparent)]
    Open(#[from] catalog::OpenError),
    #[error("secret is unusable")]
    BadSecret,
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
}

/// The slot verifier for `config`'s schemes, current secret and previous ones.
fn verifier(config: &Config, secret: &Secret) -> Result<Verifier, StartError> {
    let previous = secret::previous(config).map_err(StartError::Secret)?;
    Verifier::new(secret.as_bytes(), &config.schemes)
        .and_then(|v| v.with_previous(previous.iter().map(|(s, until)| (s.as_bytes(), *until))))
        .map_err(|_| StartError::BadSecret)
}

/// Puts new secrets in effect without a restart: the current one and those
/// from before a rotation (README, "Rotating the secret").
#[derive(Clone)]
pub struct SecretsReloader {
    app: Arc<App>,
}

impl SecretsReloader {
    /// Resolves the secrets that `config` names (as at start, but never
    /// generating one) and swaps them in; the schemes stay as they were. On
    /// an error the secrets in effect stay. Returns how many previous secrets
    /// are still accepted now.
    pub fn reload(&self, config: &Config) -> Result<usize, StartError> {
        let secret = Secret::resolve(config, false).map_err(StartError::Secret)?;
        let config = Config {
            schemes: self.app.config.schemes.clone(),
            ..config.clone()
        };
        let verifier = verifier(&config, &secret)?;
        let previous = verifier.previous_in_effect(self.app.clock.unix());
        self.app.set_verifier(verifier);
        Ok(previous)
    }
}

/// A ready-to-serve upslot: storage opened, secret resolved.
pub struct Service {
    app: Arc<App>,
    secret: Secret,
    admin: Option<TcpListener>,
    tls: Option<tls::Tls>,
}

impl Service {
    /// Opens the data directory (clearing what interrupted uploads left, deleting
    /// what expired while the service was down, and indexing the rest) and resolves
    /// the secret, generating one on first start if none is configured.
    pub async fn open(mut config: Config, clock: SharedClock) -> Result<Service, StartError> {
        limits::fit_descriptors(&mut config.limits);
        // First: a certificate that cannot be served should stop start-up before
        // anything is written.
        let tls = config.tls.as_ref().map(tls::Tls::load).transpose()?;
        let secret = Secret::resolve(&config, true).map_err(StartError::Secret)?;
        let (catalog, swept) = Catalog::open(&config, Opener::Service, clock.unix()).await?;
        let usage = catalog
            .index
            .stats()
            .await
            .map_err(catalog::OpenError::Index)?
            .usage;
        tracing::info!(
            files = usage.files,
            bytes = usage.bytes,
            expired_deleted = swept,
            "storage opened"
        );
        let verifier = verifier(&config, &secret)?;
        let now = clock.unix();
        let app = App::new(config, catalog, verifier, clock);
        app.metrics.expired_deleted.inc_by(swept);
        // The sweep was a full pass: readiness need not wait for the reaper task's first.
        app.reaper_heartbeat
            .store(now, std::sync::atomic::Ordering::Relaxed);
        Ok(Service {
            app: Arc::new(app),
            secret,
            admin: None,
            tls,
        })
    }

    pub fn config(&self) -> &Config {
        &self.app.config
    }

    pub fn secret(&self) -> &Secret {
        &self.secret
    }

    /// Serves on `listener` until `shutdown` resolves, then drains (DESIGN §5).
    /// The reaper and the control socket run alongside.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()>,
    ) -> io::Result<()> {
        let control = control::listen(
            &self.app.config.data_dir,
            Arc::clone(&self.app.catalog.index),
        )
            .inspect_err(|e| {
                tracing::warn!(error = %e, "no control socket: `upslot files delete` will show in usage after a restart");
            })
            .ok();
        let reaper = tokio::spawn(reaper::run(Arc::clone(&self.app)));
        let (acceptor, cert_watch) = match self.tls {
            Some(tls) => (Some(tls.acceptor), Some(tokio::spawn(tls.reloader.watch()))),
            None => (None, None),
        };
        let (stop_admin, admin_stopped) = tokio::sync::oneshot::channel::<()>();
        let admin = self.admin.map(|listener| {
            let app = Arc::clone(&self.app);
            tokio::spawn(server::serve_with(
                app,
                listener,
                None,
                async {
                    let _ = admin_stopped.await;
                },
                admin::handle,
            ))
        });
        let app = Arc::clone(&self.app);
        let shutdown = async move {
            shutdown.await;
            app.stopping
                .store(true, std::sync::atomic::Ordering::Relaxed);
        };
        let served = server::serve(Arc::clone(&self.app), listener, acceptor, shutdown).await;
        let _ = stop_admin.send(());
        if let Some(admin) = admin {
            let _ = admin.await;
        }
        reaper.abort();
        let _ = reaper.await;
        if let Some(cert_watch) = cert_watch {
            cert_watch.abort();
            let _ = cert_watch.await;
        }
        if let Some(control) = control {
            control.abort();
            let _ = control.await;
        }
        served
    }

    /// Also serves `/metrics`, `/healthz` and `/readyz` on `listener`.
    pub fn with_admin(mut self, listener: TcpListener) -> Service {
        self.admin = Some(listener);
        self
    }

    /// Swaps the public listener's certificate (SIGHUP, tests); `None` without `[tls]`.
    pub fn tls_reloader(&self) -> Option<tls::Reloader> {
        self.tls.as_ref().map(|tls| tls.reloader.clone())
    }

    /// Re-reads the secrets (SIGHUP) for the running service.
    pub fn secrets_reloader(&self) -> SecretsReloader {
        SecretsReloader {
            app: Arc::clone(&self.app),
        }
    }

    /// The shared state, for tests that look inside.
    pub fn app(&self) -> &Arc<App> {
        &self.app
    }
}
