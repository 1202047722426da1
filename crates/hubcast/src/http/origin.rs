//! Browser `Origin` checks for the WebSocket handshake (PROTOCOL.md
//! section 1).
//!
//! Always allowed: requests without `Origin` (not a browser) and origins on
//! the request's own host. With no `allowed_origins` configured, loopback
//! origins are allowed too (the dev default). Configured entries are exact
//! origins (`https://app.example.com`, `http://localhost:3000`), host
//! patterns matching any scheme and port (`*.example.com`,
//! `app.example.com`), scheme-bound patterns (`https://*.example.com`), or
//! `*` for any origin.

/// Checks one `allowed_origins` entry; the error says what is expected.
pub(crate) fn check_pattern(p: &str) -> Result<(), String> {
    const EXPECTED: &str =
        "expected an origin like https://app.example.com, a pattern like *.example.com, or *";
    if p == "*" {
        return Ok(());
    }
    let (scheme, rest) = match p.split_once("://") {
        Some((s, r)) => (Some(s), r),
        None => (None, p),
    };
    if let Some(s) = scheme
        && !matches!(s.to_ascii_lowercase().as_str(), "http" | "https")
    {
        return Err(format!("scheme must be http or https; {EXPECTED}"));
    }
    if rest.contains('/') {
        return Err(format!("an origin has no path; {EXPECTED}"));
    }
    let host = rest.strip_prefix("*.").unwrap_or(rest);
    let host =
        host.rsplit_once(':').map_or(
            host,
            |(h, port)| {
                if port.parse::<u16>().is_ok() { h } else { host }
            },
        );
    let ok = !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'[' | b']' | b':'));
    if !ok {
        return Err(EXPECTED.to_string());
    }
    Ok(())
}

/// Splits `scheme://host[:port]` into lowercase parts; `None` for `null` or
/// anything that is not an origin.
fn parse(origin: &str) -> Option<(String, String, Option<u16>)> {
    let (scheme, rest) = origin.split_once("://")?;
    if rest.contains('/') || rest.is_empty() {
        return None;
    }
    let (host, port) = split_host_port(rest)?;
    Some((scheme.to_ascii_lowercase(), host.to_ascii_lowercase(), port))
}

/// Splits `host[:port]`, handling `[v6]:port`.
fn split_host_port(s: &str) -> Option<(&str, Option<u16>)> {
    if let Some(v6) = s.strip_prefix('[') {
        let end = v6.find(']')?;
        let host = &s[..end + 2];
        let port = match &v6[end + 1..] {
            "" => None,
            p => Some(p.strip_prefix(':')?.parse().ok()?),
        };
        return Some((host, port));
    }
    match s.rsplit_once(':') {
        Some((h, p)) => Some((h, Some(p.parse().ok()?))),
        None => Some((s, None)),
    }
}

fn default_port(scheme: &str) -> Option<u16> {
    match scheme {
        "http" | "ws" => Some(80),
        "https" | "wss" => Some(443),
        _ => None,
    }
}

fn is_loopback(host: &str) -> bool {
    host == "localhost"
        || host.ends_with(".localhost")
        || host == "[::1]"
        || host
            .parse::<std::net::Ipv4Addr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Whether the request's `Host` names this machine's loopback (localhost,
/// 127.0.0.0/8, [::1]): what trust granted to loopback callers requires, so
/// that a page whose DNS name was rebound to 127.0.0.1 is not trusted.
pub(crate) fn host_is_loopback(headers: &axum::http::HeaderMap) -> bool {
    headers
        .get(axum::http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .and_then(split_host_port)
        .is_some_and(|(host, _)| is_loopback(&host.to_ascii_lowercase()))
}

/// Whether a browser on `origin` may open a WebSocket on the host named by
/// the request's `Host` header.
pub(crate) fn allowed(origin: &str, host_header: Option<&str>, patterns: &[String]) -> bool {
    if patterns.iter().any(|p| p == "*") {
        return true;
    }
    let Some((scheme, host, port)) = parse(origin) else {
        return false;
    };
    let port = port.or_else(|| default_port(&scheme));
    // Same host as the request.
    if let Some((req_host, req_port)) = host_header.and_then(split_host_port) {
        let req_port = req_port.or_else(|| default_port(&scheme));
        if req_host.eq_ignore_ascii_case(&host) && req_port == port {
            return true;
        }
    }
    if patterns.is_empty() {
        return is_loopback(&host);
    }
    patterns.iter().any(|p| {
        let (p_scheme, p_rest) = match p.split_once("://") {
            Some((s, r)) => (Some(s.to_ascii_lowercase()), r.to_ascii_lowercase()),
            None => (None, p.to_ascii_lowercase()),
        };
        if p_scheme.as_ref().is_some_and(|s| *s != scheme) {
            return false;
        }
        let Some((p_host, p_port)) = split_host_port(&p_rest) else {
            return false;
        };
        if p_scheme.is_some() {
            let p_port = p_port.or_else(|| default_port(&scheme));
            if p_port != port {
                return false;
            }
        } else if p_port.is_some() && p_port != port {
            return false;
        }
        match p_host.strip_prefix("*.") {
            Some(suffix) => host.len() > suffix.len() + 1 && host.ends_with(&format!(".{suffix}")),
            None => p_host == host,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn default_allows_same_host_and_loopback_only() {
        assert!(allowed(
            "http://localhost:3000",
            Some("127.0.0.1:8080"),
            &[]
        ));
        assert!(allowed(
            "http://127.0.0.1:5173",
            Some("127.0.0.1:8080"),
            &[]
        ));
        assert!(allowed("http://[::1]:8080", Some("x"), &[]));
        assert!(allowed(
            "https://chat.example.com",
            Some("chat.example.com"),
            &[]
        ));
        assert!(allowed(
            "https://chat.example.com",
            Some("chat.example.com:443"),
            &[]
        ));
        assert!(!allowed(
            "https://evil.example",
            Some("chat.example.com"),
            &[]
        ));
        assert!(!allowed("null", Some("chat.example.com"), &[]));
        assert!(!allowed(
            "http://chat.example.com:8081",
            Some("chat.example.com:8080"),
            &[]
        ));
    }

    #[test]
    fn configured_patterns() {
        let p = v(&[
            "https://app.example.com",
            "*.example.org",
            "http://localhost:3000",
        ]);
        assert!(allowed(
            "https://app.example.com",
            Some("ws.example.com"),
            &p
        ));
        assert!(!allowed(
            "http://app.example.com",
            Some("ws.example.com"),
            &p
        ));
        assert!(allowed(
            "https://a.b.example.org",
            Some("ws.example.com"),
            &p
        ));
        assert!(!allowed("https://example.org", Some("ws.example.com"), &p));
        assert!(!allowed(
            "https://badexample.org",
            Some("ws.example.com"),
            &p
        ));
        assert!(allowed("http://localhost:3000", Some("ws.example.com"), &p));
        assert!(
            !allowed("http://localhost:4000", Some("ws.example.com"), &p),
            "loopback not implied once configured"
        );
        assert!(
            allowed("https://ws.example.com", Some("ws.example.com"), &p),
            "own host always"
        );
        assert!(allowed("null", None, &v(&["*"])));
    }

    #[test]
    fn patterns_are_checked() {
        assert!(check_pattern("*").is_ok());
        assert!(check_pattern("*.example.com").is_ok());
        assert!(check_pattern("https://app.example.com:8443").is_ok());
        assert!(check_pattern("https://*.example.com").is_ok());
        assert!(check_pattern("ftp://x").is_err());
        assert!(check_pattern("https://x/path").is_err());
        assert!(check_pattern("").is_err());
    }
}
