//! The accept loop: HTTP/1.1 with keep-alive, and HTTP/2 over cleartext (h2c) on
//! the same port. On shutdown it stops accepting, lets in-flight requests finish
//! until the deadline, then aborts the rest; an aborted upload leaves nothing.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::task::JoinSet;

use crate::app::App;
use crate::http::body::Body;
use crate::routes;

/// How long a client may take to send its request headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(30);

/// Serves the public upload and download routes.
pub async fn serve(
    app: Arc<App>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    serve_with(app, listener, shutdown, |app, req, peer| async move {
        routes::handle(&app, req, peer).await
    })
    .await
}

/// The accept loop, for any handler: the public routes or the admin ones.
pub async fn serve_with<H, F>(
    app: Arc<App>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
    handler: H,
) -> io::Result<()>
where
    H: Fn(Arc<App>, Request<Incoming>, IpAddr) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Body>> + Send + 'static,
{
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT);
    builder.http2().timer(TokioTimer::new());
    let graceful = GracefulShutdown::new();
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors, usually: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let app = Arc::clone(&app);
        let handler = handler.clone();
        let service = service_fn(move |req| {
            let response = handler(Arc::clone(&app), req, peer.ip());
            async move { Ok::<_, Infallible>(response.await) }
        });
        let conn = builder
            .serve_connection(TokioIo::new(stream), service)
            .into_owned();
        let conn = graceful.watch(conn);
        connections.spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "connection closed with an error");
            }
        });
        while connections.try_join_next().is_some() {}
    }
    drop(listener);
    tracing::info!(
        connections = connections.len(),
        "shutting down: finishing requests in flight"
    );
    tokio::select! {
        () = graceful.shutdown() => tracing::info!("all connections closed"),
        () = tokio::time::sleep(app.config.shutdown_timeout) => {
            tracing::warn!(
                aborted = connections.len(),
                "shutdown deadline reached; aborting the remaining connections"
            );
        }
    }
    connections.abort_all();
    while connections.join_next().await.is_some() {}
    Ok(())
}
