//! HdrHistogram interval logs: one `<metric>.hlog` per latency metric, one interval per second,
//! in the standard format (HistogramLogAnalyzer, HdrHistogram's `HistogramLogReader`, the
//! hdrhistogram crate's `IntervalLogIterator`).
//!
//! Why: the report's cumulative histograms say how bad; the logs say when. Values are
//! microseconds; `MaxValueDivisor` 1000 makes the per-interval max column read in milliseconds.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use hdrhistogram::serialization::interval_log::{IntervalLogWriterBuilder, IntervalLogWriterError};
use hdrhistogram::serialization::{Deserializer, V2DeflateSerializer};
use hdrhistogram::Histogram;

use crate::stats::intervals::{Intervals, NAMES};

/// What each log holds, for its header comment.
const WHAT: [&str; NAMES.len()] = [
    "connect latency (TCP connect start -> CONNACK)",
    "ack latency (PUBLISH written -> PUBACK/PUBCOMP)",
    "end-to-end latency, corrected (intended send time -> received)",
    "end-to-end latency, uncorrected (actual send time -> received)",
    "ack latency, corrected (intended send time -> PUBACK/PUBCOMP)",
];

/// Writes `<dir>/<metric>.hlog` for connect latency and for every message metric that has
/// samples; returns the files written.
pub fn write(dir: &Path, intervals: &Intervals, run: &str) -> std::io::Result<Vec<PathBuf>> {
    let mut written = Vec::new();
    for (m, name) in NAMES.iter().enumerate() {
        if m > 0 && !intervals.has_samples(m) {
            continue;
        }
        let path = dir.join(format!("{name}.hlog"));
        let mut buf = Vec::new();
        let mut serializer = V2DeflateSerializer::new();
        let mut log = IntervalLogWriterBuilder::new()
            .add_comment(&format!(
                "thingswarm {} {run}: {}",
                env!("CARGO_PKG_VERSION"),
                WHAT[m]
            ))
            .add_comment("values in microseconds; one interval per second")
            .with_start_time(intervals.base)
            .with_base_time(intervals.base)
            .with_max_value_divisor(1000.0)
            .begin_log_with(&mut buf, &mut serializer)?;
        for iv in &intervals.series[m] {
            let h: Histogram<u64> = Deserializer::new()
                .deserialize(&mut iv.encoded.as_slice())
                .map_err(|e| std::io::Error::other(format!("{e:?}")))?;
            log.write_histogram(&h, iv.start, iv.length, None)
                .map_err(|e| match e {
                    IntervalLogWriterError::IoError(e) => e,
                    IntervalLogWriterError::SerializeError(e) => {
                        std::io::Error::other(format!("{e:?}"))
                    }
                })?;
        }
        drop(log);
        let mut f = std::fs::File::create(&path)?;
        f.write_all(&buf)?;
        written.push(path);
    }
    Ok(written)
}
