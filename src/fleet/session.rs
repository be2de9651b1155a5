//! One device's MQTT session over rumqttc, for either protocol version.
//!
//! The runner owns reconnect policy: rumqttc reconnects on the next `poll()` after an error,
//! with no backoff, so a [`Session`] is never polled again once it has failed.

use std::sync::Arc;
use std::time::Duration;

use rumqttc::{v5, NetworkOptions, TlsConfiguration, Transport};
use rustls::ClientConfig;

use super::failure::Failure;
use crate::scenario::Protocol;

/// In-flight publishes each session allows; small keeps per-session memory low (rumqttc
/// preallocates a slot per in-flight message, v5 65,536 unless limited).
const INFLIGHT: u16 = 20;
/// Requests queued between the client handle and the event loop.
const REQUEST_CAPACITY: usize = 10;

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
    /// This device's TLS configuration.
    pub tls: Arc<ClientConfig>,
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
        let mut net = NetworkOptions::new();
        net.set_tcp_nodelay(true);
        // rumqttc's own timeout must not fire before ours.
        net.set_connection_timeout(o.timeout.as_secs() + 1);
        let transport = Transport::tls_with_config(TlsConfiguration::Rustls(o.tls));
        match o.protocol {
            Protocol::V311 => {
                let mut opts = rumqttc::MqttOptions::new(o.client_id, o.host, o.port);
                opts.set_transport(transport)
                    .set_keep_alive(o.keepalive)
                    .set_clean_session(o.clean_session)
                    .set_inflight(INFLIGHT);
                let (client, mut events) = rumqttc::AsyncClient::new(opts, REQUEST_CAPACITY);
                events.set_network_options(net);
                Session::V311(client, events)
            }
            Protocol::V5 => {
                let mut opts = v5::MqttOptions::new(o.client_id, o.host, o.port);
                opts.set_transport(transport)
                    .set_keep_alive(o.keepalive)
                    .set_clean_start(o.clean_session)
                    .set_outgoing_inflight_upper_limit(INFLIGHT)
                    .set_network_options(net);
                let (client, events) = v5::AsyncClient::new(opts, REQUEST_CAPACITY);
                Session::V5(client, events)
            }
        }
    }

    /// TCP connect, TLS handshake, CONNECT, and wait for a successful CONNACK.
    pub async fn connect(&mut self) -> Result<(), Failure> {
        match self {
            Session::V311(_, events) => match events.poll().await {
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(ack)))
                    if ack.code == rumqttc::ConnectReturnCode::Success =>
                {
                    Ok(())
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
                    Ok(())
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

    /// Serves the connection (keepalive pings, incoming packets) until it fails; returns why.
    pub async fn serve(&mut self) -> Failure {
        const KEEPALIVE: &str = "disconnect: keepalive timeout";
        loop {
            match self {
                Session::V311(_, events) => match events.poll().await {
                    Ok(_) => {}
                    Err(rumqttc::ConnectionError::MqttState(
                        rumqttc::StateError::AwaitPingResp,
                    )) => return Failure::new(KEEPALIVE, "no PINGRESP within the keepalive"),
                    Err(e) => return lost(&e),
                },
                Session::V5(_, events) => match events.poll().await {
                    Ok(_) => {}
                    Err(v5::ConnectionError::MqttState(v5::StateError::AwaitPingResp)) => {
                        return Failure::new(KEEPALIVE, "no PINGRESP within the keepalive")
                    }
                    Err(e) => return lost(&e),
                },
            }
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

/// Classifies the loss of an established session.
fn lost(err: &(dyn std::error::Error + 'static)) -> Failure {
    let failure = Failure::classify(err);
    let class = match failure.class {
        "closed by broker" | "tcp: reset by peer" => "disconnect: closed by broker",
        other => other,
    };
    Failure {
        class,
        detail: failure.detail,
    }
}
