//! The accept loop: HTTP/1.1 with keep-alive, and HTTP/2 over cleartext (h2c) on
//! the same port, or both over TLS when a [`TlsAcceptor`] is given. Connections
//! are counted and capped, and idle ones closed (docs/limits.md). On shutdown it
//! stops accepting, closes idle connections, lets requests in flight finish
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
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

use crate::app::App;
use crate::config::{Config, DEFAULT_MAX_HEADERS};
use crate::connections::{BusyBody, Close, Conn, Connections};
use crate::http::body::Body;
use crate::limits::Gate;
use crate::metrics::GaugeGuard;
use crate::routes;
use crate::telemetry::Throttle;

/// `accept` failures are logged at most once a minute: they come in floods.
static ACCEPT_FAILED: Throttle = Throttle::new();

/// The largest read from a connection, and so the longest HTTP/1.1 request
/// head hyper will parse; `limits.max_header_size` is checked on what it parsed
/// (routes.rs), as hyper's own setting is not reachable through `auto`.
const READ_BUFFER: usize = 64 * 1024;
/// How long a client may take over the TLS handshake.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Idle connections closed at once when `accept` finds no descriptor left.
const SHED_ON_EXHAUSTION: usize = 16;
/// The answer to a connection over the caps, written before it is closed.
const REFUSAL: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 5\r\n\
Content-Type: text/plain; charset=utf-8\r\nContent-Length: 21\r\nConnection: close\r\n\r\n\
too many connections\n";

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

/// hyper's settings from `[limits]` (docs/limits.md).
fn builder(config: &Config) -> auto::Builder<TokioExecutor> {
    let limits = &config.limits;
    let mut builder = auto::Builder::new(TokioExecutor::new());
    let mut http1 = builder.http1();
    http1
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        // Each connection's read buffer grows up to this; an upload's body pieces
        // are slices of it, held until written. hyper's default (~400 KiB) times
        // many uploads costs more memory than the larger reads gain.
        .max_buf_size(READ_BUFFER);
    // Any setting moves hyper's header array from the stack to the heap, for
    // every request: only pay that when the operator asks for another count.
    if limits.max_headers != DEFAULT_MAX_HEADERS {
        http1.max_headers(limits.max_headers);
    }
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.max_streams)
        .max_header_list_size(u32::try_from(limits.max_header_size).unwrap_or(u32::MAX));
    builder
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
    let config = &app.config;
    let builder = Arc::new(builder(config));
    let connections = Connections::new(Gate::new(
        config.limits.max_connections,
        config.limits.max_connections_per_client,
        config.trusted_proxies.clone(),
    ));
    let timeouts = Timeouts {
        header: config.limits.header_timeout,
        idle: config.idle_timeout,
    };
    let mut tasks = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of descriptors, usually: idle connections give theirs
                    // back, and the loop backs off instead of spinning.
                    // (Each is counted as evicted when it closes.)
                    let shed = connections.evict_idle(SHED_ON_EXHAUSTION);
                    if let Some(suppressed) = ACCEPT_FAILED.ready() {
                        tracing::warn!(error = %e, shed, suppressed, "accept failed");
                    }
                    tokio::time::sleep(Duration::from_millis(if shed > 0 { 10 } else { 100 })).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let admitted = match connections.admit(peer.ip()) {
            Ok(admitted) => admitted,
            Err(full) => {
                app.metrics
                    .connections_refused
                    .with_label_values(&[full.busy().label()])
                    .inc();
                if tls.is_none() {
                    // Best effort: the socket is fresh, so this rarely blocks.
                    let _ = stream.try_write(REFUSAL);
                }
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let service = {
            let (app, handler, conn) = (
                Arc::clone(&app),
                handler.clone(),
                Arc::clone(&admitted.conn),
            );
            service_fn(move |req| {
                let busy = conn.busy();
                let response = handler(Arc::clone(&app), req, peer.ip());
                async move { Ok::<_, Infallible>(response.await.map(|body| BusyBody::new(body, busy))) }
            })
        };
        let (builder, app, tls) = (Arc::clone(&builder), Arc::clone(&app), tls.clone());
        tasks.spawn(async move {
            let _open = GaugeGuard::new(&app.metrics.connections_open);
            let conn = &admitted.conn;
            let closed = match tls {
                None => serve_connection(&builder, stream, service, conn, timeouts).await,
                Some(acceptor) => match handshake(acceptor, stream, conn).await {
                    Some(stream) => {
                        serve_connection(&builder, stream, service, conn, timeouts).await
                    }
                    None => None,
                },
            };
            if let Some(why) = closed {
                app.metrics
                    .connections_closed
                    .with_label_values(&[why.label()])
                    .inc();
            }
        });
        while tasks.try_join_next().is_some() {}
    }
    drop(listener);
    connections.stop();
    tracing::info!(
        connections = connections.count(),
        "shutting down: finishing requests in flight"
    );
    tokio::select! {
        () = async { while tasks.join_next().await.is_some() {} } => {
            tracing::info!("all connections closed");
        }
        () = tokio::time::sleep(app.config.shutdown_timeout) => {
            tracing::warn!(
                aborted = tasks.len(),
                "shutdown deadline reached; aborting the remaining connections"
            );
        }
    }
    tasks.abort_all();
    while tasks.join_next().await.is_some() {}
    Ok(())
}

/// How long a connection may stay idle: before its first request, and after one.
#[derive(Debug, Clone, Copy)]
struct Timeouts {
    header: Duration,
    idle: Duration,
}

/// Serves one connection (HTTP/1.1 or HTTP/2, whichever the client speaks) and
/// closes it when `conn` says so: idle too long, its responses not read,
/// evicted for room, or idle during shutdown. hyper has no idle timeout for HTTP/2, and its HTTP/1 one
/// starts only once it knows the protocol, so this watches both. Returns why
/// it closed the connection, if it did.
async fn serve_connection<I, S>(
    builder: &auto::Builder<TokioExecutor>,
    stream: I,
    service: S,
    conn: &Conn,
    timeouts: Timeouts,
) -> Option<Close>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: hyper::service::Service<
            Request<Incoming>,
            Response = Response<BusyBody>,
            Error = Infallible,
        > + Send
        + 'static,
    S::Future: Send + 'static,
{
    let connection = builder
        .serve_connection(TokioIo::new(stream), service)
        .into_owned();
    tokio::pin!(connection);
    let mut draining = false;
    loop {
        let deadline = match conn.check(timeouts.header, timeouts.idle) {
            Ok(deadline) => deadline,
            Err(why) => {
                tracing::debug!(reason = why.label(), "connection closed");
                return Some(why);
            }
        };
        if conn.stopping() && !draining {
            connection.as_mut().graceful_shutdown();
            draining = true;
        }
        tokio::select! {
            served = connection.as_mut() => {
                if let Err(e) = served {
                    tracing::debug!(error = %e, "connection closed with an error");
                }
                return None;
            }
            () = conn.changed() => {}
            () = tokio::time::sleep_until(deadline.into()) => {}
        }
    }
}

/// The TLS handshake, bounded in time, and abandoned when the connection is
/// evicted or the listener shuts down.
/// Failures are the client's business: logged at debug, without its address.
async fn handshake(
    acceptor: TlsAcceptor,
    stream: TcpStream,
    conn: &Conn,
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
        () = conn.closing() => None,
    }
}
