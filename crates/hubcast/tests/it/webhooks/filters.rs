//! Each webhook gets the events and rooms its table asks for, and never a
//! personal room's.

use serde_json::{Value, json};

use super::{Receiver, connect, server, user};
use hubcast::config::WebhookTable;

both_engines! {
    #[tokio::test]
    async fn two_webhooks_each_get_their_events_and_rooms(engine) {
        let (r1, r2) = (Receiver::start().await, Receiver::start().await);
        let w1 = WebhookTable {
            events: vec!["room.occupied".into(), "message.published".into()],
            ..r1.table()
        };
        let w2 = WebhookTable {
            events: vec!["member.joined".into()],
            rooms: "b.**".into(),
            ..r2.table()
        };
        let s = server(engine, vec![w1, w2], |_| {}).await;
        let tag = uuid::Uuid::new_v4().simple().to_string();
        let (ax, by) = (format!("a.{tag}"), format!("b.{tag}.y"));
        let u = user("filters");
        let mut c = connect(&s, &u).await;
        c.join(&ax).await;
        c.join(&by).await;
        c.publish(&ax, json!(1)).await;
        c.publish(&by, json!(2)).await;
        let sent = s
            .api_post("/api/send", &json!({"to": u, "event": "e", "data": 3}))
            .await;
        assert!(sent["offset"].is_u64(), "{sent}");
        // Barriers: one more event for each webhook, after all of the above
        // (from another connection: `c` now has the personal message to read).
        let (z, bz) = (format!("z.{tag}"), format!("b.{tag}.z"));
        let mut c2 = connect(&s, &u).await;
        c2.join(&z).await;
        c2.join(&bz).await;
        let e1 = r1
            .until(|e| e["type"] == "room.occupied" && e["room"] == bz.as_str())
            .await;
        let e2 = r2
            .until(|e| e["type"] == "member.joined" && e["room"] == bz.as_str())
            .await;
        let pairs = |events: &[Value]| -> Vec<(String, String)> {
            events
                .iter()
                .map(|e| {
                    (
                        e["type"].as_str().unwrap().to_string(),
                        e["room"].as_str().unwrap_or_default().to_string(),
                    )
                })
                .collect()
        };
        let p = |t: &str, r: &str| (t.to_string(), r.to_string());
        assert_eq!(
            pairs(&e1),
            [
                p("room.occupied", &ax),
                p("room.occupied", &by),
                p("message.published", &ax),
                p("message.published", &by),
                p("room.occupied", &z),
                p("room.occupied", &bz),
            ],
            "no personal room, no other type"
        );
        assert_eq!(
            pairs(&e2),
            [p("member.joined", &by), p("member.joined", &bz)]
        );
    }
}
