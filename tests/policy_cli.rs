//! `thingswarm policy eval` / `policy lint` end to end: the real binary on fixture policies.

use assert_cmd::Command;
use predicates::prelude::*;

const DIR: &str = "tests/fixtures/policy";

fn thingswarm() -> Command {
    let mut c = Command::cargo_bin("thingswarm").unwrap();
    c.current_dir(env!("CARGO_MANIFEST_DIR"));
    c
}

fn f(name: &str) -> String {
    format!("{DIR}/{name}")
}

#[test]
fn eval_single_request_names_the_deciding_statement() {
    thingswarm()
        .args(["policy", "eval", "--policy"])
        .args([
            f("per-device.json"),
            "--policy".into(),
            f("deny-admin.json"),
        ])
        .args(["--context", &f("context.json")])
        .args(["--action", "iot:Publish"])
        .args([
            "--resource",
            "arn:aws:iot:us-east-1:123456789012:topic/dt/sensor-00001/admin",
        ])
        .assert()
        .success()
        .stdout(predicate::str::starts_with("EXPLICIT_DENY"))
        .stdout(predicate::str::contains(format!(
            "by {} statement 0 (Sid \"no-admin\")",
            f("deny-admin.json")
        )));
}

#[test]
fn eval_batch_with_expectations_json() {
    let out = thingswarm()
        .args(["policy", "eval", "--format", "json"])
        .args([
            "--policy",
            &f("per-device.json"),
            "--policy",
            &f("deny-admin.json"),
        ])
        .args([
            "--context",
            &f("context.json"),
            "--requests",
            &f("requests.json"),
        ])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let doc: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(doc["mismatches"], 0);
    let decisions: Vec<&str> = doc["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["decision"].as_str().unwrap())
        .collect();
    assert_eq!(
        decisions,
        [
            "ALLOWED",
            "IMPLICIT_DENY",
            "ALLOWED",
            "EXPLICIT_DENY",
            "IMPLICIT_DENY",
            "IMPLICIT_DENY"
        ]
    );
    assert_eq!(doc["results"][2]["decided_by"]["sid"], "own-topics");
}

#[test]
fn eval_wrong_expectation_exits_1() {
    thingswarm()
        .args(["policy", "eval", "--policy", &f("per-device.json")])
        .args(["--policy", &f("deny-admin.json")])
        .args(["--context", &f("context.json")])
        .args(["--requests", &f("requests-wrong.json")])
        .assert()
        .code(1)
        .stdout(predicate::str::contains("MISMATCH: expected ALLOWED"))
        .stdout(predicate::str::contains("1 of 6 request(s) differ"));
}

#[test]
fn eval_without_context_leaves_variables_unresolved() {
    thingswarm()
        .args(["policy", "eval", "--policy", &f("per-device.json")])
        .args(["--action", "iot:Connect"])
        .args([
            "--resource",
            "arn:aws:iot:us-east-1:123456789012:client/sensor-00001",
        ])
        .assert()
        .success()
        .stdout(predicate::str::starts_with("IMPLICIT_DENY"));
}

#[test]
fn lint_reports_the_documented_bypass_and_exits_1() {
    thingswarm()
        .args(["policy", "lint", &f("bypass.json")])
        .assert()
        .code(1)
        .stdout(predicate::str::contains(
            "warning[deny-bypassed-by-mqtt-wildcard]",
        ))
        .stdout(predicate::str::contains(
            "statement 1 (Sid \"no-control-room\")",
        ))
        .stdout(predicate::str::contains("\"building/#\""));
    thingswarm()
        .args([
            "policy",
            "lint",
            &f("per-device.json"),
            &f("deny-admin.json"),
        ])
        .assert()
        .success()
        .stdout(predicate::str::contains("2 policy file(s), 0 warning(s)"));
}

#[test]
fn bad_input_is_one_line_exit_2() {
    let cases = [
        (
            f("bad-effect.json"),
            "unknown Effect \"Permit\" (expected \"Allow\" or \"Deny\")",
        ),
        (f("missing-resource.json"), "statement 0: missing Resource"),
        (f("invalid.json"), "invalid policy JSON"),
        (f("no-such-file.json"), "cannot read policy"),
    ];
    for (file, want) in cases {
        let out = thingswarm()
            .args(["policy", "lint", &file])
            .assert()
            .code(2)
            .stderr(predicate::str::contains(file.as_str()))
            .stderr(predicate::str::contains(want))
            .get_output()
            .stderr
            .clone();
        assert_eq!(String::from_utf8_lossy(&out).lines().count(), 1, "{file}");
    }
    thingswarm()
        .args(["policy", "eval", "--policy", &f("per-device.json")])
        .args([
            "--action",
            "iot:Publish",
            "--resource",
            "arn:aws:iot:us-east-1:1:topicfilter/a",
        ])
        .assert()
        .code(2)
        .stderr(predicate::str::contains(
            "iot:Publish takes a topic/... resource",
        ));
    thingswarm()
        .args(["policy", "eval", "--policy", &f("per-device.json")])
        .args(["--context", &f("requests.json"), "--action", "iot:Connect"])
        .args(["--resource", "arn:aws:iot:us-east-1:1:client/a"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("requests.json: invalid context"));
}
