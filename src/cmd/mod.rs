//! Command handlers: glue between the parsed CLI and the library, and the one place that
//! prints to the user. Each returns `anyhow::Result` with context naming what it was doing.

mod certs;
mod check;

use crate::cli::{Cli, Command};

/// A command that exists in the CLI but whose capability is not built yet.
#[derive(Debug, thiserror::Error)]
#[error("`thingswarm {0}` is not built yet in this version")]
pub struct NotBuiltYet(pub &'static str);

/// Runs the parsed command line.
pub fn dispatch(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Certs(cmd) => certs::run(cmd),
        Command::Run(_) => Err(NotBuiltYet("run").into()),
        Command::Check(args) => check::run(args),
        Command::Broker(_) => Err(NotBuiltYet("broker").into()),
        Command::Policy(_) => Err(NotBuiltYet("policy").into()),
        Command::Compare(_) => Err(NotBuiltYet("compare").into()),
        Command::Merge(_) => Err(NotBuiltYet("merge").into()),
        Command::Report(_) => Err(NotBuiltYet("report").into()),
    }
}
