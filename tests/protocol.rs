//! Protocol breadth against mosquitto started by each test (mTLS, loopback, a few seconds
//! each): persistent sessions that go offline find their queued QoS 1 messages on return (and
//! a clean-session control group loses them), a late subscriber receives the retained
//! message, a shared subscription splits messages among its members with no loss counted,
//! MQTT 5 options flow or are reported refused, and a WSS listener with client certificates
//! takes the fleet.

use std::path::Path;

use thingswarm::broker::mosquitto::{Mosquitto, CAFILE, CERTFILE, KEYFILE};
use thingswarm::fleet::protocol::GroupProtocolReport;
use thingswarm::fleet::{Endpoint, RunResult};
use thingswarm::scenario::{Overrides, Plan};
use thingswarm::tls::install_crypto_provider;

mod common;

/// The tests measure message timing against one mosquitto each: one at a time on 2 cores.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn plan(scenario: &str, overrides: &Overrides) -> Plan {
    Plan::from_str(scenario, Path::new("protocol.toml"), overrides).unwrap()
}

/// Runs `scenario` against a fresh mosquitto with `extra_config`; `None` when mosquitto is
/// missing outside CI.
fn run_against_mosquitto(scenario: &str, extra_config: &str) -> Option<(Plan, RunResult)> {
    install_crypto_provider();
    let plan = plan(scenario, &Overrides::default());
    let tmp = tempfile::tempdir().unwrap();
    let fleets = common::identities(&plan, tmp.path());
    let broker =
        Mosquitto::start_unless_missing(&[fleets[0].root().clone()], extra_config).unwrap()?;
    let endpoint = Endpoint::verified(broker.addr(), broker.server_ca_der()).unwrap();
    let result = common::run_fleet(&plan, fleets, endpoint);
    Some((plan, result))
}

fn section<'a>(plan: &Plan, result: &'a RunResult, group: &str) -> &'a GroupProtocolReport {
    let i = plan.groups.iter().position(|g| g.name == group).unwrap();
    result.protocol[i]
        .as_ref()
        .unwrap_or_else(|| panic!("group {group} has a protocol section"))
}

#[test]
fn persistent_sessions_receive_what_was_queued_while_offline_and_clean_ones_lose_it() {
    let _serial = serial();
    // Three subscriber groups go offline 1 s into the traffic for 1.5 s while 5 publishers
    // keep sending 20/s each to them: 3.1.1 persistent, MQTT 5 clean start false with a
    // session expiry, and a 3.1.1 clean-session control group.
    let scenario = r#"
name = "persistent"
duration = "4s"
[[group]]
name = "keep"
devices = 2
client_id = "keep-{index}"
clean_session = false
offline = { at = "1s", for = "1500ms" }
subscribe = [{ filter = "q/#", qos = 1 }]
[[group]]
name = "keep5"
devices = 2
client_id = "keepfive-{index}"
protocol = "5"
clean_session = false
v5 = { session_expiry = "60s" }
offline = { at = "1s", for = "1500ms" }
subscribe = [{ filter = "q/#", qos = 1 }]
[[group]]
name = "clean"
devices = 2
client_id = "clean-{index}"
offline = { at = "1s", for = "1500ms" }
subscribe = [{ filter = "q/#", qos = 1 }]
[[group]]
name = "pub"
devices = 5
client_id = "qpub-{index}"
publish = { topic = "q/{client_id}", qos = 1, rate = "20/s", size = 64 }
"#;
    let Some((plan, result)) = run_against_mosquitto(scenario, "") else {
        return;
    };
    let t = result.last.totals;
    assert!(t.sent > 300, "about 5 x 20/s x 4 s sent: {}", t.sent);
    assert_eq!(t.acked, t.sent, "every publish acknowledged");
    // Published while a subscriber was away: 5 x 20/s x 1.5 s = ~150 per subscriber.
    for name in ["keep", "keep5"] {
        let s = section(&plan, &result, name);
        let o = s.offline.as_ref().expect("offline section");
        assert_eq!(o.periods, 2, "{name}: both devices went offline");
        assert_eq!(o.returned_with_session, 2, "{name}: {o:?}");
        assert_eq!(o.return_failed, 0);
        assert!(
            (200..=360).contains(&o.queued_delivered),
            "{name}: ~2 x 150 queued messages delivered on return: {o:?}"
        );
        assert_eq!(o.drain_us.count, 2, "{name}: both devices drained a queue");
        assert_eq!(
            (s.sequence.lost, s.sequence.duplicates),
            (0, 0),
            "{name}: nothing lost or duplicated: {:?}",
            s.sequence
        );
        assert_eq!(s.sequence.unique, 2 * t.sent, "{name}: every message, once");
    }
    for name in ["keep", "keep5", "clean"] {
        eprintln!(
            "{}",
            thingswarm::fleet::protocol::summary(name, section(&plan, &result, name)).trim_end()
        );
    }
    let keep = section(&plan, &result, "keep").offline.clone().unwrap();
    let clean = section(&plan, &result, "clean");
    let o = clean.offline.as_ref().unwrap();
    assert_eq!(o.returned_without_session, 2, "{o:?}");
    // A clean session has no queue: what it gets "from while it was away" is only what was
    // still in transit at its return (published just before, delivered after the re-SUBSCRIBE;
    // tens of milliseconds on a loaded 2-core machine).
    assert!(
        o.queued_delivered * 10 < keep.queued_delivered,
        "clean {} vs persistent {}",
        o.queued_delivered,
        keep.queued_delivered
    );
    // The control group lost what the persistent group received from its queue; the windows
    // start a few milliseconds apart and in-transit messages land on either side, so allow a
    // few per device.
    let diff = (clean.sequence.lost + o.queued_delivered).abs_diff(keep.queued_delivered);
    assert!(
        clean.sequence.lost > 0 && diff <= 20,
        "clean lost {} (+{} in transit) vs persistent queued {}",
        clean.sequence.lost,
        o.queued_delivered,
        keep.queued_delivered
    );
    assert_eq!(clean.sequence.lost + clean.sequence.unique, 2 * t.sent);
}

#[test]
fn a_late_subscriber_receives_the_retained_message() {
    let _serial = serial();
    install_crypto_provider();
    let publisher = plan(
        r#"
name = "retain-pub"
duration = "1s"
[[group]]
name = "pub"
devices = 3
client_id = "rpub-{index}"
publish = { topic = "r/{client_id}", qos = 1, rate = "10/s", size = 64, retain = true }
"#,
        &Overrides::default(),
    );
    let late = plan(
        r#"
name = "retain-sub"
duration = "1s"
[[group]]
name = "late"
devices = 2
client_id = "rsub-{index}"
subscribe = [{ filter = "r/#", qos = 1 }]
"#,
        &Overrides::default(),
    );
    let tmp = tempfile::tempdir().unwrap();
    let (pub_fleets, sub_fleets) = (
        common::identities(&publisher, tmp.path()),
        common::identities(&late, tmp.path()),
    );
    let roots = [pub_fleets[0].root().clone(), sub_fleets[0].root().clone()];
    let Some(broker) = Mosquitto::start_unless_missing(&roots, "").unwrap() else {
        return;
    };
    let endpoint = Endpoint::verified(broker.addr(), broker.server_ca_der()).unwrap();
    let first = common::run_fleet(&publisher, pub_fleets, endpoint.clone());
    assert!(first.last.totals.acked >= 15, "{:?}", first.last.totals);
    assert_eq!(
        first.protocol[0].as_ref().map(|p| p.retained_received),
        Some(0),
        "the publishers subscribe to nothing"
    );

    let second = common::run_fleet(&late, sub_fleets, endpoint);
    let s = second.protocol[0]
        .as_ref()
        .expect("a group receiving retained messages is reported");
    // One retained message per publisher topic, for each of the two late subscribers.
    assert_eq!(s.retained_received, 3 * 2, "{s:?}");
    assert_eq!(
        second.last.totals.delivered, 0,
        "retained messages are counted apart from live deliveries"
    );
    assert_eq!(
        s.sequence.lost, 0,
        "nothing was expected from publishers of another run"
    );
}

#[test]
fn a_shared_subscription_splits_messages_with_no_loss_counted() {
    let _serial = serial();
    let scenario = r#"
name = "shared"
duration = "3s"
[[group]]
name = "workers"
devices = 3
client_id = "worker-{index}"
subscribe = [{ filter = "$share/pool/s/#", qos = 1 }]
[[group]]
name = "pub"
devices = 4
client_id = "spub-{index}"
publish = { topic = "s/{client_id}", qos = 1, rate = "25/s", size = 64 }
"#;
    let Some((plan, result)) = run_against_mosquitto(scenario, "") else {
        return;
    };
    let t = result.last.totals;
    assert!(t.sent > 200, "about 4 x 25/s x 3 s sent: {}", t.sent);
    // Each message went to one member: delivered once over the share, not once per member.
    assert_eq!(t.delivered, t.sent);
    let s = section(&plan, &result, "workers");
    assert_eq!(s.share.as_deref(), Some("pool"));
    assert_eq!(
        (s.sequence.unique, s.sequence.lost, s.sequence.duplicates),
        (t.sent, 0, 0),
        "{:?}",
        s.sequence
    );
    let traffic = result.traffic.expect("traffic");
    assert_eq!(traffic.sequence.lost, 0, "loss understands the share");
}

#[test]
fn mqtt5_options_flow_and_a_refused_topic_alias_is_reported() {
    let _serial = serial();
    let scenario = r#"
name = "v5-options"
duration = "2s"
[target]
protocol = "5"
[[group]]
name = "sink"
devices = 1
client_id = "vsink"
subscribe = [{ filter = "v/#", qos = 1 }]
v5 = { receive_maximum = 100, max_packet_size = 65536, session_expiry = "30s" }
[[group]]
name = "pub"
devices = 4
client_id = "vpub-{index}"
publish = { topic = "v/{client_id}/telemetry", qos = 1, rate = "20/s", size = 64 }
v5 = { topic_alias = true, user_properties = { site = "lab", rack = "7" }, message_expiry = "30s" }
"#;
    // mosquitto's default accepts 10 topic aliases: aliased publishes flow, nothing refused.
    let Some((plan, result)) = run_against_mosquitto(scenario, "") else {
        return;
    };
    let t = result.last.totals;
    assert!(t.sent > 100, "about 4 x 20/s x 2 s: {}", t.sent);
    assert_eq!((t.acked, t.delivered), (t.sent, t.sent), "{t:?}");
    assert!(result.last.errors.is_empty(), "{:?}", result.last.errors);
    let p = section(&plan, &result, "pub");
    assert!(p.broker_refused.is_empty(), "{:?}", p.broker_refused);
    assert_eq!(p.sequence, Default::default(), "publishers receive nothing");
    let sink = section(&plan, &result, "sink");
    assert_eq!((sink.sequence.lost, sink.sequence.duplicates), (0, 0));

    // A broker allowing no aliases: the publishers say so and fall back to full topics.
    let Some((plan, result)) = run_against_mosquitto(scenario, "max_topic_alias 0") else {
        return;
    };
    let t = result.last.totals;
    assert_eq!((t.acked, t.delivered), (t.sent, t.sent), "{t:?}");
    let p = section(&plan, &result, "pub");
    assert_eq!(p.broker_refused.len(), 1, "{:?}", p.broker_refused);
    assert!(
        p.broker_refused[0].what.starts_with("topic_alias:"),
        "{:?}",
        p.broker_refused
    );
    assert_eq!(p.broker_refused[0].devices, 4);
}

#[test]
fn a_wss_listener_with_client_certificates_takes_the_fleet() {
    let _serial = serial();
    install_crypto_provider();
    let body = r#"
[[group]]
name = "sink"
devices = 1
client_id = "wsink"
subscribe = [{ filter = "w/#", qos = 1 }]
[[group]]
name = "pub"
devices = 5
client_id = "wpub-{index}"
publish = { topic = "w/{client_id}", qos = 1, rate = "10/s", size = 64 }
"#;
    // Identities first (the broker trusts their root), then the broker, then the plan that
    // names it.
    let bare = plan(
        &format!("name = \"wss\"\nduration = \"2s\"\n{body}"),
        &Overrides::default(),
    );
    let tmp = tempfile::tempdir().unwrap();
    let fleets = common::identities(&bare, tmp.path());
    let ws_port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port();
    let extra = format!(
        "listener {ws_port} 127.0.0.1\nprotocol websockets\ncafile {CAFILE}\ncertfile {CERTFILE}\nkeyfile {KEYFILE}\nrequire_certificate true\nuse_identity_as_username true\n"
    );
    let Some(broker) =
        Mosquitto::start_unless_missing(&[fleets[0].root().clone()], &extra).unwrap()
    else {
        return;
    };
    let overrides = Overrides {
        target: Some(format!("mqtts://127.0.0.1:{ws_port}")),
        server_ca: Some(broker.server_ca().to_path_buf()),
        ..Default::default()
    };
    let wss = plan(
        &format!(
            "name = \"wss\"\nduration = \"2s\"\n[target]\ntransport = \"wss\"\npath = \"/mqtt\"\n{body}"
        ),
        &overrides,
    );
    let ws_addr = format!("127.0.0.1:{ws_port}").parse().unwrap();
    let endpoint = Endpoint::verified(ws_addr, broker.server_ca_der()).unwrap();
    let result = common::run_fleet(&wss, fleets, endpoint);
    let t = result.last.totals;
    assert_eq!((t.connects, t.failed), (6, 0), "{:?}", result.last.errors);
    assert!(t.sent > 50, "about 5 x 10/s x 2 s: {}", t.sent);
    assert_eq!((t.acked, t.delivered), (t.sent, t.sent));
    let p = section(&wss, &result, "pub");
    assert_eq!((p.transport.as_str(), p.warning.as_deref()), ("wss", None));
    // mosquitto accepted each device by its certificate: the CN is the username.
    let names = thingswarm::broker::mosquitto::connected_usernames(&broker.log());
    assert!(
        names
            .iter()
            .any(|(id, user)| id == "wpub-0" && user == "wpub-0"),
        "{names:?}"
    );
}

/// The shipped `persistent-sessions.toml` through the CLI (embedded broker): its report matches
/// the committed schema, and the summary shows both offline windows.
#[cfg(feature = "embedded-broker")]
#[test]
fn a_cli_report_with_protocol_options_matches_the_schema() {
    let _serial = serial();
    let tmp = tempfile::tempdir().unwrap();
    let scenario = Path::new("scenarios/persistent-sessions.toml");
    let out = tmp.path().join("out");
    let assert = assert_cmd::Command::cargo_bin("thingswarm")
        .unwrap()
        .args(["run", "--no-tui", "--certs-dir"])
        .arg(tmp.path().join("certs"))
        .arg(scenario)
        .arg("--out")
        .arg(&out)
        .timeout(std::time::Duration::from_secs(120))
        .assert()
        .success();
    let stdout = String::from_utf8_lossy(&assert.get_output().stdout).into_owned();
    assert!(stdout.contains("offline    keep: 2 went away"), "{stdout}");
    assert!(stdout.contains("offline    clean: 2 went away"), "{stdout}");
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("report.json")).unwrap()).unwrap();
    let errors = common::schema_errors(&report);
    assert!(errors.is_empty(), "{errors:#?}");
    let keep = &report["groups"][0]["protocol_options"];
    assert_eq!(keep["offline"]["periods"], 2, "{keep}");
    assert_eq!(keep["clean_session"], false);
    // The embedded broker keeps the session: what was queued arrives, nothing is lost.
    assert_eq!(keep["offline"]["returned_with_session"], 2, "{keep}");
    assert!(
        keep["offline"]["queued_delivered"].as_u64() > Some(0),
        "{keep}"
    );
    assert_eq!(keep["sequence"]["lost"], 0, "{keep}");
    let clean = &report["groups"][1]["protocol_options"];
    assert_eq!(clean["offline"]["returned_without_session"], 2, "{clean}");
    assert!(clean["sequence"]["lost"].as_u64() > Some(0), "{clean}");
    let publishers = &report["groups"][2]["protocol_options"];
    assert_eq!(publishers["transport"], "mqtts", "{publishers}");
}
