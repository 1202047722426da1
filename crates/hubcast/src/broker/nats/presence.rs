//! Room presence and user status in JetStream key-value buckets (the
//! node leases that keep them true are `nodes`).
//!
//! A room's presence is one key (`p.<room>`: connection id → user, name,
//! node) and a user's status another (`u.<user>`: status, name, open
//! connections with their node, rooms, last seen), each changed by
//! compare-and-set, so two nodes changing one key concurrently both land.
//! A node's changes of one room's presence are written together, by one
//! writer per room (`room_writes`). The node whose change made a user's
//! first connection join a room (or its last leave) sends the presence
//! event on the room's live subject, and records the webhook events the
//! change decided (`webhooks`). What this node wrote is kept in its
//! registry too, to write again if its lease runs out.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};

use crate::broker::lease::{NodeEntries, Registry};
use crate::broker::redis::codec::parse_status;
use crate::broker::{
    BrokerError, ClientInfo, PresenceEvent, PresenceManager, PresencePage, UserStatus,
};
use crate::protocol::{Member, PresenceAction, Status};

use super::kv::modify;
use super::room_writes::Change;
use super::webhooks::Pending;
use super::{NatsBroker, Shared, down, keys};

/// Status reads a member list keeps in flight at once.
const STATUS_READS: usize = 32;

/// A room's presence: connection id → entry.
pub(super) type RoomPresence = BTreeMap<String, PresenceEntry>;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct PresenceEntry {
    pub u: String,
    pub n: String,
    /// The node holding the connection.
    pub d: String,
}

/// A user's status record.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(super) struct UserRecord {
    /// Status (`online`, `away`, `busy`, `offline`).
    s: String,
    /// Display name.
    n: String,
    /// Open connections → node.
    pub c: BTreeMap<String, String>,
    /// Rooms the user is present in.
    r: Vec<String>,
    /// Last disconnect, Unix ms.
    l: Option<i64>,
}

pub(super) fn parse<T: Default + for<'de> Deserialize<'de>>(v: Option<&[u8]>) -> T {
    v.and_then(|v| serde_json::from_slice(v).ok())
        .unwrap_or_default()
}

pub(super) fn encode<T: Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).unwrap_or_default()
}

impl Shared {
    pub(super) async fn user_record(&self, user: &str) -> Result<Option<UserRecord>, BrokerError> {
        let v = self
            .state
            .get(keys::user_key(user))
            .await
            .map_err(|e| down(format!("user {user}: {e}")))?;
        Ok(v.filter(|v| !v.is_empty())
            .and_then(|v| serde_json::from_slice(&v).ok()))
    }

    fn status_of(rec: &UserRecord) -> Status {
        if rec.c.is_empty() {
            Status::Offline
        } else {
            parse_status(Some(&rec.s))
        }
    }

    /// Adds `room` to (or removes it from) the user's rooms; the user's
    /// status.
    pub(super) async fn user_room(
        &self,
        user: &str,
        room: &str,
        add: bool,
    ) -> Result<Status, BrokerError> {
        modify(&self.state, &keys::user_key(user), |v| {
            let mut rec: UserRecord = parse(v);
            let status = if rec.s.is_empty() {
                Status::Online
            } else {
                parse_status(Some(&rec.s))
            };
            let has = rec.r.iter().any(|r| r == room);
            if has == add {
                return (None, status);
            }
            if add {
                rec.r.push(room.to_string());
            } else {
                rec.r.retain(|r| r != room);
            }
            if rec.s.is_empty() {
                rec.s = Status::Online.as_str().into();
                rec.n = user.to_string();
            }
            (Some(encode(&rec)), status)
        })
        .await
    }

    /// Adds `client`'s connection to the room's presence; when it is its
    /// user's first there, adds the room to the user's and sends the join
    /// event (`room_writes`).
    pub(super) async fn add_presence(
        self: &Arc<Self>,
        room: &str,
        client: &ClientInfo,
    ) -> Result<(), BrokerError> {
        let entry = PresenceEntry {
            u: client.user.to_string(),
            n: client.name.to_string(),
            d: self.node.to_string(),
        };
        let conn = client.conn_id.to_string();
        self.change_presence(room, Change::Join { conn, entry })
            .await
    }

    /// Adds `client`'s connection to its user's record: online, if it is
    /// the user's only one.
    pub(super) async fn register_conn(&self, client: &ClientInfo) -> Result<(), BrokerError> {
        let online = modify(&self.state, &keys::user_key(&client.user), |v| {
            let mut rec: UserRecord = parse(v);
            let online = rec.c.is_empty();
            if online {
                rec.s = Status::Online.as_str().into();
            }
            rec.n = client.name.to_string();
            rec.l = None;
            rec.c
                .insert(client.conn_id.to_string(), self.node.to_string());
            (Some(encode(&rec)), online)
        })
        .await?;
        if online {
            self.wh_back(Pending::User(&client.user)).await;
        }
        Ok(())
    }

    /// Removes connection `conn` from the room's presence; when it was its
    /// user's last there, forgets the room for the user and sends the
    /// leave event (`room_writes`).
    pub(super) async fn remove_presence(
        self: &Arc<Self>,
        room: &str,
        conn: &str,
    ) -> Result<(), BrokerError> {
        self.change_presence(
            room,
            Change::Leave {
                conn: conn.to_string(),
            },
        )
        .await
    }

    /// Removes connection `conn` from its user's open connections.
    pub(super) async fn remove_conn(
        &self,
        user: &str,
        conn: &str,
        ephemeral: bool,
    ) -> Result<(), BrokerError> {
        let now = crate::unix_ms();
        let gone = modify(&self.state, &keys::user_key(user), |v| {
            let mut rec: UserRecord = parse(v);
            if rec.c.remove(conn).is_none() {
                return (None, false);
            }
            if rec.c.is_empty() {
                if ephemeral && rec.r.is_empty() {
                    // Nobody can connect as this user again.
                    return (Some(Vec::new()), true);
                }
                rec.s = Status::Offline.as_str().into();
                rec.l = Some(now);
            }
            let gone = rec.c.is_empty();
            (Some(encode(&rec)), gone)
        })
        .await?;
        if gone {
            self.wh_gone(Pending::User(user)).await;
        }
        Ok(())
    }
}

/// `Arc`: a presence change is queued to a room's writer task, which holds
/// the engine (`room_writes`).
#[async_trait]
impl NodeEntries for Arc<Shared> {
    const ENGINE: &'static str = "nats";

    fn registry(&self) -> std::sync::MutexGuard<'_, Registry> {
        crate::lock(&self.registry)
    }

    fn reachable(&self) -> Result<(), BrokerError> {
        self.connected()
    }

    async fn put_conn(&self, client: &ClientInfo) -> Result<(), BrokerError> {
        self.register_conn(client).await
    }

    async fn erase_conn(&self, client: &ClientInfo) -> Result<(), BrokerError> {
        self.remove_conn(&client.user, &client.conn_id, client.ephemeral)
            .await
    }

    async fn put_presence(&self, room: &str, client: &ClientInfo) -> Result<(), BrokerError> {
        self.add_presence(room, client).await
    }

    async fn erase_presence(&self, room: &str, client: &ClientInfo) -> Result<(), BrokerError> {
        self.remove_presence(room, &client.conn_id).await
    }
}

#[async_trait]
impl PresenceManager for NatsBroker {
    async fn join(&self, room: &str, client: &ClientInfo) -> Result<(), BrokerError> {
        NodeEntries::join(&self.shared, room, client).await
    }

    async fn leave(&self, room: &str, client: &ClientInfo) -> Result<(), BrokerError> {
        NodeEntries::leave(&self.shared, room, client).await
    }

    async fn list(&self, room: &str, limit: usize) -> Result<PresencePage, BrokerError> {
        let s = &self.shared;
        s.connected()?;
        let v = s
            .state
            .get(keys::presence_key(room))
            .await
            .map_err(|e| down(format!("presence of {room}: {e}")))?;
        let p: RoomPresence = parse(v.as_deref());
        // user → (name, connections), by user id.
        let mut users: BTreeMap<&str, (&str, u32)> = BTreeMap::new();
        for e in p.values() {
            let u = users.entry(&e.u).or_insert((&e.n, 0));
            u.0 = &e.n;
            u.1 += 1;
        }
        let total = users.len();
        // The listed users' statuses, some at a time: one at a time, a
        // 1,000-member list took 1,000 round trips.
        let listed: Vec<(String, String, u32)> = users
            .into_iter()
            .take(limit)
            .map(|(user, (name, connections))| (user.to_string(), name.to_string(), connections))
            .collect();
        let members = futures_util::stream::iter(listed)
            .map(|(user, name, connections)| async move {
                let status = match s.user_record(&user).await? {
                    Some(rec) if !rec.c.is_empty() => parse_status(Some(&rec.s)),
                    _ => Status::Online,
                };
                Ok::<_, BrokerError>(Member {
                    user,
                    name,
                    status,
                    connections,
                })
            })
            .buffered(STATUS_READS)
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .collect::<Result<Vec<_>, _>>()?;
        Ok(PresencePage { members, total })
    }

    async fn connect(&self, client: &ClientInfo) -> Result<(), BrokerError> {
        NodeEntries::connect(&self.shared, client).await
    }

    async fn disconnect(&self, client: &ClientInfo) -> Result<(), BrokerError> {
        NodeEntries::disconnect(&self.shared, client).await
    }

    async fn set_status(&self, user: &str, status: Status) -> Result<(), BrokerError> {
        let s = &self.shared;
        s.connected()?;
        let changed = modify(&s.state, &keys::user_key(user), |v| {
            let Some(mut rec) = v.and_then(|v| serde_json::from_slice::<UserRecord>(v).ok()) else {
                return (None, None);
            };
            if parse_status(Some(&rec.s)) == status {
                return (None, None);
            }
            rec.s = status.as_str().into();
            let out = (rec.n.clone(), rec.r.clone());
            (Some(encode(&rec)), Some(out))
        })
        .await?;
        if let Some((name, rooms)) = changed {
            let event = PresenceEvent {
                action: PresenceAction::Status,
                user: Arc::from(user),
                name: Arc::from(name.as_str()),
                status,
            };
            for room in rooms {
                s.announce_presence(&room, &event).await;
            }
        }
        Ok(())
    }

    async fn user_status(&self, user: &str) -> Result<UserStatus, BrokerError> {
        let s = &self.shared;
        s.connected()?;
        Ok(match s.user_record(user).await? {
            Some(rec) if !rec.c.is_empty() => UserStatus {
                status: Shared::status_of(&rec),
                connections: rec.c.len() as u32,
                last_seen: None,
            },
            Some(rec) => UserStatus {
                status: Status::Offline,
                connections: 0,
                // Remembered for `history_ttl`, as the other engines do.
                last_seen: rec
                    .l
                    .filter(|l| *l + s.ttl.as_millis() as i64 > crate::unix_ms()),
            },
            None => UserStatus {
                status: Status::Offline,
                connections: 0,
                last_seen: None,
            },
        })
    }
}
