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

#[cfg(feature = "embedded-broker")]
#[test]
fn telemetry_runs_headless_with_json_payloads_and_reports_traffic() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let assert = Command::cargo_bin("thingswarm")
        .unwrap()
        .args(["run", "scenarios/telemetry.toml", "--certs-dir"])
        .arg(tmp.path().join("certs"))
        .arg("--out")
        .arg(&out)
        .timeout(std::time::Duration::from_secs(180))
        .assert()
        .success();
    let stdout = String::from_utf8_lossy(&assert.get_output().stdout).into_owned();
    assert!(
        stdout.contains("traffic    steady 16.0 s of 20.0 s"),
        "{stdout}"
    );
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("report.json")).unwrap()).unwrap();
    let t = &report["traffic"];
    let sent = t["whole"]["sent"].as_u64().unwrap();
    // 1,000 sensors at 1/s (Poisson) for 20 s: about 20,000 messages.
    assert!((16_000..=24_000).contains(&sent), "sent {sent}");
    assert_eq!(
        t["whole"]["delivered"], sent,
        "the dashboard hears every sensor"
    );
    assert_eq!(t["sequence"]["lost"], 0);
    assert_eq!(t["sequence"]["duplicates"], 0);
    let steady = &t["steady"];
    assert!(
        steady["delivered_per_s"].as_f64().unwrap() > 800.0,
        "{steady}"
    );
    for metric in ["ack_latency_us", "e2e_corrected_us", "e2e_uncorrected_us"] {
        assert!(
            steady[metric]["count"].as_u64().unwrap() > 10_000,
            "{metric}"
        );
        assert!(
            steady[metric]["p99"].as_u64() >= steady[metric]["p50"].as_u64(),
            "{metric}"
        );
    }
    // Corrected latency starts at the intended time, so it is never below the uncorrected.
    assert!(
        steady["e2e_corrected_us"]["p50"].as_u64() >= steady["e2e_uncorrected_us"]["p50"].as_u64()
    );
    assert!(report["definitions"]["traffic.rate"]
        .as_str()
        .unwrap()
        .contains("per device"));
}
