//! AWS IoT behaviours end to end: the shipped shadow and ingest scenarios through the real
//! binary against the embedded broker, and the shadow service against the embedded broker
//! and mosquitto with an independent observer checking the versions on the wire.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use assert_cmd::Command;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS, TlsConfiguration, Transport};
use serde_json::Value;
use thingswarm::fleet::control::Controller;
use thingswarm::fleet::{self, Endpoint, RunResult};
use thingswarm::identity::{Fleet, FleetSpec};
use thingswarm::scenario::{Overrides, Plan};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

mod common;
use common::schema_errors;

fn run_binary(scenario: &str) -> (String, Value) {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let assert = Command::cargo_bin("thingswarm")
        .unwrap()
        .args(["run", scenario, "--no-tui", "--certs-dir"])
        .arg(tmp.path().join("certs"))
        .arg("--out")
        .arg(&out)
        .timeout(Duration::from_secs(120))
        .assert()
        .success();
    let stdout = String::from_utf8_lossy(&assert.get_output().stdout).into_owned();
    let report: Value =
        serde_json::from_slice(&std::fs::read(out.join("report.json")).unwrap()).unwrap();
    let errors = schema_errors(&report);
    assert!(
        errors.is_empty(),
        "report does not match the schema: {errors:#?}"
    );
    (stdout, report)
}

#[cfg(feature = "embedded-broker")]
#[test]
fn the_shipped_shadow_scenario_runs_against_the_emulated_service() {
    let (stdout, report) = run_binary("scenarios/shadow.toml");
    let aws = &report["aws"];
    assert_eq!(aws["shadow_service"], "emulated", "{aws}");
    let g = &aws["shadow"][0];
    assert_eq!(g["group"], "thermostats");
    assert_eq!(g["shadow"], "config");
    let n = |v: &Value| v.as_u64().unwrap();
    // 20 devices x ~6 s x 1/s reported, plus desired writes and their delta reports.
    assert!(n(&g["accepted"]["update"]) > 100, "{g}");
    assert_eq!(g["accepted"]["update"], g["requests"]["update"], "{g}");
    // The first GET finds no shadow (404, expected); every delete at the end is accepted.
    assert_eq!(n(&g["requests"]["get"]), 20);
    assert_eq!(n(&g["not_found_at_start"]), 20);
    assert_eq!(g["rejected"], serde_json::json!({"404": 20}));
    assert_eq!(n(&g["accepted"]["delete"]), 20, "{g}");
    assert_eq!(n(&g["unexpected_rejects"]), 0, "{g}");
    assert_eq!(n(&g["version_regressions"]), 0, "{g}");
    assert_eq!(n(&g["unanswered"]), 0, "{g}");
    // Desired writes every 2 s produce deltas, each applied and reported back.
    assert!(n(&g["deltas"]) >= 20, "{g}");
    assert_eq!(g["deltas"], g["delta_reports"], "{g}");
    for h in [
        "update_latency_us",
        "delete_latency_us",
        "delta_latency_us",
        "delta_round_trip_us",
    ] {
        assert!(n(&g[h]["count"]) > 0, "{h}: {g}");
        assert!(n(&g[h]["p99"]) >= n(&g[h]["p50"]), "{h}");
    }
    // A delta round trip contains the delta's way to the device.
    assert!(n(&g["delta_round_trip_us"]["p50"]) >= n(&g["delta_latency_us"]["p50"]));
    assert_eq!(report["devices"]["closed"], 20);
    assert!(
        stdout.contains("shadow     thermostats (config, service emulated)"),
        "{stdout}"
    );
    assert!(stdout.contains("(0 unexpected)"), "{stdout}");
}

#[cfg(feature = "embedded-broker")]
#[test]
fn the_shipped_ingest_scenario_publishes_to_a_rule_topic() {
    let (stdout, report) = run_binary("scenarios/ingest.toml");
    let ingest = &report["aws"]["ingest"][0];
    assert_eq!(ingest["group"], "meters");
    assert_eq!(ingest["rule"], "meter_readings");
    assert!(ingest["note"]
        .as_str()
        .unwrap()
        .contains("no end-to-end latency"));
    assert_eq!(report["aws"]["shadow"], serde_json::json!([]));
    let whole = &report["traffic"]["whole"];
    let sent = whole["sent"].as_u64().unwrap();
    // 50 meters x 2/s x 5 s.
    assert!(sent > 300, "{whole}");
    assert_eq!(
        whole["ack_latency_us"]["count"], sent,
        "the broker acknowledges every $aws/rules message"
    );
    assert_eq!(whole["delivered"], 0, "nobody subscribes to basic ingest");
    assert!(
        stdout.contains("ingest     meters -> rule meter_readings"),
        "{stdout}"
    );
}

/// Watches every answer the service publishes for shadow `config` and records, per thing, the
/// versions of `update/accepted` in arrival order.
async fn observe(
    endpoint: &Endpoint,
    identity: &Fleet,
    ready: tokio::sync::oneshot::Sender<()>,
    stop: CancellationToken,
) -> HashMap<String, Vec<u64>> {
    let id = identity.client_id(0);
    let tls = endpoint
        .trust
        .client_config(&id, identity.cert_chain(0), identity.key(0).clone_key())
        .unwrap();
    let mut opts = MqttOptions::new(id, endpoint.host.clone(), endpoint.port);
    opts.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(tls)))
        .set_max_packet_size(1 << 18, 1 << 18);
    let (client, mut events) = AsyncClient::new(opts, 100);
    client
        .subscribe(
            "$aws/things/+/shadow/name/config/update/accepted",
            QoS::AtLeastOnce,
        )
        .await
        .unwrap();
    let mut ready = Some(ready);
    let mut versions: HashMap<String, Vec<u64>> = HashMap::new();
    loop {
        let event = tokio::select! {
            _ = stop.cancelled() => break,
            e = tokio::time::timeout(Duration::from_secs(30), events.poll()) => e,
        };
        match event
            .expect("the observer hears something within 30 s")
            .expect("observer session")
        {
            Event::Incoming(Packet::SubAck(_)) => {
                if let Some(r) = ready.take() {
                    let _ = r.send(());
                }
            }
            Event::Incoming(Packet::Publish(p)) => {
                let thing = p.topic.split('/').nth(2).unwrap().to_string();
                let doc: Value = serde_json::from_slice(&p.payload).unwrap();
                versions
                    .entry(thing)
                    .or_default()
                    .push(doc["version"].as_u64().unwrap());
            }
            _ => {}
        }
    }
    versions
}

const SHADOW_SCENARIO: &str = r#"
name = "shadow-observed"
duration = "3s"
[[group]]
name = "things"
devices = 5
client_id = "thing-{index}"
shadow = { name = "config", update = "4/s", desired = "1/s", delete = true }
"#;

/// Runs [`SHADOW_SCENARIO`] against `endpoint` with the emulated service and an observer.
fn run_observed(
    plan: &Plan,
    fleets: Vec<Arc<Fleet>>,
    certs: &Path,
    endpoint: Endpoint,
) -> (RunResult, HashMap<String, Vec<u64>>, u64) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let service_id =
        thingswarm::aws::service_identity(certs, &plan.fleet_spec(&plan.groups[0])).unwrap();
    let observer = thingswarm::identity::cache::ensure(
        certs,
        &FleetSpec {
            client_id: FleetSpec::new("observer").unwrap().client_id,
            ..plan.fleet_spec(&plan.groups[0])
        },
        1,
        false,
    )
    .unwrap()
    .0;
    rt.block_on(async {
        let service = thingswarm::aws::start_service(&endpoint, &service_id)
            .await
            .unwrap();
        let stop = CancellationToken::new();
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let watcher = {
            let (endpoint, stop) = (endpoint.clone(), stop.clone());
            tokio::spawn(async move { observe(&endpoint, &observer, ready_tx, stop).await })
        };
        ready_rx.await.unwrap();
        let (tx, _rx) = watch::channel(Default::default());
        let result = fleet::run(
            plan,
            fleets,
            endpoint,
            CancellationToken::new(),
            tx,
            &Controller::default(),
        )
        .await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        stop.cancel();
        let versions = watcher.await.unwrap();
        let replies = service
            .counters()
            .replies
            .load(std::sync::atomic::Ordering::Relaxed);
        service.stop().await;
        (result, versions, replies)
    })
}

fn assert_observed(result: &RunResult, versions: &HashMap<String, Vec<u64>>, replies: u64) {
    let stats = result.shadow.as_ref().expect("a shadow group ran");
    let g = stats.report(0, "things", "config");
    assert!(g.accepted.update > 20, "{g:?}");
    assert_eq!(g.unexpected_rejects, 0, "{g:?}");
    assert_eq!(g.version_regressions, 0, "{g:?}");
    assert_eq!(g.accepted.delete, 5, "{g:?}");
    assert!(g.delta_reports > 0, "{g:?}");
    assert!(
        replies > g.accepted.update,
        "accepted + documents + deltas: {replies}"
    );
    // The observer saw every accepted update, each thing's versions strictly increasing.
    assert_eq!(versions.len(), 5, "{versions:?}");
    let seen: usize = versions.values().map(Vec::len).sum();
    assert_eq!(seen as u64, g.accepted.update, "{versions:?}");
    for (thing, v) in versions {
        assert!(v.windows(2).all(|w| w[0] < w[1]), "{thing}: {v:?}");
        assert_eq!(v[0], 1, "{thing}: a new shadow starts at version 1");
    }
    assert!(result.last.errors.is_empty(), "{:?}", result.last.errors);
}

#[cfg(feature = "embedded-broker")]
#[test]
fn versions_seen_on_the_wire_increase_on_the_embedded_broker() {
    use thingswarm::broker::{BrokerConfig, EmbeddedBroker};
    thingswarm::tls::install_crypto_provider();
    let plan = Plan::from_str(SHADOW_SCENARIO, Path::new("s.toml"), &Overrides::default()).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let fleets: Vec<_> = fleet::identities(&plan, tmp.path())
        .unwrap()
        .into_iter()
        .map(|(f, _)| f)
        .collect();
    let broker = EmbeddedBroker::start(BrokerConfig {
        port: 0,
        client_roots: vec![fleets[0].root().clone()],
    })
    .unwrap();
    let endpoint = Endpoint::verified(broker.addr(), broker.server_ca_der()).unwrap();
    let (result, versions, replies) = run_observed(&plan, fleets, tmp.path(), endpoint);
    assert_observed(&result, &versions, replies);
}

#[test]
fn the_shadow_service_works_against_mosquitto() -> Result<(), Box<dyn std::error::Error>> {
    use thingswarm::broker::mosquitto::Mosquitto;
    thingswarm::tls::install_crypto_provider();
    let plan = Plan::from_str(SHADOW_SCENARIO, Path::new("s.toml"), &Overrides::default()).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let fleets: Vec<_> = fleet::identities(&plan, tmp.path())
        .unwrap()
        .into_iter()
        .map(|(f, _)| f)
        .collect();
    let Some(broker) = Mosquitto::start_unless_missing(&[fleets[0].root().clone()], "")? else {
        return Ok(());
    };
    let endpoint = Endpoint::verified(broker.addr(), broker.server_ca_der()).unwrap();
    let (result, versions, replies) = run_observed(&plan, fleets, tmp.path(), endpoint);
    assert_observed(&result, &versions, replies);
    Ok(())
}

/// `thingswarm broker --aws` answers shadow requests of a run pointed at it with `--target`.
#[cfg(feature = "embedded-broker")]
#[test]
fn a_standalone_broker_with_aws_answers_a_targeted_shadow_run() {
    let tmp = tempfile::tempdir().unwrap();
    let certs = tmp.path().join("certs");
    let broker = common::AwsBroker::start(&certs, "AWS IoT Device Shadow service emulated");
    let (addr, server_ca) = (&broker.addr, &broker.server_ca);

    let out = tmp.path().join("out");
    Command::cargo_bin("thingswarm")
        .unwrap()
        .args(["run", "scenarios/shadow.toml", "--no-tui", "--target", addr])
        .args(["--server-ca", server_ca, "--certs-dir"])
        .arg(&certs)
        .arg("--out")
        .arg(&out)
        .timeout(Duration::from_secs(120))
        .assert()
        .success();
    let report: Value =
        serde_json::from_slice(&std::fs::read(out.join("report.json")).unwrap()).unwrap();
    assert!(schema_errors(&report).is_empty());
    let aws = &report["aws"];
    assert_eq!(aws["shadow_service"], "target", "{aws}");
    let g = &aws["shadow"][0];
    assert!(g["accepted"]["update"].as_u64().unwrap() > 100, "{g}");
    assert_eq!(g["unexpected_rejects"], 0, "{g}");
    assert_eq!(g["version_regressions"], 0, "{g}");
    assert_eq!(g["accepted"]["delete"], 20, "{g}");
}
