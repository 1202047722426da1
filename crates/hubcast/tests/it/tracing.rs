//! Trace ids: an HTTP publish with a W3C `traceparent` keeps its trace id
//! in the JSON log lines of the message's journey (publish and broker on
//! the node that took it, delivery on the node that delivered it) and in
//! the envelope (`traceId`). Two real `hubcast` processes on one Redis.
#![allow(clippy::unwrap_used)]

use crate::common;

use std::process::{Child, Command, Stdio};

use common::Client;
use serde_json::{Value, json};

/// Starts a node on a port of its choosing; returns it and that port.
async fn start(prefix: &str, node: &str) -> (Child, u16) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_hubcast"))
        .args(["serve", "--listen", "127.0.0.1:0"])
        .args(["--broker", "redis", "--redis-url", &common::redis_url()])
        .args(["--redis-prefix", prefix, "--node-id", node])
        .args(["--log-format", "json"])
        .env("RUST_LOG", "hubcast=debug")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let port = common::listening_port(&mut child).await;
    (child, port)
}

/// Stops a node with SIGTERM and returns its JSON log lines.
async fn stop(child: Child) -> Vec<Value> {
    common::send_term(&child);
    let (_, out) = common::wait_stderr(child).await;
    out.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

/// Lines whose message is `msg` and that mention `trace_id` anywhere (as an
/// event field or in their spans).
fn lines_with<'a>(log: &'a [Value], msg: &str, trace_id: &str) -> Vec<&'a Value> {
    log.iter()
        .filter(|l| l["message"] == msg && l.to_string().contains(trace_id))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_traceparent_follows_the_message_across_nodes() {
    let prefix = common::unique_prefix();
    let (a, pa) = start(&prefix, "trace-a").await;
    let (b, pb) = start(&prefix, "trace-b").await;
    common::wait_for(pa, "/readyz").await;
    common::wait_for(pb, "/readyz").await;

    let mut sub = Client::connect(&format!("ws://127.0.0.1:{pb}/ws")).await;
    sub.join_quiet("traced").await;
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let r = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{pa}/api/publish"))
        .header("traceparent", format!("00-{trace_id}-00f067aa0ba902b7-01"))
        .json(&json!({"room":"traced","event":"e","data":"follow me"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let m = loop {
        let v = sub.recv().await;
        if v["type"] == "message" {
            break v;
        }
    };
    assert_eq!(m["traceId"], trace_id);
    assert_eq!(m["data"], "follow me");

    // A publish without traceparent gets its own trace id in the logs, and
    // none in the envelope.
    reqwest::Client::new()
        .post(format!("http://127.0.0.1:{pa}/api/publish"))
        .json(&json!({"room":"traced","event":"e","data":"plain"}))
        .send()
        .await
        .unwrap();
    let m = loop {
        let v = sub.recv().await;
        if v["type"] == "message" {
            break v;
        }
    };
    assert!(m.get("traceId").is_none(), "{m}");
    sub.close().await;

    let log_a = stop(a).await;
    let log_b = stop(b).await;
    assert!(
        !lines_with(&log_a, "message published", trace_id).is_empty(),
        "publish line on the publishing node"
    );
    let broker = lines_with(&log_a, "broker operation", trace_id);
    assert!(
        broker.iter().any(|l| l.to_string().contains("\"publish\"")),
        "broker publish line with the trace id: {broker:?}"
    );
    assert!(
        !lines_with(&log_b, "message delivered", trace_id).is_empty(),
        "delivery line on the delivering node"
    );
    // Every request line carries some trace id.
    assert!(
        log_a
            .iter()
            .filter(|l| l["message"] == "message published")
            .all(|l| l.to_string().contains("trace_id")),
    );
    common::clean_redis(&prefix);
}
