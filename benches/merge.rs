//! Merging shard results (`thingswarm merge`), timed and sized, printed as JSON.
//!
//! `cargo bench --bench merge -- [--shards N] [--seconds S] [--samples K]` (defaults: 8 shards,
//! 600 s, 2,000 samples per metric per second per shard). Each synthetic shard is a real
//! report (the test fixture, its histograms replaced by ones holding that shard's samples)
//! plus the five `.hlog` interval logs a run writes, one interval per second. Reports the
//! time to load and merge (reports + interval logs) and to write the merged report, the
//! merged report's size, a shard's report and interval-log sizes, and peak RSS.

use std::time::{Duration, Instant, SystemTime};

use hdrhistogram::Histogram;
use rand::{Rng as _, SeedableRng as _};
use thingswarm::report::merge;
use thingswarm::report::{HistogramReport, Report};
use thingswarm::shard::{Shard, ShardInfo};
use thingswarm::stats::histogram;
use thingswarm::stats::intervals::Intervals;
use thingswarm::stats::{IntervalPercentiles, TimelinePoint, METRICS};

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let shards = arg("--shards", 8) as u32;
    let seconds = arg("--seconds", 600);
    let samples = arg("--samples", 2_000);
    let base: Report =
        serde_json::from_str(include_str!("../tests/fixtures/reports/base.json")).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let mut rng = rand::rngs::SmallRng::seed_from_u64(7);
    let mut dirs = Vec::new();
    let started = Instant::now();
    for i in 0..shards {
        let dir = tmp.path().join(format!("shard-{i}"));
        std::fs::create_dir_all(&dir).unwrap();
        let mut report = base.clone();
        report.shard = Some(ShardInfo::of(
            Shard {
                index: i,
                count: shards,
            },
            report
                .groups
                .iter()
                .map(|g| (g.name.as_str(), g.planned, None)),
        ));
        report.timeline.clear();
        let mut intervals = Intervals::new(SystemTime::now());
        let mut whole = histogram::latency();
        for s in 0..seconds {
            let mut connect = histogram::latency();
            let traffic: [Histogram<u64>; METRICS] = std::array::from_fn(|_| {
                let mut h = histogram::latency();
                for _ in 0..samples {
                    h.saturating_record(rng.random_range(100..200_000));
                }
                h
            });
            for _ in 0..samples / 10 {
                connect.saturating_record(rng.random_range(1_000..2_000_000));
            }
            whole.add(&traffic[0]).unwrap();
            intervals.add(&connect, &traffic);
            intervals.cut(Duration::from_secs(s + 1));
            report.timeline.push(TimelinePoint {
                t: (s + 1) as f64,
                connected: 1_000,
                connecting: 0,
                failed: 0,
                connects_per_s: 0.0,
                sent_per_s: samples as f64,
                delivered_per_s: samples as f64,
                acked_per_s: samples as f64,
                connect_us: IntervalPercentiles::default(),
                ack_us: IntervalPercentiles::default(),
                e2e_corrected_us: IntervalPercentiles::default(),
            });
        }
        let t = report.traffic.as_mut().unwrap();
        t.whole.ack_latency_us = HistogramReport::of(&whole);
        t.whole.e2e_corrected_us = HistogramReport::of(&whole);
        report.write(&dir).unwrap();
        thingswarm::report::hlog::write(&dir, &intervals, "bench").unwrap();
        dirs.push(dir);
    }
    let prepare_s = started.elapsed().as_secs_f64();
    let size = |p: &std::path::Path| std::fs::metadata(p).map_or(0, |m| m.len());
    let shard_report_bytes = size(&dirs[0].join("report.json"));
    let shard_hlog_bytes: u64 = std::fs::read_dir(&dirs[0])
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.path().extension().is_some_and(|x| x == "hlog"))
        .map(|e| size(&e.path()))
        .sum();

    let cpu0 = thingswarm::stats::rusage::usage().cpu;
    let t0 = Instant::now();
    let loaded = merge::load(&dirs).unwrap();
    let merged = merge::merge(&loaded, false).unwrap();
    let merge_s = t0.elapsed().as_secs_f64();
    let out = tmp.path().join("merged");
    let t1 = Instant::now();
    merged.report.write(&out).unwrap();
    thingswarm::report::hlog::write(&out, &merged.intervals, "bench").unwrap();
    let write_s = t1.elapsed().as_secs_f64();
    let usage = thingswarm::stats::rusage::usage();
    let merged_samples = &merged.report.traffic.as_ref().unwrap().whole.ack_latency_us;
    println!(
        "{}",
        serde_json::json!({
            "bench": "merge",
            "shards": shards,
            "seconds": seconds,
            "samples_per_metric_second_shard": samples,
            "prepare_s": prepare_s,
            "load_and_merge_s": merge_s,
            "write_merged_s": write_s,
            "merge_cpu_s": (usage.cpu - cpu0).as_secs_f64(),
            "shard_report_bytes": shard_report_bytes,
            "shard_hlog_bytes": shard_hlog_bytes,
            "merged_report_bytes": size(&out.join("report.json")),
            "merged_timeline_points": merged.report.timeline.len(),
            "merged_ack_samples": merged_samples.percentiles.count,
            "max_rss_bytes": usage.max_rss_bytes,
        })
    );
}
