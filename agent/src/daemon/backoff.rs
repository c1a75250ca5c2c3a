//! Retry timing: exponential backoff with full jitter, and the ±10 % heartbeat jitter.
//!
//! Full jitter (a uniformly random wait between 0 and the exponential bound) spreads a
//! fleet's retries after a hub outage instead of synchronising them.

use std::time::Duration;

/// A uniformly random `u64` (the kernel's generator; the clock if that ever fails).
pub fn random_u64() -> u64 {
    let mut b = [0u8; 8];
    if getrandom::getrandom(&mut b).is_ok() {
        return u64::from_le_bytes(b);
    }
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    t ^ (u64::from(std::process::id()) << 32)
}

/// Uniform in `[0, max]`.
pub fn full_jitter(max: Duration) -> Duration {
    let ms = max.as_millis().min(u128::from(u64::MAX)) as u64;
    Duration::from_millis(random_u64() % (ms + 1))
}

/// `d` scaled by a random factor in `[1 - frac, 1 + frac]`.
pub fn spread(d: Duration, frac: f64) -> Duration {
    let unit = (random_u64() % 10_001) as f64 / 10_000.0; // [0, 1]
    d.mul_f64(1.0 - frac + 2.0 * frac * unit)
}

/// Exponential backoff: attempt n waits a random time in `[floor, min(cap, base·2ⁿ)]`.
#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
    attempt: u32,
}

/// Never retry faster than this, whatever the jitter drew.
const FLOOR: Duration = Duration::from_millis(200);

impl Backoff {
    pub fn new(base: Duration, cap: Duration) -> Self {
        Backoff {
            base,
            cap,
            attempt: 0,
        }
    }

    /// The hub's default: 1 s doubling up to 5 min.
    pub fn hub() -> Self {
        Backoff::new(Duration::from_secs(1), Duration::from_secs(300))
    }

    /// The wait before the next attempt.
    pub fn next_delay(&mut self) -> Duration {
        let bound = self
            .base
            .saturating_mul(1u32 << self.attempt.min(20))
            .min(self.cap);
        self.attempt = self.attempt.saturating_add(1);
        full_jitter(bound).max(FLOOR)
    }

    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    pub fn attempts(&self) -> u32 {
        self.attempt
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_is_bounded_and_grows() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(300));
        for n in 0..40 {
            let d = b.next_delay();
            let bound = Duration::from_secs(1 << n.min(9)).min(Duration::from_secs(300));
            assert!(d >= FLOOR && d <= bound.max(FLOOR), "attempt {n}: {d:?}");
        }
        b.reset();
        assert!(b.next_delay() <= Duration::from_secs(1));
    }

    #[test]
    fn spread_stays_within_ten_percent() {
        for _ in 0..200 {
            let d = spread(Duration::from_secs(30), 0.1);
            assert!(
                d >= Duration::from_secs(27) && d <= Duration::from_secs(33),
                "{d:?}"
            );
        }
    }
}
