//! The broker contract: one set of cases run against every engine, through
//! the `Broker` and `PresenceManager` traits only. Adding an engine is one
//! name in `contract!` below plus its arm in `Subject::start`.
//!
//! The Redis engine's gap handling (what pub/sub lost is read back from the
//! room's stream, in order, or reported with `on_reset`) is Redis-specific:
//! its cases are in `redis_gaps.rs`, the NATS engine's own in
//! `nats_engine.rs`; the cases every engine runs are in `cases.rs`.
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
        Self::of(engine, prefix, nats_prefix)
    }

    /// `engine` under test with a recorder as its handler; the prefixes
    /// are cleaned up when the subject is dropped.
    fn of(engine: Arc<dyn Engine>, prefix: Option<String>, nats_prefix: Option<String>) -> Subject {
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
        memory_storage: false,
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
mod cases;

/// Webhooks' `message.published` is recorded by the publish itself (the
/// request says a webhook wants it), so an acknowledged publish has its
/// event in the log whatever happens to the node next; a publish nobody
/// wants and a duplicate record nothing.
mod webhook_log;

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
                    a_join_wave_into_one_room_lets_everyone_in,
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
mod redis_gaps;

/// The NATS engine's own cases: gaps in what core NATS delivered are filled
/// from the room's stream; a room whose history was purged starts a new
/// epoch and its subscribers are reset; a dead node's presence is reaped.
/// Messages lost on the way are simulated by storing them in the stream
/// behind the engine's back (never announced).
mod nats_engine;
