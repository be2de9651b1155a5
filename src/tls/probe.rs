//! One TLS handshake with a group's identity before the fleet starts, to learn what rumqttc
//! hides: the negotiated protocol version and cipher suite, and what one handshake costs.
//!
//! The probe speaks no MQTT (it closes after the handshake), so it takes no client ID from the
//! broker's point of view and changes no session state. A failed probe is a finding to report,
//! never a reason to stop the run: the devices' own connects say what the broker accepts.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;
use rustls::ClientConfig;
use serde::Serialize;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// How long a probe may take (TCP connect plus handshake).
pub const PROBE_WITHIN: Duration = Duration::from_secs(5);

/// What the probe handshake negotiated.
#[derive(Clone, Debug, PartialEq, Serialize, serde::Deserialize)]
pub struct Negotiated {
    /// Protocol version, e.g. `TLSv1.3`.
    pub version: String,
    /// Cipher suite by its IANA name, e.g. `TLS13_AES_128_GCM_SHA256`.
    pub cipher_suite: String,
    /// Key exchange group, e.g. `X25519`, when the handshake used one.
    pub kx_group: Option<String>,
    /// TCP connect start -> handshake complete, milliseconds (one sample: a hint of the cost,
    /// the devices' connect latency is the measurement).
    pub handshake_ms: f64,
}

impl std::fmt::Display for Negotiated {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.version, self.cipher_suite)
    }
}

/// Connects to `host:port` and completes a TLS handshake with `config` (a device's config:
/// its client certificate and the run's server verification).
pub async fn probe(host: &str, port: u16, config: Arc<ClientConfig>) -> Result<Negotiated, String> {
    let name = ServerName::try_from(host.to_string())
        .map_err(|e| format!("{host:?} is not a valid TLS server name: {e}"))?;
    let started = Instant::now();
    let handshake = async {
        let tcp = TcpStream::connect((host, port))
            .await
            .map_err(|e| format!("tcp: {e}"))?;
        let _ = tcp.set_nodelay(true);
        TlsConnector::from(config)
            .connect(name, tcp)
            .await
            .map_err(|e| format!("tls: {e}"))
    };
    let stream = tokio::time::timeout(PROBE_WITHIN, handshake)
        .await
        .map_err(|_| format!("no TLS handshake within {PROBE_WITHIN:?}"))??;
    let took = started.elapsed();
    let (_, conn) = stream.get_ref();
    Ok(Negotiated {
        // rustls names versions `TLSv1_3`; OpenSSL and the seed write `TLSv1.3`.
        version: conn
            .protocol_version()
            .map_or("unknown".into(), |v| format!("{v:?}").replace('_', ".")),
        cipher_suite: conn
            .negotiated_cipher_suite()
            .map_or("unknown".into(), |s| format!("{:?}", s.suite())),
        kx_group: conn
            .negotiated_key_exchange_group()
            .map(|g| format!("{:?}", g.name())),
        handshake_ms: took.as_secs_f64() * 1e3,
    })
}
