//! `webhook_offline_delay`: a user (or a room's members) back within it
//! sends no `user.offline` / `room.vacated` and no second `user.online` /
//! `room.occupied`; gone for longer, exactly one of each.

use super::{Receiver, connect, count, server, until_offline, user};

both_engines! {
    #[tokio::test]
    async fn a_return_within_the_delay_sends_nothing_and_a_longer_absence_one_event(engine) {
        let r = Receiver::start().await;
        let s = server(engine, vec![r.table()], |c| c.webhook_offline_delay = 2).await;
        let a = user("back");
        let room = format!("back.{}", uuid::Uuid::new_v4().simple());
        let mut c = connect(&s, &a).await;
        c.join(&room).await;
        r.until_event("member.joined", &room).await;
        c.close().await;
        until_offline(&s, &a).await;
        // Back within the delay, in the same room.
        let mut c = connect(&s, &a).await;
        c.join(&room).await;
        // Barrier: another user's absence, noticed after `a`'s, is delivered
        // after what `a`'s would have been.
        let b = user("barrier");
        let other = format!("barrier.{}", uuid::Uuid::new_v4().simple());
        let mut d = connect(&s, &b).await;
        d.join(&other).await;
        d.close().await;
        r.until_event("room.vacated", &other).await;
        let events = r.until_event("user.offline", &b).await;
        assert_eq!(count(&events, "user.online", &a), 1, "{events:?}");
        assert_eq!(count(&events, "user.offline", &a), 0, "{events:?}");
        assert_eq!(count(&events, "room.occupied", &room), 1, "{events:?}");
        assert_eq!(count(&events, "room.vacated", &room), 0, "{events:?}");
        // Members come and go without a delay.
        assert_eq!(count(&events, "member.left", &room), 1, "{events:?}");
        assert_eq!(count(&events, "member.joined", &room), 2, "{events:?}");
        // Gone for longer than the delay: exactly one of each.
        c.close().await;
        r.until_event("room.vacated", &room).await;
        let events = r.until_event("user.offline", &a).await;
        let later = r.delivered();
        for ty in ["user.offline", "user.online"] {
            assert_eq!(count(&later, ty, &a), 1, "{ty}: {later:?}");
        }
        for ty in ["room.vacated", "room.occupied"] {
            assert_eq!(count(&later, ty, &room), 1, "{ty}: {later:?}");
        }
        assert!(!events.is_empty());
    }
}
