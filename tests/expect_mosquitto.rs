//! Authorization probes against mosquitto started by each test (mTLS, loopback), with an
//! acl_file (`pattern readwrite dt/%u/#`, the certificate CN as the username) and an observer
//! allowed everything, for MQTT 3.1.1 and 5: allowed actions are seen as allowed, cross-device
//! publish / subscribe / receive as denied, each with the signal, and a deliberately wrong
//! expectation does not hold.

use std::path::Path;
use std::time::Duration;

use thingswarm::broker::mosquitto::Mosquitto;
use thingswarm::expect::{self, Action, Device, Probe, ProbeTarget, Verdict};
use thingswarm::fleet;
use thingswarm::scenario::{Overrides, Plan, Protocol};
use thingswarm::tls::{install_crypto_provider, ServerTrust};

const SCENARIO: &str = r#"
name = "probes"
duration = "1s"
[[group]]
name = "dev"
devices = 2
client_id = "dev-{index}"
[[group]]
name = "observer"
devices = 1
client_id = "observer-{index}"
"#;

struct Setup {
    _broker: Mosquitto,
    _certs: tempfile::TempDir,
    _acl: tempfile::TempDir,
    target: ProbeTarget,
    dev: Vec<Device>,
    observer: Device,
}

fn setup(protocol: Protocol) -> Option<Setup> {
    install_crypto_provider();
    let plan = Plan::from_str(SCENARIO, Path::new("probes.toml"), &Overrides::default()).unwrap();
    let certs = tempfile::tempdir().unwrap();
    let fleets: Vec<_> = fleet::identities(&plan, certs.path())
        .unwrap()
        .into_iter()
        .map(|(f, _)| f)
        .collect();
    let acl_dir = tempfile::tempdir().unwrap();
    let acl = acl_dir.path().join("acl");
    std::fs::write(
        &acl,
        "pattern readwrite dt/%u/#\n\nuser observer-0\ntopic readwrite #\n",
    )
    .unwrap();
    let extra = format!("acl_file {}\n", acl.display());
    let roots = [fleets[0].root().clone(), fleets[1].root().clone()];
    let broker = match Mosquitto::start(&roots, &extra) {
        Ok(b) => b,
        Err(e)
            if std::env::var("CI").as_deref() != Ok("true")
                && e.to_string().contains("apt-get install") =>
        {
            eprintln!("skipping: {e}");
            return None;
        }
        Err(e) => panic!("{e}"),
    };
    let trust = ServerTrust::roots(std::slice::from_ref(broker.server_ca_der())).unwrap();
    let device = |f: &thingswarm::identity::cache::Fleet, i: usize| Device {
        client_id: f.client_id(i),
        tls: trust
            .client_config(&f.client_id(i), f.cert_chain(i), f.key(i).clone_key())
            .unwrap(),
    };
    let dev = (0..2).map(|i| device(&fleets[0], i)).collect();
    let observer = device(&fleets[1], 0);
    Some(Setup {
        target: ProbeTarget {
            host: broker.addr().ip().to_string(),
            port: broker.addr().port(),
            protocol,
            timeout: Duration::from_secs(5),
            delivery_wait: Duration::from_secs(1),
        },
        _broker: broker,
        _certs: certs,
        _acl: acl_dir,
        dev,
        observer,
    })
}

fn check(protocol: Protocol) {
    let Some(s) = setup(protocol) else { return };
    let probe = |d: usize, action: Action, expected: Verdict| Probe {
        device: s.dev[d].clone(),
        action,
        expected,
        observer: Some(s.observer.clone()),
    };
    use Action::*;
    use Verdict::*;
    let probes = vec![
        probe(0, Connect, Allow),
        probe(0, Publish("dt/dev-0/temp".into()), Allow),
        probe(0, Subscribe("dt/dev-0/#".into()), Allow),
        probe(0, Receive("dt/dev-0/cmd".into()), Allow),
        probe(0, Publish("dt/dev-1/temp".into()), Deny),
        probe(0, Subscribe("dt/dev-1/#".into()), Deny),
        probe(0, Receive("dt/dev-1/cmd".into()), Deny),
        probe(1, Receive("dt/dev-0/cmd".into()), Deny),
        // Deliberately wrong: dev-1 may not read dev-0's topics.
        probe(1, Subscribe("dt/dev-0/+".into()), Allow),
    ];
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let results = rt.block_on(expect::run_all(&probes, &s.target));
    for r in &results {
        eprintln!(
            "{protocol}: {} {} -> {} ({})",
            r.client_id, r.action, r.observed, r.signal
        );
    }
    let holds: Vec<bool> = results.iter().map(|r| r.holds()).collect();
    assert_eq!(
        holds,
        [true, true, true, true, true, true, true, true, false]
    );
    assert_eq!(results[8].observed, Deny);
    // Signals say how the denial showed.
    assert_eq!(results[0].signal, "CONNACK accepted");
    assert_eq!(results[1].signal, "PUBACK, delivered");
    let publish_denied = &results[4].signal;
    match protocol {
        // mosquitto acknowledges a forbidden 3.1.1 publish and drops it.
        Protocol::V311 => assert_eq!(publish_denied, "PUBACK, not delivered within 1s"),
        Protocol::V5 => assert!(publish_denied.starts_with("PUBACK "), "{publish_denied}"),
    }
    // acl_file grants the forbidden subscription and checks at delivery.
    assert_eq!(results[5].signal, "SUBACK granted, not delivered within 1s");
    assert_eq!(results[6].signal, "SUBACK granted, not delivered within 1s");
}

#[test]
fn acl_file_v311() {
    check(Protocol::V311);
}

#[test]
fn acl_file_v5() {
    check(Protocol::V5);
}
