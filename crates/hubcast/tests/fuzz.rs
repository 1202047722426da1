//! Property tests over the two parsers that take untrusted input: client
//! frames and connection tokens. Arbitrary bytes never panic, and what
//! parses is checked; the bounds keep each case small.
#![allow(clippy::unwrap_used)]

use hubcast::auth::Auth;
use hubcast::config::Config;
use hubcast::protocol::{ClientFrame, parse_client_frame};
use proptest::prelude::*;

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
