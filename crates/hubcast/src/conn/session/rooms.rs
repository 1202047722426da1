//! `join` and `leave`, the rooms a connection's token allows, and what
//! room rules (`[[rooms]]`) allow clients there.

use std::sync::Arc;

use serde_json::value::RawValue;

use super::{Reject, Session, client_info, record_error};
use crate::admission;
use crate::broker::{PresencePage, Recovery};
use crate::hub::{Join, Subscriber};
use crate::protocol::{self, ErrorCode, out};
use crate::rules::Publishers;

impl Session {
    /// Whether the token (or anonymity) allows this room
    /// ([`admission::check_grants`]).
    pub(super) fn check_room(&self, room: &str, what: &str) -> Result<(), Reject> {
        admission::check_grants(&self.conn.user, &self.conn.grants, room, what)
            .map_err(|(code, m)| Reject::new(code, m))
    }

    /// Whether this connection may join `room` ([`admission::check_join`]).
    /// `&mut`: a `Session` is not `Sync`, and this future is held across
    /// the join hook's request.
    async fn check_join(&mut self, room: &str) -> Result<(), Reject> {
        let who = admission::Joiner {
            conn: &self.conn.id,
            user: &self.conn.user,
            grants: &self.conn.grants,
            trace: self.conn.trace_id,
        };
        admission::check_join(&self.app, &who, room)
            .await
            .map_err(|(code, m)| Reject::new(code, m))
    }

    /// Whether the room's rule lets clients publish there (`publish =
    /// "server"`: only the server API does): `Ok(true)` when the publish
    /// hook decides.
    pub(super) fn check_publisher(&self, room: &str) -> Result<bool, Reject> {
        match self.app.live().rules.for_room(room).publish {
            Publishers::Members => Ok(false),
            Publishers::Hook => Ok(true),
            Publishers::Server => Err(Reject::new(
                ErrorCode::Forbidden,
                format!("cannot publish to {room}: only the server publishes there (room rule)"),
            )),
        }
    }

    /// Whether the room's rule keeps presence (`presence = false`: the
    /// `presence` frame is refused).
    pub(super) fn check_presence(&self, room: &str) -> Result<(), Reject> {
        if self.app.live().rules.for_room(room).presence {
            return Ok(());
        }
        Err(Reject::new(
            ErrorCode::Forbidden,
            format!("{room} keeps no presence (room rule)"),
        ))
    }

    /// The token's `subs`, joined at connect: each is a `join` without
    /// `id` and with every check of one (name, the token's grants, room
    /// rules, `max_rooms_per_conn`) except the join rate, which paces the
    /// client's own joins and which `max_rooms_per_conn` bounds here. A
    /// refused room is an `error` frame without `id` naming it in `room`;
    /// the others are joined all the same.
    pub(super) async fn join_subs(&mut self, subs: Vec<String>) {
        for room in subs {
            let joined = match self.check_join(&room).await {
                Ok(()) => self.join_room(None, &room, None).await,
                Err(r) => Err(r),
            };
            if let Err(r) = joined {
                let message = format!("subs {room:?}: {}", r.message);
                record_error(&self.app.recent, &self.conn, r.code, &message);
                metrics::counter!(crate::metrics::FRAMES_REJECTED, "code" => r.code.as_str())
                    .increment(1);
                self.push(protocol::room_error_frame(&room, r.code, &message));
            }
        }
    }

    pub(super) async fn join(
        &mut self,
        id: Option<&RawValue>,
        room: &str,
        since: Option<(u64, Option<&str>)>,
    ) -> Result<(), Reject> {
        if !self.joins.allow() {
            return Err(Reject::new(
                ErrorCode::RateLimited,
                "too many joins; slow down",
            ));
        }
        self.check_join(room).await?;
        self.join_room(id, room, since).await
    }

    /// A join past every check of who may join: `max_rooms_per_conn`,
    /// presence, then the hub's gap-free join and its `joined` reply.
    pub(super) async fn join_room(
        &mut self,
        id: Option<&RawValue>,
        room: &str,
        since: Option<(u64, Option<&str>)>,
    ) -> Result<(), Reject> {
        let personal = protocol::is_personal(room);
        let already = self.joined(room);
        if !personal && !already && self.joined_count() >= self.app.live().config.max_rooms_per_conn
        {
            return Err(Reject::new(
                ErrorCode::TooManyRooms,
                format!(
                    "a connection may join at most {} rooms",
                    self.app.live().config.max_rooms_per_conn
                ),
            ));
        }
        let (app, conn) = (&self.app, &self.conn);
        let sub: Arc<dyn Subscriber> = conn.clone();
        let prepare = async {
            if !already && app.keeps_presence(room) {
                app.presence.join(room, &client_info(conn)).await?;
            }
            app.presence_page(room).await
        };
        let reply = |rec: &Recovery, page: Arc<PresencePage>| {
            Some(protocol::encode(&out::Joined {
                ty: "joined",
                id,
                room,
                offset: rec.top,
                epoch: &rec.epoch,
                recovered: since.map(|_| rec.recovered),
                members: &page.members,
                total: page.total,
            }))
        };
        let join = Join {
            room,
            explicit: true,
            since,
        };
        let joined = app.hub.join(&sub, join, prepare, reply).await?;
        if !already {
            // Exact: most connections join one room or two, and a first
            // push would make room for four.
            self.rooms.reserve_exact(1);
            self.rooms.push(joined.room);
        }
        Ok(())
    }

    /// Where `room` is in the list of rooms joined with `join`.
    fn position(&self, room: &str) -> Option<usize> {
        self.rooms.iter().position(|r| **r == *room)
    }

    /// Whether `room` was joined with `join`.
    pub(super) fn joined(&self, room: &str) -> bool {
        self.position(room).is_some()
    }

    /// Explicitly joined rooms, the personal room not counted.
    fn joined_count(&self) -> usize {
        let personal = protocol::personal_room(&self.conn.user);
        self.rooms.len() - usize::from(self.joined(&personal))
    }

    pub(super) async fn leave(&mut self, id: Option<&RawValue>, room: &str) -> Result<(), Reject> {
        let Some(i) = self.position(room) else {
            return Err(Reject::new(
                ErrorCode::NotJoined,
                format!("not joined to {room}"),
            ));
        };
        self.rooms.swap_remove(i);
        self.app.hub.leave(&*self.conn, room, true).await;
        self.push(protocol::encode(&out::Left {
            ty: "left",
            id,
            room,
        }));
        if self.app.keeps_presence(room) {
            self.app
                .presence
                .leave(room, &client_info(&self.conn))
                .await?;
        }
        Ok(())
    }
}
