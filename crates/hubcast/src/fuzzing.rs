//! The fuzz targets' entry points: one function per target in `fuzz/`,
//! taking the fuzzer's bytes. The same functions replay the kept corpus in
//! `tests/it/fuzz.rs` on stable Rust, so what the fuzzer found stays
//! checked by `cargo test`. They live in the library (hidden from its docs,
//! not an API) because the Redis codec and the envelope writer are
//! crate-private: a fuzz crate outside could not reach them.
//!
//! Each panics only when the code under test panics or breaks one of the
//! invariants asserted here; refusing input is never a failure.

use std::future::Future;
use std::path::PathBuf;
use std::pin::pin;
use std::sync::OnceLock;
use std::task::{Context, Poll, Waker};

use hubcast_protocol::ErrorCode;
use hubcast_protocol::server::read::{Ack, Envelope, ErrorReply, Head, Joined, Position, Welcome};
use serde_json::Value;

use crate::auth::{Auth, Grants};
use crate::broker::redis::codec;
use crate::config::Config;
use crate::conn::frame::{Incoming, ReadError, Reader};
use crate::protocol::{self, ClientFrame, check_room};
use crate::publish::Publish;

/// Runs a future whose I/O never waits (an in-memory reader) to its end,
/// without a runtime: a runtime per input would cost more than the parse.
fn ready<F: Future>(f: F) -> F::Output {
    let mut f = pin!(f);
    match f.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(v) => v,
        Poll::Pending => panic!("an in-memory read never waits"),
    }
}

/// Hands out its bytes at most `chunk` at a time, as a socket may.
struct Chunked<'a> {
    rest: &'a [u8],
    chunk: usize,
}

impl tokio::io::AsyncRead for Chunked<'_> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let n = self.chunk.min(self.rest.len()).min(buf.remaining());
        buf.put_slice(&self.rest[..n]);
        self.rest = &self.rest[n..];
        Poll::Ready(Ok(()))
    }
}

/// Every message `Reader` yields from `wire` in `chunk`-byte reads, and how
/// it ended (`None`: a clean end of stream).
fn read_frames(wire: &[u8], chunk: usize, max: usize) -> (Vec<Incoming>, Option<String>) {
    let mut r = Reader::new(
        Chunked {
            rest: wire,
            chunk: chunk.max(1),
        },
        max,
    );
    let mut got = Vec::new();
    loop {
        match ready(r.next()) {
            Ok(Some(m)) => got.push(m),
            Ok(None) => return (got, None),
            Err(e) => {
                let kind = match &e {
                    ReadError::Io(io) => format!("io {:?}", io.kind()),
                    other => other.to_string(),
                };
                return (got, Some(kind));
            }
        }
    }
}

/// `frame_reader`: the WebSocket frame reader (`conn::frame::read`).
/// Byte 0 picks the read size (1 to 64 bytes, or all at once) and the
/// message limit; the rest is what the client sent. The messages must
/// keep to the limit and RFC 6455's rules, and be the same however the
/// bytes arrive.
pub fn frame_reader(data: &[u8]) {
    let Some((&ctl, wire)) = data.split_first() else {
        return;
    };
    let max = [125, 256, 4096, 65536][usize::from(ctl >> 6)];
    let chunk = match usize::from(ctl & 0x3F) {
        0 => usize::MAX,
        n => n,
    };
    let (got, end) = read_frames(wire, chunk, max);
    for m in &got {
        match m {
            Incoming::Text(t) => {
                assert!(t.len() <= max, "text of {} over {max}", t.len());
                assert!(std::str::from_utf8(t).is_ok(), "text not UTF-8");
            }
            Incoming::Binary(b) => assert!(b.len() <= max, "binary of {} over {max}", b.len()),
            Incoming::Ping(p) => assert!(p.len() <= 125, "ping of {}", p.len()),
            Incoming::Pong | Incoming::Close(_) => {}
        }
    }
    // Reading in one go must give the same messages and the same end.
    if chunk != usize::MAX {
        let whole = read_frames(wire, usize::MAX, max);
        assert_eq!((&got, &end), (&whole.0, &whole.1), "depends on read size");
    }
}

/// `client_frame`: a client's text frame as the server parses it
/// (`parse_client_frame`, with `json::check_value` on `data`). What parses
/// must hold checked names, and what is published must make an envelope
/// that the Rust client reads back, with the frame's `id` echoed in valid
/// JSON.
pub fn client_frame(data: &[u8]) {
    // The validator alone, on any text: it promises an answer, not a panic.
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = hubcast_protocol::json::check_value(text, hubcast_protocol::MAX_DATA_DEPTH);
        let _ = hubcast_protocol::json::check_number(text);
    }
    let (id, frame) = match protocol::parse_client_frame(data) {
        Ok(parsed) => parsed,
        Err(e) => {
            // The error reply echoes the id the frame had, if valid.
            let reply = protocol::error_frame(e.id.as_deref(), e.code, &e.message);
            assert_json(&reply, "error reply");
            return;
        }
    };
    let reply = protocol::error_frame(id.as_deref(), ErrorCode::BadRequest, "x");
    assert_json(&reply, "reply with the frame's id");
    match frame {
        ClientFrame::Join { room, .. }
        | ClientFrame::Leave { room }
        | ClientFrame::Presence { room } => {
            assert!(check_room(&room).is_ok(), "room {room:?} passed unchecked");
        }
        ClientFrame::History { room, limit, .. } => {
            assert!(check_room(&room).is_ok(), "room {room:?} passed unchecked");
            assert!((1..=protocol::MAX_HISTORY_LIMIT).contains(&limit));
        }
        ClientFrame::Publish(p) => {
            assert!(
                check_room(&p.room).is_ok(),
                "room {:?} passed unchecked",
                p.room
            );
            envelope_reads_back(&p.room, &p.message, "user-1");
        }
        ClientFrame::Send { to, message } => {
            assert!(
                protocol::check_user(&to).is_ok(),
                "to {to:?} passed unchecked"
            );
            envelope_reads_back(&protocol::personal_room(&to), &message, "user-1");
        }
        ClientFrame::Status { status } => {
            assert!(
                status != protocol::Status::Offline,
                "status offline accepted"
            );
        }
        ClientFrame::Ping => {}
        ClientFrame::Rpc { method, data } => {
            assert!(
                protocol::check_method(&method).is_ok(),
                "method {method:?} passed unchecked"
            );
            assert!(
                serde_json::from_str::<serde_json::Value>(data.get()).is_ok(),
                "rpc data unreadable"
            );
        }
    }
}

/// `api_body`: an HTTP API publish or send body (`parse_api_publish`; bit 0
/// of byte 0 picks send). What parses must publish an envelope that the
/// Rust client reads back.
pub fn api_body(data: &[u8]) {
    let Some((&ctl, body)) = data.split_first() else {
        return;
    };
    let send = ctl & 1 == 1;
    let Ok(p) = protocol::parse_api_publish(body, send) else {
        return;
    };
    if send {
        assert!(protocol::is_personal(&p.room), "send to {:?}", p.room);
    } else {
        assert!(
            check_room(&p.room).is_ok(),
            "room {:?} passed unchecked",
            p.room
        );
    }
    let source = p.source.as_deref().unwrap_or("api");
    envelope_reads_back(&p.room, &p.message, source);
}

/// The envelope the server writes for a checked publish must be JSON that
/// the Rust client decodes, with the fields it was given.
fn envelope_reads_back(room: &str, message: &protocol::Message<'_>, source: &str) {
    let (event, data) = (message.event.as_ref(), message.data.get());
    let req = Publish {
        room,
        event,
        data,
        source,
        msg_id: message.msg_id.as_deref(),
        trace_id: None,
        skip: None,
    }
    .request();
    let bytes = req.parts.encode(7, "epoch-1");
    let env: Envelope = match serde_json::from_slice(&bytes) {
        Ok(e) => e,
        Err(e) => panic!(
            "envelope a client cannot read ({e}): {}",
            String::from_utf8_lossy(&bytes)
        ),
    };
    assert_eq!(
        (env.room.as_str(), env.offset, env.event_type.as_str()),
        (room, 7, event)
    );
    assert_eq!(
        (env.source.as_str(), env.msg_id.as_str()),
        (source, req.msg_id.as_str())
    );
    // `data` goes out verbatim: the client reads the same value.
    let sent: Value = serde_json::from_str(data).unwrap_or(Value::Null);
    assert_eq!(env.data, sent, "data changed on the way");
    // The Redis engine's form (tail, then assembled) is the same envelope.
    let tail = req.parts.tail();
    let assembled = codec::envelope(
        &crate::protocol::json_string(room),
        7,
        "epoch-1",
        tail.as_bytes(),
    );
    assert_eq!(assembled, bytes, "assembled envelope differs");
}

fn assert_json(bytes: &[u8], what: &str) {
    if let Err(e) = serde_json::from_slice::<Value>(bytes) {
        panic!(
            "{what} is not JSON ({e}): {}",
            String::from_utf8_lossy(bytes)
        );
    }
}

/// `server_frame`: a server frame as the Rust client reads it
/// (`server::read`, in the order `hubcast-client`'s driver tries them).
/// Nothing may panic, and what decodes as a whole envelope must decode as
/// its position too (the client's fallback for unreadable `data`).
pub fn server_frame(data: &[u8]) {
    let Some(head) = Head::parse(data) else {
        return;
    };
    let _ = (head.ty(), head.has_id(), head.id_u64());
    if let Ok(env) = serde_json::from_slice::<Envelope>(data) {
        let pos: Position = match serde_json::from_slice(data) {
            Ok(p) => p,
            Err(e) => panic!("an envelope without a position: {e}"),
        };
        assert_eq!(
            (&pos.room, pos.offset, &pos.epoch, &pos.msg_id),
            (&env.room, env.offset, &env.epoch, &env.msg_id)
        );
    }
    let _ = serde_json::from_slice::<Position>(data);
    let _ = serde_json::from_slice::<ErrorReply>(data);
    let _ = serde_json::from_slice::<Welcome>(data);
    let _ = serde_json::from_slice::<Joined>(data);
    let _ = serde_json::from_slice::<Ack>(data);
    let _ = serde_json::from_slice::<Value>(data);
}

/// A test key pair's public halves (made with `openssl genpkey`; the
/// private halves were not kept): tokens in the seed corpus were signed
/// with them, so the fuzzer starts from signatures that verify.
const RSA_PUBLIC_PEM: &str = "-----BEGIN PUBLIC KEY-----
MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA4EsorT6GdGB4UC/Loa6t
vDd9LzwrtPbIgSj4LP4eVc5L4N+XZVJ2ikCHOGA9T2Y4PVfVDt9lMViCfEfsxpxo
8fvax/ZP79AdSUM8ioLMzGicVOliII/wmP28IVfLBPdm5CwqIUgrOIu+Nm9MQdZz
Y9VN8zPIWc0sA32RYG0g5yLbm0p5O6y/swVlQbms5GRssLDiV1uVois/ulZ6y/We
+0YFLFcCrqtkzIiZeU4TtKBMWf8NFYDX5SZTnrTkdrHtg9jMCDmYwCBHjrGPz3h5
XhrtXkqvGb4z925ntvmSQ5Cku1DXTxjA1JuEy1v02TPYYxETHhKHtjscTALJBlGI
awIDAQAB
-----END PUBLIC KEY-----
";
const EC_PUBLIC_PEM: &str = "-----BEGIN PUBLIC KEY-----
MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEZIMIau0myWrP2hOdid03kny+LFs+
gCnpVIMRS4HErSM9wJT7osTH0nLnsmnVhrUiaMUYEAm+GuJwNH5GXe6Z+w==
-----END PUBLIC KEY-----
";
/// The HS256 secret of the `token` target (and of its seed tokens).
pub const FUZZ_SECRET: &str = "fuzz-secret-0123456789abcdef";

/// The three verifiers, configured as a server would be: HS256 from a
/// secret, RS256 and ES256 from a PEM file (written once to the temporary
/// directory, since the setting is a path).
fn verifiers() -> &'static [Auth; 3] {
    static AUTH: OnceLock<[Auth; 3]> = OnceLock::new();
    AUTH.get_or_init(|| {
        let from = |secret: Option<&str>, pem: Option<(&str, &str)>| {
            let mut path = None;
            if let Some((name, text)) = pem {
                let p: PathBuf = std::env::temp_dir()
                    .join(format!("hubcast-fuzz-{}-{name}.pem", std::process::id()));
                std::fs::write(&p, text).expect("write the test key");
                path = Some(p);
            }
            let cfg = Config {
                jwt_secret: secret.map(str::to_owned),
                jwt_public_key: path.clone(),
                ..Config::default()
            };
            let auth = Auth::from_config(&cfg).expect("the test keys load");
            if let Some(p) = path {
                let _ = std::fs::remove_file(p);
            }
            auth
        };
        [
            from(Some(FUZZ_SECRET), None),
            from(None, Some(("rsa", RSA_PUBLIC_PEM))),
            from(None, Some(("ec", EC_PUBLIC_PEM))),
        ]
    })
}

/// `token`: a connection token checked against an HS256 secret and RS256
/// and ES256 public keys. Byte 0 picks the verifier (0-2) and, with bit 2,
/// signs the rest as the claims with the HS256 secret, so the fuzzer gets
/// past the signature to the claims. What is accepted must name a valid
/// user and make patterns that match without panicking.
pub fn token(data: &[u8]) {
    let Some((&ctl, rest)) = data.split_first() else {
        return;
    };
    let verifiers = verifiers();
    let (auth, token) = if ctl & 4 != 0 {
        (&verifiers[0], signed_hs256(rest))
    } else {
        let Ok(t) = std::str::from_utf8(rest) else {
            return;
        };
        (&verifiers[usize::from(ctl & 3) % 3], t.to_owned())
    };
    let Ok(Some(id)) = auth.authenticate(Some(&token)) else {
        return;
    };
    assert!(protocol::check_user(&id.user).is_ok(), "sub {:?}", id.user);
    assert!(!id.user.chars().any(protocol::is_bidi_control));
    if let Some(name) = &id.name {
        assert!(name.chars().count() <= 64 && !name.chars().any(char::is_control));
    }
    let grants = Grants {
        admin: false,
        rooms: id.rooms.clone(),
        token: Default::default(),
    };
    for room in ["lobby", "a.b", "a.b.c", "a..b", "", ".", "@x", &id.user] {
        let _ = grants.allows(&id.user, room);
    }
    // A token's patterns tested against its own user id (any text).
    for p in id.rooms.iter().flat_map(|r| r.iter()) {
        let _ = p.matches(&id.user);
    }
}

/// A token whose claims are `claims` (any bytes), signed with HS256.
fn signed_hs256(claims: &[u8]) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let message = format!(
        "{}.{}",
        b64.encode(br#"{"alg":"HS256","typ":"JWT"}"#),
        b64.encode(claims)
    );
    let key = jsonwebtoken::EncodingKey::from_secret(FUZZ_SECRET.as_bytes());
    let sig = jsonwebtoken::crypto::sign(message.as_bytes(), &key, jsonwebtoken::Algorithm::HS256)
        .expect("HS256 signs any bytes");
    format!("{message}.{sig}")
}

/// `pubsub_codec`: a message on a room's Redis channel as another node
/// decodes it (`broker::redis::codec`), and the envelope it builds. A
/// status change must round-trip.
pub fn pubsub_codec(data: &[u8]) {
    match codec::decode(data) {
        Some(codec::ChannelMessage::Publication {
            offset,
            epoch,
            payload,
            ..
        }) => {
            let _ = codec::envelope(&crate::protocol::json_string("r"), offset, &epoch, payload);
        }
        Some(codec::ChannelMessage::Presence(e)) => {
            // What this node would send for the same change reads back the
            // same (the fields were split at newlines, so hold none).
            let wire = codec::encode_status(&e.user, &e.name, e.status);
            let Some(codec::ChannelMessage::Presence(back)) = codec::decode(wire.as_bytes()) else {
                panic!("a status change that does not decode: {wire:?}");
            };
            assert_eq!(
                (&back.user, &back.name, back.status),
                (&e.user, &e.name, e.status)
            );
        }
        None => {}
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = codec::parse_status(Some(text));
    }
}
