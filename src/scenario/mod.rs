//! Scenario files: a TOML description of a fleet run, validated into one [`Plan`] before the
//! first certificate is signed or the first connection opened.
//!
//! Why a plan: every mistake a user can make in a scenario (a typo in a key, a rate of
//! `"fast"`, two groups sharing identities, a broker without a CA to verify it) is found here,
//! reported once with `file:line:col`, the key, the bad value and the expected form, and
//! `thingswarm check` can show exactly what a run would do without doing it. Everything
//! downstream consumes the [`Plan`] and never re-reads the TOML.
//!
//! # Format
//!
//! `scenarios/README.md` is the commented reference; in short:
//!
//! ```toml
//! name = "quickstart"              # required; [a-z0-9_-]{1,64}: names result directories
//! duration = "10s"                 # required; hold after the connect ramp (humantime: "500ms", "2m", "1h 30m", "0s")
//!
//! [target]                         # optional; omitted, or without url -> the embedded broker
//! url = "mqtts://127.0.0.1:8883"   # mqtts://host:port only (mTLS); --target URL replaces it
//! server_ca = "ca.pem"             # PEM verifying the broker; relative to this file; --server-ca replaces it
//! protocol = "5"                   # "3.1.1" (default) or "5"; groups may override
//!
//! [identity]                       # optional
//! ca = "generate"                  # "generate" | "generate-intermediate" | { cert = "ca.pem", key = "ca-key.pem" }
//! algorithm = "ecdsa-p256-sha256"  # see `thingswarm certs issue --help`
//! validity_days = 365              # 1..=36500
//!
//! [[group]]                        # at least one
//! name = "sensors"                 # required, unique; [a-z0-9_-]{1,64}
//! devices = 300                    # required; 1..=1,000,000 (and in total over groups)
//! client_id = "sensor-{index:05}"  # required; needs {index} when devices > 1; unique per group
//! connect = { rate = "200/s", max_in_flight = 100, timeout = "10s" }  # defaults "500/s", 100, "10s"
//! keepalive = "30s"                # "0s" (off) or 5s..=65535s in whole seconds; default "30s"
//! clean_session = true             # default true (MQTT 5: clean start)
//! protocol = "5"                   # optional override of [target].protocol
//! reconnect = { initial = "100ms", max = "5s" }  # the default; "none": a lost session stays lost
//!
//! [[fault]]                        # optional timeline, injected through a proxy (see faults.rs)
//! at = "20s"
//! stall = "1s"                     # or delay = "20ms" (jitter = "5ms"), or reset = 0.5
//! ```
//!
//! `[slo]` holds service-level objectives (`e2e_p99 = "50ms"`, `max_error_rate = "0.1%"`;
//! see [`crate::slo`]).
//!
//! Keys of capabilities that are not built yet (`[identity].subject`) are recognised and refused
//! by name, never silently ignored; any other unknown key is an error at its line.
//!
//! # Run semantics
//!
//! Groups ramp concurrently, each paced at its own `connect.rate` with at most
//! `max_in_flight` connects outstanding; once a group is connected its devices stay connected
//! for `duration`, then disconnect cleanly. [`Plan::expected_ramp`] is the slowest group's
//! `devices / rate`.

mod error;
mod expect;
pub mod faults;
pub mod lifecycle;
pub mod protocol;
pub mod provision;
mod raw;
pub mod reconnect;
pub mod shadow;
mod slo;
pub mod source;
mod tls;
pub mod traffic;
mod values;

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use toml::Spanned;

pub use error::ScenarioError;
use error::Source;
pub use expect::{DeviceRef, ExpectPlan};
use raw::{RawGroup, RawIdentity, RawScenario, RawTarget};
pub use traffic::{PublishPlan, SubscribePlan};

use crate::identity::{Algorithm, CaSource, FleetSpec, CLIENT_ID_VARS};
use crate::template::Template;
use crate::tls::options::TlsOptions;

/// Most devices one run (one process) simulates, over all groups.
pub const MAX_DEVICES: u64 = 1_000_000;
/// Most messages per second one run may schedule over all its publishers: at the ~20 us of
/// client CPU a QoS 1 message costs (DESIGN.md section 9) this is ~20 cores' worth, more than
/// one thingswarm process can send; a plan above it would measure the client, not the broker.
pub const MAX_SCHEDULED_RATE: f64 = 1_000_000.0;
/// Longest client ID: it is also the certificate's CN, which X.509 caps at 64 characters.
pub const MAX_CLIENT_ID_CHARS: usize = 64;
/// Default connect pace of a group: brisk, yet below what a single broker listener absorbs
/// without dropping SYNs.
pub const DEFAULT_RATE_PER_SEC: f64 = 500.0;
/// Default cap on connects outstanding per group (mosquitto's listen backlog is 100).
pub const DEFAULT_MAX_IN_FLIGHT: usize = 100;
/// Default time a device waits for CONNACK before the attempt counts as failed.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Default MQTT keepalive.
pub const DEFAULT_KEEPALIVE: Duration = Duration::from_secs(30);

/// The expected form of a file named in the scenario.
const PEM_RELATIVE: &str =
    "expected a PEM file; relative paths are relative to the scenario's directory";

/// A validated scenario: what a run will do, decided before anything connects.
#[derive(Clone, Debug)]
pub struct Plan {
    /// Scenario name (`[a-z0-9_-]+`), used in result directory names.
    pub name: String,
    /// The scenario file, for messages and reports.
    pub source: PathBuf,
    /// The file's text, echoed in reports so a result says exactly what produced it.
    pub scenario_text: String,
    /// How long devices stay connected after the connect ramp, before disconnecting cleanly.
    pub duration: Duration,
    /// The broker to drive.
    pub target: Target,
    /// What devices offer in their TLS handshakes (versions, suites, ALPN).
    pub tls: TlsOptions,
    /// How device identities are made (shared by every group).
    pub identity: IdentityPlan,
    /// The device groups, in file order.
    pub groups: Vec<GroupPlan>,
    /// Seed of payload generators and Poisson arrivals (`seed = N`; default 0): the same seed
    /// gives the same payloads and schedules.
    pub seed: u64,
    /// Faults injected through a proxy the run puts in front of the target (`[[fault]]`).
    pub faults: Vec<faults::FaultPlan>,
    /// Lifecycle events on the same timeline (`[[event]]`: drop-all).
    pub events: Vec<lifecycle::EventPlan>,
    /// Authorization expectations (`[[expect]]`), checked by probes after the load.
    pub expect: Vec<ExpectPlan>,
    /// `[policy]`: the AWS IoT policies every device has (the embedded broker enforces them).
    pub policy: Option<std::sync::Arc<crate::policy::PolicySet>>,
    /// The `[slo]` table's objectives, judged against the report.
    pub slos: Vec<crate::slo::Slo>,
    /// Which slice of every group this process runs (`run --shard i/N`; whole by default).
    pub shard: crate::shard::Shard,
    /// Local addresses devices connect from, round-robin by device index
    /// (`[target] source_addresses`, `--source-address`); empty: the kernel picks.
    pub source_addresses: Vec<std::net::IpAddr>,
}

/// Where devices connect.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// The in-process broker on a free loopback port: no broker needed to try a scenario.
    Embedded,
    /// An external broker, over mTLS.
    Broker {
        /// Host name or IP address (IPv6 without brackets).
        host: String,
        /// TCP port.
        port: u16,
        /// PEM file of the CA that verifies the broker's certificate (already resolved
        /// against the scenario's directory, or taken from `--server-ca`).
        server_ca: Option<PathBuf>,
        /// `--insecure`: do not verify the broker. Exactly one of this and `server_ca` is set.
        insecure: bool,
    },
}

impl Target {
    /// `"embedded"` or `"mqtts://host:port"`, for plans and reports.
    pub fn url(&self) -> String {
        match self {
            Target::Embedded => "embedded".into(),
            Target::Broker { host, port, .. } if host.contains(':') => {
                format!("mqtts://[{host}]:{port}")
            }
            Target::Broker { host, port, .. } => format!("mqtts://{host}:{port}"),
        }
    }
}

/// How every device identity of the run is made.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdentityPlan {
    /// Device key type and certificate signature.
    pub algorithm: Algorithm,
    /// Which CA signs the devices.
    pub ca: CaSource,
    /// Days device certificates stay valid.
    pub validity_days: u32,
}

impl Default for IdentityPlan {
    /// P-256, a generated root CA, one year: the cheapest identities to make and to handshake.
    fn default() -> Self {
        IdentityPlan {
            algorithm: Algorithm::default(),
            ca: CaSource::Generated {
                intermediate: false,
            },
            validity_days: 365,
        }
    }
}

/// One group of identical devices.
#[derive(Clone, Debug, PartialEq)]
pub struct GroupPlan {
    /// Unique group name, used to label results.
    pub name: String,
    /// Number of devices (at least 1).
    pub devices: u64,
    /// Client ID (and certificate CN/SAN) template; distinct per group so identities never
    /// collide.
    pub client_id: Template,
    /// How the group's devices connect.
    pub connect: ConnectPlan,
    /// MQTT keepalive; zero disables it.
    pub keepalive: Duration,
    /// MQTT 3.1.1 clean session / MQTT 5 clean start.
    pub clean_session: bool,
    /// MQTT version the group speaks.
    pub protocol: Protocol,
    /// What each device publishes, if anything.
    pub publish: Option<PublishPlan>,
    /// What each device subscribes to (right after CONNACK, before any traffic starts).
    pub subscribe: Vec<SubscribePlan>,
    /// How a device whose session was lost reconnects; `None`: it does not.
    pub reconnect: Option<reconnect::ReconnectPlan>,
    /// Churn and last will (`churn`, `will`).
    pub lifecycle: lifecycle::LifecyclePlan,
    /// AWS IoT Device Shadow flows instead of publish/subscribe traffic (`shadow = {...}`).
    pub shadow: Option<shadow::ShadowPlan>,
    /// AWS IoT fleet provisioning by claim instead of traffic (`provision = {...}`).
    pub provision: Option<provision::ProvisionPlan>,
    /// Transport, offline window, shared subscription, MQTT 5 options (see [`protocol`]).
    pub options: protocol::GroupOptions,
}

/// Connect pacing of one group.
#[derive(Clone, Debug, PartialEq)]
pub struct ConnectPlan {
    /// Connects per second started for this group; `None` = "max": as fast as `max_in_flight`
    /// allows.
    pub rate: Option<f64>,
    /// Most connects (TCP + TLS + CONNACK) outstanding at once for this group.
    pub max_in_flight: usize,
    /// Time from connect start to CONNACK before the attempt counts as failed.
    pub timeout: Duration,
}

impl ConnectPlan {
    /// The pace as a user reads it: `"300/s"`, `"0.5/s"` or `"max"`.
    pub fn rate_label(&self) -> String {
        values::rate_label(self.rate)
    }
}

/// MQTT protocol version.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    /// MQTT 3.1.1 (the default: every broker speaks it).
    V311,
    /// MQTT 5.
    V5,
}

impl fmt::Display for Protocol {
    /// As written in scenarios: `3.1.1` or `5`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::V311 => "3.1.1",
            Protocol::V5 => "5",
        })
    }
}

/// Command-line settings that replace the scenario's (`--target`, `--server-ca`,
/// `--insecure`), so one file serves the embedded broker and a real one.
#[derive(Clone, Debug, Default)]
pub struct Overrides {
    /// `--target URL`: replaces (or creates) `[target].url`.
    pub target: Option<String>,
    /// `--server-ca PEM`: replaces `[target].server_ca` (relative to the working directory).
    pub server_ca: Option<PathBuf>,
    /// `--insecure`: do not verify an external broker.
    pub insecure: bool,
    /// `--tls-version` (repeatable): replaces `[target].tls.versions`.
    pub tls_versions: Option<Vec<String>>,
    /// `--cipher-suite` (repeatable): replaces `[target].tls.suites`.
    pub cipher_suites: Option<Vec<String>>,
    /// `--alpn` (repeatable): replaces `[target].tls.alpn`.
    pub alpn: Option<Vec<String>>,
    /// `--sni NAME`: replaces `[target].sni`.
    pub sni: Option<String>,
    /// `--tls-backend auto|rustls|openssl`: replaces `[target].tls.backend`.
    pub tls_backend: Option<String>,
    /// `--source-address` (repeatable): replaces `[target].source_addresses`.
    pub source_addresses: Option<Vec<String>>,
}

impl Plan {
    /// Reads and validates the scenario at `path`.
    pub fn load(path: &Path, overrides: &Overrides) -> Result<Plan, ScenarioError> {
        let text = std::fs::read_to_string(path).map_err(|source| ScenarioError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Plan::from_str(&text, path, overrides)
    }

    /// Validates scenario `text` as if read from `source` (which names it in errors and
    /// anchors its relative paths).
    pub fn from_str(
        text: &str,
        source: &Path,
        overrides: &Overrides,
    ) -> Result<Plan, ScenarioError> {
        let src = Source { path: source, text };
        if let Some(at) = crate::tls::matrix_spec::kind_offset(text) {
            return Err(src.at(at, "kind = \"tls-matrix\": this is a tls-matrix spec, not a run scenario (use thingswarm tls-matrix FILE)"));
        }
        let raw: RawScenario = toml::from_str(text).map_err(|e| src.toml(&e))?;
        validate(&src, raw, overrides)
    }

    /// Devices over all groups.
    pub fn total_devices(&self) -> u64 {
        self.groups.iter().map(|g| g.devices).sum()
    }

    /// Devices this process runs: [`Plan::total_devices`] unless sharded.
    pub fn shard_devices(&self) -> u64 {
        self.groups
            .iter()
            .map(|g| self.shard.slice(g.devices).count)
            .sum()
    }

    /// The identity-cache key of a group's devices.
    pub fn fleet_spec(&self, group: &GroupPlan) -> FleetSpec {
        FleetSpec {
            client_id: group.client_id.clone(),
            algorithm: self.identity.algorithm,
            validity_days: self.identity.validity_days,
            ca: self.identity.ca.clone(),
        }
    }

    /// Time the connect ramp should take at the planned pace: groups ramp concurrently, so the
    /// slowest group's `devices / rate` (zero for "max", which depends on the broker).
    pub fn expected_ramp(&self) -> Duration {
        self.groups
            .iter()
            .filter_map(|g| g.connect.rate.map(|r| g.devices as f64 / r))
            .map(|secs| Duration::try_from_secs_f64(secs).unwrap_or(Duration::MAX))
            .max()
            .unwrap_or(Duration::ZERO)
    }
}

fn validate(
    src: &Source<'_>,
    raw: RawScenario,
    overrides: &Overrides,
) -> Result<Plan, ScenarioError> {
    let slos = slo::slos(src, raw.slo.as_ref())?;
    let name = slug(src, "name", &raw.name)?;
    let duration = duration(src, "duration", &raw.duration)?;
    let (target, default_protocol) = target(src, raw.target.as_ref(), overrides)?;
    let tls = tls::options(
        src,
        raw.target.as_ref().and_then(|t| t.get_ref().tls.as_ref()),
        raw.target.as_ref().and_then(|t| t.get_ref().sni.as_ref()),
        overrides,
    )?;
    let identity = match &raw.identity {
        Some(raw) => identity(src, raw)?,
        None => IdentityPlan::default(),
    };
    let transport = protocol::transport(
        src,
        target == Target::Embedded,
        raw.target
            .as_ref()
            .map_or_else(Default::default, |t| protocol::RawTransport {
                transport: t.get_ref().transport.as_ref(),
                path: t.get_ref().path.as_ref(),
            }),
    )?;
    let groups = groups(src, raw.group.as_ref(), default_protocol, &transport)?;
    protocol::check_groups(src, &groups, duration)?;
    let source_addresses = source::source_addresses(
        src,
        raw.target
            .as_ref()
            .and_then(|t| t.get_ref().source_addresses.as_ref()),
        overrides,
        &target,
    )?;
    let mut expect = expect::expectations(src, raw.expect.as_ref(), &groups)?;
    let (from_policy, policy) =
        expect::from_policy(src, raw.policy.as_ref(), &groups, expect.len())?;
    expect.extend(from_policy);
    let expect_at = raw.expect.as_ref().map(|e| e.span().start);
    let policy_at = raw.policy.as_ref().map(|p| p.span().start);
    provision::check_expectations(src, expect_at.or(policy_at), &groups, &expect)?;
    let events = lifecycle::events(src, raw.event.as_ref(), &groups)?;
    Ok(Plan {
        name,
        source: src.path.to_path_buf(),
        scenario_text: src.text.to_string(),
        duration,
        target,
        tls,
        identity,
        groups,
        seed: raw.seed.unwrap_or(0),
        faults: faults::faults(src, raw.fault.as_ref())?,
        events,
        expect,
        policy,
        slos,
        shard: crate::shard::Shard::WHOLE,
        source_addresses,
    })
}

/// Refuses a key whose capability is not built yet; `note` says what will bring it.
fn not_built<T>(
    src: &Source<'_>,
    place: &str,
    key: &str,
    value: &Option<Spanned<T>>,
    note: &str,
) -> Result<(), ScenarioError> {
    match value {
        Some(v) => Err(src.at(
            v.span().start,
            format!("{place}`{key}` is not built yet ({note})"),
        )),
        None => Ok(()),
    }
}

/// A name that is safe in directory names and metric labels.
fn slug(src: &Source<'_>, key: &str, value: &Spanned<String>) -> Result<String, ScenarioError> {
    let s = value.get_ref();
    let ok = (1..=64).contains(&s.len())
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '-'));
    if ok {
        Ok(s.clone())
    } else {
        Err(src.at(
            value.span().start,
            format!("{key}: {s:?} is not a valid name (expected 1 to 64 of a-z, 0-9, `_`, `-`)"),
        ))
    }
}

fn duration(
    src: &Source<'_>,
    key: &str,
    value: &Spanned<String>,
) -> Result<Duration, ScenarioError> {
    values::duration(value.get_ref()).map_err(|m| src.at(value.span().start, format!("{key}: {m}")))
}

/// The target and the protocol groups default to.
fn target(
    src: &Source<'_>,
    raw: Option<&Spanned<RawTarget>>,
    overrides: &Overrides,
) -> Result<(Target, Protocol), ScenarioError> {
    let t = raw.map(Spanned::get_ref);
    let protocol = match t.and_then(|t| t.protocol.as_ref()) {
        Some(p) => protocol(src, "target.protocol", p)?,
        None => Protocol::V311,
    };
    let file_url = t.and_then(|t| t.url.as_ref());
    let file_ca = t.and_then(|t| t.server_ca.as_ref());
    let broker = match (&overrides.target, file_url) {
        (Some(url), _) => {
            Some(values::broker_url(url).map_err(|m| src.flag(format!("--target: {m}")))?)
        }
        (None, Some(url)) => Some(
            values::broker_url(url.get_ref())
                .map_err(|m| src.at(url.span().start, format!("target.url: {m}")))?,
        ),
        (None, None) => None,
    };
    let Some((host, port)) = broker else {
        if overrides.insecure {
            return Err(src.flag(
                "--insecure applies to an external --target only (the embedded broker's CA is trusted automatically)",
            ));
        }
        if overrides.server_ca.is_some() {
            return Err(src.flag(
                "--server-ca applies to an external --target only (the embedded broker's CA is trusted automatically)",
            ));
        }
        if let Some(ca) = file_ca {
            return Err(src.at(
                ca.span().start,
                "target.server_ca: applies to an external broker only (expected url = \"mqtts://host:port\" beside it, or --target URL)",
            ));
        }
        return Ok((Target::Embedded, protocol));
    };
    let server_ca = match (&overrides.server_ca, file_ca) {
        (Some(path), _) => {
            values::pem_certificates(path).map_err(|m| {
                src.flag(format!(
                    "--server-ca: {m} (expected a PEM file of CA certificates)"
                ))
            })?;
            Some(path.clone())
        }
        (None, Some(ca)) => {
            let path = src.resolve(ca.get_ref());
            values::pem_certificates(&path).map_err(|m| {
                src.at(
                    ca.span().start,
                    format!("target.server_ca: {m} ({PEM_RELATIVE})"),
                )
            })?;
            Some(path)
        }
        (None, None) => None,
    };
    let fix = "expected server_ca = \"ca.pem\" in [target] or --server-ca PEM; --insecure skips verification";
    match (overrides.insecure, &server_ca, &overrides.target, file_url) {
        (true, Some(ca), _, _) => {
            return Err(src.flag(format!(
                "--insecure skips verifying the broker, yet server CA {} is given (expected one of them, not both)",
                ca.display()
            )))
        }
        (false, None, Some(url), _) => {
            return Err(src.flag(format!(
                "--target {url:?}: no CA to verify the broker with ({fix})"
            )))
        }
        (false, None, None, Some(url)) => {
            return Err(src.at(
                url.span().start,
                format!("target.url: {:?} has no CA to verify the broker with ({fix})", url.get_ref()),
            ))
        }
        _ => {}
    }
    Ok((
        Target::Broker {
            host,
            port,
            server_ca,
            insecure: overrides.insecure,
        },
        protocol,
    ))
}

fn protocol(
    src: &Source<'_>,
    key: &str,
    value: &Spanned<String>,
) -> Result<Protocol, ScenarioError> {
    values::protocol(value.get_ref()).map_err(|m| src.at(value.span().start, format!("{key}: {m}")))
}

fn identity(src: &Source<'_>, raw: &RawIdentity) -> Result<IdentityPlan, ScenarioError> {
    not_built(
        src,
        "identity.",
        "subject",
        &raw.subject,
        "certificate subject templates arrive with a later version; until then the CN is the client ID",
    )?;
    let mut plan = IdentityPlan::default();
    if let Some(alg) = &raw.algorithm {
        plan.algorithm = alg
            .get_ref()
            .parse()
            .map_err(|e| src.at(alg.span().start, format!("identity.algorithm: {e}")))?;
    }
    if let Some(days) = &raw.validity_days {
        let d = *days.get_ref();
        if !(1..=36500).contains(&d) {
            return Err(src.at(
                days.span().start,
                format!("identity.validity_days: {d} is out of range (expected 1..=36500)"),
            ));
        }
        plan.validity_days = d;
    }
    if let Some(ca) = &raw.ca {
        plan.ca = ca_source(src, ca)?;
    }
    Ok(plan)
}

fn ca_source(src: &Source<'_>, ca: &Spanned<toml::Value>) -> Result<CaSource, ScenarioError> {
    use toml::Value;
    let at = |message: String| src.at(ca.span().start, format!("identity.ca: {message}"));
    match ca.get_ref() {
        Value::String(s) if s == "generate" => Ok(CaSource::Generated {
            intermediate: false,
        }),
        Value::String(s) if s == "generate-intermediate" => {
            Ok(CaSource::Generated { intermediate: true })
        }
        Value::Table(t)
            if t.len() == 2
                && t.get("cert").is_some_and(Value::is_str)
                && t.get("key").is_some_and(Value::is_str) =>
        {
            let path = |k: &str| {
                src.resolve(Path::new(
                    t.get(k).and_then(Value::as_str).unwrap_or_default(),
                ))
            };
            let (cert, key) = (path("cert"), path("key"));
            for file in [&cert, &key] {
                values::readable_file(file).map_err(|m| at(format!("{m} ({PEM_RELATIVE})")))?;
            }
            Ok(CaSource::Files { cert, key })
        }
        other => Err(at(format!(
            r#"{} is not a CA source (expected "generate", "generate-intermediate" or {{ cert = "ca.pem", key = "ca-key.pem" }})"#,
            other.to_string().trim()
        ))),
    }
}

fn groups(
    src: &Source<'_>,
    raw: Option<&Spanned<Vec<Spanned<RawGroup>>>>,
    default_protocol: Protocol,
    transport: &protocol::Transport,
) -> Result<Vec<GroupPlan>, ScenarioError> {
    let none = "no [[group]] (expected at least one [[group]] with name, devices and client_id)";
    let raw = match raw {
        None => return Err(src.at(0, none)),
        Some(list) if list.get_ref().is_empty() => return Err(src.at(list.span().start, none)),
        Some(list) => list.get_ref(),
    };
    let mut plans: Vec<GroupPlan> = Vec::with_capacity(raw.len());
    let mut names = HashMap::new();
    let mut templates = HashMap::new();
    let mut total = 0u64;
    let mut scheduled = 0f64;
    for (i, g) in raw.iter().enumerate() {
        let g = g.get_ref();
        let mut plan = group(src, i, g, default_protocol)?;
        let key = |k: &str| format!("group[{i}].{k}");
        plan.options = protocol::group_options(
            src,
            &key,
            &plan,
            g.offline.as_ref(),
            g.v5.as_ref(),
            transport,
        )?;
        if let Some(first) = names.insert(plan.name.clone(), i) {
            return Err(src.at(
                g.name.span().start,
                format!(
                    "group[{i}].name: {:?} is already the name of group[{first}] (expected a unique name per group)",
                    plan.name
                ),
            ));
        }
        if let Some(first) = templates.insert(plan.client_id.source().to_string(), i) {
            return Err(src.at(
                g.client_id.span().start,
                format!(
                    "group[{i}].client_id: {:?} is also the template of group[{first}]: their devices would share identities (expected a different template per group)",
                    plan.client_id.source()
                ),
            ));
        }
        if let Some(per_sec) = plan.publish.as_ref().and_then(|p| p.rate) {
            scheduled += per_sec * plan.devices as f64;
            if scheduled > MAX_SCHEDULED_RATE {
                let at = g.publish.as_ref().map_or(g.devices.span().start, |p| {
                    p.get_ref()
                        .rate
                        .as_ref()
                        .map_or(p.span().start, |r| r.span().start)
                });
                return Err(src.at(
                    at,
                    format!(
                        "group[{i}].publish.rate: {} per device x {} devices brings the fleet to {scheduled:.0} messages/s, more than one run can schedule (expected at most {MAX_SCHEDULED_RATE:.0}/s over all groups; split the fleet over several processes)",
                        values::rate_label(Some(per_sec)),
                        plan.devices
                    ),
                ));
            }
        }
        total += plan.devices;
        if total > MAX_DEVICES {
            return Err(src.at(
                g.devices.span().start,
                format!(
                    "group[{i}].devices: {} brings the total over all groups to {total} (expected at most {MAX_DEVICES} devices per run)",
                    plan.devices
                ),
            ));
        }
        plans.push(plan);
    }
    Ok(plans)
}

/// One group on its own; [`groups`] checks what groups must not share.
fn group(
    src: &Source<'_>,
    i: usize,
    g: &RawGroup,
    default_protocol: Protocol,
) -> Result<GroupPlan, ScenarioError> {
    let key = |k: &str| format!("group[{i}].{k}");

    let name = slug(src, &key("name"), &g.name)?;

    let devices = *g.devices.get_ref();
    if !(1..=MAX_DEVICES).contains(&devices) {
        return Err(src.at(
            g.devices.span().start,
            format!(
                "{}: {devices} is out of range (expected 1..={MAX_DEVICES})",
                key("devices")
            ),
        ));
    }

    let at_id = |m: String| {
        src.at(
            g.client_id.span().start,
            format!("{}: {m}", key("client_id")),
        )
    };
    let client_id =
        Template::parse(g.client_id.get_ref(), CLIENT_ID_VARS).map_err(|e| at_id(e.to_string()))?;
    let longest = client_id.render_index(devices - 1);
    if longest.chars().count() > MAX_CLIENT_ID_CHARS {
        return Err(at_id(format!(
            "{:?} renders to {} characters ({longest:?} for device {}), more than the {MAX_CLIENT_ID_CHARS} a certificate CN holds (expected a shorter template)",
            client_id.source(),
            longest.chars().count(),
            devices - 1
        )));
    }
    if devices > 1 && !client_id.uses("index") {
        return Err(at_id(format!(
            "{:?} has no {{index}}: all {devices} devices would share one identity (expected e.g. \"{name}-{{index:05}}\")",
            client_id.source()
        )));
    }

    let keepalive = match &g.keepalive {
        None => DEFAULT_KEEPALIVE,
        Some(k) => {
            let d = duration(src, &key("keepalive"), k)?;
            let whole = d.subsec_nanos() == 0;
            if !(d.is_zero() || whole && (5..=65535).contains(&d.as_secs())) {
                return Err(src.at(
                    k.span().start,
                    format!(
                        r#"{}: {:?} is out of range (expected "0s" to disable, or "5s" to "65535s" in whole seconds)"#,
                        key("keepalive"),
                        k.get_ref()
                    ),
                ));
            }
            d
        }
    };

    let protocol = match &g.protocol {
        Some(p) => protocol(src, &key("protocol"), p)?,
        None => default_protocol,
    };
    Ok(GroupPlan {
        name,
        devices,
        client_id,
        connect: connect(src, &key("connect"), g)?,
        keepalive,
        clean_session: g.clean_session.unwrap_or(true),
        protocol,
        publish: match &g.publish {
            Some(p) => Some(traffic::publish(src, &key("publish"), p)?),
            None => None,
        },
        subscribe: match &g.subscribe {
            Some(list) => traffic::subscribe(src, &key("subscribe"), list)?,
            None => Vec::new(),
        },
        reconnect: reconnect::reconnect(src, &key("reconnect"), g.reconnect.as_ref())?,
        lifecycle: lifecycle::group(
            src,
            &key,
            devices,
            protocol,
            g.churn.as_ref(),
            g.will.as_ref(),
        )?,
        shadow: shadow::shadow(src, &key("shadow"), g)?,
        provision: provision::provision(src, &key("provision"), g)?,
        options: protocol::GroupOptions::default(),
    })
}

fn connect(src: &Source<'_>, key: &str, g: &RawGroup) -> Result<ConnectPlan, ScenarioError> {
    let mut plan = ConnectPlan {
        rate: Some(DEFAULT_RATE_PER_SEC),
        max_in_flight: DEFAULT_MAX_IN_FLIGHT,
        timeout: DEFAULT_CONNECT_TIMEOUT,
    };
    let Some(c) = &g.connect else {
        return Ok(plan);
    };
    if let Some(rate) = &c.rate {
        plan.rate = values::rate(rate.get_ref())
            .map_err(|m| src.at(rate.span().start, format!("{key}.rate: {m}")))?;
    }
    if let Some(n) = &c.max_in_flight {
        let v = *n.get_ref();
        if !(1..=10_000).contains(&v) {
            return Err(src.at(
                n.span().start,
                format!("{key}.max_in_flight: {v} is out of range (expected 1..=10000)"),
            ));
        }
        plan.max_in_flight = v as usize;
    }
    if let Some(t) = &c.timeout {
        plan.timeout = duration(src, &format!("{key}.timeout"), t)?;
        if plan.timeout.is_zero() {
            return Err(src.at(
                t.span().start,
                format!(
                    r#"{key}.timeout: {:?} is zero (expected a positive duration, e.g. "10s")"#,
                    t.get_ref()
                ),
            ));
        }
    }
    Ok(plan)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
name = "t"
duration = "1m"
[[group]]
name = "g"
devices = 10
client_id = "g-{index}"
"#;

    fn load(text: &str, overrides: &Overrides) -> Result<Plan, ScenarioError> {
        Plan::from_str(text, Path::new("dir/t.toml"), overrides)
    }

    fn err(text: &str, overrides: &Overrides) -> String {
        load(text, overrides).unwrap_err().to_string()
    }

    #[test]
    fn defaults() {
        let plan = load(MINIMAL, &Overrides::default()).unwrap();
        assert_eq!(plan.name, "t");
        assert_eq!(plan.duration, Duration::from_secs(60));
        assert_eq!(plan.target, Target::Embedded);
        assert_eq!(plan.target.url(), "embedded");
        assert_eq!(plan.identity, IdentityPlan::default());
        assert_eq!(plan.scenario_text, MINIMAL);
        let g = &plan.groups[0];
        assert_eq!(g.connect.rate, Some(500.0));
        assert_eq!(g.connect.max_in_flight, 100);
        assert_eq!(g.connect.timeout, Duration::from_secs(10));
        assert_eq!(g.keepalive, Duration::from_secs(30));
        assert!(g.clean_session);
        assert_eq!(g.protocol, Protocol::V311);
        assert_eq!(plan.total_devices(), 10);
        assert_eq!(plan.expected_ramp(), Duration::from_millis(20));
        let spec = plan.fleet_spec(g);
        assert_eq!(spec.client_id.source(), "g-{index}");
        assert_eq!(spec.validity_days, 365);
    }

    #[test]
    fn everything_set() {
        let text = r#"
name = "full_1"
duration = "1h 30m"
[target]
protocol = "5"
[identity]
ca = "generate-intermediate"
algorithm = "ECDSA-WITH-SHA384"
validity_days = 30
[[group]]
name = "a"
devices = 600
client_id = "a-{index:04}"
connect = { rate = "300/min", max_in_flight = 7, timeout = "2s" }
keepalive = "0s"
clean_session = false
[[group]]
name = "b"
devices = 1
client_id = "the-one"
connect = { rate = "max" }
protocol = "3.1.1"
"#;
        let plan = load(text, &Overrides::default()).unwrap();
        assert_eq!(plan.duration, Duration::from_secs(5400));
        assert_eq!(plan.target, Target::Embedded);
        assert_eq!(
            plan.identity,
            IdentityPlan {
                algorithm: Algorithm::EcdsaP384Sha384,
                ca: CaSource::Generated { intermediate: true },
                validity_days: 30,
            }
        );
        let (a, b) = (&plan.groups[0], &plan.groups[1]);
        assert_eq!(a.connect.rate, Some(5.0));
        assert_eq!(a.connect.rate_label(), "5/s");
        assert_eq!(a.connect.max_in_flight, 7);
        assert_eq!(a.connect.timeout, Duration::from_secs(2));
        assert_eq!(a.keepalive, Duration::ZERO);
        assert!(!a.clean_session);
        assert_eq!(a.protocol, Protocol::V5);
        assert_eq!(b.connect.rate, None);
        assert_eq!(b.protocol, Protocol::V311);
        assert_eq!(b.protocol.to_string(), "3.1.1");
        assert_eq!(plan.total_devices(), 601);
        // 600 devices at 5/s; "max" contributes nothing.
        assert_eq!(plan.expected_ramp(), Duration::from_secs(120));
    }

    #[test]
    fn absurdly_slow_ramp_saturates() {
        let text = MINIMAL.replace(
            "devices = 10",
            "devices = 1000000\nconnect = { rate = \"0.0000000001/h\" }",
        );
        let plan = load(&text, &Overrides::default()).unwrap();
        assert_eq!(plan.expected_ramp(), Duration::MAX);
    }

    #[test]
    fn target_from_file_and_overrides() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        // Only the PEM framing is checked here; TLS set-up parses the certificate.
        let pem = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
        std::fs::write(dir.join("ca.pem"), pem).unwrap();
        std::fs::write(dir.join("not-pem.txt"), "hello").unwrap();
        let source = dir.join("s.toml");
        let with_target =
            format!("{MINIMAL}[target]\nurl = \"mqtts://[::1]:8883\"\nserver_ca = \"ca.pem\"\n");
        let plan = Plan::from_str(&with_target, &source, &Overrides::default()).unwrap();
        assert_eq!(
            plan.target,
            Target::Broker {
                host: "::1".into(),
                port: 8883,
                server_ca: Some(dir.join("ca.pem")),
                insecure: false,
            }
        );
        assert_eq!(plan.target.url(), "mqtts://[::1]:8883");

        // --target replaces the file's URL and keeps its server_ca.
        let over = Overrides {
            target: Some("mqtts://broker.example:8884".into()),
            ..Overrides::default()
        };
        let plan = Plan::from_str(&with_target, &source, &over).unwrap();
        assert_eq!(plan.target.url(), "mqtts://broker.example:8884");

        // --target creates a target; --insecure stands in for a CA.
        let over = Overrides {
            target: Some("mqtts://127.0.0.1:8883".into()),
            insecure: true,
            ..Overrides::default()
        };
        let plan = load(MINIMAL, &over).unwrap();
        assert!(matches!(
            plan.target,
            Target::Broker {
                insecure: true,
                server_ca: None,
                ..
            }
        ));

        // --server-ca replaces the file's (relative to the working directory, not the file).
        let over = Overrides {
            target: Some("mqtts://127.0.0.1:8883".into()),
            server_ca: Some(dir.join("ca.pem")),
            ..Overrides::default()
        };
        let plan = load(MINIMAL, &over).unwrap();
        assert!(matches!(
            plan.target,
            Target::Broker {
                server_ca: Some(_),
                ..
            }
        ));

        let not_pem = with_target.replace("ca.pem", "not-pem.txt");
        let e = Plan::from_str(&not_pem, &source, &Overrides::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("not-pem.txt: no CERTIFICATE block"), "{e}");
    }

    #[test]
    fn override_errors_name_the_flag() {
        let cases = [
            (
                Overrides { target: Some("mqtt://h:1883".into()), ..Overrides::default() },
                "dir/t.toml: --target: \"mqtt://h:1883\" is plain MQTT: thingswarm speaks mTLS only",
            ),
            (
                Overrides { target: Some("mqtts://h:8883".into()), ..Overrides::default() },
                "--target \"mqtts://h:8883\": no CA to verify the broker with (expected server_ca",
            ),
            (
                Overrides { insecure: true, ..Overrides::default() },
                "--insecure applies to an external --target only",
            ),
            (
                Overrides { server_ca: Some("ca.pem".into()), ..Overrides::default() },
                "--server-ca applies to an external --target only",
            ),
            (
                Overrides {
                    target: Some("mqtts://h:8883".into()),
                    server_ca: Some("/no/such/ca.pem".into()),
                    ..Overrides::default()
                },
                "--server-ca: /no/such/ca.pem: No such file",
            ),
        ];
        for (over, needle) in cases {
            let e = err(MINIMAL, &over);
            assert!(e.contains(needle), "{e}\n  expected: {needle}");
        }
    }

    #[test]
    fn errors_point_at_the_value() {
        let text = MINIMAL.replace(
            "devices = 10",
            "devices = 10\nconnect = { rate = \"fast\" }",
        );
        let e = err(&text, &Overrides::default());
        assert!(
            e.starts_with(r#"dir/t.toml:7:20: group[0].connect.rate: "fast" is not a rate"#),
            "{e}"
        );
        let e = err(&MINIMAL.replace("devices", "devics"), &Overrides::default());
        assert!(
            e.starts_with("dir/t.toml:6:1: unknown field `devics`"),
            "{e}"
        );
        let e = err(&MINIMAL.replace("10", "\"ten\""), &Overrides::default());
        assert!(
            e.starts_with(r#"dir/t.toml:6:11: devices: invalid type: string "ten""#),
            "{e}"
        );
    }

    #[test]
    fn byo_ca_paths_are_relative_to_the_scenario() {
        let text =
            format!("{MINIMAL}[identity]\nca = {{ cert = \"ca.pem\", key = \"ca-key.pem\" }}\n");
        let e = err(&text, &Overrides::default());
        assert!(e.contains("identity.ca: dir/ca.pem: No such file"), "{e}");
        let text = format!("{MINIMAL}[identity]\nca = {{ cert = \"ca.pem\" }}\n");
        let e = err(&text, &Overrides::default());
        assert!(
            e.contains(r#"identity.ca: { cert = "ca.pem" } is not a CA source"#),
            "{e}"
        );
    }

    #[test]
    fn single_device_needs_no_index_and_keepalive_bounds() {
        let one = MINIMAL
            .replace("devices = 10", "devices = 1")
            .replace("g-{index}", "solo");
        assert!(load(&one, &Overrides::default()).is_ok());
        for (ka, ok) in [
            ("\"5s\"", true),
            ("\"65535s\"", true),
            ("\"65536s\"", false),
            ("\"7500ms\"", false),
            ("\"4s\"", false),
        ] {
            let text = format!("{MINIMAL}keepalive = {ka}\n");
            assert_eq!(
                load(&text, &Overrides::default()).is_ok(),
                ok,
                "keepalive {ka}"
            );
        }
    }
}
