//! Shards: `run --shard i/N` slices, `thingswarm merge`, `run --processes N`.
//!
//! - slices of every (devices, N) are disjoint and cover the group (property test);
//! - merging N shard reports gives exactly the figures of one histogram holding every
//!   shard's samples (report-level and per-second timeline), counters summed;
//! - `run --processes 2` end to end against the embedded broker: the merged report's counts
//!   are the sums of the children's, it validates against the schema and `report` renders it;
//! - `run --processes 2` with two `--target` (two mosquittos): each shard reaches its own
//!   broker, with every other target flag passed on;
//! - bad `--shard` values and bad merges exit 2 with a one-line error naming the value.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use assert_cmd::Command;
use hdrhistogram::Histogram;
use proptest::prelude::*;
use rand::{Rng as _, SeedableRng as _};
use serde_json::Value;
use thingswarm::report::merge::{self, ShardRun};
use thingswarm::report::{HistogramReport, Report};
use thingswarm::shard::{Shard, ShardInfo};
use thingswarm::stats::histogram::{self, Percentiles};
use thingswarm::stats::intervals::Intervals;
use thingswarm::stats::{IntervalPercentiles, TimelinePoint, METRICS};

mod common;

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn slices_are_disjoint_and_cover_the_group(devices in 0u64..2_000, n in 1u32..80) {
        let mut seen = vec![0u32; devices as usize];
        let mut total = 0;
        for i in 0..n {
            let shard = Shard { index: i, count: n };
            let slice = shard.slice(devices);
            total += slice.count;
            for k in slice.indices() {
                prop_assert!(k < devices, "{k} outside 0..{devices}");
                prop_assert!(shard.owns(k));
                seen[k as usize] += 1;
            }
            // Deterministic: the same shard gives the same slice.
            prop_assert_eq!(slice, shard.slice(devices));
        }
        prop_assert_eq!(total, devices);
        prop_assert!(seen.iter().all(|&c| c == 1), "every device in exactly one shard");
    }
}

#[test]
fn more_shards_than_devices_leaves_some_empty() {
    let counts: Vec<u64> = (0..5)
        .map(|i| Shard { index: i, count: 5 }.slice(3).count)
        .collect();
    assert_eq!(counts, [1, 1, 1, 0, 0]);
}

fn fixture() -> Report {
    serde_json::from_str(include_str!("fixtures/reports/base.json")).unwrap()
}

fn shard_report(base: &Report, i: u32, n: u32) -> Report {
    let mut r = base.clone();
    r.shard = Some(ShardInfo::of(
        Shard { index: i, count: n },
        r.groups.iter().map(|g| (g.name.as_str(), g.planned, None)),
    ));
    r
}

fn random_histograms(n: usize, seed: u64) -> (Vec<Histogram<u64>>, Histogram<u64>) {
    let mut rng = rand::rngs::SmallRng::seed_from_u64(seed);
    let mut all = histogram::latency();
    let parts = (0..n)
        .map(|i| {
            let mut h = histogram::latency();
            // Each shard sees a different distribution, so a wrong merge would show.
            for _ in 0..(500 + 300 * i) {
                let v = rng.random_range(1..(2_000 * (i as u64 + 1)));
                let v = if rng.random_ratio(1, 100) {
                    v * 1000
                } else {
                    v
                };
                h.saturating_record(v);
                all.saturating_record(v);
            }
            h
        })
        .collect();
    (parts, all)
}

fn decode(h: &HistogramReport) -> Histogram<u64> {
    merge::decode(&h.hdr).unwrap()
}

#[test]
fn merging_shard_reports_equals_recording_into_one_histogram() {
    let base = fixture();
    let n = 4;
    let (connect, connect_all) = random_histograms(n, 1);
    let (ack, ack_all) = random_histograms(n, 2);
    let (e2e, e2e_all) = random_histograms(n, 3);
    let (ttr, ttr_all) = random_histograms(n, 4);
    let tmp = tempfile::tempdir().unwrap();
    let shards: Vec<ShardRun> = (0..n)
        .map(|i| {
            let mut r = shard_report(&base, i as u32, n as u32);
            r.connect_latency_us = HistogramReport::of(&connect[i]);
            let t = r.traffic.as_mut().unwrap();
            t.whole.ack_latency_us = HistogramReport::of(&ack[i]);
            t.steady.e2e_corrected_us = HistogramReport::of(&e2e[i]);
            r.groups[1].time_to_recover_hdr = Some(histogram::encode(&ttr[i]));
            r.errors = vec![thingswarm::stats::ErrorRow {
                class: "tls: unknown CA".into(),
                count: i as u64 + 1,
                example: format!("s-{i}: bad"),
            }];
            ShardRun {
                dir: tmp.path().join(format!("shard-{i}")),
                report: r,
            }
        })
        .collect();
    let merged = merge::merge(&shards, false).unwrap().report;

    // Histograms: exactly one histogram's figures.
    assert_eq!(decode(&merged.connect_latency_us), connect_all);
    assert_eq!(
        merged.connect_latency_us.percentiles,
        Percentiles::of(&connect_all)
    );
    let t = merged.traffic.as_ref().unwrap();
    assert_eq!(
        t.whole.ack_latency_us.percentiles,
        Percentiles::of(&ack_all)
    );
    assert_eq!(decode(&t.steady.e2e_corrected_us), e2e_all);
    assert_eq!(
        merged.groups[1].time_to_recover_us,
        Percentiles::of(&ttr_all)
    );

    // Counters summed, rates recomputed from the sums.
    let b = base.traffic.as_ref().unwrap();
    assert_eq!(merged.devices.connects, base.devices.connects * n as u64);
    assert_eq!(
        merged.groups[1].counts.sent,
        base.groups[1].counts.sent * n as u64
    );
    assert_eq!(merged.planned_devices, base.planned_devices * n as u64);
    assert_eq!(t.whole.sent, b.whole.sent * n as u64);
    assert!(
        (t.whole.sent_per_s - b.whole.sent_per_s * n as f64).abs()
            < 1e-6 * t.whole.sent_per_s.max(1.0)
    );
    assert_eq!(t.sequence.unique, b.sequence.unique * n as u64);
    assert_eq!(merged.errors.len(), 1, "one row per class");
    assert_eq!(merged.errors[0].count, 1 + 2 + 3 + 4);
    let m = merged.merged.as_ref().unwrap();
    assert_eq!(
        (m.count, m.shards.clone(), m.missing.len()),
        (4, vec![0, 1, 2, 3], 0)
    );
    assert!(merged.shard.is_none());
    assert!(merged.definitions["merge"].contains("added"));
}

/// A shard's per-second intervals and timeline with known samples, written as a run writes
/// them (the `.hlog` files beside report.json).
fn shard_with_seconds(
    base: &Report,
    dir: &Path,
    i: u32,
    n: u32,
    seconds: &[Vec<u64>],
    all: &mut [Histogram<u64>],
) -> ShardRun {
    std::fs::create_dir_all(dir).unwrap();
    let mut intervals = Intervals::new(SystemTime::now());
    let traffic: [Histogram<u64>; METRICS] = std::array::from_fn(|_| histogram::latency());
    let mut report = shard_report(base, i, n);
    report.timeline.clear();
    for (s, samples) in seconds.iter().enumerate() {
        let mut h = histogram::latency();
        for &v in samples {
            h.record(v).unwrap();
            all[s].record(v).unwrap();
        }
        intervals.add(&h, &traffic);
        // Shards sample their seconds a little apart: alignment is by rounded second.
        let t = (s + 1) as f64 + 0.013 * f64::from(i);
        intervals.cut(Duration::from_secs_f64(t));
        report.timeline.push(TimelinePoint {
            t,
            connected: 10 + u64::from(i),
            connecting: 0,
            failed: u64::from(i),
            connects_per_s: 1.0,
            sent_per_s: 100.0,
            delivered_per_s: 90.0,
            acked_per_s: 80.0,
            connect_us: IntervalPercentiles::default(),
            ack_us: IntervalPercentiles::default(),
            e2e_corrected_us: IntervalPercentiles::default(),
        });
    }
    thingswarm::report::hlog::write(dir, &intervals, "test").unwrap();
    ShardRun {
        dir: dir.to_path_buf(),
        report,
    }
}

#[test]
fn timelines_align_on_run_relative_seconds() {
    let base = fixture();
    let tmp = tempfile::tempdir().unwrap();
    let mut all: Vec<Histogram<u64>> = (0..3).map(|_| histogram::latency()).collect();
    let shards = vec![
        shard_with_seconds(
            &base,
            &tmp.path().join("a"),
            0,
            2,
            &[vec![100, 200, 300], vec![1_000, 2_000], vec![5]],
            &mut all,
        ),
        shard_with_seconds(
            &base,
            &tmp.path().join("b"),
            1,
            2,
            &[vec![150], vec![9_000, 9_500, 10_000], vec![]],
            &mut all,
        ),
    ];
    let merged = merge::merge(&shards, false).unwrap();
    let tl = &merged.report.timeline;
    assert_eq!(tl.iter().map(|p| p.t).collect::<Vec<_>>(), [1.0, 2.0, 3.0]);
    for (s, p) in tl.iter().enumerate() {
        assert_eq!(p.connected, 10 + 11, "gauges summed");
        assert_eq!(p.failed, 1);
        assert_eq!(p.sent_per_s, 200.0);
        let want = Percentiles::of(&all[s]);
        assert_eq!(p.connect_us.count, want.count, "second {s}");
        assert_eq!(
            (p.connect_us.p50, p.connect_us.p99, p.connect_us.max),
            (want.p50, want.p99, want.max),
            "second {s}"
        );
    }
    // The merged interval log holds the same seconds.
    let counts: Vec<u64> = merged.intervals.series[0].iter().map(|i| i.count).collect();
    assert_eq!(counts, [4, 5, 1]);
}

fn write_shard(dir: &Path, report: &Report) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("report.json"), serde_json::to_vec(report).unwrap()).unwrap();
}

fn thingswarm(args: &[&std::ffi::OsStr]) -> (i32, String, String) {
    let out = Command::cargo_bin("thingswarm")
        .unwrap()
        .args(args)
        .timeout(Duration::from_secs(60))
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn os(s: &str) -> &std::ffi::OsStr {
    s.as_ref()
}

/// `thingswarm run SCENARIO --processes 2 --no-tui --out OUT --certs-dir CERTS EXTRA...`.
fn run_two_processes(
    scenario: &std::ffi::OsStr,
    out: &Path,
    certs: &Path,
    extra: &[&std::ffi::OsStr],
) -> (i32, String, String) {
    let mut args = vec![
        os("run"),
        scenario,
        os("--processes"),
        os("2"),
        os("--no-tui"),
        os("--out"),
        out.as_os_str(),
        os("--certs-dir"),
        certs.as_os_str(),
    ];
    args.extend_from_slice(extra);
    thingswarm(&args)
}

#[test]
fn bad_shard_values_exit_2_naming_the_value_and_the_form() {
    for bad in ["2/2", "x", "1/0", "3"] {
        let (code, _, err) = thingswarm(&[
            os("run"),
            os("scenarios/quickstart.toml"),
            os("--shard"),
            os(bad),
        ]);
        assert_eq!(code, 2, "{bad}: {err}");
        assert!(err.contains(bad) && err.contains("i/N"), "{bad}: {err}");
    }
    let (code, _, err) = thingswarm(&[
        os("run"),
        os("scenarios/quickstart.toml"),
        os("--shard"),
        os("0/2"),
        os("--processes"),
        os("2"),
    ]);
    assert_eq!(code, 2, "{err}");
    let (code, _, err) = thingswarm(&[
        os("run"),
        os("scenarios/quickstart.toml"),
        os("--processes"),
        os("0"),
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("0"), "{err}");
}

#[test]
fn bad_merges_exit_2_with_the_reason() {
    let tmp = tempfile::tempdir().unwrap();
    let base = fixture();
    let dir = |name: &str| -> PathBuf { tmp.path().join(name) };
    write_shard(&dir("s0"), &shard_report(&base, 0, 2));
    write_shard(&dir("s1"), &shard_report(&base, 1, 2));
    write_shard(&dir("s0-again"), &shard_report(&base, 0, 2));
    write_shard(&dir("plain"), &base);
    let mut other = shard_report(&base, 1, 2);
    other.scenario.name = "another".into();
    write_shard(&dir("other"), &other);
    let out = dir("out");
    let merge = |shards: &[&str], extra: &[&str]| {
        let mut args = vec![os("merge"), out.as_os_str()];
        args.insert(1, os("--out"));
        let paths: Vec<PathBuf> = shards.iter().map(|s| dir(s)).collect();
        args.extend(paths.iter().map(|p| p.as_os_str()));
        args.extend(extra.iter().map(|e| os(e)));
        thingswarm(&args)
    };

    let (code, _, err) = merge(&["s0"], &[]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("shards 1 of 2 missing"), "{err}");
    let (code, _, err) = merge(&["s0", "s0-again"], &[]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("shard 0/2 given twice"), "{err}");
    let (code, _, err) = merge(&["s0", "plain"], &[]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("not a shard report"), "{err}");
    let (code, _, err) = merge(&["s0", "other"], &[]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("\"another\""), "{err}");
    let (code, _, err) = merge(&["s0", "missing-dir"], &[]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("missing-dir"), "{err}");
    let (code, _, err) = thingswarm(&[os("merge"), dir("s0").as_os_str()]);
    assert_eq!(code, 2, "--out is required: {err}");

    // Missing shards allowed: a partial report, said so.
    let (code, stdout, err) = merge(&["s0"], &["--allow-missing"]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("missing"), "{err}");
    assert!(stdout.contains("PARTIAL"), "{stdout}");
    let merged = Report::load(&out).unwrap();
    assert!(merged.interrupted);
    assert_eq!(merged.merged.unwrap().missing, [1]);

    // A complete merge writes what a run writes.
    let (code, stdout, err) = merge(&["s1", "s0"], &[]);
    assert_eq!(code, 0, "{err}");
    assert!(stdout.contains("merged     2 of 2 shards"), "{stdout}");
    for f in ["report.json", "report.html", "junit.xml"] {
        assert!(out.join(f).is_file(), "{f}");
    }
}

fn read_json(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

#[cfg(feature = "embedded-broker")]
#[test]
fn processes_2_merges_children_into_a_report_that_renders() {
    let tmp = tempfile::tempdir().unwrap();
    let scenario = tmp.path().join("small.toml");
    std::fs::write(
        &scenario,
        r#"name = "small"
duration = "2s"
seed = 1

[[group]]
name = "dashboard"
devices = 1
client_id = "dash"
subscribe = [{ filter = "dt/+/t", qos = 1 }]

[[group]]
name = "sensors"
devices = 9
client_id = "s-{index:03}"
connect = { rate = "100/s", max_in_flight = 10 }
publish = { topic = "dt/{client_id}/t", qos = 1, rate = "5/s" }
"#,
    )
    .unwrap();
    let out = tmp.path().join("out");
    let (code, stdout, err) = run_two_processes(
        scenario.as_os_str(),
        &out,
        &tmp.path().join("certs"),
        &[os("--slo"), os("connect_p99<60s")],
    );
    assert_eq!(code, 0, "{stdout}\n{err}");
    assert!(stdout.contains("merged     2 of 2 shards"), "{stdout}");
    assert!(err.contains("connected"), "aggregate progress lines: {err}");

    let merged = read_json(&out.join("report.json"));
    let children: Vec<Value> = (0..2)
        .map(|i| read_json(&out.join(format!("shard-{i}/report.json"))))
        .collect();
    assert_eq!(children[0]["shard"]["index"], 0);
    assert!(children[0]["definitions"]["shard"].is_string());
    assert!(merged["definitions"]["shard"].is_null());
    assert!(merged["definitions"]["merge"].is_string());
    assert_eq!(children[1]["shard"]["groups"][1]["first"], 1);
    // Shard 0: the dashboard and sensors 0, 2, 4, 6, 8; shard 1: sensors 1, 3, 5, 7.
    assert_eq!(children[0]["planned_devices"], 6);
    assert_eq!(children[1]["planned_devices"], 4);
    assert_eq!(children[1]["devices"]["connects"], 4);
    assert_eq!(children[1]["groups"][0]["planned"], 0);
    let sum = |f: &dyn Fn(&Value) -> &Value| -> u64 {
        children.iter().map(|c| f(c).as_u64().unwrap()).sum()
    };
    for key in ["connects", "closed", "sent", "acked", "delivered", "failed"] {
        assert_eq!(
            merged["devices"][key].as_u64().unwrap(),
            sum(&|c| &c["devices"][key]),
            "{key}"
        );
    }
    assert_eq!(merged["devices"]["connects"], 10);
    assert_eq!(merged["planned_devices"], 10);
    assert_eq!(
        merged["connect_latency_us"]["count"].as_u64().unwrap(),
        sum(&|c| &c["connect_latency_us"]["count"])
    );
    assert_eq!(
        merged["traffic"]["whole"]["e2e_corrected_us"]["count"]
            .as_u64()
            .unwrap(),
        sum(&|c| &c["traffic"]["whole"]["e2e_corrected_us"]["count"])
    );
    assert!(merged["traffic"]["whole"]["sent"].as_u64().unwrap() > 0);
    assert_eq!(merged["target"]["embedded"], true);
    // Signed once, in the parent; the children only read the cache.
    assert_eq!(merged["identities"][1]["generated"], 9);
    assert_eq!(children[1]["identities"][1]["generated"], 0);
    assert_eq!(merged["merged"]["shards"], serde_json::json!([0, 1]));
    assert_eq!(merged["slos"][0]["passed"], true);
    assert!(!merged["timeline"].as_array().unwrap().is_empty());
    assert!(out.join("connect.hlog").is_file());
    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    assert!(
        html.contains("Merged from 2 of 2 shards"),
        "report.html says so"
    );

    for r in children.iter().chain([&merged]) {
        let errors = common::schema_errors(r);
        assert!(errors.is_empty(), "{errors:?}");
    }

    let (code, stdout, err) = thingswarm(&[os("report"), out.as_os_str()]);
    assert_eq!(code, 0, "{err}");
    assert!(stdout.contains("connected  10/10"), "{stdout}");
}

#[test]
fn deploy_manifest_is_an_indexed_job_that_maps_the_completion_index_to_the_shard() {
    use serde::Deserialize as _;
    let text = std::fs::read_to_string("deploy/job.yaml").unwrap();
    let docs: Vec<Value> = serde_norway::Deserializer::from_str(&text)
        .map(|doc| Value::deserialize(doc).expect("valid YAML"))
        .collect();
    let kinds: Vec<&str> = docs.iter().map(|d| d["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["PersistentVolumeClaim", "Job", "Pod"]);
    let job = &docs[1]["spec"];
    assert_eq!(job["completionMode"], "Indexed");
    assert_eq!(job["template"]["spec"]["restartPolicy"], "Never");
    let container = &job["template"]["spec"]["containers"][0];
    let shards = container["env"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "SHARDS")
        .unwrap()["value"]
        .as_str()
        .unwrap()
        .parse::<u64>()
        .unwrap();
    assert_eq!(job["completions"].as_u64(), Some(shards));
    assert_eq!(job["parallelism"].as_u64(), Some(shards));
    let command = container["command"][2].as_str().unwrap();
    assert!(
        command.contains(r#"--shard "${JOB_COMPLETION_INDEX}/${SHARDS}""#),
        "{command}"
    );
    assert!(
        command.contains("/results/shard-${JOB_COMPLETION_INDEX}"),
        "{command}"
    );
    // Every volume a container mounts is declared.
    let volumes: Vec<&str> = job["template"]["spec"]["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    for c in ["initContainers", "containers"] {
        for m in job["template"]["spec"][c][0]["volumeMounts"]
            .as_array()
            .unwrap()
        {
            assert!(volumes.contains(&m["name"].as_str().unwrap()), "{m}");
        }
    }
    let dockerfile = std::fs::read_to_string("deploy/Dockerfile").unwrap();
    assert!(dockerfile.contains("AS build") && dockerfile.contains("cargo build --release"));
    assert!(dockerfile.contains("FROM debian:bookworm-slim"));
}

#[cfg(feature = "embedded-broker")]
#[test]
fn ctrl_c_reaches_every_child_and_what_they_wrote_is_merged() {
    use std::time::Instant;

    let tmp = tempfile::tempdir().unwrap();
    let scenario = tmp.path().join("long.toml");
    std::fs::write(&scenario, LONG).unwrap();
    let out = tmp.path().join("out");
    let (mut parent, rx, reader, mut seen) = start_sending(&scenario, tmp.path(), &out);
    // SAFETY: signalling our own child process by its pid.
    assert_eq!(
        unsafe { libc::kill(parent.id() as libc::pid_t, libc::SIGINT) },
        0
    );
    let deadline = Instant::now() + Duration::from_secs(45);
    let status = loop {
        if let Some(status) = parent.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = parent.kill();
            panic!("--processes parent did not finish within 45 s of SIGINT: {seen:#?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    seen.extend(rx.try_iter());
    reader.join().unwrap();
    assert_eq!(status.code(), Some(130), "{seen:#?}");
    let merged = read_json(&out.join("report.json"));
    assert_eq!(merged["interrupted"], true);
    assert_eq!(merged["merged"]["shards"], serde_json::json!([0, 1]));
    assert_eq!(merged["devices"]["connects"], 6);
    assert!(merged["traffic"]["whole"]["sent"].as_u64().unwrap() > 0);
    for i in 0..2 {
        let child = read_json(&out.join(format!("shard-{i}/report.json")));
        assert_eq!(child["interrupted"], true, "shard {i} saw the interrupt");
    }
}

#[cfg(feature = "embedded-broker")]
const LONG: &str = r#"name = "long"
duration = "60s"
[[group]]
name = "sensors"
devices = 6
client_id = "l-{index:03}"
publish = { topic = "l/{client_id}", qos = 1, rate = "10/s" }
"#;

#[cfg(feature = "embedded-broker")]
type Lines = std::sync::mpsc::Receiver<String>;

/// Starts `run --processes 2` and waits (bounded) until its aggregate progress line shows
/// every child's devices connected and sending.
#[cfg(feature = "embedded-broker")]
fn start_sending(
    scenario: &Path,
    tmp: &Path,
    out: &Path,
) -> (
    std::process::Child,
    Lines,
    std::thread::JoinHandle<()>,
    Vec<String>,
) {
    use std::io::{BufRead as _, BufReader};
    use std::process::Stdio;
    use std::time::Instant;
    let mut parent = std::process::Command::new(env!("CARGO_BIN_EXE_thingswarm"))
        .arg("run")
        .arg(scenario)
        .args(["--processes", "2", "--no-tui", "--certs-dir"])
        .arg(tmp.join("certs"))
        .arg("--out")
        .arg(out)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = parent.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    // The aggregate progress line shows every child's devices connected and sending.
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "no aggregate traffic within 90 s: {seen:#?}"
        );
        let Ok(line) = rx.recv_timeout(left) else {
            panic!("stderr closed early: {seen:#?}")
        };
        let all_sending = line.contains("connected 6/6") && line.contains("sent ");
        seen.push(line);
        if all_sending {
            break;
        }
    }
    (parent, rx, reader, seen)
}

/// The pids of `pid`'s child processes (Linux /proc).
#[cfg(feature = "embedded-broker")]
fn children_of(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))
        .into_iter()
        .flatten()
        .flatten()
    {
        let list = std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
        out.extend(
            list.split_whitespace()
                .filter_map(|p| p.parse::<u32>().ok()),
        );
    }
    out
}

#[cfg(feature = "embedded-broker")]
#[test]
fn a_second_ctrl_c_ends_the_parent_and_its_children_at_once() {
    let tmp = tempfile::tempdir().unwrap();
    let scenario = tmp.path().join("long.toml");
    std::fs::write(&scenario, LONG).unwrap();
    let out = tmp.path().join("out");
    let (mut parent, _rx, reader, seen) = start_sending(&scenario, tmp.path(), &out);
    let children = children_of(parent.id());
    assert_eq!(children.len(), 2, "{children:?}");
    for _ in 0..2 {
        // SAFETY: signalling our own child process by its pid.
        assert_eq!(
            unsafe { libc::kill(parent.id() as libc::pid_t, libc::SIGINT) },
            0
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = parent.try_wait().unwrap() {
            break status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "parent still running: {seen:#?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(status.code(), Some(130));
    reader.join().unwrap();
    // The children follow within a bounded time (SIGTERM on the parent's death).
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    for pid in children {
        while Path::new(&format!("/proc/{pid}")).exists()
            && std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .is_ok_and(|s| !s.contains(") Z "))
        {
            assert!(
                std::time::Instant::now() < deadline,
                "child {pid} still running"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

#[test]
fn a_failing_child_is_reported_with_its_exit_code_after_the_merge() {
    let tmp = tempfile::tempdir().unwrap();
    let certs = tmp.path().join("certs");
    let ca = thingswarm::identity::Ca::generated(&certs, Default::default(), false).unwrap();
    let ca_pem = tmp.path().join("ca.pem");
    std::fs::write(&ca_pem, thingswarm::identity::cache::pem_cert(ca.root())).unwrap();
    // A closed loopback port: every device is refused, each child exits 3.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let out = tmp.path().join("out");
    let target = format!("mqtts://127.0.0.1:{port}");
    let (code, _, err) = run_two_processes(
        os("scenarios/quickstart.toml"),
        &out,
        &certs,
        &[
            os("--target"),
            os(&target),
            os("--server-ca"),
            ca_pem.as_os_str(),
        ],
    );
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("shard 0/2 exited with code 3"), "{err}");
    assert!(
        err.contains("no device could reach"),
        "the child's own reason: {err}"
    );
    let merged = Report::load(&out).unwrap();
    assert_eq!(
        merged.devices.failed, 300,
        "what the children wrote is merged"
    );
    assert_eq!(merged.errors[0].class, "tcp: refused");
}

#[cfg(feature = "embedded-broker")]
#[test]
fn a_child_streams_snapshots_and_obeys_control_lines() {
    use std::io::{BufRead as _, BufReader, Write as _};
    use std::process::Stdio;

    let tmp = tempfile::tempdir().unwrap();
    let scenario = tmp.path().join("child.toml");
    std::fs::write(
        &scenario,
        r#"name = "child"
duration = "3s"
[[group]]
name = "sensors"
devices = 4
client_id = "c-{index:03}"
publish = { topic = "c/{client_id}", qos = 1, rate = "10/s" }
"#,
    )
    .unwrap();
    let out = tmp.path().join("out");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_thingswarm"))
        .arg("run")
        .arg(&scenario)
        .args([
            "--shard",
            "1/2",
            "--no-tui",
            "--snapshot-lines",
            "--certs-dir",
        ])
        .arg(tmp.path().join("certs"))
        .arg("--out")
        .arg(&out)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let mut snapshots = 0;
    // Bounded: the child's run lasts ~4 s, then stdout closes.
    for line in stdout.lines().map_while(Result::ok) {
        let Some(s) = thingswarm::shard::parse_snapshot_line(&line) else {
            continue;
        };
        snapshots += 1;
        assert_eq!(s.planned, 2, "shard 1/2 of 4 devices");
        if snapshots == 1 {
            stdin
                .write_all(b"control paused=false rate=120\ncontrol paused=true rate=120\n")
                .unwrap();
            stdin.flush().unwrap();
        }
    }
    drop(stdin);
    assert!(child.wait().unwrap().success());
    assert!(snapshots >= 2, "one snapshot line per second: {snapshots}");
    let report = Report::load(&out).unwrap();
    let events: Vec<String> = report
        .events
        .iter()
        .map(|e| format!("{:?} {}", e.action, e.rate_percent))
        .collect();
    assert_eq!(events, ["Rate 110", "Rate 120", "Pause 120"], "{events:?}");
    assert_eq!(report.shard.unwrap().groups[0].slice.first, 1);
}

/// `--processes 2` with two `--target`: shard i connects to the (i mod 2)-th broker only, and
/// the children get every other target flag too (here `--source-address`).
#[test]
fn processes_spread_over_several_targets_one_broker_per_shard() {
    use thingswarm::broker::mosquitto::{connected_usernames, Mosquitto};
    let tmp = tempfile::tempdir().unwrap();
    let scenario = tmp.path().join("spread.toml");
    std::fs::write(
        &scenario,
        r#"name = "spread"
duration = "1s"

[[group]]
name = "idle"
devices = 6
client_id = "sp-{index:02}"
"#,
    )
    .unwrap();
    let certs = tmp.path().join("certs");
    let plan = thingswarm::scenario::Plan::load(&scenario, &Default::default()).unwrap();
    let root = thingswarm::fleet::identities(&plan, &certs).unwrap()[0]
        .0
        .root()
        .clone();
    let Some(a) = Mosquitto::start_unless_missing(std::slice::from_ref(&root), "").unwrap() else {
        return;
    };
    let b = Mosquitto::start(std::slice::from_ref(&root), "").unwrap();
    let server_ca = tmp.path().join("brokers-ca.pem");
    let pem = [a.server_ca(), b.server_ca()].map(|p| std::fs::read_to_string(p).unwrap());
    std::fs::write(&server_ca, pem.concat()).unwrap();
    let (url_a, url_b) = (
        format!("mqtts://{}", a.addr()),
        format!("mqtts://{}", b.addr()),
    );
    let out = tmp.path().join("out");
    let (code, stdout, err) = run_two_processes(
        scenario.as_os_str(),
        &out,
        &certs,
        &[
            os("--server-ca"),
            server_ca.as_os_str(),
            os("--target"),
            os(&url_a),
            os("--target"),
            os(&url_b),
            os("--source-address"),
            os("127.0.0.3"),
        ],
    );
    assert_eq!(code, 0, "{stdout}\n{err}");
    let ids = |m: &Mosquitto| -> Vec<String> {
        let mut v: Vec<String> = connected_usernames(&m.log())
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        v.sort();
        v
    };
    assert_eq!(ids(&a), ["sp-00", "sp-02", "sp-04"], "{}", a.log());
    assert_eq!(ids(&b), ["sp-01", "sp-03", "sp-05"], "{}", b.log());
    for m in [&a, &b] {
        let log = m.log();
        let froms = log.matches("New client connected from ").count();
        assert_eq!(
            log.matches("connected from 127.0.0.3:").count(),
            froms,
            "{log}"
        );
    }
    let merged = read_json(&out.join("report.json"));
    assert_eq!(merged["devices"]["connects"], 6);
    let url = merged["target"]["url"].as_str().unwrap();
    assert!(url.contains(&url_a) && url.contains(&url_b), "{url}");

    // Several targets without shards: refused, naming the fix.
    let (code, _, err) = thingswarm(&[
        os("run"),
        scenario.as_os_str(),
        os("--server-ca"),
        server_ca.as_os_str(),
        os("--target"),
        os(&url_a),
        os("--target"),
        os(&url_b),
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("--target given 2 times") && err.contains("--processes N"),
        "{err}"
    );
}

/// A subscriber in shard 0 that misses a second of traffic from publishers in both shards:
/// the merge settles its loss against every shard's publishers (shard 0 alone knows only
/// its own publishers' sent counts and under-counts).
#[cfg(feature = "embedded-broker")]
#[test]
fn loss_is_settled_across_shards_at_the_merge() {
    let tmp = tempfile::tempdir().unwrap();
    let scenario = tmp.path().join("cross.toml");
    std::fs::write(
        &scenario,
        r#"name = "cross"
duration = "3s"

[[group]]
name = "away"
devices = 1
client_id = "x-away"
offline = { at = "1s", for = "1s" }   # clean session: what is published meanwhile is lost
subscribe = [{ filter = "x/#", qos = 1 }]

[[group]]
name = "sensors"
devices = 4
client_id = "x-s-{index}"
publish = { topic = "x/{client_id}", qos = 1, rate = "10/s" }
"#,
    )
    .unwrap();
    let out = tmp.path().join("out");
    let (code, stdout, err) =
        run_two_processes(scenario.as_os_str(), &out, &tmp.path().join("certs"), &[]);
    assert_eq!(code, 0, "{stdout}\n{err}");
    let merged = read_json(&out.join("report.json"));
    let shards: Vec<Value> = (0..2)
        .map(|i| read_json(&out.join(format!("shard-{i}/report.json"))))
        .collect();
    let ledger = |s: &Value, key: &str| s["shard"]["groups"][0]["loss"][key].as_u64().unwrap();
    assert_eq!(ledger(&shards[0], "subscribers"), 1);
    // Shard 1 has no subscriber, but its publishers' messages are expected.
    assert_eq!(ledger(&shards[1], "subscribers"), 0);
    assert_eq!(
        ledger(&shards[1], "sent_to_each"),
        shards[1]["groups"][1]["counts"]["sent"]
    );
    assert!(
        shards[0]["shard"]["groups"][1]["loss"].is_null(),
        "sensors subscribe to nothing"
    );

    let sent = merged["groups"][1]["counts"]["sent"].as_u64().unwrap();
    assert_eq!(
        ledger(&shards[0], "sent_to_each"),
        shards[0]["groups"][1]["counts"]["sent"]
    );
    let seq = &merged["traffic"]["sequence"];
    let (lost, unique) = (
        seq["lost"].as_u64().unwrap(),
        seq["unique"].as_u64().unwrap(),
    );
    assert_eq!(
        lost + unique,
        sent,
        "every sent message is heard once or lost: {seq}"
    );
    assert_eq!(merged["groups"][0]["protocol_options"]["sequence"], *seq);
    assert_eq!(merged["traffic"]["loss"]["not_delivered"], lost);
    let alone = shards[0]["traffic"]["sequence"]["lost"].as_u64().unwrap();
    assert!(
        lost > alone && alone > 0,
        "merged {lost} vs shard 0 alone {alone}"
    );

    for r in shards.iter().chain([&merged]) {
        let errors = common::schema_errors(r);
        assert!(errors.is_empty(), "{errors:?}");
    }
}

/// `--processes 2` with a shadow scenario on the embedded broker: the parent runs the
/// emulated shadow service for every child, and the merged report holds both shards' figures.
#[cfg(feature = "embedded-broker")]
#[test]
fn processes_answer_shadow_requests_for_every_child() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let (code, stdout, err) = run_two_processes(
        os("scenarios/shadow.toml"),
        &out,
        &tmp.path().join("certs"),
        &[],
    );
    assert_eq!(code, 0, "{stdout}\n{err}");
    let merged = read_json(&out.join("report.json"));
    let aws = &merged["aws"];
    assert_eq!(aws["shadow_service"], "emulated", "{aws}");
    let g = &aws["shadow"][0];
    let shards: Vec<Value> = (0..2)
        .map(|i| read_json(&out.join(format!("shard-{i}/report.json"))))
        .collect();
    let updates: Vec<u64> = shards
        .iter()
        .map(|s| {
            s["aws"]["shadow"][0]["accepted"]["update"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert!(
        updates.iter().all(|&n| n > 0),
        "each shard was answered: {updates:?}"
    );
    assert_eq!(
        g["accepted"]["update"].as_u64().unwrap(),
        updates.iter().sum::<u64>()
    );
    assert_eq!(g["unexpected_rejects"], 0, "{g}");
    assert_eq!(
        g["update_latency_us"]["count"].as_u64().unwrap(),
        shards
            .iter()
            .map(|s| s["aws"]["shadow"][0]["update_latency_us"]["count"]
                .as_u64()
                .unwrap())
            .sum::<u64>()
    );
}
