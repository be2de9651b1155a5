//! The files `run --out DIR` writes beside `report.json`: HDR interval logs and `junit.xml`
//! (one test case per SLO, per policy expectation, and per AWS flow verdict).

use std::path::Path;

use anyhow::Context as _;

use crate::report::junit::{self, Check};
use crate::report::{hlog, Report};
use crate::stats::intervals::Intervals;

/// Writes `<metric>.hlog` and `junit.xml` into `dir` (which already holds report.json).
pub fn write(dir: &Path, report: &Report, intervals: &Intervals) -> anyhow::Result<()> {
    hlog::write(dir, intervals, &report.scenario.name)
        .with_context(|| format!("writing HDR interval logs to {}", dir.display()))?;
    let slos: Vec<Check> = report
        .slos
        .iter()
        .map(|o| Check::new(o.slo.clone(), o.passed, o.message.clone()))
        .collect();
    let expectations: Vec<Check> = report
        .expectations
        .iter()
        .flat_map(|e| &e.results)
        .map(|g| {
            let r = &g.result;
            Check::new(
                format!("{} {} -> {:?}", r.client_id, r.action, r.expected).to_lowercase(),
                g.holds,
                format!(
                    "expected {:?}, observed {:?}: {}",
                    r.expected, r.observed, r.signal
                ),
            )
        })
        .collect();
    let aws = report.aws.as_ref().map(|a| a.checks()).unwrap_or_default();
    let mut suites: Vec<(&str, &[Check])> = vec![("slo", &slos), ("expect", &expectations)];
    if !aws.is_empty() {
        suites.push(("aws", &aws));
    }
    let xml = junit::render(&report.scenario.name, &suites);
    std::fs::write(dir.join("junit.xml"), xml)
        .with_context(|| format!("writing {}", dir.join("junit.xml").display()))?;
    Ok(())
}
