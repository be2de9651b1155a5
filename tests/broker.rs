//! The brokers thingswarm starts itself, exercised with real mTLS MQTT clients (rumqttc).
//!
//! Each test starts and stops its own broker on a free loopback port and generates its own
//! small fleet in a temp dir. Every wait is bounded.

use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rumqttc::{
    AsyncClient, ConnAck, ConnectReturnCode, ConnectionError, Event, EventLoop, MqttOptions,
    Packet, TlsConfiguration, Transport,
};
use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::CertificateDer;
use thingswarm::broker::mosquitto::{self, Mosquitto};
use thingswarm::identity::{cache, Fleet, FleetSpec};

/// Per-connect bound: far above a loopback mTLS handshake even in a debug build on a busy
/// 2-core machine, far below a hung test.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);
const DEVICES: u64 = 20;

fn fleet(certs_dir: &Path, count: u64) -> Fleet {
    thingswarm::tls::install_crypto_provider();
    let spec = FleetSpec::new("dev-{index:03}").unwrap();
    cache::ensure(certs_dir, &spec, count, false).unwrap().0
}

/// One rustls config per identity, as the fleet runner builds them.
fn client_config(
    server_ca: &CertificateDer<'static>,
    fleet: &Fleet,
    index: usize,
) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    roots.add(server_ca.clone()).unwrap();
    Arc::new(
        ClientConfig::builder()
            .with_root_certificates(roots)
            .with_client_auth_cert(fleet.cert_chain(index), fleet.key(index).clone_key())
            .unwrap(),
    )
}

/// A connected (or refused) MQTT 3.1.1 session.
struct Session {
    client: AsyncClient,
    eventloop: EventLoop,
}

impl Session {
    /// Connects as `client_id` and polls until CONNACK or the first error (never retries:
    /// rumqttc would reconnect on the next poll).
    async fn connect(
        addr: SocketAddr,
        client_id: &str,
        tls: Arc<ClientConfig>,
    ) -> (Session, Result<ConnAck, ConnectionError>) {
        let mut opts = MqttOptions::new(client_id, "127.0.0.1", addr.port());
        opts.set_transport(Transport::Tls(TlsConfiguration::Rustls(tls)));
        opts.set_keep_alive(Duration::from_secs(30));
        let (client, mut eventloop) = AsyncClient::new(opts, 10);
        let until_connack = async {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(ack))) => return Ok(ack),
                    Ok(_) => continue,
                    Err(e) => return Err(e),
                }
            }
        };
        let Ok(result) = tokio::time::timeout(CONNECT_TIMEOUT, until_connack).await else {
            panic!("{client_id}: no CONNACK or error within {CONNECT_TIMEOUT:?}");
        };
        (Session { client, eventloop }, result)
    }

    /// Sends DISCONNECT and polls until it is out (bounded).
    async fn disconnect(mut self) {
        let _ = self.client.disconnect().await;
        let _ = tokio::time::timeout(Duration::from_secs(5), async {
            while let Ok(event) = self.eventloop.poll().await {
                if matches!(event, Event::Outgoing(rumqttc::Outgoing::Disconnect)) {
                    break;
                }
            }
        })
        .await;
    }
}

/// Connects every device of `fleet` at once, asserts each gets CONNACK success, disconnects.
async fn all_connect(addr: SocketAddr, server_ca: &CertificateDer<'static>, fleet: &Fleet) {
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..fleet.len() {
        let tls = client_config(server_ca, fleet, i);
        let id = fleet.client_id(i);
        tasks.spawn(async move {
            let (session, result) = Session::connect(addr, &id, tls).await;
            (id, session, result)
        });
    }
    let mut sessions = Vec::new();
    let mut failures = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        let (id, session, result) = joined.unwrap();
        match result {
            Ok(ack) if ack.code == ConnectReturnCode::Success => sessions.push(session),
            Ok(ack) => failures.push(format!("{id}: CONNACK {:?}", ack.code)),
            Err(e) => failures.push(format!("{id}: {e}")),
        }
    }
    assert!(failures.is_empty(), "devices refused: {failures:#?}");
    assert_eq!(sessions.len(), fleet.len());
    for session in sessions {
        session.disconnect().await;
    }
}

fn refused(addr: SocketAddr) -> bool {
    TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_err()
}

#[cfg(feature = "embedded-broker")]
mod embedded {
    use super::*;
    use thingswarm::broker::{BrokerConfig, BrokerError, EmbeddedBroker};

    fn start(roots: Vec<CertificateDer<'static>>) -> EmbeddedBroker {
        EmbeddedBroker::start(BrokerConfig {
            port: 0,
            client_roots: roots,
        })
        .unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn twenty_distinct_devices_connect() {
        let certs = tempfile::tempdir().unwrap();
        let fleet = fleet(certs.path(), DEVICES);
        let broker = start(vec![fleet.root().clone()]);
        assert!(broker.addr().ip().is_loopback() && broker.addr().port() != 0);
        assert!(broker.server_ca().is_file());
        all_connect(broker.addr(), broker.server_ca_der(), &fleet).await;
        // Stopping from inside an async context must not panic.
        broker.stop();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn refuses_a_certificate_from_another_ca() {
        let certs = tempfile::tempdir().unwrap();
        let other_certs = tempfile::tempdir().unwrap();
        let fleet = fleet(certs.path(), 1);
        let stranger = super::fleet(other_certs.path(), 1);
        assert_ne!(
            fleet.root(),
            stranger.root(),
            "two separately generated CAs"
        );
        let broker = start(vec![fleet.root().clone()]);

        let tls = client_config(broker.server_ca_der(), &stranger, 0);
        let (_session, result) = Session::connect(broker.addr(), "dev-000", tls).await;
        let err = result.expect_err("a device from another CA must not connect");
        // TLS 1.3: the client finishes its handshake before the server checks the client
        // certificate, so the refusal arrives as a TLS alert on the first read (rumqttc wraps
        // it as an I/O or even a deserialization error). Generated CAs share a subject name,
        // so rustls finds the wrong anchor by name and answers DecryptError (bad signature)
        // rather than UnknownCA.
        let text = format!("{err}");
        eprintln!("foreign CA refused with: {text}");
        assert!(
            !matches!(err, ConnectionError::ConnectionRefused(_)) && text.contains("alert"),
            "expected a TLS alert, got {err:?}"
        );

        // The rightful device still gets in.
        let tls = client_config(broker.server_ca_der(), &fleet, 0);
        let (session, result) = Session::connect(broker.addr(), "dev-000", tls).await;
        assert_eq!(result.unwrap().code, ConnectReturnCode::Success);
        session.disconnect().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn refuses_a_device_using_another_devices_client_id() {
        let certs = tempfile::tempdir().unwrap();
        let fleet = fleet(certs.path(), 3);
        let broker = start(vec![fleet.root().clone()]);

        // dev-001's certificate, dev-002's client ID.
        let tls = client_config(broker.server_ca_der(), &fleet, 1);
        let (_session, result) = Session::connect(broker.addr(), "dev-002", tls).await;
        match result {
            Err(ConnectionError::ConnectionRefused(code)) => {
                assert_eq!(code, ConnectReturnCode::NotAuthorized)
            }
            other => panic!("expected CONNACK not authorized, got {other:?}"),
        }

        // With its own client ID the same certificate connects.
        let tls = client_config(broker.server_ca_der(), &fleet, 1);
        let (session, result) = Session::connect(broker.addr(), "dev-001", tls).await;
        assert_eq!(result.unwrap().code, ConnectReturnCode::Success);
        session.disconnect().await;
    }

    /// Sync code: start, stop, and the port is closed at once; a named port is honoured, even
    /// right after a broker on it closed live sessions (its side of them is in TIME_WAIT).
    #[test]
    fn stop_closes_the_port() {
        let certs = tempfile::tempdir().unwrap();
        let fleet = fleet(certs.path(), 1);
        let broker = start(vec![fleet.root().clone()]);
        let addr = broker.addr();
        let rt = tokio::runtime::Runtime::new().unwrap();
        let tls = client_config(broker.server_ca_der(), &fleet, 0);
        let (session, result) = rt.block_on(Session::connect(addr, "dev-000", tls));
        assert_eq!(result.unwrap().code, ConnectReturnCode::Success);
        broker.stop();
        assert!(refused(addr), "{addr} still accepts connections after stop");

        let again = EmbeddedBroker::start(BrokerConfig {
            port: addr.port(),
            client_roots: vec![fleet.root().clone()],
        })
        .unwrap();
        assert_eq!(again.addr(), addr);
        drop(again);
        assert!(refused(addr), "{addr} still accepts connections after drop");
        drop(session);
    }

    /// Inside a runtime: stop (via drop) closes the port too, and sessions with it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn drop_inside_a_runtime_closes_sessions() {
        let certs = tempfile::tempdir().unwrap();
        let fleet = fleet(certs.path(), 1);
        let broker = start(vec![fleet.root().clone()]);
        let addr = broker.addr();
        let tls = client_config(broker.server_ca_der(), &fleet, 0);
        let (mut session, result) = Session::connect(addr, "dev-000", tls).await;
        assert_eq!(result.unwrap().code, ConnectReturnCode::Success);
        drop(broker);
        assert!(refused(addr));
        // The connected session sees the broker go away instead of being served on.
        let ended = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                if session.eventloop.poll().await.is_err() {
                    return;
                }
            }
        })
        .await;
        assert!(
            ended.is_ok(),
            "session still alive after the broker stopped"
        );
    }

    #[test]
    fn needs_client_roots() {
        let err = EmbeddedBroker::start(BrokerConfig::default()).unwrap_err();
        assert!(matches!(err, BrokerError::NoClientRoots), "{err}");
    }

    #[test]
    fn a_taken_port_is_a_one_line_error_naming_it() {
        let certs = tempfile::tempdir().unwrap();
        let fleet = fleet(certs.path(), 1);
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = taken.local_addr().unwrap().port();
        let err = EmbeddedBroker::start(BrokerConfig {
            port,
            client_roots: vec![fleet.root().clone()],
        })
        .unwrap_err();
        let text = err.to_string();
        assert!(text.contains(&format!("127.0.0.1:{port}")), "{text}");
        assert!(!text.contains('\n'), "{text}");
    }

    /// The real binary: `thingswarm broker` serves devices of the certs dir until SIGINT.
    #[test]
    fn cli_broker_runs_until_ctrl_c() {
        use std::io::{BufRead, BufReader};
        use std::process::{Command, Stdio};

        let certs = tempfile::tempdir().unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_thingswarm"))
            .args(["broker", "--port", "0", "--certs-dir"])
            .arg(certs.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let pid = child.id() as libc::pid_t;
        // Kill the child even if an assertion fails.
        struct Reap(std::process::Child);
        impl Drop for Reap {
            fn drop(&mut self) {
                let _ = self.0.kill();
                let _ = self.0.wait();
            }
        }
        let stdout = child.stdout.take().unwrap();
        let mut guard = Reap(child);
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let next = || {
            rx.recv_timeout(Duration::from_secs(30))
                .expect("broker output")
        };
        let listening = next();
        let addr: SocketAddr = listening
            .strip_prefix("listening on mqtts://")
            .unwrap_or_else(|| panic!("unexpected first line: {listening}"))
            .parse()
            .unwrap();
        let server_ca = next();
        let server_ca = server_ca.strip_prefix("server CA: ").unwrap().to_string();
        let trusting = next();
        assert!(
            trusting.starts_with("trusting client roots: "),
            "{trusting}"
        );
        assert!(trusting.contains("root.pem"), "{trusting}");

        // A fleet from the same certs dir is signed by the CA the broker created and trusts.
        let fleet = fleet(certs.path(), 1);
        let ca_pem = std::fs::read(&server_ca).unwrap();
        let ca: CertificateDer<'static> =
            rustls_pki_types::pem::PemObject::from_pem_slice(&ca_pem).unwrap();
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            let tls = client_config(&ca, &fleet, 0);
            let (session, result) = Session::connect(addr, "dev-000", tls).await;
            assert_eq!(result.unwrap().code, ConnectReturnCode::Success);
            session.disconnect().await;
        });

        // SAFETY: sending a signal to our own child, whose pid we hold and have not reaped.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGINT) }, 0);
        let mut rest = Vec::new();
        while let Ok(line) = rx.recv_timeout(Duration::from_secs(15)) {
            rest.push(line);
        }
        let status = guard.0.wait().unwrap();
        assert!(
            status.success(),
            "exit {status:?}; output after SIGINT: {rest:?}"
        );
        assert!(rest.iter().any(|l| l == "stopped"), "{rest:?}");
        assert!(refused(addr));
    }
}

/// The same fleet against mosquitto. Skipped (with a note) only when the binary is missing
/// outside CI; under `CI=true` a missing mosquitto fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mosquitto_sees_twenty_distinct_identities() {
    let certs = tempfile::tempdir().unwrap();
    let fleet = fleet(certs.path(), DEVICES);
    let broker = match Mosquitto::start(&[fleet.root().clone()], "") {
        Ok(b) => b,
        Err(e @ thingswarm::broker::BrokerError::MosquittoMissing { .. })
            if std::env::var("CI").as_deref() != Ok("true") =>
        {
            eprintln!("SKIPPED mosquitto test: {e}");
            return;
        }
        Err(e) => panic!("{e}"),
    };
    assert!(broker.pid() > 0);
    all_connect(broker.addr(), broker.server_ca_der(), &fleet).await;

    let log = broker.log();
    let seen = mosquitto::connected_usernames(&log);
    let mut usernames: Vec<&str> = seen.iter().map(|(_, u)| u.as_str()).collect();
    usernames.sort();
    usernames.dedup();
    assert_eq!(usernames.len(), DEVICES as usize, "log:\n{log}");
    for (client_id, username) in &seen {
        assert_eq!(client_id, username, "username is the certificate CN");
    }
    // Start-up waits on the log, not a probe connection, so no failed connection is logged.
    assert!(!log.contains(" failed"), "log:\n{log}");
    let addr = broker.addr();
    drop(broker);
    assert!(refused(addr), "mosquitto still listening after drop");
}
