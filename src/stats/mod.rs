//! Measurement: what device tasks record, and the aggregator that turns it into snapshots.
//!
//! Device tasks write into a shared [`Recorder`]: atomic counters per group, latency
//! histograms split into shards (a device records into shard `index % shards`, so locks are
//! uncontended and taken once per connect, never per message), and an error table touched
//! only on failures. The [`Aggregator`] ticks (4 Hz), swaps the shards out, merges them into
//! cumulative histograms and publishes an immutable [`Snapshot`] on a watch channel. Readers
//! (progress line, TUI, report) only ever see snapshots: device tasks never touch the UI.

pub mod histogram;
pub mod rusage;
pub mod sequence;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;

pub use histogram::Percentiles;

/// Where a run is; set by the runner, shown by readers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// Devices are being connected at the planned pace.
    #[default]
    Ramp,
    /// Every device has been attempted; the fleet holds its connections.
    Hold,
    /// Devices are disconnecting.
    Drain,
    /// Finished.
    Done,
}

/// Counters of one device group. Gauges (`connecting`, `connected`) go up and down; the
/// others only grow.
#[derive(Debug, Default)]
pub struct GroupCounters {
    /// Connect attempts started.
    pub attempted: AtomicU64,
    /// Attempts in flight (TCP/TLS/CONNECT sent, no CONNACK yet).
    pub connecting: AtomicU64,
    /// Sessions currently up.
    pub connected: AtomicU64,
    /// Sessions that ever reached CONNACK success.
    pub connects: AtomicU64,
    /// Attempts that failed (error, refusal or timeout).
    pub failed: AtomicU64,
    /// Established sessions lost before the run ended them.
    pub dropped: AtomicU64,
    /// Sessions closed cleanly by the run (DISCONNECT sent).
    pub closed: AtomicU64,
    /// Attempts abandoned because the run was stopped first.
    pub cancelled: AtomicU64,
}

/// A point-in-time copy of [`GroupCounters`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    /// See [`GroupCounters::attempted`].
    pub attempted: u64,
    /// See [`GroupCounters::connecting`].
    pub connecting: u64,
    /// See [`GroupCounters::connected`].
    pub connected: u64,
    /// See [`GroupCounters::connects`].
    pub connects: u64,
    /// See [`GroupCounters::failed`].
    pub failed: u64,
    /// See [`GroupCounters::dropped`].
    pub dropped: u64,
    /// See [`GroupCounters::closed`].
    pub closed: u64,
    /// See [`GroupCounters::cancelled`].
    pub cancelled: u64,
}

impl GroupCounters {
    fn read(&self) -> Counts {
        Counts {
            attempted: self.attempted.load(Relaxed),
            connecting: self.connecting.load(Relaxed),
            connected: self.connected.load(Relaxed),
            connects: self.connects.load(Relaxed),
            failed: self.failed.load(Relaxed),
            dropped: self.dropped.load(Relaxed),
            closed: self.closed.load(Relaxed),
            cancelled: self.cancelled.load(Relaxed),
        }
    }
}

impl std::ops::AddAssign for Counts {
    fn add_assign(&mut self, o: Counts) {
        self.attempted += o.attempted;
        self.connecting += o.connecting;
        self.connected += o.connected;
        self.connects += o.connects;
        self.failed += o.failed;
        self.dropped += o.dropped;
        self.closed += o.closed;
        self.cancelled += o.cancelled;
    }
}

/// One class of error with how often it happened and the latest example.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ErrorRow {
    /// Stable class name, e.g. `tls: unknown CA` (DESIGN.md section 5).
    pub class: String,
    /// Occurrences.
    pub count: u64,
    /// The most recent message of this class, with the client ID.
    pub example: String,
}

/// Shared by every device task of a run.
pub struct Recorder {
    groups: Vec<GroupCounters>,
    connect_shards: Box<[Mutex<Histogram<u64>>]>,
    errors: Mutex<BTreeMap<&'static str, (u64, String)>>,
    phase: AtomicU8,
    started: Instant,
}

impl Recorder {
    /// A recorder for `groups` device groups.
    pub fn new(groups: usize) -> Recorder {
        let shards = std::thread::available_parallelism().map_or(2, |n| n.get()) * 4;
        Recorder {
            groups: (0..groups).map(|_| GroupCounters::default()).collect(),
            connect_shards: (0..shards)
                .map(|_| Mutex::new(histogram::latency()))
                .collect(),
            errors: Mutex::new(BTreeMap::new()),
            phase: AtomicU8::new(Phase::Ramp as u8),
            started: Instant::now(),
        }
    }

    /// Counters of group `g`.
    pub fn group(&self, g: usize) -> &GroupCounters {
        &self.groups[g]
    }

    /// Records a successful connect (TCP connect start -> CONNACK) of device `index`.
    pub fn connect_latency(&self, index: usize, latency: Duration) {
        let shard = &self.connect_shards[index % self.connect_shards.len()];
        shard
            .lock()
            .expect("histogram lock")
            .saturating_record(latency.as_micros() as u64);
    }

    /// Records an error of `class`; `example` is kept if it is the latest.
    pub fn error(&self, class: &'static str, example: String) {
        let mut errors = self.errors.lock().expect("error table lock");
        let entry = errors.entry(class).or_insert((0, String::new()));
        entry.0 += 1;
        entry.1 = example;
    }

    /// Moves the run to `phase`.
    pub fn set_phase(&self, phase: Phase) {
        self.phase.store(phase as u8, Relaxed);
    }

    fn phase(&self) -> Phase {
        match self.phase.load(Relaxed) {
            0 => Phase::Ramp,
            1 => Phase::Hold,
            2 => Phase::Drain,
            _ => Phase::Done,
        }
    }

    /// Sum of every group's counters.
    pub fn totals(&self) -> Counts {
        let mut total = Counts::default();
        for g in &self.groups {
            total += g.read();
        }
        total
    }
}

/// One sample of the run's gauges, kept once per second for the report.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct TimelinePoint {
    /// Seconds since the run started.
    pub t: f64,
    /// Sessions up.
    pub connected: u64,
    /// Attempts in flight.
    pub connecting: u64,
    /// Failed attempts so far.
    pub failed: u64,
    /// Successful connects per second over the last second.
    pub connects_per_s: f64,
}

/// What readers see: an immutable copy of the run at one tick.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Snapshot {
    /// Time since the run started.
    pub elapsed: Duration,
    /// Phase of the run.
    pub phase: Phase,
    /// Devices in the plan.
    pub planned: u64,
    /// Totals over groups.
    pub totals: Counts,
    /// Per group, in plan order.
    pub groups: Vec<Counts>,
    /// Successful connects per second since the previous tick.
    pub connects_per_s: f64,
    /// Connect latency since the previous tick.
    pub connect_interval: Percentiles,
    /// Connect latency since the start.
    pub connect_total: Percentiles,
    /// Errors by class.
    pub errors: Vec<ErrorRow>,
}

/// Turns the recorder's shards into snapshots on a fixed tick.
pub struct Aggregator {
    recorder: Arc<Recorder>,
    planned: u64,
    cumulative: Histogram<u64>,
    interval: Histogram<u64>,
    last_tick: Instant,
    last_connects: u64,
    last_sample: (f64, u64),
    timeline: Vec<TimelinePoint>,
}

impl Aggregator {
    /// An aggregator over `recorder` for a plan of `planned` devices.
    pub fn new(recorder: Arc<Recorder>, planned: u64) -> Aggregator {
        let now = recorder.started;
        Aggregator {
            recorder,
            planned,
            cumulative: histogram::latency(),
            interval: histogram::latency(),
            last_tick: now,
            last_connects: 0,
            last_sample: (0.0, 0),
            timeline: Vec::new(),
        }
    }

    /// Collects everything recorded since the last tick into a new snapshot.
    pub fn tick(&mut self) -> Snapshot {
        self.interval.reset();
        for shard in self.recorder.connect_shards.iter() {
            let mut h = shard.lock().expect("histogram lock");
            self.interval.add(&*h).expect("same bounds");
            h.reset();
        }
        self.cumulative.add(&self.interval).expect("same bounds");

        let now = Instant::now();
        let elapsed = now - self.recorder.started;
        let groups: Vec<Counts> = self
            .recorder
            .groups
            .iter()
            .map(GroupCounters::read)
            .collect();
        let mut totals = Counts::default();
        for g in &groups {
            totals += *g;
        }
        let dt = (now - self.last_tick).as_secs_f64().max(1e-3);
        let connects_per_s = (totals.connects - self.last_connects) as f64 / dt;
        self.last_tick = now;
        self.last_connects = totals.connects;

        let t = elapsed.as_secs_f64();
        if t - self.last_sample.0 >= 1.0 || self.timeline.is_empty() {
            let per_s =
                (totals.connects - self.last_sample.1) as f64 / (t - self.last_sample.0).max(1e-3);
            self.timeline.push(TimelinePoint {
                t: (t * 1000.0).round() / 1000.0,
                connected: totals.connected,
                connecting: totals.connecting,
                failed: totals.failed,
                connects_per_s: per_s.round(),
            });
            self.last_sample = (t, totals.connects);
        }

        let errors = self
            .recorder
            .errors
            .lock()
            .expect("error table lock")
            .iter()
            .map(|(class, (count, example))| ErrorRow {
                class: class.to_string(),
                count: *count,
                example: example.clone(),
            })
            .collect();
        Snapshot {
            elapsed,
            phase: self.recorder.phase(),
            planned: self.planned,
            totals,
            groups,
            connects_per_s,
            connect_interval: Percentiles::of(&self.interval),
            connect_total: Percentiles::of(&self.cumulative),
            errors,
        }
    }

    /// Connect latency since the start (for the report's serialised histogram).
    pub fn connect_histogram(&self) -> &Histogram<u64> {
        &self.cumulative
    }

    /// The once-per-second samples so far.
    pub fn timeline(&self) -> &[TimelinePoint] {
        &self.timeline
    }
}
