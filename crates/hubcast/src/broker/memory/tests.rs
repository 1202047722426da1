//! The memory engine's own cases (the shared ones are in
//! tests/it/broker_contract/).

use super::*;
use crate::broker::{ClientInfo, PresenceManager};
use crate::protocol::EnvelopeParts;

fn req(room: &str, msg_id: &str, idempotent: bool) -> PublishRequest {
    PublishRequest {
        room: Arc::from(room),
        msg_id: msg_id.into(),
        idempotent,
        parts: EnvelopeParts::new(room, msg_id, 1, "e", "u", "1"),
        skip: None,
        webhook: false,
    }
}

#[tokio::test(start_paused = true)]
async fn offsets_history_idempotency_and_expiry() {
    let b = MemoryBroker::new(3, Duration::from_secs(10));
    let r1 = b.publish(req("r", "a", true)).await.unwrap();
    let r2 = b.publish(req("r", "b", false)).await.unwrap();
    assert_eq!((r1.offset, r2.offset), (1, 2));
    let dup = b.publish(req("r", "a", true)).await.unwrap();
    assert!(dup.duplicate);
    assert_eq!(dup.offset, 1);
    for i in 0..3 {
        b.publish(req("r", &format!("x{i}"), false)).await.unwrap();
    }
    // history_size 3: offsets 3..=5 remain.
    let page = b.history("r", None, 100).await.unwrap();
    let offs: Vec<u64> = page.publications.iter().map(|p| p.offset).collect();
    assert_eq!(offs, vec![3, 4, 5]);
    assert!(!page.complete);
    let rec = b.recover("r", Some((2, Some(&*r1.epoch)))).await.unwrap();
    assert!(rec.recovered);
    assert_eq!(rec.publications.len(), 3);
    let rec = b.recover("r", Some((1, None))).await.unwrap();
    assert!(!rec.recovered, "offset 2 was trimmed");
    let rec = b.recover("r", Some((5, Some("other")))).await.unwrap();
    assert!(!rec.recovered, "epoch mismatch");
    tokio::time::advance(Duration::from_secs(11)).await;
    let page = b.history("r", Some(0), 100).await.unwrap();
    assert!(page.publications.is_empty());
    let again = b.publish(req("r", "a", true)).await.unwrap();
    assert!(!again.duplicate, "msgId window expired");
    b.close().await;
}

#[tokio::test(start_paused = true)]
async fn a_subscribed_room_without_messages_holds_no_log() {
    let b = MemoryBroker::new(10, Duration::from_secs(1));
    let quiet = |b: &MemoryBroker| {
        matches!(
            lock(b.shard("p")).get("p"),
            Some(Room::Quiet { subscribed: _, .. })
        )
    };
    // Reading an unknown room's position creates nothing.
    let e0 = b.recover("p", None).await.unwrap().epoch;
    b.history("p", None, 10).await.unwrap();
    assert!(lock(b.shard("p")).get("p").is_none());
    b.subscribe(&"p".into()).await.unwrap();
    b.subscribe(&"p".into()).await.unwrap();
    assert!(quiet(&b), "two subscriptions, still no log");
    let rec = b.recover("p", Some((0, Some(&*e0)))).await.unwrap();
    assert_eq!((rec.top, rec.recovered), (0, true));
    assert_eq!(rec.epoch, e0, "the epoch is the one its log will have");
    // The sweep keeps it; the first message makes the log, in that
    // epoch, keeping both subscriptions.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(quiet(&b));
    let r = b.publish(req("p", "a", false)).await.unwrap();
    assert_eq!((r.epoch.clone(), r.offset), (e0.clone(), 1));
    assert!(matches!(lock(b.shard("p")).get("p"), Some(Room::Log(_))));
    b.unsubscribe("p").await.unwrap();
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(
        lock(b.shard("p")).get("p").is_some(),
        "one subscription left: kept though its message expired"
    );
    b.unsubscribe("p").await.unwrap();
    assert!(lock(b.shard("p")).get("p").is_none());
    // It had a message: a new subscription continues its offsets (a
    // log from the tombstone, not a quiet room at 0).
    b.subscribe(&"p".into()).await.unwrap();
    assert!(matches!(lock(b.shard("p")).get("p"), Some(Room::Log(_))));
    assert_eq!(b.recover("p", None).await.unwrap().top, 1);

    // A quiet room's last unsubscribe forgets it.
    b.subscribe(&"q".into()).await.unwrap();
    b.unsubscribe("q").await.unwrap();
    b.unsubscribe("q").await.unwrap();
    assert!(lock(b.shard("q")).get("q").is_none());
    b.close().await;
}

#[tokio::test(start_paused = true)]
async fn a_dropped_idle_log_keeps_its_epoch_and_offsets() {
    let b = MemoryBroker::new(10, Duration::from_secs(1));
    // Never published: dropped at the last unsubscribe, and the room's
    // next log has the same epoch, so a client at offset 0 recovers.
    b.subscribe(&"quiet".into()).await.unwrap();
    let e0 = b.recover("quiet", None).await.unwrap().epoch;
    b.unsubscribe("quiet").await.unwrap();
    assert!(lock(b.shard("quiet")).get("quiet").is_none(), "dropped");
    let r = b.publish(req("quiet", "a", false)).await.unwrap();
    assert_eq!((r.epoch.clone(), r.offset), (e0.clone(), 1));
    let rec = b.recover("quiet", Some((0, Some(&*e0)))).await.unwrap();
    assert!(rec.recovered);
    assert_eq!(rec.publications.len(), 1);

    // With messages: once they expired the log goes, and the next one
    // continues its offsets in the same epoch.
    let e1 = b.publish(req("r", "a", false)).await.unwrap().epoch;
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(lock(b.shard("r")).get("r").is_none(), "swept");
    let rec = b.recover("r", Some((1, Some(&*e1)))).await.unwrap();
    assert!(rec.recovered, "nothing after offset 1 was missed");
    let rec = b.recover("r", Some((0, Some(&*e1)))).await.unwrap();
    assert!(!rec.recovered, "offset 1 expired");
    let r = b.publish(req("r", "b", false)).await.unwrap();
    assert_eq!((r.epoch.clone(), r.offset), (e1.clone(), 2));
    b.close().await;
}

#[test]
fn forgetting_a_tombstone_changes_fresh_epochs() {
    let mut t = Tombs::new();
    let seed = t.seed;
    for i in 0..MAX_TOMBSTONES {
        t.remember(Arc::from(format!("r{i}").as_str()), Arc::from("e"), 3);
    }
    // A room remembered twice is one entry.
    t.remember(Arc::from("r1"), Arc::from("e"), 4);
    assert_eq!(t.seed, seed);
    assert_eq!(t.by_room.len(), MAX_TOMBSTONES);
    t.remember(Arc::from("one-more"), Arc::from("e"), 1);
    assert_eq!(t.by_room.len(), MAX_TOMBSTONES);
    assert!(!t.by_room.contains_key("r0"), "the oldest went");
    assert_ne!(t.seed, seed, "so r0's next log cannot reuse its epoch");
    assert_eq!(t.by_room["r1"].2, 4);
}

#[tokio::test(start_paused = true)]
async fn offline_users_are_remembered_for_a_while_and_within_a_cap() {
    let b = MemoryBroker::new(10, Duration::from_secs(60));
    let client = |u: usize| ClientInfo {
        conn_id: Arc::from(format!("c{u}").as_str()),
        user: Arc::from(format!("u{u}").as_str()),
        name: Arc::from("n"),
        ephemeral: false,
    };
    // One more distinct user than the cap comes and goes; the first to
    // leave is forgotten at once, the rest keep their last-seen time.
    for u in 0..=MAX_OFFLINE_USERS {
        b.connect(&client(u)).await.unwrap();
        b.disconnect(&client(u)).await.unwrap();
    }
    assert_eq!(b.user_status("u0").await.unwrap().last_seen, None);
    assert!(b.user_status("u1").await.unwrap().last_seen.is_some());
    assert_eq!(lock(&b.presence).users.len(), MAX_OFFLINE_USERS);
    // A user who came back is not forgotten by its old entry.
    b.connect(&client(1)).await.unwrap();
    tokio::time::advance(Duration::from_secs(61)).await;
    b.sweep();
    assert_eq!(b.user_status("u1").await.unwrap().connections, 1);
    assert_eq!(b.user_status("u2").await.unwrap().last_seen, None);
    {
        let p = lock(&b.presence);
        assert_eq!(p.users.len(), 1);
        assert!(p.offline.is_empty());
    }
    b.close().await;
}

/// A `[[rooms]]` table keeping `size` messages (global size when `None`)
/// for `ttl` seconds (global ttl when `None`).
fn table(pattern: &str, size: Option<usize>, ttl: Option<u64>) -> crate::config::RoomTable {
    crate::config::RoomTable {
        history_size: size,
        history_ttl: ttl,
        ..crate::config::RoomTable::new(pattern)
    }
}

#[tokio::test(start_paused = true)]
async fn each_room_keeps_what_its_rule_says() {
    let cfg = crate::config::Config {
        history_size: 10,
        history_ttl: 60,
        rooms: vec![table("short", None, Some(5)), table("none", Some(0), None)],
        ..crate::config::Config::default()
    };
    let b = MemoryBroker::with_rules(Arc::new(Rules::from_config(&cfg).unwrap()));
    for room in ["short", "none", "long"] {
        assert_eq!(b.publish(req(room, "m", true)).await.unwrap().offset, 1);
    }
    let held = |page: HistoryPage| page.publications.len();
    assert_eq!(held(b.history("none", None, 100).await.unwrap()), 0);
    let dup = b.publish(req("none", "m", true)).await.unwrap();
    assert!(dup.duplicate, "msgIds are kept without history");
    tokio::time::advance(Duration::from_secs(6)).await;
    assert_eq!(held(b.history("short", None, 100).await.unwrap()), 0);
    assert!(!b.publish(req("short", "m", true)).await.unwrap().duplicate);
    assert_eq!(held(b.history("long", None, 100).await.unwrap()), 1);
    assert!(b.publish(req("long", "m", true)).await.unwrap().duplicate);
    b.close().await;
}
