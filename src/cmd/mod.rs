//! Command handlers: glue between the parsed CLI and the library, and the one place that
//! prints to the user. Each returns `anyhow::Result` with context naming what it was doing.

mod broker;
mod certs;

use crate::cli::{Cli, Command};

/// A command that exists in the CLI but whose capability is not built yet.
#[derive(Debug, thiserror::Error)]
#[error("`thingswarm {0}` is not built yet in this version")]
pub struct NotBuiltYet(pub &'static str);

/// A command needs a cargo feature this binary was built without.
#[derive(Debug, thiserror::Error)]
#[error("`thingswarm {command}` needs the `{feature}` cargo feature, which this binary was built without (rebuild with `cargo build --features {feature}`)")]
pub struct FeatureMissing {
    /// The command.
    pub command: &'static str,
    /// The cargo feature it needs.
    pub feature: &'static str,
}

/// Runs the parsed command line.
pub fn dispatch(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Certs(cmd) => certs::run(cmd),
        Command::Run(_) => Err(NotBuiltYet("run").into()),
        Command::Check(_) => Err(NotBuiltYet("check").into()),
        Command::Broker(args) => broker::run(args),
        Command::Policy(_) => Err(NotBuiltYet("policy").into()),
        Command::Compare(_) => Err(NotBuiltYet("compare").into()),
        Command::Merge(_) => Err(NotBuiltYet("merge").into()),
        Command::Report(_) => Err(NotBuiltYet("report").into()),
    }
}
