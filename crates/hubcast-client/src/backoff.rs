//! Reconnect delays: exponential backoff with full jitter, and the random
//! fraction the jitter (and publish retries) draw from. Public so that a
//! caller retrying a refused request on its own (a load tool's first
//! joins) spreads its retries as the client spreads its reconnects.

use std::hash::BuildHasher;
use std::time::Duration;

use tokio::time::Instant;

/// The delay before reconnect attempt `attempt` (0 first): a uniformly
/// random part of a cap that starts at `min` and doubles per attempt up
/// to `max`. Full jitter spreads the clients a restarted node dropped.
pub fn delay(min: Duration, max: Duration, attempt: u32, fraction: f64) -> Duration {
    let cap = min.saturating_mul(1 << attempt.min(16)).min(max);
    cap.mul_f64(fraction)
}

/// A uniformly distributed number in [0, 1), for jitter (std's randomly
/// keyed hasher; jitter needs spread, not secrecy).
pub fn random_fraction() -> f64 {
    let n = std::collections::hash_map::RandomState::new().hash_one(Instant::now());
    (n >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_is_a_fraction() {
        for _ in 0..100 {
            let f = random_fraction();
            assert!((0.0..1.0).contains(&f));
        }
    }

    #[test]
    fn caps_double_up_to_the_largest() {
        let (min, max) = (Duration::from_millis(500), Duration::from_secs(20));
        let halves: Vec<u128> = (0..8)
            .map(|a| delay(min, max, a, 0.5).as_millis())
            .collect();
        assert_eq!(halves, [250, 500, 1000, 2000, 4000, 8000, 10000, 10000]);
        assert!(delay(min, max, 40, 1.0 - f64::EPSILON) <= max);
        assert_eq!(delay(min, max, 3, 0.0), Duration::ZERO);
        assert_eq!(delay(min, max, u32::MAX, 0.5), Duration::from_secs(10));
    }
}
