//! The embedded broker: rmqtt 0.24 with mutual TLS on a loopback port, on its own runtime.
//!
//! Why rmqtt: on this kind of machine it connected 2,000 and 10,000 per-device mTLS clients
//! faster than mosquitto and rumqttd, reports the port it bound, and has authentication and
//! ACL hooks whose denials reach the wire (issue 4 has the comparison).
//!
//! Why its own runtime: rmqtt has no stop API and its `run()` never returns; aborting the task
//! leaves accepted sessions served by their own tasks. Shutting down a runtime that only the
//! broker uses drops every one of its tasks, sockets included, so `stop` really stops. It also
//! lets `start` work the same from plain sync code and from inside another runtime.

use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};
use std::num::NonZeroU16;
use std::path::Path;
use std::pin::Pin;
use std::sync::mpsc;
use std::time::Duration;

use rmqtt::context::ServerContext;
use rmqtt::hook::{Handler, HookResult, Parameter, ReturnType, Type};
use rmqtt::net::Builder;
use rmqtt::server::MqttServer;
use rmqtt::types::AuthResult;
use rustls_pki_types::CertificateDer;
use tokio::runtime::Runtime;

use super::{private_temp_dir, write_client_roots, BrokerConfig, BrokerError};
use crate::identity::{server_identity, ServerIdentity};

/// How long `start` waits for the listener to be bound.
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// How long `stop` waits for the broker's threads to finish.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);
/// Messages in flight per session (rmqtt's default is 16, which would cap a QoS 1 publisher
/// at 16 unacknowledged messages and make the broker, not the device, the bottleneck).
const MAX_INFLIGHT: u16 = 1024;
/// Messages queued per session before rmqtt drops the excess silently (default 1,000).
const MAX_QUEUE: usize = 100_000;
/// Listen backlog (rmqtt's default is 512; the kernel caps it at `net.core.somaxconn`):
/// a paced connect storm should not lose SYNs to the broker we chose.
const BACKLOG: i32 = 4096;

/// An rmqtt broker listening on `127.0.0.1` with mutual TLS: clients must present a
/// certificate chaining to one of [`BrokerConfig::client_roots`], and the certificate's CN must
/// equal the MQTT client ID (so a device cannot connect as another device).
///
/// Limits raised over rmqtt's defaults so they do not distort load tests: 1,024 messages in
/// flight per session, 100,000 queued per session, TCP_NODELAY on (without it every small
/// message waits for the delayed-ACK timer). The flip side: rmqtt's memory grows without bound
/// under an unpaced firehose (queues fill faster than subscribers drain them), so pace
/// publishers against it.
///
/// Every loopback session costs two file descriptors of the process's limit (client side and
/// broker side); beyond ~9,500 devices run the broker as a separate process
/// (`thingswarm broker`) or use an external one.
///
/// Stops on [`stop`](EmbeddedBroker::stop) or when dropped; its files (server key, client
/// roots) live in a private temp dir removed with it.
pub struct EmbeddedBroker {
    addr: SocketAddr,
    server: ServerIdentity,
    runtime: Option<Runtime>,
    // Removed only after `Drop` has shut the runtime down, so rmqtt never sees its files
    // vanish while it runs.
    _dir: tempfile::TempDir,
}

impl EmbeddedBroker {
    /// Starts the broker and returns once its port accepts connections.
    ///
    /// Works from sync code and from inside a tokio runtime (the broker runs on its own
    /// threads). Fails with a one-line [`BrokerError`] when no client root is given, the port
    /// is taken, or a certificate file cannot be written.
    pub fn start(cfg: BrokerConfig) -> Result<EmbeddedBroker, BrokerError> {
        EmbeddedBroker::start_with_policy(cfg, None)
    }

    /// Like [`start`](EmbeddedBroker::start), and when `policy` is given, enforces those AWS
    /// IoT policies on every device the way AWS IoT Core signals denials: CONNECT refused
    /// (CONNACK not authorized), SUBSCRIBE refused in the SUBACK (0x80 / 0x87), PUBLISH refused
    /// with PUBACK 0x87 on MQTT 5 and by closing the connection on 3.1.1, and messages a
    /// device may not receive silently not delivered. So a developer checks a policy with no
    /// broker set-up. The policy variables see the client id (= certificate CN); the set's
    /// `unrestricted` devices (the observer) are not restricted.
    pub fn start_with_policy(
        cfg: BrokerConfig,
        policy: Option<std::sync::Arc<crate::policy::PolicySet>>,
    ) -> Result<EmbeddedBroker, BrokerError> {
        EmbeddedBroker::start_with_provisioning(cfg, policy, None)
    }

    /// Like [`start_with_policy`](EmbeddedBroker::start_with_policy), and when `provisioning`
    /// is given, also emulates AWS IoT fleet provisioning by claim with it (see
    /// `src/broker/provisioning.rs`): a certificate whose CN is
    /// [`CLAIM_CN`](crate::aws::provisioning::CLAIM_CN) may then connect under any client ID,
    /// restricted to the provisioning topics. Its CA's root should be among the client roots.
    pub fn start_with_provisioning(
        cfg: BrokerConfig,
        policy: Option<std::sync::Arc<crate::policy::PolicySet>>,
        provisioning: Option<std::sync::Arc<crate::aws::provisioning::Provisioner>>,
    ) -> Result<EmbeddedBroker, BrokerError> {
        crate::tls::install_crypto_provider();
        let want = SocketAddr::from((Ipv4Addr::LOCALHOST, cfg.port));
        let dir = private_temp_dir("thingswarm-broker-")?;
        let client_roots = dir.path().join("client-roots.pem");
        write_client_roots(&client_roots, &cfg.client_roots)?;
        let server = server_identity(dir.path())?;

        let runtime = tokio::runtime::Builder::new_multi_thread()
            .thread_name("thingswarm-broker")
            .enable_all()
            .build()
            .map_err(|source| BrokerError::Runtime { source })?;

        let listener = listener(want, &server, &client_roots);
        let (ready_tx, ready_rx) = mpsc::channel();
        runtime.spawn(async move {
            let scx = ServerContext::new()
                // The busy check refuses connects while the host's CPU load is high: on a
                // 2-core machine running the load generator beside the broker it always is.
                .busy_check_enable(false)
                .build()
                .await;
            register_auth_hook(&scx, policy, provisioning).await;
            // Bind inside the runtime: rmqtt registers the socket with the current reactor.
            let listener = match listener.bind().and_then(|l| l.tls()) {
                Ok(l) => l,
                Err(e) => {
                    let _ = ready_tx.send(Err(format!("{e:#}")));
                    return;
                }
            };
            let _ = ready_tx.send(listener.local_addr().map_err(|e| format!("{e:#}")));
            // The listening socket is bound and in listen state: the kernel queues connects
            // from here on, and the accept loop below picks them up. `run` never returns.
            let _ = MqttServer::new(scx)
                .listener_by_id(listener, 1)
                .build()
                .run()
                .await;
        });

        let addr = match ready_rx.recv_timeout(START_TIMEOUT) {
            Ok(Ok(addr)) => addr,
            Ok(Err(reason)) => {
                shutdown(runtime);
                return Err(BrokerError::Listen { addr: want, reason });
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                shutdown(runtime);
                return Err(BrokerError::Listen {
                    addr: want,
                    reason: "the start-up task ended without reporting (it panicked)".into(),
                });
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                shutdown(runtime);
                return Err(BrokerError::StartTimeout {
                    addr: want,
                    waited: START_TIMEOUT,
                });
            }
        };
        Ok(EmbeddedBroker {
            addr,
            server,
            runtime: Some(runtime),
            _dir: dir,
        })
    }

    /// `127.0.0.1:<port>`, with the real port when 0 was asked for.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The PEM file clients verify the broker's certificate against (a CA made for this
    /// broker alone; valid for `localhost`, `127.0.0.1` and `::1`).
    pub fn server_ca(&self) -> &Path {
        &self.server.ca_pem
    }

    /// The same CA in DER, for a rustls `RootCertStore`.
    pub fn server_ca_der(&self) -> &CertificateDer<'static> {
        &self.server.ca_der
    }

    /// Stops the broker: closes the port and every session, and waits (up to 5 s) for its
    /// threads. Safe to call from inside an async context. Dropping the broker does the same.
    pub fn stop(self) {}
}

impl Drop for EmbeddedBroker {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            shutdown(runtime);
        }
    }
}

impl std::fmt::Debug for EmbeddedBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedBroker")
            .field("addr", &self.addr)
            .field("server_ca", &self.server.ca_pem)
            .finish()
    }
}

/// Shuts a runtime down and waits for its worker threads, so the listening socket and every
/// session are closed when this returns.
///
/// `Runtime::shutdown_timeout` (like dropping a runtime) blocks, and tokio panics when that
/// happens on a thread that is running async code; `shutdown_background` does not block but
/// returns before the sockets are closed. A plain thread is never an async context, so the
/// blocking wait happens there whenever the caller might be inside a runtime.
fn shutdown(runtime: Runtime) {
    if tokio::runtime::Handle::try_current().is_err() {
        runtime.shutdown_timeout(STOP_TIMEOUT);
        return;
    }
    let stopper = std::thread::Builder::new()
        .name("thingswarm-broker-stop".into())
        .spawn(move || runtime.shutdown_timeout(STOP_TIMEOUT));
    if let Ok(handle) = stopper {
        let _ = handle.join();
    }
}

/// The mTLS listener: client certificates required and verified against `client_roots`, the
/// certificate's CN offered to hooks as the username and its details collected.
fn listener(addr: SocketAddr, server: &ServerIdentity, client_roots: &Path) -> Builder {
    let path = |p: &Path| Some(p.to_string_lossy().into_owned());
    Builder::new()
        .name("thingswarm-embedded")
        .laddr(addr)
        .backlog(BACKLOG)
        // rmqtt leaves SO_REUSEADDR unset: after a stop that closed live sessions, the
        // broker's side of them sits in TIME_WAIT and a restart on the same port would fail
        // with "address in use" for a minute. (On Linux this never lets two listeners share
        // a port.)
        .reuseaddr(Some(true))
        // rmqtt's default is Nagle on: small messages then wait for the peer's delayed ACK.
        .nodelay(true)
        // The default (true) skips authentication for clients without a username; a device
        // always has a certificate, so every client goes through the hook below.
        .allow_anonymous(false)
        .tls_cross_certificate(true)
        .tls_cert(path(&server.cert_pem))
        .tls_key(path(&server.key_pem))
        .tls_client_ca_certs(path(client_roots))
        .cert_cn_as_username(true)
        .collect_cert_info(true)
        .max_inflight(NonZeroU16::new(MAX_INFLIGHT).expect("non-zero"))
        .max_mqueue_len(MAX_QUEUE)
}

/// Registers [`CnIsClientId`] for `ClientAuthenticate`. rmqtt registers handlers disabled:
/// `start()` enables them.
async fn register_auth_hook(
    scx: &ServerContext,
    policy: Option<std::sync::Arc<crate::policy::PolicySet>>,
    provisioning: Option<std::sync::Arc<crate::aws::provisioning::Provisioner>>,
) {
    let register = scx.extends.hook_mgr().register();
    register
        .add(
            Type::ClientAuthenticate,
            Box::new(CnIsClientId {
                policy: policy.clone(),
                claim: provisioning.is_some(),
            }),
        )
        .await;
    if let Some(service) = provisioning {
        for typ in [
            Type::MessagePublish,
            Type::MessageExpiryCheck,
            Type::ClientSubscribeCheckAcl,
            Type::MessagePublishCheckAcl,
        ] {
            register
                .add(
                    typ,
                    Box::new(super::provisioning::ProvisioningHook {
                        scx: scx.clone(),
                        service: service.clone(),
                    }),
                )
                .await;
        }
    }
    if let Some(policy) = policy {
        for typ in [
            Type::ClientSubscribeCheckAcl,
            Type::MessagePublishCheckAcl,
            Type::MessageExpiryCheck,
        ] {
            register
                .add(typ, Box::new(PolicyHook(policy.clone())))
                .await;
        }
    }
    register.start().await;
}

/// Authentication: a device may connect only under the client ID its certificate names.
///
/// TLS has already verified the chain against the fleet roots; this closes the remaining gap,
/// a valid device presenting its own certificate with another device's client ID. The CN is
/// read from the verified certificate itself (`collect_cert_info`), not from the CONNECT
/// username, which a client chooses freely when its certificate has no CN. A refusal is
/// CONNACK "not authorized" (3.1.1 code 5, v5 0x87).
///
/// The policy issue adds `ClientSubscribeCheckAcl` / `MessagePublishCheckAcl` handlers beside
/// this one.
struct CnIsClientId {
    /// With a scenario's `[policy]`: `iot:Connect` on `client/<client id>` must be allowed too.
    policy: Option<std::sync::Arc<crate::policy::PolicySet>>,
    /// Fleet provisioning is emulated: the claim certificate (CN
    /// [`CLAIM_CN`](crate::aws::provisioning::CLAIM_CN)) may connect under any client ID.
    claim: bool,
}

impl CnIsClientId {
    fn verdict(&self, param: &Parameter<'_>) -> Option<AuthResult> {
        let Parameter::ClientAuthenticate(connect) = param else {
            return None;
        };
        let cn = connect.cert().and_then(|c| c.common_name.as_deref());
        let id: &str = connect.client_id().as_ref();
        let connect_allowed = self
            .policy
            .as_ref()
            .is_none_or(|p| p.enforce(id, "iot:Connect", "client", id));
        let claim = self.claim && cn == Some(crate::aws::provisioning::CLAIM_CN);
        Some(if (cn == Some(id) || claim) && connect_allowed {
            AuthResult::Allow(false, None)
        } else {
            AuthResult::NotAuthorized
        })
    }
}

/// A scenario's AWS IoT policies on subscribe, publish and delivery (see
/// [`EmbeddedBroker::start_with_policy`]). Evaluating a policy allocates; it runs only when a
/// scenario gives `[policy]`, a correctness check rather than a load test.
struct PolicyHook(std::sync::Arc<crate::policy::PolicySet>);

impl Handler for PolicyHook {
    fn hook<'s, 'p, 'fut>(
        &'s self,
        param: &'p Parameter<'_>,
        acc: Option<HookResult>,
    ) -> Pin<Box<dyn Future<Output = ReturnType> + Send + 'fut>>
    where
        's: 'fut,
        'p: 'fut,
        Self: 'fut,
    {
        use rmqtt::types::{PublishAclResult, SubscribeAclResult};
        let p = &self.0;
        Box::pin(async move {
            match param {
                Parameter::ClientSubscribeCheckAcl(s, sub) => {
                    let id: &str = s.id.client_id.as_ref();
                    let filter: &str = sub.topic_filter.as_ref();
                    if p.enforce(id, "iot:Subscribe", "topicfilter", filter) {
                        (true, acc)
                    } else {
                        let refused = SubscribeAclResult::new_failure(
                            rmqtt::codec::v5::SubscribeAckReason::NotAuthorized,
                        );
                        (false, Some(HookResult::SubscribeAclResult(refused)))
                    }
                }
                Parameter::MessagePublishCheckAcl(s, publish) => {
                    let id: &str = s.id.client_id.as_ref();
                    let topic: &str = publish.topic.as_ref();
                    if p.enforce(id, "iot:Publish", "topic", topic) {
                        (true, acc)
                    } else {
                        // AWS IoT Core: PUBACK 0x87 on MQTT 5, the connection closed on 3.1.1.
                        let v5 = s.protocol().await.is_ok_and(|v| v == 5);
                        let refused = PublishAclResult::rejected(!v5, None);
                        (false, Some(HookResult::PublishAclResult(refused)))
                    }
                }
                Parameter::MessageExpiryCheck(s, _, publish) => {
                    let id: &str = s.id.client_id.as_ref();
                    let topic: &str = publish.topic.as_ref();
                    if p.enforce(id, "iot:Receive", "topic", topic) {
                        (true, acc)
                    } else {
                        // Dropped before delivery, silently, as AWS IoT does.
                        (false, Some(HookResult::MessageExpiry))
                    }
                }
                _ => (true, acc),
            }
        })
    }
}

// `Handler` is an `#[async_trait]` trait; this is the signature that macro expands to, written
// out so thingswarm does not need the macro crate for one synchronous check.
impl Handler for CnIsClientId {
    fn hook<'s, 'p, 'fut>(
        &'s self,
        param: &'p Parameter<'_>,
        acc: Option<HookResult>,
    ) -> Pin<Box<dyn Future<Output = ReturnType> + Send + 'fut>>
    where
        's: 'fut,
        'p: 'fut,
        Self: 'fut,
    {
        let out = match self.verdict(param) {
            // Decided: stop the chain here with our answer.
            Some(result) => (false, Some(HookResult::AuthResult(result))),
            // Not ours: pass the accumulated result on untouched.
            None => (true, acc),
        };
        Box::pin(std::future::ready(out))
    }
}
