//! The subscriber side of a fan-out: connecting and joining them (phase 1)
//! and reading until the run stops, each keeping its own account of what
//! arrived, in what order and how late.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::{Map, Value, json};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::super::hist::Hist;
use super::super::net::{Frame, Http, Wire, Ws, number_after};
use super::super::procfs;
use super::offsets::Offsets;
use super::{SubVia, Tally, Target, fresh_prefix, unix_ns};

/// One subscriber's account.
pub(super) struct SubStats {
    pub(super) room: usize,
    /// Message frames, repeats included.
    pub(super) received: u64,
    pub(super) hist: Hist,
    /// The offsets received (each once).
    pub(super) offsets: Offsets,
    /// Offsets received again: true duplicates (the server sent the same
    /// message twice), told apart from the delivery of a publish whose
    /// acknowledgement never came, which is no fault of the server.
    pub(super) repeats: u64,
    /// Offsets received after a higher one, the first time (reordering).
    pub(super) disorder: u64,
    last: Option<u64>,
    /// The close code when the server (or the network) ended it.
    pub(super) closed: Option<u16>,
    pub(super) requests: u64,
    pub(super) http_errors: u64,
}

impl SubStats {
    pub(super) fn new(room: usize) -> SubStats {
        SubStats {
            room,
            received: 0,
            hist: Hist::default(),
            offsets: Offsets::default(),
            repeats: 0,
            disorder: 0,
            last: None,
            closed: None,
            requests: 0,
            http_errors: 0,
        }
    }

    /// Counts one frame if it is a message envelope; returns its offset.
    pub(super) fn on_frame(&mut self, frame: &[u8], tally: &Tally) -> Option<u64> {
        if !frame.starts_with(br#"{"type":"message""#) {
            return None;
        }
        self.received += 1;
        tally.received.fetch_add(1, Ordering::Relaxed);
        let offset = number_after(frame, br#""offset":"#);
        if let Some(o) = offset {
            if !self.offsets.insert(o) {
                self.repeats += 1;
            } else if self.last.is_some_and(|l| o < l) {
                self.disorder += 1;
            }
            self.last = Some(self.last.map_or(o, |l| l.max(o)));
        }
        let data = frame
            .windows(7)
            .position(|w| w == br#""data":"#)
            .unwrap_or(0);
        if let Some(sent) = number_after(&frame[data..], br#""t":"#) {
            let now = unix_ns();
            self.hist
                .record_us(now.saturating_sub(sent) as f64 / 1000.0);
        }
        offset
    }
}

/// A connected subscriber.
pub(super) enum SubConn {
    Ws(Ws),
    Poll(Http),
}

/// Subscribers connected and joined.
pub(crate) struct Joined {
    pub(super) subs: Vec<(usize, SubConn)>,
    /// Members per room.
    pub members: Vec<u64>,
    pub failed: u64,
    /// Why the first one failed.
    pub first_error: Option<String>,
    pub connect_secs: f64,
    pub wire: Arc<Wire>,
    pub prefix: String,
}

impl Joined {
    /// Subscribers that made it.
    pub(crate) fn connected(&self) -> usize {
        self.subs.len()
    }
}

/// Phase 1: connect `subs` subscribers and join each to its room (at most
/// 200 handshakes in flight).
pub(crate) async fn connect_subs(t: &Target, subs: usize, rooms: usize, via: SubVia) -> Joined {
    let prefix = fresh_prefix();
    let wire = Arc::new(Wire::default());
    let started = Instant::now();
    let rooms = rooms.max(1);
    let results: Vec<anyhow::Result<(usize, SubConn)>> = futures_util::stream::iter(0..subs)
        .map(|i| {
            let node = &t.nodes.nodes[i % t.nodes.nodes.len()];
            let wire = wire.clone();
            let prefix = &prefix;
            async move {
                let room = i % rooms;
                let conn = match via {
                    SubVia::Ws => {
                        let mut ws = t.dialer.ws(node, i, &format!("load{i}"), &wire).await?;
                        ws.join(&format!("{prefix}{room}")).await?;
                        SubConn::Ws(ws)
                    }
                    // Rooms are new, so polling from offset 0 misses nothing.
                    SubVia::Poll => SubConn::Poll(t.dialer.http(node, i, &wire).await?),
                };
                Ok((room, conn))
            }
        })
        .buffer_unordered(200)
        .collect()
        .await;
    let connect_secs = started.elapsed().as_secs_f64();
    let mut joined = Joined {
        subs: Vec::with_capacity(subs),
        members: vec![0; rooms],
        failed: 0,
        first_error: None,
        connect_secs,
        wire,
        prefix,
    };
    for r in results {
        match r {
            Ok((room, c)) => {
                joined.members[room] += 1;
                joined.subs.push((room, c));
            }
            Err(e) => {
                joined.failed += 1;
                if joined.failed <= 3 {
                    eprintln!("subscriber: {e:#}");
                }
                joined.first_error.get_or_insert_with(|| format!("{e:#}"));
            }
        }
    }
    joined
}

impl Joined {
    /// An error when not one subscriber got in (nothing to measure).
    pub(crate) fn check(&self) -> anyhow::Result<()> {
        match &self.first_error {
            Some(e) if self.subs.is_empty() => anyhow::bail!("no subscriber could connect: {e}"),
            _ => Ok(()),
        }
    }
}

/// Phase 1 with its readings: connects and joins the subscribers, lets the
/// server settle (500 ms), and reports `connected`, `failed_connections` and
/// `connect_per_s`; returns them with the servers' memory before and after.
pub(crate) async fn connect_measured(
    t: &Target,
    subs: usize,
    rooms: usize,
    via: SubVia,
    res: &mut Map<String, Value>,
) -> anyhow::Result<(Joined, procfs::Sample, procfs::Sample)> {
    let before = procfs::sum(&t.nodes.pids);
    let joined = connect_subs(t, subs, rooms, via).await;
    joined.check()?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = procfs::sum(&t.nodes.pids);
    let ok = joined.connected();
    res.insert("connected".into(), json!(ok));
    res.insert("failed_connections".into(), json!(joined.failed));
    res.insert(
        "connect_per_s".into(),
        json!((ok as f64 / joined.connect_secs.max(1e-9)).round()),
    );
    Ok((joined, before, after))
}

async fn ws_subscriber(
    mut ws: Ws,
    room: usize,
    tally: Arc<Tally>,
    stop: CancellationToken,
) -> SubStats {
    let mut st = SubStats::new(room);
    loop {
        let f = tokio::select! {
            biased;
            _ = stop.cancelled() => break,
            f = ws.next_frame() => f,
        };
        match f {
            Frame::Text(t) => {
                st.on_frame(&t, &tally);
            }
            Frame::Closed(code) => {
                st.closed = Some(code);
                break;
            }
        }
    }
    st
}

#[derive(serde::Deserialize)]
struct PollReply<'a> {
    #[serde(borrow)]
    messages: Vec<&'a serde_json::value::RawValue>,
}

async fn poll_subscriber(
    mut http: Http,
    room: usize,
    room_name: String,
    tally: Arc<Tally>,
    stop: CancellationToken,
) -> SubStats {
    let mut st = SubStats::new(room);
    let mut since = 0;
    loop {
        let path = format!("/api/poll?room={room_name}&since={since}&timeout=25&limit=1000");
        let r = tokio::select! {
            biased;
            _ = stop.cancelled() => break,
            r = http.request(hyper::Method::GET, &path, None) => r,
        };
        st.requests += 1;
        match r {
            Ok((status, body)) if status.is_success() => {
                match serde_json::from_slice::<PollReply>(&body) {
                    Ok(reply) => {
                        for m in reply.messages {
                            if let Some(o) = st.on_frame(m.get().as_bytes(), &tally) {
                                since = o;
                            }
                        }
                    }
                    Err(_) => st.http_errors += 1,
                }
            }
            Ok(_) => {
                st.http_errors += 1;
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                }
            }
            Err(_) => {
                st.closed = Some(1006);
                break;
            }
        }
    }
    st
}

/// Phase 2 on the subscriber side: every subscriber reads until `stop`.
pub(super) fn start(
    subs: Vec<(usize, SubConn)>,
    prefix: &str,
    tally: &Arc<Tally>,
    stop: &CancellationToken,
) -> JoinSet<SubStats> {
    let mut readers = JoinSet::new();
    for (room, conn) in subs {
        let (tally, stop) = (tally.clone(), stop.clone());
        match conn {
            SubConn::Ws(ws) => readers.spawn(ws_subscriber(ws, room, tally, stop)),
            SubConn::Poll(http) => readers.spawn(poll_subscriber(
                http,
                room,
                format!("{prefix}{room}"),
                tally,
                stop,
            )),
        };
    }
    readers
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_counted_timed_and_ordered() {
        let tally = Tally::default();
        let mut st = SubStats::new(0);
        let t = unix_ns() - 2_000_000;
        let m = |o: u64| {
            format!(
                r#"{{"type":"message","room":"r","offset":{o},"timestamp":1,"data":{{"t":{t},"p":"x"}}}}"#
            )
        };
        assert_eq!(st.on_frame(m(1).as_bytes(), &tally), Some(1));
        assert_eq!(st.on_frame(m(2).as_bytes(), &tally), Some(2));
        assert_eq!(st.on_frame(m(2).as_bytes(), &tally), Some(2));
        assert_eq!(
            st.on_frame(br#"{"type":"presence","room":"r"}"#, &tally),
            None
        );
        assert_eq!(st.on_frame(m(4).as_bytes(), &tally), Some(4));
        assert_eq!(st.on_frame(m(3).as_bytes(), &tally), Some(3));
        assert_eq!(st.on_frame(m(1).as_bytes(), &tally), Some(1));
        // 2 and then 1 again are repeats; 3 after 4 is out of order.
        assert_eq!(st.received, 6);
        assert_eq!((st.repeats, st.disorder), (2, 1));
        assert_eq!(st.offsets.len(), 4);
        assert_eq!(tally.received.load(Ordering::Relaxed), 6);
        let p50 = st.hist.pct_ms(0.5);
        assert!((2.0..60_000.0).contains(&p50), "{p50}");
    }
}
