//! `thingswarm compare BASE CURRENT`.

use super::Outcome;
use crate::cli::{CompareArgs, CompareFormat};
use crate::report::{compare, Report};

/// Prints the per-metric comparison; [`Outcome::Failed`] (exit 1) on any regression.
pub fn run(args: CompareArgs) -> anyhow::Result<Outcome> {
    let base = Report::load(&args.base)?;
    let current = Report::load(&args.current)?;
    let c = compare::compare(&base, &current, args.max_regression);
    print!(
        "{}",
        match args.format {
            CompareFormat::Text => c.text(),
            CompareFormat::Markdown => c.markdown(),
        }
    );
    Ok(if c.regressed() {
        Outcome::Failed
    } else {
        Outcome::Done
    })
}
