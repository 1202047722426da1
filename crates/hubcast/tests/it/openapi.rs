//! `/api/openapi.json` is true: it documents exactly the routes the server
//! answers, and every operation, called, answers with a status the document
//! lists for it.
#![allow(clippy::unwrap_used)]

use crate::common;

use std::collections::BTreeSet;

use common::Server;
use serde_json::{Value, json};

#[tokio::test]
async fn the_document_matches_the_routes_and_their_answers() {
    let s = Server::default().await;
    let r = reqwest::get(s.http("/api/openapi.json")).await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/json");
    let doc: Value = r.json().await.unwrap();
    assert_eq!(doc["openapi"], "3.1.0");

    // Exactly the served routes.
    let documented: BTreeSet<(String, String)> = doc["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(path, ops)| {
            ops.as_object()
                .unwrap()
                .keys()
                .map(|m| (m.to_uppercase(), path.clone()))
                .collect::<Vec<_>>()
        })
        .collect();
    let served: BTreeSet<(String, String)> = hubcast::http::ROUTES
        .iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    assert_eq!(documented, served);

    // Every `$ref` resolves.
    fn refs(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(m) => {
                for (k, x) in m {
                    if k == "$ref" {
                        out.push(x.as_str().unwrap().to_string());
                    } else {
                        refs(x, out);
                    }
                }
            }
            Value::Array(a) => a.iter().for_each(|x| refs(x, out)),
            _ => {}
        }
    }
    let mut all = Vec::new();
    refs(&doc, &mut all);
    for r in all {
        let ptr = r.strip_prefix('#').unwrap();
        assert!(doc.pointer(ptr).is_some(), "dangling {r}");
    }

    // Each operation answers with a documented status: once as a plain
    // call, and once with a bad input where the document lists 400.
    let mut user_conn = s.client().await;
    let user = user_conn.user();
    user_conn.join("r").await;
    let http = reqwest::Client::new();
    for (method, path) in &served {
        let concrete = path.replace("{room}", "r").replace("{user}", &user);
        let ops = &doc["paths"][path][method.to_lowercase()];
        let allowed: BTreeSet<String> = ops["responses"]
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect();
        let good = match (method.as_str(), path.as_str()) {
            ("POST", "/api/publish") => http
                .post(s.http(&concrete))
                .json(&json!({"room":"r","event":"e","data":1})),
            ("POST", "/api/send") => http
                .post(s.http(&concrete))
                .json(&json!({"to":user,"event":"e","data":1})),
            ("GET", "/api/poll") => http.get(s.http("/api/poll?room=r&timeout=0")),
            ("GET", "/sse") => http.get(s.http("/sse?rooms=r")),
            ("POST", "/api/subscribe" | "/api/unsubscribe") => http
                .post(s.http(&concrete))
                .json(&json!({"user":user,"room":"r2"})),
            _ => http.request(method.parse().unwrap(), s.http(&concrete)),
        };
        let st = good.send().await.unwrap().status().as_u16().to_string();
        assert!(
            allowed.contains(&st),
            "{method} {path}: {st} not in {allowed:?}"
        );
        if allowed.contains("400") {
            let bad = match method.as_str() {
                "POST" => http
                    .post(s.http(&concrete))
                    .header("content-type", "application/json")
                    .body("{"),
                _ => http.get(s.http(&format!("{concrete}?since=x&limit=0"))),
            };
            let st = bad.send().await.unwrap().status().as_u16();
            // A plain GET of /ws (no upgrade), /sse without rooms and
            // /api/poll without room are 400 too.
            if !(path.contains("{user}") || path.contains("presence")) {
                assert_eq!(st, 400, "{method} {path} with bad input");
            }
        }
    }
}

/// The document's name schemas state the server's own rules: every sample
/// that the server's check accepts matches the schema (pattern and length)
/// and every one it refuses does not.
#[tokio::test]
async fn the_name_schemas_agree_with_the_servers_checks() {
    use regex_automata::meta::Regex;
    let s = Server::default().await;
    let doc: Value = reqwest::get(s.http("/api/openapi.json"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let schemas = &doc["components"]["schemas"];
    let fits = |schema: &str, v: &str| {
        let sc = &schemas[schema];
        let re = Regex::new(sc["pattern"].as_str().unwrap()).unwrap();
        let n = v.chars().count() as u64;
        re.is_match(v)
            && n >= sc["minLength"].as_u64().unwrap()
            && n <= sc["maxLength"].as_u64().unwrap()
    };
    let long = |c: char, n: usize| c.to_string().repeat(n);
    let names = [
        "lobby".to_string(),
        "a.b:c-d_e".into(),
        "".into(),
        "has space".into(),
        "tab\t".into(),
        "é".into(),
        "@bob".into(),
        "@".into(),
        "@bob smith".into(),
        "@bo\u{7}b".into(),
        "@bo\u{85}b".into(),
        "@émile".into(),
        "a/b".into(),
        long('x', 64),
        long('x', 65),
        long('x', 128),
        long('x', 129),
        format!("@{}", long('é', 128)),
        format!("@{}", long('é', 129)),
        "ns:@x".into(),
    ];
    for n in &names {
        let server = hubcast_protocol::check_room(n).is_ok();
        assert_eq!(fits("RoomName", n), server, "room {n:?}");
        let server = hubcast_protocol::check_event(n).is_ok();
        assert_eq!(fits("EventType", n), server, "event {n:?}");
        let user = n.trim_start_matches('@');
        let server = hubcast_protocol::check_user(user).is_ok();
        assert_eq!(fits("UserId", user), server, "user {user:?}");
        let server = hubcast_protocol::check_msg_id(user).is_ok();
        assert_eq!(fits("MsgId", user), server, "msgId {user:?}");
    }
    // And the server answers as its document says, over HTTP.
    let http = reqwest::Client::new();
    for room in ["lobby", "has space", "@bob", &long('x', 129)] {
        let r = http
            .post(s.http("/api/publish"))
            .json(&json!({"room": room, "event": "e", "data": 1}))
            .send()
            .await
            .unwrap();
        let want = if fits("RoomName", room) { 200 } else { 400 };
        assert_eq!(r.status(), want, "publish to {room:?}");
    }
    s.stop().await;
}
