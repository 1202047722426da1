//! The browser side, served from the binary itself (no CDN, nothing fetched
//! at run time, so it works offline): the client library at `/client/`,
//! the chat page at `/` and the admin dashboard at `/admin` (the pages can
//! be turned off with `web = false`; the library is always served).
//!
//! The files live in `crates/hubcast/web/` as plain source and are compiled
//! in with `include_str!`. Each answer carries an `ETag` (a hash of the
//! file) and `Cache-Control: no-cache`, so browsers revalidate and get a
//! 304 until the binary changes. Pages get a Content-Security-Policy that
//! allows only this origin's scripts and styles.

use std::hash::{Hash, Hasher};
use std::sync::OnceLock;

use axum::Router;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

/// One file served at a path.
struct Asset {
    path: &'static str,
    content_type: &'static str,
    body: &'static str,
    /// A page (gets the CSP; turned off with `web = false`).
    page: bool,
}

/// The asset table, one row per file: its path, its content type, the file
/// under `web/` embedded as its body, and whether it is a page.
macro_rules! assets {
    ($($path:literal => $file:literal, $content_type:expr, $page:literal;)*) => {
        &[$(Asset {
            path: $path,
            content_type: $content_type,
            body: include_str!(concat!("../../web/", $file)),
            page: $page,
        },)*]
    };
}

const JS: &str = "text/javascript; charset=utf-8";
const HTML: &str = "text/html; charset=utf-8";

const ASSETS: &[Asset] = assets![
    "/client/hubcast.js" => "client/hubcast.js", JS, false;
    "/client/hubcast.d.ts" => "client/hubcast.d.ts", "application/typescript; charset=utf-8", false;
    "/" => "index.html", HTML, true;
    "/admin" => "admin.html", HTML, true;
    "/static/chat.js" => "static/chat.js", JS, true;
    "/static/admin.js" => "static/admin.js", JS, true;
    "/static/style.css" => "static/style.css", "text/css; charset=utf-8", true;
];

/// Scripts and styles from this origin only; WebSocket and fetch to any
/// hubcast (the chat page may be pointed at another node).
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self' ws: wss:; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

/// The routes of the served files (`pages`: the chat page and dashboard
/// too).
pub(crate) fn routes<S: Clone + Send + Sync + 'static>(pages: bool) -> Router<S> {
    let mut r = Router::new();
    for (i, a) in ASSETS.iter().enumerate() {
        if a.page && !pages {
            continue;
        }
        r = r.route(a.path, get(move |h: HeaderMap| async move { serve(i, &h) }));
    }
    r
}

fn etags() -> &'static [String] {
    static TAGS: OnceLock<Vec<String>> = OnceLock::new();
    TAGS.get_or_init(|| {
        ASSETS
            .iter()
            .map(|a| {
                let mut h = std::collections::hash_map::DefaultHasher::new();
                a.body.hash(&mut h);
                format!("\"{:016x}\"", h.finish())
            })
            .collect()
    })
}

fn serve(i: usize, headers: &HeaderMap) -> Response {
    let (Some(asset), Some(etag)) = (ASSETS.get(i), etags().get(i)) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let fresh = headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim() == etag || t.trim() == "*");
    let mut resp = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        asset.body.into_response()
    };
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(asset.content_type),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    if let Ok(v) = HeaderValue::from_str(etag) {
        h.insert(header::ETAG, v);
    }
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    if asset.content_type.starts_with("text/html") {
        h.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CSP),
        );
        h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_refer_only_to_served_files() {
        // Every local script, stylesheet or module a page names is served,
        // and nothing is fetched from elsewhere.
        let served: Vec<&str> = ASSETS.iter().map(|a| a.path).collect();
        for a in ASSETS
            .iter()
            .filter(|a| a.content_type.starts_with("text/html") || a.path.ends_with(".js"))
        {
            for marker in ["src=\"", "href=\"", "from '"] {
                for part in a.body.split(marker).skip(1) {
                    let url = part.split(['"', '\'']).next().unwrap_or_default();
                    if url.starts_with('#') || url.starts_with("data:") || url.is_empty() {
                        continue;
                    }
                    assert!(
                        !url.contains("://"),
                        "{} refers to an outside URL {url}",
                        a.path
                    );
                    if url.starts_with('/') {
                        assert!(served.contains(&url), "{} refers to {url}", a.path);
                    }
                }
            }
        }
    }
}
