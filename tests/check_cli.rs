//! `thingswarm check` end to end: the real binary on a shipped scenario and an invalid one.

use assert_cmd::Command;
use predicates::prelude::*;

#[test]
fn check_quickstart_prints_the_plan() {
    let certs = tempfile::tempdir().unwrap();
    Command::cargo_bin("thingswarm")
        .unwrap()
        .args(["check", "scenarios/quickstart.toml", "--certs-dir"])
        .arg(certs.path())
        .assert()
        .success()
        .stdout(predicate::str::contains("scenario quickstart"))
        .stdout(predicate::str::contains("300"))
        .stdout(predicate::str::contains("sensor-00000 .. sensor-00299"))
        .stdout(predicate::str::contains("0 cached, 300 to generate"));
    // check signs nothing and creates no cache entries.
    assert_eq!(std::fs::read_dir(certs.path()).unwrap().count(), 0);
}

#[test]
fn check_with_target_override() {
    let certs = tempfile::tempdir().unwrap();
    Command::cargo_bin("thingswarm")
        .unwrap()
        .args([
            "check",
            "scenarios/connect-storm.toml",
            "--target",
            "mqtts://127.0.0.1:8883",
            "--insecure",
            "--certs-dir",
        ])
        .arg(certs.path())
        .assert()
        .success()
        .stdout(predicate::str::contains("mqtts://127.0.0.1:8883"))
        .stdout(predicate::str::contains("NOT verified"));
}

#[test]
fn check_invalid_exits_2_with_position() {
    let file = "tests/fixtures/scenarios/invalid/bad-rate.toml";
    Command::cargo_bin("thingswarm")
        .unwrap()
        .args(["check", file])
        .assert()
        .code(2)
        .stderr(predicate::str::contains(format!("{file}:8:")))
        .stderr(predicate::str::contains("\"fast\" is not a rate"));
}

#[test]
fn check_insecure_with_embedded_target_exits_2() {
    Command::cargo_bin("thingswarm")
        .unwrap()
        .args(["check", "scenarios/quickstart.toml", "--insecure"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains(
            "--insecure applies to an external --target only",
        ));
}

#[test]
fn check_lists_expectations() {
    let certs = tempfile::tempdir().unwrap();
    Command::cargo_bin("thingswarm")
        .unwrap()
        .args(["check", "scenarios/policy-denials.toml", "--certs-dir"])
        .arg(certs.path())
        .assert()
        .success()
        .stdout(predicate::str::contains(
            "expectations (18 probe(s) after the load)",
        ))
        .stdout(predicate::str::contains(
            "sensor-02 publish dt/sensor-00/temperature: deny (observer monitor-0)",
        ));
}
