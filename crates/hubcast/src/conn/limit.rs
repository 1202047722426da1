//! Per-connection frame rate limit: a token bucket (governor) refills at
//! `rate_limit_per_conn` frames per second up to `rate_limit_burst`. A frame
//! over the limit is refused with `rate_limited`; a client refused more than
//! `rate_limit_burst` times within [`FLOOD_WINDOW`] is flooding and is closed
//! with 4003.

use std::num::NonZeroU32;
use std::time::{Duration, Instant};

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};

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

/// One connection's limiter.
pub(crate) struct FrameLimiter {
    /// None when limits are off.
    bucket: Option<DefaultDirectRateLimiter>,
    /// Refusals allowed per window before the flooding close.
    max_refusals: u32,
    /// Start of the current refusal-counting window.
    window_start: Instant,
    /// Refusals in the current window.
    refused: u32,
}

impl FrameLimiter {
    /// A limiter for `per_sec` frames per second with bursts of `burst`
    /// (`per_sec == 0`: unlimited).
    pub(crate) fn new(per_sec: u32, burst: u32) -> Self {
        let bucket = NonZeroU32::new(per_sec).map(|rate| {
            let burst = NonZeroU32::new(burst).unwrap_or(rate);
            RateLimiter::direct(Quota::per_second(rate).allow_burst(burst))
        });
        Self {
            bucket,
            max_refusals: burst.max(1),
            window_start: Instant::now(),
            refused: 0,
        }
    }

    /// Counts one frame.
    pub(crate) fn check(&mut self) -> Verdict {
        let Some(bucket) = &self.bucket else {
            return Verdict::Allow;
        };
        if bucket.check().is_ok() {
            return Verdict::Allow;
        }
        let now = Instant::now();
        if now.duration_since(self.window_start) > FLOOD_WINDOW {
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
    bucket: Option<DefaultDirectRateLimiter>,
}

impl JoinLimiter {
    /// A limiter for `per_sec` joins per second with bursts of `burst` (at
    /// least `per_sec`); `per_sec == 0`: unlimited.
    pub(crate) fn new(per_sec: u32, burst: usize) -> Self {
        let bucket = NonZeroU32::new(per_sec).map(|rate| {
            let burst = u32::try_from(burst)
                .ok()
                .and_then(NonZeroU32::new)
                .map_or(rate, |b| b.max(rate));
            RateLimiter::direct(Quota::per_second(rate).allow_burst(burst))
        });
        Self { bucket }
    }

    /// Counts one join; false when it is refused.
    pub(crate) fn allow(&self) -> bool {
        self.bucket.as_ref().is_none_or(|b| b.check().is_ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn joins_come_in_bursts_of_the_room_cap_and_are_refused_past_them() {
        let l = JoinLimiter::new(1, 5);
        for _ in 0..5 {
            assert!(l.allow());
        }
        // Refused from then on (one refills per second), never a close.
        assert!((0..100).filter(|_| l.allow()).count() <= 1);
        let unlimited = JoinLimiter::new(0, 5);
        assert!((0..100_000).all(|_| unlimited.allow()));
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
