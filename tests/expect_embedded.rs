//! The embedded broker enforcing a scenario's AWS IoT policies, observed by the probes over
//! MQTT 3.1.1 and 5: CONNACK refusal, SUBACK refusal, PUBACK 0x87 (v5) or the connection
//! closed (3.1.1), and receive denials as silent non-delivery.
#![cfg(feature = "embedded-broker")]

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use thingswarm::broker::{BrokerConfig, EmbeddedBroker};
use thingswarm::expect::{self, Action, Device, Probe, ProbeTarget, Verdict};
use thingswarm::fleet;
use thingswarm::policy::{Policy, PolicySet};
use thingswarm::scenario::{Overrides, Plan, Protocol};
use thingswarm::tls::{install_crypto_provider, ServerTrust};

const ARN: &str = "arn:aws:iot:us-east-1:123456789012";

const POLICY: &str = r#"{
  "Version": "2012-10-17",
  "Statement": [
    {"Effect": "Allow", "Action": "iot:Connect", "Resource": "ARN:client/${iot:ClientId}"},
    {"Effect": "Deny", "Action": "iot:Connect", "Resource": "ARN:client/banned-*"},
    {"Effect": "Allow", "Action": ["iot:Publish", "iot:Receive"],
     "Resource": ["ARN:topic/dt/${iot:ClientId}/*", "ARN:topic/shared/*"]},
    {"Effect": "Allow", "Action": "iot:Subscribe", "Resource": "ARN:topicfilter/*"},
    {"Effect": "Deny", "Action": "iot:Subscribe", "Resource": "ARN:topicfilter/secret/*"}
  ]
}"#;

const SCENARIO: &str = r#"
name = "embedded-policy"
duration = "1s"
[[group]]
name = "dev"
devices = 2
client_id = "dev-{index}"
[[group]]
name = "banned"
devices = 1
client_id = "banned-{index}"
"#;

fn check(protocol: Protocol) {
    install_crypto_provider();
    let plan = Plan::from_str(SCENARIO, Path::new("p.toml"), &Overrides::default()).unwrap();
    let certs = tempfile::tempdir().unwrap();
    let fleets: Vec<_> = fleet::identities(&plan, certs.path())
        .unwrap()
        .into_iter()
        .map(|(f, _)| f)
        .collect();
    let policy = PolicySet {
        policies: vec![Policy::parse("policy.json", &POLICY.replace("ARN", ARN)).unwrap()],
        arn: ARN.into(),
        unrestricted: vec![],
    };
    let broker = EmbeddedBroker::start_with_policy(
        BrokerConfig {
            port: 0,
            client_roots: vec![fleets[0].root().clone(), fleets[1].root().clone()],
        },
        Some(Arc::new(policy)),
    )
    .unwrap();
    let trust = ServerTrust::roots(std::slice::from_ref(broker.server_ca_der())).unwrap();
    let device = |f: &thingswarm::identity::cache::Fleet, i: usize| Device {
        client_id: f.client_id(i),
        tls: trust
            .device_tls(&f.client_id(i), f.cert_chain(i), f.key(i).clone_key())
            .unwrap(),
    };
    let dev0 = device(&fleets[0], 0);
    let dev1 = device(&fleets[0], 1);
    let banned = device(&fleets[1], 0);
    let target = ProbeTarget {
        host: broker.addr().ip().to_string(),
        port: broker.addr().port(),
        protocol,
        timeout: Duration::from_secs(5),
        delivery_wait: Duration::from_secs(1),
    };
    let probe = |d: &Device, action: Action, expected: Verdict| Probe {
        device: d.clone(),
        action,
        expected,
        observer: Some(dev1.clone()),
    };
    use Action::*;
    use Verdict::*;
    let probes = [
        probe(&dev0, Connect, Allow),
        probe(&banned, Connect, Deny),
        probe(&dev0, Publish("shared/a".into()), Allow),
        probe(&dev0, Receive("shared/b".into()), Allow),
        probe(&dev0, Publish("dt/dev-1/temp".into()), Deny),
        probe(&dev0, Receive("dt/dev-1/cmd".into()), Deny),
        probe(&dev0, Subscribe("secret/x".into()), Deny),
    ];
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let results = rt.block_on(expect::run_all(&probes, &target));
    for r in &results {
        eprintln!(
            "{protocol}: {} {} -> {} ({})",
            r.client_id, r.action, r.observed, r.signal
        );
    }
    assert!(results.iter().all(|r| r.holds()), "{results:#?}");
    assert_eq!(results[1].signal, "CONNACK refused: NotAuthorized");
    assert_eq!(results[2].signal, "PUBACK, delivered");
    match protocol {
        Protocol::V5 => assert_eq!(results[4].signal, "PUBACK NotAuthorized"),
        Protocol::V311 => assert!(
            results[4].signal.starts_with("connection closed"),
            "{}",
            results[4].signal
        ),
    }
    // Subscribing is allowed, receiving is not: the broker is silent.
    assert_eq!(results[5].signal, "SUBACK granted, not delivered within 1s");
    let sub = match protocol {
        Protocol::V311 => "SUBACK 0x80",
        Protocol::V5 => "SUBACK 0x87 NotAuthorized",
    };
    assert_eq!(results[6].signal, sub);
}

#[test]
fn embedded_enforces_policy_v311() {
    check(Protocol::V311);
}

#[test]
fn embedded_enforces_policy_v5() {
    check(Protocol::V5);
}
