//! HDR histograms as DESIGN.md section 5 defines them: microseconds, 1 us .. 60 s, 3
//! significant digits; summarised as fixed percentiles and serialised V2+deflate so shard
//! reports can be merged losslessly later.

use base64::Engine as _;
use hdrhistogram::serialization::{Serializer, V2DeflateSerializer};
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Highest recordable value: 60 s in microseconds (larger samples saturate).
pub const MAX_US: u64 = 60_000_000;

/// A new empty latency histogram (~139 KB: one per worker per metric, never one per device).
pub fn latency() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_US, 3).expect("static bounds are valid")
}

/// The percentiles every report and screen shows, in microseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Percentiles {
    /// Samples recorded.
    pub count: u64,
    /// Median.
    pub p50: u64,
    /// 90th percentile.
    pub p90: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile.
    pub p99_9: u64,
    /// Largest sample.
    pub max: u64,
    /// Arithmetic mean (for comparison only: percentiles are the headline).
    pub mean: f64,
}

impl Percentiles {
    /// Summarises `h` (all zero when empty).
    pub fn of(h: &Histogram<u64>) -> Percentiles {
        if h.is_empty() {
            return Percentiles::default();
        }
        Percentiles {
            count: h.len(),
            p50: h.value_at_quantile(0.50),
            p90: h.value_at_quantile(0.90),
            p99: h.value_at_quantile(0.99),
            p99_9: h.value_at_quantile(0.999),
            max: h.max(),
            mean: h.mean(),
        }
    }

    /// An upper bound of the percentiles of `a` and `b`'s samples together, when only their
    /// summaries are at hand (each percentile the higher of the two; count and mean exact).
    pub fn upper_bound(a: Percentiles, b: Percentiles) -> Percentiles {
        let count = a.count + b.count;
        Percentiles {
            count,
            p50: a.p50.max(b.p50),
            p90: a.p90.max(b.p90),
            p99: a.p99.max(b.p99),
            p99_9: a.p99_9.max(b.p99_9),
            max: a.max.max(b.max),
            mean: match count {
                0 => 0.0,
                _ => (a.mean * a.count as f64 + b.mean * b.count as f64) / count as f64,
            },
        }
    }
}

/// Buckets of a [`Distribution`]: powers of two of microseconds, up to 2^26 us (67 s).
pub const BUCKETS: usize = 27;

/// A latency histogram coarsened to powers of two (bucket `k` counts samples in
/// `[2^k, 2^(k+1))` us) for the dashboard's distribution view: small and `Copy`, so a
/// snapshot can carry one per metric without sharing the 139 KB HDR histogram.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Distribution(pub [u64; BUCKETS]);

impl Distribution {
    /// Coarsens `h`; cost is one pass over its recorded values (done on the aggregator tick).
    pub fn of(h: &Histogram<u64>) -> Distribution {
        let mut buckets = [0u64; BUCKETS];
        for v in h.iter_recorded() {
            let value = v.value_iterated_to().max(1);
            let k = (63 - value.leading_zeros() as usize).min(BUCKETS - 1);
            buckets[k] += v.count_at_value();
        }
        Distribution(buckets)
    }

    /// The bucket range from the first to the last non-empty bucket (empty when no samples).
    pub fn occupied(&self) -> std::ops::Range<usize> {
        let first = self.0.iter().position(|&c| c > 0);
        let last = self.0.iter().rposition(|&c| c > 0);
        match (first, last) {
            (Some(a), Some(b)) => a..b + 1,
            _ => 0..0,
        }
    }
}

/// `h` serialised with the V2+deflate encoding, base64 (standard alphabet).
pub fn encode(h: &Histogram<u64>) -> String {
    let mut bytes = Vec::new();
    V2DeflateSerializer::new()
        .serialize(h, &mut bytes)
        .expect("serialising to memory cannot fail");
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Formats microseconds for people: `850us`, `12.3ms`, `1.20s`.
pub fn fmt_us(us: u64) -> String {
    match us {
        0..=999 => format!("{us}us"),
        1_000..=999_999 => format!("{:.1}ms", us as f64 / 1e3),
        _ => format!("{:.2}s", us as f64 / 1e6),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hdrhistogram::serialization::Deserializer;

    #[test]
    fn percentiles_and_round_trip() {
        let mut h = latency();
        for v in 1..=1000 {
            h.record(v).unwrap();
        }
        h.saturating_record(u64::MAX);
        let p = Percentiles::of(&h);
        assert_eq!(p.count, 1001);
        assert_eq!(p.p50, 501);
        assert!(p.max >= MAX_US - MAX_US / 1000);
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(encode(&h))
            .unwrap();
        let back: Histogram<u64> = Deserializer::new()
            .deserialize(&mut bytes.as_slice())
            .unwrap();
        assert_eq!(back, h);
    }

    #[test]
    fn distribution_buckets_by_powers_of_two() {
        let mut h = latency();
        for v in [1, 3, 3, 1000, 1023, 1024, 70_000_000] {
            h.saturating_record(v);
        }
        let d = Distribution::of(&h);
        assert_eq!(d.0[0], 1); // 1 us
        assert_eq!(d.0[1], 2); // 2..4 us
        assert_eq!(d.0[9], 2); // 512..1024 us (1023 within 3 significant digits)
        assert_eq!(d.0[10], 1); // 1024 us
        assert_eq!(d.0[25], 1); // saturated at 60 s
        assert_eq!(d.0.iter().sum::<u64>(), 7);
        assert_eq!(d.occupied(), 0..26);
        assert_eq!(Distribution::default().occupied(), 0..0);
    }

    #[test]
    fn human_units() {
        assert_eq!(fmt_us(850), "850us");
        assert_eq!(fmt_us(12_340), "12.3ms");
        assert_eq!(fmt_us(1_200_000), "1.20s");
    }
}
