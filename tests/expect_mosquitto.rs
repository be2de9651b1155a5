//! Authorization probes against mosquitto started by each test (mTLS, loopback), with an
//! acl_file (`pattern readwrite dt/%u/#`, the certificate CN as the username) and an observer
//! allowed everything, for MQTT 3.1.1 and 5: allowed actions are seen as allowed, cross-device
//! publish / subscribe / receive as denied (and the same with the dynamic-security plugin,
//! roles set up by the test), each with the signal, and a deliberately wrong
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

/// How the broker authorizes.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Authz {
    AclFile,
    DynamicSecurity,
}

/// The dynamic-security plugin of the mosquitto package.
const DYNSEC_PLUGINS: [&str; 2] = [
    "/usr/lib/x86_64-linux-gnu/mosquitto_dynamic_security.so",
    "/usr/lib/aarch64-linux-gnu/mosquitto_dynamic_security.so",
];

/// Roles equivalent to the acl_file: each device reads and writes `dt/<its id>/#`, the
/// observer everything; everything else denied.
fn dynsec_json() -> String {
    let role = |name: &str, topic: &str| {
        serde_json::json!({
            "rolename": name,
            "acls": [
                {"acltype": "publishClientSend", "topic": topic, "allow": true},
                {"acltype": "publishClientReceive", "topic": topic, "allow": true},
                {"acltype": "subscribePattern", "topic": topic, "allow": true},
                {"acltype": "unsubscribePattern", "topic": topic, "allow": true}
            ]
        })
    };
    let client = |name: &str| serde_json::json!({"username": name, "roles": [{"rolename": name}]});
    serde_json::json!({
        "defaultACLAccess": {
            "publishClientSend": false,
            "publishClientReceive": false,
            "subscribe": false,
            "unsubscribe": true
        },
        "clients": [client("dev-0"), client("dev-1"), client("observer-0")],
        "groups": [],
        "roles": [role("dev-0", "dt/dev-0/#"), role("dev-1", "dt/dev-1/#"), role("observer-0", "#")]
    })
    .to_string()
}

fn setup(protocol: Protocol, authz: Authz) -> Option<Setup> {
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
    let extra = match authz {
        Authz::AclFile => format!("acl_file {}\n", acl.display()),
        Authz::DynamicSecurity => {
            let Some(plugin) = DYNSEC_PLUGINS.iter().find(|p| Path::new(p).exists()) else {
                assert_ne!(
                    std::env::var("CI").as_deref(),
                    Ok("true"),
                    "mosquitto's dynamic-security plugin is missing"
                );
                eprintln!("skipping: mosquitto_dynamic_security.so not found");
                return None;
            };
            let json = acl_dir.path().join("dynamic-security.json");
            std::fs::write(&json, dynsec_json()).unwrap();
            format!(
                "plugin {plugin}\nplugin_opt_config_file {}\n",
                json.display()
            )
        }
    };
    let roots = [fleets[0].root().clone(), fleets[1].root().clone()];
    let broker = Mosquitto::start_unless_missing(&roots, &extra).unwrap()?;
    let trust = ServerTrust::roots(std::slice::from_ref(broker.server_ca_der())).unwrap();
    let device = |f: &thingswarm::identity::cache::Fleet, i: usize| Device {
        client_id: f.client_id(i),
        tls: trust
            .device_tls(&f.client_id(i), f.cert_chain(i), f.key(i).clone_key())
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

fn check(protocol: Protocol, authz: Authz) {
    let Some(s) = setup(protocol, authz) else {
        return;
    };
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
    let sub_denied = match (authz, protocol) {
        // acl_file grants the forbidden subscription and checks at delivery.
        (Authz::AclFile, _) => "SUBACK granted, not delivered within 1s",
        // dynamic security refuses it in the SUBACK.
        (Authz::DynamicSecurity, Protocol::V311) => "SUBACK 0x80",
        (Authz::DynamicSecurity, Protocol::V5) => "SUBACK 0x87 NotAuthorized",
    };
    assert_eq!(results[5].signal, sub_denied);
    assert_eq!(results[6].signal, sub_denied);
}

#[test]
fn acl_file_v311() {
    check(Protocol::V311, Authz::AclFile);
}

#[test]
fn acl_file_v5() {
    check(Protocol::V5, Authz::AclFile);
}

#[test]
fn dynamic_security_v311() {
    check(Protocol::V311, Authz::DynamicSecurity);
}

#[test]
fn dynamic_security_v5() {
    check(Protocol::V5, Authz::DynamicSecurity);
}
