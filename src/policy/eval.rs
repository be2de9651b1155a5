//! The evaluator: which statements match a request, and what they decide.
//!
//! Rules (AWS IoT Core developer guide, "AWS IoT Core policies",
//! <https://docs.aws.amazon.com/iot/latest/developerguide/iot-policies.html>, and IAM's
//! "Policy evaluation logic" that it follows): every request is denied by default; an Allow
//! in any attached policy grants it (policies are unioned); an explicit Deny in any attached
//! policy overrides every Allow. Actions and their resources ("AWS IoT Core policy actions",
//! <https://docs.aws.amazon.com/iot/latest/developerguide/iot-policy-actions.html>):
//! `iot:Connect` -> `client/<client id>`, `iot:Publish`, `iot:Receive`, `iot:RetainPublish` ->
//! `topic/<topic>`, `iot:Subscribe` -> `topicfilter/<filter>`.

use serde::{Deserialize, Serialize};

use super::document::{Effect, Policy, PolicyError, Statement};
use super::pattern::Context;

/// What the policies decide for one request (the names of AWS's TestAuthorization API).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Decision {
    /// An Allow matched and no Deny did.
    Allowed,
    /// A Deny matched.
    ExplicitDeny,
    /// Nothing matched: denied by default.
    ImplicitDeny,
}

impl std::fmt::Display for Decision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(match self {
            Decision::Allowed => "ALLOWED",
            Decision::ExplicitDeny => "EXPLICIT_DENY",
            Decision::ImplicitDeny => "IMPLICIT_DENY",
        })
    }
}

/// The statement that decided: policy file, statement index, Sid.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct StatementRef {
    /// The policy file.
    pub policy: String,
    /// Statement index in that file, from 0.
    pub statement: usize,
    /// The statement's Sid, if it has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sid: Option<String>,
}

impl std::fmt::Display for StatementRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} statement {}", self.policy, self.statement)?;
        if let Some(sid) = &self.sid {
            write!(f, " (Sid {sid:?})")?;
        }
        Ok(())
    }
}

/// One request: an action on a resource ARN.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Request {
    /// `iot:Connect`, `iot:Publish`, ...
    pub action: String,
    /// The full resource ARN, `arn:aws:iot:REGION:ACCOUNT:topic/...`.
    pub resource: String,
    /// Optional expected decision; a difference makes `policy eval` exit 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expect: Option<Decision>,
}

impl Request {
    /// Checks the request's form: an `iot:` action and an ARN whose resource type fits it.
    pub fn validate(&self) -> Result<(), PolicyError> {
        let bad = |m: String| PolicyError::Input(m);
        let Some(name) = self.action.strip_prefix("iot:") else {
            return Err(bad(format!(
                "action {:?} is not of the form \"iot:Name\" (such as iot:Publish)",
                self.action
            )));
        };
        if name.is_empty() || name.contains(['*', '?']) {
            return Err(bad(format!(
                "action {:?} must name one action (no wildcards)",
                self.action
            )));
        }
        let fields: Vec<&str> = self.resource.splitn(6, ':').collect();
        if fields.len() != 6 || fields[0] != "arn" || fields[2] != "iot" || !fields[5].contains('/')
        {
            return Err(bad(format!(
                "resource {:?} is not an AWS IoT ARN (expected \
                 arn:aws:iot:REGION:ACCOUNT:TYPE/NAME)",
                self.resource
            )));
        }
        let kind = fields[5].split('/').next().unwrap_or_default();
        let want = match name.to_ascii_lowercase().as_str() {
            "connect" => Some("client"),
            "publish" | "receive" | "retainpublish" => Some("topic"),
            "subscribe" => Some("topicfilter"),
            _ => None,
        };
        if let Some(want) = want {
            if kind != want {
                return Err(bad(format!(
                    "resource {:?} has type {kind:?}, but {} takes a {want}/... resource",
                    self.resource, self.action
                )));
            }
        }
        Ok(())
    }
}

/// The answer for one request.
#[derive(Clone, Debug, Serialize)]
pub struct Evaluation {
    /// The decision.
    pub decision: Decision,
    /// The deciding statement (the first matching Deny, else the first matching Allow).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decided_by: Option<StatementRef>,
}

fn statement_matches(s: &Statement, action: &str, resource: &str, ctx: &Context) -> bool {
    let action_hit = s.action_patterns.iter().any(|p| p.matches(action));
    if action_hit == s.not_action {
        return false;
    }
    let resource_hit = s
        .resources
        .iter()
        .any(|r| r.text == "*" || r.resolve(ctx).matches(resource));
    resource_hit != s.not_resource
}

/// Evaluates one request against the union of `policies`.
pub fn evaluate(policies: &[Policy], ctx: &Context, action: &str, resource: &str) -> Evaluation {
    let mut allow: Option<StatementRef> = None;
    for p in policies {
        for s in &p.statements {
            if !statement_matches(s, action, resource, ctx) {
                continue;
            }
            let at = StatementRef {
                policy: p.file.clone(),
                statement: s.index,
                sid: s.sid.clone(),
            };
            match s.effect {
                Effect::Deny => {
                    return Evaluation {
                        decision: Decision::ExplicitDeny,
                        decided_by: Some(at),
                    }
                }
                Effect::Allow => {
                    allow.get_or_insert(at);
                }
            }
        }
    }
    match allow {
        Some(at) => Evaluation {
            decision: Decision::Allowed,
            decided_by: Some(at),
        },
        None => Evaluation {
            decision: Decision::ImplicitDeny,
            decided_by: None,
        },
    }
}
