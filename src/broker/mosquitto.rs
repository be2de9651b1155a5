//! A mosquitto harness for tests and benches: the OS `mosquitto` binary as a child process on a
//! free loopback port, with mutual TLS and a generated configuration.
//!
//! mosquitto is the reference broker the seed's behaviour is measured against (DESIGN.md
//! section 8), so integration tests and benches run the same fleet against it and against the
//! embedded broker. The generated configuration requires client certificates, takes the
//! certificate CN as the username (`use_identity_as_username`), disables Nagle
//! (`set_tcp_nodelay`; otherwise a 44 ms floor appears in every latency) and raises the in-flight
//! and queue limits whose defaults drop most of a QoS 1 flood. Extra lines (an `acl_file`, a
//! plugin) can be appended by the caller.

use std::fmt::Write as _;
use std::fs::File;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rustls_pki_types::CertificateDer;

use super::{log_tail, private_temp_dir, write_client_roots, BrokerError};
use crate::identity::server::server_identity_with;
use crate::identity::{Algorithm, ServerIdentity};

/// The program started; found on `PATH` (the Debian package installs `/usr/sbin/mosquitto`,
/// which is not on every user's `PATH`, so that location is tried too).
pub const PROGRAM: &str = "mosquitto";
/// How long [`Mosquitto::start`] waits for the port to accept connections.
const START_TIMEOUT: Duration = Duration::from_secs(5);
/// Attempts when the free port we picked is taken before mosquitto binds it.
const PORT_ATTEMPTS: usize = 3;
/// In `extra_config`: replaced by the client-roots PEM the mTLS listener trusts, so an extra
/// listener (e.g. `protocol websockets`) can require the same client certificates.
pub const CAFILE: &str = "{cafile}";
/// In `extra_config`: replaced by the server certificate chain PEM.
pub const CERTFILE: &str = "{certfile}";
/// In `extra_config`: replaced by the server key PEM.
pub const KEYFILE: &str = "{keyfile}";

/// A running mosquitto child process with mTLS on `127.0.0.1`. Killed (and reaped) on drop;
/// its configuration, certificates and log live in a private temp dir removed with it.
pub struct Mosquitto {
    child: Child,
    addr: SocketAddr,
    server: ServerIdentity,
    config: PathBuf,
    log: PathBuf,
    // Dropped last: the child is killed first (see Drop), then its files go.
    _dir: tempfile::TempDir,
}

impl Mosquitto {
    /// For tests and benches: [`Mosquitto::start`], or `Ok(None)` (said on stderr) when
    /// mosquitto is not installed and this is not CI. With `CI=true` a missing mosquitto is an
    /// error: CI installs it, so a skipped check there would hide a broken set-up.
    pub fn start_unless_missing(
        client_roots: &[CertificateDer<'static>],
        extra_config: &str,
    ) -> Result<Option<Mosquitto>, BrokerError> {
        Mosquitto::start_unless_missing_with(client_roots, extra_config, Algorithm::default())
    }

    /// [`Mosquitto::start_unless_missing`] with a server key of `server_key`'s type (RSA for
    /// the ECDHE-RSA and static-RSA cipher suites).
    pub fn start_unless_missing_with(
        client_roots: &[CertificateDer<'static>],
        extra_config: &str,
        server_key: Algorithm,
    ) -> Result<Option<Mosquitto>, BrokerError> {
        match Mosquitto::start_with(client_roots, extra_config, server_key) {
            Err(e @ BrokerError::MosquittoMissing { .. })
                if std::env::var("CI").as_deref() != Ok("true") =>
            {
                eprintln!("skipping: {e}");
                Ok(None)
            }
            other => other.map(Some),
        }
    }

    /// Starts mosquitto trusting `client_roots` for client certificates, with `extra_config`
    /// appended to the generated configuration (may be empty), and returns once its port
    /// accepts connections (at most 5 s).
    ///
    /// Errors say what to do: install the package when the binary is missing; otherwise the
    /// generated config's path and the tail of mosquitto's log.
    pub fn start(
        client_roots: &[CertificateDer<'static>],
        extra_config: &str,
    ) -> Result<Mosquitto, BrokerError> {
        Mosquitto::start_with(client_roots, extra_config, Algorithm::default())
    }

    /// [`Mosquitto::start`] with a server certificate and CA of `server_key`'s type.
    pub fn start_with(
        client_roots: &[CertificateDer<'static>],
        extra_config: &str,
        server_key: Algorithm,
    ) -> Result<Mosquitto, BrokerError> {
        let program = find_program()?;
        let dir = private_temp_dir("thingswarm-mosquitto-")?;
        let cafile = dir.path().join("client-roots.pem");
        write_client_roots(&cafile, client_roots)?;
        let server = server_identity_with(dir.path(), server_key)?;
        let config = dir.path().join("mosquitto.conf");
        let log = dir.path().join("mosquitto.log");

        let mut attempt = 0;
        loop {
            attempt += 1;
            let addr = free_port()?;
            let text = config_text(addr.port(), &cafile, &server, extra_config);
            crate::identity::write_private(&config, text.as_bytes())?;
            let log_file = File::create(&log).map_err(|source| BrokerError::Spawn {
                program: program.display().to_string(),
                source,
            })?;
            let mut child = Command::new(&program)
                .arg("-c")
                .arg(&config)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log_file)
                .spawn()
                .map_err(|source| BrokerError::Spawn {
                    program: program.display().to_string(),
                    source,
                })?;

            let mut exited = None;
            let listening = wait_until_running(addr, &log, || match child.try_wait() {
                Ok(Some(status)) => {
                    exited = Some(status);
                    false
                }
                _ => true,
            });
            if listening {
                return Ok(Mosquitto {
                    child,
                    addr,
                    server,
                    config,
                    log,
                    _dir: dir,
                });
            }
            if let Some(status) = exited {
                let tail = log_tail(&log, 8);
                // Someone took the port between our probe and mosquitto's bind: pick another.
                if tail.contains("Address already in use") && attempt < PORT_ATTEMPTS {
                    continue;
                }
                return Err(BrokerError::Exited {
                    config,
                    addr,
                    status,
                    log_tail: tail,
                });
            }
            let _ = child.kill();
            let _ = child.wait();
            return Err(BrokerError::NotListening {
                config,
                addr,
                waited: START_TIMEOUT,
                log_tail: log_tail(&log, 8),
            });
        }
    }

    /// Kills mosquitto (SIGKILL: sessions vanish as in a crash), keeps it down for `down`,
    /// and starts it again on the same port with the same configuration, returning once the
    /// port accepts connections (at most 5 s). For reconnect tests. The log starts afresh.
    pub fn restart(&mut self, down: Duration) -> Result<(), BrokerError> {
        let _ = self.child.kill();
        let _ = self.child.wait();
        std::thread::sleep(down);
        let program = find_program()?;
        // A fresh log: readiness is read from it ("... running").
        let log_file = File::create(&self.log).map_err(|source| BrokerError::Spawn {
            program: program.display().to_string(),
            source,
        })?;
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let mut child = Command::new(&program)
                .arg("-c")
                .arg(&self.config)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log_file.try_clone().map_err(|source| BrokerError::Spawn {
                    program: program.display().to_string(),
                    source,
                })?)
                .spawn()
                .map_err(|source| BrokerError::Spawn {
                    program: program.display().to_string(),
                    source,
                })?;
            let mut exited = None;
            let listening = wait_until_running(self.addr, &self.log, || match child.try_wait() {
                Ok(Some(status)) => {
                    exited = Some(status);
                    false
                }
                _ => true,
            });
            if listening {
                self.child = child;
                return Ok(());
            }
            // The old socket may linger for a moment: retry until the deadline.
            let _ = child.kill();
            let _ = child.wait();
            if Instant::now() >= deadline {
                return Err(match exited {
                    Some(status) => BrokerError::Exited {
                        config: self.config.clone(),
                        addr: self.addr,
                        status,
                        log_tail: log_tail(&self.log, 8),
                    },
                    None => BrokerError::NotListening {
                        config: self.config.clone(),
                        addr: self.addr,
                        waited: START_TIMEOUT,
                        log_tail: log_tail(&self.log, 8),
                    },
                });
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `127.0.0.1:<port>` it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The PEM file clients verify mosquitto's certificate against.
    pub fn server_ca(&self) -> &Path {
        &self.server.ca_pem
    }

    /// The same CA in DER, for a rustls `RootCertStore`.
    pub fn server_ca_der(&self) -> &CertificateDer<'static> {
        &self.server.ca_der
    }

    /// The child's process id, for measuring its CPU time and memory from `/proc`.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The generated configuration file (for error messages and debugging).
    pub fn config_path(&self) -> &Path {
        &self.config
    }

    /// Everything mosquitto has logged so far. Connection messages are on, so each accepted
    /// device appears as `New client connected from ADDR as CLIENTID (..., u'USERNAME').`;
    /// see [`connected_usernames`].
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl std::fmt::Debug for Mosquitto {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mosquitto")
            .field("addr", &self.addr)
            .field("pid", &self.child.id())
            .field("config", &self.config)
            .finish()
    }
}

/// `(client_id, username)` of every "New client connected" line of a mosquitto log, in order.
/// With `use_identity_as_username` the username is the certificate CN, so this is the list of
/// identities mosquitto accepted. Clients without a username are listed with an empty one.
pub fn connected_usernames(log: &str) -> Vec<(String, String)> {
    log.lines()
        .filter_map(|line| {
            let rest = &line[line.find("New client connected from ")?..];
            let rest = &rest[rest.find(" as ")? + 4..];
            let (client_id, details) = rest.split_once(" (")?;
            let username = details
                .find("u'")
                .and_then(|i| details[i + 2..].split_once('\'').map(|(u, _)| u))
                .unwrap_or("");
            Some((client_id.to_string(), username.to_string()))
        })
        .collect()
}

/// Waits (at most [`START_TIMEOUT`]) until mosquitto says it is running, which it logs once its
/// listeners are open, while `alive` says the child has not exited. Reading the log instead of
/// probing the port keeps a failed "connection" out of the log that tests inspect; a single
/// TCP probe at the deadline covers versions that word the line differently.
fn wait_until_running(addr: SocketAddr, log: &Path, mut alive: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if text
            .lines()
            .any(|l| l.contains("mosquitto version") && l.ends_with(" running"))
        {
            return true;
        }
        if !alive() {
            return false;
        }
        if Instant::now() >= deadline {
            return TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_ok();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The mosquitto binary: on `PATH`, else where the Debian package puts it.
fn find_program() -> Result<PathBuf, BrokerError> {
    let on_path = std::env::var_os("PATH")
        .map(|paths| {
            std::env::split_paths(&paths)
                .map(|dir| dir.join(PROGRAM))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    on_path
        .into_iter()
        .chain([PathBuf::from("/usr/sbin").join(PROGRAM)])
        .find(|p| p.is_file())
        .ok_or_else(|| BrokerError::MosquittoMissing {
            program: PROGRAM.into(),
        })
}

/// A loopback port nothing listens on right now (the OS picks it; we release it for mosquitto,
/// which cannot report a port it chose itself).
fn free_port() -> Result<SocketAddr, BrokerError> {
    let probe = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .map_err(|source: io::Error| BrokerError::NoFreePort { source })?;
    Ok(probe)
}

fn config_text(port: u16, cafile: &Path, server: &ServerIdentity, extra: &str) -> String {
    let mut c = String::new();
    let _ = writeln!(c, "# generated by thingswarm for one test or bench run");
    let _ = writeln!(c, "per_listener_settings false");
    let _ = writeln!(c, "listener {port} 127.0.0.1");
    let _ = writeln!(c, "cafile {}", cafile.display());
    let _ = writeln!(c, "certfile {}", server.cert_pem.display());
    let _ = writeln!(c, "keyfile {}", server.key_pem.display());
    let _ = writeln!(c, "require_certificate true");
    let _ = writeln!(c, "use_identity_as_username true");
    let _ = writeln!(c, "allow_anonymous false");
    let _ = writeln!(c, "set_tcp_nodelay true");
    let _ = writeln!(c, "max_inflight_messages 1000");
    let _ = writeln!(c, "max_queued_messages 100000");
    let _ = writeln!(c, "persistence false");
    let _ = writeln!(c, "log_dest stderr");
    let _ = writeln!(c, "connection_messages true");
    // As root, mosquitto drops to user `mosquitto`, which cannot read our 0700 directory.
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        let _ = writeln!(c, "user root");
    }
    if !extra.is_empty() {
        // An extra TLS listener (a WebSocket one) names the same files by placeholder.
        let extra = extra
            .replace(CAFILE, &cafile.display().to_string())
            .replace(CERTFILE, &server.cert_pem.display().to_string())
            .replace(KEYFILE, &server.key_pem.display().to_string());
        let _ = writeln!(c, "# caller's extra configuration");
        let _ = writeln!(c, "{}", extra.trim_end());
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_connection_lines() {
        let log = "1700000000: mosquitto version 2.0.11 running\n\
            1700000001: New client connected from 127.0.0.1:40000 as dev-001 (p2, c1, k60, u'dev-001').\n\
            1700000001: New client connected from 127.0.0.1:40002 as anon (p2, c1, k60).\n";
        assert_eq!(
            connected_usernames(log),
            vec![
                ("dev-001".to_string(), "dev-001".to_string()),
                ("anon".to_string(), String::new()),
            ]
        );
    }
}
