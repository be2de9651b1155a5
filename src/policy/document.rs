//! The AWS IoT Core policy document: JSON in, a validated model out.
//!
//! Grammar (AWS IoT Core developer guide, "AWS IoT Core policies" and "AWS IoT Core policy
//! elements", <https://docs.aws.amazon.com/iot/latest/developerguide/iot-policies.html>):
//! `{"Version": "2012-10-17", "Statement": [ {"Sid"?, "Effect": "Allow"|"Deny",
//! "Action"|"NotAction": string|[string], "Resource"|"NotResource": string|[string]} ]}`.
//! `Statement` may be a single object. `Condition` blocks are refused (not evaluated offline
//! yet) rather than silently ignored, which would turn a conditional Allow into a plain one.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::pattern::{Pattern, ResourcePattern};

/// A policy document that could not be read or is not a valid AWS IoT policy (exit code 2).
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// The file could not be read.
    #[error("{file}: cannot read policy: {source}")]
    Read {
        /// The policy file.
        file: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not JSON, or its shape is not a policy document.
    #[error("{file}: invalid policy JSON: {message}")]
    Json {
        /// The policy file.
        file: String,
        /// serde_json's one-line message (names line and column).
        message: String,
    },
    /// A statement breaks a rule of the policy grammar.
    #[error("{file}: statement {index}{sid}: {message}")]
    Statement {
        /// The policy file.
        file: String,
        /// Statement index, from 0.
        index: usize,
        /// ` (Sid "x")` or empty.
        sid: String,
        /// What is wrong, naming the value and the expected form.
        message: String,
    },
    /// A principal context or request file is invalid.
    #[error("{0}")]
    Input(String),
}

/// `Allow` or `Deny`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum Effect {
    /// Grants the action when no Deny matches.
    Allow,
    /// Refuses the action, whatever else allows it.
    Deny,
}

/// One validated statement.
#[derive(Clone, Debug)]
pub struct Statement {
    /// Position in the document's `Statement` list, from 0 (how reports point at it).
    pub index: usize,
    /// The optional statement id.
    pub sid: Option<String>,
    /// Allow or Deny.
    pub effect: Effect,
    /// The action patterns as written (lint reads them).
    pub actions: Vec<String>,
    /// Compiled action patterns (case-insensitive, like IAM action names).
    pub action_patterns: Vec<Pattern>,
    /// `true` for `NotAction`: the statement applies to actions matching none of the patterns.
    pub not_action: bool,
    /// The resource patterns (variables resolved per request).
    pub resources: Vec<ResourcePattern>,
    /// `true` for `NotResource`.
    pub not_resource: bool,
}

/// A validated policy document and where it came from.
#[derive(Clone, Debug)]
pub struct Policy {
    /// The file it was read from (reports name it).
    pub file: String,
    /// Its statements, in order.
    pub statements: Vec<Statement>,
}

/// A JSON value that must be a string or a list of strings (`Action`, `Resource`, ...).
fn strings(key: &str, v: serde_json::Value) -> Result<Vec<String>, String> {
    let bad = |v: &serde_json::Value| format!("{key} {v} is not a string or a list of strings");
    match v {
        serde_json::Value::String(s) => Ok(vec![s]),
        serde_json::Value::Array(items) => items
            .into_iter()
            .map(|i| match i {
                serde_json::Value::String(s) => Ok(s),
                other => Err(bad(&other)),
            })
            .collect(),
        other => Err(bad(&other)),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDocument {
    #[serde(rename = "Version")]
    version: Option<String>,
    #[serde(rename = "Id")]
    _id: Option<String>,
    #[serde(rename = "Statement")]
    statement: serde_json::Value,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStatement {
    #[serde(rename = "Sid")]
    sid: Option<String>,
    #[serde(rename = "Effect")]
    effect: Option<String>,
    #[serde(rename = "Action")]
    action: Option<serde_json::Value>,
    #[serde(rename = "NotAction")]
    not_action: Option<serde_json::Value>,
    #[serde(rename = "Resource")]
    resource: Option<serde_json::Value>,
    #[serde(rename = "NotResource")]
    not_resource: Option<serde_json::Value>,
    #[serde(rename = "Condition")]
    condition: Option<serde_json::Value>,
}

impl Policy {
    /// Reads and validates a policy file.
    pub fn load(path: &Path) -> Result<Policy, PolicyError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| PolicyError::Read {
            file: file.clone(),
            source,
        })?;
        Policy::parse(&file, &text)
    }

    /// Parses and validates a policy document; `file` names it in errors and results.
    pub fn parse(file: &str, text: &str) -> Result<Policy, PolicyError> {
        let raw: RawDocument = serde_json::from_str(text).map_err(|e| PolicyError::Json {
            file: file.to_owned(),
            message: e.to_string(),
        })?;
        if let Some(v) = &raw.version {
            // https://docs.aws.amazon.com/iot/latest/developerguide/iot-policies.html: AWS IoT
            // accepts the IAM policy language versions.
            if v != "2012-10-17" && v != "2008-10-17" {
                return Err(PolicyError::Json {
                    file: file.to_owned(),
                    message: format!(
                        "unknown Version {v:?} (expected \"2012-10-17\" or \"2008-10-17\")"
                    ),
                });
            }
        }
        let mut statements = Vec::new();
        let raw_statements = match raw.statement {
            serde_json::Value::Array(v) => v,
            one @ serde_json::Value::Object(_) => vec![one],
            other => {
                return Err(PolicyError::Json {
                    file: file.to_owned(),
                    message: format!("Statement {other} is not an object or a list of objects"),
                })
            }
        };
        for (index, value) in raw_statements.into_iter().enumerate() {
            let s: RawStatement =
                serde_json::from_value(value).map_err(|e| PolicyError::Statement {
                    file: file.to_owned(),
                    index,
                    sid: String::new(),
                    message: e.to_string(),
                })?;
            let sid_note = s
                .sid
                .as_ref()
                .map(|s| format!(" (Sid {s:?})"))
                .unwrap_or_default();
            let fail = |message: String| PolicyError::Statement {
                file: file.to_owned(),
                index,
                sid: sid_note.clone(),
                message,
            };
            let effect = match s.effect.as_deref() {
                Some("Allow") => Effect::Allow,
                Some("Deny") => Effect::Deny,
                Some(other) => {
                    return Err(fail(format!(
                        "unknown Effect {other:?} (expected \"Allow\" or \"Deny\")"
                    )))
                }
                None => {
                    return Err(fail(
                        "missing Effect (expected \"Allow\" or \"Deny\")".into(),
                    ))
                }
            };
            if s.condition.is_some() {
                return Err(fail(
                    "Condition is not built yet in the offline evaluator (remove it, or evaluate \
                     the conditional statement on AWS)"
                        .into(),
                ));
            }
            let (actions, not_action) = match (s.action, s.not_action) {
                (Some(a), None) => (strings("Action", a).map_err(&fail)?, false),
                (None, Some(a)) => (strings("NotAction", a).map_err(&fail)?, true),
                (Some(_), Some(_)) => {
                    return Err(fail("has both Action and NotAction (expected one)".into()))
                }
                (None, None) => return Err(fail(
                    "missing Action (expected \"iot:Connect\", a list of actions, or NotAction)"
                        .into(),
                )),
            };
            let (resources, not_resource) = match (s.resource, s.not_resource) {
                (Some(r), None) => (strings("Resource", r).map_err(&fail)?, false),
                (None, Some(r)) => (strings("NotResource", r).map_err(&fail)?, true),
                (Some(_), Some(_)) => {
                    return Err(fail(
                        "has both Resource and NotResource (expected one)".into(),
                    ))
                }
                (None, None) => {
                    return Err(fail(
                        "missing Resource (expected an ARN such as \
                         \"arn:aws:iot:REGION:ACCOUNT:topic/...\", a list of them, or \"*\")"
                            .into(),
                    ))
                }
            };
            if actions.is_empty() {
                return Err(fail(
                    "empty Action list (expected at least one action)".into(),
                ));
            }
            if resources.is_empty() {
                return Err(fail(
                    "empty Resource list (expected at least one ARN or \"*\")".into(),
                ));
            }
            for a in &actions {
                if a != "*" && !a.contains(':') {
                    return Err(fail(format!(
                        "action {a:?} is not of the form \"iot:Name\" (or \"*\")"
                    )));
                }
            }
            let resource_patterns = resources
                .iter()
                .map(|r| {
                    if r != "*" && !r.starts_with("arn:") {
                        return Err(fail(format!(
                            "resource {r:?} is not an ARN (expected \
                             \"arn:aws:iot:REGION:ACCOUNT:TYPE/NAME\" or \"*\")"
                        )));
                    }
                    ResourcePattern::parse(r).map_err(|m| fail(format!("resource {r:?}: {m}")))
                })
                .collect::<Result<Vec<_>, _>>()?;
            statements.push(Statement {
                index,
                sid: s.sid,
                effect,
                action_patterns: actions.iter().map(|a| Pattern::action(a)).collect(),
                actions,
                not_action,
                resources: resource_patterns,
                not_resource,
            });
        }
        if statements.is_empty() {
            return Err(PolicyError::Json {
                file: file.to_owned(),
                message: "empty Statement list (expected at least one statement)".into(),
            });
        }
        Ok(Policy {
            file: file.to_owned(),
            statements,
        })
    }
}

/// Loads several policy files (the principal's attached policies).
pub fn load_all(paths: &[PathBuf]) -> Result<Vec<Policy>, PolicyError> {
    paths.iter().map(|p| Policy::load(p)).collect()
}
