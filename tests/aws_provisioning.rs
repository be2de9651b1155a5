//! AWS IoT fleet provisioning by claim against the embedded broker's emulated service: the
//! shipped scenario through the real binary (report checked against the schema), and the MQTT
//! API on the wire with plain rumqttc clients: every device gets its own answer and nobody
//! else's, the new certificate connects, tokens are single-use, the claim exception to
//! "CN = client ID" covers the claim certificate alone.
#![cfg(feature = "embedded-broker")]

use std::sync::Arc;
use std::time::Duration;

use assert_cmd::Command;
use rumqttc::{
    AsyncClient, ConnectReturnCode, Event, EventLoop, MqttOptions, Packet, QoS, TlsConfiguration,
    Transport,
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use serde_json::Value;
use thingswarm::aws::provisioning::{
    register_topic, Provisioner, CLAIM_CN, CREATE_FROM_CSR, CREATE_KEYS, DEFAULT_TEMPLATE,
};
use thingswarm::broker::{BrokerConfig, EmbeddedBroker};
use thingswarm::fleet::Endpoint;
use thingswarm::identity::{Algorithm, Fleet, FleetSpec};

mod common;
use common::schema_errors;

#[test]
fn the_shipped_provisioning_scenario_provisions_every_device() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let certs = tmp.path().join("certs");
    let check = Command::cargo_bin("thingswarm")
        .unwrap()
        .args(["check", "scenarios/provisioning.toml", "--certs-dir"])
        .arg(&certs)
        .timeout(Duration::from_secs(60))
        .assert()
        .success();
    let plan = String::from_utf8_lossy(&check.get_output().stdout).into_owned();
    assert!(
        plan.contains("provision:      by claim (certificate CN thingswarm-claim), template thingswarm-fleet, CreateKeysAndCertificate"),
        "{plan}"
    );
    let assert = Command::cargo_bin("thingswarm")
        .unwrap()
        .args([
            "run",
            "scenarios/provisioning.toml",
            "--no-tui",
            "--certs-dir",
        ])
        .arg(&certs)
        .arg("--out")
        .arg(&out)
        // One SLO that holds and one no run can meet: the verdict is exit code 1.
        .args(["--slo", "provision_rate>=1/s", "--slo", "provision_p50<1us"])
        .timeout(Duration::from_secs(120))
        .assert()
        .code(1);
    let stdout = String::from_utf8_lossy(&assert.get_output().stdout).into_owned();
    let report: Value =
        serde_json::from_slice(&std::fs::read(out.join("report.json")).unwrap()).unwrap();
    let errors = schema_errors(&report);
    assert!(
        errors.is_empty(),
        "report does not match the schema: {errors:#?}"
    );
    let aws = &report["aws"];
    assert_eq!(aws["provisioning_service"], "emulated", "{aws}");
    let g = &aws["provisioning"][0];
    let n = |v: &Value| v.as_u64().unwrap();
    assert_eq!(g["group"], "factory-new");
    assert_eq!(g["mode"], "keys");
    for k in ["started", "created", "registered", "provisioned"] {
        assert_eq!(n(&g[k]), 50, "{k}: {g}");
    }
    assert_eq!(g["rejected"], serde_json::json!({}), "{g}");
    for k in [
        "timeouts",
        "own_connect_failed",
        "session_lost",
        "unreadable",
    ] {
        assert_eq!(n(&g[k]), 0, "{k}: {g}");
    }
    for h in [
        "create_latency_us",
        "register_latency_us",
        "total_latency_us",
        "own_connect_latency_us",
    ] {
        assert_eq!(n(&g[h]["count"]), 50, "{h}: {g}");
    }
    // The whole flow contains its parts.
    assert!(n(&g["total_latency_us"]["p50"]) >= n(&g["register_latency_us"]["p50"]));
    assert!(g["provisioned_per_s"].as_f64().unwrap() > 0.0, "{g}");
    // Every device ended connected with its own certificate and closed cleanly.
    assert_eq!(report["devices"]["closed"], 50, "{}", report["devices"]);
    assert_eq!(report["errors"], serde_json::json!([]));
    assert!(
        stdout.contains("provision  factory-new (keys, template thingswarm-fleet, service emulated): 50/50 provisioned"),
        "{stdout}"
    );
    let verdicts: Vec<(String, bool)> = report["slos"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| {
            (
                o["slo"].as_str().unwrap().to_string(),
                o["passed"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        verdicts,
        vec![
            ("provision_rate >= 1/s".to_string(), true),
            ("provision_p50 < 1us".to_string(), false)
        ],
        "{}",
        report["slos"]
    );
    // junit.xml: the AWS verdict beside the SLOs.
    let xml = std::fs::read_to_string(out.join("junit.xml")).unwrap();
    let doc = roxmltree::Document::parse(&xml).unwrap();
    let case = doc
        .descendants()
        .find(|n| n.attribute("name") == Some("provision factory-new: every device provisioned"))
        .expect("an aws test case");
    assert_eq!(
        case.attribute("classname"),
        Some("thingswarm.provisioning.aws")
    );
    assert!(!case.children().any(|c| c.has_tag_name("failure")), "{xml}");
    // The HTML page has the section.
    let page = Command::cargo_bin("thingswarm")
        .unwrap()
        .args(["report", "--html", "-"])
        .arg(&out)
        .timeout(Duration::from_secs(60))
        .assert()
        .success();
    let html = String::from_utf8_lossy(&page.get_output().stdout).into_owned();
    assert!(
        html.contains("<h2>Fleet provisioning</h2>"),
        "no provisioning section"
    );
    assert!(
        html.contains("<td>factory-new</td><td>thingswarm-fleet</td><td>keys</td><td class=\"n\">50 / 50</td>"),
        "provisioning row missing"
    );
}

/// A broker with the emulated service, the claim identity, and two ordinary devices.
struct Setup {
    _dir: tempfile::TempDir,
    broker: EmbeddedBroker,
    endpoint: Endpoint,
    claim: Fleet,
    devices: Fleet,
    service: Arc<Provisioner>,
}

fn setup(provisioning: bool) -> Setup {
    thingswarm::tls::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path();
    let ensure = |template: &str, n: u64| {
        thingswarm::identity::cache::ensure(certs, &FleetSpec::new(template).unwrap(), n, false)
            .unwrap()
            .0
    };
    let claim = ensure(CLAIM_CN, 1);
    let devices = ensure("dev-{index}", 2);
    let ca = FleetSpec::new(CLAIM_CN).unwrap().load_ca(certs).unwrap();
    let service = Arc::new(Provisioner::new(
        ca,
        Algorithm::default(),
        vec![DEFAULT_TEMPLATE.into()],
        1,
    ));
    let broker = EmbeddedBroker::start_with_provisioning(
        BrokerConfig {
            port: 0,
            client_roots: vec![claim.root().clone()],
        },
        None,
        provisioning.then(|| service.clone()),
    )
    .unwrap();
    let endpoint = Endpoint::verified(broker.addr(), broker.server_ca_der()).unwrap();
    Setup {
        _dir: dir,
        broker,
        endpoint,
        claim,
        devices,
        service,
    }
}

/// Connects `id` with `chain`/`key`; returns the client, its events and the CONNACK code.
async fn connect(
    endpoint: &Endpoint,
    id: &str,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> (AsyncClient, EventLoop, ConnectReturnCode) {
    let tls = endpoint.trust.client_config(id, chain, key).unwrap();
    let mut opts = MqttOptions::new(id, endpoint.host.clone(), endpoint.port);
    opts.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(tls)))
        .set_max_packet_size(1 << 16, 1 << 16);
    let (client, mut events) = AsyncClient::new(opts, 20);
    let code = loop {
        match tokio::time::timeout(Duration::from_secs(10), events.poll())
            .await
            .expect("an answer to CONNECT within 10 s")
        {
            Ok(Event::Incoming(Packet::ConnAck(ack))) => break ack.code,
            Ok(_) => {}
            Err(rumqttc::ConnectionError::ConnectionRefused(code)) => break code,
            Err(e) => panic!("{id}: {e}"),
        }
    };
    (client, events, code)
}

async fn connect_claim(s: &Setup, id: &str) -> (AsyncClient, EventLoop) {
    let (c, e, code) = connect(
        &s.endpoint,
        id,
        s.claim.cert_chain(0),
        s.claim.key(0).clone_key(),
    )
    .await;
    assert_eq!(
        code,
        ConnectReturnCode::Success,
        "{id} with the claim certificate"
    );
    (c, e)
}

/// Subscribes to `filters` and waits for the SUBACK.
async fn subscribe(client: &AsyncClient, events: &mut EventLoop, filters: &[String]) {
    for f in filters {
        client.subscribe(f.clone(), QoS::AtLeastOnce).await.unwrap();
    }
    let mut acked = 0;
    while acked < filters.len() {
        if let Event::Incoming(Packet::SubAck(ack)) =
            tokio::time::timeout(Duration::from_secs(10), events.poll())
                .await
                .expect("SUBACK within 10 s")
                .unwrap()
        {
            assert!(
                ack.return_codes
                    .iter()
                    .all(|c| matches!(c, rumqttc::SubscribeReasonCode::Success(_))),
                "{ack:?}"
            );
            acked += 1;
        }
    }
}

/// The next PUBLISH within `within`: (topic, JSON), or `None`.
async fn next_message(events: &mut EventLoop, within: Duration) -> Option<(String, Value)> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let event = tokio::time::timeout_at(deadline, events.poll())
            .await
            .ok()?;
        if let Event::Incoming(Packet::Publish(p)) = event.unwrap() {
            return Some((p.topic, serde_json::from_slice(&p.payload).unwrap()));
        }
    }
}

fn answer_filters() -> Vec<String> {
    let reg = register_topic(DEFAULT_TEMPLATE);
    vec![
        format!("{CREATE_KEYS}/accepted"),
        format!("{CREATE_KEYS}/rejected"),
        format!("{reg}/accepted"),
        format!("{reg}/rejected"),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_device_gets_only_its_own_answer_and_connects_with_it() {
    let s = setup(true);
    // A claim session that listens on every answer topic and never asks.
    let (eaves, mut eaves_events) = connect_claim(&s, "eavesdropper").await;
    let mut filters = answer_filters();
    filters.push("$aws/certificates/#".into());
    filters.push("$aws/provisioning-templates/#".into());
    subscribe(&eaves, &mut eaves_events, &filters).await;

    const N: usize = 5;
    let reg = register_topic(DEFAULT_TEMPLATE);
    for i in 0..N {
        let id = format!("unit-{i}");
        let (client, mut events) = connect_claim(&s, &id).await;
        subscribe(&client, &mut events, &answer_filters()).await;
        client
            .publish(CREATE_KEYS, QoS::AtLeastOnce, false, "{}")
            .await
            .unwrap();
        let (topic, created) = next_message(&mut events, Duration::from_secs(10))
            .await
            .expect("an answer to CreateKeysAndCertificate");
        assert_eq!(topic, format!("{CREATE_KEYS}/accepted"), "{created}");
        for k in [
            "certificateId",
            "certificatePem",
            "privateKey",
            "certificateOwnershipToken",
        ] {
            assert!(created[k].is_string(), "{k} in {created}");
        }
        let cert = pem::parse(created["certificatePem"].as_str().unwrap()).unwrap();
        let (_, x509) = x509_parser::parse_x509_certificate(cert.contents()).unwrap();
        let cn = x509.subject().iter_common_name().next().unwrap();
        assert_eq!(
            cn.as_str().unwrap(),
            id,
            "the certificate is the requester's"
        );
        let token = created["certificateOwnershipToken"].as_str().unwrap();
        let body = serde_json::json!({
            "certificateOwnershipToken": token,
            "parameters": {"SerialNumber": id},
        })
        .to_string();
        client
            .publish(&reg, QoS::AtLeastOnce, false, body.clone())
            .await
            .unwrap();
        let (topic, registered) = next_message(&mut events, Duration::from_secs(10))
            .await
            .expect("an answer to RegisterThing");
        assert_eq!(topic, format!("{reg}/accepted"), "{registered}");
        assert_eq!(
            registered,
            serde_json::json!({"deviceConfiguration": {}, "thingName": id})
        );
        // The token is single-use: AWS's documented error shape.
        client
            .publish(&reg, QoS::AtLeastOnce, false, body)
            .await
            .unwrap();
        let (topic, rejected) = next_message(&mut events, Duration::from_secs(10))
            .await
            .expect("an answer to the reused token");
        assert_eq!(topic, format!("{reg}/rejected"));
        assert_eq!(rejected["statusCode"], 400, "{rejected}");
        assert_eq!(rejected["errorCode"], "InvalidCertificateOwnershipToken");
        assert!(rejected["errorMessage"].is_string());
        client.disconnect().await.unwrap();

        // The new identity connects as the thing.
        let key = pem::parse(created["privateKey"].as_str().unwrap()).unwrap();
        let (own, _own_events, code) = connect(
            &s.endpoint,
            &id,
            vec![CertificateDer::from(cert.into_contents())],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.into_contents())),
        )
        .await;
        assert_eq!(
            code,
            ConnectReturnCode::Success,
            "{id} with its own certificate"
        );
        own.disconnect().await.unwrap();
    }
    // An unknown template: 404 in the documented shape.
    let (client, mut events) = connect_claim(&s, "unit-x").await;
    let other = register_topic("no-such-template");
    subscribe(&client, &mut events, &[format!("{other}/rejected")]).await;
    client
        .publish(
            &other,
            QoS::AtLeastOnce,
            false,
            r#"{"certificateOwnershipToken":"00","parameters":{}}"#,
        )
        .await
        .unwrap();
    let (topic, rejected) = next_message(&mut events, Duration::from_secs(10))
        .await
        .expect("an answer for an unknown template");
    assert_eq!(topic, format!("{other}/rejected"));
    assert_eq!(rejected["statusCode"], 404, "{rejected}");

    // The eavesdropper heard nothing: no answer, no request (tokens travel in requests).
    assert_eq!(
        next_message(&mut eaves_events, Duration::from_millis(1500)).await,
        None,
        "a device that did not ask got a provisioning message"
    );
    assert_eq!(s.service.counts(), (N as u64, N as u64));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_that_did_not_subscribe_gets_no_answer_and_csr_works() {
    let s = setup(true);
    let (client, mut events) = connect_claim(&s, "unit-csr").await;
    // Asks before subscribing: AWS answers nobody.
    client
        .publish(CREATE_KEYS, QoS::AtLeastOnce, false, "{}")
        .await
        .unwrap();
    assert_eq!(
        next_message(&mut events, Duration::from_millis(1000)).await,
        None
    );
    // CreateCertificateFromCsr with a key made here.
    subscribe(&client, &mut events, &[format!("{CREATE_FROM_CSR}/+")]).await;
    let key = rcgen::KeyPair::generate().unwrap();
    let csr = rcgen::CertificateParams::new(Vec::<String>::new())
        .unwrap()
        .serialize_request(&key)
        .unwrap()
        .pem()
        .unwrap();
    let body = serde_json::json!({ "certificateSigningRequest": csr }).to_string();
    client
        .publish(CREATE_FROM_CSR, QoS::AtLeastOnce, false, body)
        .await
        .unwrap();
    let (topic, created) = next_message(&mut events, Duration::from_secs(10))
        .await
        .expect("an answer to CreateCertificateFromCsr");
    assert_eq!(topic, format!("{CREATE_FROM_CSR}/accepted"), "{created}");
    assert!(created.get("privateKey").is_none(), "{created}");
    let cert = pem::parse(created["certificatePem"].as_str().unwrap()).unwrap();
    let (_, _, code) = connect(
        &s.endpoint,
        "unit-csr",
        vec![CertificateDer::from(cert.into_contents())],
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
    )
    .await;
    assert_eq!(code, ConnectReturnCode::Success);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_claim_certificate_may_use_another_client_id() {
    for provisioning in [true, false] {
        let s = setup(provisioning);
        // An ordinary device under its own ID: allowed; under another device's: refused.
        let (_c, _e, own) = connect(
            &s.endpoint,
            "dev-0",
            s.devices.cert_chain(0),
            s.devices.key(0).clone_key(),
        )
        .await;
        assert_eq!(own, ConnectReturnCode::Success);
        let (_c, _e, other) = connect(
            &s.endpoint,
            "dev-1",
            s.devices.cert_chain(0),
            s.devices.key(0).clone_key(),
        )
        .await;
        assert_eq!(
            other,
            ConnectReturnCode::NotAuthorized,
            "provisioning {provisioning}"
        );
        // The claim certificate under any ID: only while provisioning is emulated.
        let (_c, _e, claim) = connect(
            &s.endpoint,
            "unit-7",
            s.claim.cert_chain(0),
            s.claim.key(0).clone_key(),
        )
        .await;
        let want = if provisioning {
            ConnectReturnCode::Success
        } else {
            ConnectReturnCode::NotAuthorized
        };
        assert_eq!(claim, want, "provisioning {provisioning}");
        drop(s.broker);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_session_may_use_the_provisioning_topics_only() {
    let s = setup(true);
    let (client, mut events) = connect_claim(&s, "unit-9").await;
    client
        .subscribe("dt/anything", QoS::AtLeastOnce)
        .await
        .unwrap();
    let refused = loop {
        if let Event::Incoming(Packet::SubAck(ack)) =
            tokio::time::timeout(Duration::from_secs(10), events.poll())
                .await
                .expect("SUBACK within 10 s")
                .unwrap()
        {
            break ack.return_codes;
        }
    };
    assert_eq!(refused, vec![rumqttc::SubscribeReasonCode::Failure]);
    // Publishing outside the provisioning API closes a 3.1.1 connection, as AWS IoT does.
    client
        .publish("dt/anything", QoS::AtLeastOnce, false, "x")
        .await
        .unwrap();
    let closed = async {
        loop {
            if events.poll().await.is_err() {
                return;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), closed)
        .await
        .expect("the broker closes the claim session");
}

#[test]
fn a_standalone_broker_with_aws_provisions_a_targeted_run() {
    let tmp = tempfile::tempdir().unwrap();
    let certs = tmp.path().join("certs");
    let broker = common::AwsBroker::start(&certs, "AWS IoT fleet provisioning emulated");
    let (addr, server_ca) = (&broker.addr, &broker.server_ca);

    let out = tmp.path().join("out");
    Command::cargo_bin("thingswarm")
        .unwrap()
        .args([
            "run",
            "scenarios/provisioning.toml",
            "--no-tui",
            "--target",
            addr,
        ])
        .args(["--server-ca", server_ca, "--certs-dir"])
        .arg(&certs)
        .arg("--out")
        .arg(&out)
        .timeout(Duration::from_secs(120))
        .assert()
        .success();
    let report: Value =
        serde_json::from_slice(&std::fs::read(out.join("report.json")).unwrap()).unwrap();
    let aws = &report["aws"];
    // The broker's service answered, not one started by the run.
    assert_eq!(aws["provisioning_service"], "target", "{aws}");
    assert_eq!(aws["provisioning"][0]["provisioned"], 50, "{aws}");
}
