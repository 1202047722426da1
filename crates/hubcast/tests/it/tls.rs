//! TLS served directly (`tls_cert`, `tls_key`): wss:// and https:// with a
//! self-signed certificate made by openssl in the test, verified by a real
//! rustls client.
#![allow(clippy::unwrap_used, clippy::field_reassign_with_default)]

use crate::common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use common::{Client, Server};
use futures_util::SinkExt;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{ClientConfig, RootCertStore};
use tokio_tungstenite::tungstenite::Message;

/// A scratch directory with `cert.pem` and `key.pem` for localhost and
/// 127.0.0.1.
struct Certs {
    dir: PathBuf,
}

impl Certs {
    fn make() -> Certs {
        let dir =
            std::env::temp_dir().join(format!("hubcast-tls-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        let ok = Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
            ])
            .args(["-nodes", "-days", "1", "-subj", "/CN=localhost"])
            .args(["-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"])
            // A leaf, not a CA: TLS clients refuse a CA certificate as the
            // server's own.
            .args(["-addext", "basicConstraints=critical,CA:FALSE"])
            .args(["-addext", "extendedKeyUsage=serverAuth"])
            .arg("-keyout")
            .arg(dir.join("key.pem"))
            .arg("-out")
            .arg(dir.join("cert.pem"))
            .output()
            .expect("openssl is installed")
            .status
            .success();
        assert!(ok, "openssl req -x509");
        Certs { dir }
    }
    fn cert(&self) -> PathBuf {
        self.dir.join("cert.pem")
    }
    fn key(&self) -> PathBuf {
        self.dir.join("key.pem")
    }
}

impl Drop for Certs {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A client that trusts exactly `cert`.
fn connector(cert: &Path) -> TlsConnector {
    let mut roots = RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(cert).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    TlsConnector::from(Arc::new(config))
}

async fn tls_connect(s: &Server, cert: &Path) -> TlsStream<TcpStream> {
    let tcp = TcpStream::connect(s.addr).await.unwrap();
    connector(cert)
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .expect("TLS handshake with the server's certificate")
}

async fn tls_server(certs: &Certs) -> Server {
    let (cert, key) = (certs.cert(), certs.key());
    Server::start(move |c| {
        c.tls_cert = Some(cert);
        c.tls_key = Some(key);
    })
    .await
}

async fn https_get(s: &Server, cert: &Path, path: &str) -> String {
    let mut tls = tls_connect(s, cert).await;
    tls.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut out = String::new();
    tls.read_to_string(&mut out).await.unwrap();
    out
}

#[tokio::test]
async fn wss_and_https_with_a_self_signed_certificate() {
    let certs = Certs::make();
    let s = tls_server(&certs).await;

    let resp = https_get(&s, &certs.cert(), "/healthz").await;
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert!(resp.contains(r#""status":"ok""#), "{resp}");

    // A WebSocket over TLS: welcome, join, publish and receive.
    let tls = tls_connect(&s, &certs.cert()).await;
    let (mut ws, _) =
        tokio_tungstenite::client_async(format!("wss://localhost:{}/ws", s.addr.port()), tls)
            .await
            .expect("wss handshake");
    assert_eq!(common::recv_json(&mut ws).await["type"], "welcome");
    ws.send(Message::text(
        json!({"type":"join","room":"secure","id":1}).to_string(),
    ))
    .await
    .unwrap();
    assert_eq!(common::recv_json(&mut ws).await["type"], "joined");
    // The API over https reaches it.
    let body = json!({"room":"secure","event":"e","data":"over tls"}).to_string();
    let mut tls = tls_connect(&s, &certs.cert()).await;
    tls.write_all(
        format!(
            "POST /api/publish HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let mut out = String::new();
    tls.read_to_string(&mut out).await.unwrap();
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    loop {
        let v = common::recv_json(&mut ws).await;
        if v["type"] == "message" {
            assert_eq!(v["data"], "over tls");
            break;
        }
    }
    s.stop().await;
}

#[tokio::test]
async fn a_stalled_handshake_or_plain_http_does_not_block_others() {
    let certs = Certs::make();
    let s = tls_server(&certs).await;
    // Sockets that never start a handshake, and one speaking plain HTTP.
    let mut idle = Vec::new();
    for _ in 0..20 {
        idle.push(TcpStream::connect(s.addr).await.unwrap());
    }
    let mut plain = TcpStream::connect(s.addr).await.unwrap();
    plain
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let n = tokio::time::timeout(Duration::from_secs(5), plain.read_to_end(&mut buf)).await;
    assert!(
        !String::from_utf8_lossy(&buf).contains("\"status\":\"ok\""),
        "plain HTTP is not served on a TLS port ({n:?})"
    );
    // Meanwhile a real client gets in at once.
    let resp = tokio::time::timeout(
        Duration::from_secs(3),
        https_get(&s, &certs.cert(), "/healthz"),
    )
    .await
    .expect("served while others stall");
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    // A client that does not trust the certificate is refused by its own
    // TLS stack; the server stays fine.
    let other = Certs::make();
    let tcp = TcpStream::connect(s.addr).await.unwrap();
    assert!(
        connector(&other.cert())
            .connect(ServerName::try_from("localhost").unwrap(), tcp)
            .await
            .is_err()
    );
    drop(idle);
    let resp = https_get(&s, &certs.cert(), "/readyz").await;
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    s.stop().await;
}

#[tokio::test]
async fn unusable_certificates_stop_the_start_naming_the_key() {
    let certs = Certs::make();
    // A missing certificate file, and the key file given as the
    // certificate (no certificate in it).
    for cert in [certs.dir.join("missing.pem"), certs.key()] {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut config = hubcast::config::Config::default();
        config.tls_cert = Some(cert);
        config.tls_key = Some(certs.key());
        let err = hubcast::run(config, listener, tokio_util::sync::CancellationToken::new())
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("tls_cert"), "{err}");
    }

    // Only one of the two is a configuration error.
    let mut config = hubcast::config::Config::default();
    config.tls_cert = Some(certs.cert());
    let err = config.validate().unwrap_err().to_string();
    assert!(err.contains("tls_key"), "{err}");

    // A plain client still works on a server without TLS.
    let s = Server::default().await;
    let _c = Client::connect(&s.ws_url()).await;
}
