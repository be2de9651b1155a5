//! Connection lifecycle against mosquitto (issue 14 items 1, 2, 4): churn keeps the connected
//! count near its target without counting offline time as loss; a drop-all event is followed by
//! 100% recovery, with jittered backoff spreading the attempts and fixed backoff not; wills
//! arrive for abrupt ends and not for clean ones. Every run is bounded (a few seconds) and
//! traffic stays on loopback; assertions are on recorded counts and times, not on speed.

use std::path::Path;
use std::time::Duration;

use thingswarm::broker::mosquitto::Mosquitto;
use thingswarm::fleet::lifecycle::LifecycleReport;
use thingswarm::fleet::{Endpoint, RunResult};
use thingswarm::scenario::{Overrides, Plan};
use thingswarm::tls::install_crypto_provider;

mod common;

/// One run at a time: they share two cores with the rest of the suite.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// Runs `scenario` against a fresh mosquitto; `None` when mosquitto is missing outside CI.
fn run(scenario: &str) -> Option<RunResult> {
    install_crypto_provider();
    let plan =
        Plan::from_str(scenario, Path::new("lifecycle.toml"), &Overrides::default()).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let fleets = common::identities(&plan, tmp.path());
    let broker = Mosquitto::start_unless_missing(&[fleets[0].root().clone()], "").unwrap()?;
    let endpoint = Endpoint::verified(broker.addr(), broker.server_ca_der()).unwrap();
    Some(common::run_fleet(&plan, fleets, endpoint))
}

/// The report part, checked against the committed schema.
fn lifecycle(result: &RunResult) -> &LifecycleReport {
    let report = result.lifecycle.as_ref().expect("a lifecycle report");
    let value = serde_json::to_value(report).unwrap();
    eprintln!("lifecycle: {value}");
    let errors = common::schema_errors_in("lifecycle", &value);
    assert!(errors.is_empty(), "{errors:?}\n{value:#}");
    report
}

#[test]
fn churn_keeps_the_connected_count_near_its_target_and_offline_time_is_not_loss() {
    // 40 devices, lifetime 2 s (exponential), offline 1 s: 2/3 connected (~26.7) at steady
    // state, 40 / 3 s = 13.3 churn connects/s. They publish at QoS 1 to a steady sink.
    let scenario = r#"
name = "churn"
duration = "8s"
[[group]]
name = "sink"
devices = 1
client_id = "sink"
subscribe = [{ filter = "c/#", qos = 1 }]
[[group]]
name = "churners"
devices = 40
client_id = "churn-{index:02}"
publish = { topic = "c/{client_id}", qos = 1, rate = "5/s", size = 40 }
churn = { lifetime = "exponential(2s)", offline = "1s", end = "clean" }
"#;
    let _serial = serial();
    let Some(result) = run(scenario) else { return };
    let life = lifecycle(&result);
    let churn = life.groups[0].churn.as_ref().expect("churn figures");
    assert_eq!(churn.end, "clean");
    assert!((churn.target_connects_per_s - 13.333).abs() < 0.01);
    assert!(churn.reconnects >= 40, "{churn:?}");
    assert_eq!(churn.ended_abrupt, 0);
    assert!(churn.ended_clean >= churn.reconnects);
    assert_eq!(churn.connect_latency_us.count, churn.reconnects);
    assert!(
        (6.0..=22.0).contains(&churn.measured_connects_per_s),
        "{churn:?}"
    );
    // Connected over the steady part (skip the first 3 s: ramp and the first lifetimes).
    let steady: Vec<u64> = life
        .timeline
        .iter()
        .filter(|p| p.t >= 3.0 && p.t <= 8.0)
        .map(|p| p.connected)
        .collect();
    assert!(steady.len() >= 3, "{:?}", life.timeline);
    let mean = steady.iter().sum::<u64>() as f64 / steady.len() as f64;
    // +1: the sink.
    let target = 1.0 + 40.0 * 2.0 / 3.0;
    assert!(
        (mean - target).abs() <= 0.25 * target,
        "mean connected {mean:.1} vs target {target:.1}: {steady:?}"
    );
    assert!(life.timeline.iter().any(|p| p.disconnects_per_s > 0.0));
    // Offline by design is not loss: nothing owed, nothing lost, every message acknowledged.
    let counts = result.last.groups[1];
    assert_eq!(counts.never_sent, 0, "{counts:?}");
    assert_eq!(counts.failed, 0, "{:?}", result.last.errors);
    let traffic = result.traffic.as_ref().expect("traffic");
    assert_eq!(traffic.sequence.lost, 0, "{:?}", traffic.sequence);
    assert!(traffic.sequence.unique > 100);
    assert_eq!(traffic.sent_not_acked, 0);
    assert!(life.storms.is_empty());
    assert!(life.wills.is_none());
}

fn storm(reconnect: &str) -> String {
    format!(
        r#"
name = "storm"
duration = "5s"
seed = 3
[[group]]
name = "fleet"
devices = 30
client_id = "storm-{{index:02}}"
reconnect = {reconnect}
[[event]]
at = "1500ms"
action = "drop-all"
group = "fleet"
"#
    )
}

/// Spread of the first attempt of each device after the drop: interquartile range, seconds.
fn first_attempt_iqr(times: &[f64]) -> f64 {
    // Every device's first attempt comes before any retry with these plans (no failures).
    let q = |p: f64| times[((times.len() - 1) as f64 * p).round() as usize];
    q(0.75) - q(0.25)
}

#[test]
fn after_a_drop_all_every_device_comes_back_and_jitter_spreads_the_attempts() {
    let _serial = serial();
    let Some(jittered) = run(&storm(r#"{ initial = "1s", max = "2s" }"#)) else {
        return;
    };
    let life = lifecycle(&jittered);
    assert_eq!(life.storms.len(), 1, "{life:?}");
    let s = &life.storms[0];
    assert_eq!(
        (s.group.as_str(), s.dropped, s.back),
        ("fleet", 30, 30),
        "{s:?}"
    );
    assert!((1.4..2.5).contains(&s.t), "{s:?}");
    let (p50, p100) = (s.back_s.p50.unwrap(), s.back_s.p100.unwrap());
    assert!(p50 <= s.back_s.p90.unwrap() && s.back_s.p99.unwrap() <= p100);
    assert_eq!(s.attempts, 30 + s.failed_attempts, "{s:?}");
    assert!(s.refusals.is_empty(), "{s:?}");
    // Full jitter over [0, 1 s]: first attempts spread across the interval (uniform IQR is
    // 0.5 s), not synchronised.
    let iqr = first_attempt_iqr(&s.attempt_times_s);
    assert!(iqr >= 0.2, "attempts {:?}", s.attempt_times_s);
    let counts = jittered.last.groups[0];
    assert_eq!((counts.disconnects, counts.reconnects), (30, 30));
    assert_eq!(counts.connected, 0, "all closed at the end");
    assert_eq!(counts.closed, 30);
    assert_eq!(jittered.lifecycle_events.len(), 1);
    assert_eq!(jittered.lifecycle_events[0].connections, Some(30));
    assert_eq!(jittered.lifecycle_events[0].fault, "drop-all group fleet");

    // Fixed backoff: everybody tries again after the same 500 ms, in lockstep.
    let Some(fixed) = run(&storm(r#"{ fixed = "500ms" }"#)) else {
        return;
    };
    let s = &lifecycle(&fixed).storms[0];
    assert_eq!((s.dropped, s.back), (30, 30), "{s:?}");
    let first = &s.attempt_times_s;
    assert!(
        first[0] >= 0.45,
        "no attempt before the fixed delay: {first:?}"
    );
    let fixed_iqr = first_attempt_iqr(first);
    assert!(
        fixed_iqr < iqr / 2.0,
        "fixed {fixed_iqr:.3}s vs jittered {iqr:.3}s: {first:?}"
    );
}

#[test]
fn wills_arrive_for_abrupt_ends_and_not_for_clean_ones() {
    // The abrupt group speaks MQTT 5, the clean one 3.1.1 (the CLI test below covers 3.1.1
    // wills from a drop-all on the embedded broker).
    let scenario = r#"
name = "wills"
duration = "5s"
[[group]]
name = "watch"
devices = 1
client_id = "watcher"
subscribe = [{ filter = "will/#", qos = 1 }]
[[group]]
name = "power"
devices = 8
client_id = "power-{index}"
protocol = "5"
churn = { lifetime = "uniform(800ms, 1200ms)", offline = "500ms", end = "abrupt" }
will = { topic = "will/{group}/{client_id}", payload = "power lost", qos = 1 }
[[group]]
name = "polite"
devices = 8
client_id = "polite-{index}"
churn = { lifetime = "uniform(800ms, 1200ms)", offline = "500ms", end = "clean" }
will = { topic = "will/{group}/{client_id}", payload = "power lost", qos = 1 }
"#;
    let _serial = serial();
    let Some(result) = run(scenario) else { return };
    let life = lifecycle(&result);
    let abrupt = life.groups[0].churn.as_ref().unwrap();
    let clean = life.groups[1].churn.as_ref().unwrap();
    assert!(abrupt.ended_abrupt >= 8, "{abrupt:?}");
    assert!(
        clean.ended_clean >= 8 && clean.ended_abrupt == 0,
        "{clean:?}"
    );
    let wills = life.wills.as_ref().expect("wills figures");
    assert_eq!(wills.watchers, 1);
    assert_eq!(wills.expected, abrupt.ended_abrupt);
    assert_eq!(
        (wills.received, wills.unexpected),
        (wills.expected, 0),
        "{wills:?} {:?}",
        result.last.errors
    );
}

#[test]
fn check_prints_the_lifecycle_plan_of_the_shipped_storm() {
    use assert_cmd::Command;
    use predicates::prelude::*;
    let certs = tempfile::tempdir().unwrap();
    Command::cargo_bin("thingswarm")
        .unwrap()
        .args(["check", "scenarios/reconnect-storm.toml", "--certs-dir"])
        .arg(certs.path())
        .timeout(Duration::from_secs(60))
        .assert()
        .success()
        .stdout(predicate::str::contains(
            "reconnect:      exponential backoff, full jitter, ceiling 500ms doubling to 8s",
        ))
        .stdout(predicate::str::contains(
            "will:           will/{client_id} QoS 1 (watch with will/+)",
        ))
        .stdout(predicate::str::contains("at 8s: drop-all group fleet"));
}

/// The real binary, embedded broker: a drop-all and a churning group end to end; the whole
/// report validates against the schema and the summary names the storm, churn and wills.
#[cfg(feature = "embedded-broker")]
#[test]
fn a_storm_run_writes_a_valid_report_with_its_lifecycle() {
    use assert_cmd::Command;
    let _serial = serial();
    let tmp = tempfile::tempdir().unwrap();
    let scenario = tmp.path().join("storm.toml");
    std::fs::write(
        &scenario,
        r#"
name = "mini-storm"
duration = "3s"
[[group]]
name = "watcher"
devices = 1
client_id = "w"
subscribe = [{ filter = "gone/#", qos = 1 }]
[[group]]
name = "fleet"
devices = 20
client_id = "f-{index:02}"
reconnect = { initial = "300ms", max = "1s" }
will = { topic = "gone/{client_id}", payload = "bye" }
[[group]]
name = "churn"
devices = 10
client_id = "c-{index:02}"
churn = { lifetime = "500ms", offline = "200ms", end = "abrupt" }
[[event]]
at = "1500ms"
action = "drop-all"
group = "fleet"
"#,
    )
    .unwrap();
    let out = tmp.path().join("out");
    let assert = Command::cargo_bin("thingswarm")
        .unwrap()
        .arg("run")
        .arg(&scenario)
        .args(["--no-tui", "--certs-dir"])
        .arg(tmp.path().join("certs"))
        .arg("--out")
        .arg(&out)
        .timeout(Duration::from_secs(120))
        .assert()
        .success();
    let stdout = String::from_utf8_lossy(&assert.get_output().stdout).into_owned();
    assert!(stdout.contains("storm      t=1."), "{stdout}");
    assert!(stdout.contains("fleet: 20 dropped, 20 back"), "{stdout}");
    assert!(stdout.contains("churn      churn:"), "{stdout}");
    assert!(
        stdout.contains("wills      expected 20  received 20  unexpected 0"),
        "{stdout}"
    );
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("report.json")).unwrap()).unwrap();
    let schema: serde_json::Value = serde_json::from_str(thingswarm::report::SCHEMA_JSON).unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();
    let errors: Vec<String> = validator
        .iter_errors(&report)
        .map(|e| format!("{}: {e}", e.instance_path()))
        .collect();
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(report["faults"][0]["fault"], "drop-all group fleet");
    assert_eq!(report["faults"][0]["connections"], 20);
    assert_eq!(report["lifecycle"]["storms"][0]["back"], 20);
    let churn = &report["lifecycle"]["groups"][0]["churn"];
    assert_eq!(churn["end"], "abrupt");
    assert!(churn["ended_abrupt"].as_u64().unwrap() >= 10, "{churn}");
}
