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
    fn human_units() {
        assert_eq!(fmt_us(850), "850us");
        assert_eq!(fmt_us(12_340), "12.3ms");
        assert_eq!(fmt_us(1_200_000), "1.20s");
    }
}
