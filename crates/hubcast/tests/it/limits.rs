//! Handshake limits: the global cap (503), connections per address and
//! handshakes per address per second (429), each with `Retry-After`.
#![allow(clippy::unwrap_used)]

use crate::common;

use std::time::Duration;

use common::{Client, Server};
use tokio_tungstenite::tungstenite;

/// The status and `Retry-After` of a refused handshake.
async fn refusal(url: &str) -> (u16, Option<String>, String) {
    match Client::connect_request(url).await {
        Err(tungstenite::Error::Http(resp)) => {
            let body: serde_json::Value =
                serde_json::from_slice(resp.body().as_deref().unwrap()).unwrap();
            (
                resp.status().as_u16(),
                resp.headers()
                    .get("retry-after")
                    .map(|v| v.to_str().unwrap().to_string()),
                body["error"]["code"].as_str().unwrap().to_string(),
            )
        }
        other => panic!("expected a refusal, got {:?}", other.map(|_| ())),
    }
}

/// Connects from a chosen loopback source address.
async fn connect_from(src: &str, url: &str) -> Result<(), tungstenite::Error> {
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.bind(format!("{src}:0").parse().unwrap()).unwrap();
    let addr = url.trim_start_matches("ws://").split('/').next().unwrap();
    let tcp = sock.connect(addr.parse().unwrap()).await.unwrap();
    tokio_tungstenite::client_async(url, tcp).await.map(|_| ())
}

#[tokio::test]
async fn the_global_cap_answers_503_then_frees_up() {
    let s = Server::start(|c| c.max_connections = 2).await;
    let a = s.client().await;
    let _b = s.client().await;
    let (status, retry, code) = refusal(&s.ws_url()).await;
    assert_eq!((status, code.as_str()), (503, "unavailable"));
    assert!(retry.is_some());
    a.close().await;
    let mut ok = false;
    for _ in 0..100 {
        if Client::connect_request(s.ws_url()).await.is_ok() {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(ok, "a closed connection gives its place back");
    s.stop().await;
}

#[tokio::test]
async fn connections_per_address_answer_429() {
    let s = Server::start(|c| c.max_connections_per_ip = 2).await;
    let _a = s.client().await;
    let _b = s.client().await;
    let (status, retry, code) = refusal(&s.ws_url()).await;
    assert_eq!((status, code.as_str()), (429, "rate_limited"));
    assert!(retry.is_some());
    // Another address is counted on its own.
    connect_from("127.0.0.2", &s.ws_url()).await.unwrap();
    s.stop().await;
}

#[tokio::test]
async fn handshakes_per_address_per_second_answer_429() {
    let s = Server::start(|c| c.handshakes_per_ip_per_sec = 2).await;
    let mut statuses = Vec::new();
    let mut kept = Vec::new();
    for _ in 0..8 {
        match Client::connect_request(s.ws_url()).await {
            Ok(ws) => {
                statuses.push(101);
                kept.push(ws);
            }
            Err(tungstenite::Error::Http(resp)) => {
                assert!(resp.headers().get("retry-after").is_some());
                statuses.push(resp.status().as_u16());
            }
            Err(e) => panic!("{e}"),
        }
    }
    assert!(
        statuses.iter().filter(|s| **s == 101).count() >= 4,
        "the burst is allowed: {statuses:?}"
    );
    assert!(statuses.contains(&429), "{statuses:?}");
    // Other addresses are not affected.
    connect_from("127.0.0.3", &s.ws_url()).await.unwrap();
    s.stop().await;
}

/// A long poll holds a connection open, so it counts under the caps like a
/// WebSocket or an SSE stream: past `max_connections_per_ip` a poll is
/// refused with 429, and a finished poll gives its place back.
#[tokio::test]
async fn long_polls_count_under_the_connection_caps() {
    use tokio::io::AsyncWriteExt;
    let s = Server::start(|c| c.max_connections_per_ip = 1).await;
    // Connected first, so accepted first (the listen queue is in order).
    let mut waiting = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    waiting
        .write_all(b"GET /api/poll?room=capped&since=0&timeout=3 HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    // The first poll holds the address's one place while it waits.
    let mut refused = None;
    for _ in 0..100 {
        let r = reqwest::get(s.http("/api/poll?room=capped&since=0&timeout=0"))
            .await
            .unwrap();
        if r.status() == 429 {
            refused = Some(r);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let r = refused.expect("a second poll from the same address is refused");
    assert!(r.headers().get("retry-after").is_some());
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "rate_limited");
    let answer = String::from_utf8(until_closed(&mut waiting).await).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    drop(waiting);
    // Its place is free again (once the server has seen the socket close).
    common::wait_until(|| async {
        let r = reqwest::get(s.http("/api/poll?room=capped&since=0&timeout=0"))
            .await
            .ok()?;
        (r.status() == 200).then_some(())
    })
    .await;
    s.stop().await;
}

/// Reads from `tcp` until the server closes it (EOF or reset); what it
/// sent before.
async fn until_closed(tcp: &mut tokio::net::TcpStream) -> Vec<u8> {
    use tokio::io::AsyncReadExt;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(Duration::from_secs(30), tcp.read(&mut buf))
            .await
            .expect("the server closes the socket")
        {
            Ok(0) | Err(_) => return got,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
}

/// Sockets that send nothing, send their headers a byte at a time, or
/// leave out the final CRLF, and kept-alive connections left idle, are
/// closed after `header_timeout`; the server answers others meanwhile.
#[tokio::test]
async fn sockets_without_a_request_are_closed_after_the_header_timeout() {
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpStream;
    let s = Server::start(|c| c.header_timeout = 1).await;
    let mut silent = TcpStream::connect(s.addr).await.unwrap();
    let mut unfinished = TcpStream::connect(s.addr).await.unwrap();
    unfinished
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        .await
        .unwrap();
    let mut trickle = TcpStream::connect(s.addr).await.unwrap();
    let trickling = tokio::spawn(async move {
        for b in b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: "
            .iter()
            .cycle()
        {
            if trickle.write_all(&[*b]).await.is_err() {
                return trickle;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        unreachable!()
    });
    let mut kept = TcpStream::connect(s.addr).await.unwrap();
    kept.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .await
        .unwrap();
    // Others are served meanwhile.
    assert_eq!(
        reqwest::get(s.http("/healthz")).await.unwrap().status(),
        200
    );
    assert!(until_closed(&mut silent).await.is_empty());
    assert!(until_closed(&mut unfinished).await.is_empty());
    let answered = String::from_utf8(until_closed(&mut kept).await).unwrap();
    assert!(answered.starts_with("HTTP/1.1 200"), "{answered}");
    let mut trickle = trickling.await.unwrap();
    until_closed(&mut trickle).await;
    s.stop().await;
}

/// `max_connections_per_ip` counts TCP connections from accept: sockets
/// that never make a request hold the address's places, the next one gets
/// a 429 like a refused handshake (but a health probe is answered: behind
/// a load balancer the clients filling the cap share the balancer's
/// address), other addresses are served, and a closed socket gives its
/// place back.
#[tokio::test]
async fn connections_per_address_count_sockets_from_accept() {
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpStream;
    let s = Server::start(|c| c.max_connections_per_ip = 3).await;
    let mut idle = Vec::new();
    for _ in 0..3 {
        idle.push(TcpStream::connect(s.addr).await.unwrap());
    }
    let ask = |request: &'static [u8]| async move {
        let mut tcp = TcpStream::connect(s.addr).await.ok()?;
        tcp.write_all(request).await.ok()?;
        String::from_utf8(until_closed(&mut tcp).await).ok()
    };
    // The socket is accepted after `connect` returns: wait for all three.
    let refused = common::wait_until(|| async {
        let answer = ask(b"GET /api/stats HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").await?;
        answer.starts_with("HTTP/1.1 429").then_some(answer)
    })
    .await;
    assert!(refused.contains("retry-after: 5"), "{refused}");
    assert!(refused.contains("\"rate_limited\""), "{refused}");
    for probe in [
        &b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"[..],
        &b"GET /readyz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"[..],
    ] {
        let answer = ask(probe).await.unwrap_or_default();
        assert!(
            answer.starts_with("HTTP/1.1 200"),
            "a probe over the cap: {answer}"
        );
        assert!(answer.contains("connection: close"), "{answer}");
    }
    // Another address is counted on its own.
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.bind("127.0.0.2:0".parse().unwrap()).unwrap();
    let mut other = sock.connect(s.addr).await.unwrap();
    other
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let answer = String::from_utf8(until_closed(&mut other).await).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    // A closed socket frees its place.
    idle.pop();
    common::wait_until(|| async {
        let r = reqwest::get(s.http("/healthz")).await.ok()?;
        (r.status() == 200).then_some(())
    })
    .await;
    s.stop().await;
}
