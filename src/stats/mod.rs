//! Measurement: what device tasks record, and the aggregator that turns it into snapshots.
//!
//! Device tasks write into a shared [`Recorder`]: atomic counters per group, latency
//! histograms split into shards (a device records into shard `index % shards`, so locks are
//! uncontended and taken once per connect, never per message), and an error table touched
//! only on failures. The [`Aggregator`] ticks (4 Hz), swaps the shards out, merges them into
//! cumulative histograms and publishes an immutable [`Snapshot`] on a watch channel. Readers
//! (progress line, TUI, report) only ever see snapshots: device tasks never touch the UI.

pub mod histogram;
pub mod intervals;
pub mod rusage;
pub mod sequence;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

pub use histogram::{Distribution, Percentiles};

/// Where a run is; set by the runner, shown by readers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
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
    /// PUBLISH packets written to the connection.
    pub sent: AtomicU64,
    /// Payload bytes of `sent`.
    pub sent_bytes: AtomicU64,
    /// PUBACK (QoS 1) / PUBCOMP (QoS 2) received with success.
    pub acked: AtomicU64,
    /// Acknowledgements carrying a refusal (MQTT 5 reason code).
    pub refused: AtomicU64,
    /// Messages received by this group's subscribers (every copy counts).
    pub delivered: AtomicU64,
    /// Payload bytes of `delivered`.
    pub delivered_bytes: AtomicU64,
    /// `sent` whose intended time lies in the steady-state window.
    pub steady_sent: AtomicU64,
    /// `delivered` whose intended send time lies in the steady-state window.
    pub steady_delivered: AtomicU64,
    /// Payload bytes of `steady_delivered`.
    pub steady_delivered_bytes: AtomicU64,
    /// Established sessions lost (each loss counts, also those reconnected afterwards).
    pub disconnects: AtomicU64,
    /// Reconnect attempts started after a loss.
    pub reconnect_attempts: AtomicU64,
    /// Lost sessions that came back (CONNACK after a loss).
    pub reconnects: AtomicU64,
    /// Messages whose intended send time passed while the device was disconnected (never sent,
    /// not back-filled).
    pub never_sent: AtomicU64,
    /// PUBLISH packets written again after a reconnect (QoS 1/2 retransmits of unacknowledged
    /// messages; not counted in `sent`).
    pub retransmitted: AtomicU64,
    /// Written QoS 1/2 messages that can no longer be acknowledged: their session was lost and
    /// not resumed (part of `unacked`; the end-of-run settle does not wait for them).
    pub abandoned: AtomicU64,
}

/// A point-in-time copy of [`GroupCounters`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
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
    /// See [`GroupCounters::sent`].
    pub sent: u64,
    /// See [`GroupCounters::sent_bytes`].
    pub sent_bytes: u64,
    /// See [`GroupCounters::acked`].
    pub acked: u64,
    /// See [`GroupCounters::refused`].
    pub refused: u64,
    /// See [`GroupCounters::delivered`].
    pub delivered: u64,
    /// See [`GroupCounters::delivered_bytes`].
    pub delivered_bytes: u64,
    /// See [`GroupCounters::steady_sent`].
    pub steady_sent: u64,
    /// See [`GroupCounters::steady_delivered`].
    pub steady_delivered: u64,
    /// See [`GroupCounters::steady_delivered_bytes`].
    pub steady_delivered_bytes: u64,
    /// See [`GroupCounters::disconnects`].
    pub disconnects: u64,
    /// See [`GroupCounters::reconnect_attempts`].
    pub reconnect_attempts: u64,
    /// See [`GroupCounters::reconnects`].
    pub reconnects: u64,
    /// See [`GroupCounters::never_sent`].
    pub never_sent: u64,
    /// See [`GroupCounters::retransmitted`].
    pub retransmitted: u64,
    /// See [`GroupCounters::abandoned`].
    pub abandoned: u64,
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
            sent: self.sent.load(Relaxed),
            sent_bytes: self.sent_bytes.load(Relaxed),
            acked: self.acked.load(Relaxed),
            refused: self.refused.load(Relaxed),
            delivered: self.delivered.load(Relaxed),
            delivered_bytes: self.delivered_bytes.load(Relaxed),
            steady_sent: self.steady_sent.load(Relaxed),
            steady_delivered: self.steady_delivered.load(Relaxed),
            steady_delivered_bytes: self.steady_delivered_bytes.load(Relaxed),
            disconnects: self.disconnects.load(Relaxed),
            reconnect_attempts: self.reconnect_attempts.load(Relaxed),
            reconnects: self.reconnects.load(Relaxed),
            never_sent: self.never_sent.load(Relaxed),
            retransmitted: self.retransmitted.load(Relaxed),
            abandoned: self.abandoned.load(Relaxed),
        }
    }
}

impl Counts {
    /// Written messages with neither an acknowledgement nor a refusal yet (meaningful for QoS
    /// 1/2 publishers only: QoS 0 is never acknowledged).
    pub fn unacked(&self) -> u64 {
        self.sent.saturating_sub(self.acked + self.refused)
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
        self.sent += o.sent;
        self.sent_bytes += o.sent_bytes;
        self.acked += o.acked;
        self.refused += o.refused;
        self.delivered += o.delivered;
        self.delivered_bytes += o.delivered_bytes;
        self.steady_sent += o.steady_sent;
        self.steady_delivered += o.steady_delivered;
        self.steady_delivered_bytes += o.steady_delivered_bytes;
        self.disconnects += o.disconnects;
        self.reconnect_attempts += o.reconnect_attempts;
        self.reconnects += o.reconnects;
        self.never_sent += o.never_sent;
        self.retransmitted += o.retransmitted;
        self.abandoned += o.abandoned;
    }
}

/// One class of error with how often it happened and the latest example.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
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
    /// Per group: loss of a session -> CONNACK of the reconnect (locked once per reconnect).
    recovery: Box<[Mutex<Histogram<u64>>]>,
    traffic_shards: Box<[Mutex<TrafficHistograms>]>,
    publisher_sent: Box<[AtomicU64]>,
    subscribers: Mutex<Vec<SubscriberResult>>,
    errors: Mutex<BTreeMap<&'static str, (u64, String)>>,
    phase: AtomicU8,
    started: Instant,
}

impl Recorder {
    /// A recorder for `groups` device groups of `devices` devices in all.
    pub fn new(groups: usize, devices: usize) -> Recorder {
        let shards = std::thread::available_parallelism().map_or(2, |n| n.get()) * 4;
        Recorder {
            groups: (0..groups).map(|_| GroupCounters::default()).collect(),
            connect_shards: (0..shards)
                .map(|_| Mutex::new(histogram::latency()))
                .collect(),
            recovery: (0..groups)
                .map(|_| Mutex::new(histogram::latency()))
                .collect(),
            traffic_shards: (0..shards)
                .map(|_| Mutex::new(TrafficHistograms::new()))
                .collect(),
            publisher_sent: (0..devices).map(|_| AtomicU64::new(0)).collect(),
            subscribers: Mutex::new(Vec::new()),
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

    /// Records that a device of group `g` was back `took` after losing its session.
    pub fn recovered(&self, g: usize, took: Duration) {
        self.recovery[g]
            .lock()
            .expect("histogram lock")
            .saturating_record(took.as_micros() as u64);
    }

    /// Time-to-recover of group `g` so far (p50/max for the report).
    pub fn recovery(&self, g: usize) -> Percentiles {
        Percentiles::of(&self.recovery[g].lock().expect("histogram lock"))
    }

    /// Time-to-recover of group `g` so far, the whole histogram (for the report's encoding).
    pub fn recovery_histogram(&self, g: usize) -> Histogram<u64> {
        self.recovery[g].lock().expect("histogram lock").clone()
    }

    /// The run's time origin: payload headers carry nanoseconds since this instant.
    pub fn epoch(&self) -> Instant {
        self.started
    }

    /// Records how many messages the publisher with global index `device` wrote in all
    /// (sequence numbers `0..count`), when it stops.
    pub fn publisher_done(&self, device: usize, count: u64) {
        self.publisher_sent[device].store(count, Relaxed);
    }

    /// Messages the publisher with global index `device` wrote.
    pub fn publisher_sent(&self, device: usize) -> u64 {
        self.publisher_sent[device].load(Relaxed)
    }

    /// Hands over a subscriber's sequence tracker when it stops.
    pub fn subscriber_done(&self, result: SubscriberResult) {
        self.subscribers
            .lock()
            .expect("subscriber list lock")
            .push(result);
    }

    /// Every subscriber's tracker (at the end of the run).
    pub fn take_subscribers(&self) -> Vec<SubscriberResult> {
        std::mem::take(&mut *self.subscribers.lock().expect("subscriber list lock"))
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

    /// A copy of group `g`'s counters.
    pub fn group_counts(&self, g: usize) -> Counts {
        self.groups[g].read()
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

/// When devices publish: messages are scheduled from `start` until `end`; the headline
/// figures count only messages whose intended send time lies in `steady` (the window minus
/// its first and last tenth, at most 5 s each), so start-up and wind-down do not pollute them.
#[derive(Clone, Copy, Debug)]
pub struct TrafficWindow {
    /// First intended send time.
    pub start: Instant,
    /// No message is scheduled at or after this.
    pub end: Instant,
    /// Start of the steady-state window.
    pub steady_start: Instant,
    /// End of the steady-state window.
    pub steady_end: Instant,
}

impl TrafficWindow {
    /// A window of `length` from `start`, with the steady part as described above.
    pub fn new(start: Instant, length: Duration) -> TrafficWindow {
        let edge = (length / 10).min(Duration::from_secs(5));
        TrafficWindow {
            start,
            end: start + length,
            steady_start: start + edge,
            steady_end: start + length - edge,
        }
    }

    /// Whether a message intended at `at` counts in the headline figures.
    pub fn is_steady(&self, at: Instant) -> bool {
        at >= self.steady_start && at < self.steady_end
    }
}

/// A subscriber's view of the publishers it heard, handed over when it stops.
#[derive(Debug)]
pub struct SubscriberResult {
    /// Its group.
    pub group: usize,
    /// Per-publisher sequence tracking.
    pub tracker: sequence::SequenceTracker,
}

/// Message latency metrics (DESIGN.md section 5).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Metric {
    /// PUBLISH written -> PUBACK (QoS 1) / PUBCOMP (QoS 2).
    Ack = 0,
    /// Intended send time -> received at a subscriber (coordinated-omission corrected).
    E2eCorrected = 1,
    /// Actual send time -> received at a subscriber.
    E2eUncorrected = 2,
    /// Intended send time -> PUBACK / PUBCOMP (coordinated-omission corrected: a stalled
    /// connection delays the write, which [`Metric::Ack`] alone does not see).
    AckCorrected = 3,
}

/// Message-latency metrics ([`Metric`] variants).
pub const METRICS: usize = 4;

/// Per shard: for each metric, the whole traffic window and its steady part.
struct TrafficHistograms {
    whole: [Histogram<u64>; METRICS],
    steady: [Histogram<u64>; METRICS],
}

impl TrafficHistograms {
    fn new() -> Self {
        TrafficHistograms {
            whole: std::array::from_fn(|_| histogram::latency()),
            steady: std::array::from_fn(|_| histogram::latency()),
        }
    }
}

/// A device's latency samples, batched so that recording a message takes no lock: the batch
/// goes into the device's shard when full or a quarter second old. Its buffer is allocated
/// once per device, at its first sample (an idle session keeps none).
pub struct Samples {
    buf: Vec<(Metric, bool, u64)>,
    shard: usize,
    flushed: Instant,
}

impl Samples {
    const CAPACITY: usize = 64;

    /// An empty batch for device `index`.
    pub fn new(index: usize) -> Samples {
        Samples {
            buf: Vec::new(),
            shard: index,
            flushed: Instant::now(),
        }
    }

    /// Records `latency` of `metric`; `steady` when the message's intended time was in the
    /// steady-state window.
    pub fn record(
        &mut self,
        recorder: &Recorder,
        metric: Metric,
        steady: bool,
        latency: Duration,
        now: Instant,
    ) {
        if self.buf.capacity() == 0 {
            self.buf.reserve_exact(Self::CAPACITY);
        }
        self.buf.push((metric, steady, latency.as_micros() as u64));
        if self.buf.len() == Self::CAPACITY || now - self.flushed >= Duration::from_millis(250) {
            self.flush(recorder, now);
        }
    }

    /// Moves the batch into the recorder.
    pub fn flush(&mut self, recorder: &Recorder, now: Instant) {
        self.flushed = now;
        if self.buf.is_empty() {
            return;
        }
        let shards = &recorder.traffic_shards;
        let mut h = shards[self.shard % shards.len()]
            .lock()
            .expect("histogram lock");
        for (metric, steady, us) in self.buf.drain(..) {
            h.whole[metric as usize].saturating_record(us);
            if steady {
                h.steady[metric as usize].saturating_record(us);
            }
        }
    }
}

/// Cumulative message-latency histograms of a run, for the report.
#[derive(Clone)]
pub struct TrafficLatency {
    /// Over the whole traffic window, by [`Metric`].
    pub whole: [Histogram<u64>; METRICS],
    /// Over the steady-state window only (the headline), by [`Metric`].
    pub steady: [Histogram<u64>; METRICS],
}

/// One sample of the run's gauges, kept once per second for the report.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
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
    /// PUBLISH written per second over the last second.
    pub sent_per_s: f64,
    /// Messages received by subscribers per second over the last second.
    pub delivered_per_s: f64,
    /// PUBACK/PUBCOMP received per second over the last second.
    pub acked_per_s: f64,
    /// Connect latency of the connects that completed in the last second.
    pub connect_us: IntervalPercentiles,
    /// Ack latency of the acknowledgements received in the last second.
    pub ack_us: IntervalPercentiles,
    /// Corrected end-to-end latency of the messages delivered in the last second.
    pub e2e_corrected_us: IntervalPercentiles,
}

/// Latency percentiles over one timeline interval, microseconds (all zero when `count` is 0):
/// what the report's latency-over-time plot draws.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct IntervalPercentiles {
    /// Samples in the interval.
    pub count: u64,
    /// Median.
    pub p50: u64,
    /// 90th percentile.
    pub p90: u64,
    /// 99th percentile.
    pub p99: u64,
    /// Largest sample.
    pub max: u64,
}

impl IntervalPercentiles {
    fn of(h: &Histogram<u64>) -> IntervalPercentiles {
        let p = Percentiles::of(h);
        IntervalPercentiles {
            count: p.count,
            p50: p.p50,
            p90: p.p90,
            p99: p.p99,
            max: p.max,
        }
    }
}

/// Percentiles of the three message-latency metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct MessageLatency {
    /// See [`Metric::Ack`] (uncorrected: from the write).
    pub ack: Percentiles,
    /// See [`Metric::AckCorrected`] (corrected: from the intended send time).
    pub ack_corrected: Percentiles,
    /// See [`Metric::E2eCorrected`].
    pub e2e_corrected: Percentiles,
    /// See [`Metric::E2eUncorrected`].
    pub e2e_uncorrected: Percentiles,
}

impl MessageLatency {
    fn of(h: &[Histogram<u64>; METRICS]) -> MessageLatency {
        MessageLatency {
            ack: Percentiles::of(&h[Metric::Ack as usize]),
            ack_corrected: Percentiles::of(&h[Metric::AckCorrected as usize]),
            e2e_corrected: Percentiles::of(&h[Metric::E2eCorrected as usize]),
            e2e_uncorrected: Percentiles::of(&h[Metric::E2eUncorrected as usize]),
        }
    }
}

/// Message rates since the previous tick.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Rates {
    /// PUBLISH written per second.
    pub sent_per_s: f64,
    /// Acknowledged per second.
    pub acked_per_s: f64,
    /// Received by subscribers per second.
    pub delivered_per_s: f64,
    /// Payload bytes received by subscribers per second.
    pub delivered_bytes_per_s: f64,
    /// Payload bytes written per second.
    pub sent_bytes_per_s: f64,
}

/// Cumulative latency distributions (powers of two) for the dashboard's distribution view.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Distributions {
    /// Connect latency since the start.
    pub connect: Distribution,
    /// See [`Metric::Ack`], over the traffic window so far.
    pub ack: Distribution,
    /// See [`Metric::E2eCorrected`].
    pub e2e_corrected: Distribution,
    /// See [`Metric::E2eUncorrected`].
    pub e2e_uncorrected: Distribution,
}

/// What readers see: an immutable copy of the run at one tick.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
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
    /// Message rates since the previous tick.
    pub rates: Rates,
    /// Message latency since the previous tick.
    pub latency_interval: MessageLatency,
    /// Message latency over the whole traffic window so far.
    pub latency_total: MessageLatency,
    /// Errors by class.
    pub errors: Vec<ErrorRow>,
    /// Cumulative latency distributions.
    pub distribution: Distributions,
}

/// Turns the recorder's shards into snapshots on a fixed tick.
pub struct Aggregator {
    recorder: Arc<Recorder>,
    planned: u64,
    cumulative: Histogram<u64>,
    interval: Histogram<u64>,
    traffic_interval: [Histogram<u64>; METRICS],
    traffic: TrafficLatency,
    /// Connect latency since the last timeline point.
    second_connect: Histogram<u64>,
    /// Message latency (whole window) since the last timeline point, by [`Metric`].
    second_traffic: [Histogram<u64>; METRICS],
    last_tick: Instant,
    last: Counts,
    last_sample: (f64, Counts),
    timeline: Vec<TimelinePoint>,
    intervals: intervals::Intervals,
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
            traffic_interval: std::array::from_fn(|_| histogram::latency()),
            traffic: TrafficLatency {
                whole: std::array::from_fn(|_| histogram::latency()),
                steady: std::array::from_fn(|_| histogram::latency()),
            },
            second_connect: histogram::latency(),
            second_traffic: std::array::from_fn(|_| histogram::latency()),
            last_tick: now,
            last: Counts::default(),
            last_sample: (0.0, Counts::default()),
            timeline: Vec::new(),
            intervals: intervals::Intervals::new(
                std::time::SystemTime::now()
                    .checked_sub(now.elapsed())
                    .unwrap_or_else(std::time::SystemTime::now),
            ),
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
        self.second_connect
            .add(&self.interval)
            .expect("same bounds");
        for h in &mut self.traffic_interval {
            h.reset();
        }
        for shard in self.recorder.traffic_shards.iter() {
            let mut h = shard.lock().expect("histogram lock");
            for m in 0..METRICS {
                self.traffic_interval[m]
                    .add(&h.whole[m])
                    .expect("same bounds");
                self.traffic.steady[m]
                    .add(&h.steady[m])
                    .expect("same bounds");
                h.whole[m].reset();
                h.steady[m].reset();
            }
        }
        for m in 0..METRICS {
            self.traffic.whole[m]
                .add(&self.traffic_interval[m])
                .expect("same bounds");
            self.second_traffic[m]
                .add(&self.traffic_interval[m])
                .expect("same bounds");
        }
        self.intervals.add(&self.interval, &self.traffic_interval);

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
        let per_s = |now: u64, then: u64| (now - then) as f64 / dt;
        let connects_per_s = per_s(totals.connects, self.last.connects);
        let rates = Rates {
            sent_per_s: per_s(totals.sent, self.last.sent),
            acked_per_s: per_s(totals.acked, self.last.acked),
            delivered_per_s: per_s(totals.delivered, self.last.delivered),
            delivered_bytes_per_s: per_s(totals.delivered_bytes, self.last.delivered_bytes),
            sent_bytes_per_s: per_s(totals.sent_bytes, self.last.sent_bytes),
        };
        self.last_tick = now;
        self.last = totals;

        let t = elapsed.as_secs_f64();
        if t - self.last_sample.0 >= 1.0 || self.timeline.is_empty() {
            let (t0, then) = self.last_sample;
            let per_s = |now: u64, then: u64| ((now - then) as f64 / (t - t0).max(1e-3)).round();
            self.timeline.push(TimelinePoint {
                t: (t * 1000.0).round() / 1000.0,
                connected: totals.connected,
                connecting: totals.connecting,
                failed: totals.failed,
                connects_per_s: per_s(totals.connects, then.connects),
                sent_per_s: per_s(totals.sent, then.sent),
                delivered_per_s: per_s(totals.delivered, then.delivered),
                acked_per_s: per_s(totals.acked, then.acked),
                connect_us: IntervalPercentiles::of(&self.second_connect),
                ack_us: IntervalPercentiles::of(&self.second_traffic[Metric::Ack as usize]),
                e2e_corrected_us: IntervalPercentiles::of(
                    &self.second_traffic[Metric::E2eCorrected as usize],
                ),
            });
            self.last_sample = (t, totals);
            self.second_connect.reset();
            for h in &mut self.second_traffic {
                h.reset();
            }
            self.intervals.cut(elapsed);
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
            rates,
            latency_interval: MessageLatency::of(&self.traffic_interval),
            latency_total: MessageLatency::of(&self.traffic.whole),
            errors,
            distribution: Distributions {
                connect: Distribution::of(&self.cumulative),
                ack: Distribution::of(&self.traffic.whole[Metric::Ack as usize]),
                e2e_corrected: Distribution::of(&self.traffic.whole[Metric::E2eCorrected as usize]),
                e2e_uncorrected: Distribution::of(
                    &self.traffic.whole[Metric::E2eUncorrected as usize],
                ),
            },
        }
    }

    /// Message latency over the whole window and its steady part (for the report).
    pub fn traffic_latency(&self) -> &TrafficLatency {
        &self.traffic
    }

    /// Connect latency since the start (for the report's serialised histogram).
    pub fn connect_histogram(&self) -> &Histogram<u64> {
        &self.cumulative
    }

    /// The per-second interval histograms, the last (partial) interval cut at the last tick:
    /// call after the final [`Aggregator::tick`].
    pub fn take_intervals(&mut self) -> intervals::Intervals {
        let elapsed = self.last_tick - self.recorder.started;
        let base = self.intervals.base;
        let mut taken = std::mem::replace(&mut self.intervals, intervals::Intervals::new(base));
        taken.cut(elapsed);
        taken
    }

    /// The once-per-second samples so far.
    pub fn timeline(&self) -> &[TimelinePoint] {
        &self.timeline
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeline_points_carry_interval_rates_and_percentiles() {
        let recorder = Arc::new(Recorder::new(1, 4));
        let mut aggregator = Aggregator::new(recorder.clone(), 4);
        for us in [1_000u64, 2_000, 3_000, 40_000] {
            recorder.connect_latency(0, Duration::from_micros(us));
        }
        let now = Instant::now();
        let mut samples = Samples::new(1);
        for ms in 1..=100u64 {
            samples.record(
                &recorder,
                Metric::E2eCorrected,
                true,
                Duration::from_millis(ms),
                now,
            );
            samples.record(
                &recorder,
                Metric::Ack,
                true,
                Duration::from_micros(500),
                now,
            );
        }
        samples.flush(&recorder, now);
        recorder.group(0).acked.fetch_add(100, Relaxed);

        // The first tick always samples the timeline.
        aggregator.tick();
        let p = aggregator.timeline()[0];
        assert_eq!(p.connect_us.count, 4);
        assert!((1_999..=2_001).contains(&p.connect_us.p50), "{p:?}");
        assert!((39_000..=40_100).contains(&p.connect_us.max), "{p:?}");
        assert_eq!(p.ack_us.count, 100);
        assert!((499..=501).contains(&p.ack_us.p99), "{p:?}");
        assert_eq!(p.e2e_corrected_us.count, 100);
        assert!((49_900..=50_100).contains(&p.e2e_corrected_us.p50), "{p:?}");
        assert!((98_900..=99_100).contains(&p.e2e_corrected_us.p99), "{p:?}");
        assert!(p.acked_per_s > 0.0);

        // Within the same second: accumulated, not yet sampled.
        recorder.connect_latency(0, Duration::from_micros(7_000));
        aggregator.tick();
        assert_eq!(aggregator.timeline().len(), 1);
        assert_eq!(aggregator.second_connect.len(), 1, "reset after a point");
    }
}
