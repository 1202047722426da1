//! Webhooks' `message.published` is recorded by the publish itself (the
//! request says a webhook wants it), so an acknowledged publish has its
//! event in the log whatever happens to the node next; a publish nobody
//! wants and a duplicate record nothing.

use super::*;
use hubcast::broker::EventType;

pub(super) async fn message_published_is_logged_by_the_publish(s: &Subject) {
    let group = "wh-contract".to_string();
    s.engine
        .enable_webhooks(std::slice::from_ref(&group), Duration::from_secs(1))
        .await
        .unwrap();
    let wanted = PublishRequest {
        webhook: true,
        ..request("wh", "w1", true, None)
    };
    let first = s.engine.publish(wanted.clone()).await.unwrap();
    // Not wanted by any webhook: nothing recorded.
    s.publish("wh", "w2", false).await;
    // A duplicate is not a message.
    let dup = s.engine.publish(wanted).await.unwrap();
    assert!(dup.duplicate);
    let third = s
        .engine
        .publish(PublishRequest {
            webhook: true,
            ..request("wh", "w3", false, None)
        })
        .await
        .unwrap();
    assert!(
        s.engine
            .lead(&group, Duration::from_secs(10))
            .await
            .unwrap()
    );
    let logged = s.engine.read(&group, 100).await.unwrap();
    type Logged<'a> = (EventType, Option<&'a str>, Option<Vec<u8>>);
    let got: Vec<Logged> = logged
        .iter()
        .map(|e| {
            (
                e.event.kind,
                e.event.room.as_deref(),
                e.event.message.as_ref().map(|m| m.to_vec()),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            (
                EventType::MessagePublished,
                Some("wh"),
                Some(expected_envelope("wh", "w1", first.offset, &first.epoch))
            ),
            (
                EventType::MessagePublished,
                Some("wh"),
                Some(expected_envelope("wh", "w3", third.offset, &third.epoch))
            ),
        ]
    );
    // Read again until acknowledged, with the same ids.
    let again = s.engine.read(&group, 100).await.unwrap();
    assert_eq!(
        again.iter().map(|e| &e.id).collect::<Vec<_>>(),
        logged.iter().map(|e| &e.id).collect::<Vec<_>>()
    );
    let ids: Vec<String> = logged.iter().map(|e| e.id.clone()).collect();
    s.engine.ack(&group, &ids).await.unwrap();
    assert!(s.engine.read(&group, 100).await.unwrap().is_empty());
}
