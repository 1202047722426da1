//! [`ListReads`]: a room's member-list reads shared by the callers that
//! ask while one is under way.
//!
//! Every join of a room replies with the room's member list, so a
//! reconnect wave of n clients into an n-member room would read n lists
//! of n entries from the engine: O(n²) work for Redis or NATS at the very
//! moment a rolling restart moves every client of a node
//! ([design](../../../../docs/design.md#presence-in-a-reconnect-wave-brokerlist_readsrs)).
//! Here, per room and node, at most one read runs and at most one waits
//! behind it; every caller that asks meanwhile takes the waiting one. A
//! wave then costs a few reads, not one a join.
//!
//! The invariant: a caller only ever takes a read that had not started
//! when it asked. Its list therefore holds every change the caller made
//! before asking (its own presence join) and is no older than the ask,
//! which is what docs/protocol.md ("A member list and the events around
//! it") promises: the events that follow a list apply on top of it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use futures_util::FutureExt;
use futures_util::future::{BoxFuture, Shared, WeakShared};

use super::{BrokerError, PresencePage};
use crate::lock;

/// One read, awaited by every caller that took it.
type Read = Shared<BoxFuture<'static, Result<Arc<PresencePage>, BrokerError>>>;
/// A read as the table keeps it: gone once no caller awaits it.
type Weak = WeakShared<BoxFuture<'static, Result<Arc<PresencePage>, BrokerError>>>;

/// Rooms the table may hold before it sweeps out reads nobody awaits
/// (left by callers dropped half-way); doubles with the live ones.
const SWEEP_AT: usize = 1024;

/// The reads of every room on this node.
pub(crate) struct ListReads {
    rooms: Mutex<Table>,
    next_id: AtomicU64,
}

struct Table {
    rooms: HashMap<Arc<str>, Slot>,
    sweep_at: usize,
}

/// A room's read under way and the one waiting behind it, by id.
#[derive(Default)]
struct Slot {
    running: Option<(u64, Weak)>,
    waiting: Option<(u64, Weak)>,
}

impl Slot {
    fn live(&self) -> bool {
        let alive =
            |r: &Option<(u64, Weak)>| r.as_ref().is_some_and(|(_, w)| w.upgrade().is_some());
        alive(&self.running) || alive(&self.waiting)
    }
}

impl Default for ListReads {
    fn default() -> Self {
        Self {
            rooms: Mutex::new(Table {
                rooms: HashMap::new(),
                sweep_at: SWEEP_AT,
            }),
            next_id: AtomicU64::new(0),
        }
    }
}

impl ListReads {
    /// The room's member list as a read that starts after this call
    /// returns control, shared with the other callers that ask before it
    /// starts. `read` makes the engine's read; it is called only when this
    /// caller's read is a new one.
    pub(crate) async fn read(
        self: &Arc<Self>,
        room: &str,
        read: impl FnOnce(Arc<str>) -> BoxFuture<'static, Result<PresencePage, BrokerError>>,
    ) -> Result<Arc<PresencePage>, BrokerError> {
        let shared = {
            let mut table = lock(&self.rooms);
            let table = &mut *table;
            if table.rooms.len() >= table.sweep_at {
                table.rooms.retain(|_, slot| slot.live());
                table.sweep_at = SWEEP_AT.max(table.rooms.len() * 2);
            }
            let name = table
                .rooms
                .get_key_value(room)
                .map_or_else(|| Arc::from(room), |(name, _)| name.clone());
            let slot = table.rooms.entry(name.clone()).or_default();
            match slot.waiting.as_ref().and_then(|(_, w)| w.upgrade()) {
                Some(waiting) => waiting,
                None => {
                    let before = slot.running.as_ref().and_then(|(_, w)| w.upgrade());
                    let id = self.next_id.fetch_add(1, Ordering::Relaxed);
                    let this = self.clone();
                    let engine = read(name.clone());
                    let fut: Read = async move {
                        if let Some(before) = before {
                            // Its result is older than some of our
                            // callers' asks: only its end matters.
                            let _ = before.await;
                        }
                        this.started(&name, id);
                        let page = engine.await.map(Arc::new);
                        this.finished(&name, id);
                        page
                    }
                    .boxed()
                    .shared();
                    if let Some(weak) = fut.downgrade() {
                        slot.waiting = Some((id, weak));
                    }
                    fut
                }
            }
        };
        shared.await
    }

    /// Read `id` starts: callers asking from now on wait for the next.
    fn started(&self, room: &str, id: u64) {
        let mut table = lock(&self.rooms);
        if let Some(slot) = table.rooms.get_mut(room)
            && slot.waiting.as_ref().is_some_and(|(w, _)| *w == id)
        {
            slot.running = slot.waiting.take();
        }
    }

    /// Read `id` ended: the room leaves the table unless a read waits.
    fn finished(&self, room: &str, id: u64) {
        let mut table = lock(&self.rooms);
        let Some(slot) = table.rooms.get_mut(room) else {
            return;
        };
        if slot.running.as_ref().is_some_and(|(r, _)| *r == id) {
            slot.running = None;
        }
        if slot.running.is_none() && slot.waiting.is_none() {
            table.rooms.remove(room);
        }
    }

    /// Rooms in the table (tests: nothing is left behind).
    #[cfg(test)]
    fn len(&self) -> usize {
        lock(&self.rooms).rooms.len()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use tokio::sync::oneshot;

    use super::*;

    /// An engine whose reads each wait for a gate and answer with the
    /// read's number as the total.
    #[derive(Default)]
    struct Engine {
        reads: AtomicUsize,
        gates: Mutex<Vec<oneshot::Sender<()>>>,
    }

    impl Engine {
        fn read(
            self: &Arc<Self>,
        ) -> impl FnOnce(Arc<str>) -> BoxFuture<'static, Result<PresencePage, BrokerError>> + use<>
        {
            let this = self.clone();
            move |_room| {
                let n = this.reads.fetch_add(1, Ordering::SeqCst) + 1;
                let (tx, rx) = oneshot::channel();
                lock(&this.gates).push(tx);
                async move {
                    let _ = rx.await;
                    Ok(PresencePage {
                        members: Vec::new(),
                        total: n,
                    })
                }
                .boxed()
            }
        }

        /// Lets the oldest read still waiting answer.
        fn open_next(&self) {
            let mut gates = lock(&self.gates);
            if !gates.is_empty() {
                let _ = gates.remove(0).send(());
            }
        }
    }

    async fn settle() {
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
    }

    fn spawn_read(
        lists: &Arc<ListReads>,
        engine: &Arc<Engine>,
        room: &'static str,
    ) -> tokio::task::JoinHandle<usize> {
        let (lists, read) = (lists.clone(), engine.read());
        tokio::spawn(async move {
            match lists.read(room, read).await {
                Ok(page) => page.total,
                Err(e) => panic!("read failed: {e}"),
            }
        })
    }

    #[tokio::test]
    async fn callers_during_a_read_share_the_next_one_never_the_running_one() {
        let (lists, engine) = (Arc::new(ListReads::default()), Arc::new(Engine::default()));
        let first = spawn_read(&lists, &engine, "r");
        settle().await;
        assert_eq!(engine.reads.load(Ordering::SeqCst), 1);
        // Asked while read 1 runs: read 1 began before them, so they
        // must get a read that starts later, one for all of them.
        let later: Vec<_> = (0..50).map(|_| spawn_read(&lists, &engine, "r")).collect();
        settle().await;
        engine.open_next();
        assert_eq!(first.await.ok(), Some(1));
        settle().await;
        engine.open_next();
        for h in later {
            assert_eq!(h.await.ok(), Some(2));
        }
        assert_eq!(engine.reads.load(Ordering::SeqCst), 2);
        assert_eq!(lists.len(), 0, "a room with no read left leaves the table");
    }

    #[tokio::test]
    async fn rooms_read_on_their_own() {
        let (lists, engine) = (Arc::new(ListReads::default()), Arc::new(Engine::default()));
        let a = spawn_read(&lists, &engine, "a");
        let b = spawn_read(&lists, &engine, "b");
        settle().await;
        assert_eq!(engine.reads.load(Ordering::SeqCst), 2);
        engine.open_next();
        engine.open_next();
        assert_eq!(a.await.ok(), Some(1));
        assert_eq!(b.await.ok(), Some(2));
    }

    #[tokio::test]
    async fn a_caller_dropped_half_way_does_not_hold_the_room() {
        let (lists, engine) = (Arc::new(ListReads::default()), Arc::new(Engine::default()));
        let first = spawn_read(&lists, &engine, "r");
        settle().await;
        first.abort();
        let _ = first.await;
        // Read 1 is gone with its only caller (its gate never opens): the
        // next caller starts a read of its own at once.
        let next = spawn_read(&lists, &engine, "r");
        settle().await;
        assert_eq!(engine.reads.load(Ordering::SeqCst), 2);
        let gate = lock(&engine.gates).pop();
        let _ = gate.map(|g| g.send(()));
        assert_eq!(next.await.ok(), Some(2));
        assert_eq!(lists.len(), 0);
    }

    #[tokio::test]
    async fn a_failed_read_fails_its_callers_and_the_next_ask_reads_again() {
        let lists = Arc::new(ListReads::default());
        let fail = |_room: Arc<str>| {
            async {
                Err(BrokerError::Unavailable {
                    why: super::super::Unavailability::Down,
                    detail: "test".into(),
                })
            }
            .boxed()
        };
        assert!(lists.read("r", fail).await.is_err());
        let ok = |_room: Arc<str>| {
            async {
                Ok(PresencePage {
                    members: Vec::new(),
                    total: 7,
                })
            }
            .boxed()
        };
        assert_eq!(lists.read("r", ok).await.ok().map(|p| p.total), Some(7));
        assert_eq!(lists.len(), 0);
    }

    #[tokio::test]
    async fn the_table_sweeps_rooms_whose_reads_nobody_awaits() {
        let (lists, engine) = (Arc::new(ListReads::default()), Arc::new(Engine::default()));
        for i in 0..SWEEP_AT + 10 {
            let room: &'static str = Box::leak(format!("r{i}").into_boxed_str());
            let h = spawn_read(&lists, &engine, room);
            settle().await;
            h.abort();
            let _ = h.await;
        }
        assert!(lists.len() <= SWEEP_AT, "{} rooms held", lists.len());
    }
}
