//! Shadow figures: counters per group (atomics) and latency histograms (sharded, batched).
//!
//! Why separate from [`crate::stats`]: shadow flows are request/response, not the
//! publisher/subscriber traffic those figures describe, and a run without shadow groups pays
//! nothing for them. Devices record like the message path does: counters with relaxed
//! atomics, latencies into a per-device batch moved into a shard under its lock at most every
//! quarter second, so nothing is locked or allocated per message.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use super::shadow::Op;
use crate::report::HistogramReport;

/// The latencies a shadow flow measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShadowMetric {
    /// `update` written -> `update/accepted` with its client token.
    Update = 0,
    /// `get` written -> `get/accepted`.
    Get = 1,
    /// `delete` written -> `delete/accepted`.
    Delete = 2,
    /// A `desired` write -> its `update/delta` at the device.
    Delta = 3,
    /// A `desired` write -> `update/accepted` of the device's report applying it.
    DeltaRoundTrip = 4,
}

const METRICS: usize = 5;

/// The rejection codes AWS IoT documents for shadows, counted one by one; others together.
pub const CODES: [u16; 10] = [400, 401, 403, 404, 409, 413, 415, 429, 500, 503];

/// One group's shadow counters.
#[derive(Debug, Default)]
pub struct ShadowCounters {
    /// Requests written, by [`Op`] (update, get, delete).
    pub requests: [AtomicU64; 3],
    /// Accepted answers matched to a request, by [`Op`].
    pub accepted: [AtomicU64; 3],
    /// Rejections by code ([`CODES`] order, then "other").
    pub rejected: [AtomicU64; CODES.len() + 1],
    /// 404s answering the GET right after subscribing: a shadow that does not exist yet.
    pub not_found_at_start: AtomicU64,
    /// `update/delta` messages received.
    pub deltas: AtomicU64,
    /// Reports that applied a delta.
    pub delta_reports: AtomicU64,
    /// Accepted versions lower than (updates: not higher than) one seen before.
    pub version_regressions: AtomicU64,
    /// Requests with no answer within the response timeout.
    pub unanswered: AtomicU64,
    /// Scheduled updates merged into the next because a request was still in flight.
    pub coalesced: AtomicU64,
    /// Requests in flight now (the drain waits for them).
    pub in_flight: AtomicU64,
}

/// Index of an operation in the per-op arrays.
pub fn op_index(op: Op) -> usize {
    match op {
        Op::Update => 0,
        Op::Get => 1,
        Op::Delete => 2,
    }
}

type Shard = Mutex<[Histogram<u64>; METRICS]>;

/// Shadow figures of a run: one [`ShadowCounters`] per group (every group, used or not, so
/// indices match the plan) and, for shadow groups only, sharded histograms.
pub struct ShadowStats {
    groups: Box<[ShadowCounters]>,
    shards: Box<[Box<[Shard]>]>,
}

impl ShadowStats {
    /// Figures for groups whose `shadow[g]` says whether they run shadow flows (only those
    /// get histograms: ~0.7 MB per shard).
    pub fn new(shadow: &[bool]) -> ShadowStats {
        let n = std::thread::available_parallelism().map_or(2, |n| n.get()) * 2;
        ShadowStats {
            groups: shadow.iter().map(|_| ShadowCounters::default()).collect(),
            shards: shadow
                .iter()
                .map(|&on| {
                    (0..if on { n } else { 0 })
                        .map(|_| {
                            Mutex::new(std::array::from_fn(|_| crate::stats::histogram::latency()))
                        })
                        .collect()
                })
                .collect(),
        }
    }

    /// Group `g`'s counters.
    pub fn group(&self, g: usize) -> &ShadowCounters {
        &self.groups[g]
    }

    /// Counts a rejection with `code`.
    pub fn rejected(&self, g: usize, code: u16) {
        let i = CODES.iter().position(|&c| c == code).unwrap_or(CODES.len());
        self.groups[g].rejected[i].fetch_add(1, Relaxed);
    }

    /// Requests in flight over every group.
    pub fn in_flight(&self) -> u64 {
        self.groups.iter().map(|c| c.in_flight.load(Relaxed)).sum()
    }

    fn merged(&self, g: usize, metric: ShadowMetric) -> Histogram<u64> {
        let mut h = crate::stats::histogram::latency();
        for shard in self.shards[g].iter() {
            let s = shard.lock().expect("shadow histogram lock");
            let _ = h.add(&s[metric as usize]);
        }
        h
    }

    /// The report of group `g` (`name`) showing shadow `shadow`.
    pub fn report(&self, g: usize, name: &str, shadow: &str) -> ShadowGroupReport {
        let c = &self.groups[g];
        let by_op = |a: &[AtomicU64; 3]| OpCounts {
            update: a[0].load(Relaxed),
            get: a[1].load(Relaxed),
            delete: a[2].load(Relaxed),
        };
        let mut rejected = BTreeMap::new();
        for (i, n) in c.rejected.iter().enumerate() {
            let n = n.load(Relaxed);
            if n > 0 {
                let code = CODES.get(i).map_or("other".to_string(), u16::to_string);
                rejected.insert(code, n);
            }
        }
        let expected = c.not_found_at_start.load(Relaxed);
        let all: u64 = rejected.values().sum();
        let h = |m| HistogramReport::of(&self.merged(g, m));
        ShadowGroupReport {
            group: name.to_string(),
            shadow: shadow.to_string(),
            requests: by_op(&c.requests),
            accepted: by_op(&c.accepted),
            rejected,
            unexpected_rejects: all.saturating_sub(expected),
            not_found_at_start: expected,
            deltas: c.deltas.load(Relaxed),
            delta_reports: c.delta_reports.load(Relaxed),
            version_regressions: c.version_regressions.load(Relaxed),
            unanswered: c.unanswered.load(Relaxed),
            coalesced: c.coalesced.load(Relaxed),
            update_latency_us: h(ShadowMetric::Update),
            get_latency_us: h(ShadowMetric::Get),
            delete_latency_us: h(ShadowMetric::Delete),
            delta_latency_us: h(ShadowMetric::Delta),
            delta_round_trip_us: h(ShadowMetric::DeltaRoundTrip),
        }
    }
}

/// A device's latency samples, batched (capacity allocated once per device).
pub struct ShadowSamples {
    buf: Vec<(ShadowMetric, u64)>,
    group: usize,
    shard: usize,
    flushed: Instant,
}

impl ShadowSamples {
    const CAPACITY: usize = 32;

    /// An empty batch for device `index` of group `group`.
    pub fn new(group: usize, index: usize) -> ShadowSamples {
        ShadowSamples {
            buf: Vec::with_capacity(Self::CAPACITY),
            group,
            shard: index,
            flushed: Instant::now(),
        }
    }

    /// Records one latency.
    pub fn record(&mut self, stats: &ShadowStats, metric: ShadowMetric, latency: Duration) {
        self.buf.push((metric, latency.as_micros() as u64));
        let now = Instant::now();
        if self.buf.len() == Self::CAPACITY || now - self.flushed >= Duration::from_millis(250) {
            self.flush(stats);
        }
    }

    /// Moves the batch into its shard.
    pub fn flush(&mut self, stats: &ShadowStats) {
        self.flushed = Instant::now();
        if self.buf.is_empty() {
            return;
        }
        let shards = &stats.shards[self.group];
        if shards.is_empty() {
            self.buf.clear();
            return;
        }
        let mut h = shards[self.shard % shards.len()]
            .lock()
            .expect("shadow histogram lock");
        for (m, us) in self.buf.drain(..) {
            h[m as usize].saturating_record(us);
        }
    }
}

/// Requests per operation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpCounts {
    /// `update`.
    pub update: u64,
    /// `get`.
    pub get: u64,
    /// `delete`.
    pub delete: u64,
}

/// Puts the same shadow group's figures from several shards of one run together: counts and
/// rejections add, histograms merge from their HDR encoding.
pub fn merge_group(parts: &[&ShadowGroupReport]) -> Result<ShadowGroupReport, String> {
    let Some(first) = parts.first() else {
        return Err("no shard figures to merge".into());
    };
    let mut m = (*first).clone();
    let hist = |pick: fn(&ShadowGroupReport) -> &HistogramReport| {
        crate::report::merge::sum_histograms(parts.iter().map(|p| pick(p)))
    };
    m.update_latency_us = hist(|p| &p.update_latency_us)?;
    m.get_latency_us = hist(|p| &p.get_latency_us)?;
    m.delete_latency_us = hist(|p| &p.delete_latency_us)?;
    m.delta_latency_us = hist(|p| &p.delta_latency_us)?;
    m.delta_round_trip_us = hist(|p| &p.delta_round_trip_us)?;
    let sum = |f: fn(&ShadowGroupReport) -> u64| parts.iter().map(|p| f(p)).sum::<u64>();
    m.requests = OpCounts {
        update: sum(|p| p.requests.update),
        get: sum(|p| p.requests.get),
        delete: sum(|p| p.requests.delete),
    };
    m.accepted = OpCounts {
        update: sum(|p| p.accepted.update),
        get: sum(|p| p.accepted.get),
        delete: sum(|p| p.accepted.delete),
    };
    m.unexpected_rejects = sum(|p| p.unexpected_rejects);
    m.not_found_at_start = sum(|p| p.not_found_at_start);
    m.deltas = sum(|p| p.deltas);
    m.delta_reports = sum(|p| p.delta_reports);
    m.version_regressions = sum(|p| p.version_regressions);
    m.unanswered = sum(|p| p.unanswered);
    m.coalesced = sum(|p| p.coalesced);
    m.rejected = BTreeMap::new();
    for p in parts {
        for (code, n) in &p.rejected {
            *m.rejected.entry(code.clone()).or_default() += n;
        }
    }
    Ok(m)
}

/// One shadow group's figures in the report.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ShadowGroupReport {
    /// The group.
    pub group: String,
    /// `classic` or the named shadow.
    pub shadow: String,
    /// Requests written.
    pub requests: OpCounts,
    /// Accepted answers matched to a request.
    pub accepted: OpCounts,
    /// Rejections by code (`"409"`, ..., `"other"`).
    pub rejected: BTreeMap<String, u64>,
    /// Rejections other than the 404 of the first GET of a shadow that did not exist yet.
    pub unexpected_rejects: u64,
    /// 404s of the first GET (expected for a new shadow).
    pub not_found_at_start: u64,
    /// `update/delta` messages received.
    pub deltas: u64,
    /// Reports applying a delta.
    pub delta_reports: u64,
    /// Accepted versions that went backwards.
    pub version_regressions: u64,
    /// Requests never answered within the response timeout.
    pub unanswered: u64,
    /// Scheduled updates merged into a later one (a request was still in flight).
    pub coalesced: u64,
    /// `update` -> `update/accepted`.
    pub update_latency_us: HistogramReport,
    /// `get` -> `get/accepted`.
    pub get_latency_us: HistogramReport,
    /// `delete` -> `delete/accepted`.
    pub delete_latency_us: HistogramReport,
    /// `desired` write -> `update/delta` at the device.
    pub delta_latency_us: HistogramReport,
    /// `desired` write -> `update/accepted` of the report applying the delta.
    pub delta_round_trip_us: HistogramReport,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part(n: u64) -> ShadowGroupReport {
        let mut h = crate::stats::histogram::latency();
        for v in 1..=n {
            h.record(v * 100).unwrap();
        }
        let empty = HistogramReport::of(&crate::stats::histogram::latency());
        ShadowGroupReport {
            group: "g".into(),
            shadow: "classic".into(),
            requests: OpCounts {
                update: n,
                get: 1,
                delete: 0,
            },
            accepted: OpCounts {
                update: n - 1,
                get: 1,
                delete: 0,
            },
            rejected: BTreeMap::from([("409".to_string(), 1), (format!("{n}"), n)]),
            unexpected_rejects: 1,
            not_found_at_start: 1,
            deltas: n,
            delta_reports: n,
            version_regressions: 0,
            unanswered: 0,
            coalesced: n,
            update_latency_us: HistogramReport::of(&h),
            get_latency_us: empty.clone(),
            delete_latency_us: empty.clone(),
            delta_latency_us: empty.clone(),
            delta_round_trip_us: empty,
        }
    }

    #[test]
    fn shard_figures_add_up() {
        let (a, b) = (part(10), part(30));
        let m = merge_group(&[&a, &b]).unwrap();
        assert_eq!(m.requests.update, 40);
        assert_eq!(m.accepted.update, 38);
        assert_eq!(m.requests.get, 2);
        assert_eq!(m.coalesced, 40);
        assert_eq!(m.unexpected_rejects, 2);
        assert_eq!(m.rejected["409"], 2);
        assert_eq!((m.rejected["10"], m.rejected["30"]), (10, 30));
        assert_eq!(m.update_latency_us.percentiles.count, 40);
        assert!((2990..=3010).contains(&m.update_latency_us.percentiles.max));
        assert_eq!(m.get_latency_us.percentiles.count, 0);
    }
}
