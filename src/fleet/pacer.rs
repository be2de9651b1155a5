//! Connect pacing: an open-model schedule of intended start times.
//!
//! Attempt `k` of a group is due at `start + k / rate`, whatever happened to earlier attempts:
//! a slow handshake or a wait for an in-flight slot delays that attempt, never the schedule,
//! so the ramp's shape is the plan's and lateness is visible rather than silently absorbed.

use std::time::Duration;
use tokio::time::Instant;

/// The intended start time of every connect attempt of one group.
#[derive(Clone, Copy, Debug)]
pub struct Pacer {
    start: Instant,
    period: Duration,
}

impl Pacer {
    /// A schedule from `start` at `rate` attempts per second (`None`: all due at once, bounded
    /// only by the in-flight cap).
    pub fn new(start: Instant, rate: Option<f64>) -> Pacer {
        let period = match rate {
            Some(r) if r > 0.0 && r.is_finite() => Duration::from_secs_f64(1.0 / r),
            _ => Duration::ZERO,
        };
        Pacer { start, period }
    }

    /// When attempt `k` (from 0) is due.
    pub fn due(&self, k: u64) -> Instant {
        // Multiply in nanoseconds so rounding does not accumulate over 100,000 attempts.
        self.start + Duration::from_nanos((self.period.as_nanos() * u128::from(k)) as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn schedule_follows_rate_and_does_not_drift_when_a_step_is_slow() {
        let start = Instant::now();
        let pacer = Pacer::new(start, Some(200.0));
        let mut starts = Vec::new();
        for k in 0..1000u64 {
            tokio::time::sleep_until(pacer.due(k)).await;
            starts.push(Instant::now() - start);
            if k == 10 {
                // One attempt takes 100 ms (20 periods): later attempts catch up at once.
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        assert_eq!(starts[1], Duration::from_millis(5));
        assert_eq!(starts[10], Duration::from_millis(50));
        // Attempts 11..=30 were due during the stall: they start together when it ends.
        assert_eq!(starts[11], Duration::from_millis(150));
        assert_eq!(starts[30], Duration::from_millis(150));
        // After catching up the schedule is exactly the planned one.
        assert_eq!(starts[31], Duration::from_millis(155));
        assert_eq!(starts[999], Duration::from_millis(4995));
    }

    #[test]
    fn unlimited_rate_is_all_due_at_start() {
        let start = Instant::now();
        let pacer = Pacer::new(start, None);
        assert_eq!(pacer.due(0), start);
        assert_eq!(pacer.due(1_000_000), start);
    }

    #[test]
    fn odd_rates_do_not_accumulate_rounding() {
        let start = Instant::now();
        let pacer = Pacer::new(start, Some(3.0));
        let d = pacer.due(300_000) - start;
        assert!((d.as_secs_f64() - 100_000.0).abs() < 0.01, "{d:?}");
    }
}
