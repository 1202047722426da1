//! Signing, the body's fields, retries and the drop after
//! `webhook_retry_for`.

use std::time::Duration;

use serde_json::{Value, json};

use super::{Receiver, Request, SECRET, connect, count, is, server, user, verify};
use crate::common::{metric_value, wait_until};

both_engines! {
    #[tokio::test]
    async fn every_batch_is_signed_and_a_tampered_body_fails_the_check(engine) {
        let r = Receiver::start().await;
        let s = server(engine, vec![r.table()], |_| {}).await;
        let u = user("sig");
        let mut c = connect(&s, &u).await;
        c.join("sig.room").await;
        r.until_event("member.joined", "sig.room").await;
        r.assert_all_signed();
        let first = &r.requests()[0];
        assert!(verify(&first.signature, &first.raw));
        let mut tampered = first.raw.to_vec();
        let at = tampered.iter().position(|b| *b == b'o').unwrap();
        tampered[at] = b'O';
        assert!(!verify(&first.signature, &tampered), "a changed byte fails");
        // The server's own helper agrees with the receiver's.
        let now = hubcast::unix_ms() as u64 / 1000;
        let secret = SECRET.as_bytes();
        assert!(hubcast::hooks::sign::verify(
            secret,
            &first.signature,
            &first.raw,
            now,
            300
        ));
        assert!(!hubcast::hooks::sign::verify(
            secret,
            &first.signature,
            &tampered,
            now,
            300
        ));
    }
}

both_engines! {
    #[tokio::test]
    async fn events_carry_the_contracts_fields_in_the_order_they_happened(engine) {
        let r = Receiver::start().await;
        let s = server(engine, vec![r.table()], |c| c.webhook_offline_delay = 0).await;
        let u = user("fields");
        let room = format!("f.{}", uuid::Uuid::new_v4().simple());
        let mut c = connect(&s, &u).await;
        c.join(&room).await;
        let ack = c.publish(&room, json!({"n": 1})).await;
        c.close().await;
        let events = r.until_event("user.offline", &u).await;
        let mine: Vec<(&str, &Value)> = events
            .iter()
            .filter(|e| e["room"] == room.as_str() || e["user"] == u.as_str())
            .map(|e| (e["type"].as_str().unwrap(), e))
            .collect();
        let types: Vec<&str> = mine.iter().map(|(t, _)| *t).collect();
        assert_eq!(
            types,
            [
                "user.online",
                "room.occupied",
                "member.joined",
                "message.published",
                "member.left",
                "room.vacated",
                "user.offline"
            ],
            "{events:?}"
        );
        for (t, e) in &mine {
            assert!(e["id"].as_str().is_some_and(|id| !id.is_empty()), "{e}");
            assert!(e["time"].as_i64().unwrap() > 1_600_000_000_000, "{e}");
            match *t {
                "user.online" | "user.offline" => {
                    assert_eq!(e["user"], u.as_str());
                    assert!(e.get("room").is_none(), "{e}");
                }
                "room.occupied" | "room.vacated" => {
                    assert_eq!(e["room"], room.as_str());
                    assert!(e.get("user").is_none(), "{e}");
                }
                "member.joined" | "member.left" => {
                    assert_eq!((&e["room"], &e["user"]), (&json!(room), &json!(u)));
                }
                _ => {
                    let m = &e["message"];
                    assert_eq!(m["type"], "message");
                    assert_eq!(m["room"], room.as_str());
                    assert_eq!(m["data"], json!({"n": 1}));
                    assert_eq!(m["msgId"], ack["msgId"]);
                    assert_eq!(m["offset"], ack["offset"]);
                }
            }
        }
        let ids: std::collections::HashSet<&str> =
            events.iter().map(|e| e["id"].as_str().unwrap()).collect();
        assert_eq!(ids.len(), events.len(), "ids are unique");
        for req in r.requests() {
            assert!(
                req.body["id"].is_string() && req.body["time"].is_i64(),
                "{}",
                req.body
            );
            assert!(req.body["events"].as_array().unwrap().len() <= 100);
        }
    }
}

both_engines! {
    #[tokio::test]
    async fn a_batch_is_retried_with_backoff_while_the_receiver_answers_503(engine) {
        let r = Receiver::start().await;
        r.answer_first(&[503, 503]);
        let s = server(engine, vec![r.table()], |_| {}).await;
        let room = format!("retry.{}", uuid::Uuid::new_v4().simple());
        let mut c = connect(&s, &user("retry")).await;
        c.join(&room).await;
        let events = r.until_event("member.joined", &room).await;
        assert_eq!(count(&events, "room.occupied", &room), 1, "{events:?}");
        let reqs = r.requests();
        assert_eq!(
            reqs.iter().map(|q| q.status).collect::<Vec<_>>()[..3],
            [503, 503, 200]
        );
        // The same batch each time: same body id, same event ids.
        let ids = |q: &Request| {
            (
                q.body["id"].clone(),
                q.body["events"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|e| e["id"].clone())
                    .collect::<Vec<_>>(),
            )
        };
        assert_eq!(ids(&reqs[0]), ids(&reqs[1]));
        assert_eq!(ids(&reqs[0]), ids(&reqs[2]));
        // Backoff: 1 s, then 2 s (plus jitter), never less.
        let t = |q: &Request| q.arrived;
        assert!(t(&reqs[1]) - t(&reqs[0]) >= Duration::from_secs(1));
        assert!(t(&reqs[2]) - t(&reqs[1]) >= Duration::from_secs(2));
        let text = reqwest::get(s.http("/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(
            metric_value(
                &text,
                "hubcast_webhook_requests_failed_total",
                &[("reason", "status")]
            ) >= 2.0
        );
        assert!(metric_value(&text, "hubcast_webhook_events_delivered_total", &[]) >= 2.0);
    }
}

both_engines! {
    #[tokio::test]
    async fn a_batch_is_dropped_after_webhook_retry_for_logged_and_counted(engine) {
        let r = Receiver::start().await;
        r.answer_always(Some(503));
        let s = server(engine, vec![r.table()], |c| c.webhook_retry_for = 1).await;
        let dropped = || async {
            let text = reqwest::get(s.http("/metrics"))
                .await
                .unwrap()
                .text()
                .await
                .unwrap();
            let name = "hubcast_webhook_events_dropped_total";
            if text.lines().any(|l| l.starts_with(name)) {
                metric_value(&text, name, &[])
            } else {
                0.0
            }
        };
        let gone = format!("gone.{}", uuid::Uuid::new_v4().simple());
        let mut c = connect(&s, &user("drop")).await;
        c.join(&gone).await;
        // With webhook_retry_for = 1 the first 503 ends the batch (the
        // next try would start after 1 s): once answered, it is dropped
        // (the counter is the process's, shared with the other engine's
        // run, so it is no barrier of its own).
        wait_until(|| async {
            r.requests()
                .iter()
                .any(|q| q.status == 503 && q.body.to_string().contains(&gone))
                .then_some(())
        })
        .await;
        r.answer_always(None);
        let back = format!("back.{}", uuid::Uuid::new_v4().simple());
        c.join(&back).await;
        let events = r.until_event("room.occupied", &back).await;
        assert!(
            !events.iter().any(|e| is(e, "room.occupied", &gone)),
            "the dropped batch is not sent again: {events:?}"
        );
        assert!(dropped().await >= 1.0);
    }
}
