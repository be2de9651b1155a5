//! `thingswarm merge`: shard reports (`run --shard i/N`) combined into one report, losslessly
//! where the shards carry what it takes.
//!
//! - Latency histograms (connect, the four message metrics in both windows, time to recover
//!   per group) are decoded from their V2+deflate encodings and *added*: merged percentiles
//!   are exactly those of one histogram holding every shard's samples.
//! - Counters (per group and totals, traffic counts, sequence and loss figures, errors by
//!   class) are summed; rates are recomputed from the summed counts over the traffic window.
//! - Timelines are aligned on run-relative seconds: each shard's once-per-second point and its
//!   per-second interval histograms (the `<metric>.hlog` files beside its report.json) are
//!   keyed by the second they end on (rounded), summed (gauges, rates) and added (interval
//!   histograms, from which the merged point's percentiles and the merged `.hlog` files come).
//! - Events and faults are concatenated in time order; expectations come from the shard that
//!   ran them (shard 0); SLOs are re-evaluated on the merged report.
//! - A missing shard is refused unless the caller allows it; then the report says which
//!   shards are missing and counts as partial (`interrupted`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine as _;
use hdrhistogram::serialization::interval_log::{IntervalLogIterator, LogEntry};
use hdrhistogram::serialization::{Deserializer, Serializer as _, V2DeflateSerializer};
use hdrhistogram::Histogram;

use super::{GroupReport, HistogramReport, Report, TrafficFigures, TrafficReport};
use crate::fleet::protocol::GroupProtocolReport;
use crate::shard::MergeInfo;
use crate::stats::histogram::{self, Percentiles};
use crate::stats::intervals::{Interval, Intervals, NAMES};
use crate::stats::sequence::LossLedger;
use crate::stats::{Counts, ErrorRow, IntervalPercentiles, TimelinePoint};

/// Shard reports that cannot be merged (bad input: exit code 2).
#[derive(Debug, thiserror::Error)]
pub enum MergeError {
    /// Nothing to merge.
    #[error("no shard reports given (expected one results directory per shard)")]
    Empty,
    /// A report without shard information.
    #[error("{0}: not a shard report (expected the output of `thingswarm run --shard i/N`)")]
    NotAShard(PathBuf),
    /// Reports of different scenarios.
    #[error("{path}: scenario {found:?} differs from {first:?} in {first_path} (expected every shard to run the same scenario file)")]
    Scenario {
        /// The report that differs.
        path: PathBuf,
        /// Its scenario (name, and `text changed` when only the text differs).
        found: String,
        /// The first report's scenario.
        first: String,
        /// The first report.
        first_path: PathBuf,
    },
    /// Reports of different shard counts.
    #[error("{path}: shard {found} but {first_path} is shard {first} (expected one shard count)")]
    Count {
        /// The report that differs.
        path: PathBuf,
        /// Its `i/N`.
        found: String,
        /// The first report.
        first_path: PathBuf,
        /// The first report's `i/N`.
        first: String,
    },
    /// The same shard twice.
    #[error("shard {shard} given twice: {a} and {b} (expected each shard once)")]
    Overlap {
        /// `i/N`.
        shard: String,
        /// One report.
        a: PathBuf,
        /// The other.
        b: PathBuf,
    },
    /// Shards missing (and the caller did not allow it).
    #[error("shards {missing} of {count} missing (expected all of 0..{count}; pass --allow-missing to merge the rest into a partial report)")]
    Missing {
        /// The missing indices, comma-separated.
        missing: String,
        /// Shard count.
        count: u32,
    },
    /// Reports whose groups differ.
    #[error("{path}: groups {found:?} differ from {first:?} (expected the same scenario)")]
    Groups {
        /// The report.
        path: PathBuf,
        /// Its groups.
        found: Vec<String>,
        /// The first report's groups.
        first: Vec<String>,
    },
    /// An encoded histogram or interval log that does not decode.
    #[error("{path}: {what} does not decode: {why} (expected HdrHistogram V2+deflate, base64)")]
    Histogram {
        /// The report or log.
        path: PathBuf,
        /// Which histogram.
        what: String,
        /// The decoder's complaint.
        why: String,
    },
}

/// One shard's results: its directory and its report.
#[derive(Debug)]
pub struct ShardRun {
    /// The results directory (holds report.json and the `.hlog` files).
    pub dir: PathBuf,
    /// Its report.
    pub report: Report,
}

/// A merged report and its per-second interval histograms (for the `.hlog` files).
#[derive(Debug)]
pub struct Merged {
    /// The merged report (SLOs not yet evaluated: see [`crate::slo::evaluate`]).
    pub report: Report,
    /// Per-second interval histograms, aligned on run-relative seconds.
    pub intervals: Intervals,
    /// Warnings for the user (missing shards, shards without interval logs).
    pub warnings: Vec<String>,
}

/// Decodes a base64 V2(+deflate) histogram.
pub fn decode(encoded: &str) -> Result<Histogram<u64>, String> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .map_err(|e| e.to_string())?;
    Deserializer::new()
        .deserialize(&mut bytes.as_slice())
        .map_err(|e| format!("{e:?}"))
}

/// The histogram of every part's samples (parts without samples are skipped).
pub fn sum_histograms<'a>(
    parts: impl IntoIterator<Item = &'a HistogramReport>,
) -> Result<HistogramReport, String> {
    let mut h = histogram::latency();
    for part in parts {
        if !part.hdr.is_empty() {
            h.add(&decode(&part.hdr)?).map_err(|e| format!("{e:?}"))?;
        }
    }
    Ok(HistogramReport::of(&h))
}

/// Adds decoded histograms into one.
struct Adder<'a> {
    path: &'a Path,
}

impl Adder<'_> {
    fn add(&self, into: &mut Histogram<u64>, encoded: &str, what: &str) -> Result<(), MergeError> {
        if encoded.is_empty() {
            return Ok(());
        }
        let h = decode(encoded).map_err(|why| MergeError::Histogram {
            path: self.path.to_path_buf(),
            what: what.to_string(),
            why,
        })?;
        into.add(&h).map_err(|e| MergeError::Histogram {
            path: self.path.to_path_buf(),
            what: what.to_string(),
            why: format!("{e:?}"),
        })
    }
}

/// Checks that `shards` are the shards of one run, each once; returns the missing indices.
fn check(shards: &[ShardRun], allow_missing: bool) -> Result<(u32, Vec<u32>), MergeError> {
    let first = shards.first().ok_or(MergeError::Empty)?;
    let info = |s: &ShardRun| {
        s.report
            .shard
            .clone()
            .ok_or_else(|| MergeError::NotAShard(s.dir.clone()))
    };
    let count = info(first)?.count;
    let mut seen: BTreeMap<u32, &Path> = BTreeMap::new();
    let groups = |r: &Report| r.groups.iter().map(|g| g.name.clone()).collect::<Vec<_>>();
    for s in shards {
        let i = info(s)?;
        let (a, b) = (&first.report.scenario, &s.report.scenario);
        if a.name != b.name || a.text != b.text {
            return Err(MergeError::Scenario {
                path: s.dir.clone(),
                found: if a.name == b.name {
                    format!("{} (text changed)", b.name)
                } else {
                    b.name.clone()
                },
                first: a.name.clone(),
                first_path: first.dir.clone(),
            });
        }
        if i.count != count {
            return Err(MergeError::Count {
                path: s.dir.clone(),
                found: format!("{}/{}", i.index, i.count),
                first_path: first.dir.clone(),
                first: format!("{}/{count}", info(first)?.index),
            });
        }
        if groups(&s.report) != groups(&first.report) {
            return Err(MergeError::Groups {
                path: s.dir.clone(),
                found: groups(&s.report),
                first: groups(&first.report),
            });
        }
        if let Some(other) = seen.insert(i.index, &s.dir) {
            return Err(MergeError::Overlap {
                shard: format!("{}/{count}", i.index),
                a: other.to_path_buf(),
                b: s.dir.clone(),
            });
        }
    }
    let missing: Vec<u32> = (0..count).filter(|i| !seen.contains_key(i)).collect();
    if !missing.is_empty() && !allow_missing {
        return Err(MergeError::Missing {
            missing: list(&missing),
            count,
        });
    }
    Ok((count, missing))
}

fn list(v: &[u32]) -> String {
    v.iter().map(u32::to_string).collect::<Vec<_>>().join(", ")
}

/// Merges shard reports (see the module documentation). `allow_missing`: merge what is there
/// when shards are missing (a partial report) instead of refusing.
pub fn merge(shards: &[ShardRun], allow_missing: bool) -> Result<Merged, MergeError> {
    let (count, missing) = check(shards, allow_missing)?;
    let mut warnings = Vec::new();
    if !missing.is_empty() {
        warnings.push(format!(
            "shards {} of {count} missing: the merged report is partial",
            list(&missing)
        ));
    }
    let mut shards: Vec<&ShardRun> = shards.iter().collect();
    shards.sort_by_key(|s| s.report.shard.as_ref().map_or(0, |i| i.index));
    let first = &shards[0].report;
    let mut report = first.clone();

    // Counters.
    let mut devices = Counts::default();
    let mut planned = 0;
    for (g, group) in report.groups.iter_mut().enumerate() {
        let mut counts = Counts::default();
        let mut planned_g = 0;
        let mut recovery = histogram::latency();
        let mut has_hdr = false;
        for s in &shards {
            let Some(sg) = s.report.groups.get(g) else {
                continue;
            };
            counts += sg.counts;
            planned_g += sg.planned;
            if let Some(h) = &sg.time_to_recover_hdr {
                Adder { path: &s.dir }.add(
                    &mut recovery,
                    h,
                    &format!("groups[{g}].time_to_recover_hdr"),
                )?;
                has_hdr = true;
            }
            if group.tls.is_none() && sg.tls.is_some() {
                group.tls = sg.tls.clone();
                group.tls_probe_error = None;
            }
        }
        merge_group(group, counts, planned_g, has_hdr.then_some(&recovery));
        if let Some(p) = group.protocol_options.as_mut() {
            let others = shards.iter().skip(1);
            merge_protocol(
                p,
                others.filter_map(|s| s.report.groups.get(g)?.protocol_options.as_ref()),
            );
        }
        devices += counts;
        planned += planned_g;
    }
    report.devices = devices;
    report.planned_devices = planned;
    for (g, id) in report.identities.iter_mut().enumerate() {
        for s in &shards {
            if let Some(o) = s.report.identities.get(g) {
                id.reused = id.reused.max(o.reused);
                id.generated = id.generated.max(o.generated);
                id.generation_s = id.generation_s.max(o.generation_s);
            }
        }
    }
    report.interrupted = !missing.is_empty() || shards.iter().any(|s| s.report.interrupted);
    report.started_at = shards
        .iter()
        .map(|s| s.report.started_at.clone())
        .min()
        .unwrap_or_default();
    report.phases.ramp_s = max_of(&shards, |r| r.phases.ramp_s);
    report.phases.total_s = max_of(&shards, |r| r.phases.total_s);

    // Histograms.
    let mut connect = histogram::latency();
    for s in &shards {
        Adder { path: &s.dir }.add(
            &mut connect,
            &s.report.connect_latency_us.hdr,
            "connect_latency_us",
        )?;
    }
    report.connect_latency_us = HistogramReport::of(&connect);
    report.traffic = merge_traffic(&shards)?;
    settle_loss(&mut report, &shards);

    // Errors by class, events and faults in time order.
    let mut errors: BTreeMap<String, ErrorRow> = BTreeMap::new();
    for e in shards.iter().flat_map(|s| &s.report.errors) {
        errors
            .entry(e.class.clone())
            .and_modify(|row| row.count += e.count)
            .or_insert_with(|| e.clone());
    }
    report.errors = errors.into_values().collect();
    report.events = shards
        .iter()
        .flat_map(|s| s.report.events.iter().cloned())
        .collect();
    report.events.sort_by(|a, b| a.t.total_cmp(&b.t));
    report.faults = shards
        .iter()
        .flat_map(|s| s.report.faults.iter().cloned())
        .collect();
    report.faults.sort_by(|a, b| a.t.total_cmp(&b.t));
    report.expectations = shards.iter().find_map(|s| s.report.expectations.clone());
    if let Some(aws) = report.aws.as_mut() {
        // Shadow and fleet provisioning figures of every shard.
        for group in aws.shadow.iter_mut() {
            let parts: Vec<&crate::aws::stats::ShadowGroupReport> = shards
                .iter()
                .filter_map(|s| s.report.aws.as_ref())
                .flat_map(|a| a.shadow.iter().filter(|p| p.group == group.group))
                .collect();
            *group =
                crate::aws::stats::merge_group(&parts).map_err(|why| MergeError::Histogram {
                    path: shards[0].dir.clone(),
                    what: format!("aws.shadow {}", group.group),
                    why,
                })?;
        }
        for group in aws.provisioning.iter_mut() {
            let parts: Vec<&crate::aws::provision_stats::ProvisionGroupReport> = shards
                .iter()
                .filter_map(|s| s.report.aws.as_ref())
                .flat_map(|a| a.provisioning.iter().filter(|p| p.group == group.group))
                .collect();
            *group = crate::aws::provision_stats::merge_group(&parts).map_err(|why| {
                MergeError::Histogram {
                    path: shards[0].dir.clone(),
                    what: format!("aws.provisioning {}", group.group),
                    why,
                }
            })?;
        }
    }

    // Client usage: every process's CPU, and the sum of their peaks.
    let c = &mut report.client;
    c.cpu_s = shards.iter().map(|s| s.report.client.cpu_s).sum();
    c.max_rss_bytes = shards.iter().map(|s| s.report.client.max_rss_bytes).sum();
    c.includes_embedded_broker = shards
        .iter()
        .any(|s| s.report.client.includes_embedded_broker);
    c.cpu_ms_per_connect = if devices.connects > 0 {
        c.cpu_s * 1e3 / devices.connects as f64
    } else {
        0.0
    };
    c.cpu_us_per_message = if devices.sent + devices.delivered > 0 {
        c.cpu_s * 1e6 / (devices.sent + devices.delivered) as f64
    } else {
        0.0
    };

    // Timeline and interval logs, aligned on run-relative seconds.
    let mut raw = RawSeconds::default();
    for s in &shards {
        let found = read_hlogs(&s.dir, &mut raw)?;
        if !found {
            warnings.push(format!(
                "{}: no connect.hlog: its latency over time is missing from the merged timeline",
                s.dir.display()
            ));
        }
    }
    let per_second = fold_seconds(&raw)?;
    drop(raw);
    report.timeline = merge_timeline(&shards, &per_second);
    let base = shards
        .iter()
        .filter_map(|s| {
            time::OffsetDateTime::parse(
                &s.report.started_at,
                &time::format_description::well_known::Rfc3339,
            )
            .ok()
        })
        .min()
        .map_or(
            std::time::SystemTime::UNIX_EPOCH,
            std::time::SystemTime::from,
        );
    let intervals = to_intervals(base, per_second);

    report.definitions.remove("shard");
    report.definitions.insert("merge".into(), DEFINITION.into());
    report.shard = None;
    report.merged = Some(MergeInfo {
        count,
        shards: shards
            .iter()
            .filter_map(|s| s.report.shard.as_ref().map(|i| i.index))
            .collect(),
        missing,
    });
    report.slos = Vec::new();
    Ok(Merged {
        report,
        intervals,
        warnings,
    })
}

/// What a merged report's figures mean, stated in its `definitions`.
const DEFINITION: &str = "merged from shard reports: latency histograms added (percentiles exact over every shard's samples), counters summed, rates recomputed over the traffic window; timeline points and interval logs keyed by the run-relative second each shard's interval ended on and summed (gauges, rates) or added (latency); ramp_s and total_s are the longest shard's; client.cpu_s and client.max_rss_bytes are sums over the shard processes; sequence loss is settled across shards from each shard's ledger (shard.groups[].loss: subscribers, messages its publishers sent to each, distinct messages heard), exactly as one process would settle it, except that copies of a message at members of one shared subscription in different shards count as heard twice; per-group protocol figures are summed, offline drain percentiles are the highest over the shards (an upper bound)";

fn max_of(shards: &[&ShardRun], f: impl Fn(&Report) -> f64) -> f64 {
    shards.iter().map(|s| f(&s.report)).fold(0.0, f64::max)
}

fn merge_group(
    group: &mut GroupReport,
    counts: Counts,
    planned: u64,
    recovery: Option<&Histogram<u64>>,
) {
    group.counts = counts;
    group.planned = planned;
    if let Some(h) = recovery {
        group.time_to_recover_us = Percentiles::of(h);
        group.time_to_recover_hdr = Some(histogram::encode(h));
    }
}

/// Adds the other shards' protocol figures to the first shard's `p`. Offline drain
/// percentiles cannot be added: the highest of each over the shards is kept (an upper bound).
fn merge_protocol<'a>(
    p: &mut GroupProtocolReport,
    others: impl Iterator<Item = &'a GroupProtocolReport>,
) {
    for o in others {
        p.sequence += o.sequence;
        p.retained_received += o.retained_received;
        if let (Some(a), Some(b)) = (p.offline.as_mut(), o.offline.as_ref()) {
            a.periods += b.periods;
            a.returned_with_session += b.returned_with_session;
            a.returned_without_session += b.returned_without_session;
            a.return_failed += b.return_failed;
            a.queued_delivered += b.queued_delivered;
            a.drain_us = Percentiles::upper_bound(a.drain_us, b.drain_us);
        }
        for r in &o.broker_refused {
            match p.broker_refused.iter_mut().find(|m| m.what == r.what) {
                Some(m) => m.devices += r.devices,
                None => p.broker_refused.push(r.clone()),
            }
        }
    }
}

/// Settles loss across shards from their ledgers (a shard alone settles only against its own
/// publishers, so messages crossing shards would otherwise never count as lost). Reports
/// without ledgers keep the summed figures.
fn settle_loss(report: &mut Report, shards: &[&ShardRun]) {
    let Some(t) = report.traffic.as_mut() else {
        return;
    };
    let mut lost = None;
    for (g, group) in report.groups.iter_mut().enumerate() {
        let ledgers: Vec<LossLedger> = shards
            .iter()
            .filter_map(|s| s.report.shard.as_ref()?.groups.get(g)?.loss)
            .collect();
        if ledgers.is_empty() {
            continue;
        }
        let p = group.protocol_options.as_mut();
        let shared = p.as_ref().is_some_and(|p| p.share.is_some());
        let group_lost = LossLedger::settle(&ledgers, shared);
        if let Some(p) = p {
            p.sequence.lost = group_lost;
        }
        *lost.get_or_insert(0) += group_lost;
    }
    if let Some(lost) = lost {
        t.sequence.lost = lost;
        t.loss.not_delivered = lost;
        t.loss.acked_not_delivered_min = lost.saturating_sub(t.loss.sent_not_acked);
    }
}

fn merge_traffic(shards: &[&ShardRun]) -> Result<Option<TrafficReport>, MergeError> {
    let with: Vec<(&Path, &TrafficReport)> = shards
        .iter()
        .filter_map(|s| s.report.traffic.as_ref().map(|t| (s.dir.as_path(), t)))
        .collect();
    let Some((_, first)) = with.first() else {
        return Ok(None);
    };
    let mut t = (*first).clone();
    t.window_s = with.iter().map(|(_, t)| t.window_s).fold(0.0, f64::max);
    t.steady_window_s = with
        .iter()
        .map(|(_, t)| t.steady_window_s)
        .fold(0.0, f64::max);
    t.sequence = Default::default();
    t.loss = Default::default();
    for (_, o) in &with {
        t.sequence += o.sequence;
        t.loss.never_sent += o.loss.never_sent;
        t.loss.sent_not_acked += o.loss.sent_not_acked;
        t.loss.not_delivered += o.loss.not_delivered;
        t.loss.retransmitted += o.loss.retransmitted;
    }
    t.loss.acked_not_delivered_min = t.loss.not_delivered.saturating_sub(t.loss.sent_not_acked);
    let steady: Vec<(&Path, &TrafficFigures)> = with.iter().map(|(p, o)| (*p, &o.steady)).collect();
    let whole: Vec<(&Path, &TrafficFigures)> = with.iter().map(|(p, o)| (*p, &o.whole)).collect();
    t.steady = merge_figures(&steady, t.steady_window_s, "steady")?;
    t.whole = merge_figures(&whole, t.window_s, "whole")?;
    Ok(Some(t))
}

fn merge_figures(
    figures: &[(&Path, &TrafficFigures)],
    secs: f64,
    window: &str,
) -> Result<TrafficFigures, MergeError> {
    let mut sums = (0, 0, 0);
    let mut h: [Histogram<u64>; 4] = std::array::from_fn(|_| histogram::latency());
    for (path, f) in figures {
        sums.0 += f.sent;
        sums.1 += f.delivered;
        sums.2 += f.delivered_bytes;
        let add = Adder { path };
        add.add(
            &mut h[0],
            &f.ack_latency_us.hdr,
            &format!("traffic.{window}.ack_latency_us"),
        )?;
        add.add(
            &mut h[1],
            &f.ack_corrected_us.hdr,
            &format!("traffic.{window}.ack_corrected_us"),
        )?;
        add.add(
            &mut h[2],
            &f.e2e_corrected_us.hdr,
            &format!("traffic.{window}.e2e_corrected_us"),
        )?;
        add.add(
            &mut h[3],
            &f.e2e_uncorrected_us.hdr,
            &format!("traffic.{window}.e2e_uncorrected_us"),
        )?;
    }
    let per_s = |n: u64| if secs > 0.0 { n as f64 / secs } else { 0.0 };
    Ok(TrafficFigures {
        sent: sums.0,
        delivered: sums.1,
        delivered_bytes: sums.2,
        sent_per_s: per_s(sums.0),
        delivered_per_s: per_s(sums.1),
        delivered_bytes_per_s: per_s(sums.2),
        ack_latency_us: HistogramReport::of(&h[0]),
        ack_corrected_us: HistogramReport::of(&h[1]),
        e2e_corrected_us: HistogramReport::of(&h[2]),
        e2e_uncorrected_us: HistogramReport::of(&h[3]),
    })
}

/// The run-relative second a point or interval ending at `t` seconds belongs to.
fn second(t: f64) -> u64 {
    t.max(0.0).round() as u64
}

/// Every shard's interval histograms, still encoded (a few hundred bytes each: decoded, one
/// is ~139 KB, so an hour-long run is folded one second at a time), by metric and second.
#[derive(Default)]
struct RawSeconds {
    /// The `.hlog` files read, for errors.
    logs: Vec<PathBuf>,
    /// Per metric ([`NAMES`] order): second -> (index into `logs`, base64 histogram).
    seconds: [BTreeMap<u64, Vec<(usize, String)>>; NAMES.len()],
}

/// One merged second of one metric.
struct Second {
    percentiles: IntervalPercentiles,
    count: u64,
    encoded: Vec<u8>,
}

/// Collects `dir`'s `<metric>.hlog` intervals into `raw` (keyed by [`second`] of each
/// interval's end); whether `connect.hlog` was there.
fn read_hlogs(dir: &Path, raw: &mut RawSeconds) -> Result<bool, MergeError> {
    let mut found = false;
    for (m, name) in NAMES.iter().enumerate() {
        let path = dir.join(format!("{name}.hlog"));
        let Ok(bytes) = std::fs::read(&path) else {
            continue;
        };
        found |= m == 0;
        for entry in IntervalLogIterator::new(&bytes) {
            let entry = entry.map_err(|e| MergeError::Histogram {
                path: path.clone(),
                what: "an interval".into(),
                why: format!("{e:?}"),
            })?;
            let LogEntry::Interval(iv) = entry else {
                continue;
            };
            let end = (iv.start_timestamp() + iv.duration()).as_secs_f64();
            raw.seconds[m]
                .entry(second(end))
                .or_default()
                .push((raw.logs.len(), iv.encoded_histogram().to_string()));
        }
        raw.logs.push(path);
    }
    Ok(found)
}

/// Adds each second's histograms (one scratch histogram, reset per second) into its
/// percentiles and its encoding.
fn fold_seconds(raw: &RawSeconds) -> Result<[BTreeMap<u64, Second>; NAMES.len()], MergeError> {
    let mut out: [BTreeMap<u64, Second>; NAMES.len()] = Default::default();
    let mut scratch = histogram::latency();
    let mut serializer = V2DeflateSerializer::new();
    for (m, seconds) in raw.seconds.iter().enumerate() {
        for (&k, parts) in seconds {
            scratch.reset();
            for (log, encoded) in parts {
                let path = raw.logs.get(*log).cloned().unwrap_or_default();
                Adder { path: &path }.add(&mut scratch, encoded, "an interval")?;
            }
            let mut encoded = Vec::new();
            serializer
                .serialize(&scratch, &mut encoded)
                .expect("serialising to memory cannot fail");
            out[m].insert(
                k,
                Second {
                    percentiles: interval_percentiles(&scratch),
                    count: scratch.len(),
                    encoded,
                },
            );
        }
    }
    Ok(out)
}

fn interval_percentiles(h: &Histogram<u64>) -> IntervalPercentiles {
    let p = Percentiles::of(h);
    IntervalPercentiles {
        count: p.count,
        p50: p.p50,
        p90: p.p90,
        p99: p.p99,
        max: p.max,
    }
}

/// One point per run-relative second any shard sampled: gauges and rates summed (a shard that
/// had already finished adds nothing but its cumulative `failed`), latency from the merged
/// interval histograms of that second.
fn merge_timeline(
    shards: &[&ShardRun],
    per_second: &[BTreeMap<u64, Second>; NAMES.len()],
) -> Vec<TimelinePoint> {
    let mut points: BTreeMap<u64, TimelinePoint> = BTreeMap::new();
    for s in shards {
        for p in &s.report.timeline {
            let k = second(p.t);
            let m = points.entry(k).or_insert(TimelinePoint {
                t: k as f64,
                connected: 0,
                connecting: 0,
                failed: 0,
                connects_per_s: 0.0,
                sent_per_s: 0.0,
                delivered_per_s: 0.0,
                acked_per_s: 0.0,
                connect_us: IntervalPercentiles::default(),
                ack_us: IntervalPercentiles::default(),
                e2e_corrected_us: IntervalPercentiles::default(),
            });
            m.connected += p.connected;
            m.connecting += p.connecting;
            m.connects_per_s += p.connects_per_s;
            m.sent_per_s += p.sent_per_s;
            m.delivered_per_s += p.delivered_per_s;
            m.acked_per_s += p.acked_per_s;
        }
    }
    // `failed` is cumulative: each shard's latest value at or before the second.
    for s in shards {
        let tl = &s.report.timeline;
        for (k, m) in points.iter_mut() {
            let upto = tl.partition_point(|p| second(p.t) <= *k);
            if upto > 0 {
                m.failed += tl[upto - 1].failed;
            }
        }
    }
    for (k, m) in points.iter_mut() {
        let at = |metric: usize| {
            per_second[metric]
                .get(k)
                .map(|s| s.percentiles)
                .unwrap_or_default()
        };
        m.connect_us = at(0);
        m.ack_us = at(1);
        m.e2e_corrected_us = at(2);
    }
    points.into_values().collect()
}

fn to_intervals(
    base: std::time::SystemTime,
    per_second: [BTreeMap<u64, Second>; NAMES.len()],
) -> Intervals {
    let mut intervals = Intervals::new(base);
    for (m, seconds) in per_second.into_iter().enumerate() {
        for (k, s) in seconds {
            let start = Duration::from_secs(k.saturating_sub(1));
            intervals.series[m].push(Interval {
                start,
                length: Duration::from_secs(k) - start,
                count: s.count,
                encoded: s.encoded,
            });
        }
    }
    intervals
}

/// Reads each shard directory's report (a directory holding report.json, or the file).
pub fn load(dirs: &[PathBuf]) -> Result<Vec<ShardRun>, super::LoadError> {
    dirs.iter()
        .map(|d| {
            let report = Report::load(d)?;
            let dir = if d.is_dir() {
                d.clone()
            } else {
                d.parent().map(Path::to_path_buf).unwrap_or_default()
            };
            Ok(ShardRun { dir, report })
        })
        .collect()
}
