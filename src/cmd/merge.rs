//! `thingswarm merge --out DIR SHARD_DIR...`: shard results combined into one report (see
//! [`crate::report::merge`]), written and printed like a run's.

use std::path::Path;
use std::time::Instant;

use anyhow::Context as _;

use super::{BadInput, Outcome};
use crate::cli::MergeArgs;
use crate::report::merge::{self, Merged};
use crate::slo::Slo;

/// Merges, re-judges the SLOs the shards were run with (plus `--slo`), writes and prints.
pub fn run(args: MergeArgs) -> anyhow::Result<Outcome> {
    let started = Instant::now();
    let shards = merge::load(&args.shards)?;
    // The shards' objectives, as they recorded them (`e2e_p99 < 50ms`), judged again on the
    // merged figures.
    let mut slos: Vec<Slo> = Vec::new();
    if let Some(first) = shards.first() {
        for o in &first.report.slos {
            let slo = Slo::parse_expr(&o.slo).map_err(|e| {
                BadInput(format!(
                    "{}: recorded SLO {:?} does not parse: {e}",
                    first.dir.display(),
                    o.slo
                ))
            })?;
            slos.push(slo);
        }
    }
    slos.extend(args.slo.iter().cloned());
    let merged = merge::merge(&shards, args.allow_missing).map_err(|e| BadInput(e.to_string()))?;
    let outcome = write(&args.out, merged, &slos)?;
    eprintln!(
        "merged      {} shard report(s) in {:.2} s",
        shards.len(),
        started.elapsed().as_secs_f64()
    );
    Ok(outcome)
}

/// Judges `slos` on the merged report, writes everything a run writes into `out`, prints the
/// summary; the outcome the merged figures give (a failed SLO or expectation -> failed; a
/// partial report is marked in it, the caller decides what that means for the exit code).
pub(super) fn write(out: &Path, merged: Merged, slos: &[Slo]) -> anyhow::Result<Outcome> {
    let Merged {
        mut report,
        intervals,
        warnings,
    } = merged;
    for w in &warnings {
        eprintln!("thingswarm: warning: {w}");
    }
    report.slos = crate::slo::evaluate(slos, &report);
    report
        .write(out)
        .with_context(|| format!("writing the merged report to {}", out.display()))?;
    super::outputs::write(out, &report, &intervals)?;
    let expect_summary = report
        .expectations
        .as_ref()
        .map(|e| e.summary())
        .unwrap_or_default();
    println!(
        "{expect_summary}{}  report     {}",
        report.summary(),
        out.join("report.json").display()
    );
    let expectations_failed = report
        .expectations
        .as_ref()
        .is_some_and(|e| e.mismatches > 0);
    if expectations_failed || report.slos.iter().any(|s| !s.passed) {
        return Ok(Outcome::Failed);
    }
    Ok(Outcome::Done)
}
