//! The browser side as served by the binary (the files, their headers,
//! `web = false`) and the dashboard's API: `GET /api/rooms` and
//! `GET /api/events`. The pages themselves are tested in Chromium
//! (crates/hubcast/web/test/browser.test.mjs).
#![allow(clippy::unwrap_used)]

use crate::common;

use common::{Client, Server};
use serde_json::{Value, json};

async fn get(url: &str) -> reqwest::Response {
    reqwest::get(url).await.unwrap()
}

#[tokio::test]
async fn pages_and_the_client_are_served_with_cache_and_security_headers() {
    let s = Server::default().await;
    for (path, ty, marker) in [
        ("/", "text/html", "hubcast chat"),
        ("/admin", "text/html", "hubcast dashboard"),
        (
            "/client/hubcast.js",
            "text/javascript",
            "export class Hubcast",
        ),
        (
            "/client/hubcast.d.ts",
            "application/typescript",
            "class Hubcast",
        ),
        (
            "/static/chat.js",
            "text/javascript",
            "from '/client/hubcast.js'",
        ),
        ("/static/admin.js", "text/javascript", "/api/stats"),
        ("/static/style.css", "text/css", ":root"),
    ] {
        let r = get(&s.http(path)).await;
        assert_eq!(r.status(), 200, "{path}");
        let h = r.headers().clone();
        assert!(
            h["content-type"].to_str().unwrap().starts_with(ty),
            "{path}"
        );
        assert_eq!(h["cache-control"], "no-cache");
        assert_eq!(h["x-content-type-options"], "nosniff");
        if ty == "text/html" {
            let csp = h["content-security-policy"].to_str().unwrap();
            assert!(csp.contains("script-src 'self'"), "{csp}");
        }
        let etag = h["etag"].to_str().unwrap().to_string();
        assert!(r.text().await.unwrap().contains(marker), "{path}");
        // Revalidation: 304 while the file is the same.
        let again = reqwest::Client::new()
            .get(s.http(path))
            .header("if-none-match", &etag)
            .send()
            .await
            .unwrap();
        assert_eq!(again.status(), 304, "{path}");
        assert!(again.text().await.unwrap().is_empty());
        let other = reqwest::Client::new()
            .get(s.http(path))
            .header("if-none-match", "\"something-else\"")
            .send()
            .await
            .unwrap();
        assert_eq!(other.status(), 200, "{path}");
    }
}

#[tokio::test]
async fn web_false_turns_the_pages_off_but_not_the_client() {
    let s = Server::start(|c| c.web = false).await;
    for path in ["/", "/admin", "/static/chat.js"] {
        let r = get(&s.http(path)).await;
        assert_eq!(r.status(), 404, "{path}");
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["error"]["code"], "not_found");
    }
    assert_eq!(get(&s.http("/client/hubcast.js")).await.status(), 200);
}

#[tokio::test]
async fn rooms_lists_local_rooms_by_members_without_personal_rooms() {
    let s = Server::default().await;
    let mut a = s.client().await;
    let mut b = s.client().await;
    a.join("big").await;
    a.join("small").await;
    b.join("big").await;
    let r: Value = get(&s.http("/api/rooms")).await.json().await.unwrap();
    assert_eq!(r["total"], 2);
    assert_eq!(
        r["rooms"],
        json!([{"room": "big", "members": 2}, {"room": "small", "members": 1}])
    );
    let r: Value = get(&s.http("/api/rooms?limit=1"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(r["rooms"].as_array().unwrap().len(), 1);
    assert_eq!(r["total"], 2);
    for bad in ["limit=0", "limit=1001", "limit=x"] {
        let r = get(&s.http(&format!("/api/rooms?{bad}"))).await;
        assert_eq!(r.status(), 400, "{bad}");
    }
    b.close().await;
    common::wait_until(|| async {
        let r: Value = get(&s.http("/api/rooms")).await.json().await.unwrap();
        (r["rooms"][0]["members"] == 1).then_some(())
    })
    .await;
}

#[tokio::test]
async fn events_list_errors_and_notable_closes_newest_first() {
    let s = Server::start(|c| {
        c.rate_limit_per_conn = 1;
        c.rate_limit_burst = 2;
    })
    .await;
    let mut a = s.client().await;
    let user = a.user();
    a.send(json!({"type": "shout", "id": 1})).await;
    assert_eq!(a.expect("error").await["code"], "unknown_type");
    let r: Value = get(&s.http("/api/events")).await.json().await.unwrap();
    let events = r["events"].as_array().unwrap();
    assert_eq!(events.len(), 1);
    let e = &events[0];
    assert_eq!(e["kind"], "error");
    assert_eq!(e["code"], "unknown_type");
    assert_eq!(e["user"], user);
    assert!(e["message"].as_str().unwrap().contains("shout"));
    let seq = e["seq"].as_u64().unwrap();

    // A flooding client: its refusals are not listed one by one, its
    // 4003 close is.
    let mut f = Client::connect(&s.ws_url()).await;
    for i in 0..50 {
        f.send(json!({"type": "ping", "id": i})).await;
    }
    let (code, _, _) = f.until_close().await;
    assert_eq!(code, Some(4003));
    let newer = common::wait_until(|| async {
        let r: Value = get(&s.http(&format!("/api/events?after={seq}")))
            .await
            .json()
            .await
            .unwrap();
        let ev = r["events"].as_array().unwrap().clone();
        (!ev.is_empty()).then_some(ev)
    })
    .await;
    assert_eq!(newer.len(), 1, "{newer:?}");
    assert_eq!(newer[0]["kind"], "close");
    assert_eq!(newer[0]["code"], "flooding");
    assert_eq!(newer[0]["closeCode"], 4003);
    assert!(newer[0]["seq"].as_u64().unwrap() > seq);
    // A normal close is not an event.
    a.close().await;
    let r: Value = get(&s.http("/api/events?limit=10"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(r["events"].as_array().unwrap().len(), 2);
    assert_eq!(
        get(&s.http("/api/events?after=-1")).await.status(),
        400,
        "bad after"
    );
}

/// One client sending bad frames (each within its frame budget) keeps one
/// event per code, counted, instead of pushing the others out.
#[tokio::test]
async fn one_connection_cannot_flush_the_events() {
    let s = Server::default().await;
    let mut calm = s.client().await;
    calm.send(json!({"type": "shout", "id": 1})).await;
    assert_eq!(calm.expect("error").await["code"], "unknown_type");
    let mut noisy = s.client().await;
    for i in 0..300 {
        noisy
            .send(json!({"type": "leave", "room": "nowhere", "id": format!("n{i}")}))
            .await;
    }
    // The barrier: every error was sent (and recorded) before the pong.
    let (pong, errors) = noisy.request(json!({"type": "ping"})).await;
    assert_eq!(pong["type"], "pong");
    assert_eq!(errors.len(), 300);
    let r: Value = get(&s.http("/api/events?limit=200"))
        .await
        .json()
        .await
        .unwrap();
    let events = r["events"].as_array().unwrap();
    assert_eq!(events.len(), 2, "{events:?}");
    assert_eq!(events[0]["code"], "not_joined");
    assert_eq!(events[0]["user"], noisy.user());
    assert_eq!(events[0]["count"], 300);
    assert_eq!(events[1]["code"], "unknown_type");
    assert_eq!(events[1]["user"], calm.user());
    assert_eq!(events[1]["count"], 1);
    s.stop().await;
}

#[tokio::test]
async fn the_dashboard_api_needs_the_key() {
    let key = "0123456789abcdef-key";
    let s = Server::start(|c| c.api_keys = vec![key.to_string()]).await;
    let http = reqwest::Client::new();
    for path in ["/api/rooms", "/api/events", "/api/stats"] {
        let r = http.get(s.http(path)).send().await.unwrap();
        assert_eq!(r.status(), 401, "{path}");
        let r = http
            .get(s.http(path))
            .bearer_auth(key)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{path}");
    }
    // The pages themselves are public: the dashboard asks for the key.
    assert_eq!(get(&s.http("/admin")).await.status(), 200);
}
