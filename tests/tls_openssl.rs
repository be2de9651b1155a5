//! The OpenSSL backend on the wire, against mosquitto restricted with `tls_version` /
//! `ciphers`: a seed CBC suite and a static-RSA suite negotiate at TLS 1.2 (the probe reports
//! them with the backend) and 3 devices connect and publish QoS 1 over each; a suite mismatch
//! fails every device with a classified TLS error. SNI: a server records the name each backend
//! sent, and the certificate is checked against that name, not the connect address.

use std::path::Path;
use std::sync::Arc;

use thingswarm::broker::mosquitto::Mosquitto;
use thingswarm::fleet::{Endpoint, RunResult};
use thingswarm::identity::{Algorithm, Fleet};
use thingswarm::scenario::{Overrides, Plan};
use thingswarm::tls::install_crypto_provider;
use thingswarm::tls::options::Backend;
use thingswarm::tls::probe::probe;

mod common;

/// A plan of 3 devices publishing QoS 1 for `duration` with `target` lines under `[target]`.
fn planned(target: &str, duration: &str) -> (Plan, Vec<Arc<Fleet>>, tempfile::TempDir) {
    install_crypto_provider();
    let text = format!(
        r#"
name = "tls-openssl"
duration = "{duration}"
[target]
{target}
[[group]]
name = "g"
devices = 3
client_id = "g-{{index}}"
publish = {{ topic = "t/{{client_id}}", qos = 1, rate = "20/s", size = 32 }}
"#
    );
    let plan = Plan::from_str(&text, Path::new("tls.toml"), &Overrides::default()).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let fleets = common::identities(&plan, tmp.path());
    (plan, fleets, tmp)
}

fn assert_connected_and_published(result: &RunResult) {
    let t = result.last.totals;
    assert_eq!((t.connects, t.failed), (3, 0), "{:?}", result.last.errors);
    assert!(t.sent >= 3, "each device published: {}", t.sent);
    assert_eq!(t.acked, t.sent, "every QoS 1 publish acknowledged");
    assert!(result.last.errors.is_empty(), "{:?}", result.last.errors);
}

#[test]
fn seed_cbc_and_static_rsa_suites_negotiate_over_openssl() {
    // (suite, server key, IANA name the probe reports, key exchange)
    let cells = [
        (
            "ECDHE-ECDSA-AES128-SHA256",
            Algorithm::EcdsaP256Sha256,
            "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256",
            Some("secp256r1"),
        ),
        (
            "ECDHE-RSA-AES256-SHA",
            Algorithm::Rsa {
                bits: thingswarm::identity::algorithm::RsaBits::B2048,
                hash: thingswarm::identity::algorithm::RsaHash::Sha256,
            },
            "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA",
            Some("secp256r1"),
        ),
        (
            "AES128-GCM-SHA256",
            Algorithm::Rsa {
                bits: thingswarm::identity::algorithm::RsaBits::B2048,
                hash: thingswarm::identity::algorithm::RsaHash::Sha256,
            },
            "TLS_RSA_WITH_AES_128_GCM_SHA256",
            None,
        ),
    ];
    for (suite, server_key, iana, kx) in cells {
        let (plan, fleets, _tmp) = planned(&format!(r#"tls = {{ suites = ["{suite}"] }}"#), "1s");
        let config = format!("tls_version tlsv1.2\nciphers {suite}");
        let Some(broker) =
            Mosquitto::start_unless_missing_with(&[fleets[0].root().clone()], &config, server_key)
                .unwrap()
        else {
            return;
        };
        let (probed, result) = common::probe_and_run(&plan, fleets, &broker);
        let n = probed.unwrap_or_else(|e| panic!("{suite}: {e}"));
        assert_eq!(
            (
                n.version.as_str(),
                n.cipher_suite.as_str(),
                n.backend.as_str()
            ),
            ("TLSv1.2", iana, "openssl"),
            "{suite}"
        );
        // ECDHE curve choice is the server's; any named group proves an ephemeral exchange.
        assert_eq!(
            n.kx_group.is_some(),
            kx.is_some(),
            "{suite}: {:?}",
            n.kx_group
        );
        assert!(n.client_cpu_ms.is_some_and(|c| c > 0.0), "{n:?}");
        assert_connected_and_published(&result);
    }
}

#[test]
fn an_openssl_suite_mismatch_is_a_classified_handshake_failure() {
    // The broker takes only AES128-SHA; the devices offer only AES256-SHA.
    let (plan, fleets, _tmp) = planned(r#"tls = { suites = ["ECDHE-ECDSA-AES256-SHA"] }"#, "0s");
    let config = "tls_version tlsv1.2\nciphers ECDHE-ECDSA-AES128-SHA";
    let Some(broker) =
        Mosquitto::start_unless_missing(&[fleets[0].root().clone()], config).unwrap()
    else {
        return;
    };
    let (probed, result) = common::probe_and_run(&plan, fleets, &broker);
    let e = probed.unwrap_err();
    assert!(e.starts_with("tls: handshake failure: "), "{e}");
    assert!(e.contains("alert handshake failure"), "{e}");
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
}

#[test]
fn sni_is_sent_and_verified_by_both_backends() {
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    install_crypto_provider();
    // A server certificate for broker.example only (not 127.0.0.1), from a test CA.
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    // A subject of its own: rcgen's default equals the leaf's, which OpenSSL reads as a
    // self-signed leaf.
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "sni test CA");
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, &ca_key);
    let key = rcgen::KeyPair::generate().unwrap();
    let leaf = rcgen::CertificateParams::new(vec!["broker.example".to_string()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    let server = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(
            vec![leaf.der().clone()],
            PrivateKeyDer::try_from(key.serialize_der()).unwrap(),
        )
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
    let ca_der: CertificateDer<'static> = ca.der().clone();

    let (_, fleets, _tmp) = planned("", "0s");
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        for (backend, sni) in [
            ("rustls", Some("broker.example")),
            ("openssl", Some("broker.example")),
            ("openssl", None),
        ] {
            let target = match sni {
                Some(name) => format!("sni = \"{name}\"\ntls = {{ backend = \"{backend}\" }}"),
                None => format!("tls = {{ backend = \"{backend}\" }}"),
            };
            let (plan, _, _) = planned(&target, "0s");
            let acceptor = acceptor.clone();
            let accept = async {
                let (tcp, _) = listener.accept().await.unwrap();
                // The handshake may fail on the client's side (name mismatch); what the
                // server saw is recorded either way.
                let lazy =
                    tokio_rustls::LazyConfigAcceptor::new(rustls::server::Acceptor::default(), tcp);
                let start = lazy.await.unwrap();
                let seen = start.client_hello().server_name().map(str::to_string);
                // Held open until the probe is done: it listens for a late TLS 1.3 verdict.
                let stream = start.into_stream(acceptor.config().clone()).await.ok();
                (seen, stream)
            };
            let mut endpoint = Endpoint::verified(addr, &ca_der).unwrap();
            endpoint.trust = endpoint.trust.with_options(&plan.tls);
            let f = &fleets[0];
            let tls = endpoint
                .trust
                .device_tls(&f.client_id(0), f.cert_chain(0), f.key(0).clone_key())
                .unwrap();
            assert_eq!(tls.backend(), Backend::parse(backend).unwrap());
            let ((seen, _stream), probed) =
                tokio::join!(accept, probe(&endpoint.host, endpoint.port, tls));
            assert_eq!(seen.as_deref(), sni, "{backend}");
            match sni {
                // Verified against the SNI name, which the certificate carries.
                Some(_) => assert_eq!(probed.unwrap().backend, backend),
                // Verified against 127.0.0.1, which it does not.
                None => {
                    let e = probed.unwrap_err();
                    assert!(e.starts_with("tls: server name mismatch"), "{e}");
                }
            }
        }
    });
}

#[test]
fn a_fleet_connects_with_sni_through_the_stream_layer() {
    // mosquitto's certificate names localhost; the devices connect to 127.0.0.1 and send
    // `localhost` as SNI, so only a handshake that uses the SNI name verifies.
    for backend in ["rustls", "openssl"] {
        let (plan, fleets, _tmp) = planned(
            &format!("sni = \"localhost\"\ntls = {{ backend = \"{backend}\" }}"),
            "1s",
        );
        let Some(broker) =
            Mosquitto::start_unless_missing(&[fleets[0].root().clone()], "").unwrap()
        else {
            return;
        };
        let (probed, result) = common::probe_and_run(&plan, fleets, &broker);
        assert_eq!(probed.unwrap().backend, backend);
        assert_connected_and_published(&result);
    }
}

/// Runs the `openssl` command in `dir`; panics with its stderr when it fails.
fn openssl_cli(dir: &Path, args: &[&str]) -> String {
    let out = std::process::Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "openssl {args:?}: {text}");
    text
}

/// RSASSA-PSS and DSA_WITH_SHA256 identities from the identity factory (signed by OpenSSL):
/// the certificates verify with `openssl verify` and carry the seed's signature; rustls cannot
/// sign with either key, so the devices run on the OpenSSL backend by themselves; what happens
/// next is the broker's TLS library's decision (mosquitto / OpenSSL 3 here), and a refusal is
/// a classified TLS error in the run, never a crash.
#[test]
fn pss_and_dsa_identities_verify_and_the_broker_decides() {
    install_crypto_provider();
    for (algorithm, signature) in [
        ("rsa2048-pss-sha256", "rsassaPss"),
        ("dsa2048-sha256", "dsa_with_SHA256"),
    ] {
        for versions in [r#"["1.2", "1.3"]"#, r#"["1.2"]"#] {
            let text = format!(
                r#"
name = "pss-dsa"
duration = "1s"
[target]
tls = {{ versions = {versions} }}
[identity]
algorithm = "{algorithm}"
[[group]]
name = "g"
devices = 3
client_id = "g-{{index}}"
publish = {{ topic = "t/{{client_id}}", qos = 1, rate = "20/s", size = 32 }}
"#
            );
            let plan = Plan::from_str(&text, Path::new("x.toml"), &Overrides::default()).unwrap();
            let tmp = tempfile::tempdir().unwrap();
            let fleets = common::identities(&plan, tmp.path());
            let f = &fleets[0];
            assert_eq!(
                f.meta().signature,
                algorithm.parse::<Algorithm>().unwrap().seed_name()
            );
            // openssl verify: the device certificate chains to the fleet's root.
            let pem = |der: &[u8]| thingswarm::identity::cache::pem_cert(der);
            std::fs::write(tmp.path().join("root.pem"), pem(f.root())).unwrap();
            std::fs::write(tmp.path().join("dev.pem"), pem(&f.cert(0))).unwrap();
            let verified = openssl_cli(tmp.path(), &["verify", "-CAfile", "root.pem", "dev.pem"]);
            assert!(verified.contains("dev.pem: OK"), "{verified}");
            let shown = openssl_cli(tmp.path(), &["x509", "-in", "dev.pem", "-noout", "-text"]);
            assert!(shown.contains(signature), "{algorithm}: {shown}");

            let Some(broker) = Mosquitto::start_unless_missing(&[f.root().clone()], "").unwrap()
            else {
                return;
            };
            let endpoint = Endpoint::verified(broker.addr(), broker.server_ca_der()).unwrap();
            assert_eq!(endpoint.trust.backend_for(&f.key(0)), Backend::Openssl);
            let (probed, result) = common::probe_and_run(&plan, fleets, &broker);
            eprintln!("{algorithm} {versions}: {probed:?}");
            let t = result.last.totals;
            if algorithm.starts_with("dsa") && versions.contains("1.3") {
                // TLS 1.3 has no DSA signature scheme: OpenSSL sends no certificate, and the
                // broker, which requires one, says so (after the handshake, as TLS 1.3 does).
                let e = probed.unwrap_err();
                assert!(e.starts_with("tls: certificate required"), "{e}");
                assert_eq!((t.connects, t.failed), (0, 3));
                // A device that already wrote CONNECT may see the broker's close as a reset
                // instead of the alert (the alert is lost to the RST): both are classified.
                let errors = &result.last.errors;
                assert!(
                    errors.iter().all(|e| matches!(
                        e.class.as_str(),
                        "tls: certificate required" | "tcp: reset by peer"
                    )),
                    "{errors:?}"
                );
            } else {
                // RSA-PSS at either version, DSA at TLS 1.2: mosquitto's OpenSSL 3 accepts
                // them (AWS IoT would refuse DSA; that too would be a TLS class here).
                assert_eq!(probed.unwrap().backend, "openssl");
                assert_connected_and_published(&result);
            }
        }
    }
}
