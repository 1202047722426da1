//! `jwt_jwks_url` (PROTOCOL.md section 8) against a real JWKS endpoint (an
//! axum server on 127.0.0.1:0 that counts its requests): keys chosen by
//! `kid`, a rotation at the provider needs no restart, unknown `kid`s
//! cause at most one fetch per 10 s, and an unreachable endpoint refuses
//! only the tokens it cannot verify.
#![allow(clippy::unwrap_used)]

use crate::common;

use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use base64::Engine as _;
use common::{Client, Server};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

/// An RSA key pair: the signing key and its public JWK (without `kid`).
struct Key {
    signing: EncodingKey,
    jwk: Value,
}

fn rsa_key(dir: &Path, name: &str) -> Key {
    let dir = dir.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    let (private, _) = crate::auth::keypair(&dir, "rsa");
    let out = Command::new("openssl")
        .args(["rsa", "-noout", "-modulus", "-in"])
        .arg(dir.join("rsa.pem"))
        .output()
        .unwrap();
    assert!(out.status.success(), "openssl rsa -modulus");
    let hex = String::from_utf8(out.stdout).unwrap();
    let hex = hex.trim().trim_start_matches("Modulus=");
    let n: Vec<u8> = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect();
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    Key {
        signing: EncodingKey::from_rsa_pem(&private).unwrap(),
        jwk: json!({"kty": "RSA", "use": "sig", "n": b64.encode(n), "e": "AQAB"}),
    }
}

fn token(key: &Key, kid: &str, sub: &str) -> String {
    let mut h = Header::new(Algorithm::RS256);
    h.kid = Some(kid.into());
    let exp = hubcast::unix_ms() as u64 / 1000 + 600;
    jsonwebtoken::encode(&h, &json!({"sub": sub, "exp": exp}), &key.signing).unwrap()
}

/// The identity provider's JWKS endpoint.
struct Provider {
    url: String,
    set: Arc<Mutex<Value>>,
    requests: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

#[derive(Clone)]
struct Shared {
    set: Arc<Mutex<Value>>,
    requests: Arc<AtomicUsize>,
}

async fn jwks(State(s): State<Shared>) -> impl IntoResponse {
    s.requests.fetch_add(1, Ordering::SeqCst);
    let body = s.set.lock().unwrap().to_string();
    // No kept-alive connection outlives `stop`: the endpoint is then down.
    (
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CONNECTION, "close"),
        ],
        body,
    )
}

impl Provider {
    async fn start(keys: Value) -> Provider {
        let shared = Shared {
            set: Arc::new(Mutex::new(json!({ "keys": keys }))),
            requests: Arc::default(),
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/jwks.json", listener.local_addr().unwrap());
        let app = Router::new()
            .route("/jwks.json", get(jwks))
            .with_state(shared.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Provider {
            url,
            set: shared.set,
            requests: shared.requests,
            task,
        }
    }

    fn rotate(&self, keys: Value) {
        *self.set.lock().unwrap() = json!({ "keys": keys });
    }

    fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }

    /// Down: the listener is closed (connections are refused).
    async fn stop(self) {
        self.task.abort();
        let _ = self.task.await;
    }
}

fn with_kid(key: &Key, kid: &str) -> Value {
    let mut j = key.jwk.clone();
    j["kid"] = json!(kid);
    j
}

async fn connects(s: &Server, token: &str) -> String {
    let c = Client::connect(&format!("{}?token={token}", s.ws_url())).await;
    c.welcome["user"].as_str().unwrap().to_string()
}

fn tempdir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("hubcast-jwks-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[tokio::test]
async fn a_key_rotation_at_the_provider_needs_no_restart() {
    let dir = tempdir();
    let (a, b) = (rsa_key(&dir, "a"), rsa_key(&dir, "b"));
    let idp = Provider::start(json!([with_kid(&a, "a")])).await;
    let s = Server::start(|c| c.jwt_jwks_url = Some(idp.url.clone())).await;
    assert_eq!(connects(&s, &token(&a, "a", "ann")).await, "ann");
    // A token signed with b but naming a: a bad signature.
    let m = crate::auth::refused(&s, Some(&token(&b, "a", "ann")), "wrong key").await;
    assert!(m.contains("signature"), "{m}");

    idp.rotate(json!([with_kid(&b, "b")]));
    assert_eq!(connects(&s, &token(&b, "b", "bob")).await, "bob");
    // The set now holds only b: a key the provider dropped is refused.
    let m = crate::auth::refused(&s, Some(&token(&a, "a", "ann")), "dropped key").await;
    assert!(m.contains("kid"), "{m}");
    s.stop().await;
    idp.stop().await;
    std::fs::remove_dir_all(&dir).ok();
}

#[tokio::test]
async fn unknown_kids_cause_one_fetch_per_10_seconds() {
    let dir = tempdir();
    let a = rsa_key(&dir, "a");
    let idp = Provider::start(json!([with_kid(&a, "a")])).await;
    let s = Server::start(|c| c.jwt_jwks_url = Some(idp.url.clone())).await;
    assert_eq!(connects(&s, &token(&a, "a", "ann")).await, "ann");
    assert_eq!(idp.requests(), 1, "the fetch at start");
    for _ in 0..2 {
        crate::auth::refused(&s, Some(&token(&a, "nope", "ann")), "unknown kid").await;
    }
    assert_eq!(idp.requests(), 2, "one fetch for the two unknown kids");
    // A known kid never asks.
    assert_eq!(connects(&s, &token(&a, "a", "ann")).await, "ann");
    assert_eq!(idp.requests(), 2);
    s.stop().await;
    idp.stop().await;
    std::fs::remove_dir_all(&dir).ok();
}

#[tokio::test]
async fn an_unreachable_endpoint_refuses_unknown_kids_and_known_ones_still_verify() {
    let dir = tempdir();
    let a = rsa_key(&dir, "a");
    let idp = Provider::start(json!([with_kid(&a, "a")])).await;
    let s = Server::start(|c| c.jwt_jwks_url = Some(idp.url.clone())).await;
    assert_eq!(connects(&s, &token(&a, "a", "ann")).await, "ann");
    idp.stop().await;
    let m = crate::auth::refused(
        &s,
        Some(&token(&a, "other", "ann")),
        "unknown kid, IdP down",
    )
    .await;
    assert!(m.contains("kid"), "{m}");
    assert_eq!(connects(&s, &token(&a, "a", "ann")).await, "ann");
    // Tokens without a kid, or of another algorithm, are refused as before.
    let hs = common::hs256(
        "0123456789abcdef0123",
        &json!({"sub":"x","exp":hubcast::unix_ms() / 1000 + 60}),
    );
    crate::auth::refused(&s, Some(&hs), "HS256 with a JWKS").await;
    s.stop().await;
    std::fs::remove_dir_all(&dir).ok();
}

/// A CA made by openssl for the test and a leaf it signed for 127.0.0.1:
/// `ca.pem`, `leaf.pem`, `leaf.key` in `dir`.
fn private_ca(dir: &Path) {
    let run = |args: &[&str]| {
        let out = Command::new("openssl")
            .current_dir(dir)
            .args(args)
            .output()
            .expect("openssl is installed");
        assert!(out.status.success(), "openssl {args:?}: {out:?}");
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
    ];
    run(&[
        &["req", "-x509"][..],
        &ec,
        &["-days", "1", "-subj", "/CN=hubcast test CA"],
        &[
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign",
        ],
        &["-keyout", "ca.key", "-out", "ca.pem"],
    ]
    .concat());
    run(&[
        &["req"][..],
        &ec,
        &[
            "-subj",
            "/CN=127.0.0.1",
            "-keyout",
            "leaf.key",
            "-out",
            "leaf.csr",
        ],
    ]
    .concat());
    std::fs::write(
        dir.join("leaf.ext"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=critical,CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        "leaf.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "1",
        "-extfile",
        "leaf.ext",
        "-out",
        "leaf.pem",
    ]);
}

impl Provider {
    /// The endpoint over TLS with `dir`'s leaf certificate
    /// ([`private_ca`]).
    async fn start_tls(keys: Value, dir: &Path) -> Provider {
        use tokio_rustls::rustls::ServerConfig;
        use tokio_rustls::rustls::pki_types::pem::PemObject;
        use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
        use tower::ServiceExt;

        let certs = CertificateDer::pem_file_iter(dir.join("leaf.pem"))
            .unwrap()
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let key = PrivateKeyDer::from_pem_file(dir.join("leaf.key")).unwrap();
        let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
        let config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let shared = Shared {
            set: Arc::new(Mutex::new(json!({ "keys": keys }))),
            requests: Arc::default(),
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("https://{}/jwks.json", listener.local_addr().unwrap());
        let app = Router::new()
            .route("/jwks.json", get(jwks))
            .with_state(shared.clone());
        let task = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (acceptor, app) = (acceptor.clone(), app.clone());
                tokio::spawn(async move {
                    // An untrusting client ends the handshake: not an error here.
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let service = hyper::service::service_fn(move |req| app.clone().oneshot(req));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                        .await;
                });
            }
        });
        Provider {
            url,
            set: shared.set,
            requests: shared.requests,
            task,
        }
    }
}

#[tokio::test]
async fn an_https_endpoint_behind_a_private_ca_is_trusted_through_jwt_jwks_ca_file() {
    let dir = tempdir();
    let a = rsa_key(&dir, "a");
    private_ca(&dir);
    let idp = Provider::start_tls(json!([with_kid(&a, "a")]), &dir).await;
    assert!(idp.url.starts_with("https://"));
    let ca = dir.join("ca.pem");
    let s = Server::start(|c| {
        c.jwt_jwks_url = Some(idp.url.clone());
        c.jwt_jwks_ca_file = Some(ca.clone());
    })
    .await;
    assert_eq!(connects(&s, &token(&a, "a", "ann")).await, "ann");
    assert_eq!(idp.requests(), 1);
    // A rotation is fetched over TLS too.
    let b = rsa_key(&dir, "b");
    idp.rotate(json!([with_kid(&b, "b")]));
    assert_eq!(connects(&s, &token(&b, "b", "bob")).await, "bob");
    s.stop().await;
    idp.stop().await;
    std::fs::remove_dir_all(&dir).ok();
}

#[tokio::test]
async fn an_untrusted_certificate_refuses_tokens_and_other_handshakes_go_on() {
    let dir = tempdir();
    let a = rsa_key(&dir, "a");
    private_ca(&dir);
    let idp = Provider::start_tls(json!([with_kid(&a, "a")]), &dir).await;
    // No jwt_jwks_ca_file: the system's CAs do not know the test's CA.
    let s = Server::start(|c| c.jwt_jwks_url = Some(idp.url.clone())).await;
    let m = crate::auth::refused(&s, Some(&token(&a, "a", "ann")), "untrusted JWKS").await;
    assert!(m.contains("kid"), "{m}");
    // The provider never served a key set: every handshake was refused.
    assert_eq!(idp.requests(), 0);
    // A handshake that needs no key goes on meanwhile (anonymous on
    // loopback), while a token waits for a fetch that fails.
    let waiting = {
        let (s_url, t) = (s.ws_url(), token(&a, "a", "ann"));
        tokio::spawn(async move {
            Client::connect_request(format!("{s_url}?token={t}"))
                .await
                .is_err()
        })
    };
    let anon = Client::connect(&s.ws_url()).await;
    assert!(anon.welcome["user"].is_string());
    assert!(waiting.await.unwrap(), "the token is refused");
    // A CA file that is not PEM stops the start, naming the setting.
    std::fs::write(dir.join("bad.pem"), "not a certificate").unwrap();
    let mut c = hubcast::config::Config {
        jwt_jwks_url: Some(idp.url.clone()),
        jwt_jwks_ca_file: Some(dir.join("bad.pem")),
        ..Default::default()
    };
    c.validate().unwrap();
    let e = hubcast::auth::Auth::from_config(&c)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("jwt_jwks_ca_file"), "{e}");
    c.jwt_jwks_ca_file = Some(dir.join("missing.pem"));
    let e = hubcast::auth::Auth::from_config(&c)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("jwt_jwks_ca_file"), "{e}");
    s.stop().await;
    idp.stop().await;
    std::fs::remove_dir_all(&dir).ok();
}
