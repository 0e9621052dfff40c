//! A Unix socket in the data directory (`control.sock`, mode 0600) through which
//! `upslot files delete` tells a running service what it removed, so that usage
//! and quotas follow at once. The command deletes on disk itself; the socket only
//! carries the news, and without a running service there is nobody to tell.

use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixListener;

use crate::index::Index;
use crate::store::Meta;

/// Largest message accepted: a JSON list of metadata.
const MAX_MESSAGE: u64 = 64 * 1024 * 1024;
/// A peer that sends no whole message in this long is dropped.
const READ_LIMIT: std::time::Duration = std::time::Duration::from_secs(60);
const ACCEPT_PAUSE: std::time::Duration = std::time::Duration::from_millis(100);

pub fn socket_path(data_dir: &Path) -> PathBuf {
    data_dir.join("control.sock")
}

/// Binds the socket (replacing a stale one: the data-dir lock says no other
/// service owns it) and serves it until the task is dropped.
pub fn listen(data_dir: &Path, index: Arc<dyn Index>) -> io::Result<tokio::task::JoinHandle<()>> {
    let path = socket_path(data_dir);
    match std::fs::remove_file(&path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let listener = UnixListener::bind(&path)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    Ok(tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                // Out of descriptors, most likely: do not spin while it lasts.
                tokio::time::sleep(ACCEPT_PAUSE).await;
                continue;
            };
            let index = Arc::clone(&index);
            tokio::spawn(async move {
                let (read, mut write) = stream.into_split();
                let mut line = String::new();
                let mut reader = tokio::io::BufReader::new(read).take(MAX_MESSAGE);
                let read = tokio::time::timeout(READ_LIMIT, reader.read_line(&mut line)).await;
                let answer = match read {
                    Ok(Ok(_)) => match serde_json::from_str::<Vec<Meta>>(&line) {
                        Ok(removed) => {
                            for meta in &removed {
                                // Only that file: a newer one may hold the path by now.
                                let _ = index.remove(&meta.key(), Some(meta)).await;
                            }
                            tracing::info!(
                                files = removed.len(),
                                "files removed by the files command"
                            );
                            "ok\n"
                        }
                        Err(_) => "bad message\n",
                    },
                    Ok(Err(_)) | Err(_) => "bad message\n",
                };
                let _ = write.write_all(answer.as_bytes()).await;
            });
        }
    }))
}

/// Tells a running service that `removed` are gone. `Ok(false)`: no service runs.
pub fn notify_removed(data_dir: &Path, removed: &[Meta]) -> io::Result<bool> {
    let mut stream = match std::os::unix::net::UnixStream::connect(socket_path(data_dir)) {
        Ok(stream) => stream,
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused
            ) =>
        {
            return Ok(false);
        }
        Err(e) => return Err(e),
    };
    // A wedged service must not wedge the command.
    stream.set_read_timeout(Some(std::time::Duration::from_secs(10)))?;
    stream.set_write_timeout(Some(std::time::Duration::from_secs(10)))?;
    let mut message = serde_json::to_vec(removed).map_err(io::Error::other)?;
    message.push(b'\n');
    stream.write_all(&message)?;
    let mut answer = String::new();
    BufReader::new(stream).read_line(&mut answer)?;
    if answer.trim() == "ok" {
        Ok(true)
    } else {
        Err(io::Error::other(format!(
            "the service answered {:?}",
            answer.trim()
        )))
    }
}
