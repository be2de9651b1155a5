//! AWS IoT device behaviours beyond plain publish/subscribe: Device Shadows, basic ingest and
//! fleet provisioning by claim.
//!
//! Why: AWS IoT users load-test the flows next to the broker (the seed names the Thing
//! Shadows service and the rules engine), and those flows need an answering service to be
//! testable without AWS.
//!
//! - [`shadow`]: the shadow document model (merge, null deletes, delta, versions, metadata,
//!   documented rejections), pure and table-tested.
//! - [`topics`]: AWS's reserved topic layout (shadow requests/responses, `$aws/rules/...`).
//! - [`service`]: the emulated shadow service, an in-process MQTT client answering on the
//!   AWS topics; started automatically for a run against the embedded broker whose scenario
//!   has a shadow group, and by `thingswarm broker --aws`.
//! - [`stats`]: shadow counters and latency histograms, and their report section.
//!
//! Basic ingest needs no emulation: a group publishing to `$aws/rules/RULE/...` is ordinary
//! traffic to a broker, while on AWS IoT the message goes to the rule and to no subscriber,
//! so such a group has acknowledgement latency but no end-to-end latency (the report's `aws`
//! section lists those groups and says so).
//!
//! - [`provisioning`]: fleet provisioning by claim: the MQTT API's messages and the emulated
//!   provisioning service (run inside the embedded broker, which alone knows who asked).
//! - [`provision_stats`]: provisioning counters and latency histograms, and their report
//!   section.

pub mod provision_stats;
pub mod provisioning;
pub mod service;
pub mod shadow;
pub mod stats;
pub mod topics;

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::fleet::Endpoint;
use crate::identity::{FleetSpec, IdentityError};
use crate::scenario::Plan;
use service::{AwsService, ServiceOptions, SERVICE_CLIENT_ID};

/// Why the emulated service could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum AwsError {
    /// Its identity could not be loaded or signed.
    #[error("AWS service emulation identity: {0}")]
    Identity(#[from] IdentityError),
    /// Its TLS config could not be built.
    #[error("AWS service emulation: {0}")]
    Tls(#[from] crate::tls::TlsError),
    /// It could not connect or subscribe.
    #[error(transparent)]
    Service(#[from] service::ServiceError),
}

/// Whether any group of `plan` runs shadow flows.
pub fn has_shadow(plan: &Plan) -> bool {
    plan.groups.iter().any(|g| g.shadow.is_some())
}

/// A shadow plan in one line, for `thingswarm check`.
pub fn shadow_plan_line(p: &crate::scenario::shadow::ShadowPlan) -> String {
    let mut s = format!(
        "{} shadow, QoS {}, reported update {}/s per device",
        p.name.as_deref().unwrap_or("classic"),
        p.qos,
        p.update_rate
    );
    if let Some(d) = p.desired_rate {
        s.push_str(&format!(
            ", desired write {d}/s (deltas{})",
            if p.react {
                " applied and reported back"
            } else {
                " not applied"
            }
        ));
    }
    for (on, what) in [
        (p.get, "get at start"),
        (p.delete, "delete at end"),
        (p.versioned, "versioned updates"),
    ] {
        if on {
            s.push_str(", ");
            s.push_str(what);
        }
    }
    s
}

/// The identity of the emulated service: one certificate with CN [`SERVICE_CLIENT_ID`],
/// signed by the CA `spec_like` names, kept in the identity cache like a device's.
pub fn service_identity(
    certs_dir: &Path,
    spec_like: &FleetSpec,
) -> Result<crate::identity::Fleet, IdentityError> {
    let spec = FleetSpec {
        client_id: FleetSpec::new(SERVICE_CLIENT_ID)?.client_id,
        ..spec_like.clone()
    };
    Ok(crate::identity::cache::ensure(certs_dir, &spec, 1, false)?.0)
}

/// Starts the shadow service against `endpoint` with the identity `fleet` (from
/// [`service_identity`]).
pub async fn start_service(
    endpoint: &Endpoint,
    fleet: &crate::identity::Fleet,
) -> Result<AwsService, AwsError> {
    let tls = endpoint.trust.client_config(
        SERVICE_CLIENT_ID,
        fleet.cert_chain(0),
        fleet.key(0).clone_key(),
    )?;
    Ok(AwsService::start(ServiceOptions {
        host: endpoint.host.clone(),
        port: endpoint.port,
        tls,
    })
    .await?)
}

/// The `aws` section of a report.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct AwsReport {
    /// Who answered shadow requests: `"emulated"` (thingswarm's in-process service) or
    /// `"target"` (the broker's own, e.g. AWS IoT).
    pub shadow_service: String,
    /// Per shadow group.
    pub shadow: Vec<stats::ShadowGroupReport>,
    /// Groups publishing to basic ingest topics.
    pub ingest: Vec<IngestGroup>,
    /// Who answered provisioning requests: `"emulated"` (the embedded broker's service) or
    /// `"target"`; empty without provisioning groups.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub provisioning_service: String,
    /// Per fleet provisioning group.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub provisioning: Vec<provision_stats::ProvisionGroupReport>,
}

/// Whether any group of `plan` provisions by claim.
pub fn has_provision(plan: &Plan) -> bool {
    plan.groups.iter().any(|g| g.provision.is_some())
}

/// A provisioning plan in one line, for `thingswarm check`.
pub fn provision_plan_line(p: &crate::scenario::provision::ProvisionPlan) -> String {
    format!(
        "by claim (certificate CN {}), template {}, {}, QoS {}, answers within {:?}; then reconnect with the device's own certificate as the thing",
        provisioning::CLAIM_CN,
        p.template,
        match p.mode {
            crate::scenario::provision::ProvisionMode::Keys => "CreateKeysAndCertificate",
            crate::scenario::provision::ProvisionMode::Csr => "CreateCertificateFromCsr (device-made P-256 key)",
        },
        p.qos,
        p.timeout
    )
}

/// A group publishing to `$aws/rules/RULE/...`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct IngestGroup {
    /// The group.
    pub group: String,
    /// The rule its topic names.
    pub rule: String,
    /// What is and is not measured for it.
    pub note: String,
}

impl AwsReport {
    /// The section for `plan`, or `None` when it uses no AWS behaviour.
    pub fn of(
        plan: &Plan,
        shadow: Option<&stats::ShadowStats>,
        emulated: bool,
    ) -> Option<AwsReport> {
        AwsReport::with_provisioning(plan, shadow, emulated, None)
    }

    /// [`AwsReport::of`] with the fleet provisioning figures (`provision`, and whether the
    /// embedded broker emulated the service).
    pub fn with_provisioning(
        plan: &Plan,
        shadow: Option<&stats::ShadowStats>,
        emulated: bool,
        provision: Option<(&provision_stats::ProvisionStats, bool)>,
    ) -> Option<AwsReport> {
        let ingest: Vec<IngestGroup> = plan
            .groups
            .iter()
            .filter_map(|g| {
                let p = g.publish.as_ref()?;
                let topic = p.topic_for(&g.name, &g.client_id.render_index(0), 0);
                let rule = topics::ingest_rule(&topic)?.to_string();
                Some(IngestGroup {
                    group: g.name.clone(),
                    rule,
                    note: "basic ingest: acknowledgement latency only; on AWS IoT no subscriber receives these messages, so no end-to-end latency or delivery is measured for them".into(),
                })
            })
            .collect();
        let shadow_groups: Vec<stats::ShadowGroupReport> = match shadow {
            Some(s) => plan
                .groups
                .iter()
                .enumerate()
                .filter_map(|(i, g)| {
                    let sp = g.shadow.as_ref()?;
                    Some(s.report(i, &g.name, sp.name.as_deref().unwrap_or("classic")))
                })
                .collect(),
            None => Vec::new(),
        };
        let provisioning: Vec<provision_stats::ProvisionGroupReport> = match provision {
            Some((p, _)) => plan
                .groups
                .iter()
                .enumerate()
                .filter_map(|(i, g)| {
                    let pp = g.provision.as_ref()?;
                    Some(p.report(i, &g.name, &pp.template, pp.mode.as_str()))
                })
                .collect(),
            None => Vec::new(),
        };
        if ingest.is_empty() && shadow_groups.is_empty() && provisioning.is_empty() {
            return None;
        }
        Some(AwsReport {
            shadow_service: if shadow_groups.is_empty() {
                String::new()
            } else if emulated {
                "emulated".into()
            } else {
                "target".into()
            },
            shadow: shadow_groups,
            ingest,
            provisioning_service: match provision {
                Some((_, true)) if !provisioning.is_empty() => "emulated".into(),
                Some(_) if !provisioning.is_empty() => "target".into(),
                _ => String::new(),
            },
            provisioning,
        })
    }

    /// Pass/fail verdicts of the AWS flows, for `junit.xml`: per shadow group, no unexpected
    /// rejection, every request answered, versions never backwards; per provisioning group,
    /// every device that started provisioned.
    pub fn checks(&self) -> Vec<crate::report::junit::Check> {
        use crate::report::junit::Check;
        let mut out = Vec::new();
        for g in &self.shadow {
            let rejected: Vec<String> =
                g.rejected.iter().map(|(c, n)| format!("{c}:{n}")).collect();
            out.push(Check::new(
                format!("shadow {}: no unexpected rejection", g.group),
                g.unexpected_rejects == 0,
                format!(
                    "{} unexpected of rejections [{}] ({} expected 404s of a new shadow)",
                    g.unexpected_rejects,
                    rejected.join(" "),
                    g.not_found_at_start
                ),
            ));
            out.push(Check::new(
                format!("shadow {}: every request answered", g.group),
                g.unanswered == 0,
                format!("{} unanswered", g.unanswered),
            ));
            out.push(Check::new(
                format!("shadow {}: versions never go backwards", g.group),
                g.version_regressions == 0,
                format!("{} regressions", g.version_regressions),
            ));
        }
        for p in &self.provisioning {
            let rejected: Vec<String> =
                p.rejected.iter().map(|(c, n)| format!("{c}:{n}")).collect();
            out.push(Check::new(
                format!("provision {}: every device provisioned", p.group),
                p.started > 0 && p.provisioned == p.started,
                format!(
                    "{}/{} provisioned at {:.1}/s; rejected [{}]; timeouts {}; own-certificate connects failed {}; claim sessions lost {}",
                    p.provisioned,
                    p.started,
                    p.provisioned_per_s,
                    rejected.join(" "),
                    p.timeouts,
                    p.own_connect_failed,
                    p.session_lost
                ),
            ));
        }
        out
    }

    /// Summary lines for the end-of-run text.
    pub fn summary(&self) -> String {
        use std::fmt::Write as _;
        let mut s = String::new();
        for g in &self.shadow {
            let rejected: Vec<String> =
                g.rejected.iter().map(|(c, n)| format!("{c}:{n}")).collect();
            let _ = writeln!(
                s,
                "  shadow     {} ({}, service {}): update {}/{} accepted, get {}/{}, delete {}/{}; rejected [{}] ({} unexpected); deltas {} ({} applied); version regressions {}; unanswered {}",
                g.group,
                g.shadow,
                self.shadow_service,
                g.accepted.update,
                g.requests.update,
                g.accepted.get,
                g.requests.get,
                g.accepted.delete,
                g.requests.delete,
                rejected.join(" "),
                g.unexpected_rejects,
                g.deltas,
                g.delta_reports,
                g.version_regressions,
                g.unanswered,
            );
            let ms = |us: u64| us as f64 / 1e3;
            let _ = writeln!(
                s,
                "  shadow     {}: update->accepted p50 {:.2} ms p99 {:.2} ms; delta round trip p50 {:.2} ms p99 {:.2} ms",
                g.group,
                ms(g.update_latency_us.percentiles.p50),
                ms(g.update_latency_us.percentiles.p99),
                ms(g.delta_round_trip_us.percentiles.p50),
                ms(g.delta_round_trip_us.percentiles.p99),
            );
        }
        for p in &self.provisioning {
            let rejected: Vec<String> =
                p.rejected.iter().map(|(c, n)| format!("{c}:{n}")).collect();
            let ms = |us: u64| us as f64 / 1e3;
            let _ = writeln!(
                s,
                "  provision  {} ({}, template {}, service {}): {}/{} provisioned ({} created, {} registered) at {:.1}/s; rejected [{}]; timeouts {}; own-cert connect failed {} (retried {}); claim sessions lost {}",
                p.group,
                p.mode,
                p.template,
                self.provisioning_service,
                p.provisioned,
                p.started,
                p.created,
                p.registered,
                p.provisioned_per_s,
                rejected.join(" "),
                p.timeouts,
                p.own_connect_failed,
                p.own_connect_retries,
                p.session_lost,
            );
            let _ = writeln!(
                s,
                "  provision  {}: create p50 {:.2} ms p99 {:.2} ms; register p50 {:.2} ms p99 {:.2} ms; claim connect -> own connect p50 {:.2} ms p99 {:.2} ms",
                p.group,
                ms(p.create_latency_us.percentiles.p50),
                ms(p.create_latency_us.percentiles.p99),
                ms(p.register_latency_us.percentiles.p50),
                ms(p.register_latency_us.percentiles.p99),
                ms(p.total_latency_us.percentiles.p50),
                ms(p.total_latency_us.percentiles.p99),
            );
        }
        for i in &self.ingest {
            let _ = writeln!(
                s,
                "  ingest     {} -> rule {}: acknowledgement latency only (no subscriber sees basic ingest on AWS IoT)",
                i.group, i.rule
            );
        }
        s
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::time::{Duration, Instant};

    use super::provision_stats::{ProvisionMetric, ProvisionStats};
    use super::stats::ShadowStats;
    use super::*;

    /// A report with one shadow group (2 unexpected 409s) and one provisioning group (2 of
    /// 3 devices provisioned, one rejection).
    pub(crate) fn sample() -> AwsReport {
        let sh = ShadowStats::new(&[true]);
        sh.rejected(0, 409);
        sh.rejected(0, 409);
        let p = ProvisionStats::new(&[true]);
        let t0 = Instant::now();
        for _ in 0..3 {
            p.started(0, t0);
        }
        for _ in 0..2 {
            p.provisioned(
                0,
                t0 + Duration::from_secs(1),
                &[(ProvisionMetric::Total, Duration::from_millis(3))],
            );
        }
        p.rejected(0, "InvalidParameters");
        AwsReport {
            shadow_service: "emulated".into(),
            shadow: vec![sh.report(0, "therm<o>", "classic")],
            ingest: Vec::new(),
            provisioning_service: "emulated".into(),
            provisioning: vec![p.report(0, "units", "thingswarm-fleet", "keys")],
        }
    }

    #[test]
    fn checks_judge_each_flow() {
        let checks = sample().checks();
        let verdicts: Vec<(&str, bool)> =
            checks.iter().map(|c| (c.name.as_str(), c.passed)).collect();
        assert_eq!(
            verdicts,
            vec![
                ("shadow therm<o>: no unexpected rejection", false),
                ("shadow therm<o>: every request answered", true),
                ("shadow therm<o>: versions never go backwards", true),
                ("provision units: every device provisioned", false),
            ]
        );
        assert!(checks[0].message.contains("409:2"), "{}", checks[0].message);
        assert!(
            checks[3].message.contains("2/3 provisioned")
                && checks[3].message.contains("InvalidParameters:1"),
            "{}",
            checks[3].message
        );
        let summary = sample().summary();
        assert!(summary.contains("provision  units (keys, template thingswarm-fleet, service emulated): 2/3 provisioned"), "{summary}");
    }
}
