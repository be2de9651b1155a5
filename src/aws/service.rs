//! The emulated AWS IoT Device Shadow service: an MQTT client that answers shadow requests.
//!
//! Why a client rather than broker hooks: it works unchanged against any broker that routes
//! `$aws/...` topics (the embedded rmqtt broker and mosquitto both do: a topic starting with
//! `$` is only excluded from filters that *start* with a wildcard), so a shadow scenario is
//! testable without AWS against either. It connects with its own identity from the project CA
//! (client ID [`SERVICE_CLIENT_ID`]), subscribes to the request topics only
//! ([`super::topics::SERVICE_FILTERS`], never the response topics, so it does not hear its own
//! answers on MQTT 3.1.1), and publishes each answer (QoS 1) on the `accepted` / `rejected` /
//! `delta` / `documents` topics AWS IoT uses, from one [`ShadowStore`].
//!
//! One event-loop task only polls (it must never wait on the request queue it drains) and
//! hands each request to a worker task that computes and publishes the answers. Against AWS
//! IoT itself no emulation runs: the real service answers.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use rumqttc::{
    AsyncClient, Event, EventLoop, MqttOptions, Packet, QoS, SubscribeFilter, TlsConfiguration,
    Transport,
};
use rustls::ClientConfig;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::shadow::ShadowStore;
use super::topics;

/// The client ID (and certificate CN) of the emulated service.
pub const SERVICE_CLIENT_ID: &str = "thingswarm-aws-service";
/// How long the service waits for CONNACK and SUBACK at start.
const START_WITHIN: Duration = Duration::from_secs(10);
/// Largest packet the service reads or writes (shadow sections are capped at 8 KiB each, a
/// `documents` answer holds two versions of both).
const MAX_PACKET: usize = 256 * 1024;

/// Where and as whom the service connects.
pub struct ServiceOptions {
    /// Broker host (also the TLS server name).
    pub host: String,
    /// Broker port.
    pub port: u16,
    /// The service's TLS config (its certificate's CN must be [`SERVICE_CLIENT_ID`] on the
    /// embedded broker).
    pub tls: Arc<ClientConfig>,
}

/// Why the service could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// No CONNACK, or a refusal.
    #[error("AWS service emulation: connecting to {addr} as {SERVICE_CLIENT_ID}: {detail}")]
    Connect {
        /// `host:port`.
        addr: String,
        /// What happened.
        detail: String,
    },
    /// The broker refused or did not answer the subscription to the request topics.
    #[error("AWS service emulation: subscribing to $aws/things/+/shadow/... on {addr}: {detail}")]
    Subscribe {
        /// `host:port`.
        addr: String,
        /// What happened.
        detail: String,
    },
}

/// What the service did, for the report.
#[derive(Debug, Default)]
pub struct ServiceCounters {
    /// Requests received.
    pub requests: AtomicU64,
    /// Answers published.
    pub replies: AtomicU64,
    /// Messages on a subscribed topic that are not requests it knows.
    pub ignored: AtomicU64,
    /// Times the service's own session was lost and re-established.
    pub reconnects: AtomicU64,
}

/// A running service; [`AwsService::stop`] ends it.
pub struct AwsService {
    stop: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
    counters: Arc<ServiceCounters>,
}

impl AwsService {
    /// Connects, subscribes to the request topics and returns once the broker granted them,
    /// so requests published afterwards are answered.
    pub async fn start(o: ServiceOptions) -> Result<AwsService, ServiceError> {
        let addr = format!("{}:{}", o.host, o.port);
        let mut opts = MqttOptions::new(SERVICE_CLIENT_ID, o.host, o.port);
        opts.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(o.tls)))
            .set_keep_alive(Duration::from_secs(30))
            .set_clean_session(true)
            .set_inflight(1000)
            .set_max_packet_size(MAX_PACKET, MAX_PACKET);
        let (client, mut events) = AsyncClient::new(opts, 4096);
        // Without TCP_NODELAY every small answer waits for the peer's delayed ACK (~40 ms).
        let mut net = rumqttc::NetworkOptions::new();
        net.set_tcp_nodelay(true);
        net.set_connection_timeout(START_WITHIN.as_secs());
        events.set_network_options(net);
        let connack = tokio::time::timeout(START_WITHIN, events.poll()).await;
        match connack {
            Ok(Ok(Event::Incoming(Packet::ConnAck(a))))
                if a.code == rumqttc::ConnectReturnCode::Success => {}
            Ok(Ok(other)) => {
                return Err(ServiceError::Connect {
                    addr,
                    detail: format!("expected CONNACK, got {other:?}"),
                })
            }
            Ok(Err(e)) => {
                return Err(ServiceError::Connect {
                    addr,
                    detail: e.to_string(),
                })
            }
            Err(_) => {
                return Err(ServiceError::Connect {
                    addr,
                    detail: format!("no CONNACK within {START_WITHIN:?}"),
                })
            }
        }
        subscribe(&client).map_err(|detail| ServiceError::Subscribe {
            addr: addr.clone(),
            detail,
        })?;
        let granted = tokio::time::timeout(START_WITHIN, async {
            loop {
                match events.poll().await {
                    Ok(Event::Incoming(Packet::SubAck(s))) => return Ok(s),
                    Ok(_) => {}
                    Err(e) => return Err(e.to_string()),
                }
            }
        })
        .await
        .map_err(|_| format!("no SUBACK within {START_WITHIN:?}"))
        .and_then(|r| r)
        .map_err(|detail| ServiceError::Subscribe {
            addr: addr.clone(),
            detail,
        })?;
        if granted
            .return_codes
            .iter()
            .any(|c| matches!(c, rumqttc::SubscribeReasonCode::Failure))
        {
            return Err(ServiceError::Subscribe {
                addr,
                detail: "the broker refused a request filter (SUBACK 0x80)".into(),
            });
        }

        let stop = CancellationToken::new();
        let counters = Arc::new(ServiceCounters::default());
        let (tx, rx) = mpsc::unbounded_channel();
        let poller = tokio::spawn(poll(
            events,
            client.clone(),
            tx,
            stop.clone(),
            counters.clone(),
        ));
        let worker = tokio::spawn(answer(client, rx, counters.clone()));
        Ok(AwsService {
            stop,
            tasks: vec![poller, worker],
            counters,
        })
    }

    /// What the service did so far.
    pub fn counters(&self) -> &ServiceCounters {
        &self.counters
    }

    /// Stops the service (its session is dropped; requests still queued are not answered).
    pub async fn stop(self) {
        self.stop.cancel();
        for t in self.tasks {
            let _ = tokio::time::timeout(Duration::from_secs(2), t).await;
        }
    }
}

fn subscribe(client: &AsyncClient) -> Result<(), String> {
    client
        .try_subscribe_many(
            topics::SERVICE_FILTERS
                .iter()
                .map(|f| SubscribeFilter::new((*f).to_string(), QoS::AtLeastOnce)),
        )
        .map_err(|e| e.to_string())
}

/// Polls the session until `stop`, handing requests to the worker; after a lost session it
/// waits a little (rumqttc would retry at once, forever) and subscribes again.
async fn poll(
    mut events: EventLoop,
    client: AsyncClient,
    tx: mpsc::UnboundedSender<(String, bytes::Bytes)>,
    stop: CancellationToken,
    counters: Arc<ServiceCounters>,
) {
    loop {
        let event = tokio::select! {
            _ = stop.cancelled() => break,
            e = events.poll() => e,
        };
        match event {
            Ok(Event::Incoming(Packet::Publish(p))) => {
                counters.requests.fetch_add(1, Relaxed);
                if tx.send((p.topic, p.payload)).is_err() {
                    break;
                }
            }
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                counters.reconnects.fetch_add(1, Relaxed);
                let _ = subscribe(&client);
            }
            Ok(_) => {}
            Err(_) => {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                }
            }
        }
    }
    let _ = client.try_disconnect();
}

/// Answers requests in arrival order (one store: per-shadow order is the broker's delivery
/// order, as on AWS).
async fn answer(
    client: AsyncClient,
    mut rx: mpsc::UnboundedReceiver<(String, bytes::Bytes)>,
    counters: Arc<ServiceCounters>,
) {
    let mut store = ShadowStore::new();
    while let Some((topic, payload)) = rx.recv().await {
        let Some((key, op)) = topics::parse_request(&topic) else {
            counters.ignored.fetch_add(1, Relaxed);
            continue;
        };
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        for reply in store.handle(&key, op, &payload, now) {
            let body = serde_json::to_vec(&reply.body).unwrap_or_default();
            let to = topics::response(&key, reply.suffix);
            if client
                .publish(to, QoS::AtLeastOnce, false, body)
                .await
                .is_err()
            {
                return;
            }
            counters.replies.fetch_add(1, Relaxed);
        }
    }
}
