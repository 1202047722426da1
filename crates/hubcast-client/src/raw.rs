//! One WebSocket connection to hubcast, without any of the [`crate::Client`]
//! bookkeeping: the handshake over a stream the caller opened (so a load
//! tool can bind source addresses and count bytes), frames in and out, and
//! a few helpers. `hubcast bench` runs its thousands of connections on this.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use hubcast_protocol::client::Request;
use hubcast_protocol::close;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_websockets::{ClientBuilder, Message, Payload, WebSocketStream};

use crate::Error;

/// A WebSocket to hubcast over any byte stream.
pub struct Ws<S>(pub WebSocketStream<S>);

/// What a WebSocket read gave.
pub enum Frame {
    /// A text frame's payload.
    Text(Payload),
    /// The server closed the connection (close code, 1006 when it just went away).
    Closed(u16),
}

/// The WebSocket handshake on `stream` to `url` (`ws://host:port/ws?...`),
/// with the token as a Bearer header when given. Returns before `welcome`
/// is read.
pub async fn handshake<S>(stream: S, url: &str, token: Option<&str>) -> Result<Ws<S>, Error>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let uri: http::Uri = url.parse().map_err(|e| Error::Url(format!("{url}: {e}")))?;
    let mut b = ClientBuilder::from_uri(uri);
    if let Some(t) = token {
        let v = http::HeaderValue::from_str(&format!("Bearer {t}"))
            .map_err(|_| Error::Url("the token is not a valid header value".into()))?;
        b = b
            .add_header(http::header::AUTHORIZATION, v)
            .map_err(|e| Error::Handshake(e.to_string()))?;
    }
    let (ws, _) = b
        .connect_on(stream)
        .await
        .map_err(|e| Error::Handshake(e.to_string()))?;
    Ok(Ws(ws))
}

impl<S: AsyncRead + AsyncWrite + Unpin> Ws<S> {
    /// Sends one text frame.
    pub async fn send(&mut self, text: String) -> Result<(), Error> {
        self.0
            .send(Message::text(text))
            .await
            .map_err(|e| Error::Io(e.to_string()))
    }

    /// The next text frame, or how the connection ended.
    pub async fn next_frame(&mut self) -> Frame {
        loop {
            match self.0.next().await {
                Some(Ok(m)) if m.is_text() => return Frame::Text(m.into_payload()),
                Some(Ok(m)) if m.is_close() => {
                    return Frame::Closed(m.as_close().map_or(close::NO_STATUS, |(c, _)| c.into()));
                }
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return Frame::Closed(close::ABNORMAL),
            }
        }
    }

    /// Reads until a frame of type `typ` arrives (30 s at most); an
    /// `error` frame first is an error.
    pub async fn await_type(&mut self, typ: &str) -> Result<Payload, Error> {
        let want = format!("\"type\":\"{typ}\"");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            match tokio::time::timeout_at(deadline, self.next_frame()).await {
                Err(_) => return Err(Error::Timeout(format!("no `{typ}` frame within 30 s"))),
                Ok(Frame::Closed(code)) => {
                    return Err(Error::Closed {
                        code,
                        reason: format!("while waiting for `{typ}`"),
                    });
                }
                Ok(Frame::Text(t)) => {
                    if t.windows(want.len()).any(|w| w == want.as_bytes()) {
                        return Ok(t);
                    }
                    if t.starts_with(br#"{"type":"error""#) && !typ.is_empty() {
                        return Err(Error::Server {
                            code: "error".into(),
                            message: String::from_utf8_lossy(&t).into_owned(),
                        });
                    }
                }
            }
        }
    }

    /// Joins `room` and waits for `joined`.
    pub async fn join(&mut self, room: &str) -> Result<(), Error> {
        let frame: Request<'_> = Request::Join {
            id: Some(1),
            room,
            since: None,
            epoch: None,
        };
        self.send(frame.to_text()).await?;
        self.await_type("joined").await.map(|_| ())
    }

    /// Sends a close frame and waits (briefly) for the server's.
    pub async fn close(mut self) {
        let _ = self.0.close().await;
        let _ = tokio::time::timeout(Duration::from_secs(5), async {
            while let Some(Ok(_)) = self.0.next().await {}
        })
        .await;
    }
}

/// Finds the unsigned integer after `key` (e.g. `"offset":`) in a frame,
/// without parsing the JSON (a load tool reads millions of frames).
pub fn number_after(frame: &[u8], key: &[u8]) -> Option<u64> {
    let at = frame.windows(key.len()).position(|w| w == key)? + key.len();
    let digits = frame[at..]
        .iter()
        .take_while(|b| b.is_ascii_digit())
        .count();
    std::str::from_utf8(&frame[at..at + digits])
        .ok()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_after_keys() {
        let f = br#"{"type":"message","room":"r","offset":43,"data":{"t":1700000000123,"p":"x"}}"#;
        assert_eq!(number_after(f, br#""offset":"#), Some(43));
        assert_eq!(number_after(f, br#""t":"#), Some(1_700_000_000_123));
        assert_eq!(number_after(f, br#""nope":"#), None);
        assert_eq!(number_after(br#"{"t":x}"#, br#""t":"#), None);
    }
}
