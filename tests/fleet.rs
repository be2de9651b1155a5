//! The fleet runner against real brokers started by each test: the embedded broker and
//! mosquitto (OS package) on free loopback ports. Every run is bounded by its plan.

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;

use thingswarm::broker::mosquitto::{connected_usernames, Mosquitto};
use thingswarm::fleet::Endpoint;
use thingswarm::identity::{cache, Fleet};
use thingswarm::scenario::{Overrides, Plan};
use thingswarm::tls::{install_crypto_provider, ServerTrust};

mod common;

fn plan(text: &str) -> Plan {
    Plan::from_str(text, Path::new("test.toml"), &Overrides::default()).unwrap()
}

fn fleets(plan: &Plan, certs_dirs: &[&Path]) -> Vec<Arc<Fleet>> {
    plan.groups
        .iter()
        .zip(certs_dirs)
        .map(|(g, dir)| {
            Arc::new(
                cache::ensure(dir, &plan.fleet_spec(g), g.devices, false)
                    .unwrap()
                    .0,
            )
        })
        .collect()
}

fn mosquitto(roots: &[rustls_pki_types::CertificateDer<'static>]) -> Option<Mosquitto> {
    Mosquitto::start_unless_missing(roots, "").unwrap()
}

/// Distinct MQTT usernames (certificate identities) mosquitto logged for new connections;
/// each must equal the client ID.
fn mosquitto_usernames(log: &str) -> HashSet<String> {
    connected_usernames(log)
        .into_iter()
        .map(|(client_id, username)| {
            assert_eq!(client_id, username, "identity is the certificate CN");
            username
        })
        .collect()
}

const THOUSAND: &str = r#"
name = "thousand"
duration = "1s"
[[group]]
name = "sensors"
devices = 1000
client_id = "sensor-{index:04}"
connect = { rate = "1000/s", max_in_flight = 50, timeout = "20s" }
"#;

#[test]
fn a_thousand_distinct_identities_connect_to_mosquitto() {
    install_crypto_provider();
    let tmp = tempfile::tempdir().unwrap();
    let plan = plan(THOUSAND);
    let fleets = fleets(&plan, &[tmp.path()]);
    let Some(broker) = mosquitto(&[fleets[0].root().clone()]) else {
        return;
    };
    let endpoint = Endpoint::verified(broker.addr(), broker.server_ca_der()).unwrap();
    let result = common::run_fleet(&plan, fleets, endpoint);
    let t = result.last.totals;
    assert_eq!(
        (t.connects, t.failed, t.closed),
        (1000, 0, 1000),
        "{:?}",
        result.last.errors
    );
    assert_eq!(result.connect.len(), 1000);
    let names = mosquitto_usernames(&broker.log());
    assert_eq!(
        names.len(),
        1000,
        "mosquitto saw {} distinct identities",
        names.len()
    );
    assert!(names.contains("sensor-0000") && names.contains("sensor-0999"));
}

#[cfg(feature = "embedded-broker")]
#[test]
fn a_thousand_devices_connect_to_the_embedded_broker_and_a_foreign_ca_is_refused() {
    use thingswarm::broker::{BrokerConfig, EmbeddedBroker};
    install_crypto_provider();
    let (trusted, foreign) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let plan = plan(&format!(
        "{THOUSAND}
[[group]]
name = \"impostors\"
devices = 3
client_id = \"impostor-{{index}}\"
"
    ));
    // Same algorithm, different cache: the impostors' CA is one the broker never heard of.
    let fleets = fleets(&plan, &[trusted.path(), foreign.path()]);
    assert_ne!(fleets[0].root(), fleets[1].root());
    let broker = EmbeddedBroker::start(BrokerConfig {
        port: 0,
        client_roots: vec![fleets[0].root().clone()],
    })
    .unwrap();
    let endpoint = Endpoint::verified(broker.addr(), broker.server_ca_der()).unwrap();
    let result = common::run_fleet(&plan, fleets, endpoint);
    let (good, bad) = (result.last.groups[0], result.last.groups[1]);
    assert_eq!(
        (good.connects, good.failed),
        (1000, 0),
        "{:?}",
        result.last.errors
    );
    assert_eq!((bad.connects, bad.failed), (0, 3));
    let classes: Vec<&str> = result
        .last
        .errors
        .iter()
        .map(|e| e.class.as_str())
        .collect();
    assert!(
        classes
            .iter()
            .all(|c| c.starts_with("tls: unknown CA") || c.starts_with("tls: bad certificate")),
        "{:?}",
        result.last.errors
    );
    assert_eq!(result.last.errors.iter().map(|e| e.count).sum::<u64>(), 3);
}

#[test]
fn a_foreign_ca_is_refused_by_mosquitto_while_the_others_connect() {
    install_crypto_provider();
    let (trusted, foreign) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let plan = plan(
        r#"
name = "mixed"
duration = "0s"
[target]
protocol = "5"
[[group]]
name = "good"
devices = 20
client_id = "good-{index}"
[[group]]
name = "impostors"
devices = 2
client_id = "impostor-{index}"
"#,
    );
    let fleets = fleets(&plan, &[trusted.path(), foreign.path()]);
    let Some(broker) = mosquitto(&[fleets[0].root().clone()]) else {
        return;
    };
    let endpoint = Endpoint::verified(broker.addr(), broker.server_ca_der()).unwrap();
    let result = common::run_fleet(&plan, fleets, endpoint);
    assert_eq!(
        result.last.groups[0].connects, 20,
        "{:?}",
        result.last.errors
    );
    assert_eq!(result.last.groups[1].failed, 2);
    assert!(
        result
            .last
            .errors
            .iter()
            .all(|e| e.class.starts_with("tls:")),
        "{:?}",
        result.last.errors
    );
}

#[test]
fn an_unreachable_port_is_classified_and_counted_not_fatal() {
    install_crypto_provider();
    let tmp = tempfile::tempdir().unwrap();
    let plan = plan(
        r#"
name = "nobody"
duration = "0s"
[[group]]
name = "g"
devices = 5
client_id = "d-{index}"
connect = { timeout = "2s" }
"#,
    );
    let fleets = fleets(&plan, &[tmp.path()]);
    // A port that was free a moment ago: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let ca = thingswarm::identity::Ca::generated(tmp.path(), Default::default(), false).unwrap();
    let endpoint = Endpoint {
        host: "127.0.0.1".into(),
        port,
        trust: ServerTrust::roots(&[ca.root().clone()]).unwrap(),
    };
    let result = common::run_fleet(&plan, fleets, endpoint);
    assert_eq!(
        (result.last.totals.connects, result.last.totals.failed),
        (0, 5)
    );
    assert_eq!(result.last.errors[0].class, "tcp: refused");
}
