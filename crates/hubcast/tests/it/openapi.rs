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
