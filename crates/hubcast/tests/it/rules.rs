//! Room rules (`[[rooms]]`, PROTOCOL.md section 7) at every entry point:
//! WebSocket frames, the HTTP API, long polling and SSE, on both engines,
//! and a bad table stopping the start.
#![allow(clippy::unwrap_used)]

use crate::common;

use crate::sse::Sse;
use common::{Server, offsets, reply_offsets};
use hubcast::config::RoomTable;
use hubcast::rules::Publishers;
use serde_json::{Value, json};

/// A table for `pattern` with every other key at its default.
fn rule(pattern: &str) -> RoomTable {
    RoomTable::new(pattern)
}

/// `GET` of an API path: the status and the JSON body.
async fn get(s: &Server, path: &str) -> (u16, Value) {
    let r = reqwest::get(s.http(path)).await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap())
}

/// Publishes `n` messages into `room` through the API; returns their
/// offsets.
async fn publish_n(s: &Server, room: &str, n: u64) -> Vec<u64> {
    let mut got = Vec::new();
    for i in 1..=n {
        let ack = s.api_publish(room, json!(i)).await;
        got.push(ack["offset"].as_u64().unwrap());
    }
    got
}

both_engines! {
    #[tokio::test]
    async fn a_broadcast_only_room_takes_the_api_but_not_clients(engine) {
        let s = Server::start_on(engine, |c| {
            c.rooms = vec![RoomTable {
                publish: Publishers::Server,
                ..rule("news.**")
            }];
        })
        .await;
        let mut member = s.client().await;
        let mut other = s.client().await;
        member.join("news.eu").await;
        let reply = member
            .call(json!({"type":"publish","room":"news.eu","event":"e","data":1,"id":"p1"}))
            .await;
        assert_eq!(
            (&reply["type"], &reply["code"]),
            (&json!("error"), &json!("forbidden")),
            "{reply}"
        );
        // Not a member either: the rule, not membership, refuses it.
        let reply = other
            .call(json!({"type":"publish","room":"news.us","event":"e","data":1}))
            .await;
        assert_eq!(reply["code"], "forbidden", "{reply}");
        // Rooms the rule does not match, and direct messages, are as before.
        other.publish("news", json!(1)).await;
        let ack = other
            .call(json!({"type":"send","to":member.user(),"event":"e","data":"dm"}))
            .await;
        assert_eq!(ack["type"], "ack", "{ack}");
        let dm = member.expect("message").await;
        assert_eq!(dm["data"], "dm", "{dm}");
        // The API publishes, and members get it.
        let ack = s.api_publish("news.eu", json!("from the server")).await;
        assert_eq!(ack["offset"], 1, "the refused publishes took no offset: {ack}");
        let got = member.messages("news.eu", 1).await;
        assert_eq!(got[0]["data"], "from the server");
    }
}

both_engines! {
    #[tokio::test]
    async fn a_room_without_presence_lists_nobody_and_says_nothing(engine) {
        let s = Server::start_on(engine, |c| {
            c.rooms = vec![RoomTable {
                presence: false,
                ..rule("quiet.*")
            }];
        })
        .await;
        let mut a = s.client().await;
        let mut b = s.client().await;
        let joined = a.join_quiet("quiet.x").await;
        assert_eq!(joined["members"], json!([]), "{joined}");
        assert_eq!(joined["total"], 0, "{joined}");
        let joined = b.join_quiet("quiet.x").await;
        assert_eq!(joined["members"], json!([]), "{joined}");
        b.call(json!({"type":"status","status":"away"})).await;
        b.call(json!({"type":"leave","room":"quiet.x"})).await;
        // No presence event (a's own arrival, b's arrival, status, leave)
        // came before the marker.
        s.barrier(&mut a, "quiet.x").await;
        let reply = a.call(json!({"type":"presence","room":"quiet.x"})).await;
        assert_eq!(
            (&reply["type"], &reply["code"]),
            (&json!("error"), &json!("forbidden")),
            "{reply}"
        );
        let (status, body) = get(&s, "/api/rooms/quiet.x/presence").await;
        assert_eq!(status, 403, "{body}");
        assert_eq!(body["error"]["code"], "forbidden", "{body}");
        // Another room keeps presence.
        let joined = a.join("loud").await;
        assert_eq!(joined["total"], 1, "{joined}");
        let (status, body) = get(&s, "/api/rooms/loud/presence").await;
        assert_eq!((status, &body["total"]), (200, &json!(1)), "{body}");
    }
}

both_engines! {
    #[tokio::test]
    async fn a_rule_sizes_its_rooms_history_and_others_keep_the_global_size(engine) {
        let s = Server::start_on(engine, |c| {
            c.rooms = vec![RoomTable {
                history_size: Some(2),
                ..rule("small.*")
            }];
        })
        .await;
        assert_eq!(publish_n(&s, "small.x", 5).await, [1, 2, 3, 4, 5]);
        publish_n(&s, "big", 5).await;
        let (_, page) = get(&s, "/api/rooms/small.x/history").await;
        assert_eq!(reply_offsets(&page), [4, 5], "{page}");
        assert_eq!(page["complete"], false, "{page}");
        let (_, page) = get(&s, "/api/rooms/big/history").await;
        assert_eq!(reply_offsets(&page), [1, 2, 3, 4, 5], "{page}");
        // The history frame and recovery read the same.
        let mut c = s.client().await;
        let page = c.call(json!({"type":"history","room":"small.x"})).await;
        assert_eq!(reply_offsets(&page), [4, 5], "{page}");
        // (`request`: the presence event of its own arrival comes after.)
        let (joined, _) = c
            .request(json!({"type":"join","room":"small.x","since":1}))
            .await;
        assert_eq!(joined["recovered"], false, "{joined}");
        let (joined, _) = c
            .request(json!({"type":"join","room":"small.y","since":0}))
            .await;
        assert_eq!(joined["recovered"], true, "an empty room: {joined}");
        publish_n(&s, "small.y", 3).await;
        let mut d = s.client().await;
        let joined = d
            .call(json!({"type":"join","room":"small.y","since":1}))
            .await;
        assert_eq!(joined["recovered"], true, "{joined}");
        assert_eq!(offsets(&d.messages("small.y", 2).await), [2, 3]);
        // A long poll from a trimmed position gets what the rule kept.
        let (_, poll) = get(&s, "/api/poll?room=small.x&since=1&timeout=0").await;
        assert_eq!(reply_offsets(&poll), [4, 5], "{poll}");
        // SSE resumes only from what the rule kept.
        let mut sse = Sse::open(&s, "rooms=small.x&since=small.x:1", None).await;
        let (_, joined) = sse.next().await;
        assert_eq!(joined["recovered"], false, "{joined}");
        let mut sse = Sse::open(&s, "rooms=small.x&since=small.x:3", None).await;
        let (_, joined) = sse.next().await;
        assert_eq!(joined["recovered"], true, "{joined}");
        assert_eq!(sse.message().await.0, "small.x:4");
        assert_eq!(sse.message().await.0, "small.x:5");
    }
}

both_engines! {
    #[tokio::test]
    async fn a_room_without_history_still_numbers_and_deduplicates(engine) {
        let s = Server::start_on(engine, |c| {
            c.rooms = vec![RoomTable {
                history_size: Some(0),
                ..rule("live")
            }];
        })
        .await;
        assert_eq!(publish_n(&s, "live", 3).await, [1, 2, 3]);
        let (_, page) = get(&s, "/api/rooms/live/history").await;
        assert_eq!(reply_offsets(&page), Vec::<u64>::new(), "{page}");
        let mut c = s.client().await;
        let joined = c.call(json!({"type":"join","room":"live","since":2})).await;
        assert_eq!(
            (&joined["recovered"], &joined["offset"]),
            (&json!(false), &json!(3)),
            "{joined}"
        );
        // Nothing missed: nothing to replay, so recovered.
        let mut d = s.client().await;
        let joined = d.call(json!({"type":"join","room":"live","since":3})).await;
        assert_eq!(joined["recovered"], true, "{joined}");
        // msgIds are kept for history_ttl whatever the size.
        let body = json!({"room":"live","event":"e","data":1,"msgId":"m-1"});
        let first = s.api_post("/api/publish", &body).await;
        let again = s.api_post("/api/publish", &body).await;
        assert_eq!(first["offset"], 4, "{first}");
        assert_eq!(
            (&again["offset"], &again["duplicate"]),
            (&json!(4), &json!(true)),
            "{again}"
        );
    }
}

#[tokio::test]
async fn the_first_matching_table_wins() {
    let s = Server::start(|c| {
        c.rooms = vec![
            rule("team.ops"),
            RoomTable {
                publish: Publishers::Server,
                ..rule("team.*")
            },
            RoomTable {
                presence: false,
                ..rule("team.ops")
            },
        ];
    })
    .await;
    let mut c = s.client().await;
    let joined = c.join("team.ops").await;
    assert_eq!(
        joined["total"], 1,
        "the first table keeps presence: {joined}"
    );
    c.publish("team.ops", json!(1)).await;
    let reply = c
        .call(json!({"type":"publish","room":"team.dev","event":"e","data":1}))
        .await;
    assert_eq!(reply["code"], "forbidden", "{reply}");
}

#[test]
fn a_bad_table_stops_the_start_naming_its_key() {
    use crate::settings::{PASSED, serve};
    let first = "[[rooms]]\nmatch = \"a.*\"\n\n";
    for (file, says) in [
        (
            format!("{first}[[rooms]]\nmatch = \"b\"\npublish = \"hook\"\n"),
            "rooms[2].publish: publish = \"hook\" needs backend hooks: set url and secret in [hooks]",
        ),
        (
            format!("{first}[[rooms]]\nmatch = \"b\"\njoin = \"hook\"\n"),
            "rooms[2].join",
        ),
        (
            format!("{first}[[rooms]]\nmatch = \"b\"\nhistroy_size = 3\n"),
            "rooms[2].histroy_size",
        ),
        (
            format!("{first}[[rooms]]\nmatch = \"b..c\"\n"),
            "rooms[2].match",
        ),
        (
            format!("{first}[[rooms]]\nmatch = \"b\"\npresence = \"no\"\n"),
            "rooms[2].presence",
        ),
        (
            format!(
                "{first}[[rooms]]\nmatch = \"b.**\"\npublish = \"server\"\nhistory_size = 0\npresence = false\n"
            ),
            PASSED,
        ),
    ] {
        let err = serve(Some(&file), &[], &[]);
        assert!(err.contains(says), "{file}: expected {says:?} in\n{err}");
    }
}
