//! A scenario's `[[expect]]` as probes: identities from the plan's fleets, the run's endpoint,
//! and the report section with its summary (mismatches first).

use std::fmt::Write as _;
use std::sync::Arc;

use serde::Serialize;

use super::{Device, Probe, ProbeResult, ProbeTarget};
use crate::fleet::Endpoint;
use crate::identity::Fleet;
use crate::scenario::{DeviceRef, Plan};
use crate::tls::TlsError;

/// The report's `expectations` section.
#[derive(Clone, Debug, Serialize, serde::Deserialize)]
pub struct ExpectationsReport {
    /// Probes run.
    pub total: usize,
    /// Probes whose observed outcome differs from the expected one.
    pub mismatches: usize,
    /// Per group of the acting device: probes and mismatches.
    pub groups: Vec<ExpectGroup>,
    /// Every probe, mismatches first, then in scenario order.
    pub results: Vec<GroupedResult>,
}

/// Probe counts of one device group.
#[derive(Clone, Debug, Serialize, serde::Deserialize)]
pub struct ExpectGroup {
    /// The group name.
    pub group: String,
    /// Probes.
    pub total: usize,
    /// Mismatches.
    pub mismatches: usize,
}

/// One probe's result and its device's group.
#[derive(Clone, Debug, Serialize, serde::Deserialize)]
pub struct GroupedResult {
    /// The acting device's group.
    pub group: String,
    /// Whether the expectation held.
    pub holds: bool,
    /// The result.
    #[serde(flatten)]
    pub result: ProbeResult,
}

fn device(fleets: &[Arc<Fleet>], endpoint: &Endpoint, d: &DeviceRef) -> Result<Device, TlsError> {
    let fleet = &fleets[d.group];
    let i = d.index as usize;
    Ok(Device {
        client_id: d.client_id.clone(),
        tls: endpoint.trust.device_tls(
            &d.client_id,
            fleet.cert_chain(i),
            fleet.key(i).clone_key(),
        )?,
    })
}

/// The plan's probes with where each connects (`fleets` in plan group order).
pub fn probes(
    plan: &Plan,
    fleets: &[Arc<Fleet>],
    endpoint: &Endpoint,
) -> Result<Vec<(Probe, ProbeTarget)>, TlsError> {
    plan.expect
        .iter()
        .map(|e| {
            let group = &plan.groups[e.device.group];
            let probe = Probe {
                device: device(fleets, endpoint, &e.device)?,
                action: e.action.clone(),
                expected: e.outcome,
                observer: match &e.observer {
                    Some(o) => Some(device(fleets, endpoint, o)?),
                    None => None,
                },
            };
            let target = ProbeTarget {
                host: endpoint.host.clone(),
                port: endpoint.port,
                protocol: group.protocol,
                timeout: group.connect.timeout,
                delivery_wait: e.wait,
            };
            Ok((probe, target))
        })
        .collect()
}

/// Runs the probes one after another.
pub async fn run_plan(probes: &[(Probe, ProbeTarget)]) -> Vec<ProbeResult> {
    let mut out = Vec::with_capacity(probes.len());
    for (p, t) in probes {
        out.push(super::run(p, t).await);
    }
    out
}

impl ExpectationsReport {
    /// Groups and orders results (`results` in plan order).
    pub fn new(plan: &Plan, results: Vec<ProbeResult>) -> ExpectationsReport {
        let mut grouped: Vec<GroupedResult> = plan
            .expect
            .iter()
            .zip(results)
            .map(|(e, r)| GroupedResult {
                group: plan.groups[e.device.group].name.clone(),
                holds: r.holds(),
                result: r,
            })
            .collect();
        // Stable: scenario order within mismatches and within the rest.
        grouped.sort_by_key(|r| r.holds);
        let mut groups: Vec<ExpectGroup> = Vec::new();
        for r in &grouped {
            let g = match groups.iter_mut().find(|g| g.group == r.group) {
                Some(g) => g,
                None => {
                    groups.push(ExpectGroup {
                        group: r.group.clone(),
                        total: 0,
                        mismatches: 0,
                    });
                    groups.last_mut().expect("just pushed")
                }
            };
            g.total += 1;
            g.mismatches += usize::from(!r.holds);
        }
        ExpectationsReport {
            total: grouped.len(),
            mismatches: grouped.iter().filter(|r| !r.holds).count(),
            groups,
            results: grouped,
        }
    }

    /// The summary block: a headline, then every mismatch, then (up to 20) holding results.
    pub fn summary(&self) -> String {
        const SHOWN: usize = 20;
        let mut s = String::new();
        let _ = writeln!(
            s,
            "  expectations {} checked, {} held, {} MISMATCHED",
            self.total,
            self.total - self.mismatches,
            self.mismatches
        );
        let mut ok_shown = 0;
        for r in &self.results {
            if r.holds {
                if ok_shown == SHOWN {
                    let _ = writeln!(s, "    ... (report.json lists every result)");
                    break;
                }
                ok_shown += 1;
            }
            let _ = writeln!(
                s,
                "    {} {} {}: expected {}, observed {} ({})",
                if r.holds { "ok      " } else { "MISMATCH" },
                r.result.client_id,
                r.result.action,
                r.result.expected,
                r.result.observed,
                r.result.signal
            );
        }
        s
    }
}
