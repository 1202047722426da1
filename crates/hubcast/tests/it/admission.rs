//! One room check behind every way in (`crate::admission` on the server):
//! a room the token does not allow is refused with the same code and
//! message whether a WebSocket `join` asks, a token's `subs` asks at
//! connect, or an SSE stream's `rooms` does.
#![allow(clippy::unwrap_used)]

use serde_json::{Value, json};

use crate::common::{self, Client, Server};

const SECRET: &str = "test-secret-0123456789abcdef";

#[tokio::test]
async fn a_refused_room_reads_the_same_on_every_way_in() {
    let s = Server::start(|c| c.jwt_secret = Some(SECRET.into())).await;
    let exp = hubcast::unix_ms() / 1000 + 600;
    for room in ["secret", "@someone"] {
        let claims = json!({"sub": "sam", "exp": exp, "rooms": ["news.*"], "subs": [room]});
        let t = common::hs256(SECRET, &claims);
        // The token's `subs`, at connect: an `error` naming the room.
        let mut ws = Client::connect(&format!("{}?token={t}", s.ws_url())).await;
        let subs = ws.expect("error").await;
        assert_eq!(subs["room"], room, "{subs}");
        // A `join` frame.
        let (join, _) = ws.request(json!({"type": "join", "room": room})).await;
        // An SSE stream's `rooms` (its `subs` only after them).
        let plain = common::hs256(
            SECRET,
            &json!({"sub": "sam", "exp": exp, "rooms": ["news.*"]}),
        );
        let resp = reqwest::get(s.http(&format!("/sse?rooms={room}&token={plain}")))
            .await
            .unwrap();
        assert_eq!(resp.status(), 403);
        let sse: Value = resp.json().await.unwrap();
        let sse = &sse["error"];
        for refusal in [&join, sse] {
            assert_eq!(refusal["code"], "forbidden", "{refusal}");
        }
        assert_eq!(join["message"], sse["message"], "{room}");
        assert_eq!(
            subs["message"],
            format!("subs {room:?}: {}", join["message"].as_str().unwrap()),
        );
    }
}
