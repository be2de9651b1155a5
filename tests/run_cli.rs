//! The real binary end to end: `thingswarm run` on the shipped quickstart, headless, against
//! the embedded broker; the report is validated field by field.

use assert_cmd::Command;

#[cfg(feature = "embedded-broker")]
#[test]
fn quickstart_runs_headless_and_writes_a_valid_report() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let assert = Command::cargo_bin("thingswarm")
        .unwrap()
        .args(["run", "scenarios/quickstart.toml", "--certs-dir"])
        .arg(tmp.path().join("certs"))
        .arg("--out")
        .arg(&out)
        .timeout(std::time::Duration::from_secs(120))
        .assert()
        .success();
    let stdout = String::from_utf8_lossy(&assert.get_output().stdout).into_owned();
    let stderr = String::from_utf8_lossy(&assert.get_output().stderr).into_owned();
    assert!(stdout.contains("connected  300/300"), "{stdout}\n{stderr}");
    assert!(
        stderr.contains("connected"),
        "progress lines on stderr: {stderr}"
    );

    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("report.json")).unwrap()).unwrap();
    assert_eq!(report["schema_version"], 1);
    assert_eq!(report["scenario"]["name"], "quickstart");
    assert_eq!(report["interrupted"], false);
    assert_eq!(report["target"]["embedded"], true);
    assert_eq!(report["target"]["server_verification"], "verified");
    assert_eq!(report["planned_devices"], 300);
    assert_eq!(report["devices"]["connects"], 300);
    assert_eq!(report["devices"]["failed"], 0);
    assert_eq!(report["devices"]["closed"], 300);
    let connect = &report["connect_latency_us"];
    assert_eq!(connect["count"], 300);
    for p in ["p50", "p90", "p99", "p99_9", "max"] {
        assert!(connect[p].as_u64().unwrap() > 0, "{p}");
    }
    assert!(connect["p50"].as_u64() <= connect["p99"].as_u64());
    assert!(connect["hdr"].as_str().unwrap().len() > 20);
    assert!(report["environment"]["cores"].as_u64().unwrap() >= 1);
    assert!(report["definitions"]["connect_latency_us"]
        .as_str()
        .unwrap()
        .contains("CONNACK"));
    assert_eq!(report["identities"][0]["generated"], 300);
    assert!(!report["timeline"].as_array().unwrap().is_empty());
}

#[test]
fn an_invalid_scenario_exits_2_before_connecting() {
    let tmp = tempfile::tempdir().unwrap();
    let bad = tmp.path().join("bad.toml");
    std::fs::write(&bad, "name = \"x\"\nduration = \"soon\"\n[[group]]\nname = \"g\"\ndevices = 1\nclient_id = \"a\"\n").unwrap();
    let assert = Command::cargo_bin("thingswarm")
        .unwrap()
        .arg("run")
        .arg(&bad)
        .assert()
        .code(2);
    let stderr = String::from_utf8_lossy(&assert.get_output().stderr).into_owned();
    assert!(stderr.contains("bad.toml:2:"), "{stderr}");
}

#[test]
fn an_unreachable_external_target_exits_3_with_a_report() {
    let tmp = tempfile::tempdir().unwrap();
    let certs = tmp.path().join("certs");
    let ca = thingswarm::identity::Ca::generated(&certs, Default::default(), false).unwrap();
    let ca_pem = tmp.path().join("ca.pem");
    std::fs::write(&ca_pem, thingswarm::identity::cache::pem_cert(ca.root())).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let out = tmp.path().join("out");
    let assert = Command::cargo_bin("thingswarm")
        .unwrap()
        .args([
            "run",
            "scenarios/quickstart.toml",
            "--target",
            &format!("mqtts://127.0.0.1:{port}"),
        ])
        .arg("--server-ca")
        .arg(&ca_pem)
        .arg("--certs-dir")
        .arg(&certs)
        .arg("--out")
        .arg(&out)
        .timeout(std::time::Duration::from_secs(120))
        .assert()
        .code(3);
    let stderr = String::from_utf8_lossy(&assert.get_output().stderr).into_owned();
    assert!(stderr.contains("no device could reach"), "{stderr}");
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("report.json")).unwrap()).unwrap();
    assert_eq!(report["devices"]["failed"], 300);
    assert_eq!(report["errors"][0]["class"], "tcp: refused");
}
