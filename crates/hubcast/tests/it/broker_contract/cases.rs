use super::*;

pub(super) async fn publish_assigns_offsets_strictly_plus_one(s: &Subject) {
    let first = s.publish("r", "m1", false).await;
    assert_eq!(first.offset, 1);
    assert!(!first.duplicate);
    for i in 2..=4 {
        let r = s.publish("r", &format!("m{i}"), false).await;
        assert_eq!(r.offset, i);
        assert_eq!(r.epoch, first.epoch, "one epoch");
    }
    // Concurrent publishes still get every offset once.
    let all = futures_util::future::join_all((5..=24).map(|i| {
        s.engine
            .publish(request("r", &format!("m{i}"), false, None))
    }))
    .await;
    let mut offsets: Vec<u64> = all.into_iter().map(|r| r.unwrap().offset).collect();
    offsets.sort_unstable();
    assert_eq!(offsets, (5..=24).collect::<Vec<_>>());
    // Rooms have their own offsets.
    assert_eq!(s.publish("other", "m1", false).await.offset, 1);
}

pub(super) async fn idempotent_msg_id_dedupe(s: &Subject) {
    let a = s.publish("r", "a", true).await;
    assert_eq!((a.offset, a.duplicate), (1, false));
    let again = s.publish("r", "a", true).await;
    assert_eq!((again.offset, again.duplicate), (1, true));
    assert_eq!(again.epoch, a.epoch);
    // Without the idempotent flag the id is not checked.
    let plain = s.publish("r", "a", false).await;
    assert_eq!((plain.offset, plain.duplicate), (2, false));
    let b = s.publish("r", "b", true).await;
    assert_eq!((b.offset, b.duplicate), (3, false));
    // The same id in another room is another message.
    let other = s.publish("other", "a", true).await;
    assert_eq!((other.offset, other.duplicate), (1, false));
    // A duplicate stored nothing.
    let page = s.engine.history("r", None, 100).await.unwrap();
    assert_eq!(page.publications.len(), 3);
}

pub(super) async fn history_limits_and_since(s: &Subject) {
    let empty = s.engine.history("r", None, 10).await.unwrap();
    assert!(empty.publications.is_empty());
    assert!(empty.complete, "nothing was trimmed from an empty room");
    let mut epoch = String::new();
    for i in 1..=7 {
        epoch = s
            .publish("r", &format!("m{i}"), false)
            .await
            .epoch
            .to_string();
    }
    let offsets = |p: &hubcast::broker::HistoryPage| -> Vec<u64> {
        p.publications.iter().map(|p| p.offset).collect()
    };
    // HISTORY (5) kept: 3..=7.
    let page = s.engine.history("r", None, 100).await.unwrap();
    assert_eq!(offsets(&page), vec![3, 4, 5, 6, 7]);
    assert!(!page.complete, "1 and 2 were trimmed");
    assert_eq!(&*page.epoch, epoch);
    for p in &page.publications {
        assert_eq!(&*p.epoch, epoch);
        let msg = format!("m{}", p.offset);
        assert_eq!(
            p.envelope.to_vec(),
            expected_envelope("r", &msg, p.offset, &epoch),
            "stored envelope of {msg}"
        );
    }
    // The latest `limit`.
    let page = s.engine.history("r", None, 2).await.unwrap();
    assert_eq!(offsets(&page), vec![6, 7]);
    assert!(!page.complete);
    // After `since`, up to `limit`.
    let page = s.engine.history("r", Some(4), 100).await.unwrap();
    assert_eq!(offsets(&page), vec![5, 6, 7]);
    assert!(page.complete);
    let page = s.engine.history("r", Some(4), 1).await.unwrap();
    assert_eq!(offsets(&page), vec![5]);
    assert!(page.complete);
    let page = s.engine.history("r", Some(1), 100).await.unwrap();
    assert_eq!(offsets(&page), vec![3, 4, 5, 6, 7]);
    assert!(!page.complete, "2 is gone");
    let page = s.engine.history("r", Some(7), 10).await.unwrap();
    assert!(page.publications.is_empty());
    assert!(page.complete, "nothing after the top");
}

pub(super) async fn recover_by_epoch_and_trimmed_history(s: &Subject) {
    let fresh = s.engine.recover("r", None).await.unwrap();
    assert_eq!((fresh.top, fresh.recovered), (0, false));
    let rec = s
        .engine
        .recover("r", Some((0, Some(&*fresh.epoch))))
        .await
        .unwrap();
    assert!(rec.recovered, "nothing missed in an empty room");
    for i in 1..=7 {
        s.publish("r", &format!("m{i}"), false).await;
    }
    let pos = s.engine.recover("r", None).await.unwrap();
    assert_eq!(pos.top, 7);
    assert_eq!(pos.epoch, fresh.epoch, "the room kept its epoch");
    assert!(!pos.recovered && pos.publications.is_empty());
    let epoch = pos.epoch.to_string();
    // Matching epoch, all still held.
    let rec = s
        .engine
        .recover("r", Some((4, Some(&*epoch))))
        .await
        .unwrap();
    assert!(rec.recovered);
    let got: Vec<(u64, Vec<u8>)> = rec
        .publications
        .iter()
        .map(|p| (p.offset, p.envelope.to_vec()))
        .collect();
    let want: Vec<(u64, Vec<u8>)> = (5..=7)
        .map(|o| (o, expected_envelope("r", &format!("m{o}"), o, &epoch)))
        .collect();
    assert_eq!(got, want);
    // No epoch: the current one.
    let rec = s.engine.recover("r", Some((4, None))).await.unwrap();
    assert!(rec.recovered);
    assert_eq!(rec.publications.len(), 3);
    // Up to date.
    let rec = s
        .engine
        .recover("r", Some((7, Some(&*epoch))))
        .await
        .unwrap();
    assert!(rec.recovered && rec.publications.is_empty());
    // Another epoch: offsets are void.
    let rec = s
        .engine
        .recover("r", Some((4, Some("other"))))
        .await
        .unwrap();
    assert!(!rec.recovered && rec.publications.is_empty());
    assert_eq!(rec.top, 7);
    // Trimmed: offset 2 is gone.
    let rec = s
        .engine
        .recover("r", Some((1, Some(&*epoch))))
        .await
        .unwrap();
    assert!(!rec.recovered && rec.publications.is_empty());
    // Ahead of the room.
    let rec = s
        .engine
        .recover("r", Some((9, Some(&*epoch))))
        .await
        .unwrap();
    assert!(!rec.recovered);
}

pub(super) async fn subscribed_delivery_in_order(s: &Subject) {
    let room: Arc<str> = Arc::from("r");
    s.engine.subscribe(&room).await.unwrap();
    let epoch = s.publish("r", "m1", false).await.epoch.to_string();
    for i in 2..=10 {
        s.publish("r", &format!("m{i}"), false).await;
    }
    s.wait_until("ten publications", |s| s.delivered("r").len() >= 10)
        .await;
    let want: Vec<(u64, Vec<u8>)> = (1..=10)
        .map(|o| (o, expected_envelope("r", &format!("m{o}"), o, &epoch)))
        .collect();
    assert_eq!(s.delivered("r"), want, "in offset order, once each");
    // A skipped connection rides along with the publication.
    s.engine
        .publish(request("r", "m11", false, Some(42)))
        .await
        .unwrap();
    s.wait_until("the skip", |s| s.delivered("r").len() >= 11)
        .await;
    let skip = s.events().into_iter().rev().find_map(|e| match e {
        Event::Publication {
            offset: 11, skip, ..
        } => Some(skip),
        _ => None,
    });
    assert_eq!(skip, Some(Some(42)));
    // Unsubscribed and subscribed again: delivery goes on in order.
    s.engine.unsubscribe("r").await.unwrap();
    s.engine.subscribe(&room).await.unwrap();
    for i in 12..=14 {
        s.publish("r", &format!("m{i}"), false).await;
    }
    s.wait_until("three more", |s| s.delivered("r").len() >= 14)
        .await;
    let offsets: Vec<u64> = s.delivered("r").into_iter().map(|(o, _)| o).collect();
    assert_eq!(offsets, (1..=14).collect::<Vec<_>>());
    s.engine.unsubscribe("r").await.unwrap();
}

pub(super) async fn presence_events_and_lists(s: &Subject) {
    let room: Arc<str> = Arc::from("r");
    s.engine.subscribe(&room).await.unwrap();
    let (a1, a2, b1) = (
        client("a1", "ann"),
        client("a2", "ann"),
        client("b1", "bob"),
    );
    for c in [&a1, &a2, &b1] {
        s.engine.connect(c).await.unwrap();
    }
    s.engine.join("r", &a1).await.unwrap();
    s.engine.join("r", &a2).await.unwrap();
    s.engine.join("r", &b1).await.unwrap();
    let page = s.engine.list("r", 10).await.unwrap();
    assert_eq!(page.total, 2);
    let members: Vec<(String, String, Status, u32)> = page
        .members
        .iter()
        .map(|m| (m.user.clone(), m.name.clone(), m.status, m.connections))
        .collect();
    assert_eq!(
        members,
        vec![
            ("ann".into(), "ann name".into(), Status::Online, 2),
            ("bob".into(), "bob name".into(), Status::Online, 1),
        ]
    );
    let page = s.engine.list("r", 1).await.unwrap();
    assert_eq!(page.total, 2);
    assert_eq!(page.members.len(), 1);
    assert_eq!(page.members[0].user, "ann", "the first by user id");
    s.engine.leave("r", &a1).await.unwrap();
    assert_eq!(
        s.engine.list("r", 10).await.unwrap().total,
        2,
        "ann is still there"
    );
    s.engine.leave("r", &a2).await.unwrap();
    let page = s.engine.list("r", 10).await.unwrap();
    assert_eq!(page.total, 1);
    assert_eq!(page.members[0].user, "bob");
    // One join per user's first connection, one leave per last.
    let want = vec![
        (PresenceAction::Join, "ann".to_string(), Status::Online),
        (PresenceAction::Join, "bob".to_string(), Status::Online),
        (PresenceAction::Leave, "ann".to_string(), Status::Online),
    ];
    s.wait_until("three presence events", |s| {
        s.presence_events("r").len() >= want.len()
    })
    .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(s.presence_events("r"), want);
    // Leaving twice, or a room never joined, changes nothing.
    s.engine.leave("r", &a2).await.unwrap();
    s.engine.leave("elsewhere", &a2).await.unwrap();
    assert!(
        s.engine
            .list("elsewhere", 10)
            .await
            .unwrap()
            .members
            .is_empty()
    );
    s.engine.leave("r", &b1).await.unwrap();
    assert_eq!(s.engine.list("r", 10).await.unwrap().total, 0);
    s.engine.unsubscribe("r").await.unwrap();
}

/// Joins into one room all at once are all let in, and the events they
/// send, replayed, give the room's member list; so do a user's leaving
/// and coming back on another connection at the same time.
pub(super) async fn a_join_wave_into_one_room_lets_everyone_in(s: &Subject) {
    const WAVE: usize = 300;
    let room: Arc<str> = Arc::from("wave");
    s.engine.subscribe(&room).await.unwrap();
    let clients: Vec<ClientInfo> = (0..WAVE)
        .map(|i| client(&format!("c{i:03}"), &format!("u{i:03}")))
        .collect();
    let joined =
        futures_util::future::join_all(clients.iter().map(|c| s.engine.join("wave", c))).await;
    let refused = joined.iter().filter(|r| r.is_err()).count();
    assert_eq!(
        refused,
        0,
        "refused joins: {:?}",
        joined.iter().find(|r| r.is_err())
    );
    assert_eq!(s.engine.list("wave", 10).await.unwrap().total, WAVE);
    // Every other user leaves on its connection while coming back on a
    // new one, all at once: whichever lands first, the user is present.
    let again: Vec<ClientInfo> = (0..WAVE)
        .step_by(2)
        .map(|i| client(&format!("d{i:03}"), &format!("u{i:03}")))
        .collect();
    let leaves = clients.iter().step_by(2).map(|c| s.engine.leave("wave", c));
    let joins = again.iter().map(|c| s.engine.join("wave", c));
    let (left, rejoined) = tokio::join!(
        futures_util::future::join_all(leaves),
        futures_util::future::join_all(joins)
    );
    assert!(left.iter().chain(&rejoined).all(Result::is_ok));
    let page = s.engine.list("wave", 1000).await.unwrap();
    assert_eq!(page.total, WAVE);
    assert!(page.members.iter().all(|m| m.connections == 1));
    // A barrier: one more user, whose join is the last event.
    s.engine
        .join("wave", &client("z", "zz-last"))
        .await
        .unwrap();
    s.wait_until("the barrier's join", |s| {
        s.presence_events("wave")
            .iter()
            .any(|(_, u, _)| u == "zz-last")
    })
    .await;
    let mut present = std::collections::BTreeSet::new();
    for (action, user, _) in s.presence_events("wave") {
        match action {
            PresenceAction::Join => assert!(present.insert(user.clone()), "{user} joined twice"),
            PresenceAction::Leave => assert!(present.remove(&user), "{user} left unjoined"),
            PresenceAction::Status => {}
        }
    }
    assert_eq!(present.len(), WAVE + 1, "the events replayed give the list");
    s.engine.unsubscribe("wave").await.unwrap();
}

pub(super) async fn connect_disconnect_and_status(s: &Subject) {
    let unknown = s.engine.user_status("nobody").await.unwrap();
    assert_eq!(
        (unknown.status, unknown.connections, unknown.last_seen),
        (Status::Offline, 0, None)
    );
    let (a1, a2) = (client("a1", "ann"), client("a2", "ann"));
    s.engine.connect(&a1).await.unwrap();
    s.engine.connect(&a2).await.unwrap();
    let st = s.engine.user_status("ann").await.unwrap();
    assert_eq!(
        (st.status, st.connections, st.last_seen),
        (Status::Online, 2, None)
    );
    // A status change is reported in every room the user is present in,
    // once.
    let room: Arc<str> = Arc::from("r");
    s.engine.subscribe(&room).await.unwrap();
    s.engine.join("r", &a1).await.unwrap();
    s.engine.set_status("ann", Status::Busy).await.unwrap();
    s.engine.set_status("ann", Status::Busy).await.unwrap();
    assert_eq!(
        s.engine.user_status("ann").await.unwrap().status,
        Status::Busy
    );
    assert_eq!(
        s.engine.list("r", 10).await.unwrap().members[0].status,
        Status::Busy
    );
    let want = vec![
        (PresenceAction::Join, "ann".to_string(), Status::Online),
        (PresenceAction::Status, "ann".to_string(), Status::Busy),
    ];
    s.wait_until("join and status", |s| s.presence_events("r").len() >= 2)
        .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(s.presence_events("r"), want);
    s.engine.leave("r", &a1).await.unwrap();
    // Offline once the last connection is gone, with a last-seen time.
    s.engine.disconnect(&a1).await.unwrap();
    assert_eq!(s.engine.user_status("ann").await.unwrap().connections, 1);
    s.engine.disconnect(&a2).await.unwrap();
    let st = s.engine.user_status("ann").await.unwrap();
    assert_eq!((st.status, st.connections), (Status::Offline, 0));
    assert!(st.last_seen.is_some());
    // Coming back: online again, whatever the status was.
    s.engine.connect(&a1).await.unwrap();
    let st = s.engine.user_status("ann").await.unwrap();
    assert_eq!(
        (st.status, st.connections, st.last_seen),
        (Status::Online, 1, None)
    );
    s.engine.disconnect(&a1).await.unwrap();
    // An anonymous user leaves no offline record.
    let anon = ClientInfo {
        ephemeral: true,
        ..client("x1", "anon-1")
    };
    s.engine.connect(&anon).await.unwrap();
    s.engine.disconnect(&anon).await.unwrap();
    let st = s.engine.user_status("anon-1").await.unwrap();
    assert_eq!(
        (st.status, st.connections, st.last_seen),
        (Status::Offline, 0, None)
    );
    s.engine.unsubscribe("r").await.unwrap();
}

/// Offsets 2 and 3 stored by `lose` without being announced: the next
/// announced message (4) makes the engine read them from its store, so
/// the subscriber gets 1 to 4 in order, without a reset. `lose` is the
/// engine's own way of storing without announcing (Redis and NATS).
pub(super) async fn a_gap_is_filled_from_the_store_in_order(
    s: Subject,
    lose: impl std::future::Future<Output = ()>,
) {
    let room: Arc<str> = Arc::from("r");
    s.engine.subscribe(&room).await.unwrap();
    let epoch = s.publish("r", "m1", false).await.epoch.to_string();
    s.wait_until("offset 1", |s| s.delivered("r").len() == 1)
        .await;
    lose.await;
    assert_eq!(s.publish("r", "m4", false).await.offset, 4);
    s.wait_until("offsets 2 to 4", |s| s.delivered("r").len() >= 4)
        .await;
    let offsets: Vec<u64> = s.delivered("r").into_iter().map(|(o, _)| o).collect();
    assert_eq!(offsets, vec![1, 2, 3, 4]);
    assert_eq!(
        s.delivered("r")[3].1,
        expected_envelope("r", "m4", 4, &epoch)
    );
    assert!(!s.events().contains(&Event::Reset { room: "r".into() }));
    s.engine.unsubscribe("r").await.unwrap();
    s.finish().await;
}
