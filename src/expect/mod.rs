//! Authorization probes: does the broker allow or deny one device one action, and which signal
//! said so.
//!
//! Each probe opens its own short-lived session with the device's identity (the fleet's
//! [`Session`]), performs one action and reads the answer the way DESIGN.md section 7 tabulates
//! it: CONNACK refusals, MQTT 5 PUBACK / SUBACK reason codes, MQTT 3.1.1 SUBACK 0x80, the
//! connection closed by the broker (AWS IoT on 3.1.1), and where the broker is silent
//! (receive denials, mosquitto's acl_file granting a forbidden subscription and checking at
//! delivery, publishes it drops after acknowledging) a delivery check: an observer device the
//! broker lets read and write the topic publishes or subscribes, and the probe waits a bounded
//! time for the message. Every wait is bounded; nothing here runs on the load path.

mod run;

use std::time::Duration;

use tokio::time::{timeout_at, Instant};

use crate::fleet::failure::Failure;
use crate::fleet::session::{Seen, Session, SessionOptions};
use crate::scenario::{Protocol, SubscribePlan};

pub use run::{probes, run_plan, ExpectGroup, ExpectationsReport, GroupedResult};

/// An action a device attempts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// CONNECT with the device's client id.
    Connect,
    /// PUBLISH (QoS 1) to a topic.
    Publish(String),
    /// SUBSCRIBE (QoS 1) to a filter.
    Subscribe(String),
    /// Receive a message published to a topic (subscribed to as an exact filter).
    Receive(String),
}

impl std::fmt::Display for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Action::Connect => f.write_str("connect"),
            Action::Publish(t) => write!(f, "publish {t}"),
            Action::Subscribe(t) => write!(f, "subscribe {t}"),
            Action::Receive(t) => write!(f, "receive {t}"),
        }
    }
}

/// What a probe expects, or what it observed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// The broker let the action happen.
    Allow,
    /// The broker refused or silently dropped it.
    Deny,
    /// The probe could not tell (connect failed for another reason, the observer was refused).
    Inconclusive,
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(match self {
            Verdict::Allow => "allow",
            Verdict::Deny => "deny",
            Verdict::Inconclusive => "inconclusive",
        })
    }
}

/// A device identity a probe connects with.
#[derive(Clone)]
pub struct Device {
    /// MQTT client id (= certificate CN).
    pub client_id: String,
    /// The device's TLS configuration (its certificate and key).
    pub tls: crate::tls::device::DeviceTls,
}

/// Where and how probes connect.
#[derive(Clone)]
pub struct ProbeTarget {
    /// Broker host (also the TLS server name).
    pub host: String,
    /// Broker port.
    pub port: u16,
    /// MQTT version.
    pub protocol: Protocol,
    /// Bound on each connect and on each acknowledgement wait.
    pub timeout: Duration,
    /// How long a delivery check waits for the message.
    pub delivery_wait: Duration,
}

/// One expectation to check.
#[derive(Clone)]
pub struct Probe {
    /// The device that acts.
    pub device: Device,
    /// What it does.
    pub action: Action,
    /// Allow or deny.
    pub expected: Verdict,
    /// A device the broker lets read and write the probed topics, for delivery checks
    /// (publish, subscribe and receive probes need one).
    pub observer: Option<Device>,
}

/// What a probe found.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct ProbeResult {
    /// The acting device.
    pub client_id: String,
    /// The action, as `publish dt/a/x`.
    pub action: String,
    /// Expected verdict.
    pub expected: Verdict,
    /// Observed verdict.
    pub observed: Verdict,
    /// The signal observed, e.g. "SUBACK 0x80", "connection closed", "not delivered within 2s".
    pub signal: String,
}

impl ProbeResult {
    /// Whether the broker did what the expectation says.
    pub fn holds(&self) -> bool {
        self.expected == self.observed
    }
}

/// Runs probes one after another (each with its own sessions).
pub async fn run_all(probes: &[Probe], target: &ProbeTarget) -> Vec<ProbeResult> {
    let mut out = Vec::with_capacity(probes.len());
    for p in probes {
        out.push(run(p, target).await);
    }
    out
}

/// Runs one probe.
pub async fn run(probe: &Probe, target: &ProbeTarget) -> ProbeResult {
    let (observed, signal) = observe(probe, target).await;
    ProbeResult {
        client_id: probe.device.client_id.clone(),
        action: probe.action.to_string(),
        expected: probe.expected,
        observed,
        signal,
    }
}

type Observation = (Verdict, String);

fn inconclusive(s: impl Into<String>) -> Observation {
    (Verdict::Inconclusive, s.into())
}

/// Connect attempts a probe makes while the broker answers "server unavailable".
const BUSY_ATTEMPTS: u32 = 5;
/// Pause between those attempts.
const BUSY_PAUSE: Duration = Duration::from_millis(200);

/// Opens a session for a probe. "Server unavailable" (v5 0x88, 3.1.1 code 3) is a transient
/// state, not a policy verdict: brokers say it while they still tear down the same client ID's
/// previous session (rmqtt does, right after the preceding probe's disconnect). Such a refusal
/// is retried a few times before it counts.
async fn open(dev: &Device, t: &ProbeTarget) -> Result<Session, Failure> {
    let mut attempt = 1;
    loop {
        match open_once(dev, t).await {
            Err(f) if attempt < BUSY_ATTEMPTS && busy(&f) => {
                attempt += 1;
                tokio::time::sleep(BUSY_PAUSE).await;
            }
            other => return other,
        }
    }
}

/// "Server unavailable" in either protocol's naming (rumqttc: v5 `ServerUnavailable`, 3.1.1
/// `ServiceUnavailable`).
fn busy(f: &Failure) -> bool {
    f.detail.starts_with("CONNACK refused")
        && (f.detail.contains("ServerUnavailable") || f.detail.contains("ServiceUnavailable"))
}

async fn open_once(dev: &Device, t: &ProbeTarget) -> Result<Session, Failure> {
    let mut s = Session::new(SessionOptions {
        client_id: dev.client_id.clone(),
        host: &t.host,
        port: t.port,
        protocol: t.protocol,
        keepalive: Duration::from_secs(30),
        clean_session: true,
        timeout: t.timeout,
        tls: dev.tls.clone(),
        source: None,
        inflight: crate::fleet::session::INFLIGHT,
    });
    match tokio::time::timeout(t.timeout, s.connect()).await {
        Ok(Ok(_)) => Ok(s),
        Ok(Err(f)) => Err(f),
        Err(_) => Err(Failure::new(
            "tcp: timeout",
            format!("no CONNACK within {:?}", t.timeout),
        )),
    }
}

/// Whether a connect failure is the broker's refusal (rather than a network or TLS fault).
fn refusal(f: &Failure) -> Option<String> {
    if f.detail.starts_with("CONNACK refused") {
        return Some(f.detail.clone());
    }
    if matches!(
        f.class,
        "closed by broker" | "tcp: reset by peer" | "disconnect: closed by broker"
    ) {
        return Some(format!("connection closed ({})", f.class));
    }
    None
}

fn closed(f: &Failure) -> Observation {
    (Verdict::Deny, format!("connection closed ({})", f.class))
}

enum Step {
    Granted,
    Refused(String),
    Closed(Failure),
    TimedOut,
}

/// Subscribes to `filter` (QoS 1) and waits for the SUBACK.
async fn subscribe(s: &mut Session, filter: &str, t: &ProbeTarget) -> Step {
    let plan = [SubscribePlan {
        filter: filter.to_owned(),
        qos: 1,
    }];
    if !s.try_subscribe(&plan) {
        return Step::Closed(Failure::new("protocol error", "request queue full"));
    }
    let deadline = Instant::now() + t.timeout;
    loop {
        match timeout_at(deadline, s.next()).await {
            Err(_) => return Step::TimedOut,
            Ok(Err(f)) => return Step::Closed(f),
            Ok(Ok(Seen::SubAcked {
                reason: Some(r), ..
            })) => return Step::Refused(format!("SUBACK {r}")),
            Ok(Ok(Seen::SubAcked { .. })) => return Step::Granted,
            Ok(Ok(_)) => {}
        }
    }
}

/// Publishes `payload` to `topic` (QoS 1) and waits for the PUBACK.
async fn publish(s: &mut Session, topic: &str, payload: &[u8], t: &ProbeTarget) -> Step {
    if !s.try_publish(topic, 1, false, payload.to_vec()) {
        return Step::Closed(Failure::new("protocol error", "request queue full"));
    }
    let deadline = Instant::now() + t.timeout;
    loop {
        match timeout_at(deadline, s.next()).await {
            Err(_) => return Step::TimedOut,
            Ok(Err(f)) => return Step::Closed(f),
            Ok(Ok(Seen::Acked {
                refused: Some(r), ..
            })) => return Step::Refused(format!("PUBACK {r}")),
            Ok(Ok(Seen::Acked { refused: None, .. })) => return Step::Granted,
            Ok(Ok(_)) => {}
        }
    }
}

enum Delivery {
    Delivered,
    NotDelivered,
    Closed(Failure),
}

/// Waits (bounded) for a message carrying `payload`.
async fn delivery(s: &mut Session, payload: &[u8], within: Duration) -> Delivery {
    let deadline = Instant::now() + within;
    loop {
        match timeout_at(deadline, s.next()).await {
            Err(_) => return Delivery::NotDelivered,
            Ok(Err(f)) => return Delivery::Closed(f),
            Ok(Ok(Seen::Received(p, _))) if p.as_ref() == payload => return Delivery::Delivered,
            Ok(Ok(_)) => {}
        }
    }
}

/// A payload no other traffic carries.
fn nonce() -> Vec<u8> {
    let mut b = [0u8; 8];
    // A failed getrandom only weakens uniqueness; the time stamp still differs per probe.
    let _ = getrandom::fill(&mut b);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!("thingswarm-probe-{t:x}-{:x}", u64::from_le_bytes(b)).into_bytes()
}

/// A concrete topic matched by `filter` (`+` and `#` become `probe`).
pub fn topic_in(filter: &str) -> String {
    filter
        .split('/')
        .map(|l| if l == "+" || l == "#" { "probe" } else { l })
        .collect::<Vec<_>>()
        .join("/")
}

fn wait_text(d: Duration) -> String {
    format!("not delivered within {}", humantime::format_duration(d))
}

async fn observe(p: &Probe, t: &ProbeTarget) -> Observation {
    let mut me = match open(&p.device, t).await {
        Ok(s) => s,
        Err(f) => {
            return match refusal(&f) {
                Some(sig) => (Verdict::Deny, sig),
                None => inconclusive(format!("connect failed: {}: {}", f.class, f.detail)),
            }
        }
    };
    let grace = Duration::from_millis(500);
    let obs = match &p.action {
        Action::Connect => (Verdict::Allow, "CONNACK accepted".to_owned()),
        action => {
            let Some(observer) = &p.observer else {
                me.disconnect(grace).await;
                return inconclusive("no observer device for the delivery check");
            };
            let mut peer = match open(observer, t).await {
                Ok(s) => s,
                Err(f) => {
                    me.disconnect(grace).await;
                    return inconclusive(format!(
                        "observer {} could not connect: {}",
                        observer.client_id, f.detail
                    ));
                }
            };
            let obs = match action {
                Action::Publish(topic) => check_publish(&mut me, &mut peer, topic, t).await,
                Action::Subscribe(filter) => {
                    check_receive(&mut me, &mut peer, filter, &topic_in(filter), t).await
                }
                Action::Receive(topic) => check_receive(&mut me, &mut peer, topic, topic, t).await,
                Action::Connect => unreachable!("handled above"),
            };
            peer.disconnect(grace).await;
            obs
        }
    };
    me.disconnect(grace).await;
    obs
}

async fn check_publish(
    me: &mut Session,
    observer: &mut Session,
    topic: &str,
    t: &ProbeTarget,
) -> Observation {
    match subscribe(observer, topic, t).await {
        Step::Granted => {}
        _ => return inconclusive(format!("observer could not subscribe to {topic}")),
    }
    let payload = nonce();
    let acked = match publish(me, topic, &payload, t).await {
        Step::Granted => "PUBACK",
        Step::Refused(sig) => return (Verdict::Deny, sig),
        Step::Closed(f) => return closed(&f),
        Step::TimedOut => "no PUBACK",
    };
    match delivery(observer, &payload, t.delivery_wait).await {
        Delivery::Delivered => (Verdict::Allow, format!("{acked}, delivered")),
        Delivery::NotDelivered => (
            Verdict::Deny,
            format!("{acked}, {}", wait_text(t.delivery_wait)),
        ),
        Delivery::Closed(f) => inconclusive(format!("observer lost: {}", f.class)),
    }
}

/// Subscribes `me` to `filter`, has the observer publish to `topic`, waits for delivery.
async fn check_receive(
    me: &mut Session,
    observer: &mut Session,
    filter: &str,
    topic: &str,
    t: &ProbeTarget,
) -> Observation {
    let granted = match subscribe(me, filter, t).await {
        Step::Granted => "SUBACK granted",
        Step::Refused(sig) => return (Verdict::Deny, sig),
        Step::Closed(f) => return closed(&f),
        Step::TimedOut => return (Verdict::Deny, "no SUBACK".into()),
    };
    let payload = nonce();
    match publish(observer, topic, &payload, t).await {
        Step::Granted => {}
        Step::Refused(sig) => return inconclusive(format!("observer's publish refused: {sig}")),
        Step::Closed(f) => return inconclusive(format!("observer lost: {}", f.class)),
        Step::TimedOut => return inconclusive("observer's publish not acknowledged"),
    }
    match delivery(me, &payload, t.delivery_wait).await {
        Delivery::Delivered => (Verdict::Allow, format!("{granted}, delivered")),
        Delivery::NotDelivered => (
            Verdict::Deny,
            format!("{granted}, {}", wait_text(t.delivery_wait)),
        ),
        Delivery::Closed(f) => closed(&f),
    }
}
