//! [`App`]: the state every handler and connection task shares.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use arc_swap::ArcSwap;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::broker::{self, Broker, PresenceManager};
use crate::config::Config;
use crate::hub::Hub;
use crate::reload::Live;
use crate::{http, lock, metrics, protocol, recent};

/// Rate samples kept: one a second, so the rates cover the last 10 s.
const SAMPLES: usize = 11;

/// Shared server state.
pub(crate) struct App {
    /// The settings the server started with: what the keys that need a
    /// restart say. The reloadable ones are read from [`App::live`].
    pub config: Config,
    /// The settings a SIGHUP reloads, with the token keys and room rules
    /// built from them (`crate::reload`).
    pub live: ArcSwap<Live>,
    /// Node-local rooms and fan-out.
    pub hub: Arc<Hub>,
    /// The engine behind the hub.
    pub broker: Arc<dyn Broker>,
    /// The same engine's presence and user status.
    pub presence: Arc<dyn PresenceManager>,
    /// Member-list reads shared by the joins of a reconnect wave.
    pub lists: Arc<broker::list_reads::ListReads>,
    /// The same engine's cluster-wide user controls.
    pub user_controls: Arc<dyn broker::UserControls>,
    /// This node's blocks and revocations, checked at every handshake.
    pub controls: Arc<crate::controls::Controls>,
    /// Fires on SIGTERM/SIGINT (or when a test says so): `/readyz`
    /// answers 503 from then on (`crate::drain`).
    pub draining: CancellationToken,
    /// Fires `drain_delay` after `draining`: new handshakes get 503 and
    /// the open connections are being closed.
    pub shutdown: CancellationToken,
    /// Fires once every close is decided: the accept loop and the
    /// background tasks end.
    pub stop: CancellationToken,
    /// Owns every connection task, so shutdown can wait for them.
    pub tasks: TaskTracker,
    /// Next node-local connection key.
    pub next_conn: AtomicU64,
    /// Connections open now, by transport.
    pub open: Arc<metrics::OpenCounts>,
    /// Connection caps and handshake rates.
    pub limits: Arc<http::limits::ConnLimits>,
    /// Renders `/metrics` (none when another recorder was installed).
    pub metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
    /// When the server started.
    pub started: Instant,
    /// Messages accepted for publishing on this node since start.
    pub published: AtomicU64,
    /// (time, published, delivered) once a second, for `/api/stats` rates.
    pub samples: Mutex<VecDeque<(Instant, u64, u64)>>,
    /// Recent errors and notable closes, for the dashboard.
    pub recent: Arc<recent::Recent>,
    /// The webhooks in force (`[[webhooks]]`, reloadable).
    pub webhooks: crate::webhooks::Webhooks,
}

impl App {
    /// A room's presence as every reply lists it: nobody for a personal
    /// room or one whose rule keeps no presence, else the first
    /// `max_presence_members` and the total, read after this call (never
    /// older than the ask) and shared with the callers that ask while it
    /// waits to start (`broker::list_reads`).
    pub(crate) async fn presence_page(
        &self,
        room: &str,
    ) -> Result<Arc<broker::PresencePage>, broker::BrokerError> {
        if !self.keeps_presence(room) {
            return Ok(Arc::default());
        }
        let max = self.live().config.max_presence_members;
        let engine = self.presence.clone();
        self.lists
            .read(room, move |room| {
                Box::pin(async move { engine.list(&room, max).await })
            })
            .await
    }

    /// Whether the room's members are recorded and listed: never for a
    /// personal room, and not where the room's rule says `presence = false`
    /// (its joins and leaves then cost the engine nothing).
    pub(crate) fn keeps_presence(&self, room: &str) -> bool {
        !protocol::is_personal(room) && self.live().rules.for_room(room).presence
    }

    /// The settings in force now: one atomic load, no lock.
    pub(crate) fn live(&self) -> arc_swap::Guard<Arc<Live>> {
        self.live.load()
    }

    /// Marks a publish whose `message.published` some webhook wants: the
    /// engine then records the event with the message, in one step.
    pub(crate) fn mark_for_webhooks(&self, req: &mut broker::PublishRequest) {
        req.webhook = self.webhooks.wants_messages(&req.room);
    }

    /// The backend hooks' client in force (`[hooks]`, reloadable); none
    /// without a `url`. Owned, so that a hook call may await while a
    /// reload swaps in another client.
    pub(crate) fn hooks(&self) -> Option<Arc<crate::hooks::Hooks>> {
        self.live.load().hooks.clone()
    }

    /// Counts a message accepted for publishing (a duplicate is not one)
    /// for `/metrics` and `/api/stats`.
    pub(crate) fn count_published(&self, entry: metrics::Entry) {
        let m = metrics::handles();
        match entry {
            metrics::Entry::Ws => m.published_ws.increment(1),
            metrics::Entry::Http => m.published_http.increment(1),
        }
        self.published.fetch_add(1, Ordering::Relaxed);
    }

    /// Records one rate sample (published, delivered) now.
    pub(crate) fn sample(&self) {
        let row = (
            Instant::now(),
            self.published.load(Ordering::Relaxed),
            self.hub.delivered(),
        );
        let mut s = lock(&self.samples);
        s.push_back(row);
        while s.len() > SAMPLES {
            s.pop_front();
        }
    }

    /// Messages published and delivered per second over the last samples
    /// (up to 10 s).
    pub(crate) fn rates(&self) -> (f64, f64) {
        let s = lock(&self.samples);
        match (s.front(), s.back()) {
            (Some(a), Some(b)) if b.0 > a.0 => {
                let dt = (b.0 - a.0).as_secs_f64();
                (
                    b.1.saturating_sub(a.1) as f64 / dt,
                    b.2.saturating_sub(a.2) as f64 / dt,
                )
            }
            _ => (0.0, 0.0),
        }
    }
}
