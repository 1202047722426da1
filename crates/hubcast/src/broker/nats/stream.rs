//! A room's stream: publishing (offsets, idempotency), reading history and
//! recovery, and epochs.
//!
//! Invariants:
//! - a room's latest message in the stream carries its latest offset and
//!   epoch; a message is stored only with `Nats-Expected-Last-Subject-
//!   Sequence` equal to the sequence of the message it read them from (0
//!   when the room had none), so offsets are +1 per room whichever node
//!   publishes;
//! - a room with no message left starts a new run at offset 1 with the
//!   epoch its `e.<room>` key holds, unless a message already used that
//!   epoch (then history was lost: purged, expired, the stream recreated)
//!   and a new epoch is written first. So an offset is never reused within
//!   an epoch, and a reader of an empty room (`recover`, `history`) gets the
//!   epoch its first message will carry.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::{self, consumer, stream};
use bytes::Bytes;

use crate::broker::redis::codec;
use crate::broker::{
    BrokerError, ConnKey, HistoryPage, Publication, PublishRequest, PublishResult, Recovery,
};
use crate::protocol::json_string;
use crate::rules::History;

use super::kv::modify;
use super::{Shared, down, epoch, keys, tops};

const OFFSET: &str = "Hubcast-Offset";
const EPOCH: &str = "Hubcast-Epoch";
const NODE: &str = "Hubcast-Node";
const KEY: &str = "Hubcast-Key";
const MSG_ID: &str = "Nats-Msg-Id";
const EXPECTED_LAST: &str = "Nats-Expected-Last-Subject-Sequence";

/// Attempts of one publish racing other publishers of the room.
const MAX_ATTEMPTS: usize = 50;

/// A stored publication as read back.
#[derive(Debug, Clone)]
pub(super) struct Stored {
    pub(super) seq: u64,
    pub(super) offset: u64,
    pub(super) epoch: Arc<str>,
    pub(super) node: String,
    pub(super) key: String,
    pub(super) payload: Bytes,
    /// When it was stored, Unix ms.
    pub(super) time_ms: i64,
}

fn header<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).map(|v| v.as_str())
}

impl Stored {
    pub(super) fn from_parts(
        seq: u64,
        headers: Option<&HeaderMap>,
        payload: Bytes,
        time_ms: i64,
    ) -> Option<Stored> {
        let h = headers?;
        Some(Stored {
            seq,
            offset: header(h, OFFSET)?.parse().ok()?,
            epoch: Arc::from(header(h, EPOCH)?),
            node: header(h, NODE).unwrap_or_default().to_string(),
            key: header(h, KEY).unwrap_or_default().to_string(),
            payload,
            time_ms,
        })
    }
}

/// A JetStream time in Unix ms (a macro: the time type is not exported).
macro_rules! unix_ms {
    ($t:expr) => {
        ($t.unix_timestamp_nanos() / 1_000_000) as i64
    };
}

/// A storage type as `nats_storage` names it.
fn storage_name(s: stream::StorageType) -> &'static str {
    match s {
        stream::StorageType::File => "file",
        stream::StorageType::Memory => "memory",
    }
}

fn new_epoch() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..8].to_string()
}

impl Shared {
    /// Creates the stream, or updates its limits to `largest` (what the
    /// most generous room keeps).
    pub(super) async fn ensure_stream(&self, largest: History) -> Result<(), BrokerError> {
        // A message per room is always kept: it carries the room's offset.
        let per_subject = largest.size.max(1) as i64;
        let config = stream::Config {
            name: self.names.stream(),
            subjects: vec![self.names.stream_subjects()],
            max_messages_per_subject: per_subject,
            max_age: largest.ttl,
            duplicate_window: largest.ttl,
            storage: self.storage,
            allow_direct: true,
            ..Default::default()
        };
        match self.js.get_stream(&config.name).await {
            Ok(mut s) => {
                let info = s
                    .info()
                    .await
                    .map_err(|e| down(format!("stream info: {e}")))?;
                let c = &info.config;
                if c.storage != self.storage {
                    // JetStream cannot change it; serving on anyway would
                    // keep history where the operator said not to.
                    return Err(down(format!(
                        "stream {} is stored in {}, but nats_storage is {}: a stream's \
                         storage cannot change; delete the stream (its history goes) or set \
                         nats_storage to match",
                        config.name,
                        storage_name(c.storage),
                        storage_name(self.storage)
                    )));
                }
                if c.max_messages_per_subject != per_subject
                    || c.max_age != largest.ttl
                    || c.duplicate_window != largest.ttl
                {
                    self.js
                        .update_stream(&config)
                        .await
                        .map_err(|e| down(format!("update stream: {e}")))?;
                }
            }
            Err(_) => {
                self.js
                    .create_stream(config)
                    .await
                    .map_err(|e| down(format!("create stream: {e}")))?;
                // Its sequences start again: no position learnt before
                // holds (`tops`).
                self.tops.clear();
            }
        }
        self.stream_ok.store(true, Ordering::SeqCst);
        Ok(())
    }

    async fn stream(&self) -> Result<stream::Stream<()>, BrokerError> {
        if !self.stream_ok.load(Ordering::SeqCst) {
            self.ensure_stream(self.rules.largest()).await?;
        }
        self.js
            .get_stream_no_info(self.names.stream())
            .await
            .map_err(|e| down(format!("stream: {e}")))
    }

    /// The room's latest stored message, `None` when it has none.
    pub(super) async fn last(&self, room: &str) -> Result<Option<Stored>, BrokerError> {
        self.connected()?;
        let stream = self.stream().await?;
        match stream
            .get_last_raw_message_by_subject(&self.names.room_subject(room))
            .await
        {
            Ok(m) => Ok(Stored::from_parts(
                m.sequence,
                Some(&m.headers),
                m.payload,
                unix_ms!(m.time),
            )),
            Err(e) if e.kind() == stream::LastRawMessageErrorKind::NoMessageFound => Ok(None),
            Err(e) => {
                if e.to_string().contains("stream not found") {
                    self.stream_ok.store(false, Ordering::SeqCst);
                }
                Err(down(format!("last message of {room}: {e}")))
            }
        }
    }

    /// The room's messages from stream sequence `from` on (all with 0), in
    /// order, as far as the stream held them when the read began. Reads
    /// through a short-lived consumer filtered on the room.
    ///
    /// The result is whole or an error, never a silent prefix: a pull that
    /// ends before its messages came (the request expired on a busy server)
    /// is asked again, and the read ends early only when the server says
    /// nothing is left for the consumer (the rest was trimmed meanwhile). A
    /// short read would make `recover` report a recoverable room as lost.
    pub(super) async fn read(&self, room: &str, from: u64) -> Result<Vec<Stored>, BrokerError> {
        self.connected()?;
        let stream = self.stream().await?;
        let deliver_policy = if from == 0 {
            consumer::DeliverPolicy::All
        } else {
            consumer::DeliverPolicy::ByStartSequence {
                start_sequence: from,
            }
        };
        let mut c = stream
            .create_consumer(consumer::pull::Config {
                filter_subject: self.names.room_subject(room),
                deliver_policy,
                ack_policy: consumer::AckPolicy::None,
                inactive_threshold: Duration::from_secs(30),
                memory_storage: true,
                num_replicas: 1,
                ..Default::default()
            })
            .await
            .map_err(|e| down(format!("read {room}: {e}")))?;
        let name = c.cached_info().name.clone();
        let wanted = c.cached_info().num_pending;
        let r = super::pull::read_all(&mut c, room, wanted).await;
        let _ = stream.delete_consumer(&name).await;
        r
    }

    /// The epoch an empty room's next message gets (see [`epoch`]); with
    /// `claim`, the caller is about to store that message.
    pub(super) async fn run_epoch(&self, room: &str, claim: bool) -> Result<Arc<str>, BrokerError> {
        let fresh = new_epoch();
        let keep_ms = self.rules.largest().ttl.as_millis() as i64;
        let now_ms = crate::unix_ms();
        let epoch = modify(&self.state, &keys::epoch_key(room), |v| {
            epoch::next_run(&epoch::State::parse(v), claim, now_ms, keep_ms, &fresh)
        })
        .await?;
        Ok(Arc::from(epoch))
    }

    /// Marks a claimed epoch used once its run's first message is stored.
    async fn run_stored(&self, room: &str, stored: &str) -> Result<(), BrokerError> {
        modify(&self.state, &keys::epoch_key(room), |v| {
            (epoch::stored(&epoch::State::parse(v), stored), ())
        })
        .await
    }

    /// The room's position: its latest message, or, for an empty room, the
    /// epoch its next message will carry.
    pub(super) async fn position(
        &self,
        room: &str,
    ) -> Result<(u64, Arc<str>, Option<Stored>), BrokerError> {
        if let Some(last) = self.last(room).await? {
            return Ok((last.offset, last.epoch.clone(), Some(last)));
        }
        let epoch = self.run_epoch(room, false).await?;
        // A run's epoch is marked used only after its first message was
        // stored: if the key said so, that message is found now.
        match self.last(room).await? {
            Some(last) => Ok((last.offset, last.epoch.clone(), Some(last))),
            None => Ok((0, epoch, None)),
        }
    }

    pub(super) async fn publish(&self, req: PublishRequest) -> Result<PublishResult, BrokerError> {
        let gate = {
            let mut turns = self.turns.lock().unwrap_or_else(|e| e.into_inner());
            turns.entry(req.room.clone()).or_default().clone()
        };
        let _entry = TurnEntry {
            shared: self,
            room: req.room.clone(),
            gate: gate.clone(),
        };
        let _turn = gate.lock_owned().await;
        self.publish_in_turn(req).await
    }

    /// [`Shared::publish`] once the room's turn is this publish's.
    async fn publish_in_turn(&self, req: PublishRequest) -> Result<PublishResult, BrokerError> {
        let room = &*req.room;
        let subject = self.names.room_subject(room);
        let tail = Bytes::from(req.parts.tail().to_owned());
        // Every msgId goes in `Nats-Msg-Id` (a publish that times out is
        // answered with its msgId, the server's too, and the retry must
        // find the first attempt), but only the publisher's is checked: a
        // server msgId found again gets a suffix and is stored anew.
        let mut msg_id = format!("{}/{}", keys::encode(room), req.msg_id);
        // Where this node's last publish left the room; if another node
        // published since, the server refuses the expected sequence and
        // the next attempt reads the room.
        let mut known = self.tops.take(room);
        for _ in 0..MAX_ATTEMPTS {
            let (seq, top, epoch) = match known.take() {
                Some(t) => (t.seq, t.offset, t.epoch),
                None => match self.last(room).await? {
                    Some(last) => (last.seq, last.offset, last.epoch),
                    None => (0, 0, self.run_epoch(room, true).await?),
                },
            };
            let mut h = HeaderMap::new();
            // Per stream, not per room: the room is part of the id.
            h.insert(MSG_ID, msg_id.as_str());
            h.insert(EXPECTED_LAST, seq.to_string().as_str());
            h.insert(OFFSET, (top + 1).to_string().as_str());
            h.insert(EPOCH, &*epoch);
            h.insert(NODE, &*self.node);
            h.insert(
                KEY,
                req.skip.map(|k| k.to_string()).unwrap_or_default().as_str(),
            );
            self.connected()?;
            let sent = self
                .js
                .publish_with_headers(subject.clone(), h, tail.clone())
                .await
                .map_err(|e| down(format!("publish: {e}")))?;
            let ack = match sent.await {
                Ok(ack) => ack,
                Err(e) => match e.kind() {
                    jetstream::context::PublishErrorKind::WrongLastSequence => continue,
                    jetstream::context::PublishErrorKind::StreamNotFound => {
                        self.stream_ok.store(false, Ordering::SeqCst);
                        return Err(down(format!("publish: {e}")));
                    }
                    jetstream::context::PublishErrorKind::TimedOut
                    | jetstream::context::PublishErrorKind::BrokenPipe => {
                        return Err(BrokerError::Timeout {
                            msg_id: req.msg_id.clone(),
                            detail: format!("nats: {e}"),
                        });
                    }
                    _ => return Err(down(format!("publish: {e}"))),
                },
            };
            if ack.duplicate && !req.idempotent {
                msg_id = format!("{msg_id}/{}", new_epoch());
                continue;
            }
            if ack.duplicate {
                let original = self.original(ack.sequence).await?;
                return Ok(PublishResult {
                    offset: original.offset,
                    epoch: original.epoch,
                    duplicate: true,
                });
            }
            if seq == 0
                && let Err(e) = self.run_stored(room, &epoch).await
            {
                // The claim then lapses after the longest keep (see epoch).
                tracing::warn!(room, error = %e, "cannot mark the room's epoch used");
            }
            let stored = Stored {
                seq: ack.sequence,
                offset: top + 1,
                epoch: epoch.clone(),
                node: self.node.to_string(),
                key: req.skip.map(|k| k.to_string()).unwrap_or_default(),
                payload: tail,
                time_ms: crate::unix_ms(),
            };
            self.tops.put(
                &req.room,
                tops::Top {
                    seq: ack.sequence,
                    offset: top + 1,
                    epoch: epoch.clone(),
                },
            );
            self.announce(room, &stored).await;
            if req.webhook {
                let envelope =
                    codec::envelope(&json_string(room), top + 1, &epoch, &stored.payload);
                self.wh_published(room, envelope, req.parts.timestamp).await;
            }
            return Ok(PublishResult {
                offset: top + 1,
                epoch,
                duplicate: false,
            });
        }
        Err(down(format!(
            "publish to {room}: too many concurrent publishers"
        )))
    }

    /// The message stored at `seq` (the original of a duplicate).
    async fn original(&self, seq: u64) -> Result<Stored, BrokerError> {
        let stream = self.stream().await?;
        let m = stream
            .get_raw_message(seq)
            .await
            .map_err(|e| down(format!("message {seq}: {e}")))?;
        Stored::from_parts(m.sequence, Some(&m.headers), m.payload, unix_ms!(m.time))
            .ok_or_else(|| BrokerError::Internal(format!("message {seq} has no offset")))
    }

    /// A publication to hand out, its envelope built once.
    pub(super) fn publication(&self, room_json: &str, s: &Stored) -> Arc<Publication> {
        let skip = if s.node == *self.node {
            s.key.parse::<ConnKey>().ok()
        } else {
            None
        };
        Arc::new(Publication {
            offset: s.offset,
            epoch: s.epoch.clone(),
            skip,
            envelope: codec::envelope(room_json, s.offset, &s.epoch, &s.payload),
        })
    }

    /// Which of a room's stored messages are history under its rule.
    fn held(&self, room: &str, top: u64) -> impl Fn(&Stored) -> bool {
        let keep = self.rules.history(room);
        let since_ms = crate::unix_ms() - keep.ttl.as_millis() as i64;
        let from = (top + 1).saturating_sub(keep.size as u64);
        move |s: &Stored| s.time_ms >= since_ms && s.offset >= from
    }

    pub(super) async fn recover(
        &self,
        room: &str,
        since: Option<(u64, Option<&str>)>,
    ) -> Result<Recovery, BrokerError> {
        let (top, epoch, last) = self.position(room).await?;
        let mut rec = Recovery {
            top,
            epoch: epoch.clone(),
            recovered: false,
            publications: Vec::new(),
        };
        let Some((since, want)) = since else {
            return Ok(rec);
        };
        if want.is_some_and(|e| *e != *epoch) || since > top {
            return Ok(rec);
        }
        if since == top {
            rec.recovered = true;
            return Ok(rec);
        }
        let Some(_last) = last else {
            return Ok(rec);
        };
        let room_json = json_string(room);
        let held = self.held(room, top);
        let mut expect = since + 1;
        let mut pubs = Vec::new();
        for s in self.read(room, 0).await? {
            if s.epoch != epoch || s.offset < expect {
                continue;
            }
            if s.offset != expect || !held(&s) {
                return Ok(rec);
            }
            pubs.push(self.publication(&room_json, &s));
            expect += 1;
            if expect > top {
                break;
            }
        }
        if expect == top + 1 {
            rec.recovered = true;
            rec.publications = pubs;
        }
        Ok(rec)
    }

    pub(super) async fn history(
        &self,
        room: &str,
        since: Option<u64>,
        limit: usize,
    ) -> Result<HistoryPage, BrokerError> {
        let (top, epoch, last) = self.position(room).await?;
        if last.is_none() {
            return Ok(HistoryPage {
                epoch,
                publications: Vec::new(),
                complete: true,
            });
        }
        let held = self.held(room, top);
        let mut entries: Vec<Stored> = self
            .read(room, 0)
            .await?
            .into_iter()
            .filter(|s| s.epoch == epoch && held(s))
            .collect();
        let oldest = entries.first().map_or(top + 1, |s| s.offset);
        let complete = match since {
            Some(since) => {
                entries.retain(|s| s.offset > since);
                entries.truncate(limit);
                since >= top || entries.first().is_some_and(|s| s.offset == since + 1)
            }
            None => {
                let skip = entries.len().saturating_sub(limit);
                entries.drain(..skip);
                oldest <= 1
            }
        };
        let room_json = json_string(room);
        Ok(HistoryPage {
            epoch,
            publications: entries
                .iter()
                .map(|s| self.publication(&room_json, s))
                .collect(),
            complete,
        })
    }
}

/// A publish's hold on its room's entry in [`Shared::turns`]: the last
/// holder or waiter to go (finished or cancelled) removes the entry.
/// Clones of the gate are made only under the map's lock, so its count
/// cannot rise while this one looks at it.
struct TurnEntry<'a> {
    shared: &'a Shared,
    room: Arc<str>,
    gate: Arc<tokio::sync::Mutex<()>>,
}

impl Drop for TurnEntry<'_> {
    fn drop(&mut self) {
        let mut turns = self.shared.turns.lock().unwrap_or_else(|e| e.into_inner());
        // The map's and this one's: nobody else holds or waits.
        if Arc::strong_count(&self.gate) == 2 {
            turns.remove(&self.room);
        }
    }
}
