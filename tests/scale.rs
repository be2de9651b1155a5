//! Scale limits (issue 10): the open-file budget refuses a fleet one process cannot hold, and
//! `--source-address` spreads sessions over loopback addresses, as mosquitto sees them.

use std::collections::BTreeMap;

use assert_cmd::Command;
use predicates::prelude::*;
use thingswarm::broker::mosquitto::Mosquitto;
use thingswarm::fleet;
use thingswarm::limits::SessionBudget;
use thingswarm::scenario::{Overrides, Plan};

fn scenario(devices: u64) -> String {
    format!(
        r#"name = "scale"
duration = "1s"
[[group]]
name = "dev"
devices = {devices}
client_id = "dev-{{index:05}}"
connect = {{ rate = "200/s", max_in_flight = 20, timeout = "10s" }}
"#
    )
}

/// What the child process will have: its soft limit raised to this hard limit.
fn budget(embedded: bool) -> SessionBudget {
    SessionBudget::new(thingswarm::limits::nofile().1, embedded)
}

#[test]
fn check_and_run_refuse_a_fleet_one_process_cannot_hold() {
    let dir = tempfile::tempdir().unwrap();
    let external = budget(false);
    // Just over one process's share: two processes would hold it.
    let devices = external.sessions() + 1;
    let file = dir.path().join("big.toml");
    std::fs::write(&file, scenario(devices)).unwrap();
    let certs = dir.path().join("certs");
    let target = ["--target", "mqtts://127.0.0.1:1", "--insecure"];
    let expected = format!(
        "{devices} devices need {} open files (1 per session + 200 reserved) but one process may open {} (at most {} sessions); split the fleet: `--processes 2` on this machine or `--shard i/2` on 2 machines",
        devices + 200,
        external.open_files,
        external.sessions()
    );
    let assert = Command::cargo_bin("thingswarm")
        .unwrap()
        .arg("check")
        .arg(&file)
        .args(target)
        .arg("--certs-dir")
        .arg(&certs)
        .assert()
        .code(2)
        .stdout(predicate::str::contains(format!(
            "up to {} sessions per process",
            external.sessions()
        )))
        .stderr(predicate::str::contains(&expected));
    let stderr = String::from_utf8_lossy(&assert.get_output().stderr).to_string();
    assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");

    // `run` refuses before signing a single identity or connecting anywhere.
    Command::cargo_bin("thingswarm")
        .unwrap()
        .arg("run")
        .arg(&file)
        .args(target)
        .arg("--certs-dir")
        .arg(&certs)
        .arg("--no-tui")
        .arg("--out")
        .arg(dir.path().join("out"))
        .assert()
        .code(2)
        .stderr(predicate::str::contains(&expected));
    assert!(!certs.exists() || std::fs::read_dir(&certs).unwrap().count() == 0);

    // With the in-process embedded broker each session costs two descriptors: half the fleet
    // fits, and the message says why.
    let embedded = budget(true);
    std::fs::write(&file, scenario(embedded.sessions() + 1)).unwrap();
    Command::cargo_bin("thingswarm")
        .unwrap()
        .arg("check")
        .arg(&file)
        .arg("--certs-dir")
        .arg(&certs)
        .assert()
        .code(2)
        .stderr(predicate::str::contains("`--processes 2`"))
        .stderr(predicate::str::contains(
            "run `thingswarm broker` separately",
        ));
}

#[test]
fn a_bad_source_address_is_one_line_naming_the_value() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("s.toml");
    std::fs::write(&file, scenario(3)).unwrap();
    for (value, says) in [
        ("10.0.0.7", "only loopback source addresses reach it"),
        ("127.0.0", "not an IP address"),
        ("127.0.0.9-127.0.0.2", "the range runs backwards"),
    ] {
        let assert = Command::cargo_bin("thingswarm")
            .unwrap()
            .arg("check")
            .arg(&file)
            .args(["--source-address", value])
            .assert()
            .code(2)
            .stderr(predicate::str::contains(format!(
                "--source-address {value:?}: "
            )))
            .stderr(predicate::str::contains(says));
        let stderr = String::from_utf8_lossy(&assert.get_output().stderr).to_string();
        assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    }
    // In the file, the error points at the value.
    let text = format!(
        "{}\n[target]\nsource_addresses = [\"127.0.0.2\", \"::1\"]\n",
        scenario(3)
    );
    std::fs::write(&file, text).unwrap();
    Command::cargo_bin("thingswarm")
        .unwrap()
        .arg("check")
        .arg(&file)
        .assert()
        .code(2)
        .stderr(predicate::str::contains("s.toml:10:34:"))
        .stderr(predicate::str::contains(
            "target.source_addresses: \"::1\": ::1 and the target 127.0.0.1 are of different address families",
        ));
}

/// Every "New client connected from ADDR:PORT as CLIENT_ID" of a mosquitto log: client ID ->
/// source address.
fn sources_seen(log: &str) -> BTreeMap<String, String> {
    log.lines()
        .filter_map(|line| {
            let rest = &line[line.find("New client connected from ")? + 26..];
            let (addr, rest) = rest.split_once(" as ")?;
            let (client_id, _) = rest.split_once(' ')?;
            let ip = addr.rsplit_once(':')?.0;
            Some((client_id.to_string(), ip.to_string()))
        })
        .collect()
}

#[test]
fn source_addresses_spread_sessions_round_robin_as_the_broker_sees_them() {
    thingswarm::tls::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("spread.toml");
    let text = scenario(6);
    std::fs::write(&file, &text).unwrap();
    let certs = dir.path().join("certs");
    let plan = Plan::from_str(&text, &file, &Overrides::default()).unwrap();
    let fleets = fleet::identities(&plan, &certs).unwrap();
    let Some(broker) = Mosquitto::start_unless_missing(&[fleets[0].0.root().clone()], "").unwrap()
    else {
        return;
    };
    // The file's list, replaced by the flags (a single address and a range).
    let with_file_list = format!("{text}\n[target]\nsource_addresses = [\"127.0.0.9\"]\n");
    std::fs::write(&file, with_file_list).unwrap();
    Command::cargo_bin("thingswarm")
        .unwrap()
        .arg("run")
        .arg(&file)
        .arg("--target")
        .arg(format!("mqtts://{}", broker.addr()))
        .arg("--server-ca")
        .arg(broker.server_ca())
        .args(["--source-address", "127.0.0.2"])
        .args(["--source-address", "127.0.0.3-127.0.0.4"])
        .arg("--certs-dir")
        .arg(&certs)
        .arg("--out")
        .arg(dir.path().join("out"))
        .arg("--no-tui")
        .timeout(std::time::Duration::from_secs(60))
        .assert()
        .success()
        .stderr(predicate::str::contains(
            "3 source addresses, round-robin by device: 127.0.0.2, 127.0.0.3, 127.0.0.4",
        ));
    let seen = sources_seen(&broker.log());
    let expected: BTreeMap<String, String> = (0..6)
        .map(|i| {
            (
                format!("dev-{i:05}"),
                ["127.0.0.2", "127.0.0.3", "127.0.0.4"][i % 3].to_string(),
            )
        })
        .collect();
    assert_eq!(seen, expected, "mosquitto log:\n{}", broker.log());
}
