//! Per-connection frame rate limit: a token bucket refills at
//! `rate_limit_per_conn` frames per second up to `rate_limit_burst`. A frame
//! over the limit is refused with `rate_limited`; a client refused more than
//! `rate_limit_burst` times within [`FLOOD_WINDOW`] is flooding and is closed
//! with 4003.
//!
//! The buckets are GCRA, as governor's direct limiters are, in 24 bytes
//! rather than governor's 72 (its clock and start instant, per limiter):
//! every connection's task holds two of them for its whole life.

use std::num::NonZeroU64;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Window in which refusals are counted towards a flooding close.
pub(crate) const FLOOD_WINDOW: Duration = Duration::from_secs(10);

/// What to do with one incoming frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Handle it.
    Allow,
    /// Refuse it with `rate_limited`.
    Refuse,
    /// Refuse it and close the connection with 4003.
    Flood,
}

/// Nanoseconds since the first limiter was made: the clock of every
/// bucket (one shared start instead of one per limiter).
fn now_ns() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    u64::try_from(START.get_or_init(Instant::now).elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// A GCRA bucket (the generic cell rate algorithm, as governor has it):
/// `burst` cells at once, then one per `1 / rate` seconds.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    /// What one cell costs, in nanoseconds (1 s / rate).
    t: NonZeroU64,
    /// How far ahead of now the next cell's time may be: `t * (burst - 1)`.
    tau: u64,
    /// When the next cell is due if the bucket refills in time (the
    /// "theoretical arrival time"), in [`now_ns`]; 0 before the first.
    tat: u64,
}

impl Bucket {
    /// `None` when `per_sec` is 0 (unlimited); a `burst` of 0 is `per_sec`.
    fn new(per_sec: u32, burst: u32) -> Option<Self> {
        let rate = u64::from(per_sec);
        let t = NonZeroU64::new(1_000_000_000 / rate.max(1)).filter(|_| rate > 0)?;
        let burst = if burst == 0 { per_sec } else { burst };
        Some(Self {
            t,
            tau: t.get().saturating_mul(u64::from(burst.saturating_sub(1))),
            tat: 0,
        })
    }

    /// Takes one cell if the bucket has one.
    fn check(&mut self, now: u64) -> bool {
        let tat = self.tat.max(now);
        if now < self.tat.saturating_sub(self.tau) {
            return false;
        }
        self.tat = tat.saturating_add(self.t.get());
        true
    }
}

/// One connection's limiter.
pub(crate) struct FrameLimiter {
    /// None when limits are off.
    bucket: Option<Bucket>,
    /// Refusals allowed per window before the flooding close.
    max_refusals: u32,
    /// Refusals in the current window.
    refused: u32,
    /// Start of the current refusal-counting window, in [`now_ns`].
    window_start: u64,
}

impl FrameLimiter {
    /// A limiter for `per_sec` frames per second with bursts of `burst`
    /// (`per_sec == 0`: unlimited).
    pub(crate) fn new(per_sec: u32, burst: u32) -> Self {
        Self {
            bucket: Bucket::new(per_sec, burst),
            max_refusals: burst.max(1),
            refused: 0,
            window_start: now_ns(),
        }
    }

    /// Counts one frame.
    pub(crate) fn check(&mut self) -> Verdict {
        let Some(bucket) = &mut self.bucket else {
            return Verdict::Allow;
        };
        let now = now_ns();
        if bucket.check(now) {
            return Verdict::Allow;
        }
        if u128::from(now.saturating_sub(self.window_start)) > FLOOD_WINDOW.as_nanos() {
            self.window_start = now;
            self.refused = 0;
        }
        self.refused += 1;
        if self.refused > self.max_refusals {
            Verdict::Flood
        } else {
            Verdict::Refuse
        }
    }
}

/// One connection's join budget: `join_rate_per_conn` joins per second in
/// bursts of `max_rooms_per_conn`. Every join is a presence event to each
/// member of the room, so a client churning in a big room multiplies what
/// everyone else receives; leaves need no budget of their own, since each
/// follows a join that was counted. A refusal never closes the connection:
/// the frame limit already bounds how often a client can ask.
pub(crate) struct JoinLimiter {
    /// None when the limit is off.
    bucket: Option<Bucket>,
}

impl JoinLimiter {
    /// A limiter for `per_sec` joins per second with bursts of `burst` (at
    /// least `per_sec`); `per_sec == 0`: unlimited.
    pub(crate) fn new(per_sec: u32, burst: usize) -> Self {
        let burst = u32::try_from(burst).unwrap_or(u32::MAX).max(per_sec);
        Self {
            bucket: Bucket::new(per_sec, burst),
        }
    }

    /// Counts one join; false when it is refused.
    pub(crate) fn allow(&mut self) -> bool {
        self.bucket.as_mut().is_none_or(|b| b.check(now_ns()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn joins_come_in_bursts_of_the_room_cap_and_are_refused_past_them() {
        let mut l = JoinLimiter::new(1, 5);
        for _ in 0..5 {
            assert!(l.allow());
        }
        // Refused from then on (one refills per second), never a close.
        assert!((0..100).filter(|_| l.allow()).count() <= 1);
        let mut unlimited = JoinLimiter::new(0, 5);
        assert!((0..100_000).all(|_| unlimited.allow()));
    }

    /// A bucket gives its burst at once, then one cell per `1 / rate`, and
    /// idling refills it to the burst, no further.
    #[test]
    fn a_bucket_refills_at_its_rate_up_to_its_burst() {
        const S: u64 = 1_000_000_000;
        let Some(mut b) = Bucket::new(2, 3) else {
            panic!("a rate of 2 is limited");
        };
        let t0 = 5 * S;
        assert!((0..3).all(|_| b.check(t0)));
        assert!(!b.check(t0));
        // Half a second: one cell.
        assert!(!b.check(t0 + S / 2 - 1));
        assert!(b.check(t0 + S / 2));
        assert!(!b.check(t0 + S / 2));
        // A long quiet spell refills the burst, not more.
        let later = t0 + 100 * S;
        assert!((0..3).all(|_| b.check(later)));
        assert!(!b.check(later));
        // A burst of 0 is the rate; a rate of 0 is no limit.
        let Some(mut b) = Bucket::new(4, 0) else {
            panic!("a rate of 4 is limited");
        };
        assert_eq!((0..10).filter(|_| b.check(t0)).count(), 4);
        assert!(Bucket::new(0, 5).is_none());
    }

    /// Both limiters sit in every connection's task for its whole life
    /// (governor's were 96 and 72 bytes).
    #[test]
    fn limiters_stay_small() {
        assert!(std::mem::size_of::<FrameLimiter>() <= 40);
        assert!(std::mem::size_of::<JoinLimiter>() <= 24);
    }

    #[test]
    fn burst_then_refuse_then_flood() {
        let mut l = FrameLimiter::new(1, 5);
        for _ in 0..5 {
            assert_eq!(l.check(), Verdict::Allow);
        }
        for _ in 0..5 {
            assert_eq!(l.check(), Verdict::Refuse);
        }
        assert_eq!(l.check(), Verdict::Flood);
    }

    #[test]
    fn zero_means_unlimited() {
        let mut l = FrameLimiter::new(0, 0);
        for _ in 0..100_000 {
            assert_eq!(l.check(), Verdict::Allow);
        }
    }
}
