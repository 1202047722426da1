//! `rpc` frames: the backend's data or its own error comes back in a
//! `result`; a backend that fails gives `unavailable`; rpc off is a clear
//! error.

use serde_json::json;

use super::{Answer, Backend};

#[tokio::test]
async fn rpc_results_are_the_backends_data_or_its_error() {
    let backend = Backend::start(|b| match b["method"].as_str() {
        Some("sum") => {
            let n: i64 = b["data"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_i64().unwrap())
                .sum();
            Answer::Json(json!({"data": n}))
        }
        Some("null") => Answer::Json(json!({"data": null})),
        Some("hang") => Answer::Hang,
        Some("crash") => Answer::Status(500),
        Some("garbage") => Answer::Garbage,
        _ => {
            Answer::Json(json!({"error": {"code": "no_such_method", "message": "unknown method"}}))
        }
    })
    .await;
    let s = backend.server(|c| c.hooks.rpc = true).await;
    let mut c = s.client().await;
    let r = c
        .call(json!({"type":"rpc","method":"sum","data":[1,2,3]}))
        .await;
    assert_eq!(r["type"], "result", "{r}");
    assert_eq!(r["data"], 6);
    assert!(r.get("error").is_none(), "{r}");
    let r = c
        .call(json!({"type":"rpc","method":"null","data":{}}))
        .await;
    assert_eq!(r["type"], "result", "{r}");
    assert!(r.get("data").is_some_and(|d| d.is_null()), "{r}");
    let r = c.call(json!({"type":"rpc","method":"what","data":1})).await;
    assert_eq!(
        r["error"],
        json!({"code": "no_such_method", "message": "unknown method"})
    );
    for (method, reason) in [
        ("hang", "timeout"),
        ("crash", "status"),
        ("garbage", "unreadable"),
    ] {
        let r = c.call(json!({"type":"rpc","method":method,"data":1})).await;
        assert_eq!(r["type"], "result", "{r}");
        assert_eq!(r["error"]["code"], "unavailable", "{r}");
        assert!(
            r["error"]["message"].as_str().unwrap().contains(reason),
            "{r}"
        );
    }
    let b = &backend.seen_of("rpc")[0].body;
    assert_eq!(b["method"], "sum");
    assert_eq!(b["data"], json!([1, 2, 3]));
    assert_eq!(b["user"], c.user());
    assert_eq!(b["conn"], c.welcome["connId"]);
    // A bad method is the frame's error, the backend is not asked.
    let asked = backend.seen().len();
    let r = c.call(json!({"type":"rpc","method":"a b","data":1})).await;
    assert_eq!(r["code"], "bad_request", "{r}");
    assert_eq!(backend.seen().len(), asked);
    backend.assert_all_signed();
}

#[tokio::test]
async fn the_rust_client_calls_rpc() {
    let backend = Backend::start(|b| match b["method"].as_str() {
        Some("echo") => Answer::Json(json!({"data": {"got": b["data"]}})),
        _ => Answer::Json(json!({"error": {"code": "nope", "message": "no such method"}})),
    })
    .await;
    let s = backend.server(|c| c.hooks.rpc = true).await;
    let (c, _events) =
        hubcast_client::Client::connect(&s.ws_url(), hubcast_client::Options::default());
    c.wait_for(hubcast_client::State::Connected, crate::common::WAIT)
        .await
        .unwrap();
    assert_eq!(
        c.rpc("echo", json!([1])).await.unwrap(),
        json!({"got": [1]})
    );
    let e = c.rpc("other", json!(null)).await.unwrap_err();
    assert_eq!(
        e,
        hubcast_client::Error::Server {
            code: "nope".into(),
            message: "no such method".into()
        }
    );
    c.close().await;
}

#[tokio::test]
async fn rpc_off_is_a_clear_error() {
    let backend = Backend::start(|_| Answer::Json(json!({"data": 1}))).await;
    let s = backend.server(|_| {}).await;
    let mut c = s.client().await;
    let r = c.call(json!({"type":"rpc","method":"m","data":1})).await;
    assert_eq!(r["type"], "error");
    assert_eq!(r["code"], "forbidden");
    assert!(r["message"].as_str().unwrap().contains("rpc = true"), "{r}");
    assert!(backend.seen().is_empty());
}

#[tokio::test]
async fn hook_metrics_reach_metrics() {
    if crate::common::in_own_process("hooks::rpc::hook_metrics_reach_metrics") {
        return;
    }
    let backend = Backend::start(|b| match b["method"].as_str() {
        Some("hang") => Answer::Hang,
        _ => Answer::Json(json!({"data": 1})),
    })
    .await;
    let s = backend.server(|c| c.hooks.rpc = true).await;
    let mut c = s.client().await;
    c.call(json!({"type":"rpc","method":"ok","data":1})).await;
    c.call(json!({"type":"rpc","method":"hang","data":1})).await;
    let text = reqwest::get(s.http("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for line in [
        r#"hubcast_hook_requests_total{hook="rpc"} 2"#,
        r#"hubcast_hook_failures_total{hook="rpc",reason="timeout"} 1"#,
        r#"hubcast_hook_duration_seconds_count{hook="rpc"} 2"#,
    ] {
        assert!(text.lines().any(|l| l == line), "{line} in\n{text}");
    }
    assert!(
        text.contains(r#"hubcast_hook_duration_seconds_bucket{hook="rpc",le="0.5"}"#),
        "{text}"
    );
}
