//! The Rust client (crates/hubcast-client) against a real server: acked
//! publish and direct messages; messages missed during a connection loss
//! arrive once, in order; a publish whose ack was lost is retried and
//! delivered once; a node shutting down (1001) and the client moving to
//! another node of the same Redis, recovering what was published meanwhile;
//! the offline queue's bound; 4001 and a new token.
#![allow(clippy::unwrap_used)]

use crate::common;

use std::time::Duration;

use common::{Engine, Proxy, Server};
use hubcast_client::{Client, Error, Event, Options, Publish, State};
use serde_json::{Value, json};
use tokio::sync::mpsc::UnboundedReceiver;

const WAIT: Duration = Duration::from_secs(10);

fn fast(mut o: Options) -> Options {
    o.min_delay = Duration::from_millis(20);
    o.max_delay = Duration::from_millis(200);
    o.connect_timeout = Duration::from_secs(2);
    o
}

/// The next `n` messages (other events skipped), within 10 s.
async fn messages(
    events: &mut UnboundedReceiver<Event>,
    n: usize,
) -> Vec<hubcast_client::Envelope> {
    let mut got = Vec::new();
    tokio::time::timeout(WAIT, async {
        while got.len() < n {
            if let Some(Event::Message(m)) = events.recv().await {
                got.push(m);
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("only {} of {n} messages: {got:?}", got.len()));
    got
}

/// No message before a marker `s` publishes into `room` after (a barrier:
/// the room's messages keep their order): the next message is the marker.
async fn no_message(events: &mut UnboundedReceiver<Event>, s: &Server, room: &str) {
    let marker = json!(format!("barrier-{}", uuid::Uuid::new_v4().simple()));
    assert!(s.api_publish(room, marker.clone()).await["offset"].is_u64());
    let m = messages(events, 1).await;
    assert_eq!(m[0].data, marker, "unexpected message {:?}", m[0]);
}

#[tokio::test]
async fn publish_ack_and_direct_messages() {
    let s = Server::default().await;
    let (ada, _ada_ev) = Client::connect(&s.ws_url(), fast(Options::named("Ada")));
    let (bob, mut bob_ev) = Client::connect(&s.ws_url(), fast(Options::named("Bob")));
    ada.join("lobby").await.unwrap();
    let joined = bob.join("lobby").await.unwrap();
    assert_eq!(joined.room, "lobby");
    let ack = ada
        .publish("lobby", "chat.message", json!({"text": "hi"}))
        .await
        .unwrap();
    assert!(!ack.duplicate);
    let got = messages(&mut bob_ev, 1).await;
    assert_eq!(got[0].data, json!({"text": "hi"}));
    assert_eq!(got[0].msg_id, ack.msg_id);
    assert_eq!(got[0].source, ada.user().unwrap());

    let bob_user = bob.user().unwrap();
    let ack = ada.send(&bob_user, "dm", json!("psst")).await.unwrap();
    assert_eq!(ack.room, format!("@{bob_user}"));
    let dm = messages(&mut bob_ev, 1).await;
    assert_eq!(dm[0].room, format!("@{bob_user}"));

    // The server's errors come back as errors; the client stays usable.
    let e = ada
        .publish("lobby", "bad event!", json!(1))
        .await
        .unwrap_err();
    assert!(
        matches!(e, Error::Server { ref code, .. } if code == "bad_request"),
        "{e:?}"
    );
    let e = ada.join("@someone-else").await.unwrap_err();
    assert!(
        matches!(e, Error::Server { ref code, .. } if code == "forbidden"),
        "{e:?}"
    );
    let pong = ada.request(json!({"type": "ping"})).await.unwrap();
    assert_eq!(pong["type"], "pong");
    ada.close().await;
    bob.close().await;
}

#[tokio::test]
async fn messages_missed_during_a_connection_loss_arrive_once_in_order() {
    let s = Server::default().await;
    let proxy = Proxy::start(s.addr).await;
    let (reader, mut ev) = Client::connect(&proxy.ws_url(), fast(Options::named("Reader")));
    let (writer, _w) = Client::connect(&s.ws_url(), fast(Options::named("Writer")));
    reader.join("news").await.unwrap();
    writer.publish("news", "n", json!(0)).await.unwrap();
    messages(&mut ev, 1).await;

    for round in 0..3 {
        proxy.refuse(true);
        proxy.cut();
        reader.wait_for(State::Reconnecting, WAIT).await.unwrap();
        for i in 1..=10 {
            writer
                .publish("news", "n", json!(round * 10 + i))
                .await
                .unwrap();
        }
        proxy.refuse(false);
        let got = messages(&mut ev, 10).await;
        let want: Vec<Value> = (1..=10).map(|i| json!(round * 10 + i)).collect();
        assert_eq!(got.iter().map(|m| m.data.clone()).collect::<Vec<_>>(), want);
        no_message(&mut ev, &s, "news").await;
        assert_eq!(reader.state(), State::Connected);
    }
    reader.close().await;
    writer.close().await;
}

#[tokio::test]
async fn a_publish_whose_ack_was_lost_is_retried_and_delivered_once() {
    let s = Server::default().await;
    let proxy = Proxy::start(s.addr).await;
    let (publisher, _p) = Client::connect(&proxy.ws_url(), fast(Options::named("Pub")));
    let (sub, mut ev) = Client::connect(&s.ws_url(), fast(Options::named("Sub")));
    sub.join("once").await.unwrap();
    publisher.wait_for(State::Connected, WAIT).await.unwrap();

    proxy.blackhole_down(true);
    let p = tokio::spawn(async move {
        let ack = publisher.publish("once", "e", json!("exactly once")).await;
        (publisher, ack)
    });
    let got = messages(&mut ev, 1).await;
    proxy.blackhole_down(false);
    proxy.cut();
    let (publisher, ack) = p.await.unwrap();
    let ack = ack.unwrap();
    assert!(ack.duplicate, "the retry was acked as a duplicate");
    assert_eq!(ack.msg_id, got[0].msg_id);
    no_message(&mut ev, &s, "once").await;
    publisher.close().await;
    sub.close().await;
}

#[tokio::test]
async fn a_node_shutting_down_sends_the_client_to_another_that_recovers_the_gap() {
    // Two nodes of one Redis; the client reaches them through a proxy (a
    // load balancer). Node A shuts down (1001); the client reconnects, to
    // node B, and gets what was published meanwhile: once, in order.
    // B owns the key prefix (cleaned up when B goes); A shares it.
    let b = Server::on(Engine::Redis).await;
    let mut config = hubcast::config::Config::default();
    config.broker = hubcast::config::BrokerKind::Redis;
    config.redis_url = common::redis_url();
    config.redis_prefix = b.redis_prefix().unwrap();
    config.node_id = "node-a".into();
    let a = Server::with_config(config, None).await;
    let proxy = Proxy::start(a.addr).await;
    let (client, mut ev) = Client::connect(&proxy.ws_url(), fast(Options::named("Ada")));
    client.join("orders").await.unwrap();
    let (writer, _w) = Client::connect(&b.ws_url(), fast(Options::named("Writer")));
    writer.publish("orders", "o", json!(1)).await.unwrap();
    messages(&mut ev, 1).await;

    proxy.refuse(true);
    proxy.retarget(b.addr);
    a.stop().await;
    let mut closed_with = None;
    while closed_with.is_none() {
        match tokio::time::timeout(WAIT, ev.recv()).await.unwrap() {
            Some(Event::State {
                state: State::Reconnecting,
                code,
                ..
            }) => closed_with = Some(code),
            Some(_) => {}
            None => panic!("events ended"),
        }
    }
    assert_eq!(closed_with.unwrap(), Some(1001));
    for i in 2..=6 {
        writer.publish("orders", "o", json!(i)).await.unwrap();
    }
    proxy.refuse(false);
    let got = messages(&mut ev, 5).await;
    assert_eq!(
        got.iter().map(|m| m.data.clone()).collect::<Vec<_>>(),
        (2..=6).map(|i| json!(i)).collect::<Vec<_>>()
    );
    client.close().await;
    writer.close().await;
}

#[tokio::test]
async fn publishes_wait_in_a_bounded_queue_while_disconnected() {
    let s = Server::default().await;
    let proxy = Proxy::start(s.addr).await;
    let mut o = fast(Options::named("Ada"));
    o.max_queue = 2;
    let (c, _ev) = Client::connect(&proxy.ws_url(), o);
    c.wait_for(State::Connected, WAIT).await.unwrap();
    proxy.refuse(true);
    proxy.cut();
    c.wait_for(State::Reconnecting, WAIT).await.unwrap();
    let c = std::sync::Arc::new(c);
    let (c1, c2) = (c.clone(), c.clone());
    let a = tokio::spawn(async move { c1.publish("r", "e", json!(1)).await });
    let b = tokio::spawn(async move { c2.publish("r", "e", json!(2)).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        c.publish("r", "e", json!(3)).await.unwrap_err(),
        Error::QueueFull(2)
    );
    let short = Publish {
        timeout: Some(Duration::from_millis(1)),
        ..Publish::default()
    };
    proxy.refuse(false);
    let (a, b) = (a.await.unwrap().unwrap(), b.await.unwrap().unwrap());
    assert_eq!((a.offset, b.offset), (1, 2));
    // A publish that cannot be acked in time fails with a timeout.
    proxy.blackhole_down(true);
    let e = c.publish_with("r", "e", json!(4), short).await.unwrap_err();
    assert!(matches!(e, Error::Timeout(_)), "{e:?}");
}

#[tokio::test]
async fn after_4001_it_waits_for_a_new_token() {
    let secret = "0123456789abcdef0123456789abcdef";
    let s = Server::start(|c| {
        c.jwt_secret = Some(secret.into());
    })
    .await;
    let now = hubcast::unix_ms() / 1000;
    let token = |exp: i64| common::hs256(secret, &json!({"sub": "ada", "exp": exp}));
    let (c, _ev) = Client::connect(&s.ws_url(), fast(Options::with_token(&token(now + 1))));
    c.wait_for(State::Connected, WAIT).await.unwrap();
    assert_eq!(c.user().as_deref(), Some("ada"));
    c.wait_for(State::Closed, WAIT).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        c.state(),
        State::Closed,
        "no reconnect with the expired token"
    );
    c.set_token(&token(now + 600));
    c.wait_for(State::Connected, WAIT).await.unwrap();
    c.close().await;
}

#[tokio::test]
async fn a_room_of_the_tokens_subs_appears_without_join_and_recovers_after_a_reconnect() {
    let secret = "0123456789abcdef0123456789abcdef";
    let s = Server::start(|c| c.jwt_secret = Some(secret.into())).await;
    let proxy = Proxy::start(s.addr).await;
    let exp = hubcast::unix_ms() as u64 / 1000 + 600;
    let token = common::hs256(
        secret,
        &json!({"sub": "sub-reader", "exp": exp, "subs": ["feed"]}),
    );
    let (reader, mut ev) = Client::connect(&proxy.ws_url(), fast(Options::with_token(&token)));
    // The room is reported joined, with no join() called.
    let joined = tokio::time::timeout(WAIT, async {
        loop {
            if let Some(Event::Joined(j)) = ev.recv().await {
                break j;
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(joined.room, "feed");
    s.api_publish("feed", json!(0)).await;
    assert_eq!(messages(&mut ev, 1).await[0].data, json!(0));

    // Messages published while it is away arrive once, in order.
    proxy.refuse(true);
    proxy.cut();
    reader.wait_for(State::Reconnecting, WAIT).await.unwrap();
    for i in 1..=5 {
        s.api_publish("feed", json!(i)).await;
    }
    proxy.refuse(false);
    let got = messages(&mut ev, 5).await;
    let want: Vec<Value> = (1..=5).map(|i| json!(i)).collect();
    assert_eq!(got.iter().map(|m| m.data.clone()).collect::<Vec<_>>(), want);
    no_message(&mut ev, &s, "feed").await;
    reader.close().await;
}

#[tokio::test]
async fn a_server_side_subscribe_and_unsubscribe_add_and_remove_the_room() {
    let secret = "0123456789abcdef0123456789abcdef";
    let s = Server::start(|c| c.jwt_secret = Some(secret.into())).await;
    let proxy = Proxy::start(s.addr).await;
    let exp = hubcast::unix_ms() as u64 / 1000 + 600;
    let token = common::hs256(secret, &json!({"sub": "pushed-user", "exp": exp}));
    let (c, mut ev) = Client::connect(&proxy.ws_url(), fast(Options::with_token(&token)));
    c.wait_for(State::Connected, WAIT).await.unwrap();
    let body = json!({"user": "pushed-user", "room": "pushed"});
    assert_eq!(s.api_post("/api/subscribe", &body).await["connections"], 1);
    let joined = tokio::time::timeout(WAIT, async {
        loop {
            if let Some(Event::Joined(j)) = ev.recv().await {
                break j;
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(joined.room, "pushed");
    s.api_publish("pushed", json!(1)).await;
    assert_eq!(messages(&mut ev, 1).await[0].data, json!(1));

    s.api_post("/api/unsubscribe", &body).await;
    let left = tokio::time::timeout(WAIT, async {
        loop {
            if let Some(Event::Left { room }) = ev.recv().await {
                break room;
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(left, "pushed");
    // Not rejoined after a reconnect: a message of the room published then
    // does not come before a direct message sent after it.
    proxy.refuse(true);
    proxy.cut();
    c.wait_for(State::Reconnecting, WAIT).await.unwrap();
    proxy.refuse(false);
    c.wait_for(State::Connected, WAIT).await.unwrap();
    s.api_publish("pushed", json!(2)).await;
    let marker = json!("direct-after");
    s.api_post(
        "/api/send",
        &json!({"to": "pushed-user", "event": "e", "data": marker}),
    )
    .await;
    assert_eq!(messages(&mut ev, 1).await[0].data, marker);
    c.close().await;
}
