//! The epoch of a room's next run (the first message after the room was
//! empty), kept in the room's `e.<room>` key of the state bucket.
//!
//! The key moves `fresh` -> `claimed` (a publish is about to store the
//! run's first message, at a time) -> `used` (that message was stored).
//! A reader of an empty room (join, recover, history) must report the epoch
//! the next message will carry, and a publisher must not reuse an epoch a
//! message already carried (an offset is never reused within an epoch):
//! - `fresh E`: E, unused.
//! - `claimed E at t`: a publish may be storing E right now, or failed
//!   before storing; if it had stored, that message would still be in the
//!   stream until `t` + the stream's longest keep, so within that window an
//!   empty room means E is unused. After it, E may have been used: new.
//! - `used E` with the room empty: history was lost (expired, purged, the
//!   stream recreated): a new epoch. `used` is written only after the
//!   message was stored, so a reader that sees it and then reads the room
//!   again finds the message unless it is really gone.
//!
//! Readers write only when they pick a new epoch (as `fresh`), so every
//! reader and the next publisher agree on it.

/// What a room's epoch key holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum State {
    Missing,
    Fresh(String),
    Claimed(String, i64),
    Used(String),
}

impl State {
    pub(super) fn parse(v: Option<&[u8]>) -> State {
        let Some(v) = v else {
            return State::Missing;
        };
        let Ok(v) = std::str::from_utf8(v) else {
            // Unreadable: treat as used, so the worst case is a new epoch.
            return State::Used(String::new());
        };
        match v.split(':').collect::<Vec<_>>()[..] {
            ["f", e] => State::Fresh(e.to_string()),
            ["c", e, t] => match t.parse() {
                Ok(t) => State::Claimed(e.to_string(), t),
                Err(_) => State::Used(e.to_string()),
            },
            ["u", e] => State::Used(e.to_string()),
            _ => State::Used(String::new()),
        }
    }

    fn encode(&self) -> Vec<u8> {
        match self {
            State::Missing => Vec::new(),
            State::Fresh(e) => format!("f:{e}").into_bytes(),
            State::Claimed(e, t) => format!("c:{e}:{t}").into_bytes(),
            State::Used(e) => format!("u:{e}").into_bytes(),
        }
    }
}

/// The epoch an empty room's next message carries, given its key's state,
/// and what to write to the key (`None`: leave it). `claim`: the caller is
/// about to store that message. `keep_ms`: the longest a message stays in
/// the stream. `fresh`: a new epoch, used if one is needed.
pub(super) fn next_run(
    state: &State,
    claim: bool,
    now_ms: i64,
    keep_ms: i64,
    fresh: &str,
) -> (Option<Vec<u8>>, String) {
    let unused = match state {
        State::Fresh(e) => Some(e),
        State::Claimed(e, t) if now_ms < t.saturating_add(keep_ms) => Some(e),
        _ => None,
    };
    match (unused, claim) {
        // An older claim keeps its time: the window runs from the first.
        (Some(e), true) if matches!(state, State::Fresh(_)) => {
            (Some(State::Claimed(e.clone(), now_ms).encode()), e.clone())
        }
        (Some(e), _) => (None, e.clone()),
        (None, true) => (
            Some(State::Claimed(fresh.to_string(), now_ms).encode()),
            fresh.to_string(),
        ),
        (None, false) => (
            Some(State::Fresh(fresh.to_string()).encode()),
            fresh.to_string(),
        ),
    }
}

/// After a run's first message with `epoch` was stored: the key's new
/// value (`None`: leave it, it has moved on).
pub(super) fn stored(state: &State, epoch: &str) -> Option<Vec<u8>> {
    match state {
        State::Claimed(e, _) if e == epoch => Some(State::Used(e.clone()).encode()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEEP: i64 = 600_000;

    fn run(state: &State, claim: bool, now: i64) -> (Option<State>, String) {
        let (w, e) = next_run(state, claim, now, KEEP, "new");
        (w.map(|w| State::parse(Some(&w))), e)
    }

    #[test]
    fn states_read_back_as_written() {
        for s in [
            State::Fresh("a1".into()),
            State::Claimed("a1".into(), 42),
            State::Used("a1".into()),
        ] {
            assert_eq!(State::parse(Some(&s.encode())), s);
        }
        assert_eq!(State::parse(None), State::Missing);
        assert_eq!(State::parse(Some(b"garbage")), State::Used(String::new()));
    }

    #[test]
    fn a_reader_and_the_next_publisher_agree() {
        for state in [
            State::Missing,
            State::Fresh("a".into()),
            State::Claimed("a".into(), 1_000),
            State::Claimed("a".into(), 1_000 - KEEP),
            State::Used("a".into()),
        ] {
            let (write, told) = run(&state, false, 1_000);
            let after = write.unwrap_or(state.clone());
            let (_, stored_with) = run(&after, true, 1_001);
            assert_eq!(told, stored_with, "from {state:?}");
        }
    }

    #[test]
    fn a_claim_in_flight_is_reported_to_readers() {
        // The race that gave a joiner an epoch no message carried: a
        // publish claimed the epoch, a reader saw the room empty.
        let (write, e) = run(&State::Fresh("a".into()), true, 5);
        assert_eq!(e, "a");
        let claimed = write.unwrap();
        assert_eq!(claimed, State::Claimed("a".into(), 5));
        assert_eq!(run(&claimed, false, 6), (None, "a".to_string()));
        // Once stored, a room found empty again lost its history.
        let used = State::parse(stored(&claimed, "a").as_deref());
        assert_eq!(used, State::Used("a".into()));
        assert_eq!(run(&used, false, 7).1, "new");
    }

    #[test]
    fn an_epoch_is_not_reused_once_a_message_may_have_carried_it() {
        // A claim older than the longest keep: its message may have been
        // stored and expired since.
        let old = State::Claimed("a".into(), 0);
        assert_eq!(run(&old, true, KEEP).1, "new");
        assert_eq!(run(&old, false, KEEP).1, "new");
        // A second claim keeps the first one's time.
        assert_eq!(run(&old, true, KEEP - 1), (None, "a".to_string()));
        assert_eq!(run(&State::Used("a".into()), true, 0).1, "new");
    }

    #[test]
    fn a_moved_on_key_is_left_alone_after_a_store() {
        assert_eq!(stored(&State::Fresh("b".into()), "a"), None);
        assert_eq!(stored(&State::Claimed("b".into(), 1), "a"), None);
        assert_eq!(stored(&State::Used("a".into()), "a"), None);
    }
}
