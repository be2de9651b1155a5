//! The fleet runner: one tokio task per device, connects paced per group, a hold, a clean end.
//!
//! ```text
//! per group: spawner --(pacer: due times; semaphore: max_in_flight)--> device tasks
//! device:    build TLS config -> connect (timed) -> serve until stop -> DISCONNECT
//! runner:    ramp (until every device attempted) -> hold (plan.duration) -> drain -> done
//! ```
//!
//! Devices record into the shared [`Recorder`]; the aggregator ticks snapshots out to readers.
//! A device failure is counted and classified, never fatal to the run. A lost session is
//! reconnected per its group's policy (exponential backoff with full jitter, see
//! [`backoff`]): rumqttc itself would retry on the next poll with no backoff.
//! Churn, drop-all events and last wills live in [`lifecycle`].

pub mod backoff;
pub mod control;
pub mod failure;
pub mod lifecycle;
pub mod pacer;
pub mod protocol;
mod provision;
pub mod session;
mod shadow;
mod traffic;

use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use hdrhistogram::Histogram;
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio::time::{sleep, sleep_until, timeout, Instant};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::identity::{EnsureReport, Fleet, IdentityError};
use crate::scenario::{GroupPlan, Plan};
use crate::stats::sequence::SequenceTotals;
use crate::stats::{
    Aggregator, Phase, Recorder, Snapshot, TimelinePoint, TrafficLatency, TrafficWindow,
};
use crate::tls::{ServerTrust, TlsError};
use control::{Control, ControlEvent, Controller};
use pacer::Pacer;
use rustls_pki_types::CertificateDer;
use session::{Session, SessionOptions};

/// Bytes of one device task's future, as spawned (`std::mem::size_of_val`): the state every
/// session keeps in its task, measured once per run for the scale bench's memory breakdown.
static DEVICE_TASK_BYTES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Size in bytes of a device task's future (0 before any device was spawned): part of every
/// session's memory, reported by `benches/scale.rs`.
pub fn device_task_bytes() -> usize {
    DEVICE_TASK_BYTES.load(Relaxed)
}

/// How often the aggregator publishes a snapshot.
pub const TICK: Duration = Duration::from_millis(250);
/// How long devices get to send DISCONNECT at the end.
const DISCONNECT_WITHIN: Duration = Duration::from_secs(2);
/// Upper bound on the drain phase.
const DRAIN_WITHIN: Duration = Duration::from_secs(10);

/// The broker the devices connect to, resolved (embedded or external).
#[derive(Clone)]
pub struct Endpoint {
    /// Host to connect to; also the TLS server name.
    pub host: String,
    /// Port.
    pub port: u16,
    /// How the server certificate is checked.
    pub trust: ServerTrust,
}

impl Endpoint {
    /// The broker at `addr`, whose certificate must chain to `server_ca`.
    pub fn verified(
        addr: SocketAddr,
        server_ca: &CertificateDer<'static>,
    ) -> Result<Endpoint, TlsError> {
        Ok(Endpoint {
            host: addr.ip().to_string(),
            port: addr.port(),
            trust: ServerTrust::roots(std::slice::from_ref(server_ca))?,
        })
    }
}

/// Every group's identities from the cache under `certs_dir` (signing what is missing), in
/// plan order, with what each needed.
pub fn identities(
    plan: &Plan,
    certs_dir: &std::path::Path,
) -> Result<Vec<(Arc<Fleet>, EnsureReport)>, IdentityError> {
    plan.groups
        .iter()
        .map(|g| {
            if g.provision.is_some() {
                // One shared claim identity: devices get their own by provisioning.
                let (fleet, made) =
                    crate::identity::cache::ensure(certs_dir, &claim_spec(plan, g)?, 1, false)?;
                return Ok((Arc::new(fleet), made));
            }
            let (mut fleet, made) =
                crate::identity::cache::ensure(certs_dir, &plan.fleet_spec(g), g.devices, false)?;
            // A shard holds its own slice (device 0 too: the TLS probe uses it). Shard 0
            // keeps everything when it runs `[[expect]]` probes, which pick their devices.
            let probes_pick_devices = plan.shard.index == 0 && !plan.expect.is_empty();
            if plan.shard.count > 1 && !probes_pick_devices {
                let n = plan.shard.count as usize;
                let i = plan.shard.index as usize;
                fleet.retain(|k| k == 0 || k % n == i);
            }
            Ok((Arc::new(fleet), made))
        })
        .collect()
}

/// The claim certificate's spec for provisioning group `g`: CN
/// [`CLAIM_CN`](crate::aws::provisioning::CLAIM_CN), signed by the scenario's CA.
pub fn claim_spec(plan: &Plan, g: &GroupPlan) -> Result<crate::identity::FleetSpec, IdentityError> {
    Ok(crate::identity::FleetSpec {
        client_id: crate::identity::FleetSpec::new(crate::aws::provisioning::CLAIM_CN)?.client_id,
        ..plan.fleet_spec(g)
    })
}

/// What a run produced, for the report.
pub struct RunResult {
    /// The last snapshot (taken after the drain).
    pub last: Snapshot,
    /// Connect latency over the whole run.
    pub connect: Histogram<u64>,
    /// Once-per-second gauges.
    pub timeline: Vec<TimelinePoint>,
    /// Time from the first connect attempt until every device had been attempted.
    pub ramp: Duration,
    /// Whether `stop` ended the run early.
    pub interrupted: bool,
    /// Message figures, when any group published or subscribed.
    pub traffic: Option<TrafficResult>,
    /// Pauses and rate changes made during the run (dashboard keys), in time order.
    pub events: Vec<ControlEvent>,
    /// Per group: loss of a session -> CONNACK of its reconnect.
    pub recovery: Vec<crate::stats::Percentiles>,
    /// The same, whole histograms (for the report's lossless encoding: shard merges).
    pub recovery_histograms: Vec<Histogram<u64>>,
    /// Per-second latency histograms (for the HdrHistogram interval logs).
    pub intervals: crate::stats::intervals::Intervals,
    /// Churn, drop-all storms and their timeline, when the scenario has any.
    pub lifecycle: Option<lifecycle::LifecycleReport>,
    /// `[[event]]`s as fired, for the report's `faults` timeline.
    pub lifecycle_events: Vec<crate::proxy::timeline::FaultEvent>,
    /// Shadow figures, when any group runs shadow flows.
    pub shadow: Option<Arc<crate::aws::stats::ShadowStats>>,
    /// Fleet provisioning figures, when any group provisions by claim.
    pub provision: Option<Arc<crate::aws::provision_stats::ProvisionStats>>,
    /// Per group: transport, offline windows, retained, shares, refused MQTT 5 options
    /// (`None` for groups that use none of them).
    pub protocol: Vec<Option<protocol::GroupProtocolReport>>,
}

/// What the devices' messages did.
pub struct TrafficResult {
    /// When messages were scheduled, and the steady part.
    pub window: TrafficWindow,
    /// Latency histograms over the whole window and its steady part.
    pub latency: TrafficLatency,
    /// Loss, duplicates and reordering over every subscriber, from sequence numbers.
    pub sequence: SequenceTotals,
    /// Per group with subscribers, what a merge of shards settles loss from.
    pub loss_ledgers: Vec<Option<crate::stats::sequence::LossLedger>>,
    /// QoS 1/2 messages written with neither acknowledgement nor refusal by the end.
    pub sent_not_acked: u64,
}

struct GroupCtx {
    group: usize,
    /// Global index of this group's first device (publisher ids are global).
    offset: usize,
    seed: u64,
    /// Which of the group's devices this process runs.
    shard: crate::shard::Shard,
    plan: GroupPlan,
    fleet: Arc<Fleet>,
    endpoint: Endpoint,
    recorder: Arc<Recorder>,
    window: watch::Receiver<Option<TrafficWindow>>,
    control: watch::Receiver<Control>,
    life: Arc<lifecycle::GroupLife>,
    /// Shadow counters and histograms (AWS Device Shadow groups).
    shadow: Arc<crate::aws::stats::ShadowStats>,
    /// Fleet provisioning counters and histograms (provisioning groups).
    provision: Arc<crate::aws::provision_stats::ProvisionStats>,
    proto: Arc<protocol::GroupProtocolStats>,
    /// Local addresses to connect from, round-robin by global device index (empty: any).
    sources: Arc<[std::net::IpAddr]>,
}

impl GroupCtx {
    /// Device `index`'s session as `client_id` with `tls`, as the group's plan says.
    fn session(
        &self,
        client_id: String,
        index: usize,
        tls: crate::tls::device::DeviceTls,
        inflight: u16,
    ) -> Session {
        Session::with_options(
            SessionOptions {
                client_id,
                host: &self.endpoint.host,
                port: self.endpoint.port,
                protocol: self.plan.protocol,
                keepalive: self.plan.keepalive,
                clean_session: self.plan.clean_session,
                timeout: self.plan.connect.timeout,
                tls,
                source: source_address(&self.sources, self.offset + index),
                inflight,
            },
            &self.plan.options,
        )
    }
}

/// How long after the window closes devices get to receive what is still in flight.
const SETTLE_WITHIN: Duration = Duration::from_secs(5);

/// Runs `plan` with one loaded identity fleet per group against `endpoint`. Cancelling `stop`
/// (Ctrl-C, `q`) ends the run early but still drains devices and returns the figures.
/// Every snapshot is also sent on `snapshots` for live readers; `control` pauses and re-rates
/// the traffic while it runs.
pub async fn run(
    plan: &Plan,
    fleets: Vec<Arc<Fleet>>,
    endpoint: Endpoint,
    stop: CancellationToken,
    snapshots: watch::Sender<Arc<Snapshot>>,
    control: &Controller,
) -> RunResult {
    // A shard runs its slice of each group; publisher ids stay global (the whole plan).
    let planned = plan.shard_devices();
    let recorder = Arc::new(Recorder::new(
        plan.groups.len(),
        plan.total_devices() as usize,
    ));
    let has_traffic = plan
        .groups
        .iter()
        .any(|g| g.publish.is_some() || !g.subscribe.is_empty());
    let shadow_groups: Vec<bool> = plan.groups.iter().map(|g| g.shadow.is_some()).collect();
    let has_shadow = shadow_groups.contains(&true);
    let shadow_stats = Arc::new(crate::aws::stats::ShadowStats::new(&shadow_groups));
    let provision_groups: Vec<bool> = plan.groups.iter().map(|g| g.provision.is_some()).collect();
    let has_provision = provision_groups.contains(&true);
    let provision_stats = Arc::new(crate::aws::provision_stats::ProvisionStats::new(
        &provision_groups,
    ));
    let (window_tx, window_rx) = watch::channel(None);
    let mut aggregator = Aggregator::new(recorder.clone(), planned);
    // Interrupts stop pacing, connecting and publishing at once (`devices_stop`), but sessions
    // stay up until the drain has collected in-flight acknowledgements (`sessions_stop`).
    let devices_stop = stop.child_token();
    let sessions_stop = CancellationToken::new();
    let tracker = TaskTracker::new();
    let started = Instant::now();
    let life = Arc::new(lifecycle::Lifecycle::new(plan));
    let life_stop = CancellationToken::new();
    let life_tasks = lifecycle::Lifecycle::wanted(plan).then(|| {
        let names: Arc<[String]> = plan.groups.iter().map(|g| g.name.clone()).collect();
        (
            tokio::spawn(lifecycle::play(
                life.clone(),
                plan.events.clone().into(),
                names,
                Instant::from_std(recorder.epoch()),
                life_stop.clone(),
            )),
            tokio::spawn(lifecycle::sample(
                life.clone(),
                recorder.clone(),
                life_stop.clone(),
            )),
        )
    });

    let ticker = {
        let stop_ticks = CancellationToken::new();
        let guard = stop_ticks.clone();
        let handle = tokio::spawn(async move {
            let mut every = tokio::time::interval(TICK);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            loop {
                tokio::select! {
                    _ = guard.cancelled() => return aggregator,
                    _ = every.tick() => { snapshots.send_replace(Arc::new(aggregator.tick())); }
                }
            }
        });
        (stop_ticks, handle)
    };

    let proto: Vec<Arc<protocol::GroupProtocolStats>> =
        plan.groups.iter().map(|_| Default::default()).collect();
    let sources: Arc<[std::net::IpAddr]> = plan.source_addresses.clone().into();
    let mut offset = 0;
    for (g, (group, fleet)) in plan.groups.iter().zip(fleets).enumerate() {
        let ctx = Arc::new(GroupCtx {
            group: g,
            offset,
            seed: plan.seed,
            shard: plan.shard,
            plan: group.clone(),
            fleet,
            endpoint: endpoint.clone(),
            recorder: recorder.clone(),
            window: window_rx.clone(),
            control: control.subscribe(),
            life: life.group(g),
            shadow: shadow_stats.clone(),
            provision: provision_stats.clone(),
            proto: proto[g].clone(),
            sources: sources.clone(),
        });
        offset += group.devices as usize;
        tracker.spawn(spawn_group(
            ctx,
            tracker.clone(),
            devices_stop.clone(),
            sessions_stop.clone(),
        ));
    }

    // Ramp: until every planned device has connected, failed or been cancelled.
    while !stop.is_cancelled() {
        let t = recorder.totals();
        if t.connects + t.failed + t.cancelled >= planned {
            break;
        }
        tokio::select! { _ = stop.cancelled() => {}, _ = sleep(Duration::from_millis(20)) => {} }
    }
    let ramp = started.elapsed();

    recorder.set_phase(Phase::Hold);
    let hold_connects = life.churn_connects();
    let hold_started = Instant::now();
    let window = TrafficWindow::new(std::time::Instant::now(), plan.duration);
    if (has_traffic || has_shadow) && !stop.is_cancelled() {
        window_tx.send_replace(Some(window));
    }
    tokio::select! { _ = stop.cancelled() => {}, _ = sleep(plan.duration) => {} }

    recorder.set_phase(Phase::Drain);
    let hold = hold_started.elapsed();
    life_stop.cancel();
    devices_stop.cancel();
    if has_traffic {
        settle(plan, &recorder).await;
    }
    if has_shadow {
        // Shadow requests still in flight (a final DELETE) get their answers.
        let deadline = Instant::now() + SETTLE_WITHIN;
        sleep(Duration::from_millis(50)).await;
        while shadow_stats.in_flight() > 0 && Instant::now() < deadline {
            sleep(Duration::from_millis(20)).await;
        }
    }
    sessions_stop.cancel();
    tracker.close();
    let _ = timeout(DRAIN_WITHIN, tracker.wait()).await;
    recorder.set_phase(Phase::Done);

    ticker.0.cancel();
    let mut aggregator = ticker.1.await.expect("aggregator task does not panic");
    let last = aggregator.tick();
    let settled = if has_traffic {
        protocol::settle_sequences(plan, &recorder)
    } else {
        Default::default()
    };
    let per_group = settled.per_group;
    let traffic = has_traffic.then(|| TrafficResult {
        window,
        latency: aggregator.traffic_latency().clone(),
        sequence: settled.totals,
        loss_ledgers: settled.ledgers,
        sent_not_acked: (0..plan.groups.len())
            .filter(|&g| plan.groups[g].publish.as_ref().is_some_and(|p| p.qos > 0))
            .map(|g| recorder.group_counts(g).unacked())
            .sum(),
    });
    let (lifecycle, lifecycle_events) = match life_tasks {
        Some((player, sampler)) => {
            let mut fired = player.await.unwrap_or_default();
            let timeline = sampler.await.unwrap_or_default();
            for g in 0..plan.groups.len() {
                let dropped = life.dropped(g);
                for (event, n) in fired.iter_mut().filter(|(i, _)| *i == g).zip(dropped) {
                    event.1.connections = Some(n);
                }
            }
            let report = lifecycle::report(
                &life,
                &plan.groups,
                &fired,
                timeline,
                (hold, &hold_connects),
            );
            (Some(report), fired.into_iter().map(|(_, e)| e).collect())
        }
        None => (None, Vec::new()),
    };
    RunResult {
        lifecycle,
        lifecycle_events,
        last,
        connect: aggregator.connect_histogram().clone(),
        timeline: aggregator.timeline().to_vec(),
        ramp,
        interrupted: stop.is_cancelled(),
        traffic,
        events: control.events(recorder.epoch()),
        recovery: (0..plan.groups.len())
            .map(|g| recorder.recovery(g))
            .collect(),
        recovery_histograms: (0..plan.groups.len())
            .map(|g| recorder.recovery_histogram(g))
            .collect(),
        intervals: aggregator.take_intervals(),
        shadow: has_shadow.then_some(shadow_stats),
        provision: has_provision.then_some(provision_stats),
        protocol: protocol::reports(plan, &proto, &per_group),
    }
}

/// After the window closes or an interrupt stopped the publishers: wait until every
/// acknowledgement is in and deliveries have been quiet for half a second (bounded by
/// [`SETTLE_WITHIN`]; a second interrupt exits at once), so messages still in flight are
/// neither counted as lost nor left unacknowledged in an interrupted run's report.
async fn settle(plan: &Plan, recorder: &Recorder) {
    // QoS 0 messages are never acknowledged: only QoS 1/2 publishers have acks to wait for.
    let acked_groups: Vec<usize> = (0..plan.groups.len())
        .filter(|&g| plan.groups[g].publish.as_ref().is_some_and(|p| p.qos > 0))
        .collect();
    let deadline = Instant::now() + SETTLE_WITHIN;
    let mut last = recorder.totals();
    let mut quiet_since = Instant::now();
    while Instant::now() < deadline {
        sleep(Duration::from_millis(100)).await;
        let now = recorder.totals();
        if now.delivered != last.delivered || now.sent != last.sent {
            quiet_since = Instant::now();
        }
        last = now;
        let unacked: u64 = acked_groups
            .iter()
            .map(|&g| {
                let c = recorder.group_counts(g);
                c.unacked().saturating_sub(c.abandoned)
            })
            .sum();
        if unacked == 0 && quiet_since.elapsed() >= Duration::from_millis(500) {
            break;
        }
    }
}

/// Starts a group's devices on its pacer's schedule, never more than `max_in_flight`
/// connecting at once (more overflow common listen backlogs and turn into SYN retransmits).
async fn spawn_group(
    ctx: Arc<GroupCtx>,
    tracker: TaskTracker,
    stop: CancellationToken,
    end: CancellationToken,
) {
    let pacer = Pacer::new(Instant::now(), ctx.plan.connect.rate);
    // Shards keep each device's due time (`pacer.due(k)`) and split the in-flight cap.
    let slots = Arc::new(Semaphore::new(
        ctx.shard.share(ctx.plan.connect.max_in_flight),
    ));
    let slice = ctx.shard.slice(ctx.plan.devices);
    for k in slice.indices() {
        let permit = tokio::select! {
            _ = stop.cancelled() => break,
            p = async { sleep_until(pacer.due(k)).await; slots.clone().acquire_owned().await } => {
                p.expect("semaphore is never closed")
            }
        };
        let task = device(ctx.clone(), k as usize, permit, stop.clone(), end.clone());
        if k == 0 {
            DEVICE_TASK_BYTES.store(std::mem::size_of_val(&task), Relaxed);
        }
        tracker.spawn(task);
    }
    let never = slice
        .count
        .saturating_sub(ctx.recorder.group(ctx.group).attempted.load(Relaxed));
    if stop.is_cancelled() && never > 0 {
        // Devices whose turn never came count as cancelled, so the ramp accounting closes.
        ctx.recorder
            .group(ctx.group)
            .cancelled
            .fetch_add(never, Relaxed);
    }
}

/// After a lost session: waits out the backoff and reconnects, again and again, until a
/// CONNACK (then whether the broker kept the session) or until `stop` (then `None`). Records
/// attempts, failures and the time to recover.
async fn reconnect(
    ctx: &GroupCtx,
    client_id: &str,
    session: &mut Session,
    backoff: &mut backoff::Backoff,
    stop: &CancellationToken,
    log: &(dyn lifecycle::AttemptLog + Sync),
) -> Option<bool> {
    let lost = Instant::now();
    let counters = ctx.recorder.group(ctx.group);
    loop {
        let wait = backoff.next_delay();
        tokio::select! {
            biased;
            _ = stop.cancelled() => return None,
            _ = sleep(wait) => {}
        }
        counters.reconnect_attempts.fetch_add(1, Relaxed);
        log.attempt();
        counters.connecting.fetch_add(1, Relaxed);
        let outcome = tokio::select! {
            biased;
            _ = stop.cancelled() => None,
            r = timeout(ctx.plan.connect.timeout, session.connect()) => Some(r),
        };
        counters.connecting.fetch_sub(1, Relaxed);
        match outcome {
            None => return None,
            Some(Ok(Ok(session_present))) => {
                backoff.reset();
                counters.reconnects.fetch_add(1, Relaxed);
                ctx.recorder.recovered(ctx.group, lost.elapsed());
                return Some(session_present);
            }
            Some(Ok(Err(f))) => {
                log.failed(&f);
                ctx.recorder
                    .error(f.class, format!("{client_id}: reconnect: {}", f.detail))
            }
            Some(Err(_)) => {
                log.failed(&failure::Failure::new("connect timeout", "no CONNACK"));
                ctx.recorder.error(
                    "connect timeout",
                    format!(
                        "{client_id}: reconnect: no CONNACK within {:?}",
                        ctx.plan.connect.timeout
                    ),
                )
            }
        }
    }
}

/// One device's life: connect (timed), hold the session, disconnect. `stop` ends connecting
/// and publishing; `end` ends the session (later, once in-flight messages had their chance).
async fn device(
    ctx: Arc<GroupCtx>,
    index: usize,
    permit: OwnedSemaphorePermit,
    stop: CancellationToken,
    end: CancellationToken,
) {
    let counters = ctx.recorder.group(ctx.group);
    counters.attempted.fetch_add(1, Relaxed);
    // A provisioning group's devices share the claim identity (index 0) under their own IDs.
    let (client_id, identity) = if ctx.plan.provision.is_some() {
        (ctx.plan.client_id.render_index(index as u64), 0)
    } else {
        (ctx.fleet.client_id(index), index)
    };
    let tls = match ctx.endpoint.trust.device_tls(
        &client_id,
        ctx.fleet.cert_chain(identity),
        ctx.fleet.key(identity).clone_key(),
    ) {
        Ok(tls) => tls,
        Err(e) => {
            counters.failed.fetch_add(1, Relaxed);
            let class = match failure::Failure::classify(&e).class {
                wrong @ "tls: wrong key for certificate" => wrong,
                _ => "tls: client identity",
            };
            ctx.recorder.error(class, e.to_string());
            return;
        }
    };
    let inflight = match &ctx.plan.publish {
        Some(p) if p.qos > 0 => session::INFLIGHT,
        _ => 1,
    };
    let mut session = ctx.session(client_id.clone(), index, tls, inflight);
    if let Some(will) = &ctx.plan.lifecycle.will {
        lifecycle::set_will(&mut session, will, &ctx.plan.name, &client_id, index as u64);
    }

    counters.connecting.fetch_add(1, Relaxed);
    let mut connack = None;
    let started = Instant::now();
    let outcome = tokio::select! {
        biased;
        _ = stop.cancelled() => None,
        r = timeout(ctx.plan.connect.timeout, session.connect_noting(&mut connack)) => Some(r),
    };
    let took = started.elapsed();
    if let Some(facts) = &connack {
        ctx.proto.note_connack(facts, &ctx.plan);
    }
    counters.connecting.fetch_sub(1, Relaxed);
    drop(permit);
    match outcome {
        None => {
            counters.cancelled.fetch_add(1, Relaxed);
            return;
        }
        Some(Err(_)) => {
            counters.failed.fetch_add(1, Relaxed);
            let limit = ctx.plan.connect.timeout;
            ctx.recorder.error(
                "connect timeout",
                format!("{client_id}: no CONNACK within {limit:?}"),
            );
            return;
        }
        Some(Ok(Err(f))) => {
            counters.failed.fetch_add(1, Relaxed);
            let f = f.explained_by(&ctx.fleet.cert(identity), unix_now());
            ctx.recorder
                .error(f.class, format!("{client_id}: {}", f.detail));
            return;
        }
        Some(Ok(Ok(_))) => {
            ctx.recorder.connect_latency(index, took);
            counters.connects.fetch_add(1, Relaxed);
            counters.connected.fetch_add(1, Relaxed);
        }
    }

    let served = if ctx.plan.provision.is_some() {
        provision::serve(
            &ctx,
            index,
            &client_id,
            &mut session,
            &stop,
            &end,
            started.into_std(),
        )
        .await
    } else if ctx.plan.shadow.is_some() {
        shadow::serve(&ctx, index, &client_id, &mut session, &stop, &end).await
    } else {
        traffic::serve(&ctx, index, &client_id, &mut session, &stop, &end).await
    };
    match served {
        Ok(true) => {
            session.disconnect(DISCONNECT_WITHIN).await;
            counters.connected.fetch_sub(1, Relaxed);
            counters.closed.fetch_add(1, Relaxed);
        }
        // Not up at the end (lost, or offline by churn): `serve` counted how it ended.
        Ok(false) => {}
        Err(f) => {
            counters.connected.fetch_sub(1, Relaxed);
            counters.dropped.fetch_add(1, Relaxed);
            ctx.recorder
                .error(f.class, format!("{client_id}: {}", f.detail));
        }
    }
}

/// Device `global`'s source address: round-robin over `sources` by global device index.
fn source_address(sources: &[std::net::IpAddr], global: usize) -> Option<std::net::IpAddr> {
    (!sources.is_empty()).then(|| sources[global % sources.len()])
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}
