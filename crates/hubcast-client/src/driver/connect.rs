//! One connection attempt: the URL (with `?name=` for an anonymous
//! connection), the token, TCP and the WebSocket handshake, all within
//! `connect_timeout`.

use std::fmt::Write as _;

use tokio::net::TcpStream;
use tokio::time::timeout;

use super::Driver;
use crate::error::Error;
use crate::raw::{self, Ws};

impl Driver {
    pub(super) async fn connect_once(&mut self) -> Result<Ws<TcpStream>, Error> {
        let uri: http::Uri = self
            .url
            .parse()
            .map_err(|e| Error::Url(format!("{}: {e}", self.url)))?;
        if uri.scheme_str() != Some("ws") {
            return Err(Error::Url(format!(
                "{}: only ws:// (put TLS in front separately)",
                self.url
            )));
        }
        let host = uri.host().ok_or_else(|| Error::Url("no host".into()))?;
        let host = host.trim_matches(|c| c == '[' || c == ']').to_string();
        let port = uri.port_u16().unwrap_or(80);
        let token = match &self.opts.token_fn {
            Some(f) => f(),
            None => self.opts.token.clone(),
        };
        let mut url = self.url.clone();
        if token.is_none()
            && let Some(name) = &self.opts.name
        {
            let sep = if url.contains('?') { '&' } else { '?' };
            url = format!("{url}{sep}name={}", percent_encode(name));
        }
        let limit = self.opts.connect_timeout;
        let go = async {
            let tcp = TcpStream::connect((host.as_str(), port))
                .await
                .map_err(|e| Error::Io(e.to_string()))?;
            tcp.set_nodelay(true)
                .map_err(|e| Error::Io(e.to_string()))?;
            raw::handshake(tcp, &url, token.as_deref()).await
        };
        timeout(limit, go)
            .await
            .map_err(|_| Error::Timeout("connect".into()))?
    }
}

/// Percent-encodes a query value (RFC 3986 unreserved characters pass).
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            // Writing into a String cannot fail.
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_values_are_encoded() {
        assert_eq!(percent_encode("Ada Lovelace&x"), "Ada%20Lovelace%26x");
        assert_eq!(percent_encode("é"), "%C3%A9");
    }
}
