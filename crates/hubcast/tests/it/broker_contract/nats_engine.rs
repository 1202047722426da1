use super::*;

use async_nats::HeaderMap;
use async_nats::jetstream;

/// A NATS engine on a fresh prefix with a `lease`.
async fn start(lease: Duration) -> Subject {
    let prefix = common::unique_nats_prefix();
    let mut settings = nats_settings(&prefix, "contract-node");
    settings.lease = lease;
    let engine: Arc<dyn Engine> = NatsBroker::connect(settings).await.unwrap();
    Subject::of(engine, None, Some(prefix))
}

async fn js() -> jetstream::Context {
    jetstream::new(async_nats::connect(common::nats_url()).await.unwrap())
}

/// Stores offsets `from..=to` of room `r` (copies of its latest
/// message) without announcing them.
async fn store_unannounced(prefix: &str, from: u64, to: u64) {
    let js = js().await;
    let stream = js.get_stream(format!("{prefix}_ROOMS")).await.unwrap();
    let subject = format!("{prefix}.room.r");
    let last = stream
        .get_last_raw_message_by_subject(&subject)
        .await
        .unwrap();
    for offset in from..=to {
        let mut h = HeaderMap::new();
        for name in ["Hubcast-Epoch", "Hubcast-Node", "Hubcast-Key"] {
            if let Some(v) = last.headers.get(name) {
                h.insert(name, v.as_str());
            }
        }
        h.insert("Hubcast-Offset", offset.to_string().as_str());
        js.publish_with_headers(subject.clone(), h, last.payload.clone())
            .await
            .unwrap()
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn a_gap_is_filled_from_the_stream_in_order() {
    let s = start(Duration::from_secs(30)).await;
    let prefix = s.nats_prefix.clone().unwrap();
    cases::a_gap_is_filled_from_the_store_in_order(s, store_unannounced(&prefix, 2, 3)).await;
}

#[tokio::test]
async fn a_purged_room_starts_a_new_epoch_and_resets_its_subscribers() {
    let s = start(Duration::from_secs(30)).await;
    let prefix = s.nats_prefix.clone().unwrap();
    let room: Arc<str> = Arc::from("r");
    s.engine.subscribe(&room).await.unwrap();
    s.publish("r", "m1", false).await;
    let old = s.publish("r", "m2", false).await.epoch.to_string();
    s.wait_until("offsets 1 and 2", |s| s.delivered("r").len() == 2)
        .await;
    let stream = js()
        .await
        .get_stream(format!("{prefix}_ROOMS"))
        .await
        .unwrap();
    stream
        .purge()
        .filter(format!("{prefix}.room.r"))
        .await
        .unwrap();
    let next = s.publish("r", "m3", false).await;
    assert_eq!(next.offset, 1, "offsets start again");
    assert_ne!(&*next.epoch, old, "in a new epoch");
    s.wait_until("a reset", |s| {
        s.events().contains(&Event::Reset { room: "r".into() })
    })
    .await;
    let rec = s.engine.recover("r", Some((2, Some(&*old)))).await.unwrap();
    assert!(!rec.recovered);
    assert_eq!((rec.top, &*rec.epoch), (1, &*next.epoch));
    s.engine.unsubscribe("r").await.unwrap();
    s.finish().await;
}

/// Each node remembers where its last publish left a room and publishes
/// the next from there without reading the room; when another node has
/// published since, the server refuses the stale expectation and the
/// publish reads the room: offsets stay strictly +1 in one epoch however
/// the nodes take turns.
#[tokio::test]
async fn nodes_taking_turns_at_a_room_keep_its_offsets_strict() {
    let a = start(Duration::from_secs(30)).await;
    let prefix = a.nats_prefix.clone().unwrap();
    let b: Arc<dyn Engine> = NatsBroker::connect(nats_settings(&prefix, "contract-node-b"))
        .await
        .unwrap();
    let first = a.publish("r", "m1", false).await;
    let mut offset = first.offset;
    for (i, on_a) in [true, false, true, false, false, true, true, false]
        .into_iter()
        .enumerate()
    {
        let req = request("r", &format!("m{}", i + 2), false, None);
        let r = if on_a {
            a.engine.publish(req).await.unwrap()
        } else {
            b.publish(req).await.unwrap()
        };
        assert_eq!(r.offset, offset + 1, "publish {} (on a: {on_a})", i + 2);
        assert_eq!(r.epoch, first.epoch);
        offset = r.offset;
    }
    // The stream as either node reads it (it keeps the contract's last 5).
    let page = b.history("r", None, 100).await.unwrap();
    let offsets: Vec<u64> = page.publications.iter().map(|m| m.offset).collect();
    assert_eq!(offsets, (5..=9).collect::<Vec<_>>());
    b.close().await;
    a.finish().await;
}

#[tokio::test]
async fn a_dead_nodes_presence_is_removed_with_leave_events() {
    let s = start(Duration::from_secs(1)).await;
    let prefix = s.nats_prefix.clone().unwrap();
    let room: Arc<str> = Arc::from("r");
    s.engine.subscribe(&room).await.unwrap();
    let live = client("a1", "ann");
    s.engine.connect(&live).await.unwrap();
    s.engine.join("r", &live).await.unwrap();
    // A node that died without cleaning up: entries, and no lease.
    let kv = js()
        .await
        .get_key_value(format!("{prefix}_state"))
        .await
        .unwrap();
    let mut presence: serde_json::Value =
        serde_json::from_slice(&kv.get("p.r").await.unwrap().unwrap()).unwrap();
    presence["ghost-conn"] = serde_json::json!({"u":"ghost","n":"Ghost","d":"dead-node"});
    kv.put("p.r", serde_json::to_vec(&presence).unwrap().into())
        .await
        .unwrap();
    let user = serde_json::json!({"s":"online","n":"Ghost","c":{"ghost-conn":"dead-node"},"r":["r"],"l":null});
    kv.put("u.ghost", serde_json::to_vec(&user).unwrap().into())
        .await
        .unwrap();
    assert_eq!(s.engine.list("r", 10).await.unwrap().total, 2);
    s.wait_until("the ghost's leave", |s| {
        s.presence_events("r")
            .iter()
            .any(|(a, u, _)| *a == PresenceAction::Leave && u == "ghost")
    })
    .await;
    let page = s.engine.list("r", 10).await.unwrap();
    assert_eq!(page.total, 1, "the live member stays");
    assert_eq!(page.members[0].user, "ann");
    let st = s.engine.user_status("ghost").await.unwrap();
    assert_eq!((st.status, st.connections), (Status::Offline, 0));
    s.engine.leave("r", &live).await.unwrap();
    s.engine.unsubscribe("r").await.unwrap();
    s.finish().await;
}

/// A node whose lease ran out (stopped, or cut off from NATS, past it) may
/// have been reaped: it registers its connections and presence again.
#[tokio::test]
async fn a_node_whose_lease_ran_out_registers_its_entries_again() {
    let s = start(Duration::from_secs(1)).await;
    let prefix = s.nats_prefix.clone().unwrap();
    let ann = client("a1", "ann");
    s.engine.connect(&ann).await.unwrap();
    s.engine.join("r", &ann).await.unwrap();
    // What a reaper leaves after this node's lease ran out: its entries
    // gone, and no lease.
    let js = js().await;
    let state = js.get_key_value(format!("{prefix}_state")).await.unwrap();
    state.put("p.r", "{}".into()).await.unwrap();
    let reaped = serde_json::json!({"s":"offline","n":"ann name","c":{},"r":[],"l":1});
    state
        .put("u.ann", serde_json::to_vec(&reaped).unwrap().into())
        .await
        .unwrap();
    let nodes = js.get_key_value(format!("{prefix}_nodes")).await.unwrap();
    nodes.delete("n.contract-node").await.unwrap();
    assert_eq!(s.engine.list("r", 10).await.unwrap().total, 0);
    // Back within two rounds (a third of the lease each).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let listed = s.engine.list("r", 10).await.unwrap().total;
        let st = s.engine.user_status("ann").await.unwrap();
        if (listed, st.status, st.connections) == (1, Status::Online, 1) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not registered again: {listed} listed, {st:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    s.engine.leave("r", &ann).await.unwrap();
    s.engine.disconnect(&ann).await.unwrap();
    s.finish().await;
}
