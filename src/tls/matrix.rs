//! `thingswarm tls-matrix`: one small group per (TLS version, cipher suite, device key type)
//! cell against a local mosquitto that allows exactly that version and suite, reporting per
//! cell what negotiated, with which backend, what a handshake costs the client (wall time and
//! CPU, from probe handshakes measured with `getrusage`), and how the devices' connects went.
//! It is the table a broker team wants when choosing a security policy.
//!
//! Each cell starts its own mosquitto (`tls_version` + `ciphers` / `ciphers_tls1.3`) with a
//! server key the suite needs: RSA for ECDHE-RSA and static-RSA suites, P-256 otherwise.
//! Device identities come from the identity cache (one fleet per key type, reused by every
//! cell), so only the first run signs.

use std::path::Path;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::options::{Suite, TlsVersion, NEEDS_OPENSSL};
use super::probe::probe;
use crate::broker::mosquitto::Mosquitto;
use crate::fleet::{self, Endpoint};
use crate::identity::algorithm::{RsaBits, RsaHash};
use crate::identity::Algorithm;
use crate::scenario::{Overrides, Plan};

/// The seed's 18 TLS 1.2 suites (4 rustls serves, 14 OpenSSL), in the seed's order of kind.
pub const SEED_SUITES: [&str; 18] = [
    "ECDHE-ECDSA-AES128-GCM-SHA256",
    "ECDHE-RSA-AES128-GCM-SHA256",
    "ECDHE-ECDSA-AES256-GCM-SHA384",
    "ECDHE-RSA-AES256-GCM-SHA384",
    NEEDS_OPENSSL[0],
    NEEDS_OPENSSL[1],
    NEEDS_OPENSSL[2],
    NEEDS_OPENSSL[3],
    NEEDS_OPENSSL[4],
    NEEDS_OPENSSL[5],
    NEEDS_OPENSSL[6],
    NEEDS_OPENSSL[7],
    NEEDS_OPENSSL[8],
    NEEDS_OPENSSL[9],
    NEEDS_OPENSSL[10],
    NEEDS_OPENSSL[11],
    NEEDS_OPENSSL[12],
    NEEDS_OPENSSL[13],
];

/// TLS 1.3 suites the matrix covers by default.
pub const TLS13_SUITES: [&str; 2] = ["TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384"];

/// One cell: a protocol version, a suite of that version, a device key type.
#[derive(Clone, Debug, PartialEq)]
pub struct Cell {
    /// Protocol version.
    pub version: TlsVersion,
    /// Suite (canonical name).
    pub suite: &'static str,
    /// Device key and certificate signature.
    pub algorithm: Algorithm,
}

/// The cells for these choices: every named suite at its own version (a suite named for a
/// version it does not belong to is skipped), times every key type. Defaults: the seed's 18
/// suites at TLS 1.2 and two TLS 1.3 suites; P-256 and RSA-2048 device keys.
pub fn cells(
    versions: &[TlsVersion],
    suites: &[String],
    algorithms: &[Algorithm],
) -> Result<Vec<Cell>, String> {
    let versions = if versions.is_empty() {
        vec![TlsVersion::V1_2, TlsVersion::V1_3]
    } else {
        versions.to_vec()
    };
    let names: Vec<String> = if suites.is_empty() {
        SEED_SUITES
            .iter()
            .chain(TLS13_SUITES.iter())
            .map(|s| s.to_string())
            .collect()
    } else {
        suites.to_vec()
    };
    let algorithms = if algorithms.is_empty() {
        vec![
            Algorithm::EcdsaP256Sha256,
            Algorithm::Rsa {
                bits: RsaBits::B2048,
                hash: RsaHash::Sha256,
            },
        ]
    } else {
        algorithms.to_vec()
    };
    let mut out = Vec::new();
    for v in &versions {
        for n in &names {
            let s = Suite::parse(n)?;
            if s.version != *v {
                continue;
            }
            for a in &algorithms {
                out.push(Cell {
                    version: *v,
                    suite: s.name,
                    algorithm: *a,
                });
            }
        }
    }
    if out.is_empty() {
        return Err(format!(
            "no cell: the suites [{}] belong to none of the versions [{}] (TLS 1.3 suites are named TLS_*, the others are TLS 1.2)",
            names.join(", "),
            versions.iter().map(|v| v.to_string()).collect::<Vec<_>>().join(", ")
        ));
    }
    Ok(out)
}

/// The server key a suite needs: RSA for ECDHE-RSA and static-RSA suites, P-256 otherwise.
pub fn server_key(cell: &Cell) -> Algorithm {
    let rsa_auth = cell.version == TlsVersion::V1_2 && !cell.suite.contains("ECDSA");
    match rsa_auth {
        true => Algorithm::Rsa {
            bits: RsaBits::B2048,
            hash: RsaHash::Sha256,
        },
        false => Algorithm::EcdsaP256Sha256,
    }
}

/// What one cell found.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct CellReport {
    /// Protocol version offered (`1.2` / `1.3`).
    pub version: String,
    /// Suite offered (OpenSSL name, or IANA for TLS 1.3).
    pub suite: String,
    /// Device key type (identity algorithm name).
    pub device_key: String,
    /// Server key type the cell's mosquitto used (`(target's)` against a broker).
    pub server_key: String,
    /// TLS library that ran the handshakes (`rustls` / `openssl`).
    pub backend: String,
    /// Negotiated `version suite` from the first successful probe handshake.
    pub negotiated: Option<String>,
    /// Key exchange group (absent for static RSA).
    pub kx_group: Option<String>,
    /// Probe handshakes that succeeded, of those tried.
    pub handshakes_ok: u32,
    /// Probe handshakes tried.
    pub handshakes: u32,
    /// Median TCP connect + handshake of the probes, milliseconds.
    pub handshake_ms_p50: Option<f64>,
    /// Mean client CPU per probe handshake (user + system), milliseconds.
    pub client_cpu_ms: Option<f64>,
    /// Devices that connected (CONNACK), of `devices`.
    pub connects: u64,
    /// Devices in the cell's group.
    pub devices: u64,
    /// Median device connect latency (TCP + TLS + CONNACK), milliseconds.
    pub connect_ms_p50: Option<f64>,
    /// Failures by class (`tls: handshake failure` ...), with counts; the first probe error too.
    pub failures: Vec<String>,
}

impl CellReport {
    /// Whether every handshake and connect of the cell succeeded.
    pub fn ok(&self) -> bool {
        self.failures.is_empty() && self.connects == self.devices
    }
}

/// Where the cells run.
#[derive(Clone, Debug, Default, PartialEq)]
pub enum Against {
    /// A local mosquitto per cell allowing exactly that cell's version and suite.
    #[default]
    Local,
    /// One broker for every cell; it decides which cells succeed.
    Broker {
        /// `mqtts://host:port`.
        url: String,
        /// CA (PEM) verifying the broker; `None` only with `insecure`.
        server_ca: Option<std::path::PathBuf>,
        /// Do not verify the broker's certificate.
        insecure: bool,
        /// TLS server name when it differs from the connect host.
        sni: Option<String>,
    },
}

/// Why the matrix could not run a cell at all (as opposed to a cell that failed).
#[derive(Debug, thiserror::Error)]
pub enum MatrixError {
    /// mosquitto could not be started.
    #[error(transparent)]
    Broker(#[from] crate::broker::BrokerError),
    /// The cell's plan or identities could not be made.
    #[error("{0}")]
    Setup(String),
    /// The target (URL, CA, SNI) is wrong: bad input.
    #[error("{0}")]
    Target(String),
}

/// The scenario overrides that point a cell's plan at `against`.
fn overrides(against: &Against) -> Overrides {
    match against {
        Against::Local => Overrides::default(),
        Against::Broker {
            url,
            server_ca,
            insecure,
            sni,
        } => Overrides {
            target: Some(url.clone()),
            server_ca: server_ca.clone(),
            insecure: *insecure,
            sni: sni.clone(),
            ..Overrides::default()
        },
    }
}

/// Checks the target (URL, CA file, `--insecure`, SNI) before any cell makes identities or
/// connects, so a mistake is bad input up front: the one-line message names the flag.
pub fn check_target(against: &Against) -> Result<(), String> {
    let text =
        "name = \"tls-matrix\"\nduration = \"0s\"\n[[group]]\nname = \"cell\"\ndevices = 1\nclient_id = \"d-{index}\"\n";
    let plan =
        Plan::from_str(text, Path::new("tls-matrix"), &overrides(against)).map_err(
            |e| match e {
                crate::scenario::ScenarioError::Flag { message, .. } => message,
                e => e.to_string(),
            },
        )?;
    if let crate::scenario::Target::Broker {
        server_ca: Some(path),
        insecure: false,
        ..
    } = &plan.target
    {
        let cas = crate::identity::read_pem_certs(
            path,
            Some("the CA certificate that signed the broker's"),
        )
        .map_err(|e| e.to_string())?;
        crate::tls::ServerTrust::roots(&cas).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    Ok(())
}

/// Runs one cell: starts its mosquitto, `handshakes` probe handshakes, then `devices` devices
/// connect once (and disconnect). Identities are cached under `certs_dir`. Against a broker,
/// no mosquitto is started: the same steps run against it.
pub async fn run_cell(
    cell: &Cell,
    certs_dir: &Path,
    devices: u64,
    handshakes: u32,
    against: &Against,
) -> Result<CellReport, MatrixError> {
    let text = format!(
        r#"name = "tls-matrix"
duration = "0s"
[target]
tls = {{ versions = ["{v}"], suites = ["{s}"] }}
[identity]
algorithm = "{a}"
[[group]]
name = "cell"
devices = {devices}
client_id = "tls-matrix-{a}-{{index}}"
"#,
        v = cell.version,
        s = cell.suite,
        a = cell.algorithm.name(),
    );
    let overrides = overrides(against);
    let plan = Plan::from_str(&text, Path::new("tls-matrix"), &overrides).map_err(|e| match e {
        crate::scenario::ScenarioError::Flag { message, .. } => MatrixError::Target(message),
        e => MatrixError::Setup(e.to_string()),
    })?;
    let certs = certs_dir.to_path_buf();
    let plan_for_ids = plan.clone();
    let fleets: Vec<Arc<crate::identity::Fleet>> =
        tokio::task::spawn_blocking(move || fleet::identities(&plan_for_ids, &certs))
            .await
            .map_err(|e| MatrixError::Setup(format!("identities: {e}")))?
            .map_err(|e| MatrixError::Setup(format!("identities: {e:#}")))?
            .into_iter()
            .map(|(f, _)| f)
            .collect();
    let (endpoint, broker, server_key_name) = match &plan.target {
        crate::scenario::Target::Broker {
            host,
            port,
            server_ca,
            insecure,
        } => {
            let trust = match (insecure, server_ca) {
                (false, Some(path)) => {
                    let cas = crate::identity::read_pem_certs(
                        path,
                        Some("the CA certificate that signed the broker's"),
                    )
                    .map_err(|e| MatrixError::Target(e.to_string()))?;
                    crate::tls::ServerTrust::roots(&cas)
                        .map_err(|e| MatrixError::Target(format!("{}: {e}", path.display())))?
                }
                _ => crate::tls::ServerTrust::insecure(),
            };
            let endpoint = Endpoint {
                host: host.clone(),
                port: *port,
                trust: trust.with_options(&plan.tls),
            };
            (endpoint, None, "(target's)".to_string())
        }
        crate::scenario::Target::Embedded => {
            let server_key = server_key(cell);
            let ciphers = match cell.version {
                TlsVersion::V1_2 => format!("tls_version tlsv1.2\nciphers {}", cell.suite),
                TlsVersion::V1_3 => format!("tls_version tlsv1.3\nciphers_tls1.3 {}", cell.suite),
            };
            let roots = [fleets[0].root().clone()];
            let broker = tokio::task::spawn_blocking(move || {
                Mosquitto::start_with(&roots, &ciphers, server_key)
            })
            .await
            .map_err(|e| MatrixError::Setup(format!("mosquitto: {e}")))??;
            let mut endpoint = Endpoint::verified(broker.addr(), broker.server_ca_der())
                .map_err(|e| MatrixError::Setup(e.to_string()))?;
            endpoint.trust = endpoint.trust.with_options(&plan.tls);
            (endpoint, Some(broker), server_key.name().to_string())
        }
    };
    let f = &fleets[0];
    let tls = endpoint
        .trust
        .device_tls(&f.client_id(0), f.cert_chain(0), f.key(0).clone_key())
        .map_err(|e| MatrixError::Setup(e.to_string()))?;

    let mut report = CellReport {
        version: cell.version.to_string(),
        suite: cell.suite.to_string(),
        device_key: cell.algorithm.name().to_string(),
        server_key: server_key_name,
        backend: tls.backend().name().to_string(),
        negotiated: None,
        kx_group: None,
        handshakes_ok: 0,
        handshakes,
        handshake_ms_p50: None,
        client_cpu_ms: None,
        connects: 0,
        devices,
        connect_ms_p50: None,
        failures: Vec::new(),
    };
    let (mut wall, mut cpu) = (Vec::new(), Vec::new());
    for _ in 0..handshakes {
        match probe(&endpoint.host, endpoint.port, tls.clone()).await {
            Ok(n) => {
                report.handshakes_ok += 1;
                if report.negotiated.is_none() {
                    report.negotiated = Some(format!("{} {}", n.version, n.cipher_suite));
                    report.kx_group = n.kx_group.clone();
                }
                wall.push(n.handshake_ms);
                cpu.extend(n.client_cpu_ms);
            }
            Err(e) => {
                if !report.failures.iter().any(|f| f.starts_with("probe: ")) {
                    report.failures.push(format!("probe: {e}"));
                }
            }
        }
    }
    wall.sort_by(f64::total_cmp);
    report.handshake_ms_p50 = wall.get(wall.len() / 2).copied();
    report.client_cpu_ms = (!cpu.is_empty()).then(|| cpu.iter().sum::<f64>() / cpu.len() as f64);

    let (tx, _rx) = watch::channel(Default::default());
    let result = fleet::run(
        &plan,
        fleets,
        endpoint,
        CancellationToken::new(),
        tx,
        &Default::default(),
    )
    .await;
    report.connects = result.last.totals.connects;
    if !result.connect.is_empty() {
        report.connect_ms_p50 = Some(result.connect.value_at_quantile(0.5) as f64 / 1e3);
    }
    for e in &result.last.errors {
        report.failures.push(format!("{} x{}", e.class, e.count));
    }
    drop(broker);
    Ok(report)
}

/// The matrix as a text table, one line per cell.
pub fn table(cells: &[CellReport]) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{:<4} {:<30} {:<18} {:<18} {:<8} {:<44} {:<10} {:>9} {:>9} {:>8} {:>10}  failures",
        "ver",
        "suite",
        "device key",
        "server key",
        "backend",
        "negotiated",
        "kx",
        "hs ms p50",
        "cpu ms/hs",
        "connects",
        "conn ms p50"
    );
    let num = |v: Option<f64>, p: usize| v.map_or("-".into(), |v| format!("{v:.p$}"));
    for c in cells {
        let _ = writeln!(
            s,
            "{:<4} {:<30} {:<18} {:<18} {:<8} {:<44} {:<10} {:>9} {:>9} {:>8} {:>10}  {}",
            c.version,
            c.suite,
            c.device_key,
            c.server_key,
            c.backend,
            c.negotiated.as_deref().unwrap_or("-"),
            c.kx_group.as_deref().unwrap_or("-"),
            num(c.handshake_ms_p50, 2),
            num(c.client_cpu_ms, 3),
            format!("{}/{}", c.connects, c.devices),
            num(c.connect_ms_p50, 2),
            if c.failures.is_empty() {
                "-".to_string()
            } else {
                c.failures.join("; ")
            }
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_cells_cover_the_seed_suites_per_key_type() {
        let all = cells(&[], &[], &[]).unwrap();
        assert_eq!(all.len(), (18 + 2) * 2);
        assert_eq!(
            all.iter().filter(|c| c.version == TlsVersion::V1_3).count(),
            4
        );
        let only13 = cells(&[TlsVersion::V1_3], &["AES128-SHA".into()], &[]);
        assert!(only13.unwrap_err().contains("no cell"));
        assert!(cells(&[], &["RC4-MD5".into()], &[]).is_err());
    }

    #[test]
    fn rsa_suites_get_an_rsa_server() {
        let cell = |suite, version| Cell {
            version,
            suite,
            algorithm: Algorithm::EcdsaP256Sha256,
        };
        let rsa = |c: &Cell| matches!(server_key(c), Algorithm::Rsa { .. });
        assert!(rsa(&cell("AES128-SHA", TlsVersion::V1_2)));
        assert!(rsa(&cell("ECDHE-RSA-AES256-SHA384", TlsVersion::V1_2)));
        assert!(!rsa(&cell("ECDHE-ECDSA-AES128-SHA", TlsVersion::V1_2)));
        assert!(!rsa(&cell("TLS_AES_128_GCM_SHA256", TlsVersion::V1_3)));
    }
}
