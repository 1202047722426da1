//! Offsets, epochs and recovery (PROTOCOL.md section 2, "Recovery"): missed
//! messages arrive before newer live ones, with no gap and no duplicate,
//! while other clients keep publishing.
#![allow(clippy::unwrap_used)]

use crate::common;

use std::time::Duration;

#[allow(unused_imports)]
use common::Engine;
use common::Server;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

/// Publishes numbered messages into `room` until `stop`, returning how many.
fn publisher(
    s: &Server,
    room: &'static str,
    stop: CancellationToken,
) -> tokio::task::JoinHandle<u64> {
    let url = s.ws_url();
    tokio::spawn(async move {
        let mut p = common::Client::connect(&url).await;
        let mut n = 0u64;
        while !stop.is_cancelled() {
            n += 1;
            let ack = p.publish(room, json!(n)).await;
            assert_eq!(ack["offset"], n, "offsets increase by one");
            if n.is_multiple_of(16) {
                tokio::task::yield_now().await;
            }
        }
        n
    })
}

/// Reads messages of `room` until `upto`, checking offsets run on from
/// `after` without a gap or a duplicate.
async fn read_run(c: &mut common::Client, room: &str, after: u64, upto: u64) -> Vec<Value> {
    let mut expect = after + 1;
    let mut got = Vec::new();
    while expect <= upto {
        let v = c.recv().await;
        if v["type"] != "message" || v["room"] != room {
            continue;
        }
        assert_eq!(v["offset"], expect, "no gap, no duplicate: {v}");
        assert_eq!(v["data"], expect, "payload matches offset: {v}");
        expect += 1;
        got.push(v);
    }
    got
}

both_engines! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn recovery_under_concurrent_publishing_has_no_gap_and_no_duplicate(engine) {
        let s = Server::on(engine).await;
        let stop = CancellationToken::new();
        let pub_task = publisher(&s, "busy", stop.clone());

        // First life: join, read a while, remember the last offset, drop.
        let mut c = s.client().await;
        let j = c.join_quiet("busy").await;
        let start = j["offset"].as_u64().unwrap();
        let epoch = j["epoch"].clone();
        let seen = read_run(&mut c, "busy", start, start + 50).await;
        let last = seen.last().unwrap()["offset"].as_u64().unwrap();
        // The epoch the join told is the one the messages carry.
        assert_eq!(seen.last().unwrap()["epoch"], epoch, "first join: {j}");
        c.close().await;
        tokio::time::sleep(Duration::from_millis(50)).await;

        // Second life, on a new connection, while publishing goes on.
        for round in 0..5 {
            let mut c = s.client().await;
            let (j, _) = c
                .request(json!({"type":"join","room":"busy","since":last,"epoch":epoch}))
                .await;
            assert_eq!(j["type"], "joined", "{j}");
            assert_eq!(j["recovered"], true, "round {round}: {j}");
            assert!(j["offset"].as_u64().unwrap() >= last);
            // Missed ones first, then live ones, one unbroken run.
            let top = j["offset"].as_u64().unwrap();
            read_run(&mut c, "busy", last, top + 30).await;
            c.close().await;
        }
        stop.cancel();
        let n = pub_task.await.unwrap();
        assert!(n > 50);
        s.stop().await;
    }
}

both_engines! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_plain_join_during_publishing_continues_from_its_offset(engine) {
        let s = Server::on(engine).await;
        let stop = CancellationToken::new();
        let pub_task = publisher(&s, "live", stop.clone());
        for _ in 0..5 {
            let mut c = s.client().await;
            // Wait for some traffic first.
            tokio::time::sleep(Duration::from_millis(10)).await;
            let (j, _) = c.request(json!({"type":"join","room":"live"})).await;
            let top = j["offset"].as_u64().unwrap();
            read_run(&mut c, "live", top, top + 40).await;
            c.close().await;
        }
        stop.cancel();
        pub_task.await.unwrap();
        s.stop().await;
    }
}

both_engines! {
    #[tokio::test]
    async fn recovery_refused_for_another_epoch_or_trimmed_history(engine) {
        let s = Server::start_on(engine, |c| c.history_size = 3).await;
        let mut p = s.client().await;
        let mut epoch = Value::Null;
        for i in 1..=6 {
            epoch = p.publish("small", json!(i)).await["epoch"].clone();
        }
        let mut c = s.client().await;
        // Everything after 3 is still held: recovered.
        let (j, _) = c
            .request(json!({"type":"join","room":"small","since":3,"epoch":epoch}))
            .await;
        assert_eq!(j["recovered"], true);
        let offs = common::offsets(&[
            c.expect("message").await,
            c.expect("message").await,
            c.expect("message").await,
        ]);
        assert_eq!(offs, vec![4, 5, 6]);
        let _ = c.expect("presence").await;

        // Offset 2 is gone: not recovered, and no messages replayed.
        let mut d = s.client().await;
        let (j, _) = d
            .request(json!({"type":"join","room":"small","since":1,"epoch":epoch}))
            .await;
        assert_eq!(j["recovered"], false);
        assert_eq!(j["offset"], 6);
        assert_eq!(d.expect("presence").await["action"], "join");
        s.barrier(&mut d, "small").await;

        // Another epoch: not recovered.
        let mut e = s.client().await;
        let (j, _) = e
            .request(json!({"type":"join","room":"small","since":5,"epoch":"not-it"}))
            .await;
        assert_eq!(j["recovered"], false);
        assert_eq!(j["epoch"], epoch);
        assert_eq!(e.expect("presence").await["action"], "join");
        s.barrier(&mut e, "small").await;

        // since beyond the top: not recovered.
        let mut f = s.client().await;
        let (j, _) = f
            .request(json!({"type":"join","room":"small","since":99,"epoch":epoch}))
            .await;
        assert_eq!(j["recovered"], false);
        s.stop().await;
    }
}

both_engines! {
    #[tokio::test]
    async fn recovery_is_complete_up_to_the_top(engine) {
        let s = Server::on(engine).await;
        let mut p = s.client().await;
        let mut epoch = Value::Null;
        for i in 1..=10 {
            epoch = p.publish("r", json!(i)).await["epoch"].clone();
        }
        let mut c = s.client().await;
        let (j, _) = c
            .request(json!({"type":"join","room":"r","since":10,"epoch":epoch}))
            .await;
        assert_eq!(j["recovered"], true);
        assert_eq!(j["offset"], 10);
        assert_eq!(c.expect("presence").await["action"], "join");
        s.barrier(&mut c, "r").await;
        // since 0: all ten, in order.
        let mut d = s.client().await;
        let (j, _) = d
            .request(json!({"type":"join","room":"r","since":0,"epoch":epoch}))
            .await;
        assert_eq!(j["recovered"], true);
        for i in 1..=10 {
            let m = d.expect("message").await;
            assert_eq!(m["offset"], i);
        }
        s.stop().await;
    }
}

both_engines! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_join_racing_a_rooms_first_publish_gets_that_messages_epoch(engine) {
        // A client that joined an empty room and later sends the epoch it
        // was told must find the room's messages under it: the epoch a
        // joiner is told is the one the first message carries, however the
        // join and that publish interleave.
        let s = Server::on(engine).await;
        let mut p = s.client().await;
        let mut c = s.client().await;
        for round in 0..25 {
            let room = format!("first-{round}");
            let (ack, (joined, _)) = tokio::join!(
                p.publish(&room, json!(round)),
                c.request(json!({"type":"join","room":room}))
            );
            assert_eq!(joined["type"], "joined", "{joined}");
            assert_eq!(joined["epoch"], ack["epoch"], "round {round}: {joined} {ack}");
            if joined["offset"] == 0 {
                let m = c.messages(&room, 1).await;
                assert_eq!(m[0]["epoch"], joined["epoch"], "round {round}");
            }
        }
        s.stop().await;
    }
}
