//! `run --out DIR` outputs, SLO verdicts, `report` and `compare`, through the real binary:
//! report.json against the committed schema, HDR interval logs round-tripped through the
//! hdrhistogram crate's reader, junit.xml parsed, exit codes.

use std::path::Path;

use assert_cmd::Command;
use base64::Engine as _;
use hdrhistogram::serialization::interval_log::{IntervalLogIterator, LogEntry};
use hdrhistogram::serialization::Deserializer;
use hdrhistogram::Histogram;
use serde_json::Value;
use thingswarm::stats::Percentiles;

const FIXTURE: &str = "tests/fixtures/reports/base.json";

mod common;
use common::schema_errors;

fn read_json(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

/// Sum of every interval of an `.hlog`, read with the crate's interval log reader.
fn hlog_total(path: &Path) -> (Histogram<u64>, usize) {
    let text = std::fs::read(path).unwrap();
    let mut total = thingswarm::stats::histogram::latency();
    let mut intervals = 0;
    for entry in IntervalLogIterator::new(&text) {
        if let LogEntry::Interval(iv) = entry.unwrap() {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(iv.encoded_histogram())
                .unwrap();
            let h: Histogram<u64> = Deserializer::new()
                .deserialize(&mut bytes.as_slice())
                .unwrap();
            total.add(&h).unwrap();
            intervals += 1;
        }
    }
    (total, intervals)
}

/// The report's own serialised histogram.
fn report_hist(h: &Value) -> Histogram<u64> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(h["hdr"].as_str().unwrap())
        .unwrap();
    Deserializer::new()
        .deserialize(&mut bytes.as_slice())
        .unwrap()
}

#[cfg(feature = "embedded-broker")]
#[test]
fn a_failed_slo_exits_1_and_every_output_is_valid() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let assert = Command::cargo_bin("thingswarm")
        .unwrap()
        .args(["run", "tests/fixtures/outputs.toml", "--no-tui"])
        .args(["--slo", "connect_p50<1us", "--slo", "delivered_rate>=1/s"])
        .arg("--certs-dir")
        .arg(tmp.path().join("certs"))
        .arg("--out")
        .arg(&out)
        .timeout(std::time::Duration::from_secs(120))
        .assert()
        .code(1);
    let stdout = String::from_utf8_lossy(&assert.get_output().stdout).into_owned();
    assert!(
        stdout.contains("slo        FAIL connect_p50 < 1us"),
        "{stdout}"
    );
    assert!(stdout.contains("slo        PASS e2e_p99 < 30s"), "{stdout}");

    // report.json: valid against the committed schema, SLOs listed with measured values.
    let report = read_json(&out.join("report.json"));
    assert_eq!(schema_errors(&report), Vec::<String>::new());
    let slos = report["slos"].as_array().unwrap();
    assert_eq!(slos.len(), 7, "five from [slo], then two flags");
    assert_eq!(slos[0]["slo"], "connect_p99 <= 30s");
    assert_eq!(slos[5]["slo"], "connect_p50 < 1us");
    assert_eq!(slos[5]["passed"], false);
    assert_eq!(
        slos[5]["measured"].as_f64().unwrap(),
        report["connect_latency_us"]["p50"].as_f64().unwrap()
    );
    assert_eq!(slos.iter().filter(|s| s["passed"] == true).count(), 6);

    // report.html leads with the verdicts, and says what TLS the devices negotiated.
    let page = std::fs::read_to_string(out.join("report.html")).unwrap();
    for needle in [
        "<h2>SLOs</h2>",
        "connect_p50 &lt; 1us",
        "<b>FAIL</b>",
        "<h2>TLS</h2>",
        "TLSv1.",
    ] {
        assert!(page.contains(needle), "{needle} missing from report.html");
    }
    // junit.xml: one testcase per SLO, one failure.
    let xml = std::fs::read_to_string(out.join("junit.xml")).unwrap();
    let doc = roxmltree::Document::parse(&xml).unwrap();
    let cases: Vec<_> = doc
        .descendants()
        .filter(|n| n.has_tag_name("testcase"))
        .collect();
    assert_eq!(cases.len(), 7);
    let failed: Vec<_> = cases
        .iter()
        .filter(|c| c.children().any(|n| n.has_tag_name("failure")))
        .collect();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].attribute("name"), Some("connect_p50 < 1us"));
    assert_eq!(doc.root_element().attribute("failures"), Some("1"));

    // HDR interval logs: the intervals add up to the report's cumulative histograms.
    for (file, hist) in [
        ("connect.hlog", &report["connect_latency_us"]),
        ("ack.hlog", &report["traffic"]["whole"]["ack_latency_us"]),
        ("e2e.hlog", &report["traffic"]["whole"]["e2e_corrected_us"]),
        (
            "e2e_uncorrected.hlog",
            &report["traffic"]["whole"]["e2e_uncorrected_us"],
        ),
    ] {
        let (total, intervals) = hlog_total(&out.join(file));
        assert!(intervals >= 3, "{file}: {intervals} intervals");
        let expected = report_hist(hist);
        assert!(!total.is_empty(), "{file}");
        assert_eq!(
            Percentiles::of(&total),
            Percentiles::of(&expected),
            "{file}"
        );
        assert_eq!(hist["p99"].as_u64().unwrap(), total.value_at_quantile(0.99));
    }

    // `report DIR` prints the run's summary again, from report.json.
    let again = Command::cargo_bin("thingswarm")
        .unwrap()
        .arg("report")
        .arg(&out)
        .assert()
        .success();
    let again = String::from_utf8_lossy(&again.get_output().stdout).into_owned();
    let run_summary = stdout.rsplit_once("  report     ").unwrap().0;
    assert_eq!(again, run_summary);

    // `report DIR --html -` re-renders the page from report.json alone, byte for byte.
    let page = Command::cargo_bin("thingswarm")
        .unwrap()
        .args(["report", "--html", "-"])
        .arg(&out)
        .assert()
        .success();
    let written = std::fs::read(Path::new(&out).join("report.html")).unwrap();
    assert_eq!(page.get_output().stdout, written);
}

/// The fixture with every latency figure multiplied by `factor` (and rates divided by it).
fn worse_by(factor: f64, dir: &Path) -> std::path::PathBuf {
    let mut r = read_json(Path::new(FIXTURE));
    let scale = |h: &mut Value| {
        for p in ["p50", "p90", "p99", "p99_9", "max"] {
            let v = h[p].as_u64().unwrap() as f64;
            h[p] = Value::from((v * factor).round() as u64);
        }
    };
    scale(&mut r["connect_latency_us"]);
    for m in ["ack_latency_us", "e2e_corrected_us", "e2e_uncorrected_us"] {
        scale(&mut r["traffic"]["steady"][m]);
    }
    for k in ["sent_per_s", "delivered_per_s"] {
        let v = r["traffic"]["steady"][k].as_f64().unwrap();
        r["traffic"]["steady"][k] = Value::from(v / factor);
    }
    let path = dir.join(format!("x{factor}.json"));
    std::fs::write(&path, serde_json::to_vec(&r).unwrap()).unwrap();
    path
}

#[test]
fn compare_flags_a_20_percent_regression_and_passes_2_percent() {
    let tmp = tempfile::tempdir().unwrap();
    let worse = worse_by(1.2, tmp.path());
    let assert = Command::cargo_bin("thingswarm")
        .unwrap()
        .args(["compare", FIXTURE])
        .arg(&worse)
        .assert()
        .code(1);
    let text = String::from_utf8_lossy(&assert.get_output().stdout).into_owned();
    let line = |name: &str| {
        text.lines()
            .find(|l| l.starts_with(&format!("{name} (")))
            .unwrap_or_else(|| panic!("{name} missing:\n{text}"))
            .to_string()
    };
    assert!(line("e2e_p99").ends_with("REGRESSION"), "{text}");
    assert!(line("e2e_p99").contains("1.200x"), "{text}");
    assert!(line("delivered_rate").ends_with("REGRESSION"), "{text}");
    assert!(line("loss").ends_with("ok"), "{text}");
    assert!(text.contains("metrics regressed beyond 10.0%"), "{text}");

    let slight = worse_by(1.02, tmp.path());
    let assert = Command::cargo_bin("thingswarm")
        .unwrap()
        .args(["compare", FIXTURE])
        .arg(&slight)
        .args(["--format", "markdown"])
        .assert()
        .success();
    let md = String::from_utf8_lossy(&assert.get_output().stdout).into_owned();
    assert!(
        md.starts_with("| metric | base | current | delta | ratio | verdict |"),
        "{md}"
    );
    assert!(md.contains("| e2e_p99 (lower is better) |"), "{md}");
    assert!(!md.contains("REGRESSION"), "{md}");

    // A tighter tolerance turns the 2% change into a regression.
    Command::cargo_bin("thingswarm")
        .unwrap()
        .args(["compare", FIXTURE])
        .arg(&slight)
        .args(["--max-regression", "1%"])
        .assert()
        .code(1);
}

#[test]
fn bad_input_exits_2_naming_the_value() {
    let cases: [(&[&str], &str); 4] = [
        (
            &["compare", FIXTURE, "no/such/report.json"],
            "no/such/report.json",
        ),
        (
            &["compare", FIXTURE, FIXTURE, "--max-regression", "lots"],
            "\"lots\" is not a tolerance (expected a percentage",
        ),
        (
            &["run", "tests/fixtures/outputs.toml", "--slo", "e2e_p98<5ms"],
            "unknown SLO metric \"e2e_p98\"",
        ),
        (&["report", "tests/fixtures"], "report.json"),
    ];
    for (args, needle) in cases {
        let assert = Command::cargo_bin("thingswarm")
            .unwrap()
            .args(args)
            .assert()
            .code(2);
        let stderr = String::from_utf8_lossy(&assert.get_output().stderr).into_owned();
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
    }
}

#[test]
fn the_committed_fixture_matches_the_schema() {
    assert_eq!(
        schema_errors(&read_json(Path::new(FIXTURE))),
        Vec::<String>::new()
    );
    let mut broken = read_json(Path::new(FIXTURE));
    broken["connect_latency_us"]["p99"] = Value::from("fast");
    broken.as_object_mut().unwrap().remove("devices");
    assert_eq!(schema_errors(&broken).len(), 2);
}

#[test]
fn scenario_slo_errors_point_at_the_key() {
    use thingswarm::scenario::{Overrides, Plan};
    let base = "name = \"x\"\nduration = \"1s\"\n[[group]]\nname = \"g\"\ndevices = 1\nclient_id = \"a\"\n[slo]\n";
    for (line, needle) in [
        (
            "e2e_p98 = \"5ms\"",
            "x.toml:8:1: slo.e2e_p98: unknown SLO metric",
        ),
        (
            "e2e_p99 = \"soon\"",
            "x.toml:8:11: slo.e2e_p99: \"soon\" is not a duration",
        ),
        (
            "max_error_rate = true",
            "x.toml:8:18: slo.max_error_rate: true is not a threshold",
        ),
    ] {
        let e = Plan::from_str(
            &format!("{base}{line}\n"),
            Path::new("x.toml"),
            &Overrides::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains(needle), "{e}\n  expected: {needle}");
    }
    let plan = Plan::from_str(
        &format!("{base}e2e_p99 = \"50ms\"\nmax_error_rate = \"0.1%\"\ndelivered_rate = 100\n"),
        Path::new("x.toml"),
        &Overrides::default(),
    )
    .unwrap();
    let names: Vec<String> = plan.slos.iter().map(ToString::to_string).collect();
    assert_eq!(
        names,
        [
            "e2e_p99 <= 50ms",
            "error_rate <= 0.1%",
            "delivered_rate >= 100"
        ]
    );
}

#[cfg(feature = "embedded-broker")]
#[test]
fn ctrl_c_still_writes_every_output() {
    use std::io::{BufRead as _, BufReader};
    let tmp = tempfile::tempdir().unwrap();
    // The same tiny scenario, held long enough to be interrupted mid-traffic.
    let text = std::fs::read_to_string("tests/fixtures/outputs.toml")
        .unwrap()
        .replace("duration = \"3s\"", "duration = \"60s\"");
    let scenario = tmp.path().join("long.toml");
    std::fs::write(&scenario, text).unwrap();
    let out = tmp.path().join("out");
    let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin("thingswarm"))
        .arg("run")
        .arg(&scenario)
        .args(["--no-tui", "--slo", "e2e_p99<30s", "--certs-dir"])
        .arg(tmp.path().join("certs"))
        .arg("--out")
        .arg(&out)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id() as i32;
    // Watchdog: a hung run is killed rather than hanging the suite.
    std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_secs(90));
        unsafe { libc::kill(pid, libc::SIGKILL) };
    });
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut seen = Vec::new();
    for line in lines.by_ref().take(50) {
        let line = line.unwrap();
        let traffic = line.contains("delivered") && !line.contains("delivered 0/s");
        seen.push(line);
        if traffic {
            break;
        }
    }
    assert!(
        seen.last().is_some_and(|l| l.contains("delivered")),
        "{seen:?}"
    );
    assert_eq!(unsafe { libc::kill(pid, libc::SIGINT) }, 0);
    let _rest: Vec<_> = lines.take(200).collect();
    assert_eq!(child.wait().unwrap().code(), Some(130));
    let report = read_json(&out.join("report.json"));
    assert_eq!(report["interrupted"], true);
    assert_eq!(schema_errors(&report), Vec::<String>::new());
    assert_eq!(report["slos"][0]["slo"], "connect_p99 <= 30s");
    for file in ["junit.xml", "connect.hlog", "e2e.hlog"] {
        assert!(out.join(file).is_file(), "{file}");
    }
    let (_, intervals) = hlog_total(&out.join("e2e.hlog"));
    assert!(intervals >= 1);
}
