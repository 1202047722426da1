//! `GET /metrics`: Prometheus text whose figures move with the traffic.
//! One test in a process of its own: the metrics recorder is process-wide.
#![allow(clippy::unwrap_used)]

use crate::common;

use std::time::Duration;

use common::{Server, metric_value as value, scrape};
use serde_json::json;

#[tokio::test]
async fn metrics_move_with_the_traffic() {
    if common::in_own_process("metrics::metrics_move_with_the_traffic") {
        return;
    }
    let s = Server::default().await;
    let mut sub = s.client().await;
    sub.join("m").await;
    let mut p = s.client().await;
    for i in 0..5 {
        p.publish("m", json!(i)).await;
    }
    let http = reqwest::Client::new();
    for i in 0..3 {
        http.post(s.http("/api/publish"))
            .json(&json!({"room":"m","event":"e","data":i}))
            .send()
            .await
            .unwrap();
    }
    // A duplicate is not a new message.
    for _ in 0..2 {
        p.call(json!({"type":"publish","room":"m","event":"e","data":0,"msgId":"same"}))
            .await;
    }
    for _ in 0..9 {
        sub.expect("message").await;
    }
    p.send_text("{not json").await;
    assert_eq!(p.expect("error").await["code"], "bad_request");

    let t = scrape(&s).await;
    assert_eq!(
        value(&t, "hubcast_connections", &[("transport", "ws")]),
        2.0
    );
    assert_eq!(
        value(
            &t,
            "hubcast_connections_opened_total",
            &[("transport", "ws")]
        ),
        2.0
    );
    assert_eq!(
        value(&t, "hubcast_messages_published_total", &[("entry", "ws")]),
        6.0
    );
    assert_eq!(
        value(&t, "hubcast_messages_published_total", &[("entry", "http")]),
        3.0
    );
    assert_eq!(value(&t, "hubcast_deliveries_total", &[]), 9.0);
    assert_eq!(
        value(
            &t,
            "hubcast_frames_rejected_total",
            &[("code", "bad_request")]
        ),
        1.0
    );
    assert!(value(&t, "hubcast_rooms", &[]) >= 1.0);
    // Two personal rooms and `m`.
    assert_eq!(value(&t, "hubcast_room_members", &[]), 3.0);
    assert!(value(&t, "hubcast_received_bytes_total", &[]) > 100.0);
    assert!(value(&t, "hubcast_sent_bytes_total", &[]) > 500.0);
    // Histograms are histograms (buckets), not summaries.
    assert!(
        t.contains("# TYPE hubcast_publish_delivery_seconds histogram"),
        "{t}"
    );
    assert_eq!(
        value(&t, "hubcast_publish_delivery_seconds_count", &[]),
        9.0
    );
    assert_eq!(
        value(
            &t,
            "hubcast_broker_operation_seconds_count",
            &[("op", "publish"), ("result", "ok")]
        ),
        10.0
    );
    assert!(
        value(
            &t,
            "hubcast_broker_operation_seconds_bucket",
            &[("op", "publish"), ("le", "+Inf")]
        ) >= 10.0
    );
    assert!(value(&t, "hubcast_outbound_queue_depth_count", &[]) >= 1.0);

    // Closing moves the gauge and counts the reason; SSE and polls count
    // as their own transports.
    p.close().await;
    let sse = http.get(s.http("/sse?rooms=m")).send().await.unwrap();
    assert_eq!(sse.status(), 200);
    let mut t = String::new();
    for _ in 0..50 {
        t = scrape(&s).await;
        if value(&t, "hubcast_connections", &[("transport", "ws")]) == 1.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        value(&t, "hubcast_connections", &[("transport", "ws")]),
        1.0
    );
    assert_eq!(
        value(
            &t,
            "hubcast_connections_closed_total",
            &[("transport", "ws"), ("reason", "normal")]
        ),
        1.0
    );
    assert_eq!(
        value(&t, "hubcast_connections", &[("transport", "sse")]),
        1.0
    );
    drop(sse);
    let r = http
        .get(s.http("/api/poll?room=m&timeout=0"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let t = scrape(&s).await;
    assert_eq!(
        value(
            &t,
            "hubcast_connections_opened_total",
            &[("transport", "poll")]
        ),
        1.0
    );
}
