//! User controls over NATS: every command goes to every node on the core
//! subject `<p>.controls`; blocks and revocations are also kept in the
//! state bucket (`c.b.<user>`, `c.j.<jti>`, `c.i.<before:user>`, the
//! command as JSON) so that a node started later, or one that was cut off,
//! loads them. A node loads the kept state again after each reconnect,
//! since core NATS drops what is sent while it is away.

use std::sync::{Arc, Weak};

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::StreamExt;

use super::kv::list_keys;
use super::{NatsBroker, Shared, down, keys};
use crate::broker::{BrokerError, ControlSink, UserCommand, UserControls};

/// The key a kept command lives under, and whether the command removes it.
fn kept_key(cmd: &UserCommand) -> Option<(String, bool)> {
    Some(match cmd {
        UserCommand::Block { user, .. } => (keys::control_key("b", user), false),
        UserCommand::Unblock { user } => (keys::control_key("b", user), true),
        UserCommand::RevokeJti { jti, .. } => (keys::control_key("j", jti), false),
        UserCommand::RevokeIssuedBefore { user, before, .. } => {
            (keys::control_key("i", &format!("{before}:{user}")), false)
        }
        _ => return None,
    })
}

/// Whether a kept command is still in force at `now` (Unix ms).
fn in_force(cmd: &UserCommand, now: u64) -> bool {
    match cmd {
        UserCommand::Block { until, .. } => until.is_none_or(|u| u > now),
        UserCommand::RevokeJti { until, .. } | UserCommand::RevokeIssuedBefore { until, .. } => {
            *until > now
        }
        _ => false,
    }
}

impl Shared {
    /// Every kept command still in force.
    async fn kept(&self) -> Result<Vec<UserCommand>, BrokerError> {
        let names = list_keys(&self.state, "controls", |k| {
            k.starts_with("c.").then_some(k)
        })
        .await?;
        let mut out = Vec::new();
        let now = crate::unix_ms().max(0) as u64;
        for k in names {
            let Some(v) = self
                .state
                .get(&k)
                .await
                .map_err(|e| down(format!("controls: {e}")))?
            else {
                continue;
            };
            if let Ok(cmd) = serde_json::from_slice::<UserCommand>(&v)
                && in_force(&cmd, now)
            {
                out.push(cmd);
            }
        }
        Ok(out)
    }
}

#[async_trait]
impl UserControls for NatsBroker {
    async fn command(&self, cmd: UserCommand) -> Result<(), BrokerError> {
        let s = &self.shared;
        s.connected()?;
        let body = serde_json::to_vec(&cmd)
            .map_err(|e| BrokerError::Internal(format!("control command: {e}")))?;
        if let Some((key, remove)) = kept_key(&cmd) {
            let value = if remove {
                Bytes::new()
            } else {
                Bytes::from(body.clone())
            };
            s.state
                .put(key, value)
                .await
                .map_err(|e| down(format!("control command: {e}")))?;
        }
        s.client
            .publish(s.names.controls_subject(), body.into())
            .await
            .map_err(|e| down(format!("control command: {e}")))?;
        s.flush("control command").await
    }

    async fn follow(&self, sink: Weak<dyn ControlSink>) -> Result<(), BrokerError> {
        let s = self.shared.clone();
        // Subscribed before loading: a command sent in between is applied
        // twice at worst, which changes nothing.
        let mut sub = s
            .client
            .subscribe(s.names.controls_subject())
            .await
            .map_err(|e| down(format!("controls: {e}")))?;
        let Some(target) = sink.upgrade() else {
            return Ok(());
        };
        target.load(s.kept().await?);
        drop(target);
        let cancel = self.cancel.clone();
        let mut reconnects = self.live.reconnects();
        self.tasks.spawn(async move {
            loop {
                tokio::select! {
                    _ = cancel.cancelled() => break,
                    r = reconnects.changed() => {
                        if r.is_err() {
                            break;
                        }
                        match s.kept().await {
                            Ok(state) => match sink.upgrade() {
                                Some(t) => t.load(state),
                                None => break,
                            },
                            Err(e) => tracing::warn!(error = %e, "cannot load user controls from nats"),
                        }
                    }
                    msg = sub.next() => {
                        let Some(msg) = msg else { break };
                        let Ok(cmd) = serde_json::from_slice::<UserCommand>(&msg.payload) else {
                            continue;
                        };
                        match sink.upgrade() {
                            Some(t) => t.apply(&cmd),
                            None => break,
                        }
                    }
                }
            }
            let _ = sub.unsubscribe().await;
        });
        Ok(())
    }

    async fn blocked(&self) -> Result<Vec<(Arc<str>, Option<u64>)>, BrokerError> {
        self.shared.connected()?;
        Ok(self
            .shared
            .kept()
            .await?
            .into_iter()
            .filter_map(|cmd| match cmd {
                UserCommand::Block { user, until } => Some((user, until)),
                _ => None,
            })
            .collect())
    }
}
