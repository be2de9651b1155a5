//! Fleet provisioning figures: counters per group (atomics) and latency histograms.
//!
//! Why separate from the shadow figures: provisioning is a once-per-device flow, not a
//! schedule of requests; a run without provisioning groups pays nothing for it. A device
//! records its few latencies once, at the end of its flow, under one lock per device (never
//! per message).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::report::HistogramReport;

/// The latencies a provisioning flow measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProvisionMetric {
    /// Create request written -> `.../accepted` (key and certificate, or the CSR's certificate).
    Create = 0,
    /// `RegisterThing` written -> `.../accepted`.
    Register = 1,
    /// Claim connect started -> CONNACK with the device's own certificate.
    Total = 2,
    /// Connect (TCP + TLS + CONNACK) with the device's own certificate.
    OwnConnect = 3,
}

const METRICS: usize = 4;

/// One provisioning group's histograms, by [`ProvisionMetric`].
type Histograms = Mutex<[Histogram<u64>; METRICS]>;

/// One group's provisioning counters.
#[derive(Debug, Default)]
pub struct ProvisionCounters {
    /// Devices that connected with the claim certificate and began the flow.
    pub started: AtomicU64,
    /// Create requests accepted.
    pub created: AtomicU64,
    /// `RegisterThing` requests accepted.
    pub registered: AtomicU64,
    /// Devices connected with their own certificate: provisioned end to end.
    pub provisioned: AtomicU64,
    /// Requests with no answer within the response timeout.
    pub timeouts: AtomicU64,
    /// Connects with the new certificate that failed.
    pub own_connect_failed: AtomicU64,
    /// Connects with the new certificate retried after "server unavailable" (the broker was
    /// still closing the claim session under the same client ID).
    pub own_connect_retries: AtomicU64,
    /// Claim sessions lost before the flow finished.
    pub session_lost: AtomicU64,
    /// Answers that could not be read (not the documented shape).
    pub unreadable: AtomicU64,
    /// First flow start and last provisioned, µs after the stats epoch (0: none).
    first_start_us: AtomicU64,
    last_done_us: AtomicU64,
}

/// Provisioning figures of a run: one [`ProvisionCounters`] per group (indices match the
/// plan) and, for provisioning groups only, histograms and rejections by error code.
pub struct ProvisionStats {
    epoch: Instant,
    groups: Box<[ProvisionCounters]>,
    histograms: Box<[Option<Histograms>]>,
    rejected: Box<[Mutex<BTreeMap<String, u64>>]>,
}

impl ProvisionStats {
    /// Figures for groups whose `provision[g]` says whether they provision.
    pub fn new(provision: &[bool]) -> ProvisionStats {
        ProvisionStats {
            epoch: Instant::now(),
            groups: provision
                .iter()
                .map(|_| ProvisionCounters::default())
                .collect(),
            histograms: provision
                .iter()
                .map(|&on| {
                    on.then(|| {
                        Mutex::new(std::array::from_fn(|_| crate::stats::histogram::latency()))
                    })
                })
                .collect(),
            rejected: provision.iter().map(|_| Mutex::default()).collect(),
        }
    }

    /// Group `g`'s counters.
    pub fn group(&self, g: usize) -> &ProvisionCounters {
        &self.groups[g]
    }

    /// A device of group `g` began its flow at `at`.
    pub fn started(&self, g: usize, at: Instant) {
        let c = &self.groups[g];
        c.started.fetch_add(1, Relaxed);
        let us = self.since_epoch(at);
        let _ = c
            .first_start_us
            .fetch_update(Relaxed, Relaxed, |v| (v == 0 || us < v).then_some(us));
    }

    /// A device of group `g` connected with its own certificate at `at`, with its latencies.
    pub fn provisioned(&self, g: usize, at: Instant, latencies: &[(ProvisionMetric, Duration)]) {
        let c = &self.groups[g];
        c.provisioned.fetch_add(1, Relaxed);
        c.last_done_us.fetch_max(self.since_epoch(at), Relaxed);
        self.record(g, latencies);
    }

    /// Records latencies of a device that did not finish (a create that was accepted, say).
    pub fn record(&self, g: usize, latencies: &[(ProvisionMetric, Duration)]) {
        if let Some(h) = &self.histograms[g] {
            let mut h = h.lock().expect("provisioning histogram lock");
            for (m, d) in latencies {
                h[*m as usize].saturating_record(d.as_micros() as u64);
            }
        }
    }

    /// Counts a rejection with AWS error code `code` (once per rejected request).
    pub fn rejected(&self, g: usize, code: &str) {
        let mut r = self.rejected[g].lock().expect("rejection lock");
        match r.get_mut(code) {
            Some(n) => *n += 1,
            None => {
                r.insert(code.to_string(), 1);
            }
        }
    }

    fn since_epoch(&self, at: Instant) -> u64 {
        (at.saturating_duration_since(self.epoch).as_micros() as u64).max(1)
    }

    /// The report of group `g` (`name`, provisioning with `template` in `mode`).
    pub fn report(&self, g: usize, name: &str, template: &str, mode: &str) -> ProvisionGroupReport {
        let c = &self.groups[g];
        let n = |a: &AtomicU64| a.load(Relaxed);
        let provisioned = n(&c.provisioned);
        let (first, last) = (n(&c.first_start_us), n(&c.last_done_us));
        let window_s = if provisioned > 0 && last > first {
            (last - first) as f64 / 1e6
        } else {
            0.0
        };
        let h = |m: ProvisionMetric| match &self.histograms[g] {
            Some(h) => {
                HistogramReport::of(&h.lock().expect("provisioning histogram lock")[m as usize])
            }
            None => HistogramReport::of(&crate::stats::histogram::latency()),
        };
        ProvisionGroupReport {
            group: name.to_string(),
            template: template.to_string(),
            mode: mode.to_string(),
            started: n(&c.started),
            created: n(&c.created),
            registered: n(&c.registered),
            provisioned,
            rejected: self.rejected[g].lock().expect("rejection lock").clone(),
            timeouts: n(&c.timeouts),
            own_connect_failed: n(&c.own_connect_failed),
            own_connect_retries: n(&c.own_connect_retries),
            session_lost: n(&c.session_lost),
            unreadable: n(&c.unreadable),
            window_s,
            provisioned_per_s: if window_s > 0.0 {
                provisioned as f64 / window_s
            } else {
                0.0
            },
            create_latency_us: h(ProvisionMetric::Create),
            register_latency_us: h(ProvisionMetric::Register),
            total_latency_us: h(ProvisionMetric::Total),
            own_connect_latency_us: h(ProvisionMetric::OwnConnect),
        }
    }
}

/// One provisioning group's figures in the report.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ProvisionGroupReport {
    /// The group.
    pub group: String,
    /// The provisioning template registered with.
    pub template: String,
    /// `keys` (CreateKeysAndCertificate) or `csr` (CreateCertificateFromCsr).
    pub mode: String,
    /// Devices that connected with the claim certificate and began.
    pub started: u64,
    /// Create requests accepted.
    pub created: u64,
    /// `RegisterThing` requests accepted.
    pub registered: u64,
    /// Devices connected with their own certificate.
    pub provisioned: u64,
    /// Rejections by AWS error code.
    pub rejected: BTreeMap<String, u64>,
    /// Requests unanswered within the response timeout.
    pub timeouts: u64,
    /// Connects with the new certificate that failed.
    pub own_connect_failed: u64,
    /// Connects with the new certificate retried after "server unavailable".
    pub own_connect_retries: u64,
    /// Claim sessions lost mid-flow.
    pub session_lost: u64,
    /// Answers not in the documented shape.
    pub unreadable: u64,
    /// First flow start -> last device provisioned, seconds.
    pub window_s: f64,
    /// `provisioned / window_s`.
    pub provisioned_per_s: f64,
    /// Create request -> accepted.
    pub create_latency_us: HistogramReport,
    /// `RegisterThing` -> accepted.
    pub register_latency_us: HistogramReport,
    /// Claim connect start -> connected with the device's own certificate.
    pub total_latency_us: HistogramReport,
    /// The connect with the device's own certificate alone.
    pub own_connect_latency_us: HistogramReport,
}

/// Puts the same provisioning group's figures from several shards of one run together:
/// counts and rejections add, histograms merge (from their HDR encoding), and throughput is
/// all devices provisioned over the longest shard window (shards run concurrently).
pub fn merge_group(parts: &[&ProvisionGroupReport]) -> Result<ProvisionGroupReport, String> {
    let Some(first) = parts.first() else {
        return Err("no shard figures to merge".into());
    };
    let mut m = (*first).clone();
    let hist = |pick: fn(&ProvisionGroupReport) -> &HistogramReport| {
        crate::report::merge::sum_histograms(parts.iter().map(|p| pick(p)))
    };
    m.create_latency_us = hist(|p| &p.create_latency_us)?;
    m.register_latency_us = hist(|p| &p.register_latency_us)?;
    m.total_latency_us = hist(|p| &p.total_latency_us)?;
    m.own_connect_latency_us = hist(|p| &p.own_connect_latency_us)?;
    let sum = |f: fn(&ProvisionGroupReport) -> u64| parts.iter().map(|p| f(p)).sum::<u64>();
    m.started = sum(|p| p.started);
    m.created = sum(|p| p.created);
    m.registered = sum(|p| p.registered);
    m.provisioned = sum(|p| p.provisioned);
    m.timeouts = sum(|p| p.timeouts);
    m.own_connect_failed = sum(|p| p.own_connect_failed);
    m.own_connect_retries = sum(|p| p.own_connect_retries);
    m.session_lost = sum(|p| p.session_lost);
    m.unreadable = sum(|p| p.unreadable);
    m.rejected = BTreeMap::new();
    for p in parts {
        for (code, n) in &p.rejected {
            *m.rejected.entry(code.clone()).or_default() += n;
        }
    }
    m.window_s = parts.iter().map(|p| p.window_s).fold(0.0, f64::max);
    m.provisioned_per_s = if m.window_s > 0.0 {
        m.provisioned as f64 / m.window_s
    } else {
        0.0
    };
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throughput_spans_first_start_to_last_provisioned() {
        let s = ProvisionStats::new(&[false, true]);
        let t0 = s.epoch + Duration::from_millis(100);
        s.started(1, t0);
        s.started(1, t0 + Duration::from_millis(10));
        s.provisioned(
            1,
            t0 + Duration::from_millis(500),
            &[(ProvisionMetric::Total, Duration::from_millis(400))],
        );
        s.provisioned(
            1,
            t0 + Duration::from_millis(1000),
            &[(ProvisionMetric::Total, Duration::from_millis(990))],
        );
        s.rejected(1, "InvalidParameters");
        s.rejected(1, "InvalidParameters");
        let r = s.report(1, "g", "t", "keys");
        assert_eq!((r.started, r.provisioned), (2, 2));
        assert!((r.window_s - 1.0).abs() < 1e-6, "{}", r.window_s);
        assert!((r.provisioned_per_s - 2.0).abs() < 1e-6);
        assert_eq!(r.rejected["InvalidParameters"], 2);
        assert_eq!(r.total_latency_us.percentiles.count, 2);
        let merged = merge_group(&[&r, &r]).unwrap();
        assert_eq!((merged.started, merged.provisioned), (4, 4));
        assert_eq!(merged.rejected["InvalidParameters"], 4);
        assert_eq!(merged.total_latency_us.percentiles.count, 4);
        assert!((merged.provisioned_per_s - 4.0).abs() < 1e-6);
        let none = s.report(0, "other", "t", "keys");
        assert_eq!((none.provisioned, none.provisioned_per_s), (0, 0.0));
    }
}
