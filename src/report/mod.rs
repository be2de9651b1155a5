//! The end-of-run report: one [`Report`] value, rendered as `report.json` and as the human
//! summary printed at the end. Later renderers (JUnit, Prometheus, HTML) take the same value.
//! The committed JSON Schema `report.schema.json` beside this file describes `report.json`.

pub mod compare;
pub mod hlog;
pub mod junit;
mod load;
pub mod merge;

pub use load::LoadError;

pub mod html;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::fleet::control::{ControlAction, ControlEvent};
use crate::fleet::TrafficResult;
use crate::stats::histogram::{self, fmt_us, Percentiles};
use crate::stats::sequence::SequenceTotals;
use crate::stats::{Counts, ErrorRow, Metric, TimelinePoint};
use crate::tls::probe::Negotiated;

/// The JSON Schema of `report.json` (committed beside this file; tests validate real reports
/// against it), for tools that consume reports.
pub const SCHEMA_JSON: &str = include_str!("report.schema.json");

/// Bumped whenever a field changes meaning or disappears.
pub const SCHEMA_VERSION: u32 = 1;

/// Everything a run reports.
#[derive(Clone, Debug, Serialize, Deserialize)]
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
    pub definitions: BTreeMap<String, String>,
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
    /// Message figures, when the scenario has traffic.
    pub traffic: Option<TrafficReport>,
    /// Errors by class.
    pub errors: Vec<ErrorRow>,
    /// Once-per-second gauges.
    pub timeline: Vec<TimelinePoint>,
    /// Changes made to the traffic during the run (pause, resume, rate steps), with their
    /// time: figures measured across them mix rates, and this says when.
    pub events: Vec<ControlEvent>,
    /// Faults injected by the scenario's `[[fault]]` timeline, with their times on the same
    /// axis as `timeline`.
    pub faults: Vec<crate::proxy::timeline::FaultEvent>,
    /// thingswarm's own resource use.
    pub client: ClientUsage,
    /// `[[expect]]` probes: expected vs observed with the signal, mismatches first.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expectations: Option<crate::expect::ExpectationsReport>,
    /// Each service-level objective, evaluated (scenario `[slo]` first, then `--slo` flags).
    #[serde(default)]
    pub slos: Vec<crate::slo::SloOutcome>,
    /// Churn, drop-all storms and their connects/disconnects timeline (scenario `churn`,
    /// `will`, `[[event]]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lifecycle: Option<crate::fleet::lifecycle::LifecycleReport>,
    /// AWS IoT behaviours: shadow figures per shadow group, basic ingest groups.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aws: Option<crate::aws::AwsReport>,
    /// `run --shard i/N`: which shard this is and the device indices it ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shard: Option<crate::shard::ShardInfo>,
    /// A report made by `thingswarm merge` (or `run --processes`): the shards it combines.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merged: Option<crate::shard::MergeInfo>,
}

/// The scenario file echoed into the report, so a result is reproducible from it alone.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ScenarioEcho {
    /// Scenario name.
    pub name: String,
    /// Path as given.
    pub file: String,
    /// Full text.
    pub text: String,
}

/// The broker the run targeted.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TargetInfo {
    /// `mqtts://host:port`.
    pub url: String,
    /// Whether it was thingswarm's embedded broker.
    pub embedded: bool,
    /// `verified` or `disabled (--insecure)`.
    pub server_verification: String,
}

/// Facts about the client machine that bound what it can do.
#[derive(Clone, Debug, Serialize, Deserialize)]
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
#[derive(Clone, Debug, Serialize, Deserialize)]
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
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct GroupReport {
    /// Group name.
    pub name: String,
    /// Devices planned.
    pub planned: u64,
    /// MQTT version.
    pub protocol: String,
    /// Final counters.
    pub counts: Counts,
    /// TLS version, cipher suite and key exchange negotiated by a probe handshake with the
    /// group's first identity before the run (rumqttc does not expose them).
    pub tls: Option<Negotiated>,
    /// Why the probe handshake failed, when it did (the devices' errors say more).
    pub tls_probe_error: Option<String>,
    /// Loss of a session -> CONNACK of its reconnect, microseconds (p50/max are the headline).
    pub time_to_recover_us: Percentiles,
    /// Transport, persistent sessions and offline windows, retained, shares and MQTT 5 options
    /// the broker refused; absent when the group uses none of them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol_options: Option<crate::fleet::protocol::GroupProtocolReport>,
    /// The same, HdrHistogram V2+deflate, base64 (for lossless shard merges).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_to_recover_hdr: Option<String>,
}

/// Phase durations, seconds.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Phases {
    /// First attempt until every device attempted.
    pub ramp_s: f64,
    /// Whole run, ramp start to drained.
    pub total_s: f64,
}

/// A histogram as percentiles plus its lossless encoding.
#[derive(Clone, Debug, Serialize, Deserialize)]
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

/// What the devices' messages did: the steady-state window (the headline) and the whole
/// traffic window, plus loss settled from sequence numbers.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TrafficReport {
    /// Length of the traffic window (the scenario's `duration`), seconds.
    pub window_s: f64,
    /// Length of its steady part, seconds.
    pub steady_window_s: f64,
    /// Messages whose intended send time lies in the steady part.
    pub steady: TrafficFigures,
    /// Every message of the window (start-up and wind-down included).
    pub whole: TrafficFigures,
    /// Loss, duplicates and reordering at subscribers, whole window.
    pub sequence: SequenceTotals,
    /// Where messages went missing, whole window (see `definitions`).
    pub loss: LossReport,
}

/// Loss split by where it happened, so a fault shows where it struck.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LossReport {
    /// Intended send time passed while the device was disconnected: never written.
    pub never_sent: u64,
    /// Written (QoS 1/2) with neither acknowledgement nor refusal by the end.
    pub sent_not_acked: u64,
    /// Written but not received by a subscriber that expected it (= `sequence.lost`).
    pub not_delivered: u64,
    /// Lower bound of acknowledged-then-lost messages: `not_delivered - sent_not_acked`.
    pub acked_not_delivered_min: u64,
    /// QoS 1/2 PUBLISH written again after a reconnect (not in `sent`; shows as duplicates at
    /// subscribers when the first copy had arrived).
    pub retransmitted: u64,
}

/// Counts, rates and latencies over one window.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TrafficFigures {
    /// PUBLISH written.
    pub sent: u64,
    /// Received by subscribers (every copy).
    pub delivered: u64,
    /// Payload bytes received by subscribers.
    pub delivered_bytes: u64,
    /// `sent` per second of the window.
    pub sent_per_s: f64,
    /// `delivered` per second of the window: the throughput that matters.
    pub delivered_per_s: f64,
    /// `delivered_bytes` per second of the window.
    pub delivered_bytes_per_s: f64,
    /// PUBLISH written -> PUBACK/PUBCOMP, microseconds (uncorrected).
    pub ack_latency_us: HistogramReport,
    /// Intended send time -> PUBACK/PUBCOMP, microseconds (corrected for coordinated omission).
    pub ack_corrected_us: HistogramReport,
    /// Intended send time -> received, microseconds.
    pub e2e_corrected_us: HistogramReport,
    /// Actual send time -> received, microseconds.
    pub e2e_uncorrected_us: HistogramReport,
}

impl TrafficReport {
    /// Builds the section from the run's traffic result and final counters.
    pub fn new(t: &TrafficResult, c: &Counts) -> TrafficReport {
        let window_s = (t.window.end - t.window.start).as_secs_f64();
        let steady_window_s = (t.window.steady_end - t.window.steady_start).as_secs_f64();
        let figures = |h: &[hdrhistogram::Histogram<u64>; 4],
                       sent: u64,
                       delivered: u64,
                       bytes: u64,
                       secs: f64| {
            let per_s = |n: u64| if secs > 0.0 { n as f64 / secs } else { 0.0 };
            TrafficFigures {
                sent,
                delivered,
                delivered_bytes: bytes,
                sent_per_s: per_s(sent),
                delivered_per_s: per_s(delivered),
                delivered_bytes_per_s: per_s(bytes),
                ack_latency_us: HistogramReport::of(&h[Metric::Ack as usize]),
                ack_corrected_us: HistogramReport::of(&h[Metric::AckCorrected as usize]),
                e2e_corrected_us: HistogramReport::of(&h[Metric::E2eCorrected as usize]),
                e2e_uncorrected_us: HistogramReport::of(&h[Metric::E2eUncorrected as usize]),
            }
        };
        TrafficReport {
            window_s,
            steady_window_s,
            steady: figures(
                &t.latency.steady,
                c.steady_sent,
                c.steady_delivered,
                c.steady_delivered_bytes,
                steady_window_s,
            ),
            whole: figures(
                &t.latency.whole,
                c.sent,
                c.delivered,
                c.delivered_bytes,
                window_s,
            ),
            sequence: t.sequence,
            loss: LossReport {
                never_sent: c.never_sent,
                sent_not_acked: t.sent_not_acked,
                not_delivered: t.sequence.lost,
                acked_not_delivered_min: t.sequence.lost.saturating_sub(t.sent_not_acked),
                retransmitted: c.retransmitted,
            },
        }
    }
}

/// thingswarm's own CPU and memory.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ClientUsage {
    /// User + system CPU seconds of the whole process (identity loading included).
    pub cpu_s: f64,
    /// CPU milliseconds per successful connect (the whole process, so with traffic this
    /// includes the messages too).
    pub cpu_ms_per_connect: f64,
    /// CPU microseconds per message handled (sent + delivered), when there was traffic.
    pub cpu_us_per_message: f64,
    /// Peak resident memory, bytes.
    pub max_rss_bytes: u64,
    /// True when the embedded broker ran in this process: its CPU and memory are included.
    pub includes_embedded_broker: bool,
}

/// The definitions stated in every report (DESIGN.md section 5).
pub fn definitions() -> BTreeMap<String, String> {
    [
        ("connect_latency_us", "TCP connect start -> CONNACK received, per successful device, microseconds. Includes the TLS handshake; rumqttc does not expose the TCP/TLS/CONNACK boundaries, so phases are not split."),
        ("connects", "sessions that received a successful CONNACK"),
        ("failed", "connect attempts that ended in an error, a refusal or the group's connect timeout"),
        ("dropped", "established sessions lost before the run ended them"),
        ("closed", "sessions the run ended with DISCONNECT"),
        ("cancelled", "devices not connected because the run was stopped first"),
        ("ramp_s", "first connect attempt -> every device connected, failed or cancelled"),
        ("traffic.rate", "publish rates in scenarios are per device: a group of N devices at r/s offers N*r messages per second; each device follows its own open-model schedule (constant or Poisson), starting at a random phase"),
        ("traffic.window_s", "messages are scheduled from the end of the connect ramp for the scenario's duration; devices then wait (bounded) for acknowledgements and deliveries still in flight"),
        ("traffic.steady", "headline figures: messages whose intended send time lies in the window minus its first and last tenth (at most 5 s each); `whole` includes them"),
        ("traffic.sent", "PUBLISH packets written to the connection"),
        ("traffic.delivered", "messages received by subscribers (each copy counts); a broker may acknowledge and then drop, so this, not `sent`, is the throughput"),
        ("traffic.ack_latency_us", "UNCORRECTED: PUBLISH written -> PUBACK (QoS 1) or PUBCOMP (QoS 2), matched by packet id; misses time a message waited before it could be written"),
        ("traffic.ack_corrected_us", "CORRECTED: intended send time (schedule) -> PUBACK/PUBCOMP: includes time a message waited behind a stalled or slow connection (no coordinated omission)"),
        ("traffic.loss", "never_sent: intended send time passed while the device was disconnected (not back-filled); sent_not_acked: QoS 1/2 written, no PUBACK/PUBCOMP by the end; not_delivered: written, not received by an expecting subscriber (sequence.lost); acked_not_delivered_min: not_delivered - sent_not_acked, a lower bound; retransmitted: QoS 1/2 re-sent after a reconnect"),
        ("reconnect", "disconnects: established sessions lost; reconnect_attempts: tries after a loss, each after an exponential backoff with full jitter; reconnects: losses that came back; time_to_recover_us: loss -> CONNACK of the reconnect, per group"),
        ("traffic.e2e_corrected_us", "CORRECTED: intended send time (schedule) -> received by a subscriber: includes time a message waited behind slow sends (no coordinated omission); same process, one monotonic clock"),
        ("traffic.e2e_uncorrected_us", "UNCORRECTED: actual send time (handed to the MQTT client) -> received by a subscriber"),
        ("traffic.sequence", "per publisher, from sequence numbers at each subscriber whose filter matches the publisher's topic: lost = sent - distinct received; duplicates and reordering as seen"),
        ("slos.error_rate", "(failed connects + refused publishes + dropped sessions) / (connect attempts + publishes sent)"),
        ("slos.loss", "lost / (lost + distinct received) at subscribers, whole window"),
        ("slos.rates", "sent_rate and delivered_rate: steady window; acked_rate: acknowledged messages over the whole traffic window"),
        ("lifecycle.churn", "a churning session lives a drawn lifetime from CONNACK, finishes its in-flight messages (at most 1 s), ends (clean: DISCONNECT; abrupt: connection dropped without DISCONNECT), stays offline a drawn time and connects again; measured_connects_per_s: churn reconnects over the hold phase; connect_latency_us: churn reconnects only (the top-level connect_latency_us is the initial connects); offline time is not loss (nothing is owed for it)"),
        ("lifecycle.storms", "a drop-all ends every connected session of the group at once without DISCONNECT; back_s: seconds from the drop until 50/90/99/100% of the dropped sessions had a CONNACK again (null: never); attempts, failed_attempts and refusals (CONNACK codes) count the reconnects that followed"),
        ("lifecycle.wills", "expected: abrupt ends (churn or drop-all) of will-carrying devices times the watching subscribers; received: will payloads delivered to them; unexpected: received beyond expected"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

impl Report {
    /// Writes `report.json` and `report.html` into `dir` (created if missing).
    pub fn write(&self, dir: &Path) -> std::io::Result<()> {
        std::fs::create_dir_all(dir)?;
        let json = serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?;
        std::fs::write(dir.join("report.json"), json)?;
        std::fs::write(dir.join("report.html"), html::render(self))
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
        if let Some(sh) = &self.shard {
            let _ = writeln!(
                s,
                "  shard      {}/{} (0-based): devices k with k mod {} = {} of each group",
                sh.index, sh.count, sh.count, sh.index
            );
        }
        if let Some(m) = &self.merged {
            let missing = if m.missing.is_empty() {
                String::new()
            } else {
                format!(" — PARTIAL: shards {:?} missing", m.missing)
            };
            let _ = writeln!(
                s,
                "  merged     {} of {} shards{missing}",
                m.shards.len(),
                m.count
            );
        }
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
        for g in &self.groups {
            let tls = match (&g.tls, &g.tls_probe_error) {
                (Some(n), _) => format!(
                    "{n} ({}), probe handshake {:.1} ms{}",
                    n.kx_group.as_deref().unwrap_or("no key exchange"),
                    n.handshake_ms,
                    n.client_cpu_ms
                        .map_or(String::new(), |c| format!(", client CPU {c:.2} ms"))
                ),
                (None, Some(e)) => format!("probe failed: {e}"),
                (None, None) => continue,
            };
            let _ = writeln!(s, "  tls        {}: {tls}", g.name);
        }
        for g in &self.groups {
            if let Some(p) = &g.protocol_options {
                let _ = write!(s, "{}", crate::fleet::protocol::summary(&g.name, p));
            }
        }
        if let Some(t) = &self.traffic {
            let w = &t.steady;
            let _ = writeln!(
                s,
                "  traffic    steady {:.1} s of {:.1} s: sent {} ({:.0}/s), delivered {} ({:.0}/s, {:.1} KiB/s); lost {}  duplicates {}  reordered {}",
                t.steady_window_s,
                t.window_s,
                w.sent,
                w.sent_per_s,
                w.delivered,
                w.delivered_per_s,
                w.delivered_bytes_per_s / 1024.0,
                t.sequence.lost,
                t.sequence.duplicates,
                t.sequence.reordered
            );
            let line = |name: &str, h: &HistogramReport, what: &str| {
                let p = &h.percentiles;
                format!(
                    "  {name:<10} p50 {}  p90 {}  p99 {}  p99.9 {}  max {}   ({what}, {} samples)\n",
                    fmt_us(p.p50),
                    fmt_us(p.p90),
                    fmt_us(p.p99),
                    fmt_us(p.p99_9),
                    fmt_us(p.max),
                    p.count
                )
            };
            if w.ack_latency_us.percentiles.count > 0 {
                s.push_str(&line(
                    "ack",
                    &w.ack_corrected_us,
                    "corrected: intended send -> PUBACK/PUBCOMP",
                ));
                s.push_str(&line(
                    "ack raw",
                    &w.ack_latency_us,
                    "uncorrected: written -> PUBACK/PUBCOMP",
                ));
            }
            if w.e2e_corrected_us.percentiles.count > 0 {
                s.push_str(&line(
                    "e2e",
                    &w.e2e_corrected_us,
                    "corrected: intended send -> received",
                ));
                s.push_str(&line(
                    "e2e raw",
                    &w.e2e_uncorrected_us,
                    "uncorrected: actual send -> received",
                ));
            }
        }
        if !self.events.is_empty() {
            let list: Vec<String> = self
                .events
                .iter()
                .map(|e| match e.action {
                    ControlAction::Rate => format!("{:.1}s rate {}%", e.t, e.rate_percent),
                    ControlAction::Pause => format!("{:.1}s pause", e.t),
                    ControlAction::Resume => format!("{:.1}s resume", e.t),
                })
                .collect();
            let _ = writeln!(
                s,
                "  events     {} (traffic changed during the run)",
                list.join(", ")
            );
        }
        if let Some(t) = &self.traffic {
            let l = &t.loss;
            let _ = writeln!(
                s,
                "  loss       never sent {} (disconnected)  sent, not acked {}  not delivered {} (acked, not delivered >= {})  retransmitted {}",
                l.never_sent, l.sent_not_acked, l.not_delivered, l.acked_not_delivered_min, l.retransmitted
            );
        }
        if d.disconnects > 0 {
            let _ = writeln!(
                s,
                "  reconnect  disconnects {}  attempts {}  back {}",
                d.disconnects, d.reconnect_attempts, d.reconnects
            );
            for g in self.groups.iter().filter(|g| g.counts.disconnects > 0) {
                let r = &g.time_to_recover_us;
                let _ = writeln!(
                    s,
                    "    {:<12} time to recover p50 {}  max {}  ({} of {} back)",
                    g.name,
                    fmt_us(r.p50),
                    fmt_us(r.max),
                    g.counts.reconnects,
                    g.counts.disconnects
                );
            }
        }
        for f in &self.faults {
            let _ = writeln!(
                s,
                "  fault      t={:.3} s  {}{}",
                f.t,
                f.fault,
                f.connections
                    .map(|n| format!(" ({n} connections)"))
                    .unwrap_or_default()
            );
        }
        if let Some(l) = &self.lifecycle {
            s.push_str(&l.summary());
        }
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
        let per = if self.client.cpu_us_per_message > 0.0 {
            format!(
                "{:.1} us per message sent or delivered",
                self.client.cpu_us_per_message
            )
        } else {
            format!("{:.2} ms per connect", self.client.cpu_ms_per_connect)
        };
        let _ = writeln!(
            s,
            "  client     CPU {:.2} s ({per}), peak RSS {:.1} MiB{}",
            self.client.cpu_s,
            self.client.max_rss_bytes as f64 / (1024.0 * 1024.0),
            if self.client.includes_embedded_broker {
                " (embedded broker included)"
            } else {
                ""
            }
        );
        if let Some(aws) = &self.aws {
            s.push_str(&aws.summary());
        }
        s.push_str(&crate::slo::summary_lines(&self.slos));
        s
    }
}
