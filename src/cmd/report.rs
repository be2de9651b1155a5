//! `thingswarm report DIR`: the run's text summary again, and on request its HTML page, from
//! the saved report.json (the same renderers the run used), e.g. after an upgrade or for a
//! report copied out of a CI artifact.

use anyhow::Context as _;

use crate::cli::ReportArgs;
use crate::report::{html, Report};

/// Prints the summary of a saved report; with `--html FILE` writes the page too (`-`: the page
/// on stdout instead of the text).
pub fn run(args: ReportArgs) -> anyhow::Result<()> {
    let report = Report::load(&args.dir)?;
    match args.html {
        Some(path) if path.as_os_str() == "-" => print!("{}", html::render(&report)),
        Some(path) => {
            std::fs::write(&path, html::render(&report))
                .with_context(|| format!("writing {}", path.display()))?;
            print!("{}", report.summary());
            eprintln!("html        {}", path.display());
        }
        None => print!("{}", report.summary()),
    }
    Ok(())
}
