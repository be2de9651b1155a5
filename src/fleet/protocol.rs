//! Protocol breadth at run time: transports, persistent sessions going offline and the queued
//! messages they find on return, retained messages, shared subscriptions, MQTT 5 options and
//! what the broker granted of them.
//!
//! Why: these are what brokers struggle with in production (queues for offline devices,
//! share-group dispatch, per-packet properties), so a run must both exercise them and say
//! truthfully what happened: queued messages delivered, lost and duplicated per group, the
//! time to drain a queue, and each option the broker refused, lowered or ignored.
//!
//! Nothing here runs per message except [`OfflineTracker::on_received`] (two integer
//! compares) and [`PublishProps::properties`] (the properties a PUBLISH carries).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use rumqttc::v5;
use rumqttc::{NetworkOptions, Transport as RumqttTransport};
use serde::{Deserialize, Serialize};

use crate::scenario::protocol::{split_share, GroupOptions, Transport, V5Options};
use crate::scenario::traffic::matches;
use crate::scenario::{GroupPlan, Plan};
use crate::stats::histogram::{self, Percentiles};
use crate::stats::sequence::{LossLedger, SequenceTotals, SequenceTracker};
use crate::stats::{GroupCounters, Recorder};
use crate::tls::device::DeviceTls;
use crate::traffic::payload::parse_header;

use super::session::Session;

/// The topic alias thingswarm uses: one topic per publisher, so one alias.
pub const TOPIC_ALIAS: u16 = 1;

/// rumqttc's transport for a scenario transport; TLS ones carry the device's configuration
/// (its client certificate), plain ones ignore it.
pub fn transport(
    t: &Transport,
    tls: &DeviceTls,
    host: &str,
    net: &mut NetworkOptions,
) -> RumqttTransport {
    match t {
        Transport::Mqtts => tls.transport(host, net),
        Transport::Wss { .. } => tls.websocket_transport(host, net),
        Transport::Ws { .. } => RumqttTransport::Ws,
        Transport::Tcp => RumqttTransport::Tcp,
    }
}

/// Puts a group's MQTT 5 CONNECT options on `opts`.
pub fn apply_v5(opts: &mut v5::MqttOptions, v: &V5Options) {
    if let Some(d) = v.session_expiry {
        opts.set_session_expiry_interval(Some(V5Options::secs(d)));
    }
    if let Some(n) = v.receive_maximum {
        opts.set_receive_maximum(Some(n));
    }
    if let Some(n) = v.max_packet_size {
        opts.set_max_packet_size(Some(n));
    }
    if !v.user_properties.is_empty() {
        opts.set_user_properties(v.user_properties.clone());
    }
}

/// What an MQTT 5 CONNACK said about the options asked for (the properties that matter).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConnAckFacts {
    /// Session expiry the broker imposed (sent only when it differs from the request).
    pub session_expiry: Option<u32>,
    /// QoS 1/2 messages the broker accepts in flight from us.
    pub receive_max: Option<u16>,
    /// Highest QoS the broker supports.
    pub max_qos: Option<u8>,
    /// 0 when the broker does not store retained messages.
    pub retain_available: Option<u8>,
    /// Largest packet the broker accepts.
    pub max_packet_size: Option<u32>,
    /// Topic aliases the broker accepts from us (absent: none).
    pub topic_alias_max: Option<u16>,
    /// 0 when the broker does not support shared subscriptions.
    pub shared_available: Option<u8>,
}

impl ConnAckFacts {
    /// The facts of a successful CONNACK.
    pub fn of(ack: &v5::mqttbytes::v5::ConnAck) -> ConnAckFacts {
        let Some(p) = &ack.properties else {
            return ConnAckFacts::default();
        };
        ConnAckFacts {
            session_expiry: p.session_expiry_interval,
            receive_max: p.receive_max,
            max_qos: p.max_qos,
            retain_available: p.retain_available,
            max_packet_size: p.max_packet_size,
            topic_alias_max: p.topic_alias_max,
            shared_available: p.shared_subscription_available,
        }
    }

    /// Whether the broker accepts our topic alias.
    pub fn alias_allowed(&self) -> bool {
        self.topic_alias_max.unwrap_or(0) >= TOPIC_ALIAS
    }

    /// Each option of `plan` the broker refused or lowered, as one line naming the option,
    /// what was asked and what the broker said.
    pub fn refusals(&self, plan: &GroupPlan) -> Vec<String> {
        let v = &plan.options.v5;
        let mut out = Vec::new();
        if let (Some(asked), Some(granted)) = (v.session_expiry, self.session_expiry) {
            if granted < V5Options::secs(asked) {
                out.push(format!(
                    "session_expiry: asked {}s, broker granted {granted}s (CONNACK session expiry interval)",
                    asked.as_secs()
                ));
            }
        }
        if v.topic_alias && !self.alias_allowed() {
            out.push(format!(
                "topic_alias: broker accepts {} topic aliases (CONNACK topic alias maximum); full topics sent instead",
                self.topic_alias_max.unwrap_or(0)
            ));
        }
        if let Some(p) = &plan.publish {
            if p.retain && self.retain_available == Some(0) {
                out.push(
                    "retain: broker has retain unavailable (CONNACK retain available 0)".into(),
                );
            }
            if let Some(max) = self.max_qos.filter(|&m| m < p.qos) {
                out.push(format!(
                    "qos: publishing at QoS {}, broker's maximum is {max} (CONNACK maximum QoS)",
                    p.qos
                ));
            }
        }
        if plan.options.share.is_some() && self.shared_available == Some(0) {
            out.push(
                "shared subscriptions: broker has them unavailable (CONNACK shared subscription available 0)"
                    .into(),
            );
        }
        if let Some(n) = self
            .receive_max
            .filter(|&n| n < super::session::INFLIGHT && plan.publish.is_some())
        {
            out.push(format!(
                "receive_maximum: broker lowered our in-flight window from {} to {n} (CONNACK receive maximum)",
                super::session::INFLIGHT
            ));
        }
        out
    }
}

/// One group's protocol figures, filled by its devices.
pub struct GroupProtocolStats {
    /// Retained messages received (flag set: sent because we subscribed).
    pub retained: AtomicU64,
    /// Offline windows taken.
    pub offline_periods: AtomicU64,
    /// Returns whose CONNACK said the session was kept.
    pub returned_with_session: AtomicU64,
    /// Returns whose CONNACK said the session was new.
    pub returned_without_session: AtomicU64,
    /// Returns that failed (no CONNACK): the device is lost for the rest of the run.
    pub return_failed: AtomicU64,
    /// Messages published while a device was offline that it received after returning.
    pub queued_delivered: AtomicU64,
    /// Return CONNACK -> the last queued message's arrival, per device that got any.
    drain: Mutex<Histogram<u64>>,
    /// Refusal line -> devices that saw it.
    refusals: Mutex<BTreeMap<String, u64>>,
    /// Set when a CONNACK allowed no topic alias: the group's publishers send full topics.
    alias_refused: AtomicBool,
}

impl Default for GroupProtocolStats {
    fn default() -> Self {
        GroupProtocolStats {
            retained: AtomicU64::new(0),
            offline_periods: AtomicU64::new(0),
            returned_with_session: AtomicU64::new(0),
            returned_without_session: AtomicU64::new(0),
            return_failed: AtomicU64::new(0),
            queued_delivered: AtomicU64::new(0),
            drain: Mutex::new(histogram::latency()),
            refusals: Mutex::new(BTreeMap::new()),
            alias_refused: AtomicBool::new(false),
        }
    }
}

impl GroupProtocolStats {
    /// Counts what a device's CONNACK refused of its group's options (once per connect; not on
    /// the message path).
    pub fn note_connack(&self, facts: &ConnAckFacts, plan: &GroupPlan) {
        if !facts.alias_allowed() {
            self.alias_refused.store(true, Relaxed);
        }
        let lines = facts.refusals(plan);
        if lines.is_empty() {
            return;
        }
        let mut r = self.refusals.lock().unwrap_or_else(|e| e.into_inner());
        for line in lines {
            *r.entry(line).or_default() += 1;
        }
    }

    /// Whether the broker accepted topic aliases (as far as CONNACKs so far said).
    pub fn alias_allowed(&self) -> bool {
        !self.alias_refused.load(Relaxed)
    }

    /// Counts a refusal seen later in a session (a PUBACK reason, a DISCONNECT).
    pub fn note(&self, line: String) {
        let mut r = self.refusals.lock().unwrap_or_else(|e| e.into_inner());
        *r.entry(line).or_default() += 1;
    }
}

/// One device's view of its offline windows: which received messages were queued for it.
#[derive(Debug, Default)]
pub struct OfflineTracker {
    /// Run-epoch nanoseconds when the device went offline (last window).
    offline_ns: u64,
    /// Run-epoch nanoseconds of the return CONNACK; 0: not back (yet).
    returned_ns: u64,
    returned_at: Option<Instant>,
    last_queued: Option<Instant>,
    queued: u64,
}

impl OfflineTracker {
    /// The device sends DISCONNECT now.
    pub fn went_offline(&mut self, now_ns: u64) {
        self.offline_ns = now_ns;
        self.returned_ns = 0;
    }

    /// The return CONNACK arrived.
    pub fn returned(&mut self, now_ns: u64, now: Instant) {
        self.returned_ns = now_ns;
        self.returned_at = Some(now);
    }

    /// A message sent at `sent_ns` arrived at `now`: queued when it was sent while the
    /// device was away and arrived after its return.
    pub fn on_received(&mut self, sent_ns: u64, now: Instant) {
        if self.returned_ns != 0 && sent_ns >= self.offline_ns && sent_ns < self.returned_ns {
            self.queued += 1;
            self.last_queued = Some(now);
        }
    }

    /// Adds this device's figures to its group's.
    pub fn finish(&self, stats: &GroupProtocolStats) {
        stats.queued_delivered.fetch_add(self.queued, Relaxed);
        if let (Some(back), Some(last)) = (self.returned_at, self.last_queued) {
            let us = last.saturating_duration_since(back).as_micros() as u64;
            let _ = stats
                .drain
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .record(us.clamp(1, histogram::MAX_US));
        }
    }
}

/// The MQTT 5 properties a device's PUBLISHes carry (topic alias, user properties, message
/// expiry), built once; `None` when the group sets none.
pub struct PublishProps {
    base: v5::mqttbytes::v5::PublishProperties,
    alias: bool,
    alias_established: bool,
}

impl PublishProps {
    /// For a group's options; `None` when no PUBLISH property is asked for.
    pub fn new(v: &V5Options) -> Option<PublishProps> {
        if !v.topic_alias && v.user_properties.is_empty() && v.message_expiry.is_none() {
            return None;
        }
        Some(PublishProps {
            base: v5::mqttbytes::v5::PublishProperties {
                message_expiry_interval: v.message_expiry.map(V5Options::secs),
                user_properties: v.user_properties.clone(),
                ..Default::default()
            },
            alias: v.topic_alias,
            alias_established: false,
        })
    }

    /// After a CONNACK: aliases are per connection, so the next PUBLISH names the topic again;
    /// a broker accepting none (`alias_allowed` false) turns aliasing off.
    pub fn connected(&mut self, alias_allowed: bool) {
        self.alias_established = false;
        self.alias &= alias_allowed;
    }

    /// The topic to write and the properties of the next PUBLISH (the topic is empty once
    /// the alias is established). Call [`PublishProps::sent`] when it was handed over.
    pub fn properties<'t>(
        &self,
        topic: &'t str,
    ) -> (&'t str, v5::mqttbytes::v5::PublishProperties) {
        let mut p = self.base.clone();
        if self.alias {
            p.topic_alias = Some(TOPIC_ALIAS);
            if self.alias_established {
                return ("", p);
            }
        }
        (topic, p)
    }

    /// The PUBLISH from [`PublishProps::properties`] was handed to the client.
    pub fn sent(&mut self) {
        self.alias_established = self.alias;
    }
}

/// Sends DISCONNECT and waits (bounded by `within`) until it is written, like
/// [`Session::disconnect`], but counts the messages that arrive meanwhile as delivered (and in
/// `tracker`) instead of dropping them: rumqttc acknowledges them on arrival, so the broker
/// will not send them again, and an uncounted one would show up as lost.
pub async fn disconnect_counting(
    session: &mut Session,
    within: Duration,
    mut tracker: Option<&mut SequenceTracker>,
    counters: &GroupCounters,
) {
    let mut seen = |payload: &[u8]| {
        counters.delivered.fetch_add(1, Relaxed);
        counters
            .delivered_bytes
            .fetch_add(payload.len() as u64, Relaxed);
        if let (Some(h), Some(t)) = (parse_header(payload), tracker.as_deref_mut()) {
            t.record(h.publisher, h.seq);
        }
    };
    let drain = async {
        match session {
            Session::V311(client, events) => {
                if client.disconnect().await.is_ok() {
                    while let Ok(event) = events.poll().await {
                        match event {
                            rumqttc::Event::Outgoing(rumqttc::Outgoing::Disconnect) => break,
                            rumqttc::Event::Incoming(rumqttc::Packet::Publish(p)) if !p.retain => {
                                seen(&p.payload)
                            }
                            _ => {}
                        }
                    }
                }
            }
            Session::V5(client, events) => {
                if client.disconnect().await.is_ok() {
                    while let Ok(event) = events.poll().await {
                        match event {
                            v5::Event::Outgoing(rumqttc::Outgoing::Disconnect) => break,
                            v5::Event::Incoming(v5::Incoming::Publish(p)) if !p.retain => {
                                seen(&p.payload)
                            }
                            _ => {}
                        }
                    }
                }
            }
        }
    };
    let _ = tokio::time::timeout(within, drain).await;
    session.drop_connection();
}

/// One group's protocol figures in the report: present when the group uses any of them.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct GroupProtocolReport {
    /// `mqtts`, `wss`, `ws` or `tcp`.
    pub transport: String,
    /// Set for plain transports: no TLS, no client identity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warning: Option<String>,
    /// MQTT 3.1.1 clean session / MQTT 5 clean start.
    pub clean_session: bool,
    /// Offline windows, when the group has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offline: Option<OfflineReport>,
    /// Retained messages received (sent by the broker because the device subscribed; not in
    /// the delivered count or the loss accounting).
    pub retained_received: u64,
    /// `$share/{name}/...` name when the group's subscriptions are shared.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub share: Option<String>,
    /// Loss, duplicates and reordering of this group's subscribers (a shared group settles
    /// its members together: each message is expected once per share).
    pub sequence: SequenceTotals,
    /// Options the broker refused, lowered or ignored, each with the devices that saw it.
    pub broker_refused: Vec<Refusal>,
}

/// A group's offline windows and what they found on return.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct OfflineReport {
    /// Offline at, from the start of traffic, seconds.
    pub at_s: f64,
    /// Offline for, seconds.
    pub for_s: f64,
    /// Devices that went offline.
    pub periods: u64,
    /// Returns whose CONNACK said the broker kept the session.
    pub returned_with_session: u64,
    /// Returns whose CONNACK said the session was new.
    pub returned_without_session: u64,
    /// Returns that never got a CONNACK.
    pub return_failed: u64,
    /// Messages published while a device was away that reached it after it returned (with a
    /// clean session: only those still in transit at the return).
    pub queued_delivered: u64,
    /// Return CONNACK -> arrival of the last queued message, per device that received any.
    pub drain_us: Percentiles,
}

/// One refused or ignored option.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refusal {
    /// The option, what was asked and what the broker said.
    pub what: String,
    /// Devices that saw it.
    pub devices: u64,
}

/// Whether a group's report needs the protocol section.
fn reported(g: &GroupPlan) -> bool {
    let o: &GroupOptions = &g.options;
    o.transport != Transport::Mqtts
        || o.offline.is_some()
        || o.share.is_some()
        || o.v5.any()
        || !g.clean_session
        || g.publish.as_ref().is_some_and(|p| p.retain)
}

/// Each group's protocol section (`None` for groups that use none of it).
pub fn reports(
    plan: &Plan,
    stats: &[Arc<GroupProtocolStats>],
    sequences: &[SequenceTotals],
) -> Vec<Option<GroupProtocolReport>> {
    plan.groups
        .iter()
        .zip(stats)
        .enumerate()
        .map(|(i, (g, s))| {
            let retained = s.retained.load(Relaxed);
            if !reported(g) && retained == 0 {
                return None;
            }
            let refusals = s.refusals.lock().unwrap_or_else(|e| e.into_inner());
            Some(GroupProtocolReport {
                transport: g.options.transport.scheme().to_string(),
                warning: g.options.transport.warning(),
                clean_session: g.clean_session,
                offline: g.options.offline.map(|o| OfflineReport {
                    at_s: o.at.as_secs_f64(),
                    for_s: o.duration.as_secs_f64(),
                    periods: s.offline_periods.load(Relaxed),
                    returned_with_session: s.returned_with_session.load(Relaxed),
                    returned_without_session: s.returned_without_session.load(Relaxed),
                    return_failed: s.return_failed.load(Relaxed),
                    queued_delivered: s.queued_delivered.load(Relaxed),
                    drain_us: Percentiles::of(&s.drain.lock().unwrap_or_else(|e| e.into_inner())),
                }),
                retained_received: retained,
                share: g.options.share.clone(),
                sequence: sequences.get(i).copied().unwrap_or_default(),
                broker_refused: refusals
                    .iter()
                    .map(|(what, &devices)| Refusal {
                        what: what.clone(),
                        devices,
                    })
                    .collect(),
            })
        })
        .collect()
}

/// Loss, duplicates and reordering once the run is over.
#[derive(Debug, Default)]
pub struct Settled {
    /// Over every subscriber.
    pub totals: SequenceTotals,
    /// Per group (zero for groups without subscribers).
    pub per_group: Vec<SequenceTotals>,
    /// Per group with subscribers: what a merge of shards settles loss from.
    pub ledgers: Vec<Option<LossLedger>>,
}

/// Settles loss per subscriber (each expects every message of the publishers whose topic
/// matches one of its filters), returning the totals, each group's share and its ledger.
/// Members of a shared subscription are settled together: the broker hands each message to
/// one member, so the share expects it once, and a copy at a second member is a duplicate.
pub fn settle_sequences(plan: &Plan, recorder: &Recorder) -> Settled {
    let mut publishers = Vec::new();
    let mut offset = 0usize;
    for group in &plan.groups {
        if let Some(p) = &group.publish {
            for i in 0..group.devices as usize {
                let client_id = group.client_id.render_index(i as u64);
                let topic = p.topic_for(&group.name, &client_id, i as u64);
                publishers.push(((offset + i) as u32, topic));
            }
        }
        offset += group.devices as usize;
    }
    let mut expected_by_group: Vec<Option<Vec<(u32, u64)>>> = vec![None; plan.groups.len()];
    let mut per_group = vec![SequenceTotals::default(); plan.groups.len()];
    let mut pooled: Vec<Option<SequenceTracker>> = (0..plan.groups.len()).map(|_| None).collect();
    let mut expected = |g: usize| -> Vec<(u32, u64)> {
        expected_by_group[g]
            .get_or_insert_with(|| {
                let filters = &plan.groups[g].subscribe;
                publishers
                    .iter()
                    .filter(|(_, topic)| {
                        filters
                            .iter()
                            .any(|f| matches(split_share(&f.filter).1, topic))
                    })
                    .map(|(id, _)| (*id, recorder.publisher_sent(*id as usize)))
                    .collect()
            })
            .clone()
    };
    // Every subscribing group has a ledger, with or without subscribers in this shard: what
    // this shard's publishers sent them counts at the merge either way.
    let mut ledgers: Vec<Option<LossLedger>> = (0..plan.groups.len())
        .map(|g| {
            (!plan.groups[g].subscribe.is_empty()).then(|| LossLedger {
                sent_to_each: expected(g).iter().map(|&(_, sent)| sent).sum(),
                ..LossLedger::default()
            })
        })
        .collect();
    let mut settle = |g: usize, tracker: &SequenceTracker, per_group: &mut [SequenceTotals]| {
        let expected = expected(g);
        per_group[g] += tracker.totals(&expected);
        if let Some(ledger) = &mut ledgers[g] {
            ledger.subscribers += 1;
            ledger.heard += tracker.heard(&expected);
        }
    };
    for sub in recorder.take_subscribers() {
        if plan.groups[sub.group].options.share.is_some() {
            match &mut pooled[sub.group] {
                Some(pool) => pool.absorb(&sub.tracker),
                slot @ None => *slot = Some(sub.tracker),
            }
        } else {
            settle(sub.group, &sub.tracker, &mut per_group);
        }
    }
    for (g, pool) in pooled.into_iter().enumerate() {
        if let Some(pool) = pool {
            settle(g, &pool, &mut per_group);
        }
    }
    let mut totals = SequenceTotals::default();
    for t in &per_group {
        totals += *t;
    }
    Settled {
        totals,
        per_group,
        ledgers,
    }
}

/// The summary lines of one group's protocol section (each ends with a newline).
pub fn summary(group: &str, p: &GroupProtocolReport) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    if let Some(w) = &p.warning {
        let _ = writeln!(s, "  WARNING    {group}: {w}");
    }
    if let Some(o) = &p.offline {
        let _ = writeln!(
            s,
            "  offline    {group}: {} went away at {:.1} s for {:.1} s ({}); back with session {}, new session {}, failed {}; queued delivered {}, lost {}, duplicates {}; drain p50 {} max {}",
            o.periods,
            o.at_s,
            o.for_s,
            if p.clean_session { "clean session" } else { "persistent session" },
            o.returned_with_session,
            o.returned_without_session,
            o.return_failed,
            o.queued_delivered,
            p.sequence.lost,
            p.sequence.duplicates,
            histogram::fmt_us(o.drain_us.p50),
            histogram::fmt_us(o.drain_us.max)
        );
    }
    if let Some(share) = &p.share {
        let _ = writeln!(
            s,
            "  share      {group}: $share/{share}: {} unique, lost {}, duplicates {} (members settled together)",
            p.sequence.unique, p.sequence.lost, p.sequence.duplicates
        );
    }
    if p.retained_received > 0 {
        let _ = writeln!(s, "  retained   {group}: {} received", p.retained_received);
    }
    for r in &p.broker_refused {
        let _ = writeln!(
            s,
            "  refused    {group}: {} ({} devices)",
            r.what, r.devices
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offline_tracker_counts_only_messages_sent_while_away() {
        let mut t = OfflineTracker::default();
        let start = Instant::now();
        t.on_received(5, start); // before any offline window
        t.went_offline(100);
        t.returned(200, start + Duration::from_millis(10));
        t.on_received(99, start + Duration::from_millis(11)); // sent before going away
        t.on_received(100, start + Duration::from_millis(12));
        t.on_received(150, start + Duration::from_millis(15));
        t.on_received(200, start + Duration::from_millis(20)); // sent after the return
        let stats = GroupProtocolStats::default();
        t.finish(&stats);
        assert_eq!(stats.queued_delivered.load(Relaxed), 2);
        let drain = Percentiles::of(&stats.drain.lock().unwrap());
        assert_eq!(drain.count, 1);
        // 15 ms - 10 ms, within the histogram's 3 significant digits.
        assert!((4_990..=5_010).contains(&drain.max), "{}", drain.max);
    }

    #[test]
    fn topic_alias_names_the_topic_once_per_connection() {
        let v = V5Options {
            topic_alias: true,
            message_expiry: Some(Duration::from_secs(30)),
            ..Default::default()
        };
        let mut p = PublishProps::new(&v).expect("options set");
        let allowed = ConnAckFacts {
            topic_alias_max: Some(10),
            ..Default::default()
        };
        p.connected(allowed.alias_allowed());
        let (topic, props) = p.properties("t/a");
        assert_eq!((topic, props.topic_alias), ("t/a", Some(TOPIC_ALIAS)));
        assert_eq!(props.message_expiry_interval, Some(30));
        p.sent();
        assert_eq!(p.properties("t/a").0, "");
        // A new connection forgets aliases; a broker allowing none turns them off.
        p.connected(ConnAckFacts::default().alias_allowed());
        let (topic, props) = p.properties("t/a");
        assert_eq!((topic, props.topic_alias), ("t/a", None));
        p.sent();
        assert_eq!(p.properties("t/a").0, "t/a");
    }

    #[test]
    fn no_publish_properties_when_none_are_asked() {
        assert!(PublishProps::new(&V5Options::default()).is_none());
    }
}
