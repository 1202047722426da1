//! Property tests over the parsers that take untrusted input: WebSocket
//! framing, client frames and connection tokens. Arbitrary bytes never panic, and what
//! parses is checked; the bounds keep each case small.
//!
//! The cargo-fuzz targets' kept corpus (`fuzz/corpus/`) and any crash kept
//! from them (`fuzz/artifacts/`) are replayed here through the same entry
//! points (`hubcast::fuzzing`), so CI checks them on stable Rust.
#![allow(clippy::unwrap_used)]

use std::path::Path;

use bytes::Bytes;
use hubcast::auth::Auth;
use hubcast::config::Config;
use hubcast::conn::frame::{self, Incoming, Reader};
use hubcast::protocol::{ClientFrame, parse_client_frame};
use proptest::prelude::*;

/// Every message `Reader` yields from `wire` fed in `chunk`-byte reads,
/// and how it ended (`None` at a clean end of stream).
fn read_all(wire: &[u8], chunk: usize, max: usize) -> (Vec<Incoming>, Option<String>) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut io = tokio_test_reader(wire, chunk);
        let mut r = Reader::new(&mut io, max);
        let mut got = Vec::new();
        loop {
            match r.next().await {
                Ok(Some(m)) => got.push(m),
                Ok(None) => return (got, None),
                Err(e) => return (got, Some(e.to_string())),
            }
        }
    })
}

/// A reader handing out `wire` at most `chunk` bytes per read.
fn tokio_test_reader(wire: &[u8], chunk: usize) -> impl tokio::io::AsyncRead + Unpin + '_ {
    struct Chunked<'a>(&'a [u8], usize);
    impl tokio::io::AsyncRead for Chunked<'_> {
        fn poll_read(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            buf: &mut tokio::io::ReadBuf<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            let n = self.1.min(self.0.len()).min(buf.remaining());
            buf.put_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            std::task::Poll::Ready(Ok(()))
        }
    }
    Chunked(wire, chunk.max(1))
}

/// A client frame: `fin`, opcode, masked payload.
fn client_frame(fin: bool, op: u8, payload: &[u8], key: [u8; 4]) -> Vec<u8> {
    let mut out = Vec::new();
    frame::put_header(&mut out, op, payload.len());
    if !fin {
        out[0] &= 0x7F;
    }
    out[1] |= 0x80;
    out.extend_from_slice(&key);
    let mut p = payload.to_vec();
    frame::apply_mask(&mut p, key);
    out.extend_from_slice(&p);
    out
}

fn auth() -> Auth {
    let cfg = Config {
        jwt_secret: Some("fuzz-secret-0123456789abcdef".into()),
        ..Config::default()
    };
    Auth::from_config(&cfg).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn websocket_bytes_never_panic_and_stay_within_the_limit(
        wire in proptest::collection::vec(any::<u8>(), 0..600),
        chunk in 1usize..64,
    ) {
        let (got, _) = read_all(&wire, chunk, 256);
        for m in got {
            if let Incoming::Text(t) | Incoming::Binary(t) = &m {
                prop_assert!(t.len() <= 256);
            }
            if let Incoming::Text(t) = m {
                prop_assert!(std::str::from_utf8(&t).is_ok());
            }
        }
    }

    #[test]
    fn fragmented_messages_read_the_same_however_they_arrive(
        texts in proptest::collection::vec(".{0,40}", 1..6),
        pieces in 1usize..4,
        key in any::<[u8; 4]>(),
        chunk in 1usize..50,
    ) {
        // Each text sent in `pieces` fragments (cut at byte positions, so
        // inside characters too), with a ping before the last one.
        let mut wire = Vec::new();
        let mut want = Vec::new();
        for t in &texts {
            let b = t.as_bytes();
            let step = b.len().div_ceil(pieces).max(1);
            let parts: Vec<&[u8]> = if b.is_empty() { vec![b] } else { b.chunks(step).collect() };
            for (i, p) in parts.iter().enumerate() {
                let last = i + 1 == parts.len();
                if last && parts.len() > 1 {
                    wire.extend(client_frame(true, frame::opcode::PING, b"p", key));
                    want.push(Incoming::Ping(Bytes::from_static(b"p")));
                }
                let op = if i == 0 { frame::opcode::TEXT } else { frame::opcode::CONTINUATION };
                wire.extend(client_frame(last, op, p, key));
            }
            want.push(Incoming::Text(Bytes::from(t.clone())));
        }
        let (got, end) = read_all(&wire, chunk, 1 << 16);
        prop_assert_eq!(end, None);
        prop_assert_eq!(got, want);
    }

    #[test]
    fn frames_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = parse_client_frame(&bytes);
    }

    #[test]
    fn json_shaped_frames_never_panic(
        ty in prop_oneof![Just("join".to_string()), Just("leave".to_string()), Just("publish".to_string()), Just("send".to_string()), Just("presence".to_string()),
                          Just("history".to_string()), Just("status".to_string()), Just("ping".to_string()), "[a-z]{0,8}"],
        room in ".{0,140}",
        since in any::<i64>(),
        limit in any::<i64>(),
        id in prop_oneof![Just(serde_json::json!(null)), any::<i64>().prop_map(serde_json::Value::from), ".{0,80}".prop_map(serde_json::Value::from)],
        data in ".{0,64}",
    ) {
        let frame = serde_json::json!({"type": ty, "room": room, "since": since, "limit": limit,
                                       "id": id, "event": "e", "data": data, "to": room, "status": ty});
        let text = frame.to_string();
        match parse_client_frame(text.as_bytes()) {
            Ok((_, ClientFrame::Join { room, .. })) | Ok((_, ClientFrame::Leave { room })) => {
                prop_assert!(hubcast::protocol::check_room(&room).is_ok());
            }
            Ok((_, ClientFrame::History { limit, .. })) => prop_assert!((1..=1000).contains(&limit)),
            _ => {}
        }
    }

    #[test]
    fn tokens_never_panic_and_garbage_is_refused(token in ".{0,400}") {
        let a = auth();
        prop_assert!(a.authenticate(Some(&token)).is_err());
    }

    #[test]
    fn token_shaped_garbage_is_refused(
        h in "[A-Za-z0-9_-]{0,60}", p in "[A-Za-z0-9_-]{0,200}", s in "[A-Za-z0-9_-]{0,90}",
    ) {
        let a = auth();
        let token = [h, p, s].join(".");
        prop_assert!(a.authenticate(Some(&token)).is_err());
    }
}

/// A fuzz target's name and entry point.
type Target = (&'static str, fn(&[u8]));

/// The fuzz targets (`fuzz/fuzz_targets/`) and their entry points.
const TARGETS: [Target; 6] = [
    ("frame_reader", hubcast::fuzzing::frame_reader),
    ("client_frame", hubcast::fuzzing::client_frame),
    ("server_frame", hubcast::fuzzing::server_frame),
    ("token", hubcast::fuzzing::token),
    ("api_body", hubcast::fuzzing::api_body),
    ("pubsub_codec", hubcast::fuzzing::pubsub_codec),
];

#[test]
fn the_fuzz_corpus_and_artifacts_replay_without_a_failure() {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz");
    // A corpus of a target this list lacks would go unchecked.
    for entry in std::fs::read_dir(fuzz.join("corpus")).unwrap() {
        let name = entry.unwrap().file_name();
        let name = name.to_string_lossy();
        assert!(
            TARGETS.iter().any(|(t, _)| *t == name),
            "fuzz/corpus/{name} has no replay here"
        );
    }
    let mut failed = Vec::new();
    for (target, run) in TARGETS {
        let mut replayed = 0;
        for kind in ["corpus", "artifacts"] {
            // Artifacts exist only for targets that once crashed.
            let Ok(files) = std::fs::read_dir(fuzz.join(kind).join(target)) else {
                continue;
            };
            for file in files {
                let path = file.unwrap().path();
                let bytes = std::fs::read(&path).unwrap();
                if std::panic::catch_unwind(|| run(&bytes)).is_err() {
                    failed.push(path.display().to_string());
                }
                replayed += 1;
            }
        }
        assert!(replayed > 0, "no corpus for {target}");
    }
    assert!(failed.is_empty(), "failing inputs: {failed:#?}");
}
