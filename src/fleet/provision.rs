//! A provisioning group's device: AWS IoT fleet provisioning by claim over its session.
//!
//! ```text
//! connected with the claim certificate (client ID = the device's own)
//!  -> SUBSCRIBE create/{accepted,rejected} + provision/{accepted,rejected} -> SUBACK
//!  -> PUBLISH $aws/certificates/create/json {}      (mode "csr": create-from-csr with a CSR)
//!  <- accepted: certificateId, certificatePem, privateKey, certificateOwnershipToken
//!  -> PUBLISH $aws/provisioning-templates/T/provision/json {token, {SerialNumber: client ID}}
//!  <- accepted: thingName
//!  -> DISCONNECT; connect with the new certificate, client ID = thingName
//!  -> idle until the run ends (reconnecting per the group's policy if the session is lost)
//! ```
//!
//! The new key and certificate live in this task's memory only; neither they nor the
//! ownership token are logged. A rejection, an unanswered request or a lost claim session
//! ends the device's flow (counted, with one error line naming the error code); it is not
//! retried.

use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;

use super::failure::Failure;
use super::session::{Seen, Session};
use super::GroupCtx;
use crate::aws::provision_stats::ProvisionMetric;
use crate::aws::provisioning::{
    register_topic, CreateFromCsrAccepted, CreateFromCsrRequest, CreateKeysAccepted, ErrorResponse,
    RegisterAccepted, RegisterRequest, CREATE_FROM_CSR, CREATE_KEYS,
};
use crate::scenario::provision::ProvisionMode;
use crate::scenario::SubscribePlan;

/// The failure class of CONNACK "server unavailable".
const SERVER_UNAVAILABLE: &str = "mqtt: server unavailable";
/// Retries of the connect with the new certificate refused as "server unavailable".
const OWN_CONNECT_RETRIES: u32 = 3;

/// How a wait for an answer ended.
enum Waited {
    Accepted(bytes::Bytes),
    Rejected(bytes::Bytes),
    TimedOut,
    Lost(Failure),
    Ended,
}

/// The new identity, as received.
struct Issued {
    cert: Vec<u8>,
    key: Vec<u8>,
    token: String,
}

/// Runs device `index`'s provisioning flow on its claim `session` (connect started at
/// `started`), then keeps the session with its own certificate until `end`. `Ok(true)`: up
/// at the end; `Ok(false)`: the flow failed or the run stopped (counted here).
pub(super) async fn serve(
    ctx: &GroupCtx,
    index: usize,
    client_id: &str,
    session: &mut Session,
    stop: &CancellationToken,
    end: &CancellationToken,
    started: Instant,
) -> Result<bool, Failure> {
    let plan = ctx
        .plan
        .provision
        .as_ref()
        .expect("provision::serve runs for provisioning groups");
    let g = ctx.group;
    let stats = &*ctx.provision;
    let c = stats.group(g);
    let rec = &*ctx.recorder;
    let counters = rec.group(g);
    stats.started(g, started);

    let create = match plan.mode {
        ProvisionMode::Keys => CREATE_KEYS,
        ProvisionMode::Csr => CREATE_FROM_CSR,
    };
    let register = register_topic(&plan.template);
    let subs: Vec<SubscribePlan> = [create, register.as_str()]
        .iter()
        .flat_map(|t| {
            ["accepted", "rejected"].map(|s| SubscribePlan {
                filter: format!("{t}/{s}"),
                qos: plan.qos,
            })
        })
        .collect();
    if !session.try_subscribe(&subs) {
        return Err(Failure::new(
            "protocol error",
            "SUBSCRIBE could not be queued",
        ));
    }
    let fail = |session_up: bool, class: &'static str, detail: String| {
        rec.error(class, format!("{client_id}: {detail}"));
        if session_up {
            counters.connected.fetch_sub(1, Relaxed);
        }
    };

    // SUBACK first: AWS answers only subscribed devices.
    let deadline = tokio::time::Instant::now() + plan.timeout;
    loop {
        let seen = tokio::select! {
            biased;
            _ = end.cancelled() => return Ok(true),
            _ = tokio::time::sleep_until(deadline) => {
                c.timeouts.fetch_add(1, Relaxed);
                session.disconnect(super::DISCONNECT_WITHIN).await;
                fail(true, "provision: no answer", format!("no SUBACK within {:?}", plan.timeout));
                return Ok(false);
            }
            seen = session.next() => seen,
        };
        match seen {
            Ok(Seen::SubAcked { refused: 0, .. }) => break,
            Ok(Seen::SubAcked { reason, .. }) => {
                session.disconnect(super::DISCONNECT_WITHIN).await;
                fail(
                    true,
                    "mqtt: subscribe refused",
                    format!(
                        "provisioning answer topics refused (SUBACK {})",
                        reason.unwrap_or_default()
                    ),
                );
                return Ok(false);
            }
            Ok(_) => {}
            Err(f) => {
                c.session_lost.fetch_add(1, Relaxed);
                counters.disconnects.fetch_add(1, Relaxed);
                fail(true, f.class, format!("claim session lost: {}", f.detail));
                return Ok(false);
            }
        }
    }

    // Create: keys from the service, or a certificate for our own key.
    let mut own_key: Option<Vec<u8>> = None;
    let body = match plan.mode {
        ProvisionMode::Keys => b"{}".to_vec(),
        ProvisionMode::Csr => match csr(client_id) {
            Ok((pem, key)) => {
                own_key = Some(key);
                serde_json::to_vec(&CreateFromCsrRequest {
                    certificate_signing_request: pem,
                })
                .expect("serializes")
            }
            Err(e) => {
                session.disconnect(super::DISCONNECT_WITHIN).await;
                fail(true, "provision: csr", format!("making a CSR: {e}"));
                return Ok(false);
            }
        },
    };
    let sent = Instant::now();
    if !session.try_publish(create, plan.qos, false, body) {
        return Err(Failure::new(
            "protocol error",
            "PUBLISH could not be queued",
        ));
    }
    let waited = wait(session, create, plan.timeout, end).await;
    let issued = match waited {
        Waited::Accepted(payload) => {
            let parsed = match plan.mode {
                ProvisionMode::Keys => serde_json::from_slice::<CreateKeysAccepted>(&payload)
                    .ok()
                    .and_then(|a| {
                        Some(Issued {
                            cert: pem_der(&a.certificate_pem)?,
                            key: pem_der(&a.private_key)?,
                            token: a.certificate_ownership_token,
                        })
                    }),
                ProvisionMode::Csr => serde_json::from_slice::<CreateFromCsrAccepted>(&payload)
                    .ok()
                    .and_then(|a| {
                        Some(Issued {
                            cert: pem_der(&a.certificate_pem)?,
                            key: own_key.take()?,
                            token: a.certificate_ownership_token,
                        })
                    }),
            };
            match parsed {
                Some(i) => {
                    c.created.fetch_add(1, Relaxed);
                    stats.record(g, &[(ProvisionMetric::Create, sent.elapsed())]);
                    i
                }
                None => {
                    c.unreadable.fetch_add(1, Relaxed);
                    session.disconnect(super::DISCONNECT_WITHIN).await;
                    fail(
                        true,
                        "provision: unreadable answer",
                        format!(
                            "{} bytes on {create}/accepted (expected the documented shape)",
                            payload.len()
                        ),
                    );
                    return Ok(false);
                }
            }
        }
        other => return ended(ctx, client_id, session, create, other).await,
    };

    // Register the thing.
    let body = serde_json::to_vec(&RegisterRequest {
        certificate_ownership_token: issued.token,
        parameters: [("SerialNumber".to_string(), client_id.to_string())].into(),
    })
    .expect("serializes");
    let sent = Instant::now();
    if !session.try_publish(&register, plan.qos, false, body) {
        return Err(Failure::new(
            "protocol error",
            "PUBLISH could not be queued",
        ));
    }
    let thing = match wait(session, &register, plan.timeout, end).await {
        Waited::Accepted(payload) => match serde_json::from_slice::<RegisterAccepted>(&payload) {
            Ok(a) => {
                c.registered.fetch_add(1, Relaxed);
                stats.record(g, &[(ProvisionMetric::Register, sent.elapsed())]);
                a.thing_name
            }
            Err(_) => {
                c.unreadable.fetch_add(1, Relaxed);
                session.disconnect(super::DISCONNECT_WITHIN).await;
                fail(
                    true,
                    "provision: unreadable answer",
                    format!(
                        "{} bytes on {register}/accepted (expected the documented shape)",
                        payload.len()
                    ),
                );
                return Ok(false);
            }
        },
        other => return ended(ctx, client_id, session, &register, other).await,
    };

    // Reconnect with the new identity.
    session.disconnect(super::DISCONNECT_WITHIN).await;
    counters.connected.fetch_sub(1, Relaxed);
    let mut chain = vec![CertificateDer::from(issued.cert)];
    chain.extend(ctx.fleet.intermediates().iter().cloned());
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(issued.key));
    let tls = match ctx.endpoint.trust.device_tls(&thing, chain, key) {
        Ok(tls) => tls,
        Err(e) => {
            c.own_connect_failed.fetch_add(1, Relaxed);
            fail(
                false,
                "tls: client identity",
                format!("the provisioned identity: {e}"),
            );
            return Ok(false);
        }
    };
    *session = ctx.session(thing.clone(), index, tls, 1);
    let connecting = Instant::now();
    let mut attempt = 0;
    let outcome = loop {
        let outcome = tokio::select! {
            biased;
            _ = stop.cancelled() => None,
            r = timeout(ctx.plan.connect.timeout, session.connect()) => Some(r),
        };
        // The broker may still be closing the claim session under the same client ID
        // (rmqtt answers "server unavailable" then): retry a few times, briefly.
        match outcome {
            Some(Ok(Err(f))) if f.class == SERVER_UNAVAILABLE && attempt < OWN_CONNECT_RETRIES => {
                attempt += 1;
                c.own_connect_retries.fetch_add(1, Relaxed);
                tokio::select! {
                    biased;
                    _ = stop.cancelled() => break None,
                    _ = tokio::time::sleep(Duration::from_millis(50) * attempt) => {}
                }
            }
            other => break other,
        }
    };
    match outcome {
        None => return Ok(false),
        Some(Ok(Ok(_))) => {
            let now = Instant::now();
            counters.connected.fetch_add(1, Relaxed);
            stats.provisioned(
                g,
                now,
                &[
                    (ProvisionMetric::OwnConnect, now - connecting),
                    (ProvisionMetric::Total, now - started),
                ],
            );
        }
        Some(Ok(Err(f))) => {
            c.own_connect_failed.fetch_add(1, Relaxed);
            fail(
                false,
                f.class,
                format!(
                    "connect as {thing} with the provisioned certificate: {}",
                    f.detail
                ),
            );
            return Ok(false);
        }
        Some(Err(_)) => {
            c.own_connect_failed.fetch_add(1, Relaxed);
            fail(
                false,
                "connect timeout",
                format!(
                    "connect as {thing} with the provisioned certificate: no CONNACK within {:?}",
                    ctx.plan.connect.timeout
                ),
            );
            return Ok(false);
        }
    }

    // Provisioned: hold the session until the run ends.
    let global = ctx.offset + index;
    let mut backoff = ctx
        .plan
        .reconnect
        .map(|p| super::backoff::Backoff::new(p, ctx.seed ^ (global as u64).rotate_left(29)));
    loop {
        tokio::select! {
            biased;
            _ = end.cancelled() => return Ok(true),
            seen = session.next() => {
                let Err(failure) = seen else { continue };
                counters.disconnects.fetch_add(1, Relaxed);
                let Some(backoff) = backoff.as_mut() else { return Err(failure) };
                counters.connected.fetch_sub(1, Relaxed);
                rec.error(failure.class, format!("{thing}: {} (reconnecting)", failure.detail));
                if super::reconnect(ctx, &thing, session, backoff, stop, &()).await.is_none() {
                    return Ok(false);
                }
                counters.connected.fetch_add(1, Relaxed);
            }
        }
    }
}

/// The end of a flow whose request was not accepted: counts it, closes the claim session.
async fn ended(
    ctx: &GroupCtx,
    client_id: &str,
    session: &mut Session,
    request: &str,
    waited: Waited,
) -> Result<bool, Failure> {
    let g = ctx.group;
    let c = ctx.provision.group(g);
    let counters = ctx.recorder.group(g);
    let (class, detail, up) = match waited {
        Waited::Rejected(payload) => match serde_json::from_slice::<ErrorResponse>(&payload) {
            Ok(e) => {
                ctx.provision.rejected(g, &e.error_code);
                (
                    "provision: rejected",
                    format!(
                        "{request} rejected: {} {} ({})",
                        e.status_code, e.error_code, e.error_message
                    ),
                    true,
                )
            }
            Err(_) => {
                c.unreadable.fetch_add(1, Relaxed);
                (
                    "provision: unreadable answer",
                    format!("{} bytes on {request}/rejected (expected statusCode, errorCode, errorMessage)", payload.len()),
                    true,
                )
            }
        },
        Waited::TimedOut => {
            c.timeouts.fetch_add(1, Relaxed);
            (
                "provision: no answer",
                format!(
                    "{request}: no answer within {:?}",
                    ctx.plan
                        .provision
                        .as_ref()
                        .map(|p| p.timeout)
                        .unwrap_or_default()
                ),
                true,
            )
        }
        Waited::Lost(f) => {
            c.session_lost.fetch_add(1, Relaxed);
            counters.disconnects.fetch_add(1, Relaxed);
            (
                f.class,
                format!("claim session lost during {request}: {}", f.detail),
                false,
            )
        }
        Waited::Ended => return Ok(true),
        Waited::Accepted(_) => unreachable!("accepted answers are handled by the caller"),
    };
    ctx.recorder.error(class, format!("{client_id}: {detail}"));
    if up {
        session.disconnect(super::DISCONNECT_WITHIN).await;
    }
    counters.connected.fetch_sub(1, Relaxed);
    Ok(false)
}

/// Waits for the answer to `request` (`request/accepted` or `request/rejected`).
async fn wait(
    session: &mut Session,
    request: &str,
    within: Duration,
    end: &CancellationToken,
) -> Waited {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let seen = tokio::select! {
            biased;
            _ = end.cancelled() => return Waited::Ended,
            _ = tokio::time::sleep_until(deadline) => return Waited::TimedOut,
            seen = session.next() => seen,
        };
        match seen {
            Ok(Seen::Received(payload, topic)) => {
                let Some(rest) = topic
                    .strip_prefix(request.as_bytes())
                    .and_then(|r| r.strip_prefix(b"/"))
                else {
                    continue;
                };
                match rest {
                    b"accepted" => return Waited::Accepted(payload),
                    b"rejected" => return Waited::Rejected(payload),
                    _ => {}
                }
            }
            Ok(_) => {}
            Err(f) => return Waited::Lost(f),
        }
    }
}

/// The DER inside a PEM block; `None` when it is not PEM.
fn pem_der(text: &str) -> Option<Vec<u8>> {
    pem::parse(text).ok().map(pem::Pem::into_contents)
}

/// A P-256 key made on the device and a CSR for it (CN = the client ID): PEM CSR, PKCS#8 key.
fn csr(client_id: &str) -> Result<(String, Vec<u8>), rcgen::Error> {
    let key = rcgen::KeyPair::generate()?;
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new())?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, client_id);
    let pem = params.serialize_request(&key)?.pem()?;
    Ok((pem, key.serialize_der()))
}
