//! First joins refused for a passing reason are sent again, others are
//! the answer: `join_retrying` on scripted answers, and the harness's
//! subscribers over real sockets against a server that refuses them.
#![allow(clippy::unwrap_used)]

use super::*;

fn joined() -> Joined {
    Joined {
        room: "r".into(),
        offset: 7,
        epoch: "e".into(),
        recovered: None,
        members: serde_json::Value::Null,
    }
}

fn refused(code: &str) -> ClientError {
    ClientError::Server {
        code: code.into(),
        message: "not now".into(),
    }
}

/// Answers the calls with `answers`, one each, counting them.
fn server(
    answers: Vec<Result<Joined, ClientError>>,
) -> (
    Arc<Mutex<u32>>,
    impl AsyncFnMut() -> Result<Joined, ClientError>,
) {
    let calls = Arc::new(Mutex::new(0));
    let (c, mut it) = (calls.clone(), answers.into_iter());
    let join = async move || {
        *lock(&c) += 1;
        it.next().unwrap_or_else(|| Err(refused("unavailable")))
    };
    (calls, join)
}

#[tokio::test(start_paused = true)]
async fn a_first_join_refused_for_a_passing_reason_is_sent_again() {
    let (calls, join) = server(vec![
        Err(refused("rate_limited")),
        Err(refused("unavailable")),
        Err(refused("timeout")),
        Ok(joined()),
    ]);
    let start = tokio::time::Instant::now();
    let (j, retries) = join_retrying(join, JOIN_WITHIN).await.unwrap();
    assert_eq!((j, retries, *lock(&calls)), (joined(), 3, 4));
    // Backoff: the pauses are at most the doubling caps (200, 400,
    // 800 ms), never more.
    assert!(start.elapsed() <= Duration::from_millis(1400));
}

#[tokio::test(start_paused = true)]
async fn any_other_refusal_is_the_answer_at_once() {
    let (calls, join) = server(vec![Err(refused("forbidden")), Ok(joined())]);
    let e = join_retrying(join, JOIN_WITHIN).await.unwrap_err();
    assert_eq!((e, *lock(&calls)), (refused("forbidden"), 1));
}

#[tokio::test(start_paused = true)]
async fn retries_end_when_the_time_allowed_has_passed() {
    let (calls, join) = server(Vec::new());
    let start = tokio::time::Instant::now();
    let e = join_retrying(join, Duration::from_secs(30))
        .await
        .unwrap_err();
    assert_eq!(e, refused("unavailable"));
    assert!(start.elapsed() < Duration::from_secs(30));
    // Backed off: far fewer tries than one per minimum pause.
    let n = *lock(&calls);
    assert!((3..150).contains(&n), "{n} tries");
}

/// A WebSocket server that refuses each connection's first join of a
/// room (not its personal room) with `rate_limited`, as a node does to
/// a connection joining too fast, and accepts the next one.
async fn serve_refusing_once(tcp: tokio::net::TcpStream) {
    use futures_util::{SinkExt as _, StreamExt as _};
    use hubcast_protocol::{ClientFrame, ErrorCode, encode, error_frame, out};
    use tokio_tungstenite::tungstenite::Message;

    let Ok(mut ws) = tokio_tungstenite::accept_async(tcp).await else {
        return;
    };
    let welcome = encode(&out::Welcome {
        ty: "welcome",
        protocol: 1,
        conn_id: "c1",
        user: "u",
        name: "u",
        node: "n1",
        heartbeat: 25,
        max_message_bytes: 65536,
    });
    let mut refused = std::collections::HashSet::new();
    let mut reply = Some(welcome);
    loop {
        if let Some(r) = reply.take() {
            let text = String::from_utf8(r.to_vec()).unwrap();
            if ws.send(Message::text(text)).await.is_err() {
                return;
            }
        }
        let Some(Ok(Message::Text(text))) = ws.next().await else {
            return;
        };
        let Ok((id, ClientFrame::Join { room, .. })) =
            hubcast_protocol::parse_client_frame(text.as_bytes())
        else {
            continue;
        };
        reply = Some(
            if !room.starts_with('@') && refused.insert(room.to_string()) {
                error_frame(id.as_deref(), ErrorCode::RateLimited, "joining too fast")
            } else {
                encode(&out::Joined {
                    ty: "joined",
                    id: id.as_deref(),
                    room: &room,
                    offset: 3,
                    epoch: "e1",
                    recovered: None,
                    members: &[],
                    total: 0,
                })
            },
        );
    }
}

/// The harness's subscribers over real sockets: each first join
/// refused as `rate_limited` is sent again and the run starts, where
/// before the refusal failed it.
#[tokio::test]
async fn subscribers_whose_first_joins_are_refused_join_anyway() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/ws", listener.local_addr().unwrap());
    // Owned by the test: dropping the set stops the server.
    let mut server = tokio::task::JoinSet::new();
    server.spawn(async move {
        let mut conns = tokio::task::JoinSet::new();
        while let Ok((tcp, _)) = listener.accept().await {
            conns.spawn(serve_refusing_once(tcp));
        }
    });
    let rooms = ["a".to_string(), "b".to_string()];
    let clients = Clients::subscribe(&[url], 3, &rooms, true).await.unwrap();
    for s in &clients.subscribers {
        let log = lock(&s.log);
        assert_eq!(log.join_retries, 2, "one refusal per room");
        for room in &rooms {
            assert_eq!(log.rooms[room].start, Some(("e1".into(), 3)), "{room}");
        }
    }
    drop(clients);
    server.abort_all();
}
