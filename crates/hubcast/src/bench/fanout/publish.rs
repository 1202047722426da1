//! The publisher side of a fan-out: publishers over WebSocket (acks
//! counted, a window when unpaced) or the HTTP API, paced to their share
//! of the rate, spreading publishes over the rooms as wsload does.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_websockets::Message;

use super::super::net::{Http, Wire, Ws, number_after};
use super::{FanoutArgs, PubVia, Tally, Target, unix_ns};

/// Spaces one publisher's sends to its share of the rate.
struct Pacer {
    per: Option<Duration>,
    next: tokio::time::Instant,
}

impl Pacer {
    fn new(rate: u64, pubs: usize) -> Pacer {
        Pacer {
            per: (rate > 0).then(|| Duration::from_secs_f64(pubs as f64 / rate as f64)),
            next: tokio::time::Instant::now(),
        }
    }
    /// Waits until the next send is due; false when unpaced.
    async fn wait(&mut self) -> bool {
        let Some(per) = self.per else { return false };
        self.next += per;
        tokio::time::sleep_until(self.next).await;
        true
    }
}

fn room_of(p: usize, n: u64, pubs: usize, rooms: usize) -> usize {
    ((p as u64 + n * pubs as u64) % rooms as u64) as usize
}

fn payload(size: usize) -> String {
    "x".repeat(size)
}

/// One WebSocket publisher until `deadline`, then until its publishes are
/// answered (10 s at most).
async fn ws_publisher(
    p: usize,
    ws: Ws,
    spec: FanoutArgs,
    prefix: String,
    tally: Arc<Tally>,
    deadline: tokio::time::Instant,
) {
    let (mut sink, mut stream) = ws.0.split();
    let window = Arc::new(Semaphore::new(spec.window.max(1)));
    let answered = Arc::new(AtomicU64::new(0));
    let rooms = spec.rooms.max(1);
    let reader = {
        let (window, answered, tally) = (window.clone(), answered.clone(), tally.clone());
        tokio::spawn(async move {
            #[derive(serde::Deserialize)]
            struct Reply<'a> {
                #[serde(rename = "type")]
                kind: &'a str,
                id: Option<u64>,
                offset: Option<u64>,
            }
            while let Some(Ok(m)) = stream.next().await {
                let Ok(r) = serde_json::from_slice::<Reply>(m.as_payload()) else {
                    continue;
                };
                let Some(id) = r.id else { continue };
                match r.kind {
                    "ack" => tally.ack(room_of(p, id, spec.pubs, rooms), r.offset),
                    "error" => {
                        tally.rejected.fetch_add(1, Ordering::Relaxed);
                    }
                    _ => continue,
                }
                answered.fetch_add(1, Ordering::Relaxed);
                window.add_permits(1);
            }
        })
    };
    let pad = payload(spec.size);
    let mut pacer = Pacer::new(spec.rate, spec.pubs);
    let mut sent = 0u64;
    while tokio::time::Instant::now() < deadline {
        if !pacer.wait().await {
            match window.acquire().await {
                Ok(permit) => permit.forget(),
                Err(_) => break,
            }
        }
        let room = room_of(p, sent, spec.pubs, rooms);
        let frame = format!(
            r#"{{"type":"publish","id":{sent},"room":"{prefix}{room}","event":"bench","data":{{"t":{},"p":"{pad}"}}}}"#,
            unix_ns()
        );
        if sink.send(Message::text(frame)).await.is_err() {
            tally.publisher_errors.fetch_add(1, Ordering::Relaxed);
            break;
        }
        sent += 1;
        tally.published.fetch_add(1, Ordering::Relaxed);
    }
    let until = tokio::time::Instant::now() + Duration::from_secs(10);
    while answered.load(Ordering::Relaxed) < sent && tokio::time::Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    reader.abort();
    let _ = sink.close().await;
}

/// One HTTP publisher: `POST /api/publish`, one request at a time.
async fn http_publisher(
    p: usize,
    mut http: Http,
    spec: FanoutArgs,
    prefix: String,
    tally: Arc<Tally>,
    deadline: tokio::time::Instant,
) {
    let pad = payload(spec.size);
    let rooms = spec.rooms.max(1);
    let mut pacer = Pacer::new(spec.rate, spec.pubs);
    let mut n = 0u64;
    while tokio::time::Instant::now() < deadline {
        pacer.wait().await;
        let room = room_of(p, n, spec.pubs, rooms);
        n += 1;
        let body = format!(
            r#"{{"room":"{prefix}{room}","event":"bench","data":{{"t":{},"p":"{pad}"}}}}"#,
            unix_ns()
        );
        tally.published.fetch_add(1, Ordering::Relaxed);
        match http
            .request(hyper::Method::POST, "/api/publish", Some(body.into()))
            .await
        {
            Ok((s, b)) if s.is_success() => {
                tally.ack(room, number_after(&b, br#""offset":"#));
            }
            Ok((s, b)) => {
                if tally.rejected.fetch_add(1, Ordering::Relaxed) < 3 {
                    eprintln!("publisher: HTTP {s}: {}", String::from_utf8_lossy(&b));
                }
            }
            Err(e) => {
                tally.publisher_errors.fetch_add(1, Ordering::Relaxed);
                eprintln!("publisher: {e:#}");
                break;
            }
        }
    }
}

/// Phase 2 on the publisher side: connects `spec.pubs` publishers (after
/// the subscribers' connection numbers) and starts each until `deadline`;
/// one that cannot connect counts as a publisher error.
pub(super) async fn start(
    t: &Target,
    spec: &FanoutArgs,
    prefix: &str,
    tally: &Arc<Tally>,
    deadline: tokio::time::Instant,
) -> JoinSet<()> {
    let mut publishers = JoinSet::new();
    let pub_wire = Arc::new(Wire::default());
    for p in 0..spec.pubs {
        let i = spec.subs + p;
        let node = &t.nodes.nodes[p % t.nodes.nodes.len()];
        let (spec2, prefix) = (spec.clone(), prefix.to_owned());
        let started = match spec.publish_via {
            PubVia::Ws => t
                .dialer
                .ws(node, i, &format!("pub{p}"), &pub_wire)
                .await
                .map(|ws| {
                    publishers.spawn(ws_publisher(p, ws, spec2, prefix, tally.clone(), deadline))
                }),
            PubVia::Http => t.dialer.http(node, i, &pub_wire).await.map(|h| {
                publishers.spawn(http_publisher(p, h, spec2, prefix, tally.clone(), deadline))
            }),
        };
        if let Err(e) = started {
            eprintln!("publisher: {e:#}");
            tally.publisher_errors.fetch_add(1, Ordering::Relaxed);
        }
    }
    publishers
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publishes_spread_over_rooms_like_wsload() {
        assert_eq!(room_of(0, 0, 4, 10), 0);
        assert_eq!(room_of(1, 0, 4, 10), 1);
        assert_eq!(room_of(1, 3, 4, 10), 3);
        assert_eq!(room_of(3, 7, 4, 10), 1);
    }
}
