//! Per-second interval histograms of every latency metric, kept for the HdrHistogram interval
//! logs (`connect.hlog`, `ack.hlog`, ...) that `--out DIR` writes.
//!
//! Why: a run's cumulative histogram hides *when* latency went bad; an interval log keeps one
//! histogram per second in the standard format HistogramLogAnalyzer and every HdrHistogram
//! library read. The aggregator adds each tick's interval histograms here (off the hot path)
//! and cuts an interval once per second, together with the timeline sample. Each cut interval
//! is stored V2+deflate encoded (a few hundred bytes), never as a live ~139 KB histogram, so an
//! hour-long run keeps a few MB.

use std::time::{Duration, SystemTime};

use hdrhistogram::serialization::{Serializer, V2DeflateSerializer};
use hdrhistogram::Histogram;

use super::histogram;

/// The metrics with interval logs, in file-name form: index 0 is connect latency, the rest
/// follow [`super::Metric`] (ack, e2e corrected, e2e uncorrected, ack corrected).
pub const NAMES: [&str; 1 + super::METRICS] =
    ["connect", "ack", "e2e", "e2e_uncorrected", "ack_corrected"];

/// One cut interval of one metric.
#[derive(Clone, Debug)]
pub struct Interval {
    /// Start, since the run started.
    pub start: Duration,
    /// Length.
    pub length: Duration,
    /// Samples in the interval (0: nothing recorded).
    pub count: u64,
    /// The interval's histogram, V2+deflate.
    pub encoded: Vec<u8>,
}

/// Accumulates ticks into per-second intervals.
pub struct Intervals {
    /// Wall-clock time of the run's start (the logs' StartTime/BaseTime).
    pub base: SystemTime,
    current: [Histogram<u64>; NAMES.len()],
    cut_at: Duration,
    /// Cut intervals per metric, in [`NAMES`] order.
    pub series: [Vec<Interval>; NAMES.len()],
    serializer: V2DeflateSerializer,
}

impl Intervals {
    /// Empty; `base` is the wall-clock time matching elapsed zero.
    pub fn new(base: SystemTime) -> Intervals {
        Intervals {
            base,
            current: std::array::from_fn(|_| histogram::latency()),
            cut_at: Duration::ZERO,
            series: Default::default(),
            serializer: V2DeflateSerializer::new(),
        }
    }

    /// Adds one tick's interval histograms: connect, then the message metrics.
    pub fn add(&mut self, connect: &Histogram<u64>, traffic: &[Histogram<u64>; super::METRICS]) {
        self.current[0].add(connect).expect("same bounds");
        for (m, h) in traffic.iter().enumerate() {
            self.current[m + 1].add(h).expect("same bounds");
        }
    }

    /// Ends the current interval at `elapsed` (no-op if no time passed).
    pub fn cut(&mut self, elapsed: Duration) {
        if elapsed <= self.cut_at {
            return;
        }
        for (m, h) in self.current.iter_mut().enumerate() {
            let mut encoded = Vec::new();
            self.serializer
                .serialize(h, &mut encoded)
                .expect("serialising to memory cannot fail");
            self.series[m].push(Interval {
                start: self.cut_at,
                length: elapsed - self.cut_at,
                count: h.len(),
                encoded,
            });
            h.reset();
        }
        self.cut_at = elapsed;
    }

    /// Whether metric `m` recorded any sample.
    pub fn has_samples(&self, m: usize) -> bool {
        self.series[m].iter().any(|i| i.count > 0)
    }
}

impl std::fmt::Debug for Intervals {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Intervals")
            .field("base", &self.base)
            .field("cut_at", &self.cut_at)
            .field(
                "intervals",
                &self.series.iter().map(Vec::len).collect::<Vec<_>>(),
            )
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hdrhistogram::serialization::Deserializer;

    #[test]
    fn cuts_sum_to_what_was_added() {
        let mut iv = Intervals::new(SystemTime::now());
        let mut c = histogram::latency();
        let traffic: [Histogram<u64>; crate::stats::METRICS] =
            std::array::from_fn(|_| histogram::latency());
        c.record(100).unwrap();
        iv.add(&c, &traffic);
        iv.cut(Duration::from_secs(1));
        iv.cut(Duration::from_secs(1)); // no time passed: nothing cut
        c.record(900).unwrap();
        iv.add(&c, &traffic);
        iv.cut(Duration::from_millis(2500));
        assert_eq!(iv.series[0].len(), 2);
        assert_eq!(iv.series[0][1].start, Duration::from_secs(1));
        assert_eq!(iv.series[0][1].length, Duration::from_millis(1500));
        assert_eq!(
            iv.series[0].iter().map(|i| i.count).collect::<Vec<_>>(),
            [1, 2]
        );
        let second: Histogram<u64> = Deserializer::new()
            .deserialize(&mut iv.series[0][1].encoded.as_slice())
            .unwrap();
        assert_eq!(second.len(), 2);
        assert!(iv.has_samples(0));
        assert!(!iv.has_samples(2));
    }
}
