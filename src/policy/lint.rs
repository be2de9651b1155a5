//! `policy lint`: known traps in AWS IoT policies.
//!
//! The checks follow AWS IoT Device Defender's audit "AWS IoT policy potentially misconfigured"
//! (<https://docs.aws.amazon.com/iot/latest/developerguide/audit-chk-iot-misconfigured-policies.html>)
//! and "AWS IoT policies overly permissive"
//! (<https://docs.aws.amazon.com/iot/latest/developerguide/audit-chk-iot-policy-permissive.html>):
//! - `deny-bypassed-by-mqtt-wildcard` (AWS: TOPIC_FILTERS_INTENDED_TO_DENY_ALLOWED_USING_WILDCARDS):
//!   a Deny of `iot:Subscribe` on `topicfilter/a/restricted/*` does not stop a subscription to
//!   `a/#` that an Allow on `topicfilter/a/*` grants; if `iot:Receive` on `topic/a/restricted/...`
//!   is allowed too, the device reads the restricted topics. The fix is to deny `iot:Receive`.
//! - `mqtt-wildcard-in-deny` (AWS: POLICY_CONTAINS_MQTT_WILDCARDS_IN_DENY_STATEMENT): `+` and `#`
//!   are literal in policies, so a Deny on `topicfilter/building/control_room/#` denies only
//!   that one filter.
//! - `overbroad-action` / `overbroad-resource`: an Allow of `*` / `iot:*`, or on `*` or a whole
//!   resource type (`topic/*`, `client/*`, ...).
//!
//! All files given are linted together as the policies of one principal (the bypass can span
//! files).

use serde::Serialize;

use super::document::{Effect, Policy};
use super::eval::{evaluate, Decision};
use super::pattern::{Context, Pattern};

/// One lint warning.
#[derive(Clone, Debug, Serialize)]
pub struct Finding {
    /// The policy file.
    pub policy: String,
    /// Statement index, from 0.
    pub statement: usize,
    /// The statement's Sid.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sid: Option<String>,
    /// A stable code for the trap.
    pub code: &'static str,
    /// What is wrong and how to fix it.
    pub message: String,
}

/// Lints the policies of one principal.
pub fn lint(policies: &[Policy]) -> Vec<Finding> {
    let mut out = Vec::new();
    for p in policies {
        for s in &p.statements {
            let mut push = |code, message: String| {
                out.push(Finding {
                    policy: p.file.clone(),
                    statement: s.index,
                    sid: s.sid.clone(),
                    code,
                    message,
                })
            };
            match s.effect {
                Effect::Allow => {
                    if s.not_action {
                        push(
                            "overbroad-action",
                            "Allow with NotAction grants every other action, including ones \
                             added later; list the actions instead"
                                .into(),
                        );
                    }
                    for a in &s.actions {
                        if !s.not_action && (a == "*" || a.eq_ignore_ascii_case("iot:*")) {
                            push(
                                "overbroad-action",
                                format!("Allow of action {a:?} grants every AWS IoT action; list the actions the device needs"),
                            );
                        }
                    }
                    if s.not_resource {
                        push(
                            "overbroad-resource",
                            "Allow with NotResource grants every other resource; list the resources instead".into(),
                        );
                    }
                    for r in &s.resources {
                        if !s.not_resource && whole_type(&r.text) {
                            push(
                                "overbroad-resource",
                                format!("Allow on resource {:?} covers every resource of its kind; scope it, e.g. with ${{iot:ClientId}} or ${{iot:Connection.Thing.ThingName}}", r.text),
                            );
                        }
                    }
                }
                Effect::Deny => {
                    for r in &s.resources {
                        if let Some((_, name)) = split_typed(&r.text) {
                            if name.contains(['+', '#']) {
                                push(
                                    "mqtt-wildcard-in-deny",
                                    format!("Deny on {:?}: MQTT wildcards + and # are plain characters in policies, so this denies only that literal name; use * and ?", r.text),
                                );
                            }
                        }
                    }
                    if !s.not_action
                        && !s.not_resource
                        && s.action_patterns.iter().any(|a| a.matches("iot:Subscribe"))
                    {
                        for r in &s.resources {
                            if let Some(message) = bypass(policies, &r.text) {
                                push("deny-bypassed-by-mqtt-wildcard", message);
                            }
                        }
                    }
                }
            }
        }
    }
    out
}

/// `*`, or an ARN whose name part is just `*` (`...:topic/*`, `...:*`).
fn whole_type(text: &str) -> bool {
    if text == "*" {
        return true;
    }
    // arn:PARTITION:iot:REGION:ACCOUNT:TYPE/NAME (variables in NAME may contain ':').
    let name = text.splitn(6, ':').nth(5).unwrap_or_default();
    name == "*" || name.split_once('/').is_some_and(|(_, n)| n == "*")
}

/// Splits `arn:...:TYPE/NAME` into (`arn:...:TYPE/`, `NAME`) for topic and topicfilter types.
fn split_typed(text: &str) -> Option<(&str, &str)> {
    for kind in [":topicfilter/", ":topic/"] {
        if let Some(at) = text.find(kind) {
            let cut = at + kind.len();
            return Some((&text[..cut], &text[cut..]));
        }
    }
    None
}

/// For a denied `topicfilter/...` resource: an MQTT wildcard filter above the denied
/// branch that the policies allow, while `iot:Receive` on a topic inside it is allowed too.
fn bypass(policies: &[Policy], deny: &str) -> Option<String> {
    let at = deny.find(":topicfilter/")?;
    let prefix = &deny[..at + ":topicfilter/".len()];
    let filter = &deny[prefix.len()..];
    let wild_at = filter.find(['*', '?', '$']);
    let levels: Vec<&str> = match wild_at {
        None => filter.split('/').collect(),
        Some(i) => {
            let lit = &filter[..i];
            let mut v: Vec<&str> = lit.split('/').collect();
            v.pop(); // the partial level the wildcard completes
            v
        }
    };
    // A concrete ARN prefix the deny's prefix matches: its own, or one an Allow names.
    let prefix_pattern = Pattern::resource(prefix);
    let mut prefixes: Vec<String> = policies
        .iter()
        .flat_map(|p| &p.statements)
        .filter(|s| s.effect == Effect::Allow)
        .flat_map(|s| &s.resources)
        .filter_map(|r| split_typed(&r.text).map(|(p, _)| p))
        .chain([prefix])
        .filter(|p| !p.contains(['*', '?', '$']))
        .map(|p| p.replace(":topic/", ":topicfilter/"))
        .filter(|p| prefix_pattern.matches(p))
        .collect();
    if prefixes.is_empty() {
        prefixes.push(prefix.replace(['*', '?'], "x"));
    }
    let mut candidates = Vec::new();
    for k in 0..levels.len() {
        let mut f = levels[..k].join("/");
        f.push_str(if k == 0 { "#" } else { "/#" });
        candidates.push(f);
    }
    for k in 0..levels.len() {
        let mut parts = levels.clone();
        parts[k] = "+";
        let mut f = parts.join("/");
        if wild_at.is_some() {
            f.push_str("/#");
        }
        candidates.push(f);
    }
    let inside = if wild_at.is_some() {
        format!("{}/x", levels.join("/"))
    } else {
        levels.join("/")
    };
    let ctx = Context::default();
    for p in &prefixes {
        let topic_prefix = p.replace(":topicfilter/", ":topic/");
        let receive = evaluate(
            policies,
            &ctx,
            "iot:Receive",
            &format!("{topic_prefix}{inside}"),
        );
        if receive.decision != Decision::Allowed {
            continue;
        }
        for c in &candidates {
            let sub = evaluate(policies, &ctx, "iot:Subscribe", &format!("{p}{c}"));
            if sub.decision == Decision::Allowed {
                let by = sub.decided_by.map(|s| s.to_string()).unwrap_or_default();
                let rby = receive
                    .decided_by
                    .map(|s| s.to_string())
                    .unwrap_or_default();
                return Some(format!(
                    "Deny of iot:Subscribe on {deny:?} is bypassed: subscribing to {c:?} is allowed ({by}) and iot:Receive on topic {inside:?} is allowed ({rby}); deny iot:Receive on the topic/ resources too"
                ));
            }
        }
    }
    None
}
