//! Room presence and user status in Redis.

use std::collections::HashMap;

use async_trait::async_trait;
use redis::AsyncCommands;

use crate::broker::lease::{NodeEntries, Registry};
use crate::broker::{BrokerError, ClientInfo, PresenceManager, PresencePage, UserStatus};
use crate::protocol::{Member, Status};

use super::codec::{self, parse_status};
use super::{RedisBroker, Shared, unavailable, with_keys};

impl Shared {
    /// A user's status and display name (online and the user id when
    /// unknown).
    pub(super) async fn user_status_name(&self, user: &str) -> (Status, String) {
        let mut conn = self.conn.clone();
        let r: Result<(Option<String>, Option<String>), _> =
            conn.hmget(self.keys.user(user), &["s", "n"]).await;
        match r {
            Ok((s, n)) => (
                parse_status(s.as_deref()),
                n.unwrap_or_else(|| user.to_string()),
            ),
            Err(_) => (Status::Online, user.to_string()),
        }
    }

    /// Adds one connection to a room's presence (the script sends the join
    /// event for the user's first connection there).
    pub(super) async fn join_presence(
        &self,
        room: &str,
        client: &ClientInfo,
        status: Status,
    ) -> Result<(), BrokerError> {
        let mut script = self.presence_script(&self.scripts.presence_join, room);
        script
            .arg(&*client.conn_id)
            .arg(&*client.user)
            .arg(&*client.name)
            .arg(&*self.node)
            .arg(status.as_str())
            .arg(self.publish_cmd);
        self.webhook_args(&mut script, room);
        let n: i64 = self.invoke(&script).await?;
        if n >= 1 {
            // Two slots on a cluster: two commands, sent together.
            let (mut conn, mut other) = (self.conn.clone(), self.conn.clone());
            let user_rooms = self.keys.user_rooms(&client.user);
            let node_rooms = self.keys.node_rooms(&self.node);
            let (a, b): (redis::RedisResult<()>, redis::RedisResult<()>) =
                tokio::join!(conn.sadd(&user_rooms, room), other.sadd(&node_rooms, room));
            a.and(b).map_err(unavailable)?;
        }
        Ok(())
    }

    /// Removes one connection from a room's presence (the script sends the
    /// leave event for the user's last one) and forgets the room for the
    /// user when it was their last connection there.
    pub(super) async fn leave_presence(
        &self,
        room: &str,
        conn_id: &str,
        user: &str,
        name: &str,
        status: Status,
    ) -> Result<(), BrokerError> {
        let mut script = self.presence_script(&self.scripts.presence_leave, room);
        script
            .arg(conn_id)
            .arg(user)
            .arg(name)
            .arg(status.as_str())
            .arg(self.publish_cmd);
        self.webhook_args(&mut script, room);
        let n: i64 = self.invoke(&script).await?;
        if n == 0 {
            let _: () = self
                .conn
                .clone()
                .srem(self.keys.user_rooms(user), room)
                .await
                .map_err(unavailable)?;
        }
        Ok(())
    }

    /// Counts a connection for its user's status and in this node's list.
    pub(super) async fn register_conn(&self, client: &ClientInfo) -> Result<(), BrokerError> {
        let node_list = redis::Cmd::hset(
            self.keys.node_conns(&self.node),
            &*client.conn_id,
            &*client.user,
        );
        let mut script = self.scripts.connect.prepare_invoke();
        script.key(self.keys.user(&client.user)).arg(&*client.name);
        self.webhook_args(&mut script, &client.user);
        self.user_conn(&script, node_list).await
    }

    /// Undoes [`Shared::register_conn`].
    pub(super) async fn unregister_conn(&self, client: &ClientInfo) -> Result<(), BrokerError> {
        let node_list = redis::Cmd::hdel(self.keys.node_conns(&self.node), &*client.conn_id);
        let script = self.disconnect_script(
            &client.user,
            // An anonymous user ends with its connection: no offline record.
            client.ephemeral,
        );
        self.user_conn(&script, node_list).await
    }

    /// A connection's script on its user's status, then its change to this
    /// node's list (another key slot on a cluster: a command of its own).
    async fn user_conn(
        &self,
        script: &redis::ScriptInvocation<'_>,
        node_list: redis::Cmd,
    ) -> Result<(), BrokerError> {
        let _: i64 = self.invoke(script).await?;
        let _: () = node_list
            .query_async(&mut self.conn.clone())
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    /// PRESENCE_JOIN or PRESENCE_LEAVE on a room, up to their arguments:
    /// its presence hashes and channel.
    fn presence_script<'a>(
        &self,
        script: &'a redis::Script,
        room: &str,
    ) -> redis::ScriptInvocation<'a> {
        with_keys(
            script,
            [
                self.keys.room(room, "p"),
                self.keys.room(room, "pu"),
                self.keys.channel(room),
            ],
        )
    }
}

#[async_trait]
impl NodeEntries for Shared {
    const ENGINE: &'static str = "redis";

    fn registry(&self) -> std::sync::MutexGuard<'_, Registry> {
        crate::lock(&self.registry)
    }

    async fn put_conn(&self, client: &ClientInfo) -> Result<(), BrokerError> {
        self.register_conn(client).await
    }

    async fn erase_conn(&self, client: &ClientInfo) -> Result<(), BrokerError> {
        self.unregister_conn(client).await
    }

    async fn put_presence(&self, room: &str, client: &ClientInfo) -> Result<(), BrokerError> {
        let (status, _) = self.user_status_name(&client.user).await;
        self.join_presence(room, client, status).await
    }

    async fn erase_presence(&self, room: &str, client: &ClientInfo) -> Result<(), BrokerError> {
        let (status, _) = self.user_status_name(&client.user).await;
        let (conn, user, name) = (&client.conn_id, &client.user, &client.name);
        self.leave_presence(room, conn, user, name, status).await
    }
}

#[async_trait]
impl PresenceManager for RedisBroker {
    async fn join(&self, room: &str, client: &ClientInfo) -> Result<(), BrokerError> {
        NodeEntries::join(&*self.shared, room, client).await
    }

    async fn leave(&self, room: &str, client: &ClientInfo) -> Result<(), BrokerError> {
        NodeEntries::leave(&*self.shared, room, client).await
    }

    async fn list(&self, room: &str, limit: usize) -> Result<PresencePage, BrokerError> {
        let s = &self.shared;
        let mut conn = s.conn.clone();
        let all: HashMap<String, String> = conn
            .hgetall(s.keys.room(room, "p"))
            .await
            .map_err(unavailable)?;
        let mut by_user: HashMap<String, (String, u32)> = HashMap::new();
        for v in all.values() {
            let mut it = v.split('\u{1f}');
            let (Some(user), Some(name)) = (it.next(), it.next()) else {
                continue;
            };
            let e = by_user
                .entry(user.to_string())
                .or_insert_with(|| (name.to_string(), 0));
            e.1 += 1;
        }
        let total = by_user.len();
        let mut listed: Vec<(String, (String, u32))> = by_user.into_iter().collect();
        if listed.len() > limit {
            listed.select_nth_unstable_by(limit, |a, b| a.0.cmp(&b.0));
            listed.truncate(limit);
        }
        listed.sort_by(|a, b| a.0.cmp(&b.0));
        // Statuses of the listed users only, asked all at once (the user
        // keys may live on different cluster masters: no pipeline).
        let statuses = futures_util::future::try_join_all(listed.iter().map(|(user, _)| {
            let mut conn = s.conn.clone();
            let key = s.keys.user(user);
            async move { conn.hget::<_, _, Option<String>>(key, "s").await }
        }))
        .await
        .map_err(unavailable)?;
        let members = listed
            .into_iter()
            .zip(statuses)
            .map(|((user, (name, connections)), status)| Member {
                user,
                name,
                // Present means connected, whatever a stale status says.
                status: match parse_status(status.as_deref()) {
                    Status::Offline => Status::Online,
                    other => other,
                },
                connections,
            })
            .collect();
        Ok(PresencePage { members, total })
    }

    async fn connect(&self, client: &ClientInfo) -> Result<(), BrokerError> {
        NodeEntries::connect(&*self.shared, client).await
    }

    async fn disconnect(&self, client: &ClientInfo) -> Result<(), BrokerError> {
        NodeEntries::disconnect(&*self.shared, client).await
    }

    async fn set_status(&self, user: &str, status: Status) -> Result<(), BrokerError> {
        let s = &self.shared;
        let mut conn = s.conn.clone();
        let key = s.keys.user(user);
        let (prev, name): (Option<String>, Option<String>) =
            conn.hmget(&key, &["s", "n"]).await.map_err(unavailable)?;
        if parse_status(prev.as_deref()) == status {
            return Ok(());
        }
        let _: () = conn
            .hset(&key, "s", status.as_str())
            .await
            .map_err(unavailable)?;
        let rooms: Vec<String> = conn
            .smembers(s.keys.user_rooms(user))
            .await
            .map_err(unavailable)?;
        let name = name.unwrap_or_else(|| user.to_string());
        for room in rooms {
            let payload = codec::encode_status(user, &name, status);
            let _: i64 = redis::cmd(s.publish_cmd)
                .arg(s.keys.channel(&room))
                .arg(payload)
                .query_async(&mut conn)
                .await
                .map_err(unavailable)?;
        }
        Ok(())
    }

    async fn user_status(&self, user: &str) -> Result<UserStatus, BrokerError> {
        let s = &self.shared;
        let mut conn = s.conn.clone();
        let (c, st, l): (Option<i64>, Option<String>, Option<i64>) = conn
            .hmget(s.keys.user(user), &["c", "s", "l"])
            .await
            .map_err(unavailable)?;
        let connections = c.unwrap_or(0).max(0) as u32;
        Ok(if connections > 0 {
            UserStatus {
                status: parse_status(st.as_deref()),
                connections,
                last_seen: None,
            }
        } else {
            UserStatus {
                status: Status::Offline,
                connections: 0,
                last_seen: l,
            }
        })
    }
}
