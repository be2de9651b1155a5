//! TLS choices on the wire, against mosquitto restricted with `tls_version` / `ciphers`: the
//! seed's ECDHE-ECDSA AES-GCM suites negotiate when both sides allow them (the probe reports
//! the version and suite), and a mismatch fails every device with a classified TLS error
//! instead of aborting the run. ALPN is checked against a rustls server that records it.

use std::path::Path;
use std::sync::Arc;

use thingswarm::broker::mosquitto::Mosquitto;
use thingswarm::fleet::Endpoint;
use thingswarm::identity::Fleet;
use thingswarm::scenario::{Overrides, Plan};
use thingswarm::tls::install_crypto_provider;
use thingswarm::tls::probe::probe;

mod common;

fn planned(tls: &str) -> (Plan, Vec<Arc<Fleet>>, tempfile::TempDir) {
    install_crypto_provider();
    let text = format!(
        r#"
name = "tls"
duration = "0s"
[target]
tls = {tls}
[[group]]
name = "g"
devices = 3
client_id = "g-{{index}}"
"#
    );
    let plan = Plan::from_str(&text, Path::new("tls.toml"), &Overrides::default()).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let fleets = common::identities(&plan, tmp.path());
    (plan, fleets, tmp)
}

fn mosquitto(fleet: &Fleet, config: &str) -> Option<Mosquitto> {
    Mosquitto::start_unless_missing(&[fleet.root().clone()], config).unwrap()
}

#[test]
fn seed_ecdsa_gcm_suites_negotiate_at_tls12() {
    for (openssl, iana) in [
        (
            "ECDHE-ECDSA-AES128-GCM-SHA256",
            "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
        ),
        (
            "ECDHE-ECDSA-AES256-GCM-SHA384",
            "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
        ),
    ] {
        let (plan, fleets, _tmp) = planned(&format!(r#"{{ suites = ["{openssl}"] }}"#));
        // The broker allows exactly this suite, and TLS 1.2 only.
        let config = format!("tls_version tlsv1.2\nciphers {openssl}");
        let Some(broker) = mosquitto(&fleets[0], &config) else {
            return;
        };
        let (probed, result) = common::probe_and_run(&plan, fleets, &broker);
        let n = probed.unwrap();
        assert_eq!(
            (n.version.as_str(), n.cipher_suite.as_str()),
            ("TLSv1.2", iana)
        );
        assert_eq!(result.last.totals.connects, 3, "{:?}", result.last.errors);
    }
}

#[test]
fn mismatches_are_classified_tls_errors_not_aborts() {
    // The broker takes only AES128; the devices offer only AES256.
    let (plan, fleets, _tmp) = planned(r#"{ suites = ["ECDHE-ECDSA-AES256-GCM-SHA384"] }"#);
    let config = "tls_version tlsv1.2\nciphers ECDHE-ECDSA-AES128-GCM-SHA256";
    let Some(broker) = mosquitto(&fleets[0], config) else {
        return;
    };
    let (probed, result) = common::probe_and_run(&plan, fleets, &broker);
    assert!(probed.unwrap_err().contains("HandshakeFailure"));
    let t = result.last.totals;
    assert_eq!((t.connects, t.failed), (0, 3));
    let classes: Vec<&str> = result
        .last
        .errors
        .iter()
        .map(|e| e.class.as_str())
        .collect();
    assert_eq!(
        classes,
        ["tls: handshake failure"],
        "{:?}",
        result.last.errors
    );

    // The broker speaks TLS 1.3 only; the devices offer 1.2 only.
    let (plan, fleets, _tmp) = planned(r#"{ versions = ["1.2"] }"#);
    let Some(broker) = mosquitto(&fleets[0], "tls_version tlsv1.3") else {
        return;
    };
    let (probed, result) = common::probe_and_run(&plan, fleets, &broker);
    assert!(probed.is_err());
    assert_eq!(result.last.totals.failed, 3);
    let classes: Vec<&str> = result
        .last
        .errors
        .iter()
        .map(|e| e.class.as_str())
        .collect();
    assert_eq!(
        classes,
        ["tls: protocol version"],
        "{:?}",
        result.last.errors
    );
}

#[test]
fn alpn_is_offered_as_configured() {
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let (plan, fleets, tmp) = planned(r#"{ alpn = ["x-amzn-mqtt-ca", "mqtt"] }"#);
    let server = thingswarm::identity::server::server_identity(&tmp.path().join("srv")).unwrap();
    let chain: Vec<CertificateDer<'static>> =
        pem::parse_many(std::fs::read(&server.cert_pem).unwrap())
            .unwrap()
            .into_iter()
            .map(|p| CertificateDer::from(p.into_contents()))
            .collect();
    let key = pem::parse(std::fs::read(&server.key_pem).unwrap()).unwrap();
    let key = PrivateKeyDer::try_from(key.into_contents()).unwrap();
    // The server records what the client offered by choosing the protocol it prefers.
    let mut config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
    config.alpn_protocols = vec![b"mqtt".to_vec()];
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let accepted = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            let mut tls = acceptor.accept(tcp).await.unwrap();
            let alpn = tls.get_ref().1.alpn_protocol().map(|p| p.to_vec());
            // Held open until the probe, which listens for a late TLS 1.3 verdict, closes.
            let _ = tokio::io::AsyncReadExt::read(&mut tls, &mut [0u8; 1]).await;
            alpn
        });
        let mut endpoint = Endpoint::verified(addr, &server.ca_der).unwrap();
        endpoint.trust = endpoint.trust.with_options(&plan.tls);
        let f = &fleets[0];
        let config = endpoint
            .trust
            .client_config(&f.client_id(0), f.cert_chain(0), f.key(0).clone_key())
            .unwrap();
        probe(&endpoint.host, endpoint.port, config).await.unwrap();
        assert_eq!(accepted.await.unwrap().as_deref(), Some(&b"mqtt"[..]));
    });

    // Without ALPN in the scenario, none is offered: the same server then selects nothing.
    assert!(Plan::from_str(
        "name = \"x\"\nduration = \"0s\"\n[[group]]\nname = \"g\"\ndevices = 1\nclient_id = \"a\"\n",
        Path::new("x.toml"),
        &Overrides::default()
    )
    .unwrap()
    .tls
    .alpn
    .is_empty());
}
