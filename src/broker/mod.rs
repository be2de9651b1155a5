//! Brokers thingswarm starts itself: the embedded rmqtt broker and a mosquitto harness.
//!
//! A newcomer's first run, and most tests, need a broker that *requires* client certificates
//! with zero set-up. Both brokers here listen on a free loopback port with mutual TLS, trust
//! only the client roots they are given, present a throwaway server certificate
//! ([`crate::identity::server_identity`]) and keep their files in a private temp dir (0700,
//! keys 0600) that disappears with them.
//!
//! - [`EmbeddedBroker`] (cargo feature `embedded-broker`, on by default): rmqtt 0.24 on its own
//!   tokio runtime, authenticating each device by "certificate CN == MQTT client ID".
//! - [`mosquitto::Mosquitto`]: the OS `mosquitto` binary as a child process, the reference
//!   broker for tests and benches (always compiled; needs `apt-get install -y mosquitto`).
//!
//! Both sit behind this module so the embedded broker can be swapped without touching callers.

#[cfg(feature = "embedded-broker")]
mod embedded;
pub mod mosquitto;
#[cfg(feature = "embedded-broker")]
mod provisioning;

use std::io::{self, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rustls_pki_types::CertificateDer;

use crate::identity::IdentityError;

#[cfg(feature = "embedded-broker")]
pub use embedded::EmbeddedBroker;

/// How to start an [`EmbeddedBroker`].
#[derive(Clone, Debug, Default)]
pub struct BrokerConfig {
    /// Loopback port to listen on; 0 picks a free one (read it back with `addr()`).
    pub port: u16,
    /// Trust anchors for *client* certificates (the fleet roots). A device whose chain does not
    /// end in one of them fails the TLS handshake. At least one is required: a broker that
    /// trusts nobody would refuse every device, which is never what a caller means.
    pub client_roots: Vec<CertificateDer<'static>>,
}

/// Why a broker could not be started. One line each, naming the file, port or program at
/// fault.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// No client trust roots were given.
    #[error("no client trust roots given: the broker requires client certificates and needs at least one CA certificate to verify them against")]
    NoClientRoots,
    /// Writing the broker's certificate files failed.
    #[error(transparent)]
    Identity(#[from] IdentityError),
    /// The private temp dir could not be created.
    #[error("creating a private temp dir for the broker in {}: {source}", std::env::temp_dir().display())]
    TempDir {
        /// The OS error.
        source: io::Error,
    },
    /// The broker's own tokio runtime could not be built.
    #[error("starting the embedded broker's runtime: {source}")]
    Runtime {
        /// The OS error.
        source: io::Error,
    },
    /// The listener could not be set up (port in use, bad certificate file, ...).
    #[error("embedded broker cannot listen on {addr}: {reason}")]
    Listen {
        /// The address asked for.
        addr: SocketAddr,
        /// What rmqtt reported.
        reason: String,
    },
    /// The broker did not come up in time.
    #[error("embedded broker on {addr} did not start within {}s", .waited.as_secs())]
    StartTimeout {
        /// The address asked for.
        addr: SocketAddr,
        /// How long we waited.
        waited: Duration,
    },
    /// No free loopback port could be found.
    #[error("finding a free port on 127.0.0.1: {source}")]
    NoFreePort {
        /// The OS error.
        source: io::Error,
    },
    /// The `mosquitto` binary is not installed.
    #[error("`{program}` not found (install it: apt-get install -y mosquitto)")]
    MosquittoMissing {
        /// The program looked for.
        program: String,
    },
    /// The `mosquitto` binary could not be started.
    #[error("starting `{program}`: {source}")]
    Spawn {
        /// The program.
        program: String,
        /// The OS error.
        source: io::Error,
    },
    /// mosquitto exited before it listened.
    #[error("mosquitto (config {config}) exited with {status} before listening on {addr}; its log ends: {log_tail}")]
    Exited {
        /// The generated configuration file.
        config: PathBuf,
        /// The address it was told to listen on.
        addr: SocketAddr,
        /// Its exit status.
        status: std::process::ExitStatus,
        /// The last lines of its log, joined with ` | `.
        log_tail: String,
    },
    /// mosquitto is running but does not accept connections.
    #[error("mosquitto (config {config}) did not accept connections on {addr} within {}s; its log ends: {log_tail}", .waited.as_secs())]
    NotListening {
        /// The generated configuration file.
        config: PathBuf,
        /// The address it was told to listen on.
        addr: SocketAddr,
        /// How long we waited.
        waited: Duration,
        /// The last lines of its log, joined with ` | `.
        log_tail: String,
    },
}

/// A private (0700) temp dir that is removed when dropped: brokers keep keys there.
fn private_temp_dir(prefix: &str) -> Result<tempfile::TempDir, BrokerError> {
    let dir = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .map_err(|source| BrokerError::TempDir { source })?;
    crate::identity::private_dir(dir.path())?;
    Ok(dir)
}

/// Writes `roots` as one PEM bundle (0600): both brokers read their client CAs from a file.
fn write_client_roots(path: &Path, roots: &[CertificateDer<'static>]) -> Result<(), BrokerError> {
    if roots.is_empty() {
        return Err(BrokerError::NoClientRoots);
    }
    let pem: String = roots
        .iter()
        .map(|der| crate::identity::cache::pem_cert(der))
        .collect();
    crate::identity::write_private(path, pem.as_bytes())?;
    Ok(())
}

/// The last `lines` lines of a log file, joined with ` | ` so an error stays one line.
fn log_tail(path: &Path, lines: usize) -> String {
    let mut text = String::new();
    if let Ok(mut f) = std::fs::File::open(path) {
        let _ = f.read_to_string(&mut text);
    }
    let tail: Vec<&str> = text.lines().rev().take(lines).collect();
    if tail.is_empty() {
        return "(empty)".into();
    }
    tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
}
