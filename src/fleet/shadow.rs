//! A shadow group's device: AWS IoT Device Shadow flows over its session.
//!
//! ```text
//! connect -> SUBSCRIBE the 7 response topics -> SUBACK -> GET (404 expected when new)
//! window:  reported update every 1/update s; desired write every 1/desired s (acting as the
//!          app); on update/delta: report the delta's state back (react)
//! stop:    DELETE (when asked), wait for its answer, then the session ends
//! ```
//!
//! One request is in flight at a time per device (AWS allows 10 per connection; one keeps
//! versions predictable and matching trivial): a scheduled update that falls due meanwhile is
//! sent when the answer arrives, and a second one due before that is merged into it
//! (counted `coalesced`). Answers are matched by `clientToken` (the device's request counter);
//! accepted versions must increase. Topics are rendered once per device, payloads written into
//! one reused buffer, answers parsed in place (borrowed `&str` / raw JSON).

use std::io::Write as _;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use serde::Deserialize;
use tokio::time::sleep_until;
use tokio_util::sync::CancellationToken;

use super::failure::Failure;
use super::pacer::{Arrivals, Schedule};
use super::session::{Seen, Session};
use super::GroupCtx;
use crate::aws::shadow::Op;
use crate::aws::stats::{op_index, ShadowMetric, ShadowSamples};
use crate::scenario::SubscribePlan;
use crate::stats::TrafficWindow;

/// A request with no answer after this long counts as unanswered.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(5);

/// The response topics a device subscribes to, after its shadow's prefix.
const RESPONSES: [&str; 7] = [
    "update/accepted",
    "update/rejected",
    "update/delta",
    "get/accepted",
    "get/rejected",
    "delete/accepted",
    "delete/rejected",
];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Get { first: bool },
    Report,
    Desired,
    DeltaReport,
    Delete,
}

impl Kind {
    fn op(self) -> Op {
        match self {
            Kind::Get { .. } => Op::Get,
            Kind::Delete => Op::Delete,
            _ => Op::Update,
        }
    }
}

struct Pending {
    token: u64,
    kind: Kind,
    sent: Instant,
}

/// The fields of an answer the device reads; borrowed from the payload.
#[derive(Deserialize)]
struct Answer<'a> {
    #[serde(rename = "clientToken", borrow, default)]
    client_token: Option<&'a str>,
    #[serde(default)]
    version: Option<u64>,
    #[serde(default)]
    code: Option<u16>,
    #[serde(borrow, default)]
    state: Option<&'a serde_json::value::RawValue>,
}

/// What is owed, in the order it goes out.
#[derive(Default)]
struct Owed {
    get: bool,
    delta: bool,
    desired: bool,
    report: bool,
    delete: bool,
}

/// Serves device `index`'s shadow until `end` (then `Ok(true)`; `Ok(false)` when the run
/// stopped while it was reconnecting) or until the session fails for good.
pub(super) async fn serve(
    ctx: &GroupCtx,
    index: usize,
    client_id: &str,
    session: &mut Session,
    stop: &CancellationToken,
    end: &CancellationToken,
) -> Result<bool, Failure> {
    let plan = ctx
        .plan
        .shadow
        .as_ref()
        .expect("shadow::serve runs for shadow groups");
    let stats = &*ctx.shadow;
    let c = stats.group(ctx.group);
    let rec = &*ctx.recorder;
    let counters = rec.group(ctx.group);
    let global = ctx.offset + index;
    let mut samples = ShadowSamples::new(ctx.group, index);

    let prefix = crate::aws::topics::prefix(client_id, plan.name.as_deref());
    let t_update = format!("{prefix}/update");
    let t_get = format!("{prefix}/get");
    let t_delete = format!("{prefix}/delete");
    let subs: Vec<SubscribePlan> = RESPONSES
        .iter()
        .map(|s| SubscribePlan {
            filter: format!("{prefix}/{s}"),
            qos: plan.qos,
        })
        .collect();
    if !session.try_subscribe(&subs) {
        return Err(Failure::new(
            "protocol error",
            "SUBSCRIBE could not be queued",
        ));
    }
    let qos = plan.qos;

    let mut window_rx = ctx.window.clone();
    let mut awaiting_window = true;
    let mut updates: Option<Schedule> = None;
    let mut desires: Option<Schedule> = None;
    let mut next_update: Option<tokio::time::Instant> = None;
    let mut next_desired: Option<tokio::time::Instant> = None;
    let mut subscribed = false;
    let mut finished = false;
    let mut owed = Owed {
        get: plan.get,
        ..Owed::default()
    };
    let mut pending: Option<Pending> = None;
    let mut token = 0u64;
    let mut last_version: Option<u64> = None;
    let mut delta_state: Vec<u8> = Vec::with_capacity(128);
    let mut desired_sent: Option<Instant> = None;
    let mut delta_timed = false;
    let mut seq = 0u64;
    let mut setpoint = 0u64;
    let mut buf: Vec<u8> = Vec::with_capacity(256);
    let started = Instant::now();
    let mut backoff = ctx
        .plan
        .reconnect
        .map(|p| super::backoff::Backoff::new(p, ctx.seed ^ (global as u64).rotate_left(29)));

    let result = loop {
        // Send what is owed when nothing is in flight.
        if subscribed && pending.is_none() {
            let kind = if owed.get {
                Some(Kind::Get { first: true })
            } else if owed.delta {
                Some(Kind::DeltaReport)
            } else if owed.desired {
                Some(Kind::Desired)
            } else if owed.report {
                Some(Kind::Report)
            } else if owed.delete && finished {
                Some(Kind::Delete)
            } else {
                None
            };
            if let Some(kind) = kind {
                token += 1;
                buf.clear();
                let version = last_version.filter(|_| plan.versioned);
                let topic = match kind {
                    Kind::Get { .. } => {
                        let _ = write!(buf, r#"{{"clientToken":"{token}"}}"#);
                        &t_get
                    }
                    Kind::Delete => {
                        let _ = write!(buf, r#"{{"clientToken":"{token}"}}"#);
                        &t_delete
                    }
                    Kind::Report => {
                        seq += 1;
                        let _ = write!(
                            buf,
                            r#"{{"state":{{"reported":{{"seq":{seq},"uptime_ms":{}}}}},"clientToken":"{token}""#,
                            started.elapsed().as_millis()
                        );
                        &t_update
                    }
                    Kind::Desired => {
                        setpoint += 1;
                        let _ = write!(
                            buf,
                            r#"{{"state":{{"desired":{{"setpoint":{setpoint}}}}},"clientToken":"{token}""#
                        );
                        &t_update
                    }
                    Kind::DeltaReport => {
                        buf.extend_from_slice(br#"{"state":{"reported":"#);
                        buf.extend_from_slice(&delta_state);
                        let _ = write!(buf, r#"}},"clientToken":"{token}""#);
                        &t_update
                    }
                };
                if kind.op() == Op::Update {
                    if let Some(v) = version {
                        let _ = write!(buf, r#","version":{v}"#);
                    }
                    buf.push(b'}');
                }
                if session.try_publish(topic, qos, false, buf.clone()) {
                    match kind {
                        Kind::Get { .. } => owed.get = false,
                        Kind::DeltaReport => owed.delta = false,
                        Kind::Desired => {
                            owed.desired = false;
                            desired_sent = Some(Instant::now());
                            delta_timed = false;
                        }
                        Kind::Report => owed.report = false,
                        // Its in-flight slot was reserved when the run stopped.
                        Kind::Delete => owed.delete = false,
                    }
                    if kind != Kind::Delete {
                        c.in_flight.fetch_add(1, Relaxed);
                    }
                    c.requests[op_index(kind.op())].fetch_add(1, Relaxed);
                    counters.sent.fetch_add(1, Relaxed);
                    counters.sent_bytes.fetch_add(buf.len() as u64, Relaxed);
                    pending = Some(Pending {
                        token,
                        kind,
                        sent: Instant::now(),
                    });
                } else {
                    // The request queue is full: try again after the next event.
                    token -= 1;
                    match kind {
                        Kind::Report => seq -= 1,
                        Kind::Desired => setpoint -= 1,
                        _ => {}
                    }
                }
            }
        }
        if finished && pending.is_none() && !owed.delete {
            // Nothing more to send: wait for the end of the session.
            tokio::select! {
                biased;
                _ = end.cancelled() => break Ok(true),
                seen = session.next() => {
                    if let Err(f) = seen {
                        break Err(f);
                    }
                    continue;
                }
            }
        }
        let deadline = pending.as_ref().map(|p| p.sent + RESPONSE_TIMEOUT);
        tokio::select! {
            biased;
            _ = end.cancelled() => break Ok(true),
            _ = stop.cancelled(), if !finished => {
                finished = true;
                awaiting_window = false;
                next_update = None;
                next_desired = None;
                owed.report = false;
                owed.desired = false;
                if plan.delete {
                    owed.delete = true;
                    c.in_flight.fetch_add(1, Relaxed);
                }
            }
            changed = window_rx.changed(), if awaiting_window => {
                if changed.is_err() {
                    awaiting_window = false;
                    continue;
                }
                let window: Option<TrafficWindow> = *window_rx.borrow_and_update();
                let Some(w) = window else { continue };
                awaiting_window = false;
                let start = tokio::time::Instant::from_std(w.start);
                let phase = phase(ctx.seed, global);
                let mut u = Schedule::new(start + Duration::from_secs_f64(phase / plan.update_rate), plan.update_rate, Arrivals::Constant, 0);
                next_update = Some(u.next_due());
                updates = Some(u);
                if let Some(rate) = plan.desired_rate {
                    let mut d = Schedule::new(start + Duration::from_secs_f64((phase + 0.5) / rate), rate, Arrivals::Constant, 0);
                    next_desired = Some(d.next_due());
                    desires = Some(d);
                }
                let end_at = tokio::time::Instant::from_std(w.end);
                if next_update.is_some_and(|t| t >= end_at) { next_update = None; }
                if next_desired.is_some_and(|t| t >= end_at) { next_desired = None; }
            }
            _ = sleep_until(next_update.unwrap_or_else(tokio::time::Instant::now)), if next_update.is_some() => {
                if owed.report { c.coalesced.fetch_add(1, Relaxed); }
                owed.report = true;
                next_update = updates.as_mut().map(Schedule::next_due).filter(|t| window_open(&window_rx, *t));
            }
            _ = sleep_until(next_desired.unwrap_or_else(tokio::time::Instant::now)), if next_desired.is_some() => {
                if owed.desired { c.coalesced.fetch_add(1, Relaxed); }
                owed.desired = true;
                next_desired = desires.as_mut().map(Schedule::next_due).filter(|t| window_open(&window_rx, *t));
            }
            _ = sleep_until(deadline.map_or_else(tokio::time::Instant::now, tokio::time::Instant::from_std)), if deadline.is_some() => {
                pending = None;
                c.unanswered.fetch_add(1, Relaxed);
                c.in_flight.fetch_sub(1, Relaxed);
            }
            seen = session.next() => {
                let now = Instant::now();
                match seen {
                    Err(failure) => {
                        counters.disconnects.fetch_add(1, Relaxed);
                        let Some(backoff) = backoff.as_mut() else { break Err(failure) };
                        counters.connected.fetch_sub(1, Relaxed);
                        rec.error(failure.class, format!("{client_id}: {} (reconnecting)", failure.detail));
                        // The lost session's request is never answered (a DELETE's
                        // reserved slot included).
                        if pending.take().is_some() {
                            c.unanswered.fetch_add(1, Relaxed);
                            c.in_flight.fetch_sub(1, Relaxed);
                        }
                        let Some(_) = super::reconnect(ctx, client_id, session, backoff, stop, &()).await else {
                            break Ok(false);
                        };
                        counters.connected.fetch_add(1, Relaxed);
                        subscribed = false;
                        if !session.try_subscribe(&subs) {
                            rec.error("protocol error", format!("{client_id}: SUBSCRIBE could not be queued after a reconnect"));
                        }
                    }
                    Ok(Seen::SubAcked { refused, reason }) => {
                        if refused > 0 {
                            rec.error("mqtt: subscribe refused", format!("{client_id}: {refused} shadow response filter(s) refused (SUBACK {})", reason.unwrap_or_default()));
                        }
                        subscribed = true;
                    }
                    Ok(Seen::Received(payload, topic)) => {
                        counters.delivered.fetch_add(1, Relaxed);
                        counters.delivered_bytes.fetch_add(payload.len() as u64, Relaxed);
                        let Some(suffix) = topic.strip_prefix(prefix.as_bytes()).and_then(|s| s.strip_prefix(b"/")) else { continue };
                        let Ok(answer) = serde_json::from_slice::<Answer<'_>>(&payload) else {
                            rec.error("shadow: unreadable answer", format!("{client_id}: {} bytes on {}", payload.len(), String::from_utf8_lossy(&topic)));
                            continue;
                        };
                        if suffix == b"update/delta" {
                            c.deltas.fetch_add(1, Relaxed);
                            if let (Some(t), false) = (desired_sent, delta_timed) {
                                samples.record(stats, ShadowMetric::Delta, now - t);
                                delta_timed = true;
                            }
                            if plan.react && !finished {
                                if let Some(state) = answer.state {
                                    delta_state.clear();
                                    delta_state.extend_from_slice(state.get().as_bytes());
                                    owed.delta = true;
                                }
                            }
                            continue;
                        }
                        let accepted = suffix.ends_with(b"/accepted");
                        let ours = pending.as_ref().is_some_and(|p| {
                            answer.client_token.and_then(|t| t.parse::<u64>().ok()) == Some(p.token)
                                && suffix.starts_with(p.kind.op().as_str().as_bytes())
                        });
                        if !ours {
                            continue;
                        }
                        let p = pending.take().expect("ours implies pending");
                        c.in_flight.fetch_sub(1, Relaxed);
                        let op = p.kind.op();
                        if accepted {
                            c.accepted[op_index(op)].fetch_add(1, Relaxed);
                            let metric = match op {
                                Op::Update => ShadowMetric::Update,
                                Op::Get => ShadowMetric::Get,
                                Op::Delete => ShadowMetric::Delete,
                            };
                            samples.record(stats, metric, now - p.sent);
                            if let Some(v) = answer.version {
                                let regressed = match (op, last_version) {
                                    (Op::Update, Some(last)) => v <= last,
                                    (_, Some(last)) => v < last,
                                    (_, None) => false,
                                };
                                if regressed {
                                    c.version_regressions.fetch_add(1, Relaxed);
                                    rec.error("shadow: version went backwards", format!("{client_id}: {} accepted at version {v} after {}", op.as_str(), last_version.unwrap_or_default()));
                                }
                                last_version = Some(v);
                            }
                            if p.kind == Kind::DeltaReport {
                                c.delta_reports.fetch_add(1, Relaxed);
                                if let Some(t) = desired_sent.take() {
                                    samples.record(stats, ShadowMetric::DeltaRoundTrip, now - t);
                                }
                            }
                        } else {
                            let code = answer.code.unwrap_or(0);
                            stats.rejected(ctx.group, code);
                            if p.kind == (Kind::Get { first: true }) && code == 404 {
                                c.not_found_at_start.fetch_add(1, Relaxed);
                            } else {
                                rec.error("shadow: request rejected", format!("{client_id}: {} rejected with {code}", op.as_str()));
                            }
                            // The version is unknown now (a 404 or a conflict): the next
                            // update goes without one and learns it.
                            last_version = None;
                        }
                    }
                    Ok(_) => {}
                }
            }
        }
    };
    if pending.take().is_some() {
        c.unanswered.fetch_add(1, Relaxed);
        c.in_flight.fetch_sub(1, Relaxed);
    } else if owed.delete {
        // Reserved at stop, never sent.
        c.in_flight.fetch_sub(1, Relaxed);
    }
    samples.flush(stats);
    result
}

/// Whether `t` is still inside the traffic window.
fn window_open(
    rx: &tokio::sync::watch::Receiver<Option<TrafficWindow>>,
    t: tokio::time::Instant,
) -> bool {
    rx.borrow()
        .is_some_and(|w| t < tokio::time::Instant::from_std(w.end))
}

/// Where in its period a device's schedule starts (devices are not synchronised): in [0, 1).
fn phase(seed: u64, device: usize) -> f64 {
    use rand::{Rng as _, SeedableRng as _};
    let mut rng = rand::rngs::SmallRng::seed_from_u64(seed ^ (device as u64).rotate_left(23));
    rng.random::<f64>()
}
