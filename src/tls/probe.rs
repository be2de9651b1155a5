//! One TLS handshake with a group's identity before the fleet starts, to learn what rumqttc
//! hides: the negotiated protocol version and cipher suite, the backend that ran it, and what
//! one handshake costs (wall time and the client's CPU).
//!
//! The probe speaks no MQTT (it closes after the handshake), so it takes no client ID from the
//! broker's point of view and changes no session state. A failed probe is a finding to report,
//! never a reason to stop the run: the devices' own connects say what the broker accepts.
//!
//! Client CPU: the handshake runs alone on a thread of its own (a current-thread runtime inside
//! `spawn_blocking`), and `getrusage(RUSAGE_THREAD)` around it counts only the client's work,
//! not an embedded broker's answering on other threads.

use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::net::TcpStream;

use super::device::DeviceTls;

/// How long a probe may take (TCP connect plus handshake).
pub const PROBE_WITHIN: Duration = Duration::from_secs(5);

/// After a TLS 1.3 handshake, how long the probe listens for the broker's verdict on the client
/// certificate: under TLS 1.3 the client finishes before the server has checked its
/// certificate, so a rejection (alert `certificate_required`, `bad_certificate`, ...) arrives
/// only afterwards. An MQTT broker sends nothing before CONNECT, so silence means accepted.
pub const TLS13_VERDICT_WITHIN: Duration = Duration::from_millis(250);

/// What the probe handshake negotiated.
#[derive(Clone, Debug, PartialEq, Serialize, serde::Deserialize)]
pub struct Negotiated {
    /// Protocol version, e.g. `TLSv1.3`.
    pub version: String,
    /// Cipher suite by its IANA name, e.g. `TLS13_AES_128_GCM_SHA256` (rustls) or
    /// `TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA` (OpenSSL's standard name).
    pub cipher_suite: String,
    /// Key exchange group, e.g. `X25519`, when the handshake used one (static RSA does not).
    pub kx_group: Option<String>,
    /// TCP connect start -> handshake complete, milliseconds (one sample: a hint of the cost,
    /// the devices' connect latency is the measurement).
    pub handshake_ms: f64,
    /// The TLS library that ran it (`rustls` or `openssl`); reports older than the OpenSSL
    /// backend had rustls only.
    #[serde(default = "rustls_name")]
    pub backend: String,
    /// Client CPU (user + system) for the TCP connect and handshake, milliseconds; `None`
    /// where the platform has no per-thread rusage.
    #[serde(default)]
    pub client_cpu_ms: Option<f64>,
}

fn rustls_name() -> String {
    "rustls".into()
}

impl std::fmt::Display for Negotiated {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {} [{}]",
            self.version, self.cipher_suite, self.backend
        )
    }
}

/// Connects to `host:port` and completes a TLS handshake with `tls` (a device's TLS: its client
/// certificate, the run's server verification and offer, and the backend). The server name is
/// `[target].sni` when set, else `host`.
pub async fn probe(host: &str, port: u16, tls: impl Into<DeviceTls>) -> Result<Negotiated, String> {
    let tls = tls.into();
    let host = host.to_string();
    tokio::task::spawn_blocking(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("probe runtime: {e}"))?;
        let cpu_before = thread_cpu();
        let out = rt.block_on(handshake(&host, port, &tls));
        let cpu = match (cpu_before, thread_cpu()) {
            (Some(a), Some(b)) => Some((b - a).as_secs_f64() * 1e3),
            _ => None,
        };
        out.map(|mut n| {
            n.client_cpu_ms = cpu;
            n
        })
    })
    .await
    .map_err(|e| format!("probe task: {e}"))?
}

async fn handshake(host: &str, port: u16, tls: &DeviceTls) -> Result<Negotiated, String> {
    let name = tls.server_name(host).to_string();
    let started = Instant::now();
    let tcp = tokio::time::timeout(PROBE_WITHIN, TcpStream::connect((host, port)))
        .await
        .map_err(|_| format!("no TCP connect within {PROBE_WITHIN:?}"))?
        .map_err(|e| format!("tcp: {e}"))?;
    let _ = tcp.set_nodelay(true);
    let left = PROBE_WITHIN.saturating_sub(started.elapsed());
    let within = |what| format!("no TLS handshake within {PROBE_WITHIN:?} ({what})");
    match tls {
        DeviceTls::Rustls { config, .. } => {
            let server = rustls::pki_types::ServerName::try_from(name.clone())
                .map_err(|e| format!("{name:?} is not a valid TLS server name: {e}"))?;
            let stream = tokio::time::timeout(
                left,
                tokio_rustls::TlsConnector::from(config.clone()).connect(server, tcp),
            )
            .await
            .map_err(|_| within("rustls"))?
            .map_err(|e| format!("tls: {e}"))?;
            let took = started.elapsed();
            let mut stream = stream;
            if stream.get_ref().1.protocol_version() == Some(rustls::ProtocolVersion::TLSv1_3) {
                verdict(&mut stream).await?;
            }
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
                backend: "rustls".into(),
                client_cpu_ms: None,
            })
        }
        DeviceTls::Openssl {
            connector,
            identity,
            ..
        } => {
            let connecting = super::openssl::connect(connector, identity, &name, tcp);
            let stream = tokio::time::timeout(left, connecting)
                .await
                .map_err(|_| within("openssl"))?
                .map_err(|e| format!("{}: {}", e.class, e.detail))?;
            let took = started.elapsed();
            let mut stream = stream;
            if stream.ssl().version_str() == "TLSv1.3" {
                verdict(&mut stream).await?;
            }
            let ssl = stream.ssl();
            Ok(Negotiated {
                version: ssl.version_str().to_string(),
                cipher_suite: ssl.current_cipher().map_or("unknown".into(), |c| {
                    c.standard_name().unwrap_or(c.name()).to_string()
                }),
                kx_group: super::openssl::kx_group(ssl),
                handshake_ms: took.as_secs_f64() * 1e3,
                backend: "openssl".into(),
                client_cpu_ms: None,
            })
        }
    }
}

/// Waits [`TLS13_VERDICT_WITHIN`] for a post-handshake alert: the broker rejecting the client
/// certificate after a TLS 1.3 handshake. `Ok` when nothing (or data) arrived.
async fn verdict<S: tokio::io::AsyncRead + Unpin>(stream: &mut S) -> Result<(), String> {
    use tokio::io::AsyncReadExt as _;
    let mut byte = [0u8; 1];
    match tokio::time::timeout(TLS13_VERDICT_WITHIN, stream.read(&mut byte)).await {
        Err(_) | Ok(Ok(1..)) => Ok(()),
        Ok(Ok(_)) => Err(
            "closed by broker: right after the TLS 1.3 handshake (the client certificate was refused)"
                .into(),
        ),
        Ok(Err(e)) => {
            let failure = crate::fleet::failure::Failure::classify(&e);
            Err(format!(
                "{}: after the TLS 1.3 handshake: {}",
                failure.class, failure.detail
            ))
        }
    }
}

/// This thread's CPU time so far (user + system).
fn thread_cpu() -> Option<Duration> {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: getrusage writes into the zeroed struct we own; RUSAGE_THREAD is Linux's.
        let mut u: libc::rusage = unsafe { std::mem::zeroed() };
        if unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut u) } != 0 {
            return None;
        }
        let tv = |t: libc::timeval| {
            Duration::from_secs(t.tv_sec.max(0) as u64)
                + Duration::from_micros(t.tv_usec.max(0) as u64)
        };
        Some(tv(u.ru_utime) + tv(u.ru_stime))
    }
    #[cfg(not(target_os = "linux"))]
    {
        None
    }
}
