//! Native HTTPS (`[tls]`): real curl uploads and downloads over HTTP/2 and
//! HTTP/1.1 (ALPN), certificate reloads (explicit, by file change, by SIGHUP to
//! the real binary) that leave open connections serving, bad reloads that keep
//! the old certificate, and the start-up and check-config errors. Certificates
//! come from a CA the test makes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::{Server, tempdir, test_config};
use http::{Method, Request, StatusCode, Version};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use upslot::auth::{Scheme, sign_query};
use upslot::config::TlsFiles;
use upslot::tls::TlsError;

const BIN: &str = env!("CARGO_BIN_EXE_upslot");
/// The bound on every wait for the network or a child process.
const WAIT: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------
// Certificates.

struct Leaf {
    cert_pem: String,
    key_pem: String,
    der: Vec<u8>,
}

/// A CA, two server certificates it signed for localhost and 127.0.0.1, and the
/// two files the server is configured with (`cert.pem`, `key.pem`).
struct Pki {
    dir: tempfile::TempDir,
    ca: CertificateDer<'static>,
    leaves: [Leaf; 2],
}

impl Pki {
    fn new() -> Pki {
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "upslot test CA");
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca_params, ca_key);
        let leaf = |name: &str| {
            let key = KeyPair::generate().unwrap();
            let mut params =
                CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
                    .unwrap();
            params.distinguished_name.push(DnType::CommonName, name);
            params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
            let cert = params.signed_by(&key, &issuer).unwrap();
            Leaf {
                // A chain as certbot's fullchain.pem has it: leaf first.
                cert_pem: format!("{}{}", cert.pem(), ca_cert.pem()),
                key_pem: key.serialize_pem(),
                der: cert.der().to_vec(),
            }
        };
        let pki = Pki {
            dir: tempdir(),
            ca: ca_cert.der().clone(),
            leaves: [leaf("first"), leaf("second")],
        };
        std::fs::write(pki.ca_path(), ca_cert.pem()).unwrap();
        pki.install(&pki.leaves[0].cert_pem, &pki.leaves[0].key_pem);
        pki
    }

    fn ca_path(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    fn files(&self) -> TlsFiles {
        TlsFiles {
            cert_file: self.dir.path().join("cert.pem"),
            key_file: self.dir.path().join("key.pem"),
        }
    }

    /// Replaces the served files the way a careful tool does: write, then rename.
    fn install(&self, cert_pem: &str, key_pem: &str) {
        let files = self.files();
        for (text, path) in [(cert_pem, &files.cert_file), (key_pem, &files.key_file)] {
            let tmp = path.with_extension("tmp");
            std::fs::write(&tmp, text).unwrap();
            std::fs::rename(&tmp, path).unwrap();
        }
    }

    fn install_leaf(&self, i: usize) {
        self.install(&self.leaves[i].cert_pem, &self.leaves[i].key_pem);
    }

    async fn start(&self) -> Server {
        let files = self.files();
        Server::start_config(|c| c.tls = Some(files)).await
    }
}

// ---------------------------------------------------------------------------
// A Rust TLS client trusting the test CA.

struct Conn {
    sender: Sender,
    /// The end-entity certificate the server presented.
    peer: Vec<u8>,
    addr: SocketAddr,
}

enum Sender {
    H1(hyper::client::conn::http1::SendRequest<Full<Bytes>>),
    H2(hyper::client::conn::http2::SendRequest<Full<Bytes>>),
}

struct Answer {
    status: StatusCode,
    version: Version,
    body: Bytes,
}

async fn tls_connect(
    addr: SocketAddr,
    ca: &CertificateDer<'static>,
    alpn: &[&str],
) -> TlsStream<TcpStream> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.clone()).unwrap();
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    tokio::time::timeout(
        WAIT,
        TlsConnector::from(Arc::new(config)).connect(name, tcp),
    )
    .await
    .expect("TLS handshake within the bound")
    .unwrap()
}

fn peer_of(stream: &TlsStream<TcpStream>) -> Vec<u8> {
    stream.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

/// The end-entity certificate a new connection is given.
async fn peer_certificate(addr: SocketAddr, ca: &CertificateDer<'static>) -> Vec<u8> {
    peer_of(&tls_connect(addr, ca, &["h2", "http/1.1"]).await)
}

impl Conn {
    /// Connects offering `alpn` and speaks what was negotiated.
    async fn open(addr: SocketAddr, ca: &CertificateDer<'static>, alpn: &[&str]) -> Conn {
        let stream = tls_connect(addr, ca, alpn).await;
        let peer = peer_of(&stream);
        let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
        let io = TokioIo::new(stream);
        let sender = if h2 {
            let (sender, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
                .await
                .unwrap();
            tokio::spawn(conn);
            Sender::H2(sender)
        } else {
            let (sender, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
            tokio::spawn(conn);
            Sender::H1(sender)
        };
        Conn { sender, peer, addr }
    }

    async fn send(&mut self, method: Method, target: &str, body: &[u8]) -> Answer {
        let mut req = Request::builder()
            .method(method)
            .uri(format!("https://localhost:{}{target}", self.addr.port()));
        if !body.is_empty() {
            req = req.header("content-length", body.len());
        }
        let req = req.body(Full::new(Bytes::copy_from_slice(body))).unwrap();
        let res = tokio::time::timeout(WAIT, async {
            match &mut self.sender {
                Sender::H1(s) => s.send_request(req).await,
                Sender::H2(s) => s.send_request(req).await,
            }
        })
        .await
        .expect("response within the bound")
        .unwrap();
        let (status, version) = (res.status(), res.version());
        let body = res.into_body().collect().await.unwrap().to_bytes();
        Answer {
            status,
            version,
            body,
        }
    }
}

fn signed_put(server: &Server, path: &str, size: usize) -> String {
    let query = sign_query(Scheme::V1, server.secret(), path, size as u64, None).unwrap();
    format!("{}?{query}", server.target(path))
}

/// Waits (bounded) until a new connection is given `want`.
async fn wait_for_certificate(addr: SocketAddr, ca: &CertificateDer<'static>, want: &[u8]) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if peer_certificate(addr, ca).await == want {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the new certificate was not served within {WAIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// ---------------------------------------------------------------------------
// curl.

/// Whether curl with HTTP/2 is here. Without it the curl tests skip, except
/// under CI, which must run them.
fn curl_with_http2() -> bool {
    let features = Command::new("curl")
        .arg("-V")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    let ok = features
        .lines()
        .any(|l| l.starts_with("Features:") && l.split_whitespace().any(|f| f == "HTTP2"));
    if !ok {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must run the curl tests: install a curl with HTTP/2 (nghttp2)"
        );
        eprintln!("SKIPPED: no curl with HTTP/2 support here (CI runs this test)");
    }
    ok
}

/// Runs curl against the server as `localhost` and returns `%{http_code} %{http_version}`.
async fn curl(server: &Server, pki: &Pki, version: &str, args: &[&str], target: &str) -> String {
    let port = server.addr.port();
    let out = tokio::time::timeout(
        WAIT,
        tokio::process::Command::new("curl")
            .args(["-sS", "--max-time", "30", version])
            .arg("--cacert")
            .arg(pki.ca_path())
            .args(["--resolve", &format!("localhost:{port}:127.0.0.1")])
            .args(["-w", "%{http_code} %{http_version}"])
            .args(args)
            .arg(format!("https://localhost:{port}{target}"))
            .stdin(Stdio::null())
            .output(),
    )
    .await
    .expect("curl within the bound")
    .unwrap();
    assert!(
        out.status.success(),
        "curl {version} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

async fn curl_round_trip(version: &str, expect_version: &str) {
    if !curl_with_http2() {
        return;
    }
    let pki = Pki::new();
    let server = pki.start().await;
    let work = tempdir();
    let upload = work.path().join("upload.bin");
    let body: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(&upload, &body).unwrap();
    let path = format!("slot-{}/photo.bin", expect_version.replace('.', "-"));

    let target = signed_put(&server, &path, body.len());
    let upload_arg = upload.to_str().unwrap();
    let put = curl(
        &server,
        &pki,
        version,
        &["-T", upload_arg, "-o", "/dev/null"],
        &target,
    )
    .await;
    assert_eq!(put, format!("201 {expect_version}"), "PUT");

    let download = work.path().join("download.bin");
    let get = curl(
        &server,
        &pki,
        version,
        &["-o", download.to_str().unwrap()],
        &server.target(&path),
    )
    .await;
    assert_eq!(get, format!("200 {expect_version}"), "GET");
    assert_eq!(std::fs::read(&download).unwrap(), body);
}

#[tokio::test]
async fn curl_http2_uploads_and_downloads() {
    curl_round_trip("--http2", "2").await;
}

#[tokio::test]
async fn curl_http1_uploads_and_downloads() {
    curl_round_trip("--http1.1", "1.1").await;
}

// ---------------------------------------------------------------------------
// The listeners.

#[tokio::test]
async fn alpn_picks_the_protocol_and_the_admin_listener_stays_plain() {
    let pki = Pki::new();
    let server = pki.start().await;
    for (alpn, version) in [
        (&["h2", "http/1.1"][..], Version::HTTP_2),
        (&["http/1.1"][..], Version::HTTP_11),
        (&[][..], Version::HTTP_11),
    ] {
        let mut conn = Conn::open(server.addr, &pki.ca, alpn).await;
        assert_eq!(conn.peer, pki.leaves[0].der);
        let body = b"over tls".to_vec();
        let path = format!("alpn-{}/f.txt", alpn.len());
        let put = conn
            .send(Method::PUT, &signed_put(&server, &path, body.len()), &body)
            .await;
        assert_eq!(
            (put.status, put.version),
            (StatusCode::CREATED, version),
            "{alpn:?}"
        );
        let get = conn.send(Method::GET, &server.target(&path), &[]).await;
        assert_eq!(get.status, StatusCode::OK);
        assert_eq!(get.body, body);
    }
    // The admin listener answers plain HTTP.
    let health = common::request(server.admin, Method::GET, "/healthz", &[], Vec::new()).await;
    assert_eq!(health.status, StatusCode::OK);
    // The public one speaks TLS only: a plain request gets a TLS alert (record
    // type 21) and the connection closes, which ends this read.
    let answer = common::raw(
        server.addr,
        b"GET /upload/x/y HTTP/1.1\r\nHost: localhost\r\n\r\n",
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(answer.as_bytes().first(), Some(&0x15), "{answer:?}");
}

#[tokio::test]
async fn a_silent_or_garbled_handshake_holds_up_no_one() {
    let pki = Pki::new();
    let server = pki.start().await;
    let _silent = TcpStream::connect(server.addr).await.unwrap();
    let garbled = common::raw(
        server.addr,
        &[0x16, 0x03, 0x01, 0xff, 0xff, 0, 0],
        Duration::from_secs(2),
    );
    let _ = garbled.await;
    let mut conn = Conn::open(server.addr, &pki.ca, &["h2"]).await;
    let get = conn
        .send(Method::GET, &server.target("none/such"), &[])
        .await;
    assert_eq!(get.status, StatusCode::NOT_FOUND);
    // Shutdown completes with a handshake still pending.
    tokio::time::timeout(WAIT, server.stop())
        .await
        .expect("stopped within the bound");
}

// ---------------------------------------------------------------------------
// Reloads.

#[tokio::test]
async fn reload_serves_the_new_certificate_and_keeps_open_connections() {
    let pki = Pki::new();
    let server = pki.start().await;
    let reloader = server.tls.clone().expect("[tls] is set");
    let mut old = Conn::open(server.addr, &pki.ca, &["h2", "http/1.1"]).await;
    assert_eq!(old.peer, pki.leaves[0].der);
    let body = b"before the reload".to_vec();
    let put = old
        .send(
            Method::PUT,
            &signed_put(&server, "r/one.txt", body.len()),
            &body,
        )
        .await;
    assert_eq!(
        (put.status, put.version),
        (StatusCode::CREATED, Version::HTTP_2)
    );

    pki.install_leaf(1);
    reloader.reload().unwrap();
    assert_eq!(
        reloader.current_certificate().unwrap().to_vec(),
        pki.leaves[1].der
    );

    let mut new = Conn::open(server.addr, &pki.ca, &["h2", "http/1.1"]).await;
    assert_eq!(new.peer, pki.leaves[1].der);
    let get = new
        .send(Method::GET, &server.target("r/one.txt"), &[])
        .await;
    assert_eq!((get.status, get.body.as_ref()), (StatusCode::OK, &body[..]));

    // The connection opened before the reload goes on serving.
    let again = old
        .send(Method::GET, &server.target("r/one.txt"), &[])
        .await;
    assert_eq!(
        (again.status, again.body.as_ref()),
        (StatusCode::OK, &body[..])
    );
    let more = b"after the reload".to_vec();
    let put = old
        .send(
            Method::PUT,
            &signed_put(&server, "r/two.txt", more.len()),
            &more,
        )
        .await;
    assert_eq!(put.status, StatusCode::CREATED);
}

#[tokio::test]
async fn changed_files_are_reloaded_by_the_poll() {
    let pki = Pki::new();
    let server = pki.start().await;
    let reloader = server.tls.clone().expect("[tls] is set");
    let mut old = Conn::open(server.addr, &pki.ca, &["http/1.1"]).await;
    let body = b"kept alive".to_vec();
    let put = old
        .send(
            Method::PUT,
            &signed_put(&server, "p/one.txt", body.len()),
            &body,
        )
        .await;
    assert_eq!(
        (put.status, put.version),
        (StatusCode::CREATED, Version::HTTP_11)
    );

    reloader.set_poll_interval(Duration::from_millis(50));
    assert_eq!(reloader.poll_interval(), Duration::from_millis(50));
    pki.install_leaf(1);
    wait_for_certificate(server.addr, &pki.ca, &pki.leaves[1].der).await;

    let again = old
        .send(Method::GET, &server.target("p/one.txt"), &[])
        .await;
    assert_eq!(
        (again.status, again.body.as_ref()),
        (StatusCode::OK, &body[..])
    );
    assert_eq!(old.peer, pki.leaves[0].der);
}

#[tokio::test]
async fn a_bad_reload_keeps_the_old_certificate() {
    let pki = Pki::new();
    let server = pki.start().await;
    let reloader = server.tls.clone().expect("[tls] is set");
    let first = &pki.leaves[0];

    // Garbage in the key file.
    pki.install(&pki.leaves[1].cert_pem, "this is no key\n");
    let e = reloader.reload().unwrap_err();
    assert!(matches!(e, TlsError::Key { .. }), "{e}");
    assert!(!e.to_string().contains("this is no key"), "{e}");
    assert_eq!(peer_certificate(server.addr, &pki.ca).await, first.der);

    // A key that belongs to another certificate.
    pki.install(&pki.leaves[1].cert_pem, &first.key_pem);
    let e = reloader.reload().unwrap_err();
    assert!(matches!(e, TlsError::Mismatch { .. }), "{e}");
    assert_eq!(peer_certificate(server.addr, &pki.ca).await, first.der);

    // No certificate at all; then a missing file.
    pki.install("", &first.key_pem);
    assert!(matches!(
        reloader.reload(),
        Err(TlsError::NoCertificate { .. })
    ));
    std::fs::remove_file(pki.files().cert_file).unwrap();
    assert!(matches!(reloader.reload(), Err(TlsError::Read { .. })));
    assert_eq!(peer_certificate(server.addr, &pki.ca).await, first.der);

    // Fixed: the next reload takes.
    pki.install_leaf(1);
    reloader.reload().unwrap();
    assert_eq!(
        peer_certificate(server.addr, &pki.ca).await,
        pki.leaves[1].der
    );
}

// ---------------------------------------------------------------------------
// Start-up, check-config, and the binary.

#[test]
fn start_up_refuses_files_it_cannot_serve() {
    let pki = Pki::new();
    let open = |files: TlsFiles| {
        let (mut config, dir) = test_config();
        config.tls = Some(files);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let opened = runtime.block_on(upslot::Service::open(config, common_clock()));
        drop(dir);
        match opened {
            Ok(_) => panic!("opened"),
            Err(e) => e.to_string(),
        }
    };
    let files = pki.files();
    let e = open(TlsFiles {
        key_file: files.key_file.with_extension("missing"),
        ..files.clone()
    });
    assert!(
        e.contains("tls.key_file") && e.contains("cannot read"),
        "{e}"
    );
    pki.install(&pki.leaves[1].cert_pem, &pki.leaves[0].key_pem);
    let e = open(files);
    assert!(e.contains("does not belong"), "{e}");
}

fn common_clock() -> upslot::clock::SharedClock {
    upslot::clock::ManualClock::at(common::T0)
}

fn write_config(dir: &Path, tls: &str) -> PathBuf {
    let path = dir.join("upslot.toml");
    std::fs::write(
        &path,
        format!(
            "listen = \"127.0.0.1:0\"\nsecret = \"{}\"\nmin_free_space = \"0\"\n[admin]\nlisten = \"127.0.0.1:0\"\n[tls]\n{tls}",
            common::SECRET
        ),
    )
    .unwrap();
    path
}

fn check_config(dir: &Path, tls: &str) -> (bool, String) {
    let config = write_config(dir, tls);
    let out = Command::new(BIN)
        .arg("check-config")
        .arg(&config)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn check_config_reads_the_files() {
    let pki = Pki::new();
    let files = pki.files();
    let both = format!(
        "cert_file = {:?}\nkey_file = {:?}\n",
        files.cert_file, files.key_file
    );
    let (ok, text) = check_config(pki.dir.path(), &both);
    assert!(ok && text.contains("tls: ok"), "{text}");

    let (ok, text) = check_config(
        pki.dir.path(),
        &format!("cert_file = {:?}\n", files.cert_file),
    );
    assert!(!ok && text.contains("tls.key_file"), "{text}");

    pki.install(
        &pki.leaves[0].cert_pem,
        "-----BEGIN PRIVATE KEY-----\nc2VjcmV0\n",
    );
    let (ok, text) = check_config(pki.dir.path(), &both);
    assert!(!ok && text.contains("tls.key_file"), "{text}");
    assert!(!text.contains("c2VjcmV0"), "key material echoed: {text}");
}

/// The real binary: https in the banner, and SIGHUP reloads.
#[test]
fn sighup_reloads_the_certificate_of_the_running_binary() {
    let pki = Pki::new();
    let files = pki.files();
    let work = tempdir();
    let config = write_config(
        work.path(),
        &format!(
            "cert_file = {:?}\nkey_file = {:?}\n",
            files.cert_file, files.key_file
        ),
    );
    let stderr = work.path().join("stderr.log");
    let mut child = Command::new(BIN)
        .arg("serve")
        .arg("-c")
        .arg(&config)
        .current_dir(work.path())
        .env_remove("UPSLOT_SECRET")
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&stderr).unwrap())
        .spawn()
        .unwrap();
    let guard = KillOnDrop(&mut child);
    let stdout = guard.0.stdout.take().unwrap();
    let mut addr: Option<SocketAddr> = None;
    for line in BufReader::new(stdout).lines().take(200) {
        let line = line.unwrap();
        if let Some(rest) = line.strip_prefix("upslot listening on https://") {
            addr = Some(rest.split('/').next().unwrap().parse().unwrap());
            break;
        }
    }
    let addr = addr.expect("the banner names an https address");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    assert_eq!(
        rt.block_on(peer_certificate(addr, &pki.ca)),
        pki.leaves[0].der
    );

    pki.install_leaf(1);
    let pid = guard.0.id().to_string();
    let killed = Command::new("kill").args(["-HUP", &pid]).status().unwrap();
    assert!(killed.success());
    rt.block_on(wait_for_certificate(addr, &pki.ca, &pki.leaves[1].der));
    assert!(
        guard.0.try_wait().unwrap().is_none(),
        "SIGHUP ended the service"
    );
    // The swap comes before its log line: wait for the line, bounded. The file
    // watch would swap it too, a few seconds later: the line says which did.
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let log = std::fs::read_to_string(&stderr).unwrap();
        if log.contains("SIGHUP received") && log.contains("certificate reloaded") {
            assert!(
                log.lines()
                    .any(|l| l.contains("certificate reloaded") && l.contains("trigger=sighup")),
                "{log}"
            );
            assert!(!log.contains("trigger=watch"), "{log}");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{log}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

struct KillOnDrop<'a>(&'a mut std::process::Child);

impl Drop for KillOnDrop<'_> {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
