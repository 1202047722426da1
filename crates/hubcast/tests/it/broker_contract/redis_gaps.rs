use super::*;

fn raw() -> ::redis::Connection {
    ::redis::Client::open(common::redis_url())
        .unwrap()
        .get_connection()
        .unwrap()
}

/// A stream entry as XRANGE returns it: id and field/value pairs.
type StreamEntry = (String, Vec<(String, Vec<u8>)>);

/// Appends `n` entries to the room's stream after its top, copying the
/// fields of its entry 1, without publishing them on the channel.
fn add_unpublished(prefix: &str, room: &str, n: u64) {
    let mut c = raw();
    let meta = format!("{prefix}:{{{room}}}:m");
    let stream = format!("{prefix}:{{{room}}}:s");
    let entries: Vec<StreamEntry> = ::redis::cmd("XRANGE")
        .arg(&stream)
        .arg("1-0")
        .arg("1-0")
        .query::<::redis::Value>(&mut c)
        .map(|v| ::redis::from_redis_value(v).unwrap())
        .unwrap();
    let fields = entries[0].1.clone();
    for _ in 0..n {
        let offset: u64 = ::redis::cmd("HINCRBY")
            .arg(&meta)
            .arg("o")
            .arg(1)
            .query(&mut c)
            .unwrap();
        let mut cmd = ::redis::cmd("XADD");
        cmd.arg(&stream).arg(format!("{offset}-0"));
        for (k, v) in &fields {
            cmd.arg(k).arg(v.as_slice());
        }
        let _: String = cmd.query(&mut c).unwrap();
    }
}

/// Moves the room's top on by `n` offsets that the stream never held.
fn lose(prefix: &str, room: &str, n: u64) {
    let _: u64 = ::redis::cmd("HINCRBY")
        .arg(format!("{prefix}:{{{room}}}:m"))
        .arg("o")
        .arg(n)
        .query(&mut raw())
        .unwrap();
}

#[tokio::test]
async fn a_gap_is_filled_from_the_stream_in_order() {
    let s = Subject::start("redis").await;
    let prefix = s.prefix.clone().unwrap();
    cases::a_gap_is_filled_from_the_store_in_order(s, async { add_unpublished(&prefix, "r", 2) })
        .await;
}

/// A dropped pub/sub connection (killed as `redis_outage` does: every
/// pub/sub client of the server, so on a Redis of this test's own):
/// what was published meanwhile comes from the stream, in order,
/// without a reset.
#[tokio::test]
async fn a_dropped_pubsub_connection_is_caught_up_in_order() {
    let socket = common::socket_path();
    let mut redis = common::start_redis(&socket);
    let url = common::redis_socket_url(&socket);
    let s = Subject::start_at("redis", url.clone()).await;
    let room: Arc<str> = Arc::from("r");
    s.engine.subscribe(&room).await.unwrap();
    s.publish("r", "m1", false).await;
    s.wait_until("offset 1", |s| s.delivered("r").len() == 1)
        .await;
    let killed = common::kill_pubsub(&url).await;
    assert!(killed >= 1, "this engine's connection at least");
    for i in 2..=20 {
        s.publish("r", &format!("m{i}"), false).await;
    }
    s.wait_until("offsets 2 to 20", |s| s.delivered("r").len() >= 20)
        .await;
    let offsets: Vec<u64> = s.delivered("r").into_iter().map(|(o, _)| o).collect();
    assert_eq!(offsets, (1..=20).collect::<Vec<_>>());
    assert!(!s.events().contains(&Event::Reset { room: "r".into() }));
    s.finish().await;
    redis.kill().unwrap();
    redis.wait().ok();
    std::fs::remove_file(&socket).ok();
}

#[tokio::test]
async fn a_gap_the_stream_cannot_fill_is_a_reset() {
    let s = Subject::start("redis").await;
    let prefix = s.prefix.clone().unwrap();
    let room: Arc<str> = Arc::from("r");
    s.engine.subscribe(&room).await.unwrap();
    s.publish("r", "m1", false).await;
    s.wait_until("offset 1", |s| s.delivered("r").len() == 1)
        .await;
    lose(&prefix, "r", 2);
    assert_eq!(s.publish("r", "m4", false).await.offset, 4);
    s.wait_until("offset 4", |s| s.delivered("r").len() >= 2)
        .await;
    // The reset comes before anything newer than the gap.
    let seen: Vec<Event> = s
        .events()
        .into_iter()
        .filter(|e| !matches!(e, Event::Presence { .. }))
        .map(|e| match e {
            Event::Publication { room, offset, .. } => Event::Publication {
                room,
                offset,
                epoch: String::new(),
                skip: None,
                envelope: Vec::new(),
            },
            other => other,
        })
        .collect();
    let publication = |offset| Event::Publication {
        room: "r".into(),
        offset,
        epoch: String::new(),
        skip: None,
        envelope: Vec::new(),
    };
    assert_eq!(
        seen,
        vec![
            publication(1),
            Event::Reset { room: "r".into() },
            publication(4)
        ]
    );
    s.finish().await;
}
