//! The run's clients, all on the Rust client (`hubcast-client`): it
//! reconnects, rejoins with `since`, dedupes, and sends a publish whose ack
//! was lost again with the same msgId. Subscribers record every delivery
//! and every gap they were told of; publishers record every ack.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use hubcast_client::{Client, Error as ClientError, Event, Joined, Options, Publish, backoff};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::lock::lock;

use super::Owned;

/// What a subscriber saw in one room, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Entry {
    /// A message, delivered.
    Msg {
        epoch: String,
        offset: u64,
        msg_id: String,
    },
    /// Told that messages were missed: the room is at `offset` of `epoch`
    /// now (`recovered: false`, or a new epoch).
    Told { epoch: String, offset: u64 },
}

/// One room of one subscriber.
#[derive(Debug, Default, Clone)]
pub(crate) struct RoomLog {
    /// The room's position when the subscriber first joined.
    pub start: Option<(String, u64)>,
    pub entries: Vec<Entry>,
    /// Where the subscriber is now.
    pub pos: Option<(String, u64)>,
}

/// Everything one subscriber saw.
#[derive(Debug, Default, Clone)]
pub(crate) struct SubLog {
    pub rooms: HashMap<String, RoomLog>,
    /// Connections made (the first and each reconnect).
    pub welcomes: u64,
    /// Frames the client could not decode.
    pub unreadable: u64,
    /// First joins the server refused for a passing reason, and that were
    /// sent again ([`join_retrying`]).
    pub join_retries: u64,
}

/// One acknowledged publish.
#[derive(Debug, Clone)]
pub(crate) struct AckRec {
    pub room: String,
    pub offset: u64,
    pub epoch: String,
    pub msg_id: String,
    /// The ack said the msgId had been published already (a retry).
    pub duplicate: bool,
    /// Calls of `publish` it took (the client's own resends not counted).
    pub attempts: u32,
}

/// What the publishers did.
#[derive(Debug, Default)]
pub(crate) struct PubLog {
    pub acks: Vec<AckRec>,
    /// Publish calls that failed (and were retried with the same msgId).
    pub errors: u64,
    /// Messages given up on after publishing stopped (never acked).
    pub abandoned: u64,
    /// Publishers done since publishing stopped.
    pub finished: usize,
}

/// A subscriber: its client and what it saw.
pub(crate) struct Subscriber {
    pub client: Client,
    pub log: Arc<Mutex<SubLog>>,
}

/// Subscribers joining their rooms at the same time while the run starts.
const JOINING_AT_ONCE: usize = 50;

/// The client settings of the run: quick to notice a dead link and to
/// come back, so faults of seconds show as reconnects. `patient`: no link
/// is cut (the rolling schedule), so a slow answer is only slow, not a
/// dead link, and the client waits as an application's would.
fn options(name: String, patient: bool) -> Options {
    let (connect, ping, pong) = if patient { (10, 5, 10) } else { (3, 1, 2) };
    Options {
        name: Some(name),
        min_delay: Duration::from_millis(100),
        max_delay: Duration::from_secs(1),
        stable_after: Duration::from_secs(5),
        connect_timeout: Duration::from_secs(connect),
        ping_interval: Duration::from_secs(ping),
        ping_timeout: Duration::from_secs(pong),
        publish_timeout: Duration::from_secs(10),
        request_timeout: Duration::from_secs(5),
        ..Options::default()
    }
}

/// The clients; their tasks stop when this is dropped.
pub(crate) struct Clients {
    pub subscribers: Vec<Subscriber>,
    publishers: Vec<Arc<Client>>,
    pub publog: Arc<Mutex<PubLog>>,
    /// Publishers stop starting new messages.
    stop_publishing: CancellationToken,
    owned: Owned,
}

impl Clients {
    /// Subscriber `i` connects to `urls[i % n]` and joins every room;
    /// [`JOINING_AT_ONCE`] of them at a time.
    pub(crate) async fn subscribe(
        urls: &[String],
        count: usize,
        rooms: &[String],
        patient: bool,
    ) -> anyhow::Result<Clients> {
        let owned = Owned::default();
        let mut subscribers = Vec::new();
        for i in 0..count {
            let url = &urls[i % urls.len()];
            let (client, mut events) = Client::connect(url, options(format!("sub{i}"), patient));
            let log = Arc::new(Mutex::new(SubLog::default()));
            let l = log.clone();
            owned.spawn(async move {
                while let Some(ev) = events.recv().await {
                    record(&mut lock(&l), ev);
                }
            });
            subscribers.push(Subscriber { client, log });
        }
        for batch in subscribers.chunks(JOINING_AT_ONCE) {
            let joins = batch.iter().enumerate().map(|(i, s)| async move {
                for room in rooms {
                    let (j, retries) = tokio::time::timeout(
                        JOIN_WITHIN + Duration::from_secs(20),
                        join_retrying(async || s.client.join(room).await, JOIN_WITHIN),
                    )
                    .await
                    .with_context(|| format!("subscriber {i}: join {room}: timeout"))?
                    .with_context(|| format!("subscriber {i}: join {room}"))?;
                    let mut g = lock(&s.log);
                    g.join_retries += u64::from(retries);
                    let r = g.rooms.entry(room.clone()).or_default();
                    r.start = Some((j.epoch.clone(), j.offset));
                    r.pos.get_or_insert((j.epoch, j.offset));
                }
                anyhow::Ok(())
            });
            for r in futures_util::future::join_all(joins).await {
                r?;
            }
        }
        Ok(Clients {
            subscribers,
            publishers: Vec::new(),
            publog: Arc::new(Mutex::new(PubLog::default())),
            stop_publishing: CancellationToken::new(),
            owned,
        })
    }

    /// Starts `count` publishers, publisher `j` on `urls[(j + 1) % n]`, each
    /// publishing `rate` messages a second round the rooms.
    pub(crate) fn publish(
        &mut self,
        urls: &[String],
        count: usize,
        rooms: &[String],
        rate: f64,
        run: &str,
        patient: bool,
    ) {
        let interval = Duration::from_secs_f64(1.0 / rate.max(0.1));
        for j in 0..count {
            let url = &urls[(j + 1) % urls.len()];
            let (client, mut events) = Client::connect(url, options(format!("pub{j}"), patient));
            let client = Arc::new(client);
            self.publishers.push(client.clone());
            // Nobody reads a publisher's events; they are drained so the
            // channel does not grow.
            self.owned
                .spawn(async move { while events.recv().await.is_some() {} });
            let p = Publisher {
                j,
                client,
                rooms: rooms.to_vec(),
                interval,
                run: run.to_string(),
                log: self.publog.clone(),
                stop: self.stop_publishing.clone(),
            };
            self.owned.spawn(p.run());
        }
    }

    /// Stops publishing and waits (at most `within`) until every message
    /// begun is acked or given up on.
    pub(crate) async fn stop_publishing(&self, within: Duration) {
        self.stop_publishing.cancel();
        let publishers = self.publishers.len();
        let _ = tokio::time::timeout(within, async {
            while lock(&self.publog).finished < publishers {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
        .await;
    }
}

/// How long a subscriber keeps sending again a first join refused for a
/// passing reason before the run fails.
const JOIN_WITHIN: Duration = Duration::from_secs(60);

/// The backoff of those retries: full jitter under a cap that starts here
/// and doubles per refusal, up to [`JOIN_RETRY_MAX`].
const JOIN_RETRY_MIN: Duration = Duration::from_millis(200);
const JOIN_RETRY_MAX: Duration = Duration::from_secs(5);

/// Runs `join` until the server answers it: a refusal for a passing
/// reason (`unavailable`, `timeout`, `rate_limited`, which thousands of
/// subscribers joining through a balancer while nodes drain and start can
/// meet) is sent again after a backoff with full jitter, as the client
/// retries a refused rejoin, until `within` has passed; any other refusal
/// is the answer. Returns the reply and how many refusals came before it.
async fn join_retrying(
    mut join: impl AsyncFnMut() -> Result<Joined, ClientError>,
    within: Duration,
) -> Result<(Joined, u32), ClientError> {
    let give_up = tokio::time::Instant::now() + within;
    let mut refused = 0;
    loop {
        match join().await {
            Ok(j) => return Ok((j, refused)),
            Err(e) if e.is_passing() => {
                let pause = backoff::delay(
                    JOIN_RETRY_MIN,
                    JOIN_RETRY_MAX,
                    refused,
                    backoff::random_fraction(),
                );
                if tokio::time::Instant::now() + pause >= give_up {
                    return Err(e);
                }
                refused += 1;
                tokio::time::sleep(pause).await;
            }
            Err(e) => return Err(e),
        }
    }
}

fn record(log: &mut SubLog, ev: Event) {
    match ev {
        Event::Message(m) => {
            let r = log.rooms.entry(m.room).or_default();
            r.pos = Some((m.epoch.clone(), m.offset));
            r.entries.push(Entry::Msg {
                epoch: m.epoch,
                offset: m.offset,
                msg_id: m.msg_id,
            });
        }
        Event::Unrecovered {
            room,
            epoch,
            offset,
        } => {
            let r = log.rooms.entry(room).or_default();
            r.pos = Some((epoch.clone(), offset));
            r.entries.push(Entry::Told { epoch, offset });
        }
        Event::Welcome { .. } => log.welcomes += 1,
        Event::Unreadable(_) => log.unreadable += 1,
        _ => {}
    }
}

/// One publisher's loop.
struct Publisher {
    j: usize,
    client: Arc<Client>,
    rooms: Vec<String>,
    interval: Duration,
    run: String,
    log: Arc<Mutex<PubLog>>,
    stop: CancellationToken,
}

/// After publishing stops, how long a message already begun is retried.
const FINISH_WITHIN: Duration = Duration::from_secs(30);

impl Publisher {
    async fn run(self) {
        let mut seq: u64 = 0;
        while !self.stop.is_cancelled() {
            let room = &self.rooms[(self.j + seq as usize) % self.rooms.len()];
            self.one(room, seq).await;
            seq += 1;
            tokio::select! {
                _ = self.stop.cancelled() => {}
                _ = tokio::time::sleep(self.interval) => {}
            }
        }
        lock(&self.log).finished += 1;
    }

    /// Publishes one message until it is acked: every call with the same
    /// msgId, so however many attempts went through, it is one message.
    async fn one(&self, room: &str, seq: u64) {
        let msg_id = format!("{}-p{}-{seq}", self.run, self.j);
        let mut attempts = 0;
        let mut give_up = None;
        loop {
            attempts += 1;
            let p = Publish {
                msg_id: Some(msg_id.clone()),
                echo: false,
                timeout: Some(Duration::from_secs(10)),
            };
            let data = json!({"p": self.j, "seq": seq});
            match self.client.publish_with(room, "fault.test", data, p).await {
                Ok(ack) => {
                    lock(&self.log).acks.push(AckRec {
                        room: ack.room,
                        offset: ack.offset,
                        epoch: ack.epoch,
                        msg_id: ack.msg_id,
                        duplicate: ack.duplicate,
                        attempts,
                    });
                    return;
                }
                Err(_) => {
                    lock(&self.log).errors += 1;
                    if self.stop.is_cancelled() {
                        let end = *give_up
                            .get_or_insert_with(|| tokio::time::Instant::now() + FINISH_WITHIN);
                        if tokio::time::Instant::now() >= end {
                            lock(&self.log).abandoned += 1;
                            return;
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
