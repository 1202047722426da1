//! Server-Sent Events (`GET /sse`): the same envelopes as WebSocket, event
//! ids `room:offset`, resume with `Last-Event-ID` after a dropped stream
//! with nothing lost and nothing repeated, heartbeats, and the handshake's
//! refusals.
#![allow(clippy::unwrap_used)]

use crate::common;

use std::time::Duration;

use common::Server;
use futures_util::StreamExt;
use serde_json::{Value, json};

/// One SSE event: its id (if any) and its data as JSON, or a comment.
#[derive(Debug)]
enum Event {
    Data(Option<String>, Option<String>, Value),
    Comment(String),
}

/// A minimal EventSource: reads `\n\n`-separated events from the body.
pub(crate) struct Sse {
    body: std::pin::Pin<Box<dyn futures_util::Stream<Item = reqwest::Result<bytes::Bytes>> + Send>>,
    buf: String,
}

impl Sse {
    pub(crate) async fn open(s: &Server, query: &str, last_id: Option<&str>) -> Sse {
        let mut req = reqwest::Client::new().get(s.http(&format!("/sse?{query}")));
        if let Some(id) = last_id {
            req = req.header("Last-Event-ID", id);
        }
        let r = req.send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["content-type"], "text/event-stream");
        Sse {
            body: Box::pin(r.bytes_stream()),
            buf: String::new(),
        }
    }

    async fn next_event(&mut self) -> Event {
        loop {
            if let Some(end) = self.buf.find("\n\n") {
                let raw: String = self.buf.drain(..end + 2).collect();
                let mut id = None;
                let mut name = None;
                let mut data = None;
                let mut comment = None;
                for line in raw.lines() {
                    if let Some(v) = line.strip_prefix("id: ") {
                        id = Some(v.to_string());
                    } else if let Some(v) = line.strip_prefix("event: ") {
                        name = Some(v.to_string());
                    } else if let Some(v) = line.strip_prefix("data: ") {
                        data = Some(serde_json::from_str(v).unwrap());
                    } else if let Some(v) = line.strip_prefix(':') {
                        comment = Some(v.trim().to_string());
                    }
                }
                if let Some(d) = data {
                    return Event::Data(id, name, d);
                }
                if let Some(c) = comment {
                    return Event::Comment(c);
                }
                continue; // `retry:` and the like
            }
            let chunk = tokio::time::timeout(common::WAIT, self.body.next())
                .await
                .expect("an event in time")
                .expect("stream open")
                .unwrap();
            self.buf.push_str(std::str::from_utf8(&chunk).unwrap());
        }
    }

    /// The next data event (skipping heartbeats). Every one is checked
    /// against the naming rule: envelopes are unnamed (an `EventSource`'s
    /// `onmessage` sees them and nothing else), every other frame is an
    /// event named by its type.
    pub(crate) async fn next(&mut self) -> (Option<String>, Value) {
        loop {
            if let Event::Data(id, name, v) = self.next_event().await {
                if v["type"] == "message" {
                    assert_eq!(name, None, "{v}");
                } else {
                    assert_eq!(name.as_deref(), v["type"].as_str(), "{v}");
                }
                return (id, v);
            }
        }
    }

    /// The next message event.
    pub(crate) async fn message(&mut self) -> (String, Value) {
        loop {
            let (id, v) = self.next().await;
            if v["type"] == "message" {
                return (id.expect("messages carry an id"), v);
            }
        }
    }
}

both_engines! {
    #[tokio::test]
    async fn sse_gets_the_same_envelopes_with_room_offset_ids(engine) {
        let s = Server::on(engine).await;
        let mut sse = Sse::open(&s, "rooms=a,b", None).await;
        let mut joined = Vec::new();
        for _ in 0..2 {
            let (id, j) = sse.next().await;
            assert_eq!(id, None);
            assert_eq!(j["type"], "joined");
            joined.push(j["room"].as_str().unwrap().to_string());
        }
        joined.sort();
        assert_eq!(joined, ["a", "b"]);
        let ack = s.api_publish("a", json!("one")).await;
        let mut ws = s.client().await;
        let ack_b = ws.publish("b", json!("two")).await;
        let (id, m) = sse.message().await;
        assert_eq!(id, "a:1");
        assert_eq!(m["msgId"], ack["msgId"]);
        assert_eq!(m["data"], "one");
        let (id, m) = sse.message().await;
        assert_eq!(id, "b:1");
        assert_eq!(m["msgId"], ack_b["msgId"]);
        assert_eq!(m["epoch"], ack_b["epoch"]);
    }
}

both_engines! {
    #[tokio::test]
    async fn a_dropped_stream_resumes_with_last_event_id_losing_nothing(engine) {
        let s = Server::on(engine).await;
        let mut sse = Sse::open(&s, "rooms=feed", None).await;
        sse.next().await; // joined
        for i in 1..=3 {
            s.api_publish("feed", json!(i)).await;
        }
        let mut last = String::new();
        for i in 1..=3 {
            let (id, m) = sse.message().await;
            assert_eq!(m["data"], i);
            last = id;
        }
        drop(sse);
        // Published while the browser was away.
        for i in 4..=7 {
            s.api_publish("feed", json!(i)).await;
        }
        let mut sse = Sse::open(&s, "rooms=feed", Some(&last)).await;
        let (_, j) = sse.next().await;
        assert_eq!(j["type"], "joined");
        assert_eq!(j["recovered"], true);
        let mut got = Vec::new();
        for _ in 4..=7 {
            let (id, m) = sse.message().await;
            got.push((id, m["data"].as_u64().unwrap()));
        }
        assert_eq!(
            got,
            (4..=7).map(|i| (format!("feed:{i}"), i)).collect::<Vec<_>>()
        );
        s.api_publish("feed", json!(8)).await;
        let (id, _) = sse.message().await;
        assert_eq!(id, "feed:8", "live again after the replay, no duplicate");

        // `since` resumes several rooms at once.
        s.api_publish("other", json!("x")).await;
        s.api_publish("other", json!("y")).await;
        let mut sse = Sse::open(&s, "rooms=feed,other&since=feed:7,other:1", None).await;
        let mut ids = Vec::new();
        while ids.len() < 2 {
            let (id, v) = sse.next().await;
            if v["type"] == "message" {
                ids.push(id.unwrap());
            }
        }
        ids.sort();
        assert_eq!(ids, ["feed:8", "other:2"]);
    }
}

#[tokio::test]
async fn heartbeats_keep_an_idle_stream_alive() {
    let s = Server::start(|c| c.heartbeat = 1).await;
    let mut sse = Sse::open(&s, "rooms=idle", None).await;
    sse.next().await; // joined
    let ev = tokio::time::timeout(Duration::from_secs(5), sse.next_event())
        .await
        .unwrap();
    assert!(matches!(ev, Event::Comment(ref c) if c == "ping"), "{ev:?}");
}

#[tokio::test]
async fn bad_streams_are_refused_before_they_start() {
    const SECRET: &str = "sse-test-secret-0123456789abcdef";
    let s = Server::start(|c| {
        c.jwt_secret = Some(SECRET.into());
        c.anonymous = Some(false);
        c.max_rooms_per_conn = 3;
    })
    .await;
    let token = |claims: Value| {
        jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
        )
        .unwrap()
    };
    let exp = hubcast::unix_ms() / 1000 + 60;
    let good = token(json!({"sub":"sam","exp":exp,"rooms":["news.*"]}));
    let http = reqwest::Client::new();
    for (query, last, status, code) in [
        (format!("rooms=news.a&token={good}"), None, 200, ""),
        ("rooms=news.a".to_string(), None, 401, "unauthorized"),
        (
            "rooms=news.a&token=garbage".to_string(),
            None,
            401,
            "unauthorized",
        ),
        (format!("rooms=secret&token={good}"), None, 403, "forbidden"),
        (
            format!("rooms=@someone&token={good}"),
            None,
            403,
            "forbidden",
        ),
        (format!("token={good}"), None, 400, "bad_request"),
        (
            format!("rooms=a%20b&token={good}"),
            None,
            400,
            "bad_request",
        ),
        (
            format!("rooms=news.a&since=news.a&token={good}"),
            None,
            400,
            "bad_request",
        ),
        (
            format!("rooms=news.a&token={good}"),
            Some("nonsense"),
            400,
            "bad_request",
        ),
        (
            format!("rooms=news.a,news.b,news.c,news.d&token={good}"),
            None,
            429,
            "too_many_rooms",
        ),
    ] {
        let mut req = http.get(s.http(&format!("/sse?{query}")));
        if let Some(l) = last {
            req = req.header("Last-Event-ID", l);
        }
        let r = req.send().await.unwrap();
        assert_eq!(r.status().as_u16(), status, "{query}");
        if status != 200 {
            let v: Value = r.json().await.unwrap();
            assert_eq!(v["error"]["code"], code, "{query}: {v}");
        }
    }
    // A token's own personal room is fine.
    let r = http
        .get(s.http(&format!("/sse?rooms=@sam&token={good}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn non_message_frames_are_named_events_so_onmessage_sees_envelopes_only() {
    let s = Server::start(|_| {}).await;
    let mut sse = Sse::open(&s, "rooms=a", None).await;
    // `next` checks the naming of every event it reads.
    let (_, j) = sse.next().await;
    assert_eq!(j["type"], "joined");
    // A WebSocket member joining makes a presence event for the stream.
    let mut ws = s.client().await;
    ws.join("a").await;
    let (id, p) = sse.next().await;
    assert_eq!(id, None);
    assert_eq!(p["type"], "presence");
    assert_eq!(p["action"], "join");
    ws.publish("a", json!("hi")).await;
    let (id, m) = sse.message().await;
    assert_eq!(id, "a:1");
    assert_eq!(m["data"], "hi");
}
