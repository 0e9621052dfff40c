//! upslot: an HTTP File Upload service for XMPP (XEP-0363).
//!
//! An XMPP server hands its users signed upload URLs; clients PUT files to upslot,
//! which checks the signature, stores the file atomically and serves it back until
//! it expires. [`Service`] is the whole service; `main.rs` and the tests start it
//! the same way.

pub mod app;
pub mod auth;
pub mod client_ip;
pub mod clock;
pub mod config;
pub mod download;
pub mod error;
pub mod hints;
pub mod http;
pub mod path;
pub mod routes;
pub mod secret;
pub mod server;
pub mod store;
pub mod telemetry;
pub mod upload;

use std::future::Future;
use std::io;
use std::sync::Arc;

use tokio::net::TcpListener;

use crate::app::App;
use crate::auth::Verifier;
use crate::clock::SharedClock;
use crate::config::Config;
use crate::secret::Secret;
use crate::store::FsStore;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("secret: {0}")]
    Secret(#[source] io::Error),
    #[error("data directory {path}: {source}")]
    Store {
        path: std::path::PathBuf,
        source: io::Error,
    },
    #[error("secret is unusable")]
    BadSecret,
}

/// A ready-to-serve upslot: storage opened, secret resolved.
pub struct Service {
    app: Arc<App>,
    secret: Secret,
}

impl Service {
    /// Opens the data directory (clearing what interrupted uploads left) and
    /// resolves the secret, generating one on first start if none is configured.
    pub fn open(config: Config, clock: SharedClock) -> Result<Service, StartError> {
        let secret = Secret::resolve(&config, true).map_err(StartError::Secret)?;
        let store =
            FsStore::open(&config.data_dir, config.fsync).map_err(|source| StartError::Store {
                path: config.data_dir.clone(),
                source,
            })?;
        let verifier =
            Verifier::new(secret.as_bytes(), &config.schemes).map_err(|_| StartError::BadSecret)?;
        let app = App::new(config, Arc::new(store), verifier, clock);
        Ok(Service {
            app: Arc::new(app),
            secret,
        })
    }

    pub fn config(&self) -> &Config {
        &self.app.config
    }

    pub fn secret(&self) -> &Secret {
        &self.secret
    }

    /// Serves on `listener` until `shutdown` resolves, then drains (DESIGN §5).
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()>,
    ) -> io::Result<()> {
        server::serve(self.app, listener, shutdown).await
    }
}
