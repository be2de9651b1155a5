//! Open-model schedules of intended times: connect attempts ([`Pacer`]) and messages
//! ([`Schedule`]).
//!
//! Event `k` is due at a time fixed by the plan alone, whatever happened to earlier events: a
//! slow handshake or a slow send delays that event, never the schedule, so the load's shape is
//! the plan's and lateness is visible (latency measured from the intended time) rather than
//! silently absorbed (coordinated omission).

use std::time::Duration;

use rand::rngs::SmallRng;
use rand::{Rng as _, SeedableRng as _};
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

/// How messages are spread in time at a given mean rate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Arrivals {
    /// Exactly every `1 / rate`.
    #[default]
    Constant,
    /// Exponentially distributed gaps with mean `1 / rate` (a Poisson process): the bursts a
    /// fleet of independent devices produces.
    Poisson,
}

/// The intended send times of one publisher's messages.
#[derive(Debug)]
pub struct Schedule {
    start: Instant,
    period_ns: f64,
    arrivals: Arrivals,
    rng: SmallRng,
    k: u64,
    offset_ns: f64,
}

impl Schedule {
    /// A schedule from `start` at `rate` messages per second (> 0); `seed` makes Poisson gaps
    /// reproducible.
    pub fn new(start: Instant, rate: f64, arrivals: Arrivals, seed: u64) -> Schedule {
        Schedule {
            start,
            period_ns: 1e9 / rate,
            arrivals,
            rng: SmallRng::seed_from_u64(seed),
            k: 0,
            offset_ns: 0.0,
        }
    }

    /// The intended time of the next message (the first is due at `start`).
    pub fn next_due(&mut self) -> Instant {
        let offset = match self.arrivals {
            // Multiply rather than accumulate: no drift over millions of messages.
            Arrivals::Constant => self.k as f64 * self.period_ns,
            Arrivals::Poisson => {
                let due = self.offset_ns;
                let u: f64 = self.rng.random::<f64>();
                self.offset_ns += -(1.0 - u).ln() * self.period_ns;
                due
            }
        };
        self.k += 1;
        self.start + Duration::from_nanos(offset as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn message_schedule_is_independent_of_slow_sends() {
        let start = Instant::now();
        let mut schedule = Schedule::new(start, 100.0, Arrivals::Constant, 1);
        let mut intended = Vec::new();
        for k in 0..500 {
            let due = schedule.next_due();
            intended.push(due - start);
            tokio::time::sleep_until(due).await;
            if k == 3 {
                tokio::time::sleep(Duration::from_millis(250)).await; // a stalled send
            }
        }
        for (k, d) in intended.iter().enumerate() {
            assert_eq!(*d, Duration::from_millis(10 * k as u64), "message {k}");
        }
    }

    #[test]
    fn poisson_gaps_average_the_period_and_repeat_under_a_seed() {
        let start = Instant::now();
        let mut a = Schedule::new(start, 1000.0, Arrivals::Poisson, 42);
        let mut b = Schedule::new(start, 1000.0, Arrivals::Poisson, 42);
        let n = 20_000;
        let mut last = start;
        let mut gaps = Vec::new();
        for _ in 0..n {
            let (x, y) = (a.next_due(), b.next_due());
            assert_eq!(x, y);
            gaps.push((x - last).as_secs_f64());
            last = x;
        }
        let mean = (last - start).as_secs_f64() / (n - 1) as f64;
        assert!((mean - 0.001).abs() < 0.001 * 0.03, "mean gap {mean}");
        // Exponential gaps: about 63% are shorter than the mean.
        let short = gaps.iter().skip(1).filter(|g| **g < 0.001).count() as f64 / (n - 1) as f64;
        assert!((short - 0.632).abs() < 0.02, "{short}");
    }

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
