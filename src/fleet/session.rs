//! One device's MQTT session over rumqttc, for either protocol version.
//!
//! The runner owns reconnect policy: rumqttc reconnects on the next `poll()` after an error,
//! with no backoff, so a failed [`Session`] is polled again only through
//! [`Session::connect`], after the runner's backoff.

use std::time::Duration;

use rumqttc::{v5, NetworkOptions};

use super::failure::Failure;
use crate::scenario::protocol::GroupOptions;
use crate::scenario::{Protocol, SubscribePlan};
use crate::tls::device::DeviceTls;

/// In-flight publishes each session allows; small keeps per-session memory low (rumqttc
/// preallocates a slot per in-flight message, v5 65,536 unless limited).
pub const INFLIGHT: u16 = 20;
/// Requests queued between the client handle and the event loop.
pub const REQUEST_CAPACITY: usize = 10;

/// How a device connects.
pub struct SessionOptions<'a> {
    /// MQTT client ID (= certificate CN).
    pub client_id: String,
    /// Broker host (IP or name; also the TLS server name).
    pub host: &'a str,
    /// Broker port.
    pub port: u16,
    /// MQTT 3.1.1 or 5.
    pub protocol: Protocol,
    /// Keepalive (zero disables).
    pub keepalive: Duration,
    /// Clean session / clean start.
    pub clean_session: bool,
    /// Upper bound for the whole connect (TCP + TLS + CONNACK).
    pub timeout: Duration,
    /// This device's TLS (rustls or OpenSSL, see [`DeviceTls`]).
    pub tls: DeviceTls,
    /// Local address to connect from (`source_addresses`); `None`: the kernel picks.
    pub source: Option<std::net::IpAddr>,
    /// QoS 1/2 publishes in flight: [`INFLIGHT`] for a device that publishes them, 1 for the
    /// rest (rumqttc keeps a slot per in-flight publish in every session).
    pub inflight: u16,
}

/// A device's client handle and event loop.
// One per device task, created in place and never moved: boxing the larger v5 variant would
// add an allocation per device to save a few hundred bytes next to ~30 KB of session buffers.
#[allow(clippy::large_enum_variant)]
pub enum Session {
    /// MQTT 3.1.1.
    V311(rumqttc::AsyncClient, rumqttc::EventLoop),
    /// MQTT 5.
    V5(v5::AsyncClient, v5::EventLoop),
}

impl Session {
    /// Prepares a session; nothing is sent until [`Session::connect`].
    pub fn new(o: SessionOptions<'_>) -> Session {
        Session::with_options(o, &GroupOptions::default())
    }

    /// [`Session::new`] with a group's transport and MQTT 5 options (see
    /// [`super::protocol`]).
    pub fn with_options(o: SessionOptions<'_>, g: &GroupOptions) -> Session {
        let mut net = NetworkOptions::new();
        net.set_tcp_nodelay(true);
        // rumqttc's own timeout must not fire before ours.
        net.set_connection_timeout(o.timeout.as_secs() + 1);
        let transport = super::protocol::transport(&g.transport, &o.tls, o.host, &mut net);
        let addr = g.transport.broker_addr(o.host, o.port);
        if let Some(ip) = o.source {
            // Port 0 with IP_BIND_ADDRESS_NO_PORT: the port is picked per destination.
            net.set_bind_addr(std::net::SocketAddr::new(ip, 0));
        }
        match o.protocol {
            Protocol::V311 => {
                let mut opts = rumqttc::MqttOptions::new(o.client_id, addr, o.port);
                opts.set_transport(transport)
                    .set_keep_alive(o.keepalive)
                    .set_clean_session(o.clean_session)
                    .set_inflight(o.inflight.max(1));
                let (client, mut events) = rumqttc::AsyncClient::new(opts, REQUEST_CAPACITY);
                events.set_network_options(net);
                Session::V311(client, events)
            }
            Protocol::V5 => {
                let mut opts = v5::MqttOptions::new(o.client_id, addr, o.port);
                opts.set_transport(transport)
                    .set_keep_alive(o.keepalive)
                    .set_clean_start(o.clean_session)
                    .set_outgoing_inflight_upper_limit(o.inflight.max(1))
                    .set_network_options(net);
                super::protocol::apply_v5(&mut opts, &g.v5);
                let (client, events) = v5::AsyncClient::new(opts, REQUEST_CAPACITY);
                Session::V5(client, events)
            }
        }
    }

    /// TCP connect, TLS handshake, CONNECT, and wait for a successful CONNACK; says whether
    /// the broker kept a session (then rumqttc re-sends unacknowledged messages). Also
    /// reconnects a session that failed: rumqttc connects again on the next poll.
    pub async fn connect(&mut self) -> Result<bool, Failure> {
        self.connect_noting(&mut None).await
    }

    /// [`Session::connect`], keeping an MQTT 5 CONNACK's properties in `connack` (what the
    /// broker granted of the options asked for, see [`super::protocol`]).
    pub async fn connect_noting(
        &mut self,
        connack: &mut Option<super::protocol::ConnAckFacts>,
    ) -> Result<bool, Failure> {
        match self {
            Session::V311(_, events) => match events.poll().await {
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(ack)))
                    if ack.code == rumqttc::ConnectReturnCode::Success =>
                {
                    Ok(ack.session_present)
                }
                Ok(other) => Err(Failure::new(
                    "protocol error",
                    format!("expected CONNACK, got {other:?}"),
                )),
                Err(rumqttc::ConnectionError::ConnectionRefused(code)) => {
                    Err(Failure::refused(code))
                }
                Err(e) => Err(Failure::classify(&e)),
            },
            Session::V5(_, events) => match events.poll().await {
                Ok(v5::Event::Incoming(v5::Incoming::ConnAck(ack)))
                    if ack.code == v5::mqttbytes::v5::ConnectReturnCode::Success =>
                {
                    *connack = Some(super::protocol::ConnAckFacts::of(&ack));
                    Ok(ack.session_present)
                }
                Ok(other) => Err(Failure::new(
                    "protocol error",
                    format!("expected CONNACK, got {other:?}"),
                )),
                Err(v5::ConnectionError::ConnectionRefused(code)) => Err(Failure::refused(code)),
                Err(e) => Err(Failure::classify(&e)),
            },
        }
    }

    /// Hands a PUBLISH to the client without waiting; `false` when its request queue is full
    /// (the caller keeps the message and tries again after the next event).
    pub fn try_publish(&self, topic: &str, qos: u8, retain: bool, payload: Vec<u8>) -> bool {
        match self {
            Session::V311(client, _) => client
                .try_publish(topic, v311_qos(qos), retain, payload)
                .is_ok(),
            Session::V5(client, _) => client
                .try_publish(topic, v5_qos(qos), retain, payload)
                .is_ok(),
        }
    }

    /// Queues one SUBSCRIBE for all `filters`; `false` when the request queue is full.
    pub fn try_subscribe(&self, filters: &[SubscribePlan]) -> bool {
        match self {
            Session::V311(client, _) => client
                .try_subscribe_many(
                    filters
                        .iter()
                        .map(|f| rumqttc::SubscribeFilter::new(f.filter.clone(), v311_qos(f.qos))),
                )
                .is_ok(),
            Session::V5(client, _) => client
                .try_subscribe_many(
                    filters
                        .iter()
                        .map(|f| v5::mqttbytes::v5::Filter::new(f.filter.clone(), v5_qos(f.qos))),
                )
                .is_ok(),
        }
    }

    /// Polls the connection once (keepalive pings and queued requests go out meanwhile) and
    /// says what happened, in protocol-neutral terms; an error ends the session.
    pub async fn next(&mut self) -> Result<Seen, Failure> {
        const KEEPALIVE: &str = "disconnect: keepalive timeout";
        use rumqttc::{Event as E4, Outgoing, Packet as P4};
        use v5::mqttbytes::v5::{PubAckReason, PubCompReason, SubscribeReasonCode as Sub5};
        use v5::{Event as E5, Incoming as P5};
        match self {
            Session::V311(_, events) => match events.poll().await {
                Ok(E4::Outgoing(Outgoing::Publish(pkid))) => Ok(Seen::Written(pkid)),
                Ok(E4::Incoming(P4::PubAck(a))) => Ok(Seen::Acked {
                    pkid: a.pkid,
                    refused: None,
                }),
                Ok(E4::Incoming(P4::PubComp(c))) => Ok(Seen::Acked {
                    pkid: c.pkid,
                    refused: None,
                }),
                Ok(E4::Incoming(P4::Publish(p))) if p.retain => Ok(Seen::Retained(p.payload)),
                Ok(E4::Incoming(P4::Publish(p))) => Ok(Seen::Received(p.payload, p.topic.into())),
                Ok(E4::Incoming(P4::SubAck(s))) => {
                    let refused = s
                        .return_codes
                        .iter()
                        .filter(|c| matches!(c, rumqttc::SubscribeReasonCode::Failure))
                        .count();
                    Ok(Seen::SubAcked {
                        refused,
                        reason: (refused > 0).then(|| "0x80".to_string()),
                    })
                }
                Ok(_) => Ok(Seen::Other),
                Err(rumqttc::ConnectionError::MqttState(rumqttc::StateError::AwaitPingResp)) => {
                    Err(Failure::new(KEEPALIVE, "no PINGRESP within the keepalive"))
                }
                Err(e) => Err(lost(&e)),
            },
            Session::V5(_, events) => match events.poll().await {
                Ok(E5::Outgoing(Outgoing::Publish(pkid))) => Ok(Seen::Written(pkid)),
                Ok(E5::Incoming(P5::PubAck(a))) => Ok(Seen::Acked {
                    pkid: a.pkid,
                    refused: (!matches!(
                        a.reason,
                        PubAckReason::Success | PubAckReason::NoMatchingSubscribers
                    ))
                    .then(|| format!("{:?}", a.reason)),
                }),
                Ok(E5::Incoming(P5::PubComp(c))) => Ok(Seen::Acked {
                    pkid: c.pkid,
                    refused: (!matches!(c.reason, PubCompReason::Success))
                        .then(|| format!("{:?}", c.reason)),
                }),
                Ok(E5::Incoming(P5::Publish(p))) if p.retain => Ok(Seen::Retained(p.payload)),
                Ok(E5::Incoming(P5::Publish(p))) => Ok(Seen::Received(p.payload, p.topic)),
                Ok(E5::Incoming(P5::SubAck(s))) => {
                    let mut refusals = s
                        .return_codes
                        .iter()
                        .filter(|c| !matches!(c, Sub5::Success(_)));
                    let reason = refusals
                        .next()
                        .map(|c| format!("0x{:02X} {c:?}", suback_code(c)));
                    Ok(Seen::SubAcked {
                        refused: refusals.count() + usize::from(reason.is_some()),
                        reason,
                    })
                }
                Ok(E5::Incoming(P5::Disconnect(d))) => Err(disconnected_v5(
                    d.reason_code,
                    d.properties
                        .as_ref()
                        .and_then(|p| p.reason_string.as_deref()),
                )),
                Ok(_) => Ok(Seen::Other),
                Err(v5::ConnectionError::MqttState(v5::StateError::AwaitPingResp)) => {
                    Err(Failure::new(KEEPALIVE, "no PINGRESP within the keepalive"))
                }
                Err(v5::ConnectionError::MqttState(v5::StateError::ServerDisconnect {
                    reason_code,
                    reason_string,
                })) => Err(disconnected_v5(reason_code, reason_string.as_deref())),
                Err(e) => Err(lost(&e)),
            },
        }
    }

    /// MQTT 5 PUBLISH with properties (topic alias, user properties, message expiry); `false`
    /// when the request queue is full. A 3.1.1 session has no properties: a plain PUBLISH.
    pub fn try_publish_v5(
        &self,
        topic: &str,
        qos: u8,
        retain: bool,
        payload: Vec<u8>,
        properties: v5::mqttbytes::v5::PublishProperties,
    ) -> bool {
        match self {
            Session::V311(..) => self.try_publish(topic, qos, retain, payload),
            Session::V5(client, _) => client
                .try_publish_with_properties(topic, v5_qos(qos), retain, payload, properties)
                .is_ok(),
        }
    }

    /// Drops the connection at once without DISCONNECT's wait; the next
    /// [`Session::connect`] opens a new one (used after a DISCONNECT was written).
    pub fn drop_connection(&mut self) {
        match self {
            Session::V311(_, events) => events.clean(),
            Session::V5(_, events) => events.clean(),
        }
    }

    /// Sends DISCONNECT and waits (bounded) until it is written.
    pub async fn disconnect(&mut self, within: Duration) {
        let drain = async {
            match self {
                Session::V311(client, events) => {
                    if client.disconnect().await.is_ok() {
                        while let Ok(event) = events.poll().await {
                            if matches!(
                                event,
                                rumqttc::Event::Outgoing(rumqttc::Outgoing::Disconnect)
                            ) {
                                break;
                            }
                        }
                    }
                }
                Session::V5(client, events) => {
                    if client.disconnect().await.is_ok() {
                        while let Ok(event) = events.poll().await {
                            if matches!(event, v5::Event::Outgoing(rumqttc::Outgoing::Disconnect)) {
                                break;
                            }
                        }
                    }
                }
            }
        };
        let _ = tokio::time::timeout(within, drain).await;
    }
}

/// What one poll of a session reported.
#[derive(Debug)]
pub enum Seen {
    /// A PUBLISH with this packet id (0 for QoS 0) was written to the connection.
    Written(u16),
    /// PUBACK (QoS 1) or PUBCOMP (QoS 2) for this packet id; `refused` carries an MQTT 5
    /// failure reason.
    Acked {
        /// The packet id.
        pkid: u16,
        /// MQTT 5 reason when the broker refused the message.
        refused: Option<String>,
    },
    /// A message arrived on a subscription: payload, topic (moved out of rumqttc's packet,
    /// not copied).
    Received(bytes::Bytes, bytes::Bytes),
    /// A retained message arrived (the broker's stored one, sent because we subscribed).
    Retained(bytes::Bytes),
    /// SUBACK; `refused` filters were not granted.
    SubAcked {
        /// Filters the broker refused.
        refused: usize,
        /// The first refusal's reason: `0x80` (3.1.1) or the v5 reason code with its name
        /// (`0x87 NotAuthorized`).
        reason: Option<String>,
    },
    /// Anything else (pings, CONNACK of a reconnect that never happens, ...).
    Other,
}

fn v311_qos(qos: u8) -> rumqttc::QoS {
    match qos {
        0 => rumqttc::QoS::AtMostOnce,
        1 => rumqttc::QoS::AtLeastOnce,
        _ => rumqttc::QoS::ExactlyOnce,
    }
}

fn v5_qos(qos: u8) -> v5::mqttbytes::QoS {
    match qos {
        0 => v5::mqttbytes::QoS::AtMostOnce,
        1 => v5::mqttbytes::QoS::AtLeastOnce,
        _ => v5::mqttbytes::QoS::ExactlyOnce,
    }
}

/// An MQTT 5 DISCONNECT from the broker, named by its reason: 0x8E means another connection
/// with the same client ID took the session over (duplicate client IDs in a fleet, or a
/// second thingswarm running the same identities).
fn disconnected_v5(
    code: v5::mqttbytes::v5::DisconnectReasonCode,
    reason_string: Option<&str>,
) -> Failure {
    use v5::mqttbytes::v5::DisconnectReasonCode as R;
    let reason = reason_string.map_or(String::new(), |r| format!(" ({r})"));
    let class = match code {
        R::SessionTakenOver => "mqtt: session taken over (duplicate client ID)",
        R::NotAuthorized => "mqtt: not authorized",
        R::KeepAliveTimeout => "disconnect: keepalive timeout",
        R::ServerShuttingDown => "disconnect: server shutting down",
        _ => "disconnect: by broker",
    };
    Failure::new(class, format!("DISCONNECT {code:?}{reason}"))
}

/// Classifies the loss of an established session.
fn lost(err: &(dyn std::error::Error + 'static)) -> Failure {
    let failure = Failure::classify(err);
    let class = match failure.class {
        "closed by broker" | "tcp: reset by peer" => "disconnect: closed by broker",
        // rumqttc's wording for EOF in the middle of a session (no typed I/O error kept).
        "protocol error" if failure.detail.contains("closed by peer abruptly") => {
            "disconnect: closed by broker"
        }
        other => other,
    };
    Failure {
        class,
        detail: failure.detail,
    }
}

/// The MQTT 5 SUBACK reason code (spec 3.9.3) of a refusal: rumqttc keeps its own mapping
/// private, and reports should show the number brokers document.
fn suback_code(c: &rumqttc::v5::mqttbytes::v5::SubscribeReasonCode) -> u8 {
    use rumqttc::v5::mqttbytes::v5::SubscribeReasonCode as Sub5;
    match c {
        Sub5::Success(qos) => *qos as u8,
        Sub5::Failure | Sub5::Unspecified => 0x80,
        Sub5::ImplementationSpecific => 0x83,
        Sub5::NotAuthorized => 0x87,
        Sub5::TopicFilterInvalid => 0x8F,
        Sub5::PkidInUse => 0x91,
        Sub5::QuotaExceeded => 0x97,
        Sub5::SharedSubscriptionsNotSupported => 0x9E,
        Sub5::SubscriptionIdNotSupported => 0xA1,
        Sub5::WildcardSubscriptionsNotSupported => 0xA2,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use v5::mqttbytes::v5::DisconnectReasonCode as R;

    #[test]
    fn a_v5_disconnect_is_named_by_its_reason() {
        let taken = disconnected_v5(R::SessionTakenOver, None);
        assert_eq!(
            taken.class,
            "mqtt: session taken over (duplicate client ID)"
        );
        assert_eq!(taken.detail, "DISCONNECT SessionTakenOver");
        let other = disconnected_v5(R::UnspecifiedError, Some("bye"));
        assert_eq!(other.class, "disconnect: by broker");
        assert_eq!(other.detail, "DISCONNECT UnspecifiedError (bye)");
    }

    #[test]
    fn an_abrupt_close_is_the_broker_closing() {
        // What rumqttc returns: a state error with no I/O error inside.
        let e = v5::ConnectionError::MqttState(v5::StateError::ConnectionAborted);
        assert!(e.to_string().contains("closed by peer abruptly"), "{e}");
        assert_eq!(lost(&e).class, "disconnect: closed by broker");
    }
}
