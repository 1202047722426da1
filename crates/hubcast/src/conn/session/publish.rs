//! `publish` and `send`: each becomes a reply future whose broker call
//! starts at once; up to [`MAX_PIPELINE`] run together (a remote engine
//! pipelines them) and their replies are queued in the order the frames
//! came.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use futures_util::StreamExt;
use serde_json::value::RawValue;

use super::{Reject, Session, record_error, rejected, timed_out};
use crate::broker::{BrokerError, TIMEOUT_MESSAGE};
use crate::protocol::{self, ErrorCode, out};
use crate::publish::Publish;

/// A reply still being computed.
pub(super) type ReplyFuture = Pin<Box<dyn Future<Output = Bytes> + Send>>;

/// Publishes one connection may have under way at once.
const MAX_PIPELINE: usize = 64;

impl Session {
    /// The reply future of a `publish` (or `send`, into `@user`).
    pub(super) fn publish(
        &self,
        id: Option<&RawValue>,
        room: &str,
        event: &str,
        data: &RawValue,
        msg_id: Option<&str>,
        echo: bool,
    ) -> ReplyFuture {
        let mut req = Publish {
            room,
            event,
            data: data.get(),
            source: &self.conn.user,
            msg_id,
            trace_id: None,
            skip: (!echo).then_some(self.conn.key),
        }
        .request();
        self.app.mark_for_webhooks(&mut req);
        let msg_id = req.msg_id.clone();
        let app = self.app.clone();
        let conn = self.conn.clone();
        let id: Option<Box<RawValue>> = id.map(ToOwned::to_owned);
        Box::pin(async move {
            let id = id.as_deref();
            let room = req.room.clone();
            match app.broker.publish(req).await {
                Ok(result) => {
                    if !result.duplicate {
                        app.count_published(crate::metrics::Entry::Ws);
                    }
                    protocol::encode(&out::Ack {
                        ty: "ack",
                        id,
                        msg_id: &msg_id,
                        room: &room,
                        offset: result.offset,
                        epoch: &result.epoch,
                        duplicate: result.duplicate,
                    })
                }
                Err(BrokerError::Timeout { msg_id, detail }) => {
                    // The client reads a fixed sentence; the engine's own
                    // error is for the log (see `Reject::from`).
                    tracing::warn!(error = %detail, msg_id = %msg_id, "publish timed out");
                    let message = TIMEOUT_MESSAGE;
                    record_error(&app.recent, &conn, ErrorCode::Timeout, message);
                    timed_out(id, &msg_id, message)
                }
                Err(e) => {
                    let r = Reject::from(e);
                    record_error(&app.recent, &conn, r.code, &r.message);
                    rejected(id, r.code, &r.message)
                }
            }
        })
    }

    /// Queues a reply behind the replies still being computed.
    pub(super) fn reply_in_order(&mut self, frame: Bytes) {
        match &mut self.pending {
            None => self.push(frame),
            Some(p) => p.push_back(Box::pin(std::future::ready(frame))),
        }
    }

    /// Starts a reply future: polled once at once (which sends a remote
    /// engine its command; the memory engine simply finishes), then kept in
    /// order with the others.
    pub(super) async fn start(&mut self, mut reply: ReplyFuture) {
        if self
            .pending
            .as_ref()
            .is_some_and(|p| p.len() >= MAX_PIPELINE)
        {
            self.next_reply().await;
        }
        let first = reply.as_mut().poll(&mut Context::from_waker(Waker::noop()));
        match first {
            Poll::Ready(frame) => self.reply_in_order(frame),
            // Finished later, outside the frame's span: it keeps the
            // connection's span for its log lines.
            Poll::Pending => self.pending.get_or_insert_default().push_back(Box::pin(
                tracing::Instrument::instrument(reply, tracing::Span::current()),
            )),
        }
    }

    /// Whether replies are still being computed.
    pub(crate) fn has_pending(&self) -> bool {
        self.pending.is_some()
    }

    /// Waits for the oldest reply under way and queues it.
    pub(crate) async fn next_reply(&mut self) {
        let Some(pending) = self.pending.as_mut() else {
            return;
        };
        let frame = pending.next().await;
        if pending.is_empty() {
            self.pending = None;
        }
        if let Some(frame) = frame {
            self.push(frame);
        }
    }

    /// Waits for every reply under way.
    pub(super) async fn drain(&mut self) {
        while self.has_pending() {
            self.next_reply().await;
        }
    }
}
