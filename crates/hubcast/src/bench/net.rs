//! Load-side connections: WebSocket and HTTP/1.1 over TCP streams that
//! count their bytes, bound to source addresses spread over 127.0.0.x so a
//! run can open more connections than one address has ports.

use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpSocket, TcpStream};

/// Bytes moved by a group of connections (all subscribers of a run, say).
#[derive(Default)]
pub(crate) struct Wire {
    /// Bytes read from the server.
    pub read: AtomicU64,
    /// Bytes written to the server.
    pub written: AtomicU64,
}

/// A stream that adds what passes through it to a [`Wire`].
pub(crate) struct Counted<S> {
    inner: S,
    wire: Arc<Wire>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Counted<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        if n > 0 {
            self.wire.read.fetch_add(n as u64, Ordering::Relaxed);
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Counted<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = r {
            self.wire.written.fetch_add(n as u64, Ordering::Relaxed);
        }
        r
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = r {
            self.wire.written.fetch_add(n as u64, Ordering::Relaxed);
        }
        r
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// One server node as the load tool sees it.
#[derive(Clone, Debug)]
pub(crate) struct Node {
    /// Where it listens.
    pub addr: SocketAddr,
    /// The WebSocket URL (`ws://host:port/ws`).
    pub ws_url: String,
}

impl Node {
    /// The node listening at `addr`, its WebSocket endpoint at `/ws`.
    pub(crate) fn at(addr: SocketAddr) -> Node {
        Node {
            addr,
            ws_url: format!("ws://{addr}/ws"),
        }
    }

    /// A node from its WebSocket URL (`ws://127.0.0.1:8080/ws`).
    pub(crate) fn from_url(url: &str) -> anyhow::Result<Node> {
        let uri: hyper::Uri = url.parse().with_context(|| format!("bad URL {url}"))?;
        if uri.scheme_str() != Some("ws") {
            bail!("{url}: the bench tool speaks ws:// (put TLS in front of it separately)");
        }
        let host = uri.host().ok_or_else(|| anyhow!("{url}: no host"))?;
        let port = uri.port_u16().unwrap_or(80);
        let ip: std::net::IpAddr = host
            .trim_matches(|c| c == '[' || c == ']')
            .parse()
            .with_context(|| format!("{url}: the host must be an IP address"))?;
        Ok(Node {
            addr: SocketAddr::new(ip, port),
            ws_url: url.to_string(),
        })
    }
}

/// How connections are opened: source addresses and credentials.
#[derive(Clone, Debug)]
pub(crate) struct Dialer {
    /// Spread connections over 127.0.0.1 .. 127.0.0.N (1: the default route).
    pub src_ips: u32,
    /// Connection token (`Authorization: Bearer`), when the server wants one.
    pub token: Option<String>,
    /// API key for `/api/*`.
    pub api_key: Option<String>,
}

/// One GET of `path` from the node at `addr` within `within`: status and
/// body; `None` when there is no answer (a node stopped, dead or not
/// started yet).
pub(crate) async fn get(addr: SocketAddr, path: &str, within: Duration) -> Option<(u16, Bytes)> {
    let dialer = Dialer {
        src_ips: 1,
        token: None,
        api_key: None,
    };
    let wire = Arc::new(Wire::default());
    tokio::time::timeout(within, async {
        let mut h = dialer.http(&Node::at(addr), 0, &wire).await.ok()?;
        let (s, body) = h.request(hyper::Method::GET, path, None).await.ok()?;
        Some((s.as_u16(), body))
    })
    .await
    .ok()
    .flatten()
}

/// The source address for connection `i`.
pub(crate) fn source_ip(i: usize, n: u32) -> Ipv4Addr {
    let k = (i % n.max(1) as usize) as u32;
    Ipv4Addr::new(127, 0, (k / 250) as u8, (1 + k % 250) as u8)
}

impl Dialer {
    async fn tcp(&self, node: &Node, i: usize) -> anyhow::Result<TcpStream> {
        let sock = match node.addr {
            SocketAddr::V4(_) => TcpSocket::new_v4()?,
            SocketAddr::V6(_) => TcpSocket::new_v6()?,
        };
        if self.src_ips > 1 && node.addr.is_ipv4() && node.addr.ip().is_loopback() {
            sock.bind(SocketAddr::new(source_ip(i, self.src_ips).into(), 0))
                .context("bind a source address")?;
        }
        let stream = tokio::time::timeout(Duration::from_secs(30), sock.connect(node.addr))
            .await
            .map_err(|_| anyhow!("connect to {}: timed out", node.addr))?
            .with_context(|| format!("connect to {}", node.addr))?;
        stream.set_nodelay(true)?;
        Ok(stream)
    }

    /// A WebSocket connection as user `name` (anonymous servers take the
    /// name from the query), the `welcome` frame already read.
    pub(crate) async fn ws(
        &self,
        node: &Node,
        i: usize,
        name: &str,
        wire: &Arc<Wire>,
    ) -> anyhow::Result<Ws> {
        let tcp = self.tcp(node, i).await?;
        let sep = if node.ws_url.contains('?') { '&' } else { '?' };
        let url = format!("{}{sep}name={name}", node.ws_url);
        let stream = Counted {
            inner: tcp,
            wire: wire.clone(),
        };
        let handshake = hubcast_client::raw::handshake(stream, &url, self.token.as_deref());
        let mut ws = tokio::time::timeout(Duration::from_secs(30), handshake)
            .await
            .map_err(|_| anyhow!("WebSocket handshake timed out"))??;
        ws.await_type("welcome").await?;
        Ok(ws)
    }

    /// An HTTP/1.1 keep-alive connection.
    pub(crate) async fn http(
        &self,
        node: &Node,
        i: usize,
        wire: &Arc<Wire>,
    ) -> anyhow::Result<Http> {
        let tcp = self.tcp(node, i).await?;
        let io = TokioIo::new(Counted {
            inner: tcp,
            wire: wire.clone(),
        });
        let (send, conn) = hyper::client::conn::http1::handshake(io).await?;
        let driver = tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(Http {
            send,
            driver,
            host: node.addr.to_string(),
            api_key: self.api_key.clone(),
        })
    }
}

/// A load-side WebSocket: the client crate's bare connection over a
/// byte-counted stream.
pub(crate) type Ws = hubcast_client::raw::Ws<Counted<TcpStream>>;

pub(crate) use hubcast_client::raw::{Frame, number_after};

/// A load-side HTTP/1.1 connection.
pub(crate) struct Http {
    send: SendRequest<Full<Bytes>>,
    driver: tokio::task::JoinHandle<()>,
    host: String,
    api_key: Option<String>,
}

impl Drop for Http {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

impl Http {
    /// One request; the status and the whole body.
    pub(crate) async fn request(
        &mut self,
        method: hyper::Method,
        path: &str,
        body: Option<Bytes>,
    ) -> anyhow::Result<(hyper::StatusCode, Bytes)> {
        let mut req = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, &self.host);
        if let Some(k) = &self.api_key {
            req = req.header(hyper::header::AUTHORIZATION, format!("Bearer {k}"));
        }
        if body.is_some() {
            req = req.header(hyper::header::CONTENT_TYPE, "application/json");
        }
        let req = req.body(Full::new(body.unwrap_or_default()))?;
        self.send.ready().await?;
        let res = self.send.send_request(req).await?;
        let status = res.status();
        let body = res.into_body().collect().await?.to_bytes();
        Ok((status, body))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_addresses_spread_over_loopback() {
        assert_eq!(source_ip(0, 1), Ipv4Addr::new(127, 0, 0, 1));
        assert_eq!(source_ip(7, 1), Ipv4Addr::new(127, 0, 0, 1));
        assert_eq!(source_ip(3, 20), Ipv4Addr::new(127, 0, 0, 4));
        assert_eq!(source_ip(23, 20), Ipv4Addr::new(127, 0, 0, 4));
        assert_eq!(source_ip(260, 300), Ipv4Addr::new(127, 0, 1, 11));
    }

    #[test]
    fn nodes_from_urls() {
        let n = Node::from_url("ws://127.0.0.1:8080/ws").expect("valid");
        assert_eq!(n.addr, "127.0.0.1:8080".parse().expect("addr"));
        assert!(Node::from_url("http://127.0.0.1/ws").is_err());
        assert!(Node::from_url("ws://localhost/ws").is_err());
    }
}
