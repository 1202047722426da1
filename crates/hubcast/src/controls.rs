//! What a node does with user controls (PROTOCOL.md section 8): it closes
//! its own connections that a command names (or, for a subscribe, hands
//! the command to their tasks), and keeps the blocks and
//! revocations in force, so that a handshake checks them without asking
//! the engine. The engine (`broker::UserControls`) brings every node the
//! same commands, and the kept state at start.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::auth::TokenId;
use crate::broker::{ControlSink, UserCommand};
use crate::hub::{Hub, RoomCommand, Subscriber};
use crate::protocol::{ErrorCode, close};
use crate::{http::error::HttpError, lock, unix_ms};

/// Why a handshake is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// The user is blocked: 403.
    Blocked,
    /// The token was revoked: 401.
    Revoked,
}

impl Refusal {
    pub(crate) fn message(self) -> &'static str {
        match self {
            Self::Blocked => "user blocked",
            Self::Revoked => "token revoked",
        }
    }

    pub(crate) fn into_http(self) -> HttpError {
        let code = match self {
            Self::Blocked => ErrorCode::Forbidden,
            Self::Revoked => ErrorCode::Unauthorized,
        };
        HttpError::new(code, self.message())
    }
}

/// Blocks and revocations in force; each entry ends at its expiry (Unix
/// ms), so the tables hold only what still matters.
#[derive(Default)]
struct State {
    /// User → end of the block (`None`: until unblocked).
    blocks: HashMap<Arc<str>, Option<u64>>,
    /// Revoked `jti` → end of the revocation.
    jtis: HashMap<Arc<str>, u64>,
    /// User → (tokens issued before this Unix second are revoked, until).
    issued: HashMap<Arc<str>, (u64, u64)>,
}

impl State {
    fn add(&mut self, cmd: &UserCommand) {
        match cmd {
            UserCommand::Disconnect { .. }
            | UserCommand::Subscribe { .. }
            | UserCommand::Unsubscribe { .. } => {}
            UserCommand::Block { user, until } => {
                self.blocks.insert(user.clone(), *until);
            }
            UserCommand::Unblock { user } => {
                self.blocks.remove(user);
            }
            UserCommand::RevokeJti { jti, until } => {
                let e = self.jtis.entry(jti.clone()).or_default();
                *e = (*e).max(*until);
            }
            UserCommand::RevokeIssuedBefore {
                user,
                before,
                until,
            } => {
                // The later cut revokes everything the earlier one did.
                let e = self.issued.entry(user.clone()).or_default();
                *e = (e.0.max(*before), e.1.max(*until));
            }
        }
    }

    /// Drops what expired.
    fn prune(&mut self, now: u64) {
        self.blocks.retain(|_, until| until.is_none_or(|u| u > now));
        self.jtis.retain(|_, until| *until > now);
        self.issued.retain(|_, (_, until)| *until > now);
    }

    fn admits(&self, user: &str, token: &TokenId, now: u64) -> Result<(), Refusal> {
        if let Some(until) = self.blocks.get(user)
            && until.is_none_or(|u| u > now)
        {
            return Err(Refusal::Blocked);
        }
        if let Some(jti) = &token.jti
            && self.jtis.get(jti).is_some_and(|u| *u > now)
        {
            return Err(Refusal::Revoked);
        }
        if let Some((before, until)) = self.issued.get(user)
            && *until > now
            && token.iat.is_none_or(|iat| iat < *before)
        {
            return Err(Refusal::Revoked);
        }
        Ok(())
    }
}

/// The node's side of user controls: the engine's [`ControlSink`].
pub(crate) struct Controls {
    hub: Arc<Hub>,
    state: Mutex<State>,
}

impl Controls {
    pub(crate) fn new(hub: Arc<Hub>) -> Arc<Self> {
        Arc::new(Self {
            hub,
            state: Mutex::default(),
        })
    }

    /// Whether a handshake by `user` with `token` may go on.
    pub(crate) fn admits(&self, user: &str, token: &TokenId) -> Result<(), Refusal> {
        lock(&self.state).admits(user, token, unix_ms() as u64)
    }

    /// Closes this node's connections `cmd` names; how many.
    fn close(&self, cmd: &UserCommand) -> usize {
        let (code, reason): (u16, &'static str) = match cmd {
            UserCommand::Unblock { .. }
            | UserCommand::Subscribe { .. }
            | UserCommand::Unsubscribe { .. } => return 0,
            UserCommand::Disconnect { .. } => (close::DISCONNECTED, "disconnected by the server"),
            UserCommand::Block { .. } => (close::REVOKED, "user blocked"),
            UserCommand::RevokeJti { .. } | UserCommand::RevokeIssuedBefore { .. } => {
                (close::REVOKED, "token revoked")
            }
        };
        self.hub.close_where(code, reason, |c| names(cmd, c))
    }

    /// Hands a subscribe or unsubscribe to the tasks of this node's
    /// connections of its user; how many took it.
    fn subscribe(&self, cmd: &UserCommand) -> usize {
        let (user, room) = match cmd {
            UserCommand::Subscribe { user, room } => (user, RoomCommand::Join(room.clone())),
            UserCommand::Unsubscribe { user, room } => (user, RoomCommand::Leave(room.clone())),
            _ => return 0,
        };
        self.hub
            .command_where(&room, |c| c.holder().is_some_and(|(u, _)| *u == **user))
    }
}

/// Whether `cmd` is about connection `c`.
fn names(cmd: &UserCommand, c: &dyn Subscriber) -> bool {
    let Some((user, token)) = c.holder() else {
        return false;
    };
    match cmd {
        UserCommand::Unblock { .. }
        | UserCommand::Subscribe { .. }
        | UserCommand::Unsubscribe { .. } => false,
        UserCommand::Disconnect { user: u } | UserCommand::Block { user: u, .. } => **u == *user,
        UserCommand::RevokeJti { jti, .. } => token.jti.as_deref() == Some(&**jti),
        UserCommand::RevokeIssuedBefore {
            user: u, before, ..
        } => **u == *user && token.iat.is_none_or(|iat| iat < *before),
    }
}

impl ControlSink for Controls {
    fn apply(&self, cmd: &UserCommand) {
        {
            let mut s = lock(&self.state);
            s.prune(unix_ms() as u64);
            s.add(cmd);
        }
        if matches!(
            cmd,
            UserCommand::Subscribe { .. } | UserCommand::Unsubscribe { .. }
        ) {
            let told = self.subscribe(cmd);
            tracing::info!(?cmd, connections = told, "user control applied");
            return;
        }
        let closed = self.close(cmd);
        tracing::info!(?cmd, closed, "user control applied");
    }

    fn load(&self, state: Vec<UserCommand>) {
        let mut fresh = State::default();
        for cmd in &state {
            fresh.add(cmd);
        }
        fresh.prune(unix_ms() as u64);
        *lock(&self.state) = fresh;
        // A connection opened while the node was cut off from the
        // commands is closed now.
        for cmd in &state {
            self.close(cmd);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(jti: Option<&str>, iat: Option<u64>) -> TokenId {
        TokenId {
            jti: jti.map(Arc::from),
            iat,
        }
    }

    /// A connection of `user` that keeps the commands it is handed.
    struct Member {
        key: crate::broker::ConnKey,
        user: &'static str,
        token: TokenId,
        out: crate::outbound::Outbound,
        got: Mutex<Vec<RoomCommand>>,
    }

    impl Subscriber for Member {
        fn key(&self) -> crate::broker::ConnKey {
            self.key
        }
        fn outbound(&self) -> &crate::outbound::Outbound {
            &self.out
        }
        fn holder(&self) -> Option<(&str, &TokenId)> {
            Some((self.user, &self.token))
        }
        fn command(&self, cmd: RoomCommand) -> bool {
            lock(&self.got).push(cmd);
            true
        }
    }

    #[tokio::test]
    async fn a_subscribe_reaches_the_users_connections_only_and_closes_none() {
        let broker =
            crate::broker::memory::MemoryBroker::new(10, std::time::Duration::from_secs(60));
        let hub = Hub::new(broker, 16, tokio_util::task::TaskTracker::new());
        let controls = Controls::new(hub.clone());
        let members: Vec<Arc<Member>> = [(1, "u"), (2, "u"), (3, "v")]
            .into_iter()
            .map(|(key, user)| {
                Arc::new(Member {
                    key,
                    user,
                    token: token(None, None),
                    out: crate::outbound::Outbound::new(4),
                    got: Mutex::default(),
                })
            })
            .collect();
        for m in &members {
            hub.register(m.clone());
        }
        controls.apply(&UserCommand::Subscribe {
            user: "u".into(),
            room: "r".into(),
        });
        controls.apply(&UserCommand::Unsubscribe {
            user: "u".into(),
            room: "r".into(),
        });
        let want = vec![
            RoomCommand::Join("r".into()),
            RoomCommand::Leave("r".into()),
        ];
        assert_eq!(*lock(&members[0].got), want);
        assert_eq!(*lock(&members[1].got), want);
        assert!(lock(&members[2].got).is_empty());
        assert!(members.iter().all(|m| m.out.closing().is_none()));
        // Nothing is kept: a later handshake is not refused.
        assert_eq!(controls.admits("u", &token(None, None)), Ok(()));
    }

    #[test]
    fn blocks_end_when_lifted_or_expired() {
        let mut s = State::default();
        let t = token(None, None);
        s.add(&UserCommand::Block {
            user: "u".into(),
            until: None,
        });
        assert_eq!(s.admits("u", &t, 10), Err(Refusal::Blocked));
        assert_eq!(s.admits("v", &t, 10), Ok(()));
        s.add(&UserCommand::Unblock { user: "u".into() });
        assert_eq!(s.admits("u", &t, 10), Ok(()));
        s.add(&UserCommand::Block {
            user: "u".into(),
            until: Some(20),
        });
        assert_eq!(s.admits("u", &t, 19), Err(Refusal::Blocked));
        assert_eq!(s.admits("u", &t, 20), Ok(()));
        s.prune(20);
        assert!(s.blocks.is_empty(), "an expired block is dropped");
    }

    #[test]
    fn revocations_match_jti_or_iat_and_expire() {
        let mut s = State::default();
        s.add(&UserCommand::RevokeJti {
            jti: "j1".into(),
            until: 100,
        });
        assert_eq!(
            s.admits("u", &token(Some("j1"), None), 50),
            Err(Refusal::Revoked)
        );
        assert_eq!(s.admits("u", &token(Some("j2"), None), 50), Ok(()));
        assert_eq!(s.admits("u", &token(Some("j1"), None), 100), Ok(()));
        s.add(&UserCommand::RevokeIssuedBefore {
            user: "u".into(),
            before: 1000,
            until: 5000,
        });
        assert_eq!(
            s.admits("u", &token(None, Some(999)), 50),
            Err(Refusal::Revoked)
        );
        assert_eq!(s.admits("u", &token(None, None), 50), Err(Refusal::Revoked));
        assert_eq!(s.admits("u", &token(None, Some(1000)), 50), Ok(()));
        assert_eq!(s.admits("w", &token(None, Some(1)), 50), Ok(()));
        s.prune(5000);
        assert!(s.jtis.is_empty() && s.issued.is_empty());
    }
}
