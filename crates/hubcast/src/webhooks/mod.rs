//! Webhooks (PROTOCOL.md section 10): the server tells the application's
//! backend what happened, after the fact, at least once.
//!
//! The engine decides the events and keeps them in its log
//! (`crate::broker::webhooks`); this module is the node's side: each
//! `[[webhooks]]` table is a [`Target`] with its filters, delivered by a
//! loop of its own (`deliver`) while this node holds the webhook's lease,
//! and one promoter moves the delayed events (`room.vacated`,
//! `user.offline`) into the log when they are due. `message.published` is
//! recorded by the engine with the message itself (the publish request
//! says so when [`Webhooks::wants_messages`]), so an acknowledged publish
//! has its event whatever happens to the node next.
//!
//! A SIGHUP reloads `[[webhooks]]` ([`Webhooks::apply`]): a table left as
//! it was keeps its loop; one removed stops; one added starts.

mod deliver;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::RoomPattern;
use crate::broker::{EventType, WebhookEvent, WebhookLog};
use crate::config::{Config, WebhookTable};
use crate::{lock, protocol};

/// How often due delayed events are looked for.
const PROMOTE_EVERY: Duration = Duration::from_millis(200);

/// One `[[webhooks]]` table, ready to filter and deliver.
pub(crate) struct Target {
    /// Its table's number (from 1), the metrics' `webhook` label.
    pub(crate) label: String,
    /// The engine's consumer group: a digest of the table, so that the
    /// same webhook keeps its place across restarts and reorderings.
    pub(crate) group: String,
    url: String,
    secret: Box<[u8]>,
    events: HashSet<EventType>,
    rooms: RoomPattern,
}

impl Target {
    fn new(n: usize, table: &WebhookTable) -> Result<Target, String> {
        let mut digest = Sha256::new();
        for part in [&table.url, &table.rooms] {
            digest.update(part.as_bytes());
            digest.update([0]);
        }
        for e in &table.events {
            digest.update(e.as_bytes());
            digest.update([0]);
        }
        let group: String = digest.finalize()[..8]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        Ok(Target {
            label: n.to_string(),
            group: format!("wh-{group}"),
            url: table.url.clone(),
            secret: table.secret.as_bytes().into(),
            events: table
                .events
                .iter()
                .map(|e| EventType::parse(e).ok_or_else(|| format!("unknown event {e:?}")))
                .collect::<Result<_, _>>()?,
            rooms: RoomPattern::parse(&table.rooms)?,
        })
    }

    /// Whether this webhook sends `event`: its type is asked for, and its
    /// room (if it has one) matches `rooms` and is not a personal room.
    pub(crate) fn wants(&self, event: &WebhookEvent) -> bool {
        self.events.contains(&event.kind)
            && event
                .room
                .as_deref()
                .is_none_or(|room| self.wants_room(room))
    }

    fn wants_room(&self, room: &str) -> bool {
        !protocol::is_personal(room) && self.rooms.matches(room)
    }
}

/// A delivery loop running: the table and `webhook_retry_for` it was
/// started with, its target, and what stops it.
struct Running {
    table: WebhookTable,
    retry_for: Duration,
    target: Arc<Target>,
    stop: CancellationToken,
}

/// The webhooks in force (`[[webhooks]]`, reloadable): their delivery
/// loops, and the targets a publish checks.
pub(crate) struct Webhooks {
    log: Arc<dyn WebhookLog>,
    /// The targets in force, read without a lock by every publish.
    targets: ArcSwap<Vec<Arc<Target>>>,
    /// The loops running. Changed by [`Webhooks::apply`] only, which the
    /// start and the reloads call one after the other; never held across
    /// an await.
    running: Mutex<Vec<Running>>,
    /// The promoter runs (started with the first webhook, for good).
    promoting: AtomicBool,
}

impl Webhooks {
    /// No webhook yet over the engine's log: [`Webhooks::apply`] starts
    /// those of a config.
    pub(crate) fn new(log: Arc<dyn WebhookLog>) -> Webhooks {
        Webhooks {
            log,
            targets: ArcSwap::from_pointee(Vec::new()),
            running: Mutex::new(Vec::new()),
            promoting: AtomicBool::new(false),
        }
    }

    /// Makes `config`'s webhooks the ones in force: tells the engine which
    /// to record for (and `webhook_offline_delay`), then stops the loops
    /// of the tables gone or changed and starts those of the new ones, on
    /// `tasks` until `stop`. A table unchanged (and `webhook_retry_for`
    /// with it) keeps its loop, mid-retry or not; a changed one starts
    /// again where its group stands in the log (same url, events and
    /// rooms: same group). Without any webhook the engine records nothing.
    pub(crate) async fn apply(
        &self,
        config: &Config,
        tasks: &TaskTracker,
        stop: &CancellationToken,
    ) -> anyhow::Result<()> {
        let targets: Vec<Target> = config
            .webhooks
            .iter()
            .enumerate()
            .map(|(i, t)| {
                Target::new(i + 1, t).map_err(|e| anyhow::anyhow!("webhooks[{}]: {e}", i + 1))
            })
            .collect::<anyhow::Result<_>>()?;
        let retry_for = Duration::from_secs(config.webhook_retry_for);
        let groups: Vec<String> = targets.iter().map(|t| t.group.clone()).collect();
        let had_any = !lock(&self.running).is_empty();
        if !groups.is_empty() || had_any {
            self.log
                .enable_webhooks(&groups, Duration::from_secs(config.webhook_offline_delay))
                .await
                .map_err(|e| anyhow::anyhow!("webhooks: {e}"))?;
        }
        let http = crate::hooks::http_client();
        let mut running = lock(&self.running);
        let mut kept: Vec<Running> = Vec::new();
        for r in running.drain(..) {
            let same = r.retry_for == retry_for
                && config.webhooks.contains(&r.table)
                && !kept.iter().any(|k| k.table == r.table);
            if same {
                kept.push(r);
            } else {
                r.stop.cancel();
            }
        }
        for (table, target) in config.webhooks.iter().zip(targets) {
            if kept.iter().any(|k| &k.table == table) {
                continue;
            }
            let target = Arc::new(target);
            let token = stop.child_token();
            tasks.spawn(deliver::run(deliver::Delivery {
                target: target.clone(),
                log: self.log.clone(),
                http: http.clone(),
                retry_for,
                stop: token.clone(),
            }));
            kept.push(Running {
                table: table.clone(),
                retry_for,
                target,
                stop: token,
            });
        }
        // In the file's order.
        kept.sort_by_key(|r| config.webhooks.iter().position(|t| *t == r.table));
        self.targets
            .store(Arc::new(kept.iter().map(|r| r.target.clone()).collect()));
        let any = !kept.is_empty();
        *running = kept;
        drop(running);
        if any && !self.promoting.swap(true, Ordering::SeqCst) {
            tasks.spawn(promote(self.log.clone(), stop.clone()));
        }
        Ok(())
    }

    /// Whether a message published in `room` is sent to some webhook: the
    /// engine then records its `message.published` with the message.
    pub(crate) fn wants_messages(&self, room: &str) -> bool {
        self.targets
            .load()
            .iter()
            .any(|t| t.events.contains(&EventType::MessagePublished) && t.wants_room(room))
    }
}

/// Moves the delayed events that are due into the log until `stop`.
async fn promote(log: Arc<dyn WebhookLog>, stop: CancellationToken) {
    let mut tick = tokio::time::interval(PROMOTE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        if let Err(e) = log.promote().await {
            tracing::warn!(error = %e, "webhooks: promoting delayed events failed");
        }
    }
}
