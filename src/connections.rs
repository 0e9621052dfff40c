//! The open connections of one listener (docs/limits.md). Each is busy while a
//! request of its is handled or its response is sent, and idle otherwise. Idle
//! connections close after a timeout, and so do ones whose responses the
//! client stopped reading; when the listener is full, the one idle longest is
//! closed to make room (as nginx reuses keep-alive connections); on shutdown,
//! idle ones close at once and busy ones when they turn idle.

use std::collections::HashMap;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use tokio::sync::Notify;

use crate::http::body::Body;
use crate::limits::{Full, Gate, Pass};

pub struct Connections {
    gate: Arc<Gate>,
    open: Mutex<HashMap<u64, Arc<Conn>>>,
    next: AtomicU64,
    epoch: Instant,
}

/// What the supervisor of one connection watches.
pub struct Conn {
    epoch: Instant,
    /// Requests whose handler runs.
    handling: AtomicU32,
    /// Responses whose body is still being sent.
    sending: AtomicU32,
    served: AtomicBool,
    /// Milliseconds from `epoch` to when the connection last turned idle or,
    /// while it sends, last sent a piece of a response.
    stamp: AtomicU64,
    evicted: AtomicBool,
    stopping: AtomicBool,
    wake: Notify,
}

impl Connections {
    pub fn new(gate: Arc<Gate>) -> Arc<Connections> {
        Arc::new(Connections {
            gate,
            open: Mutex::default(),
            next: AtomicU64::new(0),
            epoch: Instant::now(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<u64, Arc<Conn>>> {
        self.open.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Counts in a new connection from `peer`, closing an idle one if the
    /// listener is full; or says which cap refuses it.
    pub fn admit(self: &Arc<Self>, peer: IpAddr) -> Result<Admitted, Full> {
        let pass = self.gate.enter(peer, || self.evict_idle(1) == 1)?;
        let conn = Arc::new(Conn {
            epoch: self.epoch,
            handling: AtomicU32::new(0),
            sending: AtomicU32::new(0),
            served: AtomicBool::new(false),
            stamp: AtomicU64::new(millis(self.epoch)),
            evicted: AtomicBool::new(false),
            stopping: AtomicBool::new(false),
            wake: Notify::new(),
        });
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        self.lock().insert(id, Arc::clone(&conn));
        Ok(Admitted {
            connections: Arc::clone(self),
            id,
            conn,
            _pass: pass,
        })
    }

    /// Closes up to `n` idle connections, those idle longest first; returns
    /// how many. Connections already told to close are not counted again.
    pub fn evict_idle(&self, n: usize) -> usize {
        let open = self.lock();
        let mut idle: Vec<(&u64, &Arc<Conn>)> = open
            .iter()
            .filter(|(_, c)| c.is_idle() && !c.evicted.load(Ordering::Relaxed))
            .collect();
        // Stamps are in milliseconds: the older connection first among equals.
        idle.sort_by_key(|(id, c)| (c.stamp.load(Ordering::Relaxed), **id));
        let mut evicted = 0;
        for (_, conn) in idle.into_iter().take(n) {
            conn.evicted.store(true, Ordering::Relaxed);
            conn.wake.notify_one();
            evicted += 1;
        }
        evicted
    }

    /// Shutdown: every connection closes once idle.
    pub fn stop(&self) {
        for conn in self.lock().values() {
            conn.stopping.store(true, Ordering::Relaxed);
            conn.wake.notify_one();
        }
    }

    /// Connections open now, those told to close included.
    pub fn count(&self) -> usize {
        self.lock().len()
    }
}

/// A counted connection; counted out when dropped.
pub struct Admitted {
    connections: Arc<Connections>,
    id: u64,
    pub conn: Arc<Conn>,
    _pass: Pass,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        self.connections.lock().remove(&self.id);
    }
}

/// Why a connection's supervisor should close it now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Close {
    /// No request within the header timeout, or none since the last one
    /// within the idle timeout.
    Idle,
    /// Closed to make room for a new connection.
    Evicted,
    /// Shutting down and nothing in flight.
    Stopping,
    /// Responses under way, and none of them sent a byte for the idle
    /// timeout: the client stopped reading.
    Stalled,
}

impl Close {
    /// A bounded label, for logs and metrics.
    pub fn label(self) -> &'static str {
        match self {
            Close::Idle => "idle",
            Close::Evicted => "evicted",
            Close::Stopping => "shutdown",
            Close::Stalled => "stalled",
        }
    }
}

impl Conn {
    /// Marks a request in flight until the guard is dropped or, with its
    /// response, handed to a [`BusyBody`].
    pub fn busy(self: &Arc<Self>) -> Busy {
        self.handling.fetch_add(1, Ordering::AcqRel);
        self.served.store(true, Ordering::Relaxed);
        Busy(Arc::clone(self))
    }

    pub fn is_idle(&self) -> bool {
        self.handling.load(Ordering::Acquire) == 0 && self.sending.load(Ordering::Acquire) == 0
    }

    pub fn stopping(&self) -> bool {
        self.stopping.load(Ordering::Relaxed)
    }

    fn touch(&self) {
        self.stamp.store(millis(self.epoch), Ordering::Relaxed);
    }

    /// A request or response ended: during shutdown the connection may now
    /// close, and its supervisor must look at once.
    fn done(&self) {
        if self.stopping() && self.is_idle() {
            self.wake.notify_one();
        }
    }

    /// Whether to close now, and if not, when to look again. Nothing wakes the
    /// supervisor when a request starts or ends (that would cost every request
    /// a turn of its loop): it looks again before any deadline that requests
    /// to come could set (none is sooner than now plus the shorter timeout),
    /// and the stamp tells it whether the connection was idle all that time.
    /// Only eviction and shutdown wake it early.
    pub fn check(
        &self,
        header_timeout: Duration,
        idle_timeout: Duration,
    ) -> Result<Instant, Close> {
        if self.evicted.load(Ordering::Relaxed) {
            return Err(Close::Evicted);
        }
        let now = Instant::now();
        let horizon = now + header_timeout.min(idle_timeout);
        // A handler's own deadlines bound it; look again later.
        if self.handling.load(Ordering::Acquire) > 0 {
            return Ok(horizon);
        }
        let sending = self.sending.load(Ordering::Acquire) > 0;
        if self.stopping() && !sending {
            return Err(Close::Stopping);
        }
        let timeout = if sending || self.served.load(Ordering::Relaxed) {
            idle_timeout
        } else {
            header_timeout
        };
        let since = self.epoch + Duration::from_millis(self.stamp.load(Ordering::Relaxed));
        let deadline = since + timeout;
        if deadline <= now {
            return Err(if sending { Close::Stalled } else { Close::Idle });
        }
        Ok(deadline.min(horizon))
    }

    /// Resolves when the supervisor must look at once: evicted, stopping, or
    /// turned idle while stopping.
    pub async fn changed(&self) {
        self.wake.notified().await;
    }

    /// Resolves once the connection is evicted or shutdown begins.
    pub async fn closing(&self) {
        while !(self.evicted.load(Ordering::Relaxed) || self.stopping()) {
            self.changed().await;
        }
    }
}

/// A response body that keeps its connection busy until it is sent or dropped,
/// and notes each piece that goes out.
pub struct BusyBody {
    body: Body,
    conn: Arc<Conn>,
}

impl BusyBody {
    /// The handler is done: `busy` turns from handling into sending `body`.
    pub fn new(body: Body, busy: Busy) -> BusyBody {
        let conn = Arc::clone(&busy.0);
        conn.sending.fetch_add(1, Ordering::AcqRel);
        conn.touch();
        drop(busy);
        BusyBody { body, conn }
    }
}

impl Drop for BusyBody {
    fn drop(&mut self) {
        self.conn.touch();
        self.conn.sending.fetch_sub(1, Ordering::AcqRel);
        self.conn.done();
    }
}

impl http_body::Body for BusyBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let polled = Pin::new(&mut self.body).poll_frame(cx);
        if let Poll::Ready(Some(Ok(_))) = &polled {
            self.conn.touch();
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// A request in flight on a connection.
pub struct Busy(Arc<Conn>);

impl Drop for Busy {
    fn drop(&mut self) {
        let conn = &self.0;
        conn.touch();
        conn.handling.fetch_sub(1, Ordering::AcqRel);
        conn.done();
    }
}

fn millis(epoch: Instant) -> u64 {
    u64::try_from(epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
}
