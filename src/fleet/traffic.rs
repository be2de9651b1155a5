//! A connected device's traffic: subscribe, publish on its open-model schedule during the
//! traffic window, and measure acknowledgements and deliveries.
//!
//! Per message the device keeps its own state only (no lock, no shared map): an in-flight
//! table indexed by packet id for acknowledgement latency, a small queue of handed-over
//! messages waiting to be written, a batch of latency samples flushed to a shard, and atomic
//! group counters. rumqttc takes an owned topic and payload per PUBLISH, so one payload copy
//! per message is the client library's cost, not ours to avoid.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use rand::{Rng as _, SeedableRng as _};
use tokio::time::sleep_until;
use tokio_util::sync::CancellationToken;

use super::failure::Failure;
use super::pacer::Schedule;
use super::session::{Seen, Session, INFLIGHT, REQUEST_CAPACITY};
use super::GroupCtx;
use crate::stats::sequence::SequenceTracker;
use crate::stats::{Metric, Samples, SubscriberResult, TrafficWindow};
use crate::traffic::payload::{parse_header, DeviceState, Header, RenderCtx};
use std::sync::atomic::Ordering::Relaxed;

/// Unacknowledged (QoS 0: unwritten) messages a "max"-rate device allows itself.
const MAX_RATE_WINDOW: usize = 1;

/// A handed-over PUBLISH that rumqttc has not written yet.
struct Handed {
    intended: Instant,
    len: u64,
}

/// Serves device `index`'s established session until `end` (then `Ok(true)`, or `Ok(false)`
/// when the session was not up at the end: the run stopped while it was reconnecting or
/// offline by churn, already counted `dropped` or `closed`) or until the session fails and the
/// group does not reconnect (then the failure). Churn and drop-all events end sessions here
/// (see [`super::lifecycle`]). After `stop` it publishes nothing new but keeps
/// polling, so acknowledgements of messages already written still arrive and are counted.
/// With a reconnect policy a lost session is reconnected (see [`super::reconnect`]),
/// re-subscribed, and the schedule resumes: messages whose intended time passed meanwhile are
/// counted `never_sent`, not back-filled.
pub(super) async fn serve(
    ctx: &GroupCtx,
    index: usize,
    client_id: &str,
    session: &mut Session,
    stop: &CancellationToken,
    end: &CancellationToken,
) -> Result<bool, Failure> {
    let mut window_rx = ctx.window.clone();
    let mut control_rx = ctx.control.clone();
    let mut control = *control_rx.borrow_and_update();
    let mut controlled = true;
    let rec = &*ctx.recorder;
    let counters = rec.group(ctx.group);
    let global = ctx.offset + index;
    let phase = Phase::new(ctx.seed, global);
    let epoch = rec.epoch();
    let mut samples = Samples::new(index);

    let mut tracker = (!ctx.plan.subscribe.is_empty()).then(SequenceTracker::default);
    if tracker.is_some() && !session.try_subscribe(&ctx.plan.subscribe) {
        return Err(Failure::new(
            "protocol error",
            "SUBSCRIBE could not be queued",
        ));
    }

    let publish = ctx.plan.publish.as_ref();
    let topic = publish.map(|p| p.topic_for(&ctx.plan.name, client_id, index as u64));
    let mut payload_state = DeviceState::new(ctx.seed, global as u32);
    let mut buf = Vec::new();
    let mut window: Option<TrafficWindow> = None;
    let mut awaiting_window = true;
    let mut schedule: Option<Schedule> = None;
    let mut owed: Option<Instant> = None;
    let mut blocked = false;
    let mut finished = publish.is_none();
    let mut seq = 0u64;
    let mut written = 0u64;
    // Only publishers keep these (an idle or subscribe-only session holds none); packet ids
    // index the in-flight table only for QoS 1/2.
    let mut handed: VecDeque<Handed> = match publish {
        Some(_) => VecDeque::with_capacity(REQUEST_CAPACITY + 2),
        None => VecDeque::new(),
    };
    let slots = match publish {
        Some(p) if p.qos > 0 => INFLIGHT as usize + 1,
        _ => 0,
    };
    let mut inflight: Vec<Option<(Instant, Instant, bool)>> = vec![None; slots];
    let mut outstanding = 0usize;
    let mut backoff = ctx
        .plan
        .reconnect
        .map(|p| super::backoff::Backoff::new(p, ctx.seed ^ (global as u64).rotate_left(29)));
    let mut life = super::lifecycle::DeviceLife::new(ctx, global);
    // Offline window, MQTT 5 publish properties, retained counts: see `super::protocol`.
    let proto = &*ctx.proto;
    let mut pub_props = super::protocol::PublishProps::new(&ctx.plan.options.v5);
    if let Some(p) = pub_props.as_mut() {
        p.connected(proto.alias_allowed());
    }
    let mut offline = super::protocol::OfflineTracker::default();
    let mut offline_due: Option<Instant> = None;

    let result = loop {
        // When the next message may go: its intended time (open model), or now while the
        // closed-loop "max" rate has room.
        let due = match (publish, &window) {
            _ if finished || blocked || control.paused || life.closing() => None,
            // QoS 0 messages are never outstanding: the window then limits unwritten ones.
            (Some(p), Some(_)) if p.rate.is_none() => {
                (outstanding + handed.len() < MAX_RATE_WINDOW).then(Instant::now)
            }
            (Some(_), Some(_)) => {
                let s = schedule
                    .as_mut()
                    .expect("a rated publisher has a schedule once the window opens");
                Some(*owed.get_or_insert_with(|| s.next_due().into_std()))
            }
            _ => None,
        };
        tokio::select! {
            biased;
            _ = end.cancelled() => break Ok(true),
            _ = stop.cancelled(), if !finished => {
                finished = true;
                awaiting_window = false;
                continue;
            }
            changed = window_rx.changed(), if awaiting_window => {
                if changed.is_err() {
                    // The run ended before traffic started.
                    awaiting_window = false;
                    finished = true;
                    continue;
                }
                window = *window_rx.borrow_and_update();
                awaiting_window = window.is_none();
                if let (Some(w), Some(o)) = (window, ctx.plan.options.offline) {
                    offline_due = Some(w.start + o.at);
                }
                if let (Some(w), Some(p)) = (window, publish) {
                    if let Some(rate) = p.rate {
                        // rather than all at the same instant.
                        let start = tokio::time::Instant::from_std(w.start) + phase.of(control.scale(rate));
                        schedule = Some(Schedule::new(start, control.scale(rate), p.arrivals, ctx.seed ^ global as u64));
                    }
                }
            }
            changed = control_rx.changed(), if controlled => {
                let Ok(()) = changed else {
                    controlled = false;
                    continue;
                };
                let before = control;
                control = *control_rx.borrow_and_update();
                // A pause drops the message that was due; resuming or re-rating restarts the
                // schedule from now at the new rate, so nothing is owed for the pause.
                owed = None;
                let restart = control.rate_percent != before.rate_percent || (before.paused && !control.paused);
                if let (true, Some(s), Some(p)) = (restart, schedule.as_mut(), publish) {
                    let rate = p.rate.expect("only rated publishers have a schedule");
                    let seed = ctx.seed ^ global as u64 ^ u64::from(control.rate_percent);
                    let rate = control.scale(rate);
                    *s = Schedule::new(tokio::time::Instant::now() + phase.of(rate), rate, p.arrivals, seed);
                }
            }
            _ = sleep_until(due.unwrap_or_else(Instant::now).into()), if due.is_some() => {
                let (p, w) = (publish.expect("due implies publishing"), window.expect("due implies a window"));
                let intended = owed.take().unwrap_or_else(Instant::now);
                if intended >= w.end || Instant::now() >= w.end {
                    finished = true;
                    continue;
                }
                let now = Instant::now();
                let header = Header {
                    publisher: global as u32,
                    seq,
                    intended_ns: (intended - epoch).as_nanos() as u64,
                    sent_ns: (now - epoch).as_nanos() as u64,
                };
                let ctx_render = RenderCtx { header, elapsed: now - w.start, unix_ms: unix_ms() };
                p.payload.render(&ctx_render, &mut payload_state, &mut buf);
                let topic = topic.as_deref().expect("publishers have a topic");
                let handed_over = match pub_props.as_ref() {
                    None => session.try_publish(topic, p.qos, p.retain, buf.clone()),
                    Some(props) => {
                        let (topic, props) = props.properties(topic);
                        session.try_publish_v5(topic, p.qos, p.retain, buf.clone(), props)
                    }
                };
                if handed_over {
                    if let Some(props) = pub_props.as_mut() {
                        props.sent();
                    }
                    seq += 1;
                    handed.push_back(Handed { intended, len: buf.len() as u64 });
                } else {
                    // rumqttc's request queue is full: keep the message (and its intended time)
                    // and try again after the next event.
                    owed = Some(intended);
                    blocked = true;
                }
            }
            _ = sleep_until(offline_due.unwrap_or_else(Instant::now).into()), if offline_due.is_some() => {
                // The group's offline window: DISCONNECT (the broker keeps a persistent
                // session and queues for it), stay away, connect again.
                offline_due = None;
                let o = ctx.plan.options.offline.expect("offline_due implies a window");
                offline.went_offline((Instant::now() - epoch).as_nanos() as u64);
                proto.offline_periods.fetch_add(1, Relaxed);
                super::protocol::disconnect_counting(session, super::DISCONNECT_WITHIN, tracker.as_mut(), counters).await;
                counters.connected.fetch_sub(1, Relaxed);
                let away = tokio::select! {
                    biased;
                    _ = end.cancelled() => false,
                    _ = stop.cancelled() => false,
                    _ = tokio::time::sleep(o.duration) => true,
                };
                if !away {
                    break Ok(false);
                }
                let outcome = tokio::select! {
                    biased;
                    _ = end.cancelled() => None,
                    r = tokio::time::timeout(ctx.plan.connect.timeout, session.connect()) => Some(r),
                };
                let session_present = match outcome {
                    None => break Ok(false),
                    Some(Ok(Ok(present))) => present,
                    Some(failed) => {
                        let failure = match failed {
                            Ok(Err(f)) => f,
                            _ => Failure::new("connect timeout", format!("no CONNACK within {:?}", ctx.plan.connect.timeout)),
                        };
                        rec.error(failure.class, format!("{client_id}: return from offline: {}", failure.detail));
                        let retried = match backoff.as_mut() {
                            Some(b) => super::reconnect(ctx, client_id, session, b, stop, &life).await,
                            None => None,
                        };
                        match retried {
                            Some(present) => present,
                            None => {
                                proto.return_failed.fetch_add(1, Relaxed);
                                break Ok(false);
                            }
                        }
                    }
                };
                counters.connected.fetch_add(1, Relaxed);
                offline.returned((Instant::now() - epoch).as_nanos() as u64, Instant::now());
                let returned = if session_present { &proto.returned_with_session } else { &proto.returned_without_session };
                returned.fetch_add(1, Relaxed);
                if let Some(p) = pub_props.as_mut() {
                    p.connected(proto.alias_allowed());
                }
                if !session_present {
                    if tracker.is_some() && !session.try_subscribe(&ctx.plan.subscribe) {
                        rec.error("protocol error", format!("{client_id}: SUBSCRIBE could not be queued after returning"));
                    }
                    forget_unacknowledged(counters, &mut handed, &mut inflight, &mut outstanding);
                }
                resume_schedule(schedule.as_mut(), window, &mut owed, counters, true);
                blocked = false;
            }
            seen = super::lifecycle::next(session, &mut life, handed.is_empty() && outstanding == 0, !stop.is_cancelled()) => {
                blocked = false;
                let now = Instant::now();
                match seen {
                    Err(ended) => {
                        use super::lifecycle::Rejoined;
                        let (session_present, missed_is_loss) = match super::lifecycle::rejoin(ctx, client_id, session, backoff.as_mut(), &mut life, ended, stop).await {
                            Rejoined::Back { session_present, missed_is_loss } => (session_present, missed_is_loss),
                            Rejoined::Lost(failure) => break Err(failure),
                            Rejoined::Gone => break Ok(false),
                        };
                        blocked = false;
                        if let Some(p) = pub_props.as_mut() {
                            p.connected(proto.alias_allowed());
                        }
                        if tracker.is_some() && !session.try_subscribe(&ctx.plan.subscribe) {
                            rec.error("protocol error", format!("{client_id}: SUBSCRIBE could not be queued after a reconnect"));
                        }
                        if !session_present {
                            forget_unacknowledged(counters, &mut handed, &mut inflight, &mut outstanding);
                        }
                        // Churn's offline time is not owed at all.
                        resume_schedule(schedule.as_mut(), window, &mut owed, counters, missed_is_loss);
                    }
                    Ok(Seen::Written(pkid)) => {
                        if pkid != 0 && inflight.get(pkid as usize).is_some_and(Option::is_some) {
                            // A QoS 1/2 message re-sent after a reconnect (same packet id).
                            counters.retransmitted.fetch_add(1, Relaxed);
                            continue;
                        }
                        let Some(h) = handed.pop_front() else { continue };
                        written += 1;
                        counters.sent.fetch_add(1, Relaxed);
                        counters.sent_bytes.fetch_add(h.len, Relaxed);
                        let steady = window.is_some_and(|w| w.is_steady(h.intended));
                        if steady {
                            counters.steady_sent.fetch_add(1, Relaxed);
                        }
                        if let Some(slot) = inflight.get_mut(pkid as usize).filter(|_| pkid != 0) {
                            *slot = Some((now, h.intended, steady));
                            outstanding += 1;
                        }
                    }
                    Ok(Seen::Acked { pkid, refused }) => {
                        let Some((written_at, intended, steady)) = inflight.get_mut(pkid as usize).and_then(Option::take) else { continue };
                        outstanding = outstanding.saturating_sub(1);
                        match refused {
                            None => {
                                counters.acked.fetch_add(1, Relaxed);
                                samples.record(rec, Metric::Ack, steady, now - written_at, now);
                                samples.record(rec, Metric::AckCorrected, steady, now.saturating_duration_since(intended), now);
                            }
                            Some(reason) => {
                                counters.refused.fetch_add(1, Relaxed);
                                rec.error("mqtt: publish refused", format!("{client_id}: {reason}"));
                            }
                        }
                    }
                    Ok(Seen::Received(payload, _)) => {
                        counters.delivered.fetch_add(1, Relaxed);
                        counters.delivered_bytes.fetch_add(payload.len() as u64, Relaxed);
                        let (Some(h), Some(t)) = (parse_header(&payload), tracker.as_mut()) else {
                            life.received_other(&payload);
                            continue;
                        };
                        t.record(h.publisher, h.seq);
                        offline.on_received(h.sent_ns, now);
                        let now_ns = (now - epoch).as_nanos() as u64;
                        let intended = epoch + Duration::from_nanos(h.intended_ns);
                        let steady = window.is_some_and(|w| w.is_steady(intended));
                        if steady {
                            counters.steady_delivered.fetch_add(1, Relaxed);
                            counters.steady_delivered_bytes.fetch_add(payload.len() as u64, Relaxed);
                        }
                        let ns = |from: u64| Duration::from_nanos(now_ns.saturating_sub(from));
                        samples.record(rec, Metric::E2eCorrected, steady, ns(h.intended_ns), now);
                        samples.record(rec, Metric::E2eUncorrected, steady, ns(h.sent_ns), now);
                    }
                    Ok(Seen::Retained(_)) => {
                        // The broker's stored message, sent because we subscribed: counted apart
                        // (its sequence number may repeat one already received).
                        proto.retained.fetch_add(1, Relaxed);
                    }
                    Ok(Seen::SubAcked { refused, reason: Some(reason) }) => {
                        rec.error("mqtt: subscribe refused", format!("{client_id}: {refused} filter(s) refused (SUBACK {reason})"));
                    }
                    Ok(_) => {}
                }
            }
        }
    };

    if result.is_err() {
        // The session is gone for good: its unacknowledged messages never will be.
        counters.abandoned.fetch_add(outstanding as u64, Relaxed);
    }
    offline.finish(proto);
    samples.flush(rec, Instant::now());
    if publish.is_some() {
        rec.publisher_done(global, written);
    }
    if let Some(tracker) = tracker {
        rec.subscriber_done(SubscriberResult {
            group: ctx.group,
            tracker,
        });
    }
    result
}

/// Where in its period a device's schedule starts: random per device, fixed for the run. A
/// real fleet's devices are not synchronised, and neither are ours, at the start of the window
/// or when a pause ends or the rate changes (a fleet restarting in lockstep would be a burst
/// the scenario never asked for).
struct Phase(f64);

impl Phase {
    fn new(seed: u64, device: usize) -> Phase {
        let mut rng = rand::rngs::SmallRng::seed_from_u64(seed ^ (device as u64).rotate_left(17));
        Phase(rng.random::<f64>())
    }

    /// The offset into a period at `rate` messages per second.
    fn of(&self, rate: f64) -> Duration {
        Duration::from_secs_f64(self.0 / rate)
    }
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A new session (the broker kept none): rumqttc dropped its queued and unacknowledged
/// requests. The queued ones were never written; the unacknowledged stay "sent, not acked".
fn forget_unacknowledged(
    counters: &crate::stats::GroupCounters,
    handed: &mut VecDeque<Handed>,
    inflight: &mut [Option<(Instant, Instant, bool)>],
    outstanding: &mut usize,
) {
    counters.never_sent.fetch_add(handed.len() as u64, Relaxed);
    handed.clear();
    inflight.iter_mut().for_each(|slot| *slot = None);
    counters.abandoned.fetch_add(*outstanding as u64, Relaxed);
    *outstanding = 0;
}

/// After a time away, the schedule resumes now: what fell due meanwhile is not sent late; it
/// counts as never sent when `missed_is_loss` (not for churn's planned offline time).
fn resume_schedule(
    schedule: Option<&mut Schedule>,
    window: Option<TrafficWindow>,
    owed: &mut Option<Instant>,
    counters: &crate::stats::GroupCounters,
    missed_is_loss: bool,
) {
    let (Some(s), Some(w)) = (schedule, window) else {
        return;
    };
    let now = Instant::now();
    let mut next = owed.take().unwrap_or_else(|| s.next_due().into_std());
    while next < now && next < w.end {
        if missed_is_loss {
            counters.never_sent.fetch_add(1, Relaxed);
        }
        next = s.next_due().into_std();
    }
    *owed = Some(next);
}
