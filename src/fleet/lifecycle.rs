//! Connection lifecycle during a run: churn (sessions end after a drawn lifetime and come back
//! after a drawn offline time), drop-all events (a reconnect storm) and last wills.
//!
//! ```text
//! device:  CONNACK -> lifetime -> [quiesce] -> end (clean | abrupt) -> offline -> connect ...
//! event:   drop-all at t -> every connected device of the group drops its connection at once
//!          (no DISCONNECT) -> reconnects per the group's backoff -> the storm's record
//! ```
//!
//! Per device the state is a deadline, an RNG and a watch receiver (nothing per message); the
//! shared per-group record is locked once per session end, attempt or recovery. Churned
//! offline time is not loss: messages due while a device is offline by design are not owed
//! (as with a pause), unlike an outage, whose missed messages count as `never_sent`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hdrhistogram::Histogram;
use rand::{Rng as _, SeedableRng as _};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::time::{sleep, sleep_until, timeout, Instant};
use tokio_util::sync::CancellationToken;

use super::backoff::Backoff;
use super::failure::Failure;
use super::session::{Seen, Session};
use super::{GroupCtx, DISCONNECT_WITHIN};
use crate::proxy::timeline::FaultEvent;
use crate::scenario::lifecycle::{EndKind, EventAction, EventPlan, WillPlan};
use crate::scenario::{GroupPlan, Plan};
use crate::stats::{histogram, Percentiles, Recorder};

/// How long past its lifetime a session may take to finish its in-flight messages before it
/// ends anyway.
const QUIESCE_WITHIN: Duration = Duration::from_secs(1);

/// One group's shared lifecycle record.
pub(super) struct GroupLife {
    drops: watch::Sender<u32>,
    ended_clean: AtomicU64,
    ended_abrupt: AtomicU64,
    churn_connects: AtomicU64,
    churn_failed: AtomicU64,
    churn_connect: Mutex<Histogram<u64>>,
    storms: Mutex<Vec<StormTrack>>,
    /// Every will payload of the plan (a delivery equal to one, without a measurement header,
    /// is a will).
    will_payloads: Arc<[Box<[u8]>]>,
    wills_received: AtomicU64,
}

/// What one drop-all left behind, filled in by the devices as they come back.
struct StormTrack {
    at: Instant,
    dropped: u64,
    back: Vec<Duration>,
    attempts: Vec<Duration>,
    failed: u64,
    refusals: BTreeMap<String, u64>,
}

/// The run's lifecycle state: one record per group.
pub struct Lifecycle {
    groups: Vec<Arc<GroupLife>>,
}

impl Lifecycle {
    /// Empty records for every group of `plan`.
    pub fn new(plan: &Plan) -> Lifecycle {
        let mut payloads: Vec<Box<[u8]>> = Vec::new();
        for w in plan.groups.iter().filter_map(|g| g.lifecycle.will.as_ref()) {
            if !payloads.iter().any(|p| **p == *w.payload.as_bytes()) {
                payloads.push(w.payload.as_bytes().into());
            }
        }
        let will_payloads: Arc<[Box<[u8]>]> = payloads.into();
        Lifecycle {
            groups: plan
                .groups
                .iter()
                .map(|_| {
                    Arc::new(GroupLife {
                        drops: watch::Sender::new(0),
                        ended_clean: AtomicU64::new(0),
                        ended_abrupt: AtomicU64::new(0),
                        churn_connects: AtomicU64::new(0),
                        churn_failed: AtomicU64::new(0),
                        churn_connect: Mutex::new(histogram::latency()),
                        storms: Mutex::new(Vec::new()),
                        will_payloads: will_payloads.clone(),
                        wills_received: AtomicU64::new(0),
                    })
                })
                .collect(),
        }
    }

    /// Group `g`'s record, for its devices.
    pub(super) fn group(&self, g: usize) -> Arc<GroupLife> {
        self.groups[g].clone()
    }

    /// Whether `plan` uses anything of this module (then the report has a `lifecycle` part).
    pub fn wanted(plan: &Plan) -> bool {
        !plan.events.is_empty()
            || plan
                .groups
                .iter()
                .any(|g| g.lifecycle.churn.is_some() || g.lifecycle.will.is_some())
    }
}

/// Plays the `[[event]]` timeline from `origin` until `stop`; returns the events as fired.
pub(super) async fn play(
    life: Arc<Lifecycle>,
    plan: Arc<[EventPlan]>,
    names: Arc<[String]>,
    origin: Instant,
    stop: CancellationToken,
) -> Vec<(usize, FaultEvent)> {
    let mut fired = Vec::with_capacity(plan.len());
    for e in plan.iter() {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = sleep_until(origin + e.at) => {}
        }
        match e.action {
            EventAction::DropAll => {
                let group = &life.groups[e.group];
                let now = Instant::now();
                let index = {
                    let mut storms = group.storms.lock().expect("storm lock");
                    storms.push(StormTrack {
                        at: now,
                        dropped: 0,
                        back: Vec::new(),
                        attempts: Vec::new(),
                        failed: 0,
                        refusals: BTreeMap::new(),
                    });
                    storms.len() - 1
                };
                // The generation is the storm's index + 1: devices find their storm from it.
                group.drops.send_replace(index as u32 + 1);
                fired.push((
                    e.group,
                    FaultEvent {
                        t: round_ms(now - origin),
                        fault: format!("drop-all group {}", names[e.group]),
                        connections: None,
                    },
                ));
            }
        }
    }
    fired
}

/// Why a session ended, other than the run ending it.
pub(super) enum Ended {
    /// It failed (broker, network, keepalive).
    Failed(Failure),
    /// Its churn lifetime ran out.
    Churned,
    /// A drop-all event of this generation dropped it.
    Dropped(u32),
}

/// How [`rejoin`] came out.
pub(super) enum Rejoined {
    /// Connected again; `missed_is_loss`: messages due meanwhile count as never sent (an
    /// outage), not as planned silence (churn).
    Back {
        /// The broker kept the session.
        session_present: bool,
        /// Whether missed messages count as `never_sent`.
        missed_is_loss: bool,
    },
    /// The session is gone for good and the device should report this failure.
    Lost(Failure),
    /// The session is not up at the end and has been counted (closed or dropped).
    Gone,
}

/// One device's lifecycle state.
pub(super) struct DeviceLife {
    group: Arc<GroupLife>,
    churn: Option<crate::scenario::lifecycle::ChurnPlan>,
    rng: rand::rngs::SmallRng,
    deadline: Option<Instant>,
    drops: watch::Receiver<u32>,
    /// The storm this device is recovering from.
    storm: Option<usize>,
}

impl DeviceLife {
    /// State of device `global` of `ctx`'s group, right after its first CONNACK.
    pub(super) fn new(ctx: &GroupCtx, global: usize) -> DeviceLife {
        let group = ctx.life.clone();
        let drops = group.drops.subscribe();
        let mut life = DeviceLife {
            group,
            churn: ctx.plan.lifecycle.churn,
            rng: rand::rngs::SmallRng::seed_from_u64(
                ctx.seed ^ (global as u64).rotate_left(41) ^ 0x11fe,
            ),
            deadline: None,
            drops,
            storm: None,
        };
        life.connected(true);
        life
    }

    /// After a CONNACK: the next lifetime starts (the first one a uniform fraction of a drawn
    /// lifetime, so the fleet starts at its steady churn rate), and earlier drop-alls are past.
    fn connected(&mut self, first: bool) {
        self.drops.borrow_and_update();
        self.deadline = self.churn.map(|c| {
            let mut life = c.lifetime.sample(&mut self.rng);
            if first {
                life = life.mul_f64(self.rng.random::<f64>());
            }
            Instant::now() + life
        });
    }

    /// A delivered message without a measurement header: counted when it is a will.
    pub(super) fn received_other(&self, payload: &[u8]) {
        if self.group.will_payloads.iter().any(|w| **w == *payload) {
            self.group.wills_received.fetch_add(1, Relaxed);
        }
    }

    /// Past its lifetime: publish nothing new, let in-flight messages finish.
    pub(super) fn closing(&self) -> bool {
        self.deadline.is_some_and(|d| Instant::now() >= d)
    }

    fn attempt(&self) {
        if let Some(s) = self.storm {
            if let Some(t) = self.group.storms.lock().expect("storm lock").get_mut(s) {
                let since = t.at.elapsed();
                t.attempts.push(since);
            }
        }
    }

    fn failed(&self, f: &Failure) {
        if let Some(s) = self.storm {
            if let Some(t) = self.group.storms.lock().expect("storm lock").get_mut(s) {
                t.failed += 1;
                if let Some(code) = f.detail.strip_prefix("CONNACK refused: ") {
                    *t.refusals.entry(code.to_string()).or_default() += 1;
                }
            }
        }
    }

    fn back(&mut self) {
        if let Some(s) = self.storm.take() {
            if let Some(t) = self.group.storms.lock().expect("storm lock").get_mut(s) {
                let since = t.at.elapsed();
                t.back.push(since);
            }
        }
        self.connected(false);
    }
}

/// Hooks [`super::reconnect`] calls per attempt, so a storm's record sees every attempt.
pub(super) trait AttemptLog {
    /// An attempt starts.
    fn attempt(&self);
    /// It failed.
    fn failed(&self, f: &Failure);
}

/// For sessions outside churn and storms (shadow devices): nothing to record.
impl AttemptLog for () {
    fn attempt(&self) {}
    fn failed(&self, _: &Failure) {}
}

impl AttemptLog for DeviceLife {
    fn attempt(&self) {
        DeviceLife::attempt(self);
    }
    fn failed(&self, f: &Failure) {
        DeviceLife::failed(self, f);
    }
}

/// The next thing the session does, or why it ends: a failure, its lifetime running out
/// (once `quiet`, or [`QUIESCE_WITHIN`] later anyway) or a drop-all. While `active` is false
/// (the run is draining) neither churn nor events end sessions.
pub(super) async fn next(
    session: &mut Session,
    life: &mut DeviceLife,
    quiet: bool,
    active: bool,
) -> Result<Seen, Ended> {
    let churn_at = life
        .deadline
        .filter(|_| active)
        .map(|d| if quiet { d } else { d + QUIESCE_WITHIN });
    tokio::select! {
        biased;
        changed = life.drops.changed(), if active => match changed {
            Ok(()) => Err(Ended::Dropped(*life.drops.borrow_and_update())),
            // The run's record outlives every device; without it there are no events.
            Err(_) => session.next().await.map_err(Ended::Failed),
        },
        _ = sleep_until(churn_at.unwrap_or_else(Instant::now)), if churn_at.is_some() => Err(Ended::Churned),
        seen = session.next() => seen.map_err(Ended::Failed),
    }
}

/// Closes the connection without DISCONNECT (a device losing power): rumqttc drops the socket
/// and keeps unacknowledged messages for a resumed session; the next poll connects again.
fn drop_connection(session: &mut Session) {
    match session {
        Session::V311(_, events) => events.clean(),
        Session::V5(_, events) => events.clean(),
    }
}

/// Applies `will` to device `index`'s session before its first connect.
pub(super) fn set_will(
    session: &mut Session,
    will: &WillPlan,
    group: &str,
    client_id: &str,
    index: u64,
) {
    let topic = will.topic_for(group, client_id, index);
    let payload = will.payload.clone().into_bytes();
    match session {
        Session::V311(_, events) => {
            let qos = match will.qos {
                0 => rumqttc::QoS::AtMostOnce,
                1 => rumqttc::QoS::AtLeastOnce,
                _ => rumqttc::QoS::ExactlyOnce,
            };
            events.mqtt_options.set_last_will(rumqttc::LastWill::new(
                topic,
                payload,
                qos,
                will.retain,
            ));
        }
        Session::V5(_, events) => {
            use rumqttc::v5::mqttbytes::{v5::LastWill, v5::LastWillProperties, QoS};
            let qos = match will.qos {
                0 => QoS::AtMostOnce,
                1 => QoS::AtLeastOnce,
                _ => QoS::ExactlyOnce,
            };
            let properties = (!will.delay.is_zero()).then(|| LastWillProperties {
                delay_interval: Some(will.delay.as_secs().min(u64::from(u32::MAX)) as u32),
                payload_format_indicator: None,
                message_expiry_interval: None,
                content_type: None,
                response_topic: None,
                correlation_data: None,
                user_properties: Vec::new(),
            });
            events.options.set_last_will(LastWill::new(
                topic,
                payload,
                qos,
                will.retain,
                properties,
            ));
        }
    }
}

/// After a session ended for `why`: counts it, and brings the device back per its group's
/// plan (churn: after the offline time; loss and drop-all: per the backoff), unless the run
/// stops first.
#[allow(clippy::too_many_arguments)]
pub(super) async fn rejoin(
    ctx: &GroupCtx,
    client_id: &str,
    session: &mut Session,
    backoff: Option<&mut Backoff>,
    life: &mut DeviceLife,
    why: Ended,
    stop: &CancellationToken,
) -> Rejoined {
    let rec = &*ctx.recorder;
    let counters = rec.group(ctx.group);
    // Offline by churn is planned silence; an outage or a drop-all is loss.
    let missed_is_loss = !matches!(why, Ended::Churned);
    let outage = match why {
        Ended::Failed(failure) => {
            counters.disconnects.fetch_add(1, Relaxed);
            let Some(backoff) = backoff else {
                return Rejoined::Lost(failure);
            };
            counters.connected.fetch_sub(1, Relaxed);
            rec.error(
                failure.class,
                format!("{client_id}: {} (reconnecting)", failure.detail),
            );
            Some(backoff)
        }
        Ended::Dropped(generation) => {
            drop_connection(session);
            counters.disconnects.fetch_add(1, Relaxed);
            let storm = generation.saturating_sub(1) as usize;
            if let Some(t) = life.group.storms.lock().expect("storm lock").get_mut(storm) {
                t.dropped += 1;
            }
            let Some(backoff) = backoff else {
                return Rejoined::Lost(Failure::new(
                    "disconnect: dropped by event",
                    "drop-all; the group's reconnect = \"none\"",
                ));
            };
            counters.connected.fetch_sub(1, Relaxed);
            life.storm = Some(storm);
            Some(backoff)
        }
        Ended::Churned => {
            let kind = ctx.plan.lifecycle.churn.map_or(EndKind::Clean, |c| c.end);
            if kind == EndKind::Clean {
                session.disconnect(DISCONNECT_WITHIN).await;
                life.group.ended_clean.fetch_add(1, Relaxed);
            } else {
                life.group.ended_abrupt.fetch_add(1, Relaxed);
            }
            drop_connection(session);
            counters.connected.fetch_sub(1, Relaxed);
            let offline = life
                .churn
                .map_or(Duration::ZERO, |c| c.offline.sample(&mut life.rng));
            tokio::select! {
                biased;
                _ = stop.cancelled() => {
                    counters.closed.fetch_add(1, Relaxed);
                    return Rejoined::Gone;
                }
                _ = sleep(offline) => {}
            }
            counters.connecting.fetch_add(1, Relaxed);
            let started = Instant::now();
            let outcome = tokio::select! {
                biased;
                _ = stop.cancelled() => None,
                r = timeout(ctx.plan.connect.timeout, session.connect()) => Some(r),
            };
            counters.connecting.fetch_sub(1, Relaxed);
            let failure = match outcome {
                None => {
                    counters.closed.fetch_add(1, Relaxed);
                    return Rejoined::Gone;
                }
                Some(Ok(Ok(session_present))) => {
                    life.group
                        .churn_connect
                        .lock()
                        .expect("histogram lock")
                        .saturating_record(started.elapsed().as_micros() as u64);
                    life.group.churn_connects.fetch_add(1, Relaxed);
                    counters.connected.fetch_add(1, Relaxed);
                    life.connected(false);
                    return Rejoined::Back {
                        session_present,
                        missed_is_loss: false,
                    };
                }
                Some(Ok(Err(f))) => f,
                Some(Err(_)) => Failure::new(
                    "connect timeout",
                    format!("no CONNACK within {:?}", ctx.plan.connect.timeout),
                ),
            };
            life.group.churn_failed.fetch_add(1, Relaxed);
            drop_connection(session);
            let Some(backoff) = backoff else {
                counters.dropped.fetch_add(1, Relaxed);
                rec.error(
                    failure.class,
                    format!("{client_id}: churn reconnect: {}", failure.detail),
                );
                return Rejoined::Gone;
            };
            rec.error(
                failure.class,
                format!(
                    "{client_id}: churn reconnect: {} (retrying)",
                    failure.detail
                ),
            );
            Some(backoff)
        }
    };
    let backoff = outage.expect("every path without a backoff returned");
    match super::reconnect(ctx, client_id, session, backoff, stop, &*life).await {
        None => {
            counters.dropped.fetch_add(1, Relaxed);
            Rejoined::Gone
        }
        Some(session_present) => {
            counters.connected.fetch_add(1, Relaxed);
            life.back();
            Rejoined::Back {
                session_present,
                missed_is_loss,
            }
        }
    }
}

/// Connects, disconnects and live sessions per second: the churn's own timeline.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LifecyclePoint {
    /// Seconds since the run started.
    pub t: f64,
    /// Sessions up.
    pub connected: u64,
    /// CONNACKs per second: first connects, churn reconnects and recoveries.
    pub connects_per_s: f64,
    /// Sessions ended per second: churn ends and losses (drop-all included).
    pub disconnects_per_s: f64,
}

/// Samples [`LifecyclePoint`]s once a second until `stop`.
pub(super) async fn sample(
    life: Arc<Lifecycle>,
    recorder: Arc<Recorder>,
    stop: CancellationToken,
) -> Vec<LifecyclePoint> {
    let mut points = Vec::new();
    let origin = Instant::from_std(recorder.epoch());
    let read = |life: &Lifecycle| {
        let t = recorder.totals();
        let (mut connects, mut ends) = (t.connects + t.reconnects, t.disconnects);
        for g in &life.groups {
            connects += g.churn_connects.load(Relaxed);
            ends += g.ended_clean.load(Relaxed) + g.ended_abrupt.load(Relaxed);
        }
        (t.connected, connects, ends)
    };
    let mut last = (Instant::now(), read(&life));
    let mut every = tokio::time::interval(Duration::from_secs(1));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    every.tick().await;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return points,
            _ = every.tick() => {}
        }
        let now = Instant::now();
        let (connected, connects, ends) = read(&life);
        let dt = (now - last.0).as_secs_f64().max(1e-3);
        points.push(LifecyclePoint {
            t: round_ms(now - origin),
            connected,
            connects_per_s: ((connects - last.1 .1) as f64 / dt * 10.0).round() / 10.0,
            disconnects_per_s: ((ends - last.1 .2) as f64 / dt * 10.0).round() / 10.0,
        });
        last = (now, (connected, connects, ends));
    }
}

/// A group's churn, as run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChurnReport {
    /// Session lifetime distribution.
    pub lifetime: String,
    /// Offline time distribution.
    pub offline: String,
    /// `clean` or `abrupt`.
    pub end: String,
    /// Connects/s the plan aims at in steady state (devices / (mean lifetime + mean offline)).
    pub target_connects_per_s: f64,
    /// Churn reconnects per second over the hold phase.
    pub measured_connects_per_s: f64,
    /// Sessions ended with DISCONNECT.
    pub ended_clean: u64,
    /// Sessions ended by dropping the connection.
    pub ended_abrupt: u64,
    /// Churn reconnects that reached CONNACK on the first attempt after the offline time.
    pub reconnects: u64,
    /// Churn reconnects whose first attempt failed (then the backoff took over).
    pub reconnect_failures: u64,
    /// Connect latency of churn reconnects (compare with `connect_latency_us`, the initial
    /// connects), microseconds.
    pub connect_latency_us: Percentiles,
}

/// One drop-all and the recovery that followed.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct StormReport {
    /// Seconds since the run started.
    pub t: f64,
    /// The group.
    pub group: String,
    /// Sessions dropped.
    pub dropped: u64,
    /// Of those, back by the end of the run.
    pub back: u64,
    /// Seconds from the drop until 50/90/99/100% of the dropped sessions were back (absent:
    /// never reached).
    pub back_s: BackTimes,
    /// Connect attempts after the drop.
    pub attempts: u64,
    /// Of those, failed.
    pub failed_attempts: u64,
    /// Broker refusals by CONNACK code.
    pub refusals: BTreeMap<String, u64>,
    /// Seconds from the drop to each attempt, sorted (kept for tests and analysis, not
    /// written: a storm of 10k devices would bloat the report).
    #[serde(skip)]
    pub attempt_times_s: Vec<f64>,
}

/// Time until a share of dropped sessions was back.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct BackTimes {
    /// Half back.
    pub p50: Option<f64>,
    /// 90% back.
    pub p90: Option<f64>,
    /// 99% back.
    pub p99: Option<f64>,
    /// All back.
    pub p100: Option<f64>,
}

impl BackTimes {
    /// From each recovered session's time (any order) out of `dropped`.
    pub fn of(back: &[f64], dropped: u64) -> BackTimes {
        let mut sorted = back.to_vec();
        sorted.sort_by(f64::total_cmp);
        let at = |share: f64| {
            let need = ((dropped as f64 * share).ceil() as usize).max(1);
            (dropped > 0 && sorted.len() >= need).then(|| sorted[need - 1])
        };
        BackTimes {
            p50: at(0.5),
            p90: at(0.9),
            p99: at(0.99),
            p100: at(1.0),
        }
    }
}

/// A group's lifecycle figures.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GroupLifecycle {
    /// The group.
    pub name: String,
    /// Churn, when the group churns.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub churn: Option<ChurnReport>,
}

/// Last wills: expected from the abrupt ends thingswarm caused, received at watchers.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct WillsReport {
    /// Subscribers whose filters match the will topics (devices of subscribing groups).
    pub watchers: u64,
    /// Abrupt ends (churn `end = "abrupt"`, drop-all) of will-carrying devices, times the
    /// watchers: what the broker should deliver. A clean DISCONNECT must produce none. (With
    /// an MQTT 5 will delay, a session resumed within the delay legitimately produces none.)
    pub expected: u64,
    /// Will payloads delivered to watchers.
    pub received: u64,
    /// Received beyond expected (e.g. wills after clean disconnects, or after losses the
    /// broker noticed first).
    pub unexpected: u64,
}

/// The report's `lifecycle` part.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LifecycleReport {
    /// Per group with churn.
    pub groups: Vec<GroupLifecycle>,
    /// Last wills, when a group has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wills: Option<WillsReport>,
    /// Every drop-all, in time order.
    pub storms: Vec<StormReport>,
    /// Once-per-second connects and disconnects.
    pub timeline: Vec<LifecyclePoint>,
}

impl LifecycleReport {
    /// The summary's lifecycle lines (churn, storms, wills), each starting with two spaces.
    pub fn summary(&self) -> String {
        use std::fmt::Write as _;
        let mut s = String::new();
        let secs = |x: Option<f64>| x.map_or("never".to_string(), |v| format!("{v:.2}s"));
        for g in &self.groups {
            let Some(c) = &g.churn else { continue };
            let _ = writeln!(
                s,
                "  churn      {}: {:.1} connects/s (target {:.1})  ended clean {}  abrupt {}  reconnect p50 {:.1}ms p99 {:.1}ms  first attempt failed {}",
                g.name,
                c.measured_connects_per_s,
                c.target_connects_per_s,
                c.ended_clean,
                c.ended_abrupt,
                c.connect_latency_us.p50 as f64 / 1000.0,
                c.connect_latency_us.p99 as f64 / 1000.0,
                c.reconnect_failures
            );
        }
        for t in &self.storms {
            let _ = writeln!(
                s,
                "  storm      t={:.3} s  {}: {} dropped, {} back; 50% {}  90% {}  99% {}  100% {}  attempts {} (failed {}){}",
                t.t,
                t.group,
                t.dropped,
                t.back,
                secs(t.back_s.p50),
                secs(t.back_s.p90),
                secs(t.back_s.p99),
                secs(t.back_s.p100),
                t.attempts,
                t.failed_attempts,
                if t.refusals.is_empty() {
                    String::new()
                } else {
                    let r: Vec<String> =
                        t.refusals.iter().map(|(k, v)| format!("{k} x{v}")).collect();
                    format!("  refused: {}", r.join(", "))
                }
            );
        }
        if let Some(w) = &self.wills {
            let _ = writeln!(
                s,
                "  wills      expected {}  received {}  unexpected {}  ({} watcher(s))",
                w.expected, w.received, w.unexpected, w.watchers
            );
        }
        s
    }
}

/// `thingswarm check`'s lines for a group's reconnect policy, churn and will.
pub fn plan_lines(g: &GroupPlan) -> Vec<String> {
    let mut out = Vec::new();
    out.push(match g.reconnect {
        None => "reconnect:      none (a lost session stays lost)".to_string(),
        Some(r) if r.fixed => format!(
            "reconnect:      fixed {} before every attempt",
            humantime::format_duration(r.initial)
        ),
        Some(r) => format!(
            "reconnect:      exponential backoff, full jitter, ceiling {} doubling to {}",
            humantime::format_duration(r.initial),
            humantime::format_duration(r.max)
        ),
    });
    if let Some(c) = &g.lifecycle.churn {
        out.push(format!(
            "churn:          lifetime {}, offline {}, end {:?}: ~{:.1} connects/s at steady state",
            c.lifetime, c.offline, c.end, c.target_rate
        ));
    }
    if let Some(w) = &g.lifecycle.will {
        out.push(format!(
            "will:           {} QoS {}{}{} (watch with {})",
            w.topic,
            w.qos,
            if w.retain { " retained" } else { "" },
            if w.delay.is_zero() {
                String::new()
            } else {
                format!(", delay {}", humantime::format_duration(w.delay))
            },
            w.filter()
        ));
    }
    out
}

/// `thingswarm check`'s lines for the `[[event]]` timeline.
pub fn event_lines(plan: &Plan) -> Vec<String> {
    if plan.events.is_empty() {
        return Vec::new();
    }
    let mut out = vec![String::new(), "events".to_string()];
    for e in &plan.events {
        let what = match e.action {
            EventAction::DropAll => "drop-all",
        };
        out.push(format!(
            "  at {}: {what} group {}",
            humantime::format_duration(e.at),
            plan.groups[e.group].name
        ));
    }
    out
}

/// The figures at the end of a run; `hold` is the hold phase's length (churn rate's
/// denominator) and `hold_connects[g]` the churn connects counted when it began.
pub(super) fn report(
    life: &Lifecycle,
    groups: &[GroupPlan],
    fired: &[(usize, FaultEvent)],
    timeline: Vec<LifecyclePoint>,
    hold: (Duration, &[u64]),
) -> LifecycleReport {
    let names: Vec<&str> = groups.iter().map(|g| g.name.as_str()).collect();
    let mut storms = Vec::new();
    for (g, gl) in life.groups.iter().enumerate() {
        let tracks = gl.storms.lock().expect("storm lock");
        let times: Vec<&(usize, FaultEvent)> = fired.iter().filter(|(i, _)| *i == g).collect();
        for (track, (_, event)) in tracks.iter().zip(times) {
            let back: Vec<f64> = track.back.iter().map(Duration::as_secs_f64).collect();
            let mut attempts: Vec<f64> = track.attempts.iter().map(Duration::as_secs_f64).collect();
            attempts.sort_by(f64::total_cmp);
            storms.push(StormReport {
                t: event.t,
                group: names[g].to_string(),
                dropped: track.dropped,
                back: back.len() as u64,
                back_s: BackTimes::of(&back, track.dropped),
                attempts: attempts.len() as u64,
                failed_attempts: track.failed,
                refusals: track.refusals.clone(),
                attempt_times_s: attempts,
            });
        }
    }
    storms.sort_by(|a, b| a.t.total_cmp(&b.t));
    let wills = groups.iter().any(|g| g.lifecycle.will.is_some()).then(|| {
        let mut abrupt = 0;
        for (g, (plan, gl)) in groups.iter().zip(&life.groups).enumerate() {
            if plan.lifecycle.will.is_none() {
                continue;
            }
            abrupt += gl.ended_abrupt.load(Relaxed);
            abrupt += storms
                .iter()
                .filter(|s| s.group == names[g])
                .map(|s| s.dropped)
                .sum::<u64>();
        }
        let watchers = watchers(groups);
        let received = life
            .groups
            .iter()
            .map(|g| g.wills_received.load(Relaxed))
            .sum();
        let expected = abrupt * watchers;
        WillsReport {
            watchers,
            expected,
            received,
            unexpected: received.saturating_sub(expected),
        }
    });
    LifecycleReport {
        wills,
        groups: groups
            .iter()
            .zip(&life.groups)
            .enumerate()
            .filter_map(|(g, (plan, gl))| {
                let c = plan.lifecycle.churn?;
                let connects = gl.churn_connects.load(Relaxed);
                let in_hold = connects.saturating_sub(hold.1.get(g).copied().unwrap_or(0));
                Some(GroupLifecycle {
                    name: plan.name.clone(),
                    churn: Some(ChurnReport {
                        lifetime: c.lifetime.to_string(),
                        offline: c.offline.to_string(),
                        end: match c.end {
                            EndKind::Clean => "clean".into(),
                            EndKind::Abrupt => "abrupt".into(),
                        },
                        target_connects_per_s: (c.target_rate * 1000.0).round() / 1000.0,
                        measured_connects_per_s: (in_hold as f64 / hold.0.as_secs_f64().max(1e-3)
                            * 1000.0)
                            .round()
                            / 1000.0,
                        ended_clean: gl.ended_clean.load(Relaxed),
                        ended_abrupt: gl.ended_abrupt.load(Relaxed),
                        reconnects: connects,
                        reconnect_failures: gl.churn_failed.load(Relaxed),
                        connect_latency_us: Percentiles::of(
                            &gl.churn_connect.lock().expect("histogram lock"),
                        ),
                    }),
                })
            })
            .collect(),
        storms,
        timeline,
    }
}

impl Lifecycle {
    /// Churn connects per group so far (taken when the hold phase starts).
    pub(super) fn churn_connects(&self) -> Vec<u64> {
        self.groups
            .iter()
            .map(|g| g.churn_connects.load(Relaxed))
            .collect()
    }

    /// Sessions a group's drop-all events dropped, in event order (the report's `faults`
    /// entries carry them as `connections`).
    pub(super) fn dropped(&self, g: usize) -> Vec<u64> {
        self.groups[g]
            .storms
            .lock()
            .expect("storm lock")
            .iter()
            .map(|s| s.dropped)
            .collect()
    }
}

/// Subscribing devices whose filters match some will-carrying group's will topic.
fn watchers(groups: &[GroupPlan]) -> u64 {
    let topics: Vec<String> = groups
        .iter()
        .filter_map(|g| {
            let w = g.lifecycle.will.as_ref()?;
            Some(w.topic_for(&g.name, &g.client_id.render_index(0), 0))
        })
        .collect();
    groups
        .iter()
        .filter(|g| {
            g.subscribe.iter().any(|f| {
                topics
                    .iter()
                    .any(|t| crate::scenario::traffic::matches(&f.filter, t))
            })
        })
        .map(|g| g.devices)
        .sum()
}

fn round_ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn drop_all_events_fire_at_their_times_and_bump_the_generation() {
        let plan = Plan::from_str(
            "name = \"e\"\nduration = \"10s\"\n[[group]]\nname = \"a\"\ndevices = 2\nclient_id = \"a-{index}\"\n[[group]]\nname = \"b\"\ndevices = 1\nclient_id = \"b\"\n[[event]]\nat = \"3s\"\naction = \"drop-all\"\ngroup = \"a\"\n[[event]]\nat = \"1s\"\naction = \"drop-all\"\ngroup = \"b\"\n[[event]]\nat = \"20s\"\naction = \"drop-all\"\ngroup = \"a\"\n",
            std::path::Path::new("e.toml"),
            &Default::default(),
        )
        .unwrap();
        let life = Arc::new(Lifecycle::new(&plan));
        let mut a = life.group(0).drops.subscribe();
        let b = life.group(1).drops.subscribe();
        let names: Arc<[String]> = plan.groups.iter().map(|g| g.name.clone()).collect();
        let stop = CancellationToken::new();
        let origin = Instant::now();
        let player = tokio::spawn(play(
            life.clone(),
            plan.events.clone().into(),
            names,
            origin,
            stop.clone(),
        ));
        a.changed().await.unwrap();
        assert_eq!(origin.elapsed(), Duration::from_secs(3));
        assert_eq!(*a.borrow_and_update(), 1);
        assert_eq!(*b.borrow(), 1, "b's drop came first, at 1 s");
        // The event at 20 s lies after the run's end: stopping at 10 s skips it.
        tokio::time::sleep_until(origin + Duration::from_secs(10)).await;
        stop.cancel();
        let fired = player.await.unwrap();
        let fired: Vec<(usize, f64, &str)> = fired
            .iter()
            .map(|(g, e)| (*g, e.t, e.fault.as_str()))
            .collect();
        assert_eq!(
            fired,
            [(1, 1.0, "drop-all group b"), (0, 3.0, "drop-all group a")]
        );
        assert_eq!(life.dropped(0), [0]);
        assert!(!a.has_changed().unwrap());
    }

    #[test]
    fn a_storm_record_counts_attempts_failures_refusals_and_returns() {
        let plan = Plan::from_str(
            "name = \"s\"\nduration = \"1s\"\n[[group]]\nname = \"a\"\ndevices = 1\nclient_id = \"a\"\n",
            std::path::Path::new("s.toml"),
            &Default::default(),
        )
        .unwrap();
        let life = Lifecycle::new(&plan);
        let group = life.group(0);
        group.storms.lock().unwrap().push(StormTrack {
            at: Instant::now(),
            dropped: 1,
            back: Vec::new(),
            attempts: Vec::new(),
            failed: 0,
            refusals: BTreeMap::new(),
        });
        let mut device = DeviceLife {
            drops: group.drops.subscribe(),
            group,
            churn: None,
            rng: rand::rngs::SmallRng::seed_from_u64(0),
            deadline: None,
            storm: Some(0),
        };
        let log: &dyn AttemptLog = &device;
        log.attempt();
        log.failed(&Failure::refused(
            rumqttc::ConnectReturnCode::ServiceUnavailable,
        ));
        log.attempt();
        log.failed(&Failure::new("connect timeout", "no CONNACK"));
        log.attempt();
        device.back();
        // Back: later attempts (another loss) are not this storm's.
        device.attempt();
        let fired = [(
            0,
            FaultEvent {
                t: 1.0,
                fault: "drop-all group a".into(),
                connections: None,
            },
        )];
        let r = report(
            &life,
            &plan.groups,
            &fired,
            Vec::new(),
            (Duration::ZERO, &[]),
        );
        let s = &r.storms[0];
        assert_eq!(
            (s.dropped, s.back, s.attempts, s.failed_attempts),
            (1, 1, 3, 2)
        );
        assert_eq!(
            s.refusals,
            BTreeMap::from([("ServiceUnavailable".to_string(), 1)])
        );
        assert!(s.back_s.p100.is_some());
        assert!(r.groups.is_empty() && r.wills.is_none());
    }

    #[test]
    fn back_times_count_against_everything_dropped() {
        let back: Vec<f64> = (1..=10).map(f64::from).collect();
        let all = BackTimes::of(&back, 10);
        assert_eq!(all.p50, Some(5.0));
        assert_eq!(all.p90, Some(9.0));
        assert_eq!(all.p99, Some(10.0));
        assert_eq!(all.p100, Some(10.0));
        // 10 of 20 back: half reached, 90% never.
        let half = BackTimes::of(&back, 20);
        assert_eq!(half.p50, Some(10.0));
        assert_eq!((half.p90, half.p100), (None, None));
        assert_eq!(BackTimes::of(&[], 0), BackTimes::default());
    }
}
