//! Room presence and user status in the memory engine, behind one mutex:
//! events are emitted under it, so every room sees them in order.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use async_trait::async_trait;
use tokio::time::Instant;

use super::{MAX_OFFLINE_USERS, MemoryBroker};
use crate::broker::{
    BrokerError, ClientInfo, EventType, PresenceEvent, PresenceManager, PresencePage, UserStatus,
};
use crate::lock;
use crate::protocol::{Member, PresenceAction, Status};
use crate::small::{SmallSet, shared_key};

pub(super) fn now_ms() -> i64 {
    crate::unix_ms()
}

#[derive(Default)]
pub(super) struct PresenceState {
    /// room → user → the user's presence in it.
    pub(super) rooms: HashMap<Arc<str>, HashMap<Arc<str>, RoomMember>>,
    /// user → status and connections.
    /// Boxed: the table holds a pointer per user, so its slack (a hash
    /// table is 44-88% full) costs 8 bytes a slot, not a whole record.
    pub(super) users: HashMap<Arc<str>, Box<UserState>>,
    /// Users as they went offline, oldest first (entries of users who came
    /// back are skipped when popped): expiry and the cap on offline users.
    pub(super) offline: VecDeque<(Instant, Arc<str>)>,
}

impl PresenceState {
    /// Forgets `user` if it is still offline since `since`.
    pub(super) fn forget(&mut self, since: Instant, user: &Arc<str>) {
        if self
            .users
            .get(user)
            .is_some_and(|u| u.connections == 0 && u.offline_since == Some(since))
        {
            self.users.remove(user);
        }
    }
}

pub(super) struct RoomMember {
    pub(super) name: Arc<str>,
    /// The user's connections in the room.
    pub(super) conns: SmallSet<Arc<str>>,
}

pub(super) struct UserState {
    pub(super) status: Status,
    pub(super) connections: u32,
    /// Rooms the user is present in (for status events); the names are
    /// those of `PresenceState::rooms`.
    pub(super) rooms: SmallSet<Arc<str>>,
    /// Unix ms of the last disconnect.
    pub(super) last_seen: Option<i64>,
    /// When the user went offline, for forgetting them later.
    pub(super) offline_since: Option<Instant>,
}

impl UserState {
    /// A user seen for the first time: online, no connection yet.
    pub(super) fn new() -> Self {
        Self {
            status: Status::Online,
            connections: 0,
            rooms: SmallSet::default(),
            last_seen: None,
            offline_since: None,
        }
    }
}

#[async_trait]
impl PresenceManager for MemoryBroker {
    async fn join(&self, room: &str, client: &ClientInfo) -> Result<(), BrokerError> {
        let mut p = lock(&self.presence);
        // The room's name is allocated once, for its first member.
        let name = shared_key(&p.rooms, room);
        let members = p.rooms.entry(name.clone()).or_default();
        let occupied = members.is_empty();
        let first = match members.entry(client.user.clone()) {
            Entry::Occupied(mut e) => {
                let m = e.get_mut();
                m.name = client.name.clone();
                m.conns.insert(client.conn_id.clone()) && m.conns.len() == 1
            }
            Entry::Vacant(e) => {
                e.insert(RoomMember {
                    name: client.name.clone(),
                    conns: SmallSet::from(client.conn_id.clone()),
                });
                true
            }
        };
        let user = p
            .users
            .entry(client.user.clone())
            .or_insert_with(|| Box::new(UserState::new()));
        user.rooms.insert(name);
        let status = user.status;
        if first && let Some(mut log) = self.event_log() {
            if occupied {
                log.occupied(room);
            }
            log.member(EventType::MemberJoined, room, &client.user);
        }
        if first {
            // Emitted under the presence lock so events keep their order.
            self.emit(
                room,
                PresenceEvent {
                    action: PresenceAction::Join,
                    user: client.user.clone(),
                    name: client.name.clone(),
                    status,
                },
            );
        }
        Ok(())
    }

    async fn leave(&self, room: &str, client: &ClientInfo) -> Result<(), BrokerError> {
        let mut p = lock(&self.presence);
        let Some(members) = p.rooms.get_mut(room) else {
            return Ok(());
        };
        let Some(member) = members.get_mut(&client.user) else {
            return Ok(());
        };
        if !member.conns.remove(&client.conn_id) || !member.conns.is_empty() {
            return Ok(());
        }
        let name = member.name.clone();
        members.remove(&client.user);
        let vacated = members.is_empty();
        if vacated {
            p.rooms.remove(room);
        }
        if let Some(mut log) = self.event_log() {
            log.member(EventType::MemberLeft, room, &client.user);
            if vacated {
                log.vacated(room);
            }
        }
        let status = match p.users.get_mut(&client.user) {
            Some(u) => {
                u.rooms.remove(room);
                u.status
            }
            None => Status::Online,
        };
        self.emit(
            room,
            PresenceEvent {
                action: PresenceAction::Leave,
                user: client.user.clone(),
                name,
                status,
            },
        );
        Ok(())
    }

    async fn list(&self, room: &str, limit: usize) -> Result<PresencePage, BrokerError> {
        let p = lock(&self.presence);
        let Some(members) = p.rooms.get(room) else {
            return Ok(PresencePage::default());
        };
        let total = members.len();
        // The first `limit` user ids, without building every member.
        let mut users: Vec<&Arc<str>> = members.keys().collect();
        if users.len() > limit {
            users.select_nth_unstable(limit);
            users.truncate(limit);
        }
        let mut list: Vec<Member> = users
            .into_iter()
            .filter_map(|user| {
                let m = members.get(user)?;
                Some(Member {
                    user: user.to_string(),
                    name: m.name.to_string(),
                    status: p.users.get(user).map_or(Status::Online, |u| u.status),
                    connections: m.conns.len() as u32,
                })
            })
            .collect();
        list.sort_by(|a, b| a.user.cmp(&b.user));
        Ok(PresencePage {
            members: list,
            total,
        })
    }

    async fn connect(&self, client: &ClientInfo) -> Result<(), BrokerError> {
        let mut p = lock(&self.presence);
        let user = p
            .users
            .entry(client.user.clone())
            .or_insert_with(|| Box::new(UserState::new()));
        if user.connections == 0 {
            user.status = Status::Online;
            if let Some(mut log) = self.event_log() {
                log.online(&client.user);
            }
        }
        user.connections += 1;
        user.offline_since = None;
        Ok(())
    }

    async fn disconnect(&self, client: &ClientInfo) -> Result<(), BrokerError> {
        let mut p = lock(&self.presence);
        let now = Instant::now();
        let Some(user) = p.users.get_mut(&client.user) else {
            return Ok(());
        };
        user.connections = user.connections.saturating_sub(1);
        if user.connections > 0 {
            return Ok(());
        }
        if let Some(mut log) = self.event_log() {
            log.offline(&client.user);
        }
        if client.ephemeral && user.rooms.is_empty() {
            // Nobody can connect as this user again: nothing to remember.
            p.users.remove(&client.user);
            return Ok(());
        }
        user.status = Status::Offline;
        user.last_seen = Some(now_ms());
        user.offline_since = Some(now);
        p.offline.push_back((now, client.user.clone()));
        while p.offline.len() > MAX_OFFLINE_USERS {
            if let Some((since, user)) = p.offline.pop_front() {
                p.forget(since, &user);
            }
        }
        Ok(())
    }

    async fn set_status(&self, user: &str, status: Status) -> Result<(), BrokerError> {
        let mut p = lock(&self.presence);
        let Some(state) = p.users.get_mut(user) else {
            return Ok(());
        };
        if state.status == status {
            return Ok(());
        }
        state.status = status;
        let rooms: Vec<Arc<str>> = state.rooms.iter().cloned().collect();
        let user: Arc<str> = Arc::from(user);
        for room in rooms {
            let name = p
                .rooms
                .get(&room)
                .and_then(|m| m.get(&user))
                .map_or_else(|| user.clone(), |m| m.name.clone());
            self.emit(
                &room,
                PresenceEvent {
                    action: PresenceAction::Status,
                    user: user.clone(),
                    name,
                    status,
                },
            );
        }
        Ok(())
    }

    async fn user_status(&self, user: &str) -> Result<UserStatus, BrokerError> {
        let p = lock(&self.presence);
        Ok(match p.users.get(user) {
            Some(u) if u.connections > 0 => UserStatus {
                status: u.status,
                connections: u.connections,
                last_seen: None,
            },
            Some(u) => UserStatus {
                status: Status::Offline,
                connections: 0,
                last_seen: u.last_seen,
            },
            None => UserStatus {
                status: Status::Offline,
                connections: 0,
                last_seen: None,
            },
        })
    }
}
