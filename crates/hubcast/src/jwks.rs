//! Token keys from a JWKS endpoint (`jwt_jwks_url`, PROTOCOL.md section 8):
//! RS256 and ES256 public keys chosen by the token's `kid`.
//!
//! The set is fetched when the server starts and again when a token names
//! a `kid` the cache does not hold, at most once every
//! [`MIN_REFETCH`], so an identity provider can rotate its keys without a
//! restart and a stream of made-up `kid`s cannot make the server hammer
//! it. A handshake whose `kid` is known never waits; one whose `kid` is
//! unknown waits for the fetch it caused (or one under way) at most
//! [`WAIT`], then is refused (401) if the key is still unknown. A failed
//! fetch keeps the keys already held, so an unreachable endpoint refuses
//! only the tokens it cannot verify.
//!
//! An `https://` endpoint is fetched over rustls (the ring provider, as the
//! server's own TLS) with hyper, trusting the system's CA bundle
//! (`SSL_CERT_FILE`, else Debian's `ca-certificates` file) and
//! `jwt_jwks_ca_file`. Not through reqwest's TLS: reqwest without a built-in
//! provider panics on building any client unless a process-wide rustls
//! provider is installed, which would make every other client in the
//! process (bench, hooks, tests) depend on start-up order.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::rt::TokioIo;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, JwkSet, KeyAlgorithm};
use jsonwebtoken::{Algorithm, DecodingKey};
use tokio::sync::{Notify, watch};
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{ClientConfig, RootCertStore};
use tokio_util::sync::CancellationToken;

use crate::auth::AuthError;
use crate::lock::lock;

/// Fetches caused by unknown `kid`s are at least this far apart (the one at
/// start does not count).
pub const MIN_REFETCH: Duration = Duration::from_secs(10);
/// The longest a handshake with an unknown `kid` waits for a fetch.
pub const WAIT: Duration = Duration::from_secs(2);
/// The longest one fetch may take (the endpoint answering slowly).
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// The largest key set read over https (a provider's is a few KiB).
const MAX_SET_BYTES: usize = 1 << 20;
/// The system's CA bundle when `SSL_CERT_FILE` is not set: Debian's
/// `ca-certificates` (also Ubuntu's and Alpine's path).
const SYSTEM_CA_FILE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// A verification key and its one algorithm.
pub type Key = Arc<(DecodingKey, Algorithm)>;

/// The cached key set and the fetches that keep it current.
pub struct Jwks {
    url: String,
    /// The client for an http:// endpoint.
    http: reqwest::Client,
    /// For an https:// endpoint: its parsed URL and the TLS client.
    https: Option<(reqwest::Url, TlsConnector)>,
    /// The keys of the last successful fetch, by `kid`.
    keys: RwLock<HashMap<String, Key>>,
    /// When an unknown `kid` last started a fetch.
    last_refetch: Mutex<Option<Instant>>,
    /// Asks the fetch task (`run`) for a fetch.
    wake: Notify,
    /// Counts finished fetches (successful or not): handshakes wait on it.
    done: watch::Sender<u64>,
    /// A fetch is asked for or under way (true until the first one ends).
    busy: AtomicBool,
}

impl Jwks {
    /// A cache for `url`, empty until [`Jwks::run`] has fetched; an
    /// https `url` trusts the system's CAs and those in `ca_file`. The
    /// error names the setting at fault.
    pub fn new(url: &str, ca_file: Option<&Path>) -> Result<Jwks, (&'static str, String)> {
        let http = reqwest::Client::builder()
            .timeout(FETCH_TIMEOUT)
            .connect_timeout(WAIT)
            .build()
            .map_err(|e| ("jwt_jwks_url", format!("cannot make an HTTP client: {e}")))?;
        let https = match reqwest::Url::parse(url) {
            Ok(u) if u.scheme() == "https" && u.host_str().is_some() => {
                Some((u, tls_connector(ca_file)?))
            }
            Ok(u) if u.scheme() == "https" => {
                return Err(("jwt_jwks_url", format!("{url:?}: no host")));
            }
            _ => None,
        };
        Ok(Jwks {
            url: url.to_string(),
            http,
            https,
            keys: RwLock::default(),
            last_refetch: Mutex::new(None),
            wake: Notify::new(),
            done: watch::Sender::new(0),
            busy: AtomicBool::new(true),
        })
    }

    /// The key a token names: its header's `kid`, for RS256 or ES256.
    /// `UnknownKey` when the cache does not hold it (see [`Jwks::refetch`]).
    pub fn key_for(&self, token: &str) -> Result<Key, AuthError> {
        let header = jsonwebtoken::decode_header(token)
            .map_err(|e| AuthError::Invalid(format!("bad header: {e}")))?;
        if !matches!(header.alg, Algorithm::RS256 | Algorithm::ES256) {
            return Err(AuthError::Invalid(
                "only RS256 and ES256 tokens are accepted".into(),
            ));
        }
        let kid = header
            .kid
            .ok_or_else(|| AuthError::Invalid("no `kid` in the token's header".into()))?;
        let keys = self.keys.read().unwrap_or_else(|e| e.into_inner());
        keys.get(&kid)
            .cloned()
            .ok_or(AuthError::UnknownKey(kid.chars().take(64).collect()))
    }

    /// After an unknown `kid`: waits (at most [`WAIT`]) for the fetch under
    /// way if there is one (the one at start, say), else starts one unless
    /// one started for an unknown `kid` less than [`MIN_REFETCH`] ago and
    /// waits for it.
    pub async fn refetch(&self) {
        let mut done = self.done.subscribe();
        if !self.busy.load(Ordering::Acquire) {
            let mut last = lock(&self.last_refetch);
            if last.is_some_and(|t| t.elapsed() < MIN_REFETCH) {
                return;
            }
            *last = Some(Instant::now());
            self.busy.store(true, Ordering::Release);
            self.wake.notify_one();
        }
        let _ = tokio::time::timeout(WAIT, done.changed()).await;
    }

    /// The fetch task, owned by the app's task tracker: fetches at once,
    /// then whenever [`Jwks::refetch`] asks, until shutdown.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let mut first = true;
        loop {
            if !first {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = self.wake.notified() => {}
                }
            }
            first = false;
            self.busy.store(true, Ordering::Release);
            let fetched = tokio::select! {
                _ = shutdown.cancelled() => return,
                r = self.fetch() => r,
            };
            match fetched {
                Ok(n) => tracing::info!(url = %self.url, keys = n, "JWKS fetched"),
                // The keys held stay: known `kid`s still verify.
                Err(e) => tracing::warn!(url = %self.url, error = %e, "JWKS fetch failed"),
            }
            self.busy.store(false, Ordering::Release);
            self.done.send_modify(|n| *n += 1);
        }
    }

    /// One fetch: replaces the cache with the set's usable keys (a key the
    /// provider removed is no longer accepted).
    async fn fetch(&self) -> Result<usize, String> {
        let set: JwkSet = match &self.https {
            Some((url, tls)) => {
                let body = tokio::time::timeout(FETCH_TIMEOUT, get_https(url, tls))
                    .await
                    .map_err(|_| format!("no answer within {FETCH_TIMEOUT:?}"))??;
                serde_json::from_slice(&body).map_err(|e| e.to_string())?
            }
            None => {
                let resp = self
                    .http
                    .get(&self.url)
                    .send()
                    .await
                    .and_then(|r| r.error_for_status())
                    .map_err(|e| e.to_string())?;
                resp.json().await.map_err(|e| e.to_string())?
            }
        };
        let keys = usable_keys(&set);
        let n = keys.len();
        *self.keys.write().unwrap_or_else(|e| e.into_inner()) = keys;
        Ok(n)
    }
}

/// The TLS client for an https endpoint: the system's CA bundle (if the
/// machine has one) and `ca_file`'s certificates; at least one CA.
fn tls_connector(ca_file: Option<&Path>) -> Result<TlsConnector, (&'static str, String)> {
    let mut roots = RootCertStore::empty();
    let system = std::env::var_os("SSL_CERT_FILE")
        .map_or_else(|| PathBuf::from(SYSTEM_CA_FILE), PathBuf::from);
    // A missing or partly unreadable system bundle is not fatal: the CA
    // file may be all that is needed.
    if let Ok(certs) = CertificateDer::pem_file_iter(&system) {
        roots.add_parsable_certificates(certs.flatten());
    }
    if let Some(file) = ca_file {
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(file)
            .and_then(|it| it.collect::<Result<Vec<_>, _>>())
            .map_err(|e| ("jwt_jwks_ca_file", format!("{}: {e}", file.display())))?;
        if certs.is_empty() {
            return Err((
                "jwt_jwks_ca_file",
                format!("{}: no certificate in the file", file.display()),
            ));
        }
        for c in certs {
            roots
                .add(c)
                .map_err(|e| ("jwt_jwks_ca_file", format!("{}: {e}", file.display())))?;
        }
    }
    if roots.is_empty() {
        return Err((
            "jwt_jwks_ca_file",
            format!(
                "no CA certificate to verify the https jwt_jwks_url with: {} is missing \
                 (install ca-certificates, or set SSL_CERT_FILE or jwt_jwks_ca_file)",
                system.display()
            ),
        ));
    }
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ("jwt_jwks_url", format!("tls: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsConnector::from(Arc::new(config)))
}

/// One HTTP/1.1 GET over TLS, on a connection of its own; the body of a
/// 2xx answer, at most [`MAX_SET_BYTES`].
async fn get_https(url: &reqwest::Url, tls: &TlsConnector) -> Result<Bytes, String> {
    let host = url.host_str().ok_or("no host")?;
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let port = url.port_or_known_default().unwrap_or(443);
    let tcp = tokio::time::timeout(WAIT, tokio::net::TcpStream::connect((bare, port)))
        .await
        .map_err(|_| format!("cannot connect within {WAIT:?}"))?
        .map_err(|e| format!("cannot connect: {e}"))?;
    let name = ServerName::try_from(bare.to_string()).map_err(|e| format!("{host}: {e}"))?;
    let stream = tls
        .connect(name, tcp)
        .await
        .map_err(|e| format!("TLS: {e}"))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    let authority = match url.port() {
        Some(p) => format!("{host}:{p}"),
        None => host.to_string(),
    };
    let target = match url.query() {
        Some(q) => format!("{}?{q}", url.path()),
        None => url.path().to_string(),
    };
    let req = hyper::Request::get(target)
        .header(hyper::header::HOST, authority)
        .header(hyper::header::ACCEPT, "application/json")
        .header(hyper::header::CONNECTION, "close")
        .body(Empty::<Bytes>::new())
        .map_err(|e| e.to_string())?;
    let fetch = async {
        let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
        if !resp.status().is_success() {
            return Err(format!("HTTP status {}", resp.status()));
        }
        let body = Limited::new(resp.into_body(), MAX_SET_BYTES)
            .collect()
            .await
            .map_err(|e| format!("reading the body: {e}"))?;
        Ok(body.to_bytes())
    };
    // The connection is driven here, not in a task of its own, so nothing
    // outlives the fetch; once it has ended, the body already received is
    // still read out.
    tokio::pin!(conn, fetch);
    let mut conn_done = false;
    loop {
        tokio::select! {
            r = &mut fetch => return r,
            c = &mut conn, if !conn_done => {
                conn_done = true;
                c.map_err(|e| e.to_string())?;
            }
        }
    }
}

/// The set's RS256 and ES256 keys that have a `kid`; others are skipped (a
/// set may hold keys for other uses).
fn usable_keys(set: &JwkSet) -> HashMap<String, Key> {
    set.keys
        .iter()
        .filter_map(|jwk| {
            let kid = jwk.common.key_id.clone()?;
            let alg = algorithm(jwk)?;
            let key = DecodingKey::from_jwk(jwk).ok()?;
            Some((kid, Arc::new((key, alg))))
        })
        .collect()
}

/// A key's algorithm, from its type; a stated `alg` must agree.
fn algorithm(jwk: &Jwk) -> Option<Algorithm> {
    let (alg, named) = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => (Algorithm::RS256, KeyAlgorithm::RS256),
        AlgorithmParameters::EllipticCurve(p) if p.curve == EllipticCurve::P256 => {
            (Algorithm::ES256, KeyAlgorithm::ES256)
        }
        _ => return None,
    };
    match jwk.common.key_algorithm {
        Some(stated) if stated != named => None,
        _ => Some(alg),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_rs256_and_es256_keys_with_a_kid_are_kept() {
        let set: JwkSet = serde_json::from_value(serde_json::json!({"keys": [
            {"kty":"RSA","kid":"r","n":"sXchDaQebHnPiGvyDOAT4saGEUetSyo9MKLOoWFsueri23bOdgWp4Dy1WlUzewbgBHod5pcM9H95GQRV3JDXboIRROSBigeC5yjU1hGzHHyXss8UDprecbAYxknTcQkhslANGRUZmdTOQ5qTRsLAt6BTYuyvVRdhS8exSZEy_c4gs_7svlJJQ4H9_NxsiIoLwAEk7-Q3UXERGYw_75IDrGA84-lA_-Ct4eTlXHBIY2EaV7t7LjJaynVJCpkv4LKjTTAumiGUIuQhrNhZLuF_RJLqHpM2kgWFLU7-VTdL1VbC2tejvcI2BlMkEpk1BzBZI0KQB0GaDWFLN-aEAw3vRw","e":"AQAB"},
            {"kty":"RSA","n":"sXchDaQebHnPiGvyDOAT4saGEUetSyo9MKLOoWFsueri23bOdgWp4Dy1WlUzewbgBHod5pcM9H95GQRV3JDXboIRROSBigeC5yjU1hGzHHyXss8UDprecbAYxknTcQkhslANGRUZmdTOQ5qTRsLAt6BTYuyvVRdhS8exSZEy_c4gs_7svlJJQ4H9_NxsiIoLwAEk7-Q3UXERGYw_75IDrGA84-lA_-Ct4eTlXHBIY2EaV7t7LjJaynVJCpkv4LKjTTAumiGUIuQhrNhZLuF_RJLqHpM2kgWFLU7-VTdL1VbC2tejvcI2BlMkEpk1BzBZI0KQB0GaDWFLN-aEAw3vRw","e":"AQAB"},
            {"kty":"RSA","kid":"r512","alg":"RS512","n":"sXchDaQebHnPiGvyDOAT4saGEUetSyo9MKLOoWFsueri23bOdgWp4Dy1WlUzewbgBHod5pcM9H95GQRV3JDXboIRROSBigeC5yjU1hGzHHyXss8UDprecbAYxknTcQkhslANGRUZmdTOQ5qTRsLAt6BTYuyvVRdhS8exSZEy_c4gs_7svlJJQ4H9_NxsiIoLwAEk7-Q3UXERGYw_75IDrGA84-lA_-Ct4eTlXHBIY2EaV7t7LjJaynVJCpkv4LKjTTAumiGUIuQhrNhZLuF_RJLqHpM2kgWFLU7-VTdL1VbC2tejvcI2BlMkEpk1BzBZI0KQB0GaDWFLN-aEAw3vRw","e":"AQAB"},
            {"kty":"oct","kid":"h","k":"c2VjcmV0"},
        ]}))
        .unwrap();
        let keys = usable_keys(&set);
        assert_eq!(keys.len(), 1);
        assert_eq!(keys["r"].1, Algorithm::RS256);
    }
}
