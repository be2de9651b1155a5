//! A group's `provision = { ... }`: AWS IoT fleet provisioning by claim per device.
//!
//! ```toml
//! [[group]]
//! name = "factory-new"
//! devices = 50
//! client_id = "unit-{index:04}"      # the thing name the device registers (SerialNumber)
//! provision = { template = "thingswarm-fleet", mode = "keys", qos = 1, timeout = "10s" }
//! ```
//!
//! Every device connects with the shared claim certificate (CN `thingswarm-claim`, signed by
//! the scenario's CA) under its own client ID, gets its own key and certificate, registers
//! its thing with `template`, and reconnects with the new certificate; it then stays
//! connected, idle, until the run ends.
//!
//! - `template`: the provisioning template name (default `"thingswarm-fleet"`, the one the
//!   embedded broker emulates).
//! - `mode`: `"keys"` (CreateKeysAndCertificate: the service makes the key, default) or
//!   `"csr"` (CreateCertificateFromCsr: the device makes a P-256 key and sends a CSR).
//! - `qos`: 0 or 1 for requests and answer subscriptions (AWS IoT does not take 2), default 1.
//! - `timeout`: how long a request waits for its answer (default `"10s"`).
//!
//! A provisioning group has no `publish`, `subscribe`, `shadow`, `churn`, `offline` or `will`
//! (its sessions are the provisioning flow; put other traffic in another group).

use std::time::Duration;

use toml::Spanned;

use super::error::{ScenarioError, Source};
use super::raw::RawGroup;

/// `provision = { ... }` as written.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawProvision {
    pub template: Option<Spanned<String>>,
    pub mode: Option<Spanned<String>>,
    pub qos: Option<Spanned<u8>>,
    pub timeout: Option<Spanned<String>>,
}

/// How a device gets its certificate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProvisionMode {
    /// CreateKeysAndCertificate: the service makes key and certificate.
    Keys,
    /// CreateCertificateFromCsr: the device makes its key and sends a CSR.
    Csr,
}

impl ProvisionMode {
    /// As written in scenarios.
    pub fn as_str(self) -> &'static str {
        match self {
            ProvisionMode::Keys => "keys",
            ProvisionMode::Csr => "csr",
        }
    }
}

/// What each device of a provisioning group does.
#[derive(Clone, Debug, PartialEq)]
pub struct ProvisionPlan {
    /// Provisioning template name.
    pub template: String,
    /// Keys made by the service or by the device.
    pub mode: ProvisionMode,
    /// QoS of requests and answer subscriptions (0 or 1).
    pub qos: u8,
    /// How long a request waits for its answer.
    pub timeout: Duration,
}

/// Longest answer wait accepted.
const MAX_TIMEOUT: Duration = Duration::from_secs(300);

pub(super) fn provision(
    src: &Source<'_>,
    key: &str,
    g: &RawGroup,
) -> Result<Option<ProvisionPlan>, ScenarioError> {
    let Some(p) = &g.provision else {
        return Ok(None);
    };
    let conflicts: [(&str, Option<usize>); 6] = [
        ("publish", g.publish.as_ref().map(|v| v.span().start)),
        ("subscribe", g.subscribe.as_ref().map(|v| v.span().start)),
        ("shadow", g.shadow.as_ref().map(|v| v.span().start)),
        ("churn", g.churn.as_ref().map(|v| v.span().start)),
        ("offline", g.offline.as_ref().map(|v| v.span().start)),
        ("will", g.will.as_ref().map(|v| v.span().start)),
    ];
    for (name, at) in conflicts {
        if let Some(at) = at {
            return Err(src.at(at, format!("{key}: a provisioning group cannot also have `{name}` (its sessions are the provisioning flow; expected `{name}` in a separate [[group]])")));
        }
    }
    let raw = p.get_ref();
    let template = match &raw.template {
        None => crate::aws::provisioning::DEFAULT_TEMPLATE.to_string(),
        Some(t) => {
            crate::aws::provisioning::check_template_name(t.get_ref())
                .map_err(|m| src.at(t.span().start, format!("{key}.template: {m}")))?;
            t.get_ref().clone()
        }
    };
    let mode = match &raw.mode {
        None => ProvisionMode::Keys,
        Some(m) => match m.get_ref().as_str() {
            "keys" => ProvisionMode::Keys,
            "csr" => ProvisionMode::Csr,
            other => {
                return Err(src.at(
                    m.span().start,
                    format!("{key}.mode: {other:?} is not a provisioning mode (expected \"keys\" or \"csr\")"),
                ))
            }
        },
    };
    let qos = match &raw.qos {
        None => 1,
        Some(q) if *q.get_ref() <= 1 => *q.get_ref(),
        Some(q) => {
            return Err(src.at(
                q.span().start,
                format!(
                    "{key}.qos: {} is not a provisioning QoS (expected 0 or 1: AWS IoT does not take QoS 2)",
                    q.get_ref()
                ),
            ))
        }
    };
    let timeout = match &raw.timeout {
        None => Duration::from_secs(10),
        Some(t) => {
            let d = super::duration(src, &format!("{key}.timeout"), t)?;
            if d.is_zero() || d > MAX_TIMEOUT {
                return Err(src.at(
                    t.span().start,
                    format!("{key}.timeout: {:?} is out of range (expected more than 0s and at most 300s)", t.get_ref()),
                ));
            }
            d
        }
    };
    Ok(Some(ProvisionPlan {
        template,
        mode,
        qos,
        timeout,
    }))
}

/// Refuses `[[expect]]` probes (or `[policy]` ones) acting or observing as a device of a
/// provisioning group: those devices have no certificate of their own before the run.
pub(super) fn check_expectations(
    src: &Source<'_>,
    at: Option<usize>,
    groups: &[super::GroupPlan],
    expect: &[super::expect::ExpectPlan],
) -> Result<(), ScenarioError> {
    for e in expect {
        for d in std::iter::once(&e.device).chain(e.observer.as_ref()) {
            if groups[d.group].provision.is_some() {
                return Err(src.at(at.unwrap_or(0), format!("expectation for {:?}: its group {:?} provisions by claim, so the device has no certificate of its own to probe with (expected a device of a group without `provision`)", d.client_id, groups[d.group].name)));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::scenario::{Overrides, Plan};

    fn plan(group_extra: &str) -> Result<Plan, String> {
        let text = format!(
            "name = \"p\"\nduration = \"1s\"\n[[group]]\nname = \"g\"\ndevices = 3\nclient_id = \"u-{{index}}\"\n{group_extra}\n"
        );
        Plan::from_str(&text, Path::new("p.toml"), &Overrides::default()).map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_and_every_key() {
        let p = plan("provision = {}").unwrap();
        assert_eq!(
            p.groups[0].provision,
            Some(ProvisionPlan {
                template: "thingswarm-fleet".into(),
                mode: ProvisionMode::Keys,
                qos: 1,
                timeout: Duration::from_secs(10),
            })
        );
        let p = plan(r#"provision = { template = "t_1", mode = "csr", qos = 0, timeout = "2s" }"#)
            .unwrap();
        let pp = p.groups[0].provision.as_ref().unwrap();
        assert_eq!(
            (pp.template.as_str(), pp.mode, pp.qos, pp.timeout),
            ("t_1", ProvisionMode::Csr, 0, Duration::from_secs(2))
        );
        assert!(plan("").unwrap().groups[0].provision.is_none());
    }

    #[test]
    fn bad_values_name_the_value_and_the_expected_form() {
        for (extra, want) in [
            (
                r#"provision = { mode = "pkcs12" }"#,
                r#"group[0].provision.mode: "pkcs12" is not a provisioning mode (expected "keys" or "csr")"#,
            ),
            (
                "provision = { qos = 2 }",
                "group[0].provision.qos: 2 is not a provisioning QoS (expected 0 or 1",
            ),
            (
                r#"provision = { template = "a/b" }"#,
                r#"group[0].provision.template: "a/b" is not a provisioning template name"#,
            ),
            (
                r#"provision = { timeout = "0s" }"#,
                "group[0].provision.timeout: \"0s\" is out of range",
            ),
            ("provision = { tmplate = \"x\" }", "unknown field `tmplate`"),
            (
                "provision = {}\npublish = { topic = \"a\" }",
                "group[0].provision: a provisioning group cannot also have `publish`",
            ),
            ("provision = {}\nshadow = {}", "cannot also have `shadow`"),
        ] {
            let e = plan(extra).unwrap_err();
            assert!(e.contains(want), "{extra}: {e}");
            assert_eq!(e.lines().count(), 1, "{e}");
        }
    }
}
