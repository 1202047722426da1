//! Long polling (`GET /api/poll`): answers as soon as a message after
//! `since` exists, or empty at `timeout`; a client polling from its last
//! offset sees every message once, in order, on either engine.
#![allow(clippy::unwrap_used)]

use crate::common;

use std::time::{Duration, Instant};

use common::Server;
use serde_json::{Value, json};

async fn poll(s: &Server, query: &str) -> (u16, Value) {
    let r = reqwest::get(s.http(&format!("/api/poll?{query}")))
        .await
        .unwrap();
    let st = r.status().as_u16();
    (st, r.json().await.unwrap())
}

both_engines! {
    #[tokio::test]
    async fn a_publish_wakes_a_waiting_poll_long_before_its_timeout(engine) {
        let s = Server::on(engine).await;
        let url = s.http("/api/poll?room=lp&since=0&timeout=30");
        let waiting = tokio::spawn(async move {
            let t0 = Instant::now();
            let v: Value = reqwest::get(url).await.unwrap().json().await.unwrap();
            (v, t0.elapsed())
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        let ws_pub = {
            let mut c = s.client().await;
            c.publish("lp", json!("woke")).await
        };
        let (v, waited) = waiting.await.unwrap();
        assert_eq!(v["room"], "lp");
        assert_eq!(v["epoch"], ws_pub["epoch"]);
        assert_eq!(common::reply_offsets(&v), vec![1]);
        assert_eq!(v["messages"][0]["data"], "woke");
        assert_eq!(v["messages"][0]["msgId"], ws_pub["msgId"]);
        // Not the timeout: the publish ended the wait (30 s asked).
        assert!(waited < Duration::from_secs(10), "waited {waited:?}");
    }
}

both_engines! {
    #[tokio::test]
    async fn messages_already_there_are_answered_at_once(engine) {
        let s = Server::on(engine).await;
        for i in 1..=3 {
            s.api_publish("now", json!(i)).await;
        }
        let (st, v) = poll(&s, "room=now&since=1&timeout=30").await;
        assert_eq!(st, 200);
        assert_eq!(common::reply_offsets(&v), vec![2, 3]);
        assert_eq!(v["messages"][1]["data"], 3);
        // `limit` caps one answer; the next poll continues.
        let (_, v) = poll(&s, "room=now&since=0&limit=2").await;
        assert_eq!(common::reply_offsets(&v), vec![1, 2]);
        let (_, v) = poll(&s, "room=now&since=2").await;
        assert_eq!(common::reply_offsets(&v), vec![3]);
    }
}

both_engines! {
    #[tokio::test]
    async fn an_idle_room_answers_empty_at_the_timeout(engine) {
        let s = Server::on(engine).await;
        let t0 = Instant::now();
        let (st, v) = poll(&s, "room=quiet&since=0&timeout=1").await;
        assert_eq!(st, 200);
        assert_eq!(v["messages"], json!([]));
        assert!(v["epoch"].is_string());
        assert!(t0.elapsed() >= Duration::from_millis(900), "{:?}", t0.elapsed());
        // Without `since`: the next message after now.
        let (_, v) = poll(&s, "room=quiet&timeout=0").await;
        assert_eq!(v["messages"], json!([]));
    }
}

both_engines! {
    #[tokio::test]
    async fn polling_from_the_last_offset_sees_every_message_once_in_order(engine) {
        let s = Server::on(engine).await;
        const N: u64 = 60;
        let base = s.http("");
        let poller = tokio::spawn(async move {
            let mut since = 0;
            let mut got = Vec::new();
            while since < N {
                let v: Value = reqwest::get(format!("{base}/api/poll?room=stream&since={since}&timeout=10"))
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                for m in v["messages"].as_array().unwrap() {
                    let o = m["offset"].as_u64().unwrap();
                    got.push(o);
                    since = o;
                }
            }
            got
        });
        let mut c = s.client().await;
        for i in 1..=N {
            c.publish("stream", json!(i)).await;
            if i % 7 == 0 {
                tokio::time::sleep(Duration::from_millis(15)).await;
            }
        }
        let got = tokio::time::timeout(Duration::from_secs(30), poller).await.unwrap().unwrap();
        assert_eq!(got, (1..=N).collect::<Vec<u64>>());
    }
}

#[tokio::test]
async fn bad_polls_get_clear_errors() {
    let s = Server::default().await;
    for (q, words) in [
        ("since=0", "`room` is required"),
        ("room=a%20b", "invalid room"),
        ("room=r&timeout=31", "`timeout`"),
        ("room=r&since=x", "`since`"),
        ("room=r&limit=5000", "`limit`"),
    ] {
        let (st, v) = poll(&s, q).await;
        assert_eq!(st, 400, "{q}: {v}");
        assert_eq!(v["error"]["code"], "bad_request");
        let m = v["error"]["message"].as_str().unwrap();
        assert!(m.contains(words), "{q}: {m}");
    }
    // Behind the API key like every /api route.
    let s = Server::start(|c| c.api_keys = vec!["poll-test-key-0123456789".into()]).await;
    let (st, v) = poll(&s, "room=r&timeout=0").await;
    assert_eq!(st, 401, "{v}");
}
