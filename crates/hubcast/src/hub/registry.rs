//! The table of open connections (WebSocket connections and SSE streams),
//! sharded by key: how a shutdown, and a user control, reach every
//! connection (rooms are the wrong table for it: a connection may be in
//! none, or in many).

use std::collections::HashSet;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};

use super::Subscriber;
use crate::broker::ConnKey;
use crate::lock;

const SHARDS: usize = 64;

/// One shard of open connections.
type Shard = Mutex<HashSet<Arc<dyn Subscriber>>>;

/// Open connections by key, each shard behind a `std` mutex that is never
/// held across an `.await`.
pub(super) struct Connections {
    shards: Box<[Shard]>,
}

// A subscriber is identified by its key: the set holds one pointer per
// connection and finds it by the connection itself.
impl Hash for dyn Subscriber {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.key().hash(state);
    }
}

impl PartialEq for dyn Subscriber {
    fn eq(&self, other: &Self) -> bool {
        self.key() == other.key()
    }
}

impl Eq for dyn Subscriber {}

impl Connections {
    pub(super) fn new() -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
        }
    }

    fn shard(&self, key: ConnKey) -> &Shard {
        &self.shards[key as usize % SHARDS]
    }

    pub(super) fn insert(&self, conn: Arc<dyn Subscriber>) {
        lock(self.shard(conn.key())).insert(conn);
    }

    pub(super) fn remove(&self, conn: &dyn Subscriber) {
        lock(self.shard(conn.key())).remove(conn);
    }

    /// Every open connection now, one shard locked at a time.
    pub(super) fn snapshot(&self) -> Vec<Arc<dyn Subscriber>> {
        let mut all = Vec::new();
        for shard in self.shards.iter() {
            all.extend(lock(shard).iter().cloned());
        }
        all
    }

    /// Calls `f` on every open connection, one shard locked at a time.
    pub(super) fn for_each(&self, mut f: impl FnMut(&dyn Subscriber)) {
        for shard in self.shards.iter() {
            for entry in lock(shard).iter() {
                f(&**entry);
            }
        }
    }
}
