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

mod deliver;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::RoomPattern;
use crate::broker::{BrokerError, EventType, WebhookEvent, WebhookLog};
use crate::config::{Config, WebhookTable};
use crate::protocol;

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

/// Every webhook of the config.
pub(crate) struct Webhooks {
    targets: Vec<Arc<Target>>,
    log: Arc<dyn WebhookLog>,
    retry_for: Duration,
    delay: Duration,
}

impl Webhooks {
    /// The webhooks of `config` over the engine's log; `None` without any.
    pub(crate) fn new(
        config: &Config,
        log: Arc<dyn WebhookLog>,
    ) -> anyhow::Result<Option<Webhooks>> {
        if config.webhooks.is_empty() {
            return Ok(None);
        }
        let targets = config
            .webhooks
            .iter()
            .enumerate()
            .map(|(i, t)| {
                Target::new(i + 1, t)
                    .map(Arc::new)
                    .map_err(|e| anyhow::anyhow!("webhooks[{}]: {e}", i + 1))
            })
            .collect::<anyhow::Result<_>>()?;
        Ok(Some(Webhooks {
            targets,
            log,
            retry_for: Duration::from_secs(config.webhook_retry_for),
            delay: Duration::from_secs(config.webhook_offline_delay),
        }))
    }

    /// Tells the engine to record events, then starts the delivery loops
    /// and the promoter on `tasks`; they end when `stop` fires.
    pub(crate) async fn start(
        &self,
        tasks: &TaskTracker,
        stop: &CancellationToken,
    ) -> Result<(), BrokerError> {
        let groups: Vec<String> = self.targets.iter().map(|t| t.group.clone()).collect();
        self.log.enable_webhooks(&groups, self.delay).await?;
        let http = crate::hooks::http_client();
        for target in &self.targets {
            tasks.spawn(deliver::run(deliver::Delivery {
                target: target.clone(),
                log: self.log.clone(),
                http: http.clone(),
                retry_for: self.retry_for,
                stop: stop.clone(),
            }));
        }
        tasks.spawn(promote(self.log.clone(), stop.clone()));
        Ok(())
    }

    /// Whether a message published in `room` is sent to some webhook: the
    /// engine then records its `message.published` with the message.
    pub(crate) fn wants_messages(&self, room: &str) -> bool {
        self.targets
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
