//! `[[expect]]`: authorization expectations, validated into [`ExpectPlan`]s.
//!
//! ```toml
//! [[expect]]
//! group = "sensors"                  # every device of the group (first `limit`, default 10),
//! publish = "dt/{other_client_id}/x" # or device = "sensor-00001"; templates {client_id} and
//! outcome = "deny"                   # {other_client_id} (the group's next device)
//! observer = "monitor-0"             # a plan device allowed to read/write the topics
//! wait = "2s"                        # delivery-check wait (default 2s)
//! ```
//! Exactly one action: `connect = true`, `publish = TOPIC`, `subscribe = FILTER`,
//! `receive = TOPIC`. `observer` is required for the last three (see [`crate::expect`]).

use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::error::Source;
use super::{GroupPlan, ScenarioError};
use crate::expect::{Action, Verdict};
use crate::policy::PolicySet;
use crate::template::{Template, Value};

/// Most probes one scenario may expand to (each takes up to a few seconds).
pub const MAX_PROBES: usize = 1000;
/// Devices of a group checked when `limit` is not given.
const DEFAULT_LIMIT: u64 = 10;

/// One `[[expect]]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawExpect {
    device: Option<Spanned<String>>,
    group: Option<Spanned<String>>,
    limit: Option<Spanned<u64>>,
    connect: Option<Spanned<bool>>,
    publish: Option<Spanned<String>>,
    subscribe: Option<Spanned<String>>,
    receive: Option<Spanned<String>>,
    outcome: Spanned<String>,
    observer: Option<Spanned<String>>,
    wait: Option<Spanned<String>>,
}

/// A device of the plan: its group, its index in the group, its client id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceRef {
    /// Group index in the plan.
    pub group: usize,
    /// Device index in the group.
    pub index: u64,
    /// The device's client id.
    pub client_id: String,
}

/// One probe to run: a device, an action, the expected outcome.
#[derive(Clone, Debug, PartialEq)]
pub struct ExpectPlan {
    /// The acting device.
    pub device: DeviceRef,
    /// What it does.
    pub action: Action,
    /// Allow or deny.
    pub outcome: Verdict,
    /// The device used for delivery checks.
    pub observer: Option<DeviceRef>,
    /// How long a delivery check waits.
    pub wait: Duration,
}

/// Finds the device whose client id is `id`.
fn find(groups: &[GroupPlan], id: &str) -> Option<DeviceRef> {
    groups.iter().enumerate().find_map(|(g, plan)| {
        (0..plan.devices)
            .find(|&i| plan.client_id.render_index(i) == id)
            .map(|index| DeviceRef {
                group: g,
                index,
                client_id: id.to_owned(),
            })
    })
}

pub(super) fn expectations(
    src: &Source<'_>,
    raw: Option<&Spanned<Vec<Spanned<RawExpect>>>>,
    groups: &[GroupPlan],
) -> Result<Vec<ExpectPlan>, ScenarioError> {
    let Some(raw) = raw else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for (i, e) in raw.get_ref().iter().enumerate() {
        let at = e.span().start;
        let e = e.get_ref();
        let key = |k: &str| format!("expect[{i}].{k}");
        let outcome = match e.outcome.get_ref().as_str() {
            "allow" => Verdict::Allow,
            "deny" => Verdict::Deny,
            other => {
                return Err(src.at(
                    e.outcome.span().start,
                    format!(
                        "{}: {other:?} is not an outcome (expected \"allow\" or \"deny\")",
                        key("outcome")
                    ),
                ))
            }
        };
        let wait = match &e.wait {
            Some(w) => {
                let d = super::duration(src, &key("wait"), w)?;
                if d.is_zero() || d > Duration::from_secs(60) {
                    return Err(src.at(
                        w.span().start,
                        format!(
                            "{}: {:?} is out of range (expected more than 0s, at most 60s)",
                            key("wait"),
                            w.get_ref()
                        ),
                    ));
                }
                d
            }
            None => Duration::from_secs(2),
        };
        // Exactly one action.
        let mut actions = Vec::new();
        if let Some(c) = &e.connect {
            if !*c.get_ref() {
                return Err(src.at(
                    c.span().start,
                    format!("{}: false is not an action (expected connect = true, or publish / subscribe / receive)", key("connect")),
                ));
            }
            actions.push(("connect", None));
        }
        for (name, v) in [
            ("publish", &e.publish),
            ("subscribe", &e.subscribe),
            ("receive", &e.receive),
        ] {
            if let Some(v) = v {
                actions.push((name, Some(v)));
            }
        }
        if actions.len() != 1 {
            return Err(src.at(
                at,
                format!("expect[{i}]: {} actions given (expected exactly one of connect = true, publish = TOPIC, subscribe = FILTER, receive = TOPIC)", actions.len()),
            ));
        }
        let (action_name, topic) = actions[0];
        let topic = match topic {
            Some(t) => {
                let tpl = Template::parse(t.get_ref(), &["client_id", "other_client_id"])
                    .map_err(|m| src.at(t.span().start, format!("{}: {m}", key(action_name))))?;
                let text = t.get_ref();
                let wild = text.contains(['+', '#']);
                if text.is_empty() || (action_name != "subscribe" && wild) {
                    return Err(src.at(
                        t.span().start,
                        format!("{}: {text:?} is not a topic (expected a non-empty topic without + or #)", key(action_name)),
                    ));
                }
                Some((tpl, t.span().start))
            }
            None => None,
        };
        let observer = match (&e.observer, topic.is_some()) {
            (Some(o), _) => Some(find(groups, o.get_ref()).ok_or_else(|| {
                src.at(o.span().start, format!("{}: {:?} is not a client id of any group (expected a device of the plan the broker lets read and write the topics)", key("observer"), o.get_ref()))
            })?),
            (None, true) => {
                return Err(src.at(
                    at,
                    format!("expect[{i}]: {action_name} needs observer = CLIENT_ID (a device of the plan the broker lets read and write the topic, for the delivery check)"),
                ))
            }
            (None, false) => None,
        };
        // The devices it applies to.
        let devices: Vec<(DeviceRef, Option<String>)> = match (&e.device, &e.group) {
            (Some(d), None) => {
                let dev = find(groups, d.get_ref()).ok_or_else(|| {
                    src.at(
                        d.span().start,
                        format!(
                            "{}: {:?} is not a client id of any group",
                            key("device"),
                            d.get_ref()
                        ),
                    )
                })?;
                if let Some(l) = &e.limit {
                    return Err(src.at(
                        l.span().start,
                        format!("{}: applies to group = ... only", key("limit")),
                    ));
                }
                vec![(dev, None)]
            }
            (None, Some(g)) => {
                let Some(gi) = groups.iter().position(|p| &p.name == g.get_ref()) else {
                    return Err(src.at(
                        g.span().start,
                        format!(
                            "{}: {:?} is not the name of a [[group]]",
                            key("group"),
                            g.get_ref()
                        ),
                    ));
                };
                let plan = &groups[gi];
                let limit = match &e.limit {
                    Some(l) if *l.get_ref() == 0 || *l.get_ref() as usize > MAX_PROBES => {
                        return Err(src.at(
                            l.span().start,
                            format!(
                                "{}: {} is out of range (expected 1..={MAX_PROBES})",
                                key("limit"),
                                l.get_ref()
                            ),
                        ))
                    }
                    Some(l) => *l.get_ref(),
                    None => DEFAULT_LIMIT,
                };
                let n = plan.devices.min(limit);
                (0..n)
                    .map(|i| {
                        let other = (plan.devices >= 2)
                            .then(|| plan.client_id.render_index((i + 1) % plan.devices));
                        (
                            DeviceRef {
                                group: gi,
                                index: i,
                                client_id: plan.client_id.render_index(i),
                            },
                            other,
                        )
                    })
                    .collect()
            }
            _ => {
                return Err(src.at(
                    at,
                    format!("expect[{i}]: give device = CLIENT_ID or group = NAME (exactly one)"),
                ))
            }
        };
        for (dev, other) in devices {
            let action = match &topic {
                None => Action::Connect,
                Some((tpl, pos)) => {
                    if tpl.uses("other_client_id") && other.is_none() {
                        return Err(src.at(*pos, format!("{}: {{other_client_id}} needs group = NAME with at least 2 devices", key(action_name))));
                    }
                    let mut s = String::new();
                    tpl.render_into(&mut s, |name| match name {
                        "client_id" => Value::Text(&dev.client_id),
                        _ => Value::Text(other.as_deref().unwrap_or_default()),
                    });
                    match action_name {
                        "publish" => Action::Publish(s),
                        "subscribe" => Action::Subscribe(s),
                        _ => Action::Receive(s),
                    }
                }
            };
            out.push(ExpectPlan {
                device: dev,
                action,
                outcome,
                observer: observer.clone(),
                wait,
            });
        }
        if out.len() > MAX_PROBES {
            return Err(src.at(at, format!("expect[{i}]: the expectations expand to more than {MAX_PROBES} probes (expected fewer; lower limit)")));
        }
    }
    Ok(out)
}

/// `[policy]` as written: AWS IoT policy files as the source of expectations.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPolicy {
    files: Spanned<Vec<Spanned<std::path::PathBuf>>>,
    arn: Spanned<String>,
    group: Spanned<String>,
    topics: Spanned<Vec<Spanned<String>>>,
    observer: Spanned<String>,
    limit: Option<Spanned<u64>>,
    wait: Option<Spanned<String>>,
}

/// The expectation matrix from `[policy]`: for the first `limit` devices of `group`, connect,
/// and publish / subscribe / receive on each topic template, each expected as the AWS IoT
/// policy evaluator ([`crate::policy`]) decides for that device (context: client id and
/// certificate CommonName = the device's client id). A device that may not connect is denied
/// everything; receiving needs both `iot:Subscribe` on the topic as a filter and
/// `iot:Receive`; a subscription is checked by a delivery, so it needs `iot:Receive` on a
/// topic inside the filter too. The embedded broker enforces the policies on every device but
/// the observer.
pub(super) fn from_policy(
    src: &Source<'_>,
    raw: Option<&Spanned<RawPolicy>>,
    groups: &[GroupPlan],
    already: usize,
) -> Result<(Vec<ExpectPlan>, Option<std::sync::Arc<PolicySet>>), ScenarioError> {
    use crate::policy::Policy;
    let Some(raw) = raw else {
        return Ok((Vec::new(), None));
    };
    let r = raw.get_ref();
    let mut policies = Vec::new();
    for f in r.files.get_ref() {
        let path = src.resolve(f.get_ref());
        let p = Policy::load(&path)
            .map_err(|e| src.at(f.span().start, format!("policy.files: {e}")))?;
        policies.push(p);
    }
    if policies.is_empty() {
        return Err(src.at(
            r.files.span().start,
            "policy.files: empty (expected at least one AWS IoT policy JSON file)",
        ));
    }
    let arn = r.arn.get_ref().trim_end_matches(':');
    let fields: Vec<&str> = arn.split(':').collect();
    if fields.len() != 5 || fields[0] != "arn" || fields[2] != "iot" {
        return Err(src.at(
            r.arn.span().start,
            format!(
                "policy.arn: {:?} is not an ARN prefix (expected \"arn:aws:iot:REGION:ACCOUNT\")",
                r.arn.get_ref()
            ),
        ));
    }
    let Some(gi) = groups.iter().position(|g| &g.name == r.group.get_ref()) else {
        return Err(src.at(
            r.group.span().start,
            format!(
                "policy.group: {:?} is not the name of a [[group]]",
                r.group.get_ref()
            ),
        ));
    };
    let observer = find(groups, r.observer.get_ref()).ok_or_else(|| {
        src.at(
            r.observer.span().start,
            format!(
                "policy.observer: {:?} is not a client id of any group (expected a device the broker lets read and write the topics)",
                r.observer.get_ref()
            ),
        )
    })?;
    let wait = match &r.wait {
        Some(w) => super::duration(src, "policy.wait", w)?,
        None => Duration::from_secs(2),
    };
    let plan = &groups[gi];
    let limit = match &r.limit {
        Some(l) if *l.get_ref() == 0 || *l.get_ref() as usize > MAX_PROBES => {
            return Err(src.at(
                l.span().start,
                format!(
                    "policy.limit: {} is out of range (expected 1..={MAX_PROBES})",
                    l.get_ref()
                ),
            ))
        }
        Some(l) => *l.get_ref(),
        None => DEFAULT_LIMIT,
    };
    let mut topics = Vec::new();
    for t in r.topics.get_ref() {
        let tpl = Template::parse(t.get_ref(), &["client_id", "other_client_id"])
            .map_err(|m| src.at(t.span().start, format!("policy.topics: {m}")))?;
        if t.get_ref().is_empty() || t.get_ref().contains(['+', '#']) {
            return Err(src.at(
                t.span().start,
                format!("policy.topics: {:?} is not a topic (expected a non-empty topic without + or #)", t.get_ref()),
            ));
        }
        if tpl.uses("other_client_id") && plan.devices < 2 {
            return Err(src.at(
                t.span().start,
                "policy.topics: {other_client_id} needs a group with at least 2 devices",
            ));
        }
        topics.push(tpl);
    }
    let set = PolicySet {
        policies,
        arn: arn.to_owned(),
        unrestricted: vec![observer.client_id.clone()],
    };
    let mut out = Vec::new();
    for i in 0..plan.devices.min(limit) {
        let client_id = plan.client_id.render_index(i);
        let other = plan.client_id.render_index((i + 1) % plan.devices);
        let allowed = |action: &str, resource: String| {
            let (kind, name) = resource.split_once('/').unwrap_or_default();
            set.allows(&client_id, action, kind, name)
        };
        let verdict = |ok: bool| if ok { Verdict::Allow } else { Verdict::Deny };
        let connect = allowed("iot:Connect", format!("client/{client_id}"));
        let dev = DeviceRef {
            group: gi,
            index: i,
            client_id: client_id.clone(),
        };
        let mut push = |action: Action, ok: bool| {
            out.push(ExpectPlan {
                device: dev.clone(),
                action,
                outcome: verdict(ok),
                observer: Some(observer.clone()),
                wait,
            })
        };
        push(Action::Connect, connect);
        for tpl in &topics {
            let mut topic = String::new();
            tpl.render_into(&mut topic, |name| match name {
                "client_id" => Value::Text(&client_id),
                _ => Value::Text(&other),
            });
            let publish = allowed("iot:Publish", format!("topic/{topic}"));
            let subscribe = allowed("iot:Subscribe", format!("topicfilter/{topic}"));
            let receive = allowed("iot:Receive", format!("topic/{topic}"));
            push(Action::Publish(topic.clone()), connect && publish);
            push(
                Action::Subscribe(topic.clone()),
                connect && subscribe && receive,
            );
            push(Action::Receive(topic), connect && subscribe && receive);
        }
    }
    if out.len() + already > MAX_PROBES {
        return Err(src.at(
            raw.span().start,
            format!("policy: the matrix has {} probes beside {already} from [[expect]] (expected at most {MAX_PROBES}; lower limit or topics)", out.len()),
        ));
    }
    Ok((out, Some(std::sync::Arc::new(set))))
}
