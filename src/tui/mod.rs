//! The live terminal UI of `thingswarm run`: a ratatui dashboard over the crossterm backend.
//!
//! ```text
//! fleet aggregator --watch<Arc<Snapshot>>--> event loop (own thread, ~5 fps) --View--> render
//!                                              ^ keys (crossterm EventStream)
//! ```
//!
//! Three parts, each small enough to test alone:
//! - [`render()`](fn@render): a pure function of a [`View`] (no clock, no I/O), so snapshot tests drive it
//!   with ratatui's `TestBackend`.
//! - [`Ui`] (event loop): owns the terminal on a dedicated thread, samples the latest snapshot
//!   at a fixed frame rate, turns keys into actions (stop the run, help, focus). Device tasks
//!   never touch it: they only write counters the aggregator reads.
//! - [`terminal`]: the guard that leaves raw mode and the alternate screen on every path
//!   (normal end, error, Ctrl-C, panic).
//!
//! Panels: connections, latency (percentiles and, with `d`, the distribution), throughput
//! (a chart of msg/s over run time), errors. `p` pauses the traffic and `+`/`-` re-rate it
//! through [`crate::fleet::control`]; the report records each change with its time.

mod app;
pub mod render;
pub mod terminal;

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

pub use app::Ui;
pub use render::render;

use crate::fleet::control::Control;
use crate::scenario::Plan;
use crate::stats::{Phase, Snapshot};

/// Frames per second of the dashboard: enough to watch a ramp, cheap enough to be invisible
/// next to the fleet (the aggregator ticks at 4 Hz, so faster frames would show nothing new).
pub const FPS: u32 = 5;

/// Samples kept for the sparklines: one per aggregator tick (250 ms), so one minute.
pub const HISTORY: usize = 240;

/// What the header says about the run; fixed for the whole run, taken from the plan.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Header {
    /// Scenario name.
    pub scenario: String,
    /// Broker URL (`mqtts://host:port`).
    pub target: String,
    /// MQTT versions spoken by the groups, e.g. `MQTT 5` or `MQTT 3.1.1+5`.
    pub protocols: String,
    /// Planned hold after the ramp.
    pub hold: Duration,
    /// Planned ramp duration at the scenario's pace; `None` when a group connects as fast as
    /// it can (the ramp then depends on the broker and cannot be predicted).
    pub expected_ramp: Option<Duration>,
    /// Negotiated TLS version and cipher suite, from the probe connection, when known.
    pub tls: Option<String>,
}

impl Header {
    /// The header of a run of `plan` against the broker at `target`.
    pub fn of(plan: &Plan, target: &str) -> Header {
        let mut protocols: Vec<String> =
            plan.groups.iter().map(|g| g.protocol.to_string()).collect();
        protocols.sort();
        protocols.dedup();
        let unpaced = plan.groups.iter().any(|g| g.connect.rate.is_none());
        Header {
            scenario: plan.name.clone(),
            target: target.to_string(),
            protocols: format!("MQTT {}", protocols.join("+")),
            hold: plan.duration,
            expected_ramp: (!unpaced).then(|| plan.expected_ramp()),
            tls: None,
        }
    }
}

/// The panels Tab moves the focus between. The focused panel is highlighted and is the last
/// one hidden when the terminal is too small for all of them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Panel {
    /// Connection ramp: counts, gauge, sparklines.
    #[default]
    Connections,
    /// Latency percentiles or distribution.
    Latency,
    /// Message rates over time.
    Throughput,
    /// Errors by class.
    Errors,
}

/// Which latency the latency panel shows (`m` cycles).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LatencyMetric {
    /// TCP connect start -> CONNACK.
    #[default]
    Connect,
    /// PUBLISH written -> PUBACK / PUBCOMP.
    Ack,
    /// Intended send time -> received (corrected).
    E2e,
    /// Actual send time -> received (uncorrected).
    E2eRaw,
}

impl LatencyMetric {
    /// The metric `m` moves to.
    pub fn next(self) -> LatencyMetric {
        match self {
            LatencyMetric::Connect => LatencyMetric::Ack,
            LatencyMetric::Ack => LatencyMetric::E2e,
            LatencyMetric::E2e => LatencyMetric::E2eRaw,
            LatencyMetric::E2eRaw => LatencyMetric::Connect,
        }
    }

    /// Panel title: what is measured, from where to where.
    pub fn title(self) -> &'static str {
        match self {
            LatencyMetric::Connect => "connect latency, TCP start -> CONNACK",
            LatencyMetric::Ack => "ack latency, PUBLISH written -> PUBACK/PUBCOMP",
            LatencyMetric::E2e => "end-to-end latency, intended send -> received",
            LatencyMetric::E2eRaw => "end-to-end latency (uncorrected), actual send -> received",
        }
    }

    /// The cumulative distribution of this metric in `s`.
    pub fn distribution(self, s: &crate::stats::Snapshot) -> crate::stats::Distribution {
        let d = &s.distribution;
        match self {
            LatencyMetric::Connect => d.connect,
            LatencyMetric::Ack => d.ack,
            LatencyMetric::E2e => d.e2e_corrected,
            LatencyMetric::E2eRaw => d.e2e_uncorrected,
        }
    }

    /// (last tick, cumulative) percentiles of this metric in `s`.
    pub fn of(
        self,
        s: &crate::stats::Snapshot,
    ) -> (crate::stats::Percentiles, crate::stats::Percentiles) {
        match self {
            LatencyMetric::Connect => (s.connect_interval, s.connect_total),
            LatencyMetric::Ack => (s.latency_interval.ack, s.latency_total.ack),
            LatencyMetric::E2e => (
                s.latency_interval.e2e_corrected,
                s.latency_total.e2e_corrected,
            ),
            LatencyMetric::E2eRaw => (
                s.latency_interval.e2e_uncorrected,
                s.latency_total.e2e_uncorrected,
            ),
        }
    }
}

impl Panel {
    /// Every panel, in screen order (top to bottom).
    pub const ALL: [Panel; 4] = [
        Panel::Connections,
        Panel::Latency,
        Panel::Throughput,
        Panel::Errors,
    ];

    /// The panel Tab moves to.
    pub fn next(self) -> Panel {
        match self {
            Panel::Connections => Panel::Latency,
            Panel::Latency => Panel::Throughput,
            Panel::Throughput => Panel::Errors,
            Panel::Errors => Panel::Connections,
        }
    }

    /// Name shown in titles and in the "hidden" hint.
    pub fn name(self) -> &'static str {
        match self {
            Panel::Connections => "connections",
            Panel::Latency => "latency",
            Panel::Throughput => "throughput",
            Panel::Errors => "errors",
        }
    }
}

/// A short history of the run's gauges for the sparklines, kept by the UI loop (snapshots
/// carry only the present).
#[derive(Clone, Debug, PartialEq)]
pub struct History {
    cap: usize,
    last: Option<Duration>,
    /// Successful connects per second, one sample per snapshot, oldest first.
    pub connects_per_s: VecDeque<u64>,
    /// Sessions up, one sample per snapshot, oldest first.
    pub connected: VecDeque<u64>,
    /// Message rates per snapshot, oldest first, for the throughput chart.
    pub rates: VecDeque<RateSample>,
}

/// Message rates at one snapshot.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct RateSample {
    /// Run time of the snapshot, in seconds (the chart's x axis).
    pub t: f64,
    /// PUBLISH written per second.
    pub sent: f64,
    /// Acknowledged per second.
    pub acked: f64,
    /// Received by subscribers per second.
    pub delivered: f64,
}

impl History {
    /// An empty history keeping the last `cap` samples.
    pub fn new(cap: usize) -> History {
        History {
            cap: cap.max(1),
            last: None,
            connects_per_s: VecDeque::with_capacity(cap),
            connected: VecDeque::with_capacity(cap),
            rates: VecDeque::with_capacity(cap),
        }
    }

    /// Adds `s` unless it is the snapshot recorded last (frames outpace the aggregator).
    pub fn record(&mut self, s: &Snapshot) {
        if self.last == Some(s.elapsed) {
            return;
        }
        self.last = Some(s.elapsed);
        if self.connected.len() == self.cap {
            self.connects_per_s.pop_front();
            self.connected.pop_front();
            self.rates.pop_front();
        }
        self.connects_per_s
            .push_back(s.connects_per_s.round() as u64);
        self.connected.push_back(s.totals.connected);
        self.rates.push_back(RateSample {
            t: s.elapsed.as_secs_f64(),
            sent: s.rates.sent_per_s,
            acked: s.rates.acked_per_s,
            delivered: s.rates.delivered_per_s,
        });
    }
}

impl Default for History {
    fn default() -> History {
        History::new(HISTORY)
    }
}

/// Everything one frame shows: [`render()`](fn@render) is a pure function of it.
#[derive(Clone, Debug, Default)]
pub struct View {
    /// The latest snapshot from the aggregator.
    pub snapshot: Arc<Snapshot>,
    /// Fixed facts about the run.
    pub header: Header,
    /// Sparkline samples.
    pub history: History,
    /// Run time at which the hold phase was first seen (for the time remaining).
    pub hold_since: Option<Duration>,
    /// The highlighted panel.
    pub focus: Panel,
    /// The latency the latency panel shows.
    pub metric: LatencyMetric,
    /// Whether the latency panel shows the distribution (`d`) rather than percentile bars.
    pub distribution: bool,
    /// The traffic control in force (pause, rate), as last set by a key.
    pub control: Control,
    /// Whether the key help is shown.
    pub help: bool,
    /// A message for the status line (answers to keys).
    pub status: Option<String>,
    /// The end-of-run summary; when set the run is over and the screen shows it.
    pub finished: Option<String>,
}

impl View {
    /// A view of a run that has not produced a snapshot yet.
    pub fn new(header: Header) -> View {
        View {
            header,
            ..View::default()
        }
    }

    /// Moves the view to snapshot `s`: history and phase bookkeeping.
    pub fn update(&mut self, s: Arc<Snapshot>) {
        self.history.record(&s);
        if self.hold_since.is_none() && s.phase != Phase::Ramp {
            self.hold_since = Some(s.elapsed);
        }
        self.snapshot = s;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn at(ms: u64, connected: u64) -> Snapshot {
        let mut s = Snapshot {
            elapsed: Duration::from_millis(ms),
            connects_per_s: 10.4,
            ..Snapshot::default()
        };
        s.totals.connected = connected;
        s
    }

    #[test]
    fn history_keeps_one_sample_per_snapshot_up_to_its_cap() {
        let mut h = History::new(3);
        h.record(&at(250, 1));
        h.record(&at(250, 1)); // the same snapshot seen by two frames
        assert_eq!(h.connected, [1]);
        for (i, ms) in [500, 750, 1000].into_iter().enumerate() {
            h.record(&at(ms, 2 + i as u64));
        }
        assert_eq!(h.connected, [2, 3, 4]);
        assert_eq!(h.connects_per_s, [10, 10, 10]);
    }

    #[test]
    fn hold_start_is_the_first_snapshot_past_the_ramp() {
        let mut view = View::default();
        view.update(Arc::new(at(250, 1)));
        assert_eq!(view.hold_since, None);
        let mut hold = at(500, 2);
        hold.phase = Phase::Hold;
        view.update(Arc::new(hold.clone()));
        hold.elapsed = Duration::from_millis(750);
        view.update(Arc::new(hold));
        assert_eq!(view.hold_since, Some(Duration::from_millis(500)));
    }

    #[test]
    fn header_from_plan() {
        let plan = Plan::from_str(
            r#"
name = "mixed"
duration = "5s"
[[group]]
name = "a"
devices = 100
client_id = "a-{index}"
connect = { rate = "50/s" }
protocol = "5"
[[group]]
name = "b"
devices = 10
client_id = "b-{index}"
connect = { rate = "10/s" }
"#,
            Path::new("mixed.toml"),
            &Default::default(),
        )
        .unwrap();
        let h = Header::of(&plan, "mqtts://127.0.0.1:8883");
        assert_eq!(h.protocols, "MQTT 3.1.1+5");
        assert_eq!(h.expected_ramp, Some(Duration::from_secs(2)));
        assert_eq!(h.hold, Duration::from_secs(5));
    }
}
