//! OpenTelemetry export (built with `--features otlp`): a collector on a
//! loopback port receives hubcast's spans over OTLP/HTTP, and an API publish
//! that came with a `traceparent` is exported inside the caller's trace, as
//! a child of the caller's span.
#![cfg(feature = "otlp")]
#![allow(clippy::unwrap_used)]

use crate::common;

use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::routing::post;

/// A minimal OTLP/HTTP collector: keeps every request body.
async fn collector() -> (u16, Arc<Mutex<Vec<Bytes>>>, tokio::task::JoinHandle<()>) {
    let bodies: Arc<Mutex<Vec<Bytes>>> = Arc::default();
    let keep = bodies.clone();
    let app = Router::new().route(
        "/v1/traces",
        post(move |body: Bytes| {
            let keep = keep.clone();
            async move {
                keep.lock().unwrap().push(body);
                ""
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (port, bodies, task)
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn api_publish_is_exported_inside_the_callers_trace() {
    let (cport, bodies, collector) = collector().await;
    let mut child = Command::new(env!("CARGO_BIN_EXE_hubcast"))
        .args(["serve", "--listen", "127.0.0.1:0"])
        .args([
            "--otlp-endpoint",
            &format!("http://127.0.0.1:{cport}/v1/traces"),
        ])
        .env("OTEL_BSP_SCHEDULE_DELAY", "100")
        .env("RUST_LOG", "hubcast=debug")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let port = common::listening_port(&mut child).await;
    common::wait_for(port, "/healthz").await;

    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let parent = "00f067aa0ba902b7";
    let res = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{port}/api/publish"))
        .header("traceparent", format!("00-{trace}-{parent}-01"))
        .json(&serde_json::json!({"room": "otel", "event": "e", "data": {"x": 1}}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);

    // The span arrives within the batch delay; protobuf carries the ids as
    // raw bytes and the span name as a string.
    let (tid, pid) = (unhex(trace), unhex(parent));
    let mut found = false;
    for _ in 0..100 {
        found = bodies.lock().unwrap().iter().any(|b| {
            contains(b, &tid)
                && contains(b, &pid)
                && contains(b, b"request")
                && contains(b, b"hubcast")
        });
        if found {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    common::send_term(&child);
    let (status, stderr) = common::wait_stderr(child).await;
    collector.abort();
    assert!(
        found,
        "no exported span in the caller's trace; server log:\n{stderr}"
    );
    assert!(status.success(), "{stderr}");
    // The (debug) log lines of that request carry the same trace id.
    assert!(stderr.contains(trace), "{stderr}");
}

#[tokio::test(flavor = "multi_thread")]
async fn unreachable_collector_does_not_stop_the_server() {
    // A port nothing listens on: one that was free a moment ago.
    let dead = common::free_port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_hubcast"))
        .args(["serve", "--listen", "127.0.0.1:0"])
        .args([
            "--otlp-endpoint",
            &format!("http://127.0.0.1:{dead}/v1/traces"),
        ])
        .env("OTEL_BSP_SCHEDULE_DELAY", "50")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let port = common::listening_port(&mut child).await;
    common::wait_for(port, "/healthz").await;
    for _ in 0..5 {
        let res = reqwest::Client::new()
            .post(format!("http://127.0.0.1:{port}/api/publish"))
            .json(&serde_json::json!({"room": "otel", "event": "e", "data": {}}))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        tokio::time::sleep(Duration::from_millis(60)).await;
    }
    common::send_term(&child);
    let (status, stderr) =
        tokio::time::timeout(Duration::from_secs(20), common::wait_stderr(child))
            .await
            .expect("server stops despite the dead collector");
    assert!(status.success(), "{stderr}");
}
