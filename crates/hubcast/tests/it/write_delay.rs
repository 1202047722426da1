//! `write_delay_ms`: a writer that waits after a quiet spell sends the
//! frames queued meanwhile in one write, loses and reorders nothing, and
//! does not hold back a close. The first test runs in a process of its
//! own: it reads the process-wide metrics (frames per write is
//! `hubcast_outbound_queue_depth`).
#![allow(clippy::unwrap_used)]

use crate::common;

use std::time::{Duration, Instant};

use common::{Client, Server, metric_value, scrape};
use serde_json::json;

/// A server with `delay` and a client in room `wd` whose join frames (its
/// presence event too) are out.
async fn subscribed(delay: Duration) -> (Server, Client) {
    let s = Server::start(|c| c.write_delay_ms = delay.as_millis() as u64).await;
    let mut sub = s.client().await;
    sub.join("wd").await;
    tokio::time::sleep(delay * 2).await;
    (s, sub)
}

#[tokio::test]
async fn frames_queued_during_the_delay_share_one_write() {
    if common::in_own_process("write_delay::frames_queued_during_the_delay_share_one_write") {
        return;
    }
    const DELAY: Duration = Duration::from_millis(300);
    let (s, mut sub) = subscribed(DELAY).await;
    let before = scrape(&s).await;
    let writes = metric_value(&before, "hubcast_outbound_queue_depth_count", &[]);
    let frames = metric_value(&before, "hubcast_outbound_queue_depth_sum", &[]);

    let start = Instant::now();
    for i in 0..5 {
        let ack = s.api_publish("wd", json!(i)).await;
        assert_eq!(ack["offset"], i + 1, "{ack}");
    }
    let published_in = start.elapsed();
    let first = sub.messages("wd", 1).await;
    // The writer's wait began after the first publish was queued; tokio's
    // timer has a resolution of one millisecond.
    assert!(
        start.elapsed() + Duration::from_millis(2) >= DELAY,
        "first message after {:?}, before the {DELAY:?} delay",
        start.elapsed()
    );
    let rest = sub.messages("wd", 4).await;
    let data: Vec<_> = first
        .iter()
        .chain(&rest)
        .map(|m| m["data"].clone())
        .collect();
    assert_eq!(
        data,
        (0..5).map(|i| json!(i)).collect::<Vec<_>>(),
        "all, in order"
    );

    let after = scrape(&s).await;
    let writes = metric_value(&after, "hubcast_outbound_queue_depth_count", &[]) - writes;
    let frames = metric_value(&after, "hubcast_outbound_queue_depth_sum", &[]) - frames;
    assert_eq!(
        frames, 5.0,
        "only the subscriber's five messages were written"
    );
    assert!(writes < frames, "{frames} frames in {writes} writes");
    if published_in < DELAY {
        // Every publish was queued while the writer waited.
        assert_eq!(writes, 1.0, "{frames} frames in {writes} writes");
    }
    s.stop().await;
}

#[tokio::test]
async fn a_close_is_not_held_back() {
    const DELAY: Duration = Duration::from_millis(1000);
    let (s, mut sub) = subscribed(DELAY).await;
    // The message starts the writer's wait; the shutdown's close ends it.
    let start = Instant::now();
    s.api_publish("wd", json!("last")).await;
    let stopping = tokio::spawn(s.stop());
    let (code, reason, frames) = sub.until_close().await;
    assert_eq!(code, Some(1001), "{reason}");
    assert!(
        frames
            .iter()
            .any(|f| f["type"] == "message" && f["data"] == "last"),
        "the queued message goes out before the close: {frames:?}"
    );
    // Held back, the close would have waited the whole delay.
    assert!(
        start.elapsed() < DELAY,
        "the close took {:?} with a {DELAY:?} write delay",
        start.elapsed()
    );
    stopping.await.unwrap();
}

#[tokio::test]
async fn a_pong_neither_waits_nor_lets_queued_frames_wait() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;

    const DELAY: Duration = Duration::from_millis(1000);
    let (s, mut sub) = subscribed(DELAY).await;
    // Reads until the pong; returns the text frames read before it.
    async fn until_pong(sub: &mut Client) -> Vec<serde_json::Value> {
        let mut texts = Vec::new();
        loop {
            match sub.ws.next().await.unwrap().unwrap() {
                Message::Pong(p) => {
                    assert_eq!(&p[..], b"hb");
                    return texts;
                }
                Message::Text(t) => texts.push(serde_json::from_str(&t).unwrap()),
                _ => {}
            }
        }
    }
    // A ping on a quiet connection is answered at once.
    let start = Instant::now();
    sub.ws.send(Message::Ping("hb".into())).await.unwrap();
    until_pong(&mut sub).await;
    assert!(start.elapsed() < DELAY, "pong after {:?}", start.elapsed());
    // A ping while a message waits ends the wait: the pong goes out, the
    // message right behind it.
    let start = Instant::now();
    s.api_publish("wd", json!("waiting")).await;
    sub.ws.send(Message::Ping("hb".into())).await.unwrap();
    let before_pong = until_pong(&mut sub).await;
    assert!(before_pong.is_empty(), "{before_pong:?}");
    let waiting = sub.messages("wd", 1).await;
    assert_eq!(waiting[0]["data"], "waiting");
    assert!(
        start.elapsed() < DELAY,
        "message after {:?}",
        start.elapsed()
    );
    s.stop().await;
}
