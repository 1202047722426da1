//! The fan-out run every scenario is built from: subscribers join rooms
//! (over WebSocket or long polling), publishers publish into them (over
//! WebSocket or the HTTP API), and every delivery is counted, checked for
//! order and timed from the publisher's clock.
//!
//! Measured the way `../shared/bench/wsload` measures, so the two agree on
//! the same scenario: latency from the send time in the payload (`"t"`,
//! Unix nanoseconds) to its arrival; deliveries per second over the
//! publishing time plus the drain; server CPU over the same span.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Map, Value, json};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_websockets::Message;

use super::hist::Hist;
use super::net::{Dialer, Frame, Http, Wire, Ws, number_after};
use super::nodes::Nodes;
use super::{procfs, round};

/// How subscribers receive.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum SubVia {
    /// A WebSocket each, joined to one room.
    Ws,
    /// `GET /api/poll` in a loop, each on its own keep-alive connection.
    Poll,
}

/// How publishers publish.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum PubVia {
    /// `publish` frames on a WebSocket, acks counted.
    Ws,
    /// `POST /api/publish`, one request at a time per publisher.
    Http,
}

/// The shape of a fan-out run.
#[derive(clap::Args, Clone, Debug)]
pub struct FanoutArgs {
    /// Subscriber connections (subscriber i joins room i mod rooms).
    #[arg(long, default_value_t = 1000)]
    pub subs: usize,
    /// Rooms.
    #[arg(long, default_value_t = 10)]
    pub rooms: usize,
    /// Publisher connections (publish n of publisher p goes to room (p + n * pubs) mod rooms).
    #[arg(long, default_value_t = 4)]
    pub pubs: usize,
    /// Publishes per second, all publishers together (0: as fast as acks allow).
    #[arg(long, default_value_t = 1000)]
    pub rate: u64,
    /// Seconds of publishing.
    #[arg(long, default_value_t = 10.0)]
    pub seconds: f64,
    /// Payload bytes per message.
    #[arg(long, default_value_t = 100)]
    pub size: usize,
    /// Unacknowledged publishes per publisher when --rate is 0.
    #[arg(long, default_value_t = 64)]
    pub window: usize,
    /// How subscribers receive.
    #[arg(long, value_enum, default_value_t = SubVia::Ws)]
    pub subscribe_via: SubVia,
    /// How publishers publish.
    #[arg(long, value_enum, default_value_t = PubVia::Ws)]
    pub publish_via: PubVia,
}

/// What the load runs against.
#[derive(Clone)]
pub struct Target {
    pub nodes: Arc<Nodes>,
    pub dialer: Dialer,
    pub redis_pid: Option<u32>,
}

/// Counters shared by a run's tasks.
#[derive(Default)]
struct Tally {
    received: AtomicU64,
    published: AtomicU64,
    rejected: AtomicU64,
    publisher_errors: AtomicU64,
    /// Acknowledged publishes, per room.
    acked: Vec<AtomicU64>,
}

/// One subscriber's account.
struct SubStats {
    room: usize,
    received: u64,
    hist: Hist,
    /// Offsets that were not above the previous one (duplicates or reordering).
    disorder: u64,
    last: Option<u64>,
    /// The close code when the server (or the network) ended it.
    closed: Option<u16>,
    requests: u64,
    http_errors: u64,
}

impl SubStats {
    fn new(room: usize) -> SubStats {
        SubStats {
            room,
            received: 0,
            hist: Hist::default(),
            disorder: 0,
            last: None,
            closed: None,
            requests: 0,
            http_errors: 0,
        }
    }

    /// Counts one frame if it is a message envelope; returns its offset.
    fn on_frame(&mut self, frame: &[u8], tally: &Tally) -> Option<u64> {
        if !frame.starts_with(br#"{"type":"message""#) {
            return None;
        }
        self.received += 1;
        tally.received.fetch_add(1, Ordering::Relaxed);
        let offset = number_after(frame, br#""offset":"#);
        if let Some(o) = offset {
            if self.last.is_some_and(|l| o <= l) {
                self.disorder += 1;
            }
            self.last = Some(o);
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

fn unix_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// A name no earlier run used, so rooms start empty (offset 0).
pub fn fresh_prefix() -> String {
    format!("bench-{}-", &uuid::Uuid::new_v4().simple().to_string()[..8])
}

/// A connected subscriber.
enum SubConn {
    Ws(Ws),
    Poll(Http),
}

/// Subscribers connected and joined.
pub struct Joined {
    subs: Vec<(usize, SubConn)>,
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
    pub fn connected(&self) -> usize {
        self.subs.len()
    }
}

/// Phase 1: connect `subs` subscribers and join each to its room (at most
/// 200 handshakes in flight).
pub async fn connect_subs(t: &Target, subs: usize, rooms: usize, via: SubVia) -> Joined {
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
    pub fn check(&self) -> anyhow::Result<()> {
        match &self.first_error {
            Some(e) if self.subs.is_empty() => anyhow::bail!("no subscriber could connect: {e}"),
            _ => Ok(()),
        }
    }
}

/// Phase 1 with its readings: connects and joins the subscribers, lets the
/// server settle (500 ms), and reports `connected`, `failed_connections` and
/// `connect_per_s`; returns them with the servers' memory before and after.
pub async fn connect_measured(
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
            }
            while let Some(Ok(m)) = stream.next().await {
                let Ok(r) = serde_json::from_slice::<Reply>(m.as_payload()) else {
                    continue;
                };
                let Some(id) = r.id else { continue };
                match r.kind {
                    "ack" => {
                        tally.acked[room_of(p, id, spec.pubs, rooms)]
                            .fetch_add(1, Ordering::Relaxed);
                    }
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
            Ok((s, _)) if s.is_success() => {
                tally.acked[room].fetch_add(1, Ordering::Relaxed);
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

/// Something else running beside the publishers (a flood), started with
/// them and stopped before the drain ends.
pub type Beside =
    Box<dyn FnOnce(CancellationToken) -> tokio::task::JoinHandle<Map<String, Value>> + Send>;

/// A whole fan-out run; the result as one JSON object (wsload's keys, and more).
pub async fn run(
    t: &Target,
    spec: &FanoutArgs,
    label: &str,
    beside: Option<Beside>,
) -> anyhow::Result<Map<String, Value>> {
    let mut res = Map::new();
    res.insert("label".into(), json!(label));
    res.insert("nodes".into(), json!(t.nodes.nodes.len()));
    res.insert("subs".into(), json!(spec.subs));
    res.insert("rooms".into(), json!(spec.rooms));
    res.insert("pubs".into(), json!(spec.pubs));
    res.insert("rate".into(), json!(spec.rate));
    res.insert("size".into(), json!(spec.size));
    res.insert(
        "subscribe_via".into(),
        json!(format!("{:?}", spec.subscribe_via).to_lowercase()),
    );
    res.insert(
        "publish_via".into(),
        json!(format!("{:?}", spec.publish_via).to_lowercase()),
    );

    let (joined, before, after) =
        connect_measured(t, spec.subs, spec.rooms, spec.subscribe_via, &mut res).await?;
    let ok = joined.connected();
    if !t.nodes.pids.is_empty() && ok > 0 {
        res.insert("rss_mib".into(), json!(after.mib()));
        res.insert(
            "kib_per_conn".into(),
            json!(round(after.kib_per(&before, ok), 1)),
        );
    }

    // Subscribers read until the end.
    let rooms = spec.rooms.max(1);
    let tally = Arc::new(Tally {
        acked: (0..rooms).map(|_| AtomicU64::new(0)).collect(),
        ..Tally::default()
    });
    let stop = CancellationToken::new();
    let mut readers = tokio::task::JoinSet::new();
    let members = joined.members.clone();
    let wire = joined.wire.clone();
    let prefix = joined.prefix.clone();
    for (room, conn) in joined.subs {
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
    let wire_before = (
        wire.read.load(Ordering::Relaxed),
        wire.written.load(Ordering::Relaxed),
    );

    // Phase 2: publish.
    let cpu0 = procfs::sum(&t.nodes.pids);
    let redis0 = t.redis_pid.and_then(procfs::sample);
    let t1 = Instant::now();
    let deadline = tokio::time::Instant::now() + Duration::from_secs_f64(spec.seconds);
    let beside_stop = CancellationToken::new();
    let beside = beside.map(|f| f(beside_stop.clone()));
    let mut publishers = tokio::task::JoinSet::new();
    let pub_wire = Arc::new(Wire::default());
    for p in 0..spec.pubs {
        let i = spec.subs + p;
        let node = &t.nodes.nodes[p % t.nodes.nodes.len()];
        let (tally, spec2, prefix) = (tally.clone(), spec.clone(), prefix.clone());
        match spec.publish_via {
            PubVia::Ws => match t.dialer.ws(node, i, &format!("pub{p}"), &pub_wire).await {
                Ok(ws) => {
                    publishers.spawn(ws_publisher(p, ws, spec2, prefix, tally, deadline));
                }
                Err(e) => {
                    eprintln!("publisher: {e:#}");
                    tally.publisher_errors.fetch_add(1, Ordering::Relaxed);
                }
            },
            PubVia::Http => match t.dialer.http(node, i, &pub_wire).await {
                Ok(h) => {
                    publishers.spawn(http_publisher(p, h, spec2, prefix, tally, deadline));
                }
                Err(e) => {
                    eprintln!("publisher: {e:#}");
                    tally.publisher_errors.fetch_add(1, Ordering::Relaxed);
                }
            },
        }
    }
    while publishers.join_next().await.is_some() {}
    let pub_secs = t1.elapsed().as_secs_f64();
    let expected = |tally: &Tally| -> u64 {
        tally
            .acked
            .iter()
            .zip(&members)
            .map(|(a, m)| a.load(Ordering::Relaxed) * m)
            .sum()
    };
    // Drain: until deliveries stop growing (10 s at most).
    let mut last = u64::MAX;
    for _ in 0..50 {
        let cur = tally.received.load(Ordering::Relaxed);
        if cur >= expected(&tally) || cur == last {
            break;
        }
        last = cur;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let elapsed = t1.elapsed().as_secs_f64();
    let cpu1 = procfs::sum(&t.nodes.pids);
    let redis1 = t.redis_pid.and_then(procfs::sample);
    beside_stop.cancel();
    let beside = match beside {
        Some(h) => h.await.ok(),
        None => None,
    };
    stop.cancel();
    let mut subs = Vec::new();
    while let Some(r) = readers.join_next().await {
        if let Ok(s) = r {
            subs.push(s);
        }
    }

    let mut all = Hist::default();
    let (mut lost, mut extra, mut disorder, mut requests, mut http_errors) = (0, 0, 0, 0, 0);
    let mut closed: std::collections::BTreeMap<u16, u64> = Default::default();
    for s in &subs {
        all.merge(&s.hist);
        disorder += s.disorder;
        requests += s.requests;
        http_errors += s.http_errors;
        let want = tally.acked[s.room].load(Ordering::Relaxed);
        match s.closed {
            // Closed by the server (4000 for a slow consumer): not silent
            // loss, counted apart.
            Some(code) => *closed.entry(code).or_default() += 1,
            None => {
                lost += want.saturating_sub(s.received);
                extra += s.received.saturating_sub(want);
            }
        }
    }
    let rcv = tally.received.load(Ordering::Relaxed);
    let published = tally.published.load(Ordering::Relaxed);
    res.insert("published".into(), json!(published));
    res.insert(
        "publish_per_s".into(),
        json!((published as f64 / pub_secs).round()),
    );
    res.insert("expected".into(), json!(expected(&tally)));
    res.insert("received".into(), json!(rcv));
    res.insert("lost".into(), json!(lost));
    res.insert("duplicates".into(), json!(extra));
    res.insert("out_of_order".into(), json!(disorder));
    res.insert(
        "closed_by_server".into(),
        Value::Object(
            closed
                .iter()
                .map(|(c, n)| (c.to_string(), json!(n)))
                .collect(),
        ),
    );
    res.insert(
        "deliveries_per_s".into(),
        json!((rcv as f64 / elapsed).round()),
    );
    for (k, p) in [
        ("p50_ms", 0.5),
        ("p90_ms", 0.9),
        ("p99_ms", 0.99),
        ("p999_ms", 0.999),
        ("max_ms", 1.0),
    ] {
        res.insert(k.into(), json!(round(all.pct_ms(p), 3)));
    }
    if !t.nodes.pids.is_empty() && rcv > 0 {
        let cpu = cpu1.cpu_s - cpu0.cpu_s;
        res.insert("server_cpu_s".into(), json!(round(cpu, 2)));
        res.insert(
            "server_cpu_us_per_delivery".into(),
            json!(round(cpu / rcv as f64 * 1e6, 2)),
        );
    }
    if let (Some(a), Some(b)) = (redis0, redis1)
        && rcv > 0
    {
        let cpu = b.cpu_s - a.cpu_s;
        res.insert("redis_cpu_s".into(), json!(round(cpu, 2)));
        res.insert(
            "redis_cpu_us_per_delivery".into(),
            json!(round(cpu / rcv as f64 * 1e6, 2)),
        );
    }
    if rcv > 0 {
        let read = wire.read.load(Ordering::Relaxed) - wire_before.0;
        let written = wire.written.load(Ordering::Relaxed) - wire_before.1;
        res.insert(
            "sub_bytes_in_per_delivery".into(),
            json!(round(read as f64 / rcv as f64, 1)),
        );
        res.insert(
            "sub_bytes_out_per_delivery".into(),
            json!(round(written as f64 / rcv as f64, 1)),
        );
        if spec.subscribe_via == SubVia::Poll {
            res.insert(
                "requests_per_delivery".into(),
                json!(round(requests as f64 / rcv as f64, 4)),
            );
            res.insert("poll_requests".into(), json!(requests));
            res.insert("poll_http_errors".into(), json!(http_errors));
        }
    }
    res.insert(
        "publishes_rejected".into(),
        json!(tally.rejected.load(Ordering::Relaxed)),
    );
    res.insert(
        "publisher_errors".into(),
        json!(tally.publisher_errors.load(Ordering::Relaxed)),
    );
    if let Some(b) = beside {
        res.extend(b);
    }
    Ok(res)
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
        assert_eq!(st.received, 3);
        assert_eq!(st.disorder, 1);
        assert_eq!(tally.received.load(Ordering::Relaxed), 3);
        let p50 = st.hist.pct_ms(0.5);
        assert!((2.0..60_000.0).contains(&p50), "{p50}");
    }

    #[test]
    fn publishes_spread_over_rooms_like_wsload() {
        assert_eq!(room_of(0, 0, 4, 10), 0);
        assert_eq!(room_of(1, 0, 4, 10), 1);
        assert_eq!(room_of(1, 3, 4, 10), 3);
        assert_eq!(room_of(3, 7, 4, 10), 1);
    }
}
