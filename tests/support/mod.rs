//! Helpers shared by the upload-side tests: a raw HTTP/1.1 connection that sends
//! exactly the bytes it is given and parses what comes back, bounded waits for
//! a condition (of the store, the index, the metrics), and deterministic bodies.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::common::{Server, unnamed_files, walk};

/// No single read waits longer than this: a test that hangs fails instead.
pub const READ_LIMIT: Duration = Duration::from_secs(20);

/// A body of `len` bytes that differs for each `seed` and uses every byte value.
pub fn body(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed).rotate_left(3))
        .collect()
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// The v1-signed request target for `path` (decoded, below base_path).
pub fn v1_target(server: &Server, path: &str, size: u64) -> String {
    server.signed_target(upslot::auth::Scheme::V1, path, size, None)
}

/// The request head of a PUT with `Content-Length: length` and `extra` header lines.
pub fn put_head(target: &str, length: u64, extra: &[&str]) -> Vec<u8> {
    let mut head =
        format!("PUT {target} HTTP/1.1\r\nHost: upslot.test\r\nContent-Length: {length}\r\n");
    for line in extra {
        head.push_str(line);
        head.push_str("\r\n");
    }
    head.push_str("\r\n");
    head.into_bytes()
}

/// Calls `check` every 20 ms until it holds, at most ~10 s; panics naming `what`.
pub async fn wait_for(what: &str, mut check: impl FnMut() -> bool) {
    for _ in 0..500 {
        if check() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("gave up waiting: {what}");
}

/// Awaits `check` every 20 ms until it holds, for at most 10 s; panics naming
/// `what`. For conditions that need a request or the store to answer; plain
/// ones take [`wait_for`].
pub async fn wait_until<F, Fut>(what: &str, check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    assert!(holds_soon(check).await, "gave up waiting: {what}");
}

/// Whether `check` holds within 10 s, asked every 20 ms.
async fn holds_soon<F, Fut>(mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !check().await {
        if std::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    true
}

/// Waits (bounded) until the store holds nothing at all: no file, no part of
/// one, no temporary ([`Server::leftovers`]).
pub async fn wait_until_empty(server: &Server) {
    let empty = holds_soon(|| async move { server.leftovers().await.is_empty() }).await;
    assert!(
        empty,
        "the store still holds {:?}",
        server.leftovers().await
    );
}

/// Waits until an upload whose client has sent `sent` bytes of body (since
/// `before`, [`Server::received`]) is under way: the service has received them
/// and, where the store shows uploads in progress (fs; an S3 PUT shows nothing
/// until complete), the store holds some of it. Later checks are not vacuous.
pub async fn wait_for_upload_under_way(server: &Server, before: u64, sent: u64) {
    wait_for("the service to receive the body sent", || {
        server.received() >= before + sent
    })
    .await;
    if server.config.storage == upslot::config::Storage::Fs {
        wait_until("the upload to reach the disk", || async move {
            !server.pending().await.is_empty()
        })
        .await;
    }
}

/// Every file the store holds under `data_dir`: complete files (`files/`) and
/// uploads in progress, named or not (see [`pending_files`]). The service's own
/// files (secret, lock, sockets) are not uploads and are left out.
pub fn store_files(data_dir: &Path) -> Vec<PathBuf> {
    let mut out = walk(&data_dir.join("files"));
    out.extend(pending_files(data_dir));
    out
}

/// The files of uploads in progress: named ones in `tmp/`, and the unnamed
/// (`O_TMPFILE`) ones that this process, the server's, holds open in `data_dir`.
pub fn pending_files(data_dir: &Path) -> Vec<PathBuf> {
    let mut out = walk(&data_dir.join("tmp"));
    out.extend(unnamed_files(data_dir));
    out
}

/// A TCP connection to `addr` from `source`.
pub async fn connect_from(
    addr: SocketAddr,
    source: std::net::IpAddr,
) -> std::io::Result<TcpStream> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(source, 0))?;
    socket.connect(addr).await
}

/// A response read off a raw connection.
#[derive(Debug)]
pub struct RawResponse {
    pub status: u16,
    pub head: String,
    pub body: Vec<u8>,
}

impl RawResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().skip(1).find_map(|line| {
            let (k, v) = line.split_once(':')?;
            k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// One HTTP/1.1 connection driven byte by byte.
pub struct Raw {
    pub stream: TcpStream,
    buf: Vec<u8>,
}

impl Raw {
    pub async fn connect(addr: SocketAddr) -> Raw {
        Raw {
            stream: TcpStream::connect(addr).await.unwrap(),
            buf: Vec::new(),
        }
    }

    /// Connects from `source` (any 127.0.0.0/8 address is this host's): a
    /// client of its own, as far as per-client caps go.
    pub async fn connect_from(addr: SocketAddr, source: std::net::IpAddr) -> Raw {
        Raw {
            stream: connect_from(addr, source).await.unwrap(),
            buf: Vec::new(),
        }
    }

    /// Writes `bytes`; false if the server has already closed the connection.
    pub async fn send(&mut self, bytes: &[u8]) -> bool {
        self.stream.write_all(bytes).await.is_ok() && self.stream.flush().await.is_ok()
    }

    /// Closes our sending side; the server sees end-of-stream.
    pub async fn half_close(&mut self) {
        let _ = self.stream.shutdown().await;
    }

    /// Reads more bytes; false on end-of-stream or error. Panics after READ_LIMIT.
    async fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 16 * 1024];
        match tokio::time::timeout(READ_LIMIT, self.stream.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) => false,
            Ok(Ok(n)) => {
                self.buf.extend_from_slice(&chunk[..n]);
                true
            }
            Err(_) => panic!("no answer within {READ_LIMIT:?}"),
        }
    }

    /// The next response head, or `None` if the connection ends before one.
    pub async fn read_head(&mut self) -> Option<RawResponse> {
        loop {
            if let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&self.buf[..end]).into_owned();
                self.buf.drain(..end + 4);
                let status = head.split_whitespace().nth(1)?.parse().ok()?;
                return Some(RawResponse {
                    status,
                    head,
                    body: Vec::new(),
                });
            }
            if !self.fill().await {
                return None;
            }
        }
    }

    /// The next complete response (head and a `Content-Length` body), or `None`
    /// if the connection ends first.
    pub async fn read_response(&mut self) -> Option<RawResponse> {
        let mut response = self.read_head().await?;
        let length: usize = match response.header("content-length") {
            Some(v) => v.parse().ok()?,
            None => 0,
        };
        while self.buf.len() < length {
            if !self.fill().await {
                return None;
            }
        }
        response.body = self.buf.drain(..length).collect();
        Some(response)
    }

    /// True if the server closes the connection (rather than answering more).
    pub async fn closed(&mut self) -> bool {
        self.buf.is_empty() && !self.fill().await
    }
}
