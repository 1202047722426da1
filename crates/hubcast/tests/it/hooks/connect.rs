//! The connect hook: a handshake without a JWT asks the backend, which
//! sees the cookie, headers and query and answers with a user and claims
//! (granting as a JWT would), or refuses; failures never let anyone in.

use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use super::{Answer, Backend, Case};
use crate::common::{Client, Server};

/// A handshake with a session cookie; the refusal's status and JSON body
/// when there is one.
async fn handshake(s: &Server, query: &str) -> Result<Client, (u16, Value)> {
    let mut req = format!("{}{query}", s.ws_url())
        .into_client_request()
        .unwrap();
    req.headers_mut()
        .insert("cookie", "session=s3cr3t".parse().unwrap());
    req.headers_mut().insert(
        "traceparent",
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
            .parse()
            .unwrap(),
    );
    match Client::connect_with(req).await {
        Ok(c) => Ok(c),
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            let body = resp.body().clone().unwrap_or_default();
            Err((
                resp.status().as_u16(),
                serde_json::from_slice(&body).unwrap(),
            ))
        }
        Err(e) => panic!("{e}"),
    }
}

/// The backend knows one session cookie.
fn sessions(body: &Value) -> Answer {
    match body["headers"]["cookie"].as_str() {
        Some("session=s3cr3t") => Answer::Json(json!({
            "user": "alice",
            "name": "Alice",
            "rooms": ["team.*"],
            "subs": ["team.a"],
            "expiresAt": hubcast::unix_ms() / 1000 + 600,
        })),
        _ => Answer::Json(json!({"error": {"code": "unauthorized", "message": "log in first"}})),
    }
}

#[tokio::test]
async fn the_backend_names_the_user_and_its_claims_grant_like_a_token() {
    let backend = Backend::start(sessions).await;
    let s = backend.server(|c| c.hooks.connect = true).await;
    let mut c = handshake(&s, "?lang=fr").await.unwrap();
    assert_eq!(c.welcome["user"], "alice");
    assert_eq!(c.welcome["name"], "Alice");
    // `subs`: joined at connect, as with a token.
    let j = c.expect("joined").await;
    assert_eq!(j["room"], "team.a");
    // `rooms`: other rooms are forbidden, as with a token.
    let (r, _presence) = c.request(json!({"type":"join","room":"other"})).await;
    assert_eq!(r["code"], "forbidden", "{r}");
    let seen = &backend.seen_of("connect")[0];
    let b = &seen.body;
    assert_eq!(b["headers"]["cookie"], "session=s3cr3t");
    assert_eq!(b["query"]["lang"], "fr");
    assert_eq!(b["remote"], "127.0.0.1");
    assert!(b["conn"].as_str().unwrap().starts_with("c-"), "{b}");
    assert!(b["id"].is_string(), "{b}");
    // The upgrade's trace goes on to the backend.
    let tp = seen.headers["traceparent"].to_str().unwrap();
    assert!(
        tp.starts_with("00-0af7651916cd43dd8448eb211c80319c-"),
        "{tp}"
    );
    backend.assert_all_signed();
}

#[tokio::test]
async fn refusals_carry_the_backends_status_and_message() {
    let backend = Backend::start(|b| match b["query"]["as"].as_str() {
        Some("banned") => {
            Answer::Json(json!({"error": {"code": "forbidden", "message": "banned"}}))
        }
        _ => Answer::Json(json!({"error": {"code": "unauthorized", "message": "log in first"}})),
    })
    .await;
    let s = backend.server(|c| c.hooks.connect = true).await;
    let (status, body) = handshake(&s, "").await.err().unwrap();
    assert_eq!(status, 401);
    assert_eq!(body["error"]["code"], "unauthorized");
    assert_eq!(body["error"]["message"], "log in first");
    let (status, body) = handshake(&s, "?as=banned").await.err().unwrap();
    assert_eq!(status, 403);
    assert_eq!(body["error"]["message"], "banned");
    // SSE handshakes ask the same hook.
    let r = reqwest::get(s.http("/sse?rooms=x&as=banned"))
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    backend.assert_all_signed();
}

#[tokio::test]
async fn a_backend_that_fails_lets_nobody_in() {
    let cases: [Case; 6] = [
        (|| Answer::Hang, "timeout"),
        (|| Answer::Status(500), "status"),
        (|| Answer::Garbage, "unreadable"),
        (|| Answer::Json(json!({"name": "no user"})), "unreadable"),
        (|| Answer::Json(json!({"user": ""})), "unreadable"),
        (
            || Answer::Json(json!({"error": {"code": "teapot", "message": "?"}})),
            "unreadable",
        ),
    ];
    for (answer, reason) in cases {
        let backend = Backend::start(move |_| answer()).await;
        let s = backend.server(|c| c.hooks.connect = true).await;
        let (status, body) = handshake(&s, "").await.err().unwrap();
        assert_eq!(status, 503, "{reason}: {body}");
        assert_eq!(body["error"]["code"], "unavailable");
        assert!(
            body["error"]["message"].as_str().unwrap().contains(reason),
            "{body}"
        );
        let r = reqwest::get(s.http("/sse?rooms=x")).await.unwrap();
        assert_eq!(r.status(), 503, "{reason}: SSE too");
    }
}

#[tokio::test]
async fn an_sse_stream_is_the_backends_user() {
    let backend = Backend::start(sessions).await;
    let s = backend.server(|c| c.hooks.connect = true).await;
    let r = reqwest::Client::new()
        .get(s.http("/sse?rooms=team.b"))
        .header("cookie", "session=s3cr3t")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = reqwest::Client::new()
        .get(s.http("/sse?rooms=other"))
        .header("cookie", "session=s3cr3t")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403, "the backend's `rooms` hold for SSE");
    assert_eq!(
        backend.seen_of("connect")[0].body["conn"]
            .as_str()
            .unwrap()
            .get(..2),
        Some("s-")
    );
}
