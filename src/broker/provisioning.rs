//! The emulated AWS IoT fleet provisioning service, inside the embedded broker.
//!
//! Why inside the broker: the answers (a new private key among them) must reach only the
//! device that asked, while every device subscribes to the same `.../accepted` topic. An MQTT
//! client cannot know who published a request (3.1.1 has no sender), so the broker answers:
//!
//! - `MessagePublish`: a request topic ([`Request::parse`]) is answered for the publishing
//!   session's client ID; signing runs on a blocking thread, and the answer is delivered to
//!   that session alone, only if it subscribed to the answer topic (AWS requires the
//!   subscription), at the lower of the request's and the subscription's QoS.
//! - `MessageExpiryCheck`: nothing on a provisioning topic is delivered through the router —
//!   requests go to the service only (they carry ownership tokens and CSRs), and answers
//!   published by a client (a spoof) reach nobody. The service's own answers pass.
//! - `ClientSubscribeCheckAcl` / `MessagePublishCheckAcl`: a session authenticated by the
//!   claim certificate ([`CLAIM_CN`]) may use only the provisioning topics, like the policy
//!   AWS attaches to a claim certificate.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use rmqtt::codec::types::QoS;
use rmqtt::context::ServerContext;
use rmqtt::hook::{Handler, HookResult, Parameter, ReturnType};
use rmqtt::types::{
    ClientId, CodecPublish, From, Id, Publish, PublishAclResult, SubscribeAclResult,
};

use crate::aws::provisioning::{is_provisioning_topic, Provisioner, Request, CLAIM_CN};

/// The client ID the service's answers come from (a system message, never a device's).
const SERVICE_ID: &str = "thingswarm-provisioning";

/// The hook (see the module docs).
pub(super) struct ProvisioningHook {
    pub scx: ServerContext,
    pub service: Arc<Provisioner>,
}

impl Handler for ProvisioningHook {
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
        let out = match param {
            Parameter::MessagePublish(_, from, publish) => {
                let topic: &str = publish.topic.as_ref();
                if Request::parse(topic).is_some() {
                    tokio::spawn(answer(
                        self.scx.clone(),
                        self.service.clone(),
                        from.id.clone(),
                        topic.to_string(),
                        publish.payload.clone(),
                        publish.qos,
                    ));
                }
                (true, acc)
            }
            Parameter::MessageExpiryCheck(_, from, publish) => {
                let topic: &str = publish.topic.as_ref();
                let ours = from.is_system() && from.id.client_id.as_ref() as &str == SERVICE_ID;
                if is_provisioning_topic(topic) && !ours {
                    (false, Some(HookResult::MessageExpiry))
                } else {
                    (true, acc)
                }
            }
            Parameter::ClientSubscribeCheckAcl(s, sub) => {
                let filter: &str = sub.topic_filter.as_ref();
                if is_claim(s.id.username.as_deref()) && !is_provisioning_topic(filter) {
                    let refused = SubscribeAclResult::new_failure(
                        rmqtt::codec::v5::SubscribeAckReason::NotAuthorized,
                    );
                    (false, Some(HookResult::SubscribeAclResult(refused)))
                } else {
                    (true, acc)
                }
            }
            Parameter::MessagePublishCheckAcl(s, publish) => {
                let topic: &str = publish.topic.as_ref();
                if is_claim(s.id.username.as_deref()) && Request::parse(topic).is_none() {
                    // As AWS IoT Core refuses a publish its policy denies: the connection is
                    // closed (3.1.1; rmqtt answers PUBACK 0x87 on MQTT 5 when told not to).
                    let refused = PublishAclResult::rejected(true, None);
                    (false, Some(HookResult::PublishAclResult(refused)))
                } else {
                    (true, acc)
                }
            }
            _ => (true, acc),
        };
        Box::pin(std::future::ready(out))
    }
}

/// Whether a session's username (the certificate CN, `cert_cn_as_username`) is the claim's.
fn is_claim(username: Option<&str>) -> bool {
    username == Some(CLAIM_CN)
}

/// Answers one request for the session `id`.
async fn answer(
    scx: ServerContext,
    service: Arc<Provisioner>,
    id: Id,
    topic: String,
    payload: bytes::Bytes,
    qos: QoS,
) {
    let client_id = id.client_id.to_string();
    let now = Instant::now();
    let signed =
        tokio::task::spawn_blocking(move || service.answer(&client_id, &topic, &payload, now))
            .await;
    let Ok(Some(answer)) = signed else { return };
    let entry = scx.extends.shared().await.entry(id);
    let Some(subscriptions) = entry.subscriptions().await else {
        return;
    };
    let granted = subscriptions
        .iter()
        .filter(|s| crate::scenario::traffic::matches(s.topic.as_ref(), &answer.topic))
        .map(|s| s.opts.qos())
        .max();
    // AWS: a device that did not subscribe to the answer topic does not get the answer.
    let Some(granted) = granted else { return };
    let qos = if (granted as u8) < (qos as u8) {
        granted
    } else {
        qos
    };
    let publish: Publish = CodecPublish {
        dup: false,
        retain: false,
        qos,
        topic: answer.topic.into(),
        packet_id: None,
        payload: answer.payload.into(),
        properties: None,
    }
    .into();
    let publish = publish.create_time(rmqtt::utils::timestamp_millis());
    let from = From::from_system(Id::from(scx.node.id(), ClientId::from(SERVICE_ID)));
    let _ = entry.publish(from, publish).await;
}
