//! `[[expect]]` end to end: the real binary runs a scenario against mosquitto (acl_file
//! `pattern readwrite dt/%u/#`, an observer allowed everything), writes the `expectations`
//! report section, and exits 1 when an expectation is deliberately wrong.

use std::path::Path;

use assert_cmd::Command;
use predicates::prelude::*;
use thingswarm::broker::mosquitto::Mosquitto;
use thingswarm::fleet;
use thingswarm::scenario::{Overrides, Plan};

mod common;

const SCENARIO: &str = r#"
name = "policy-probes"
duration = "1s"

[target]
protocol = "PROTOCOL"

[[group]]
name = "dev"
devices = 2
client_id = "dev-{index}"

[[group]]
name = "observer"
devices = 1
client_id = "observer-{index}"

[[expect]]
device = "dev-0"
connect = true
outcome = "allow"

[[expect]]
group = "dev"
publish = "dt/{client_id}/temp"
outcome = "allow"
observer = "observer-0"
wait = "1s"

[[expect]]
group = "dev"
subscribe = "dt/{other_client_id}/#"
outcome = "deny"
observer = "observer-0"
wait = "1s"

[[expect]]
group = "dev"
publish = "dt/{other_client_id}/temp"
outcome = "deny"
observer = "observer-0"
wait = "1s"
"#;

const ACL: &str = "pattern readwrite dt/%u/#\n\nuser observer-0\ntopic readwrite #\n";

const WRONG: &str = r#"
[[expect]]
device = "dev-1"
receive = "dt/dev-0/cmd"
outcome = "allow"
observer = "observer-0"
wait = "1s"
"#;

/// Runs the binary on `scenario` against a fresh mosquitto; None when mosquitto is missing
/// outside CI.
/// Runs `scenario` against mosquitto with `acl_text`: the assertion, report.json and junit.xml.
fn run(
    scenario: &str,
    acl_text: &str,
) -> Option<(assert_cmd::assert::Assert, serde_json::Value, String)> {
    thingswarm::tls::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("probes.toml");
    std::fs::write(&file, scenario).unwrap();
    let certs = dir.path().join("certs");
    let plan = Plan::from_str(scenario, &file, &Overrides::default()).unwrap();
    let fleets = fleet::identities(&plan, &certs).unwrap();
    let acl = dir.path().join("acl");
    std::fs::write(&acl, acl_text).unwrap();
    let roots = [fleets[0].0.root().clone(), fleets[1].0.root().clone()];
    let acl_config = format!("acl_file {}\n", acl.display());
    let broker = Mosquitto::start_unless_missing(&roots, &acl_config).unwrap()?;
    let out = dir.path().join("out");
    let assert = Command::cargo_bin("thingswarm")
        .unwrap()
        .arg("run")
        .arg(&file)
        .arg("--target")
        .arg(format!("mqtts://{}", broker.addr()))
        .arg("--server-ca")
        .arg(broker.server_ca())
        .arg("--certs-dir")
        .arg(&certs)
        .arg("--out")
        .arg(&out)
        .arg("--no-tui")
        .timeout(std::time::Duration::from_secs(120))
        .assert();
    let report = std::fs::read_to_string(Path::new(&out).join("report.json")).unwrap();
    let junit = std::fs::read_to_string(Path::new(&out).join("junit.xml")).unwrap();
    Some((assert, serde_json::from_str(&report).unwrap(), junit))
}

fn check(protocol: &str) {
    let scenario = SCENARIO.replace("PROTOCOL", protocol);
    let Some((assert, report, _)) = run(&scenario, ACL) else {
        return;
    };
    assert.success().stdout(predicate::str::contains(
        "expectations 7 checked, 7 held, 0 MISMATCHED",
    ));
    let e = &report["expectations"];
    assert_eq!(
        (e["total"].as_u64(), e["mismatches"].as_u64()),
        (Some(7), Some(0))
    );
    assert_eq!(e["groups"][0]["group"], "dev");
    let signals: Vec<&str> = e["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["signal"].as_str().unwrap())
        .collect();
    assert_eq!(signals[0], "CONNACK accepted");
    assert_eq!(signals[1], "PUBACK, delivered");
    assert_eq!(signals[3], "SUBACK granted, not delivered within 1s");

    let wrong = format!("{scenario}{WRONG}");
    let Some((assert, report, junit)) = run(&wrong, ACL) else {
        return;
    };
    assert
        .code(1)
        .stdout(predicate::str::contains("expectations 8 checked, 7 held, 1 MISMATCHED"))
        .stdout(predicate::str::contains(
            "MISMATCH dev-1 receive dt/dev-0/cmd: expected allow, observed deny (SUBACK granted, not delivered within 1s)",
        ));
    // junit.xml: one test case per expectation, the mismatch as its one failure.
    let doc = roxmltree::Document::parse(&junit).unwrap();
    let cases: Vec<_> = doc
        .descendants()
        .filter(|n| n.has_tag_name("testcase"))
        .collect();
    assert_eq!(cases.len(), 8, "{junit}");
    let failed: Vec<_> = cases
        .iter()
        .filter(|c| c.children().any(|n| n.has_tag_name("failure")))
        .collect();
    assert_eq!(failed.len(), 1, "{junit}");
    assert!(
        failed[0]
            .attribute("name")
            .unwrap()
            .contains("dev-1 receive dt/dev-0/cmd"),
        "{junit}"
    );
    // The report, with its expectations section, fits the committed schema.
    let errors = common::schema_errors(&report);
    assert!(errors.is_empty(), "{errors:#?}");
    // Mismatches come first.
    let first = &report["expectations"]["results"][0];
    assert_eq!(first["holds"], false);
    assert_eq!(first["client_id"], "dev-1");
}

#[test]
fn run_expectations_v311() {
    check("3.1.1");
}

#[test]
fn run_expectations_v5() {
    check("5");
}

#[test]
fn shipped_policy_denials_scenario_holds_against_its_acl() {
    let text = std::fs::read_to_string("scenarios/policy-denials.toml").unwrap();
    let acl = std::fs::read_to_string("scenarios/policy-denials.acl").unwrap();
    let Some((assert, report, _)) = run(&text, &acl) else {
        return;
    };
    assert.success().stdout(predicate::str::contains(
        "expectations 18 checked, 18 held, 0 MISMATCHED",
    ));
    assert_eq!(report["expectations"]["groups"][0]["group"], "sensors");
}

/// `[policy]`: the expectation matrix comes from an AWS IoT policy (each device its own
/// `dt/<client id>/*`); a broker configured the same way agrees, one that lets every device
/// read and write everything is caught (exit 1).
fn policy_scenario() -> String {
    let policy = format!(
        "{}/tests/fixtures/policy/per-device.json",
        env!("CARGO_MANIFEST_DIR")
    );
    format!(
        r#"
name = "policy-matrix"
duration = "1s"

[[group]]
name = "dev"
devices = 2
client_id = "dev-{{index}}"

[[group]]
name = "observer"
devices = 1
client_id = "observer-{{index}}"

[policy]
files = [{policy:?}]
arn = "arn:aws:iot:us-east-1:123456789012"
group = "dev"
topics = ["dt/{{client_id}}/temp", "dt/{{other_client_id}}/temp"]
observer = "observer-0"
wait = "1s"
"#
    )
}

#[test]
fn policy_matrix_agrees_with_a_matching_broker() {
    let Some((assert, report, _)) = run(&policy_scenario(), ACL) else {
        return;
    };
    assert.success().stdout(predicate::str::contains(
        "expectations 14 checked, 14 held, 0 MISMATCHED",
    ));
    let results = report["expectations"]["results"].as_array().unwrap();
    let denied = results.iter().filter(|r| r["expected"] == "deny").count();
    assert_eq!(
        denied, 6,
        "the neighbour's publish/subscribe/receive, per device"
    );
}

#[test]
fn policy_matrix_catches_a_broker_that_differs() {
    let too_open = "pattern readwrite #\n";
    let Some((assert, _, _)) = run(&policy_scenario(), too_open) else {
        return;
    };
    assert
        .code(1)
        .stdout(predicate::str::contains(
            "expectations 14 checked, 8 held, 6 MISMATCHED",
        ))
        .stdout(predicate::str::contains(
            "MISMATCH dev-0 publish dt/dev-1/temp: expected deny, observed allow (PUBACK, delivered)",
        ));
}

/// The same `[policy]` scenario with no target: the embedded broker enforces the policy (the
/// observer unrestricted) and the probes agree, with zero set-up.
#[test]
fn policy_matrix_holds_on_the_embedded_broker() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("policy.toml");
    std::fs::write(&file, policy_scenario()).unwrap();
    Command::cargo_bin("thingswarm")
        .unwrap()
        .arg("run")
        .arg(&file)
        .arg("--certs-dir")
        .arg(dir.path().join("certs"))
        .arg("--out")
        .arg(dir.path().join("out"))
        .arg("--no-tui")
        .timeout(std::time::Duration::from_secs(120))
        .assert()
        .success()
        .stdout(predicate::str::contains(
            "expectations 14 checked, 14 held, 0 MISMATCHED",
        ));
}
