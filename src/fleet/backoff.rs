//! Reconnect backoff: exponential with full jitter (AWS architecture blog, "Exponential
//! Backoff And Jitter"): attempt `n` waits a uniform random time in `[0, min(max, initial *
//! 2^n)]`, so a fleet that lost its broker at one instant spreads its reconnects out instead of
//! stampeding the listen backlog. A `fixed` plan waits exactly its delay every time (the
//! lockstep a storm test compares against). Pure and seeded, so tests are deterministic.

use std::time::Duration;

use rand::{Rng as _, SeedableRng as _};

use crate::scenario::reconnect::ReconnectPlan;

/// One device's backoff state.
#[derive(Debug)]
pub struct Backoff {
    plan: ReconnectPlan,
    attempt: u32,
    rng: rand::rngs::SmallRng,
}

impl Backoff {
    /// A fresh backoff for `plan`, jitter drawn from `seed` (per device, so runs repeat).
    pub fn new(plan: ReconnectPlan, seed: u64) -> Backoff {
        Backoff {
            plan,
            attempt: 0,
            rng: rand::rngs::SmallRng::seed_from_u64(seed),
        }
    }

    /// The ceiling of the next delay: `initial * 2^attempt`, at most `max` (`fixed`: the
    /// delay itself).
    pub fn ceiling(&self) -> Duration {
        if self.plan.fixed {
            return self.plan.initial;
        }
        let factor = 1u32.checked_shl(self.attempt.min(31)).unwrap_or(u32::MAX);
        self.plan
            .initial
            .checked_mul(factor)
            .map_or(self.plan.max, |d| d.min(self.plan.max))
    }

    /// How long to wait before the next attempt; advances the attempt count.
    pub fn next_delay(&mut self) -> Duration {
        let ceiling = self.ceiling();
        self.attempt = self.attempt.saturating_add(1);
        if self.plan.fixed {
            return self.plan.initial;
        }
        ceiling.mul_f64(self.rng.random::<f64>())
    }

    /// Attempts made since the last [`reset`](Backoff::reset).
    pub fn attempts(&self) -> u32 {
        self.attempt
    }

    /// After a successful reconnect: the next loss starts from `initial` again.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(initial_ms: u64, max_ms: u64) -> ReconnectPlan {
        ReconnectPlan {
            initial: Duration::from_millis(initial_ms),
            max: Duration::from_millis(max_ms),
            fixed: false,
        }
    }

    #[test]
    fn fixed_waits_the_same_every_time() {
        let mut b = Backoff::new(
            ReconnectPlan {
                fixed: true,
                ..plan(250, 250)
            },
            5,
        );
        for _ in 0..40 {
            assert_eq!(b.ceiling(), Duration::from_millis(250));
            assert_eq!(b.next_delay(), Duration::from_millis(250));
        }
        assert_eq!(b.attempts(), 40);
    }

    #[test]
    fn ceiling_doubles_up_to_max_and_delays_stay_under_it() {
        let mut b = Backoff::new(plan(100, 5000), 7);
        let mut ceilings = Vec::new();
        for _ in 0..10 {
            let c = b.ceiling();
            let d = b.next_delay();
            assert!(d <= c, "{d:?} > ceiling {c:?}");
            ceilings.push(c.as_millis());
        }
        assert_eq!(
            ceilings,
            [100, 200, 400, 800, 1600, 3200, 5000, 5000, 5000, 5000]
        );
        assert_eq!(b.attempts(), 10);
        b.reset();
        assert_eq!(b.ceiling(), Duration::from_millis(100));
    }

    #[test]
    fn huge_attempt_counts_do_not_overflow() {
        let mut b = Backoff::new(plan(1000, 3_600_000), 1);
        for _ in 0..200 {
            assert!(b.next_delay() <= Duration::from_secs(3600));
        }
        assert_eq!(b.ceiling(), Duration::from_secs(3600));
    }

    #[test]
    fn jitter_is_full_and_seeded() {
        let draws = |seed| {
            let mut b = Backoff::new(plan(1000, 1000), seed);
            (0..1000).map(|_| b.next_delay()).collect::<Vec<_>>()
        };
        let a = draws(3);
        assert_eq!(a, draws(3), "same seed, same delays");
        assert_ne!(a, draws(4));
        // Full jitter: delays cover the whole [0, ceiling] range, not a band near the top.
        let below_100ms = a.iter().filter(|d| d.as_millis() < 100).count();
        let above_900ms = a.iter().filter(|d| d.as_millis() >= 900).count();
        assert!((50..=150).contains(&below_100ms), "{below_100ms}");
        assert!((50..=150).contains(&above_900ms), "{above_900ms}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_device_sleeping_its_backoff_waits_exactly_the_drawn_delays() {
        let mut b = Backoff::new(plan(100, 400), 11);
        let mut expected = Duration::ZERO;
        let start = tokio::time::Instant::now();
        for _ in 0..6 {
            let d = b.next_delay();
            expected += d;
            tokio::time::sleep(d).await;
        }
        // tokio's timer rounds each sleep up to the next millisecond.
        let waited = start.elapsed();
        assert!(
            waited >= expected && waited <= expected + Duration::from_millis(6),
            "{waited:?} vs {expected:?}"
        );
        assert!(expected <= Duration::from_millis(100 + 200 + 400 * 4));
    }
}
