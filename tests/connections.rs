//! Connections that bring no request: silent ones, and ones that stop inside
//! the HTTP/2 preface or right after it, are closed (after
//! `limits.header_timeout`), so that idle sockets cannot pile up until
//! descriptors run out.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::Server;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Bounded well past the server's header timeout (set to 1 s here), so that
/// only a connection that is never closed fails the test.
const LIMIT: Duration = Duration::from_secs(20);

async fn closed_by_server(mut stream: TcpStream) -> bool {
    let mut buf = [0u8; 256];
    let read = async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                // A GOAWAY or SETTINGS frame may come first; the close is what counts.
                Ok(_) => continue,
            }
        }
    };
    tokio::time::timeout(LIMIT, read).await.is_ok()
}

#[tokio::test]
async fn connections_without_a_request_are_closed() {
    let server = Server::start_config(|c| c.limits.header_timeout = Duration::from_secs(1)).await;
    // The HTTP/2 preface, then an empty SETTINGS frame.
    let mut h2 = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    h2.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 0, 0]);
    let openings: [(&str, &[u8]); 3] = [
        ("silent", b""),
        ("half an HTTP/2 preface", b"PRI * HT"),
        ("HTTP/2 preface and SETTINGS", &h2),
    ];
    let mut waits = Vec::new();
    for (what, bytes) in openings {
        let mut stream = TcpStream::connect(server.addr).await.unwrap();
        stream.write_all(bytes).await.unwrap();
        waits.push((what, tokio::spawn(closed_by_server(stream))));
    }
    for (what, wait) in waits {
        assert!(wait.await.unwrap(), "{what}: still open after {LIMIT:?}");
    }
    // The service still answers.
    let r = server.get("none/such.txt", &[]).await;
    assert_eq!(r.status, http::StatusCode::NOT_FOUND);
}
