//! PROTOCOL.md sections 1 and 2 over real sockets: every client frame and
//! its reply, with the exact field names.
#![allow(clippy::unwrap_used)]

use crate::common;

#[allow(unused_imports)]
use common::Engine;
use common::{Client, Server};
use serde_json::{Value, json};

both_engines! {
    #[tokio::test]
    async fn welcome_has_every_field(engine) {
        let s = Server::start_on(engine, |c| c.heartbeat = 7).await;
        let c = s.named("Ada").await;
        let w = &c.welcome;
        assert_eq!(w["protocol"], 1);
        let conn_id = w["connId"].as_str().unwrap();
        assert!(conn_id.starts_with("c-"), "{w}");
        assert_eq!(w["user"], format!("anon-{conn_id}"));
        assert_eq!(w["name"], "Ada");
        assert_eq!(w["node"], "test-node");
        assert_eq!(w["heartbeat"], 7);
        s.stop().await;
    }
}

both_engines! {
    #[tokio::test]
    async fn subprotocol_is_selected_when_offered(engine) {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let s = Server::on(engine).await;
        let mut req = s.ws_url().into_client_request().unwrap();
        req.headers_mut()
            .insert("Sec-WebSocket-Protocol", "foo, hubcast.v1".parse().unwrap());
        let (_ws, resp) = tokio_tungstenite::connect_async(req).await.unwrap();
        assert_eq!(resp.headers()["sec-websocket-protocol"], "hubcast.v1");
        // Only unknown subprotocols: still accepted, without one.
        let mut req = s.ws_url().into_client_request().unwrap();
        req.headers_mut()
            .insert("Sec-WebSocket-Protocol", "foo".parse().unwrap());
        let res = tokio_tungstenite::connect_async(req).await;
        // tungstenite insists on a selected protocol when it offered some, so a
        // raw check of the server's answer is what matters here.
        if let Ok((_, resp)) = res {
            assert!(resp.headers().get("sec-websocket-protocol").is_none());
        }
        s.stop().await;
    }
}

both_engines! {
    #[tokio::test]
    async fn join_leave_and_members(engine) {
        let s = Server::on(engine).await;
        let mut a = s.named("Ada").await;
        let mut b = s.named("Bob").await;
        let j = a.join_quiet("lobby").await;
        assert_eq!(j["room"], "lobby");
        assert_eq!(j["offset"], 0);
        assert!(j["epoch"].is_string());
        assert!(j.get("recovered").is_none(), "no since, no recovered: {j}");
        assert_eq!(
            j["members"],
            json!([{"user": a.user(), "name": "Ada", "status": "online", "connections": 1}])
        );
        // a sees its own presence join event right after joined.
        let ev = a.expect("presence").await;
        assert_eq!(ev["action"], "join");
        assert_eq!(ev["user"], a.user());

        let j = b.join("lobby").await;
        let members = j["members"].as_array().unwrap();
        assert_eq!(members.len(), 2, "{j}");
        let ev = a.expect("presence").await;
        assert_eq!(
            ev,
            json!({"type":"presence","room":"lobby","action":"join","user":b.user(),"name":"Bob","status":"online"})
        );

        let left = b.call(json!({"type":"leave","room":"lobby"})).await;
        assert_eq!(left["type"], "left");
        assert_eq!(left["room"], "lobby");
        let ev = a.expect("presence").await;
        assert_eq!(ev["action"], "leave");
        assert_eq!(ev["user"], b.user());
        // After leaving, b receives nothing from the room.
        a.publish("lobby", json!(1)).await;
        s.barrier_personal(&mut b).await;
        s.stop().await;
    }
}

both_engines! {
    #[tokio::test]
    async fn publish_ack_envelope_and_echo(engine) {
        let s = Server::on(engine).await;
        let mut a = s.named("Ada").await;
        let mut b = s.client().await;
        a.join("r").await;
        b.join("r").await;
        a.expect("presence").await;

        let ack = a
            .call(json!({"type":"publish","room":"r","event":"chat.message","data":{"text":"hi"},"msgId":"m-1"}))
            .await;
        assert_eq!(ack["type"], "ack");
        assert_eq!(ack["msgId"], "m-1");
        assert_eq!(ack["room"], "r");
        assert_eq!(ack["offset"], 1);
        assert_eq!(ack["duplicate"], false);
        let m = b.expect("message").await;
        assert_eq!(m["room"], "r");
        assert_eq!(m["offset"], 1);
        assert_eq!(m["epoch"], ack["epoch"]);
        assert_eq!(m["msgId"], "m-1");
        assert_eq!(m["eventType"], "chat.message");
        assert_eq!(m["source"], a.user());
        assert_eq!(m["data"], json!({"text":"hi"}));
        let ts = m["timestamp"].as_i64().unwrap();
        assert!(
            (hubcast::unix_ms() - ts).abs() < 60_000,
            "timestamp is Unix ms: {ts}"
        );
        // echo false (default): the publisher does not get its own message
        // (a marker through its personal room keeps r's offsets).
        s.barrier_personal(&mut a).await;

        // echo true: it does (before or after the ack: the protocol does not
        // order the two); msgId generated as a UUID.
        let (ack, mut before) = a
            .request(json!({"type":"publish","room":"r","event":"e","data":null,"echo":true}))
            .await;
        if before.is_empty() {
            before.push(a.expect("message").await);
        }
        assert_eq!(before.len(), 1, "{before:?}");
        assert_eq!(before[0]["offset"], 2);
        assert_eq!(before[0]["msgId"], ack["msgId"]);
        assert!(uuid::Uuid::parse_str(ack["msgId"].as_str().unwrap()).is_ok());
        assert_eq!(b.expect("message").await["data"], Value::Null);

        // Publishing to a room one has not joined is allowed.
        let mut c = s.client().await;
        let ack = c.publish("r", json!("from outside")).await;
        assert_eq!(ack["offset"], 3);
        assert_eq!(b.expect("message").await["data"], "from outside");
        s.stop().await;
    }
}

both_engines! {
    #[tokio::test]
    async fn idempotent_publish(engine) {
        let s = Server::on(engine).await;
        let mut a = s.client().await;
        let mut b = s.client().await;
        b.join("r").await;
        let frame = json!({"type":"publish","room":"r","event":"e","data":1,"msgId":"same"});
        let first = a.call(frame.clone()).await;
        let again = a.call(frame.clone()).await;
        assert_eq!(first["duplicate"], false);
        assert_eq!(again["duplicate"], true);
        assert_eq!(again["offset"], first["offset"]);
        // Same msgId in another room is a different message.
        let other = a
            .call(json!({"type":"publish","room":"r2","event":"e","data":1,"msgId":"same"}))
            .await;
        assert_eq!(other["duplicate"], false);
        assert_eq!(b.expect("message").await["msgId"], "same");
        s.barrier(&mut b, "r").await;
        s.stop().await;
    }
}

both_engines! {
    #[tokio::test]
    async fn send_reaches_every_connection_of_the_user_only(engine) {
        let s = Server::on(engine).await;
        let mut a = s.client().await;
        let mut b = s.client().await;
        let bob = b.user();
        let ack = a
            .call(json!({"type":"send","to":bob,"event":"dm","data":{"t":"psst"}}))
            .await;
        assert_eq!(ack["type"], "ack");
        assert_eq!(ack["room"], format!("@{bob}"));
        assert_eq!(ack["offset"], 1);
        let m = b.expect("message").await;
        assert_eq!(m["room"], format!("@{bob}"));
        assert_eq!(m["eventType"], "dm");
        assert_eq!(m["source"], a.user());
        s.barrier_personal(&mut a).await;
        s.stop().await;
    }
}

both_engines! {
    #[tokio::test]
    async fn personal_room_belongs_to_its_user(engine) {
        let s = Server::on(engine).await;
        let mut a = s.client().await;
        let b = s.client().await;
        let room = format!("@{}", b.user());
        for frame in [
            json!({"type":"join","room":room}),
            json!({"type":"publish","room":room,"event":"e","data":1}),
            json!({"type":"history","room":room}),
            json!({"type":"presence","room":room}),
        ] {
            let e = a.call(frame.clone()).await;
            assert_eq!(e["type"], "error", "{frame}: {e}");
            assert_eq!(e["code"], "forbidden", "{frame}: {e}");
        }
        // Its owner may join it explicitly; not counted as a member anywhere.
        let mut b = b;
        let own = format!("@{}", b.user());
        let j = b.join(&own).await;
        assert_eq!(j["members"], json!([]));
        s.barrier_personal(&mut b).await;
        s.stop().await;
    }
}

both_engines! {
    #[tokio::test]
    async fn rejoining_the_personal_room_never_repeats_a_message(engine) {
        let s = Server::on(engine).await;
        let mut a = s.client().await;
        let mut b = s.client().await;
        let bob = b.user();
        for i in 1..=3 {
            a.call(json!({"type":"send","to":bob,"event":"dm","data":i}))
                .await;
            assert_eq!(b.expect("message").await["offset"], i);
        }
        let j = b
            .call(json!({"type":"join","room":format!("@{bob}"),"since":0}))
            .await;
        assert_eq!(j["type"], "joined");
        assert_eq!(j["recovered"], true);
        assert_eq!(j["offset"], 3);
        // The join queues its reply and what it replays together: the reply
        // to the next request comes after any replay (a marker in @bob
        // would change the offsets below).
        assert_eq!(b.call(json!({"type":"ping"})).await["type"], "pong");
        a.call(json!({"type":"send","to":bob,"event":"dm","data":4}))
            .await;
        assert_eq!(b.expect("message").await["offset"], 4);
        // The next message of @bob is the next one sent: 4 came once.
        a.call(json!({"type":"send","to":bob,"event":"dm","data":5}))
            .await;
        assert_eq!(b.expect("message").await["offset"], 5);
        s.stop().await;
    }
}

both_engines! {
    #[tokio::test]
    async fn presence_query_and_status_events(engine) {
        let s = Server::on(engine).await;
        let mut a = s.named("Ada").await;
        let mut b = s.named("Bob").await;
        a.join("r").await;
        b.join("r").await;
        a.expect("presence").await;

        // The status event reaches b's own connection too (before or after
        // its ok, depending on the engine).
        let (ok, mut before) = b.request(json!({"type":"status","status":"away"})).await;
        assert_eq!(ok, json!({"type":"ok","id":ok["id"]}));
        if before.is_empty() {
            before.push(b.expect("presence").await);
        }
        let ev_a = a.expect("presence").await;
        for ev in [&ev_a, &before[0]] {
            assert_eq!(ev["action"], "status");
            assert_eq!(ev["status"], "away");
            assert_eq!(ev["name"], "Bob");
        }
        let p = a.call(json!({"type":"presence","room":"r"})).await;
        assert_eq!(p["type"], "presence");
        assert_eq!(p["room"], "r");
        let members = p["members"].as_array().unwrap();
        let bob = members.iter().find(|m| m["name"] == "Bob").unwrap();
        assert_eq!(bob["status"], "away");
        assert_eq!(bob["connections"], 1);
        // A dropped connection leaves presence.
        b.close().await;
        let ev = a.expect("presence").await;
        assert_eq!(ev["action"], "leave");
        assert_eq!(ev["name"], "Bob");
        s.stop().await;
    }
}

both_engines! {
    #[tokio::test]
    async fn history_frames(engine) {
        let s = Server::start_on(engine, |c| c.history_size = 5).await;
        let mut a = s.client().await;
        for i in 1..=8 {
            a.publish("h", json!(i)).await;
        }
        let h = a.call(json!({"type":"history","room":"h"})).await;
        assert_eq!(h["type"], "history");
        assert_eq!(h["room"], "h");
        assert!(h["epoch"].is_string());
        let offs = common::reply_offsets(&h);
        assert_eq!(offs, vec![4, 5, 6, 7, 8]);
        assert_eq!(h["complete"], false, "1..3 were trimmed");
        assert_eq!(h["messages"][0]["type"], "message");
        assert_eq!(h["messages"][0]["data"], 4);

        let h = a
            .call(json!({"type":"history","room":"h","since":5,"limit":2}))
            .await;
        let offs = common::reply_offsets(&h);
        assert_eq!(offs, vec![6, 7]);
        assert_eq!(h["complete"], true);

        let h = a.call(json!({"type":"history","room":"h","since":1})).await;
        assert_eq!(h["complete"], false);
        let h = a.call(json!({"type":"history","room":"empty"})).await;
        assert_eq!(h["messages"], json!([]));
        assert_eq!(h["complete"], true);
        s.stop().await;
    }
}

both_engines! {
    #[tokio::test]
    async fn ping_pong_echoes_the_id(engine) {
        let s = Server::on(engine).await;
        let mut a = s.client().await;
        a.send(json!({"type":"ping","id":"abc"})).await;
        let p = a.expect("pong").await;
        assert_eq!(p["id"], "abc");
        assert!(p["timestamp"].is_i64());
        a.send(json!({"type":"ping"})).await;
        let p = a.expect("pong").await;
        assert!(p.get("id").is_none());
        s.stop().await;
    }
}

both_engines! {
    #[tokio::test]
    async fn health_and_ready(engine) {
        let s = Server::on(engine).await;
        let r = reqwest::get(s.http("/healthz")).await.unwrap();
        assert_eq!(r.status(), 200);
        let r = reqwest::get(s.http("/readyz")).await.unwrap();
        assert_eq!(r.status(), 200);
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["status"], "ready");
        let r = reqwest::get(s.http("/nope")).await.unwrap();
        assert_eq!(r.status(), 404);
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["error"]["code"], "not_found");
        s.stop().await;
    }
}

both_engines! {
    #[tokio::test]
    async fn many_clients_one_room(engine) {
        let s = Server::on(engine).await;
        let mut subs = Vec::new();
        for _ in 0..20 {
            let mut c = s.client().await;
            c.join("crowd").await;
            subs.push(c);
        }
        let mut p = s.client().await;
        for i in 0..50 {
            p.publish("crowd", json!(i)).await;
        }
        for c in &mut subs {
            let mut next = 1;
            while next <= 50 {
                let v = c.recv().await;
                if v["type"] == "message" {
                    assert_eq!(v["offset"], next);
                    next += 1;
                }
            }
        }
        s.stop().await;
    }
}

both_engines! {
    #[tokio::test]
    async fn client_frames_checked_by_a_real_client(engine) {
        // A smoke test that raw text reaches the parser unchanged.
        let s = Server::on(engine).await;
        let mut c = Client::connect(&s.ws_url()).await;
        c.send_text(r#"{"type":"ping","id":1,"unknown":{"deep":[1,2,3]}}"#)
            .await;
        assert_eq!(c.expect("pong").await["id"], 1);
        s.stop().await;
    }
}

both_engines! {
    #[tokio::test]
    async fn replies_keep_frame_order_while_publishes_run_together(engine) {
        use futures_util::SinkExt;
        use tokio_tungstenite::tungstenite::Message;
        let s = Server::on(engine).await;
        let mut c = s.client().await;
        for i in 0..60 {
            let frame = if i % 20 == 19 {
                json!({"type":"ping","id":i})
            } else if i == 30 {
                json!({"type":"publish","room":"@someone-else","event":"e","data":i,"id":i})
            } else {
                json!({"type":"publish","room":"pipe","event":"e","data":i,"id":i})
            };
            c.ws.feed(Message::text(frame.to_string())).await.unwrap();
        }
        c.ws.flush().await.unwrap();
        let mut last_offset = 0;
        for i in 0..60 {
            let r = c.recv().await;
            assert_eq!(r["id"], i, "replies in frame order: {r}");
            if i % 20 == 19 {
                assert_eq!(r["type"], "pong");
            } else if i == 30 {
                assert_eq!(r["code"], "forbidden");
            } else {
                assert_eq!(r["type"], "ack");
                let off = r["offset"].as_u64().unwrap();
                assert!(off > last_offset, "one connection's publishes keep their order");
                last_offset = off;
            }
        }
        s.stop().await;
    }
}
