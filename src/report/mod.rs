//! The end-of-run report: one [`Report`] value, rendered as `report.json` and as the human
//! summary printed at the end. Later renderers (JUnit, Prometheus, HTML) take the same value.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use serde::Serialize;

use crate::stats::histogram::{self, fmt_us, Percentiles};
use crate::stats::{Counts, ErrorRow, TimelinePoint};

/// Bumped whenever a field changes meaning or disappears.
pub const SCHEMA_VERSION: u32 = 1;

/// Everything a run reports.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// See [`SCHEMA_VERSION`].
    pub schema_version: u32,
    /// The thingswarm version that ran.
    pub thingswarm_version: String,
    /// Start of the run, RFC 3339 UTC.
    pub started_at: String,
    /// True when Ctrl-C (or a stop key) ended the run early: figures are partial.
    pub interrupted: bool,
    /// The scenario as run.
    pub scenario: ScenarioEcho,
    /// The broker.
    pub target: TargetInfo,
    /// The machine the client ran on.
    pub environment: Environment,
    /// What each measured figure means.
    pub definitions: BTreeMap<&'static str, &'static str>,
    /// Per group: where its identities came from.
    pub identities: Vec<IdentityInfo>,
    /// Devices in the plan.
    pub planned_devices: u64,
    /// Totals over groups.
    pub devices: Counts,
    /// Per group.
    pub groups: Vec<GroupReport>,
    /// Phase durations in seconds.
    pub phases: Phases,
    /// Connect latency (TCP connect start -> CONNACK), microseconds.
    pub connect_latency_us: HistogramReport,
    /// Errors by class.
    pub errors: Vec<ErrorRow>,
    /// Once-per-second gauges.
    pub timeline: Vec<TimelinePoint>,
    /// thingswarm's own resource use.
    pub client: ClientUsage,
}

/// The scenario file echoed into the report, so a result is reproducible from it alone.
#[derive(Clone, Debug, Serialize)]
pub struct ScenarioEcho {
    /// Scenario name.
    pub name: String,
    /// Path as given.
    pub file: String,
    /// Full text.
    pub text: String,
}

/// The broker the run targeted.
#[derive(Clone, Debug, Serialize)]
pub struct TargetInfo {
    /// `mqtts://host:port`.
    pub url: String,
    /// Whether it was thingswarm's embedded broker.
    pub embedded: bool,
    /// `verified` or `disabled (--insecure)`.
    pub server_verification: String,
}

/// Facts about the client machine that bound what it can do.
#[derive(Clone, Debug, Serialize)]
pub struct Environment {
    /// Logical CPUs available.
    pub cores: usize,
    /// OS and kernel release.
    pub os: String,
    /// Open-file limit (soft, hard) after start-up raised the soft one.
    pub nofile: (u64, u64),
}

impl Environment {
    /// Reads the current machine.
    pub fn current() -> Environment {
        let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
        Environment {
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            os: format!("{} {}", std::env::consts::OS, release.trim()),
            nofile: crate::limits::nofile(),
        }
    }
}

/// Where a group's identities came from.
#[derive(Clone, Debug, Serialize)]
pub struct IdentityInfo {
    /// Group name.
    pub group: String,
    /// Identity-cache fleet id.
    pub fleet: String,
    /// Algorithm name.
    pub algorithm: String,
    /// Signature on the device certificates (seed's name).
    pub signature: String,
    /// Identities reused from the cache.
    pub reused: u64,
    /// Identities generated for this run.
    pub generated: u64,
    /// Seconds spent generating.
    pub generation_s: f64,
}

/// One group's outcome.
#[derive(Clone, Debug, Serialize)]
pub struct GroupReport {
    /// Group name.
    pub name: String,
    /// Devices planned.
    pub planned: u64,
    /// MQTT version.
    pub protocol: String,
    /// Final counters.
    pub counts: Counts,
}

/// Phase durations, seconds.
#[derive(Clone, Debug, Serialize)]
pub struct Phases {
    /// First attempt until every device attempted.
    pub ramp_s: f64,
    /// Whole run, ramp start to drained.
    pub total_s: f64,
}

/// A histogram as percentiles plus its lossless encoding.
#[derive(Clone, Debug, Serialize)]
pub struct HistogramReport {
    /// Percentiles, microseconds.
    #[serde(flatten)]
    pub percentiles: Percentiles,
    /// HdrHistogram V2+deflate, base64; merge shards with any HdrHistogram library.
    pub hdr: String,
}

impl HistogramReport {
    /// Summarises and encodes `h`.
    pub fn of(h: &hdrhistogram::Histogram<u64>) -> HistogramReport {
        HistogramReport {
            percentiles: Percentiles::of(h),
            hdr: histogram::encode(h),
        }
    }
}

/// thingswarm's own CPU and memory.
#[derive(Clone, Debug, Serialize)]
pub struct ClientUsage {
    /// User + system CPU seconds of the whole process (identity loading included).
    pub cpu_s: f64,
    /// CPU milliseconds per successful connect.
    pub cpu_ms_per_connect: f64,
    /// Peak resident memory, bytes.
    pub max_rss_bytes: u64,
    /// True when the embedded broker ran in this process: its CPU and memory are included.
    pub includes_embedded_broker: bool,
}

/// The definitions stated in every report (DESIGN.md section 5).
pub fn definitions() -> BTreeMap<&'static str, &'static str> {
    BTreeMap::from([
        ("connect_latency_us", "TCP connect start -> CONNACK received, per successful device, microseconds. Includes the TLS handshake; rumqttc does not expose the TCP/TLS/CONNACK boundaries, so phases are not split."),
        ("connects", "sessions that received a successful CONNACK"),
        ("failed", "connect attempts that ended in an error, a refusal or the group's connect timeout"),
        ("dropped", "established sessions lost before the run ended them"),
        ("closed", "sessions the run ended with DISCONNECT"),
        ("cancelled", "devices not connected because the run was stopped first"),
        ("ramp_s", "first connect attempt -> every device connected, failed or cancelled"),
    ])
}

impl Report {
    /// Writes `report.json` into `dir` (created if missing).
    pub fn write(&self, dir: &Path) -> std::io::Result<()> {
        std::fs::create_dir_all(dir)?;
        let json = serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?;
        std::fs::write(dir.join("report.json"), json)
    }

    /// The human summary printed at the end of a run.
    pub fn summary(&self) -> String {
        let d = &self.devices;
        let mut s = String::new();
        let _ = writeln!(
            s,
            "thingswarm {} — {} ({}), {} devices{}",
            self.scenario.name,
            self.target.url,
            if self.target.embedded {
                "embedded broker"
            } else {
                "external broker"
            },
            self.planned_devices,
            if self.interrupted {
                " — INTERRUPTED, partial figures"
            } else {
                ""
            }
        );
        let pct = if self.planned_devices > 0 {
            100.0 * d.connects as f64 / self.planned_devices as f64
        } else {
            0.0
        };
        let _ = writeln!(
            s,
            "  connected  {}/{} ({pct:.1}%)  failed {}  dropped {}  closed {}  cancelled {}",
            d.connects, self.planned_devices, d.failed, d.dropped, d.closed, d.cancelled
        );
        let rate = if self.phases.ramp_s > 0.0 {
            d.connects as f64 / self.phases.ramp_s
        } else {
            0.0
        };
        let _ = writeln!(
            s,
            "  ramp       {:.2} s ({rate:.0} connects/s), whole run {:.2} s",
            self.phases.ramp_s, self.phases.total_s
        );
        let p = &self.connect_latency_us.percentiles;
        let _ = writeln!(
            s,
            "  connect    p50 {}  p90 {}  p99 {}  p99.9 {}  max {}   (TCP start -> CONNACK)",
            fmt_us(p.p50),
            fmt_us(p.p90),
            fmt_us(p.p99),
            fmt_us(p.p99_9),
            fmt_us(p.max)
        );
        if self.errors.is_empty() {
            let _ = writeln!(s, "  errors     none");
        }
        for e in &self.errors {
            let _ = writeln!(
                s,
                "  error      {:<28} {:>7}  e.g. {}",
                e.class, e.count, e.example
            );
        }
        let _ = writeln!(
            s,
            "  client     CPU {:.2} s ({:.2} ms per connect), peak RSS {:.1} MiB{}",
            self.client.cpu_s,
            self.client.cpu_ms_per_connect,
            self.client.max_rss_bytes as f64 / (1024.0 * 1024.0),
            if self.client.includes_embedded_broker {
                " (embedded broker included)"
            } else {
                ""
            }
        );
        s
    }
}
