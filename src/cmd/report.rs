//! `thingswarm report DIR`: the run's text summary again, from the saved report.json (the same
//! renderer the run used).

use crate::cli::ReportArgs;
use crate::report::Report;

/// Prints the summary of a saved report.
pub fn run(args: ReportArgs) -> anyhow::Result<()> {
    let report = Report::load(&args.dir)?;
    print!("{}", report.summary());
    Ok(())
}
