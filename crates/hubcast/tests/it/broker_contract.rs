//! The broker contract: one set of cases run against every engine, through
//! the `Broker` and `PresenceManager` traits only. Adding an engine is one
//! name in `contract!` below plus its arm in `Subject::start`.
//!
//! The Redis engine's gap handling (what pub/sub lost is read back from the
//! room's stream, in order, or reported with `on_reset`) is Redis-specific:
//! its cases are in `mod redis_gaps` at the end.
#![allow(clippy::unwrap_used)]

use crate::common;

use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use hubcast::broker::memory::MemoryBroker;
use hubcast::broker::nats::{NatsBroker, NatsSettings};
use hubcast::broker::redis::{RedisBroker, RedisSettings};
use hubcast::broker::{
    BrokerHandler, ClientInfo, Engine, PresenceEvent, Publication, PublishRequest, PublishResult,
};
use hubcast::protocol::{EnvelopeParts, PresenceAction, Status};
use hubcast::rules::{History, Rules};

/// Messages kept per room by every engine under test: small, so trimming
/// is easy to reach.
const HISTORY: usize = 5;

/// What an engine reported to its handler.
#[derive(Debug, Clone, PartialEq)]
enum Event {
    Publication {
        room: String,
        offset: u64,
        epoch: String,
        skip: Option<u64>,
        envelope: Vec<u8>,
    },
    Presence {
        room: String,
        action: PresenceAction,
        user: String,
        status: Status,
    },
    Reset {
        room: String,
    },
}

/// The handler every case gives its engine: records everything.
#[derive(Default)]
struct Recorder {
    events: Mutex<Vec<Event>>,
}

impl BrokerHandler for Recorder {
    fn on_publication(&self, room: &str, p: &Arc<Publication>) {
        self.events.lock().unwrap().push(Event::Publication {
            room: room.to_string(),
            offset: p.offset,
            epoch: p.epoch.to_string(),
            skip: p.skip,
            envelope: p.envelope.to_vec(),
        });
    }
    fn on_presence(&self, room: &str, e: &PresenceEvent) {
        self.events.lock().unwrap().push(Event::Presence {
            room: room.to_string(),
            action: e.action,
            user: e.user.to_string(),
            status: e.status,
        });
    }
    fn on_reset(&self, room: &str) {
        self.events.lock().unwrap().push(Event::Reset {
            room: room.to_string(),
        });
    }
}

/// One engine under test, with its handler.
struct Subject {
    engine: Arc<dyn Engine>,
    recorder: Arc<Recorder>,
    /// The Redis key prefix to delete afterwards.
    prefix: Option<String>,
    /// The NATS prefix whose stream and buckets to delete afterwards.
    nats_prefix: Option<String>,
}

impl Drop for Subject {
    fn drop(&mut self) {
        if let Some(p) = self.prefix.take() {
            common::clean_redis(&p);
        }
        if let Some(p) = self.nats_prefix.take() {
            common::clean_nats(&p);
            crate::webhooks::clean_nats_webhooks(&p);
        }
    }
}

impl Subject {
    async fn start(engine: &str) -> Subject {
        Self::start_at(engine, common::redis_url()).await
    }

    /// [`Subject::start`] on the Redis at `redis_url`.
    async fn start_at(engine: &str, redis_url: String) -> Subject {
        let ttl = Duration::from_secs(60);
        let mut nats_prefix = None;
        let (engine, prefix): (Arc<dyn Engine>, _) = match engine {
            "memory" => (MemoryBroker::new(HISTORY, ttl), None),
            "nats" => {
                let prefix = common::unique_nats_prefix();
                let b = NatsBroker::connect(nats_settings(&prefix, "contract-node"))
                    .await
                    .unwrap();
                nats_prefix = Some(prefix);
                (b, None)
            }
            "redis" => {
                let prefix = common::unique_prefix();
                let b = RedisBroker::connect(redis_settings(redis_url, &prefix, "contract-node"))
                    .await
                    .unwrap();
                (b, Some(prefix))
            }
            other => panic!("no engine {other}"),
        };
        let recorder = Arc::new(Recorder::default());
        let weak: Weak<dyn BrokerHandler> = Arc::downgrade(&recorder) as _;
        engine.set_handler(weak);
        Subject {
            engine,
            recorder,
            prefix,
            nats_prefix,
        }
    }

    async fn finish(self) {
        self.engine.close().await;
    }

    async fn publish(&self, room: &str, msg_id: &str, idempotent: bool) -> PublishResult {
        self.engine
            .publish(request(room, msg_id, idempotent, None))
            .await
            .unwrap()
    }

    fn events(&self) -> Vec<Event> {
        self.recorder.events.lock().unwrap().clone()
    }

    /// The room's publications reported so far: (offset, envelope).
    fn delivered(&self, room: &str) -> Vec<(u64, Vec<u8>)> {
        self.events()
            .into_iter()
            .filter_map(|e| match e {
                Event::Publication {
                    room: r,
                    offset,
                    envelope,
                    ..
                } if r == room => Some((offset, envelope)),
                _ => None,
            })
            .collect()
    }

    /// The room's presence events so far: (action, user, status).
    fn presence_events(&self, room: &str) -> Vec<(PresenceAction, String, Status)> {
        self.events()
            .into_iter()
            .filter_map(|e| match e {
                Event::Presence {
                    room: r,
                    action,
                    user,
                    status,
                } if r == room => Some((action, user, status)),
                _ => None,
            })
            .collect()
    }

    /// Waits (up to 5 s) until `done` holds for the recorded events.
    async fn wait_until(&self, what: &str, done: impl Fn(&Subject) -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while !done(self) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for {what}: {:?}",
                self.events()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

fn nats_settings(prefix: &str, node: &str) -> NatsSettings {
    NatsSettings {
        url: common::nats_url(),
        prefix: prefix.to_string(),
        node: node.to_string(),
        rules: Arc::new(Rules::uniform(History {
            size: HISTORY,
            ttl: Duration::from_secs(60),
        })),
        lease: Duration::from_secs(30),
        user: None,
        password: None,
        token: None,
        creds_file: None,
        nkey: None,
        tls_ca_file: None,
    }
}

fn redis_settings(url: String, prefix: &str, node: &str) -> RedisSettings {
    RedisSettings {
        url,
        cluster: false,
        prefix: prefix.to_string(),
        node: node.to_string(),
        rules: Arc::new(Rules::uniform(History {
            size: HISTORY,
            ttl: Duration::from_secs(60),
        })),
        lease: Duration::from_secs(30),
    }
}

/// The envelope fields every case publishes with (data names the msgId).
fn parts(room: &str, msg_id: &str) -> EnvelopeParts {
    EnvelopeParts::new(
        room,
        msg_id,
        1_763_800_000_123,
        "chat.message",
        "alice",
        &format!(r#"{{"id":"{msg_id}","text":"héllo \"quoted\""}}"#),
    )
}

fn request(room: &str, msg_id: &str, idempotent: bool, skip: Option<u64>) -> PublishRequest {
    PublishRequest {
        room: Arc::from(room),
        msg_id: msg_id.to_string(),
        idempotent,
        parts: parts(room, msg_id),
        skip,
        webhook: false,
    }
}

/// The bytes every engine must hand out for message `msg_id` at `offset`:
/// the one encoding, byte for byte.
fn expected_envelope(room: &str, msg_id: &str, offset: u64, epoch: &str) -> Vec<u8> {
    parts(room, msg_id).encode(offset, epoch).to_vec()
}

fn client(conn: &str, user: &str) -> ClientInfo {
    ClientInfo {
        conn_id: Arc::from(conn),
        user: Arc::from(user),
        name: Arc::from(format!("{user} name").as_str()),
        ephemeral: false,
    }
}

/// The cases, each a function of a started engine.
mod cases {
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
}

/// Webhooks' `message.published` is recorded by the publish itself (the
/// request says a webhook wants it), so an acknowledged publish has its
/// event in the log whatever happens to the node next; a publish nobody
/// wants and a duplicate record nothing.
mod webhook_log {
    use super::*;
    use hubcast::broker::EventType;

    pub(super) async fn message_published_is_logged_by_the_publish(s: &Subject) {
        let group = "wh-contract".to_string();
        s.engine
            .enable_webhooks(std::slice::from_ref(&group), Duration::from_secs(1))
            .await
            .unwrap();
        let wanted = PublishRequest {
            webhook: true,
            ..request("wh", "w1", true, None)
        };
        let first = s.engine.publish(wanted.clone()).await.unwrap();
        // Not wanted by any webhook: nothing recorded.
        s.publish("wh", "w2", false).await;
        // A duplicate is not a message.
        let dup = s.engine.publish(wanted).await.unwrap();
        assert!(dup.duplicate);
        let third = s
            .engine
            .publish(PublishRequest {
                webhook: true,
                ..request("wh", "w3", false, None)
            })
            .await
            .unwrap();
        assert!(
            s.engine
                .lead(&group, Duration::from_secs(10))
                .await
                .unwrap()
        );
        let logged = s.engine.read(&group, 100).await.unwrap();
        type Logged<'a> = (EventType, Option<&'a str>, Option<Vec<u8>>);
        let got: Vec<Logged> = logged
            .iter()
            .map(|e| {
                (
                    e.event.kind,
                    e.event.room.as_deref(),
                    e.event.message.as_ref().map(|m| m.to_vec()),
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                (
                    EventType::MessagePublished,
                    Some("wh"),
                    Some(expected_envelope("wh", "w1", first.offset, &first.epoch))
                ),
                (
                    EventType::MessagePublished,
                    Some("wh"),
                    Some(expected_envelope("wh", "w3", third.offset, &third.epoch))
                ),
            ]
        );
        // Read again until acknowledged, with the same ids.
        let again = s.engine.read(&group, 100).await.unwrap();
        assert_eq!(
            again.iter().map(|e| &e.id).collect::<Vec<_>>(),
            logged.iter().map(|e| &e.id).collect::<Vec<_>>()
        );
        let ids: Vec<String> = logged.iter().map(|e| e.id.clone()).collect();
        s.engine.ack(&group, &ids).await.unwrap();
        assert!(s.engine.read(&group, 100).await.unwrap().is_empty());
    }
}

/// Runs every case against each named engine: `contract!(memory, redis)`
/// makes `memory::<case>` and `redis::<case>` (and so on).
macro_rules! contract {
    ($($engine:ident),* $(,)?) => {
        $(
            mod $engine {
                contract!(@cases $engine:
                    publish_assigns_offsets_strictly_plus_one,
                    idempotent_msg_id_dedupe,
                    history_limits_and_since,
                    recover_by_epoch_and_trimmed_history,
                    subscribed_delivery_in_order,
                    presence_events_and_lists,
                    connect_disconnect_and_status,
                );
                contract!(@webhooks $engine: message_published_is_logged_by_the_publish);
            }
        )*
    };
    (@webhooks $engine:ident: $($case:ident),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $case() {
                let s = super::Subject::start(stringify!($engine)).await;
                super::webhook_log::$case(&s).await;
                s.finish().await;
            }
        )*
    };
    (@cases $engine:ident: $($case:ident),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $case() {
                let s = super::Subject::start(stringify!($engine)).await;
                super::cases::$case(&s).await;
                s.finish().await;
            }
        )*
    };
}

contract!(memory, redis, nats);

/// The Redis engine fills what pub/sub lost from the room's stream. Pub/sub
/// losing messages is simulated by writing to the room's stream and meta
/// hash behind the engine's back (copies of a real entry), which is what
/// the engine sees after a dropped pub/sub connection: an offset jump.
mod redis_gaps {
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
        let room: Arc<str> = Arc::from("r");
        s.engine.subscribe(&room).await.unwrap();
        let epoch = s.publish("r", "m1", false).await.epoch.to_string();
        s.wait_until("offset 1", |s| s.delivered("r").len() == 1)
            .await;
        add_unpublished(&prefix, "r", 2);
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
        s.finish().await;
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
}

/// The NATS engine's own cases: gaps in what core NATS delivered are filled
/// from the room's stream; a room whose history was purged starts a new
/// epoch and its subscribers are reset; a dead node's presence is reaped.
/// Messages lost on the way are simulated by storing them in the stream
/// behind the engine's back (never announced).
mod nats_engine {
    use super::*;

    use async_nats::HeaderMap;
    use async_nats::jetstream;

    /// A NATS engine on a fresh prefix with a `lease`.
    async fn start(lease: Duration) -> Subject {
        let prefix = common::unique_nats_prefix();
        let mut settings = nats_settings(&prefix, "contract-node");
        settings.lease = lease;
        let engine: Arc<dyn Engine> = NatsBroker::connect(settings).await.unwrap();
        let recorder = Arc::new(Recorder::default());
        let weak: Weak<dyn BrokerHandler> = Arc::downgrade(&recorder) as _;
        engine.set_handler(weak);
        Subject {
            engine,
            recorder,
            prefix: None,
            nats_prefix: Some(prefix),
        }
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
        let room: Arc<str> = Arc::from("r");
        s.engine.subscribe(&room).await.unwrap();
        let epoch = s.publish("r", "m1", false).await.epoch.to_string();
        s.wait_until("offset 1", |s| s.delivered("r").len() == 1)
            .await;
        store_unannounced(&prefix, 2, 3).await;
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
}
