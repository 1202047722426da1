//! User controls over Redis: a command is appended to one control stream
//! that every node reads, and blocks and revocations are also kept in
//! sorted sets scored by when they expire, so that a node started later
//! loads them. The keys share the `{ctl}` hash tag, so one transaction
//! writes them on a cluster too.
//!
//! A stream rather than a pub/sub channel: a node that loses its
//! connection reads on from the last entry it saw, and after a failed read
//! it also loads the kept state again (in case the stream was trimmed past
//! it meanwhile), so no block or revocation is missed for good. Reading it four times a second is what
//! "on every node within a second" costs: one cheap `XREAD` per node.

use std::sync::{Arc, Weak};
use std::time::Duration;

use async_trait::async_trait;
use redis::Value;
use redis::streams::StreamReadReply;

use super::{RedisBroker, Shared, unavailable};
use crate::broker::{BrokerError, ControlSink, UserCommand, UserControls};

/// How often a node reads the control stream.
const POLL: Duration = Duration::from_millis(250);
/// Entries kept in the control stream: far more than a node reads in one
/// poll, so only a node cut off for long must reload the state.
const STREAM_LEN: usize = 10_000;
/// Entries read at once.
const BATCH: usize = 500;

/// The control keys of a prefix.
struct CtlKeys {
    log: String,
    blocks: String,
    jtis: String,
    issued: String,
}

impl CtlKeys {
    fn new(prefix: &str) -> Self {
        let key = |name: &str| format!("{prefix}:{{ctl}}:{name}");
        Self {
            log: key("log"),
            blocks: key("blocks"),
            jtis: key("jti"),
            issued: key("ib"),
        }
    }
}

/// A member of the issued-before set: the user and the time, apart.
fn issued_member(user: &str, before: u64) -> String {
    format!("{before}:{user}")
}

fn parse_issued(member: &str, until: u64) -> Option<UserCommand> {
    let (before, user) = member.split_once(':')?;
    Some(UserCommand::RevokeIssuedBefore {
        user: Arc::from(user),
        before: before.parse().ok()?,
        until,
    })
}

/// A sorted-set score for an expiry: `+inf` for never.
fn score(until: Option<u64>) -> String {
    until.map_or_else(|| "+inf".to_string(), |u| u.to_string())
}

#[async_trait]
impl UserControls for RedisBroker {
    async fn command(&self, cmd: UserCommand) -> Result<(), BrokerError> {
        let keys = CtlKeys::new(&self.shared.keys.prefix);
        let now = crate::unix_ms();
        let body = serde_json::to_string(&cmd)
            .map_err(|e| BrokerError::Internal(format!("control command: {e}")))?;
        let mut pipe = redis::pipe();
        pipe.atomic();
        match &cmd {
            UserCommand::Disconnect { .. }
            | UserCommand::Subscribe { .. }
            | UserCommand::Unsubscribe { .. } => {}
            UserCommand::Block { user, until } => {
                pipe.cmd("ZADD")
                    .arg(&keys.blocks)
                    .arg(score(*until))
                    .arg(&**user)
                    .ignore();
            }
            UserCommand::Unblock { user } => {
                pipe.cmd("ZREM").arg(&keys.blocks).arg(&**user).ignore();
            }
            UserCommand::RevokeJti { jti, until } => {
                pipe.cmd("ZADD")
                    .arg(&keys.jtis)
                    .arg(*until)
                    .arg(&**jti)
                    .ignore();
            }
            UserCommand::RevokeIssuedBefore {
                user,
                before,
                until,
            } => {
                pipe.cmd("ZADD")
                    .arg(&keys.issued)
                    .arg(*until)
                    .arg(issued_member(user, *before))
                    .ignore();
            }
        }
        if cmd.persists() {
            // What expired goes with every write, so the sets hold only
            // what is in force.
            for key in [&keys.blocks, &keys.jtis, &keys.issued] {
                pipe.cmd("ZREMRANGEBYSCORE")
                    .arg(key)
                    .arg("-inf")
                    .arg(format!("({now}"))
                    .ignore();
            }
        }
        pipe.cmd("XADD")
            .arg(&keys.log)
            .arg("MAXLEN")
            .arg("~")
            .arg(STREAM_LEN)
            .arg("*")
            .arg("c")
            .arg(body)
            .ignore();
        let mut conn = self.shared.conn.clone();
        pipe.query_async::<()>(&mut conn).await.map_err(unavailable)
    }

    async fn follow(&self, sink: Weak<dyn ControlSink>) -> Result<(), BrokerError> {
        let keys = CtlKeys::new(&self.shared.keys.prefix);
        // The stream's end before the state: a command in between is both
        // loaded and read, and applying one twice does no harm.
        let last = last_id(&self.shared, &keys).await?;
        let state = load(&self.shared, &keys).await?;
        if let Some(s) = sink.upgrade() {
            s.load(state);
        }
        let shared = self.shared.clone();
        let cancel = self.cancel.clone();
        self.tasks.spawn(async move {
            let mut follower = Follower {
                shared,
                keys,
                sink,
                last,
                stale: false,
            };
            let mut tick = tokio::time::interval(POLL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tick.tick() => {}
                }
                if let Err(e) = follower.round().await {
                    follower.stale = true;
                    tracing::warn!(error = %e, "cannot read redis user controls; retrying");
                }
            }
        });
        Ok(())
    }

    async fn blocked(&self) -> Result<Vec<(Arc<str>, Option<u64>)>, BrokerError> {
        let keys = CtlKeys::new(&self.shared.keys.prefix);
        let mut conn = self.shared.conn.clone();
        let blocks: Scored = redis::cmd("ZRANGE")
            .arg(&keys.blocks)
            .arg(crate::unix_ms())
            .arg("+inf")
            .arg("BYSCORE")
            .arg("WITHSCORES")
            .query_async(&mut conn)
            .await
            .map_err(unavailable)?;
        Ok(blocks
            .into_iter()
            .map(|(user, s)| (Arc::from(user), s.is_finite().then_some(s as u64)))
            .collect())
    }
}

/// The id of the control stream's last entry (`0-0` when empty).
async fn last_id(shared: &Shared, keys: &CtlKeys) -> Result<String, BrokerError> {
    let mut conn = shared.conn.clone();
    let reply: redis::streams::StreamRangeReply = redis::cmd("XREVRANGE")
        .arg(&keys.log)
        .arg("+")
        .arg("-")
        .arg("COUNT")
        .arg(1)
        .query_async(&mut conn)
        .await
        .map_err(unavailable)?;
    Ok(reply
        .ids
        .into_iter()
        .next()
        .map_or_else(|| "0-0".to_string(), |e| e.id))
}

/// A sorted set's members with their scores.
type Scored = Vec<(String, f64)>;

/// Every block and revocation in force.
async fn load(shared: &Shared, keys: &CtlKeys) -> Result<Vec<UserCommand>, BrokerError> {
    let mut conn = shared.conn.clone();
    let now = crate::unix_ms();
    let range = |key: &str| {
        let mut cmd = redis::cmd("ZRANGE");
        cmd.arg(key)
            .arg(now)
            .arg("+inf")
            .arg("BYSCORE")
            .arg("WITHSCORES");
        cmd
    };
    let (blocks, jtis, issued): (Scored, Scored, Scored) = redis::pipe()
        .add_command(range(&keys.blocks))
        .add_command(range(&keys.jtis))
        .add_command(range(&keys.issued))
        .query_async(&mut conn)
        .await
        .map_err(unavailable)?;
    let until = |s: f64| (s.is_finite()).then_some(s as u64);
    let mut state = Vec::new();
    for (user, s) in blocks {
        state.push(UserCommand::Block {
            user: Arc::from(user),
            until: until(s),
        });
    }
    for (jti, s) in jtis {
        state.push(UserCommand::RevokeJti {
            jti: Arc::from(jti),
            until: until(s).unwrap_or(u64::MAX),
        });
    }
    for (member, s) in issued {
        state.extend(parse_issued(&member, until(s).unwrap_or(u64::MAX)));
    }
    Ok(state)
}

/// Reads the control stream on from `last`.
struct Follower {
    shared: Arc<Shared>,
    keys: CtlKeys,
    sink: Weak<dyn ControlSink>,
    last: String,
    /// A read failed: commands may have been missed.
    stale: bool,
}

impl Follower {
    async fn round(&mut self) -> Result<(), BrokerError> {
        let Some(sink) = self.sink.upgrade() else {
            return Ok(());
        };
        if self.stale {
            self.last = last_id(&self.shared, &self.keys).await?;
            sink.load(load(&self.shared, &self.keys).await?);
            self.stale = false;
        }
        let mut conn = self.shared.conn.clone();
        loop {
            let reply: Option<StreamReadReply> = redis::cmd("XREAD")
                .arg("COUNT")
                .arg(BATCH)
                .arg("STREAMS")
                .arg(&self.keys.log)
                .arg(&self.last)
                .query_async(&mut conn)
                .await
                .map_err(unavailable)?;
            let entries: Vec<_> = reply
                .into_iter()
                .flat_map(|r| r.keys)
                .flat_map(|k| k.ids)
                .collect();
            if entries.is_empty() {
                return Ok(());
            }
            let full = entries.len() == BATCH;
            for entry in entries {
                self.last = entry.id.clone();
                let cmd = match entry.map.get("c") {
                    Some(Value::BulkString(b)) => serde_json::from_slice::<UserCommand>(b).ok(),
                    _ => None,
                };
                match cmd {
                    Some(cmd) => sink.apply(&cmd),
                    // A newer node's command this one does not know: it
                    // is skipped, not fatal.
                    None => tracing::warn!(id = %entry.id, "unreadable user control; skipped"),
                }
            }
            if !full {
                return Ok(());
            }
        }
    }
}
