//! `POST /api/subscribe` and `POST /api/unsubscribe` (PROTOCOL.md section
//! 8): every open connection of a user, on every node, joins or leaves a
//! room. One command goes through the engine's control path to every
//! node, where each connection's own task applies it
//! (`conn::session::subscribe`, the SSE stream), through the hub's
//! gap-free join.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use super::error::HttpError;
use super::users::{JsonObject, bad, to_every_connection, user_field};
use crate::App;
use crate::broker::UserCommand;
use crate::protocol;

/// The body's `room`, checked: a valid name, and not a personal room
/// (every connection is in its own already, and another user's would
/// hand over that user's direct messages).
fn room_field(m: &Map<String, Value>) -> Result<Arc<str>, HttpError> {
    let room = match m.get("room") {
        None => return Err(bad("`room` is required")),
        Some(Value::String(r)) => r,
        Some(_) => return Err(bad("`room` must be a string")),
    };
    protocol::check_room(room).map_err(|e| bad(format!("`room`: {e}")))?;
    if protocol::is_personal(room) {
        return Err(bad(
            "`room`: a personal room (@user) cannot be subscribed to or left",
        ));
    }
    Ok(Arc::from(room.as_str()))
}

/// `POST /api/subscribe` (`JOIN`) and `/api/unsubscribe`: `{"user",
/// "room"}`. The reply's `connections` is how many connections the user
/// had open on every node just before, as `GET /api/users/{user}/status`
/// counts them (0 for a user never seen): the command reaches each of
/// them, and each joins unless its own limit (`max_rooms_per_conn`)
/// refuses, which it is told in an `error` frame.
pub(crate) async fn subscribe<const JOIN: bool>(
    State(app): State<Arc<App>>,
    JsonObject(m): JsonObject,
) -> Result<Response, HttpError> {
    let user = user_field(&m)?;
    let room = room_field(&m)?;
    let cmd = if JOIN {
        UserCommand::Subscribe {
            user: user.clone(),
            room: room.clone(),
        }
    } else {
        UserCommand::Unsubscribe {
            user: user.clone(),
            room: room.clone(),
        }
    };
    let connections = to_every_connection(&app, &user, cmd).await?;
    Ok(Json(json!({"user": &*user, "room": &*room, "connections": connections})).into_response())
}
