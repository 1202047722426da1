//! How the node's pub/sub reaches Redis: what differs between one server's
//! pub/sub and a cluster's sharded pub/sub, so that the pub/sub task
//! (`pubsub`) has one loop for both.

use futures_util::StreamExt;
use redis::aio::{PubSubSink, PubSubStream};
use redis::cluster_async::ClusterConnection;
use redis::{ErrorKind, Msg, PushInfo, PushKind, RedisError, RedisResult, Value};
use tokio::sync::mpsc;

use super::COMMAND_TIMEOUT;

/// Channels per `SUBSCRIBE` on the plain connection: a wave of joins or a
/// resubscription of every room takes a few commands, each of a size Redis
/// reads at once.
const CHANNELS_PER_COMMAND: usize = 1000;

/// The node's pub/sub link.
pub(super) enum Link {
    /// One server: a dedicated pub/sub connection, which only the task
    /// opens and reopens (`None` while closed). A subscription's reply is
    /// its confirmation.
    Plain {
        client: redis::Client,
        conn: Option<(PubSubSink, PubSubStream)>,
    },
    /// A cluster: the client's connections, one per master, which it
    /// reconnects and resubscribes by itself; messages, confirmations and
    /// disconnections arrive as RESP3 pushes.
    Cluster {
        conn: ClusterConnection,
        pushes: mpsc::UnboundedReceiver<PushInfo>,
    },
}

/// What the link reports.
pub(super) enum Event {
    /// A message on a subscribed channel.
    Message(Msg),
    /// Redis confirmed a subscription to this channel that the task may not
    /// have asked for (the cluster client resubscribing by itself).
    Subscribed(String),
    /// Subscriptions were lost, and the link does not say which: the plain
    /// connection dropped, or one of the cluster's connections did.
    Lost,
}

impl Link {
    /// False only for a plain connection that must be opened (again).
    pub(super) fn is_open(&self) -> bool {
        match self {
            Link::Plain { conn, .. } => conn.is_some(),
            Link::Cluster { .. } => true,
        }
    }

    /// Opens a closed plain connection; it starts with no subscriptions.
    pub(super) async fn open(&mut self) -> Result<(), String> {
        let Link::Plain { client, conn } = self else {
            return Ok(());
        };
        if conn.is_none() {
            let pubsub = tokio::time::timeout(COMMAND_TIMEOUT, client.get_async_pubsub())
                .await
                .map_err(|_| "timeout".to_string())?
                .map_err(|e| e.to_string())?;
            *conn = Some(pubsub.split());
        }
        Ok(())
    }

    /// Drops a plain connection whose state is no longer known (its
    /// subscriptions with it). A cluster's connections stay: its client
    /// reconnects them.
    pub(super) fn close(&mut self) {
        if let Link::Plain { conn, .. } = self {
            *conn = None;
        }
    }

    /// `SUBSCRIBE`s every channel: a few commands of many channels each on
    /// the plain connection, one `SSUBSCRIBE` per channel, all at once, on
    /// a cluster (a command's channels must share a slot). A repeated
    /// subscription is harmless: Redis only confirms it again. Each command
    /// is bounded by [`COMMAND_TIMEOUT`]; one that times out leaves the
    /// link in an unknown state, to be treated as lost.
    pub(super) async fn subscribe_all(&mut self, channels: Vec<String>) -> RedisResult<()> {
        self.all(channels, true).await
    }

    /// `UNSUBSCRIBE`s (`SUNSUBSCRIBE`s) every channel, as
    /// [`Link::subscribe_all`] subscribes them.
    pub(super) async fn unsubscribe_all(&mut self, channels: Vec<String>) -> RedisResult<()> {
        self.all(channels, false).await
    }

    async fn all(&mut self, channels: Vec<String>, subscribe: bool) -> RedisResult<()> {
        match self {
            Link::Plain { conn, .. } => {
                let sink = sink(conn)?;
                for chunk in channels.chunks(CHANNELS_PER_COMMAND) {
                    let chunk = chunk.to_vec();
                    let sent = async {
                        if subscribe {
                            sink.subscribe(chunk).await
                        } else {
                            sink.unsubscribe(chunk).await
                        }
                    };
                    bounded(sent).await?;
                }
                Ok(())
            }
            Link::Cluster { conn, .. } => {
                let results = futures_util::future::join_all(channels.into_iter().map(|channel| {
                    let mut conn = conn.clone();
                    bounded(async move {
                        if subscribe {
                            conn.ssubscribe(channel).await
                        } else {
                            conn.sunsubscribe(channel).await
                        }
                    })
                }))
                .await;
                results.into_iter().collect()
            }
        }
    }

    /// The next event; waits for ever on a closed link. `None`: the link is
    /// gone for good (the cluster client stopped sending pushes).
    pub(super) async fn next(&mut self) -> Option<Event> {
        match self {
            Link::Plain { conn: None, .. } => std::future::pending().await,
            Link::Plain {
                conn: Some((_, stream)),
                ..
            } => Some(stream.next().await.map_or(Event::Lost, Event::Message)),
            Link::Cluster { pushes, .. } => loop {
                let push = pushes.recv().await?;
                match push.kind {
                    PushKind::SMessage => {
                        if let Some(msg) = Msg::from_push_info(push) {
                            return Some(Event::Message(msg));
                        }
                    }
                    PushKind::SSubscribe => {
                        if let Some(Value::BulkString(channel)) = push.data.first()
                            && let Ok(channel) = std::str::from_utf8(channel)
                        {
                            return Some(Event::Subscribed(channel.to_string()));
                        }
                    }
                    PushKind::Disconnection => return Some(Event::Lost),
                    _ => {}
                }
            },
        }
    }
}

/// At most [`COMMAND_TIMEOUT`] for a (un)subscribe command: its reply
/// waits on Redis alone, which a cut link never answers.
async fn bounded(sent: impl Future<Output = RedisResult<()>>) -> RedisResult<()> {
    match tokio::time::timeout(COMMAND_TIMEOUT, sent).await {
        Ok(r) => r,
        Err(_) => Err(RedisError::from(std::io::Error::from(
            std::io::ErrorKind::TimedOut,
        ))),
    }
}

fn sink(conn: &mut Option<(PubSubSink, PubSubStream)>) -> RedisResult<&mut PubSubSink> {
    match conn {
        Some((sink, _)) => Ok(sink),
        None => Err(RedisError::from((
            ErrorKind::Io,
            "pub/sub connection closed",
        ))),
    }
}
