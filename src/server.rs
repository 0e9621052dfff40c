//! The accept loop: HTTP/1.1 with keep-alive, and HTTP/2 over cleartext (h2c) on
//! the same port, or both over TLS when a [`TlsAcceptor`] is given. On shutdown it
//! stops accepting, lets in-flight requests finish until the deadline, then aborts
//! the rest; an aborted upload leaves nothing.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

use crate::app::App;
use crate::http::body::Body;
use crate::routes;

/// How long a client may take to send its request headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(30);
/// The largest read from a connection, and so the longest request head.
const READ_BUFFER: usize = 64 * 1024;
/// How long a client may take over the TLS handshake.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves the public upload and download routes, over TLS if `tls` is set.
pub async fn serve(
    app: Arc<App>,
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    serve_with(app, listener, tls, shutdown, |app, req, peer| async move {
        routes::handle(&app, req, peer).await
    })
    .await
}

/// The accept loop, for any handler: the public routes or the admin ones.
pub async fn serve_with<H, F>(
    app: Arc<App>,
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
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
        .header_read_timeout(HEADER_TIMEOUT)
        // Each connection's read buffer grows up to this; an upload's body pieces
        // are slices of it, held until written. hyper's default (~400 KiB) times
        // many uploads costs more memory than the larger reads gain.
        .max_buf_size(READ_BUFFER);
    builder.http2().timer(TokioTimer::new());
    let builder = Arc::new(builder);
    let graceful = GracefulShutdown::new();
    // Dropped when the loop ends: handshakes still under way are given up.
    let (accepting, accepting_rx) = watch::channel(());
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
        let asked = Arc::new(AtomicBool::new(false));
        let service = {
            let asked = Arc::clone(&asked);
            service_fn(move |req| {
                asked.store(true, Ordering::Relaxed);
                let response = handler(Arc::clone(&app), req, peer.ip());
                async move { Ok::<_, Infallible>(response.await) }
            })
        };
        let (builder, watcher) = (Arc::clone(&builder), graceful.watcher());
        match &tls {
            None => connections.spawn(serve_connection(builder, stream, service, watcher, asked)),
            Some(acceptor) => {
                let handshake = handshake(acceptor.clone(), stream, accepting_rx.clone());
                connections.spawn(async move {
                    if let Some(stream) = handshake.await {
                        serve_connection(builder, stream, service, watcher, asked).await;
                    }
                })
            }
        };
        while connections.try_join_next().is_some() {}
    }
    drop(listener);
    drop(accepting);
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

/// Serves one connection (HTTP/1.1 or HTTP/2, whichever the client speaks) until
/// it closes or, once shutdown has begun, its requests in flight are done.
/// `asked` turns true with its first request; one that has brought none within
/// [`HEADER_TIMEOUT`] is closed. hyper's header timeout starts only once it knows
/// the protocol, so a silent client, or one that stops within the HTTP/2
/// preface, would otherwise hold its socket for ever.
async fn serve_connection<I, S>(
    builder: Arc<auto::Builder<TokioExecutor>>,
    stream: I,
    service: S,
    watcher: Watcher,
    asked: Arc<AtomicBool>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: hyper::service::Service<Request<Incoming>, Response = Response<Body>, Error = Infallible>
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    let conn = builder
        .serve_connection(TokioIo::new(stream), service)
        .into_owned();
    drop(builder);
    let first_request = async {
        tokio::time::sleep(HEADER_TIMEOUT).await;
        if asked.load(Ordering::Relaxed) {
            std::future::pending::<()>().await;
        }
    };
    tokio::select! {
        served = watcher.watch(conn) => if let Err(e) = served {
            tracing::debug!(error = %e, "connection closed with an error");
        },
        () = first_request => tracing::debug!("no request in time; connection closed"),
    }
}

/// The TLS handshake, bounded in time and abandoned when the accept loop ends.
/// Failures are the client's business: logged at debug, without its address.
async fn handshake(
    acceptor: TlsAcceptor,
    stream: TcpStream,
    mut accepting: watch::Receiver<()>,
) -> Option<tokio_rustls::server::TlsStream<TcpStream>> {
    let accept = tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream));
    tokio::select! {
        done = accept => match done {
            Ok(Ok(stream)) => Some(stream),
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "TLS handshake failed");
                None
            }
            Err(_) => {
                tracing::debug!("TLS handshake timed out");
                None
            }
        },
        _ = accepting.changed() => None,
    }
}
