//! `GET /metrics`: Prometheus text whose figures move with the traffic.
//! One test in its own binary: the metrics recorder is process-wide.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::Server;
use serde_json::json;

/// The value of the series `name` whose labels include `labels` (summed
/// over the series that match).
fn value(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    let mut sum = 0.0;
    let mut found = false;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, v)) = line.rsplit_once(' ') else {
            continue;
        };
        let (n, l) = match series.split_once('{') {
            Some((n, rest)) => (n, rest.trim_end_matches('}')),
            None => (series, ""),
        };
        if n != name {
            continue;
        }
        if labels
            .iter()
            .all(|(k, val)| l.split(',').any(|p| p == format!("{k}=\"{val}\"")))
        {
            sum += v.parse::<f64>().unwrap();
            found = true;
        }
    }
    assert!(found, "no series {name} {labels:?} in:\n{text}");
    sum
}

async fn scrape(s: &Server) -> String {
    let r = reqwest::get(s.http("/metrics")).await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
    r.text().await.unwrap()
}

#[tokio::test]
async fn metrics_move_with_the_traffic() {
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
