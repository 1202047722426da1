//! The verdict: every acked message reached every subscriber of its room
//! exactly once and in offset order, or that subscriber was told it missed
//! it (`recovered: false`, a new epoch). Pure: it reads the clients' logs.

use std::collections::{HashMap, HashSet};

use super::clients::{AckRec, Entry, SubLog};

/// The counts of one run.
#[derive(Debug, Default, Clone)]
pub(crate) struct Tally {
    /// Distinct messages acked.
    pub acked: u64,
    /// Acks of a retried publish that had gone through already.
    pub acked_duplicate: u64,
    /// Messages that took more than one `publish` call to be acked.
    pub retried: u64,
    /// (subscriber, acked message) pairs the subscriber was responsible for.
    pub expected: u64,
    /// Messages delivered to subscribers, counted once per delivery.
    pub delivered: u64,
    /// Expected and neither delivered nor told of.
    pub lost: u64,
    /// Delivered again (same msgId, or same offset, to one subscriber).
    pub duplicated: u64,
    /// Delivered at or below an offset already delivered.
    pub out_of_order: u64,
    /// Offsets skipped without the subscriber being told.
    pub silent_gaps: u64,
    /// Times a subscriber was told it missed messages.
    pub told: u64,
    /// Expected messages a subscriber missed and was told of.
    pub excused: u64,
    /// A msgId acked at two places, or two msgIds at one place.
    pub conflicting_acks: u64,
    /// A few lost messages, to start looking from.
    pub examples: Vec<String>,
}

/// A range of offsets a subscriber was told it missed: `(lo, hi]` of an
/// epoch.
struct Excused {
    epoch: String,
    lo: u64,
    hi: u64,
}

/// Checks every subscriber against every ack.
pub(crate) fn check(subs: &[&SubLog], acks: &[AckRec]) -> Tally {
    let mut t = Tally::default();
    let mut by_room: HashMap<&str, Vec<&AckRec>> = HashMap::new();
    let mut by_id: HashMap<&str, (&str, u64, &str)> = HashMap::new();
    let mut by_place: HashMap<(&str, &str, u64), &str> = HashMap::new();
    for a in acks {
        if a.duplicate {
            t.acked_duplicate += 1;
        }
        if a.attempts > 1 {
            t.retried += 1;
        }
        let place = (a.room.as_str(), a.offset, a.epoch.as_str());
        match by_id.get(a.msg_id.as_str()) {
            Some(p) if *p != place => t.conflicting_acks += 1,
            Some(_) => continue,
            None => {
                by_id.insert(&a.msg_id, place);
            }
        }
        match by_place.get(&(a.room.as_str(), a.epoch.as_str(), a.offset)) {
            Some(id) if *id != a.msg_id => t.conflicting_acks += 1,
            _ => {
                by_place.insert((&a.room, &a.epoch, a.offset), &a.msg_id);
            }
        }
        t.acked += 1;
        by_room.entry(&a.room).or_default().push(a);
    }
    for (s, sub) in subs.iter().enumerate() {
        for (room, log) in &sub.rooms {
            let Some(start) = &log.start else { continue };
            let mut pos = start.clone();
            let mut excused: Vec<Excused> = Vec::new();
            let mut ids: HashSet<&str> = HashSet::new();
            let mut places: HashSet<(&str, u64)> = HashSet::new();
            for e in &log.entries {
                match e {
                    Entry::Told { epoch, offset } => {
                        t.told += 1;
                        if *epoch == pos.0 {
                            excused.push(Excused {
                                epoch: epoch.clone(),
                                lo: pos.1,
                                hi: *offset,
                            });
                        } else {
                            excused.push(Excused {
                                epoch: pos.0.clone(),
                                lo: pos.1,
                                hi: u64::MAX,
                            });
                            excused.push(Excused {
                                epoch: epoch.clone(),
                                lo: 0,
                                hi: *offset,
                            });
                        }
                        pos = (epoch.clone(), *offset);
                    }
                    Entry::Msg {
                        epoch,
                        offset,
                        msg_id,
                    } => {
                        t.delivered += 1;
                        if !ids.insert(msg_id) || !places.insert((epoch, *offset)) {
                            t.duplicated += 1;
                            continue;
                        }
                        if *epoch != pos.0 {
                            // A new epoch the client did not report.
                            t.silent_gaps += 1;
                        } else if *offset <= pos.1 {
                            t.out_of_order += 1;
                            continue;
                        } else if *offset > pos.1 + 1 {
                            t.silent_gaps += offset - pos.1 - 1;
                        }
                        pos = (epoch.clone(), *offset);
                    }
                }
            }
            for a in by_room.get(room.as_str()).into_iter().flatten() {
                if a.epoch == start.0 && a.offset <= start.1 {
                    // Published before this subscriber joined.
                    continue;
                }
                t.expected += 1;
                if ids.contains(a.msg_id.as_str()) {
                    continue;
                }
                if excused
                    .iter()
                    .any(|x| x.epoch == a.epoch && x.lo < a.offset && a.offset <= x.hi)
                {
                    t.excused += 1;
                    continue;
                }
                t.lost += 1;
                if t.examples.len() < 5 {
                    t.examples.push(format!(
                        "subscriber {s} never got {} ({room} offset {} epoch {}); it is at {:?}",
                        a.msg_id, a.offset, a.epoch, pos
                    ));
                }
            }
        }
    }
    t
}

/// A presence reply against the connected subscribers (user -> their
/// connections): the entries listed beyond them (ghosts) and those not
/// listed (missing), one name a connection. A reply lists the first
/// `max_presence_members` users by id and counts them all (`total`), as
/// users run it: the listed page is compared with the same first users
/// of the expected ones, and the users past it by their count alone.
pub(crate) fn compare_lists(
    reply: &serde_json::Value,
    expected: &HashMap<String, u64>,
) -> (Vec<String>, Vec<String>) {
    let mut listed: HashMap<&str, u64> = HashMap::new();
    for m in reply["members"].as_array().into_iter().flatten() {
        if let Some(u) = m["user"].as_str() {
            listed.insert(u, m["connections"].as_u64().unwrap_or(1));
        }
    }
    let shown = listed.len();
    let total = reply["total"].as_u64().map_or(shown, |t| t as usize);
    let mut users: Vec<&String> = expected.keys().collect();
    users.sort_unstable();
    let (page, rest) = users.split_at(shown.min(users.len()));
    let (mut ghosts, mut missing) = (Vec::new(), Vec::new());
    for (u, n) in &listed {
        let want = expected.get(*u).copied().unwrap_or(0);
        ghosts.extend((want..*n).map(|_| u.to_string()));
    }
    for u in page {
        let have = listed.get(u.as_str()).copied().unwrap_or(0);
        missing.extend((have..expected[*u]).map(|_| u.to_string()));
    }
    // Past the page only the count can be compared.
    let unlisted = total.saturating_sub(shown);
    if unlisted > rest.len() {
        ghosts.extend((rest.len()..unlisted).map(|i| format!("(unlisted user {i})")));
    } else {
        missing.extend(rest[unlisted..].iter().map(|u| u.to_string()));
    }
    (ghosts, missing)
}

#[cfg(test)]
mod tests {
    use super::super::clients::RoomLog;
    use super::*;

    fn lists(reply: serde_json::Value, expected: &[(&str, u64)]) -> (Vec<String>, Vec<String>) {
        let expected = expected.iter().map(|(u, n)| (u.to_string(), *n)).collect();
        compare_lists(&reply, &expected)
    }

    #[test]
    fn presence_lists_compare_the_page_by_name_and_the_rest_by_count() {
        let m = |u: &str, n: u64| serde_json::json!({"user": u, "connections": n});
        let want = [("a", 1), ("b", 2), ("c", 1), ("d", 1)];
        // Whole and exact.
        let all = serde_json::json!({"members": [m("a", 1), m("b", 2), m("c", 1), m("d", 1)], "total": 4});
        assert_eq!(lists(all, &want), (vec![], vec![]));
        // A page of two: exact when its users are the first two and the
        // total counts the other two.
        let page = serde_json::json!({"members": [m("a", 1), m("b", 2)], "total": 4});
        assert_eq!(lists(page, &want), (vec![], vec![]));
        // A connection short and a ghost on the page: c, which sorts
        // before the ghost, would have been listed.
        let off = serde_json::json!({"members": [m("a", 1), m("b", 1), m("x", 1)], "total": 4});
        assert_eq!(
            lists(off, &want),
            (
                vec!["x".to_string()],
                vec!["b".to_string(), "c".to_string()]
            )
        );
        // More counted past the page than are connected: ghosts.
        let more = serde_json::json!({"members": [m("a", 1), m("b", 2)], "total": 5});
        assert_eq!(lists(more, &want).0, vec!["(unlisted user 2)".to_string()]);
    }

    fn ack(offset: u64, id: &str) -> AckRec {
        AckRec {
            room: "r".into(),
            offset,
            epoch: "e".into(),
            msg_id: id.into(),
            duplicate: false,
            attempts: 1,
        }
    }

    fn msg(offset: u64, id: &str) -> Entry {
        Entry::Msg {
            epoch: "e".into(),
            offset,
            msg_id: id.into(),
        }
    }

    fn sub(entries: Vec<Entry>) -> SubLog {
        let mut s = SubLog::default();
        s.rooms.insert(
            "r".into(),
            RoomLog {
                start: Some(("e".into(), 1)),
                entries,
                pos: None,
            },
        );
        s
    }

    #[test]
    fn counts_lost_duplicated_and_told() {
        let acks = [
            ack(1, "a"),
            ack(2, "b"),
            ack(3, "c"),
            ack(4, "d"),
            ack(5, "x"),
        ];
        // Joined at 1: responsible for 2..=5.
        let fine = sub(vec![msg(2, "b"), msg(3, "c"), msg(4, "d"), msg(5, "x")]);
        let t = check(&[&fine], &acks);
        assert_eq!(
            (t.expected, t.lost, t.duplicated, t.silent_gaps),
            (4, 0, 0, 0)
        );
        // Told of 3..=4: excused, not lost.
        let told = sub(vec![
            msg(2, "b"),
            Entry::Told {
                epoch: "e".into(),
                offset: 4,
            },
            msg(5, "x"),
        ]);
        let t = check(&[&told], &acks);
        assert_eq!((t.lost, t.excused, t.told, t.silent_gaps), (0, 2, 1, 0));
        // Skipped 3 silently and got 2 twice.
        let bad = sub(vec![msg(2, "b"), msg(2, "b"), msg(4, "d"), msg(5, "x")]);
        let t = check(&[&bad], &acks);
        assert_eq!((t.lost, t.duplicated, t.silent_gaps), (1, 1, 1));
        // A new epoch, told: everything after its old position excused.
        let epoch = sub(vec![
            msg(2, "b"),
            Entry::Told {
                epoch: "f".into(),
                offset: 0,
            },
        ]);
        let t = check(&[&epoch], &acks);
        assert_eq!((t.lost, t.excused), (0, 3));
    }

    #[test]
    fn a_msg_id_acked_at_two_offsets_conflicts() {
        let t = check(&[], &[ack(1, "a"), ack(2, "a")]);
        assert_eq!(t.conflicting_acks, 1);
    }
}
