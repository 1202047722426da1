//! [`Publish`]: the one way a publish, from a WebSocket frame or the HTTP
//! API, becomes the broker's [`PublishRequest`], so both get the same
//! envelope, message id and deduplication.

use std::sync::Arc;

use crate::broker::{ConnKey, PublishRequest};
use crate::protocol::EnvelopeParts;

/// What a client or a backend asked to publish, checked.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Publish<'a> {
    /// Target room.
    pub room: &'a str,
    /// `eventType`.
    pub event: &'a str,
    /// The message's `data`, raw JSON.
    pub data: &'a str,
    /// `source`: the publishing user, or the API caller's source.
    pub source: &'a str,
    /// The publisher's `msgId`: deduplicated when given, a fresh UUIDv7
    /// when not.
    pub msg_id: Option<&'a str>,
    /// A W3C trace id to carry in the envelope (anything but 32 hex digits
    /// is ignored).
    pub trace_id: Option<&'a str>,
    /// A local connection not to deliver to (the publisher, echo off).
    pub skip: Option<ConnKey>,
}

impl Publish<'_> {
    /// The broker request, stamped with the server's receive time.
    pub(crate) fn request(self) -> PublishRequest {
        let (msg_id, idempotent) = match self.msg_id {
            Some(m) => (m.to_owned(), true),
            None => (uuid::Uuid::now_v7().to_string(), false),
        };
        let parts = EnvelopeParts::new(
            self.room,
            &msg_id,
            crate::unix_ms(),
            self.event,
            self.source,
            self.data,
        )
        .with_trace_id(self.trace_id);
        PublishRequest {
            room: Arc::from(self.room),
            msg_id,
            idempotent,
            parts,
            skip: self.skip,
            webhook: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_given_msg_id_is_deduplicated_and_a_missing_one_is_made() {
        let p = Publish {
            room: "r",
            event: "e",
            data: "1",
            source: "u",
            msg_id: Some("m-1"),
            trace_id: None,
            skip: Some(7),
        };
        let req = p.request();
        assert_eq!(
            (&*req.room, req.msg_id.as_str(), req.idempotent),
            ("r", "m-1", true)
        );
        assert_eq!(req.skip, Some(7));
        let req = Publish { msg_id: None, ..p }.request();
        assert!(!req.idempotent);
        assert!(uuid::Uuid::parse_str(&req.msg_id).is_ok());
    }
}
