//! Command handlers: glue between the parsed CLI and the library, and the one place that
//! prints to the user. Each returns `anyhow::Result` with context naming what it was doing.

mod broker;
mod certs;
mod check;
mod compare;
mod merge;
mod outputs;
mod policy;
mod processes;
mod proxy;
mod report;
mod run;
mod tls_matrix;

use crate::cli::{Cli, Command};

/// A command that exists in the CLI but whose capability is not built yet.
#[derive(Debug, thiserror::Error)]
#[error("`thingswarm {0}` is not built yet in this version")]
pub struct NotBuiltYet(pub &'static str);

pub use run::TargetError;

/// Input the user must fix (exit code 2), when no module-specific error type fits.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BadInput(pub String);

/// How a command that did not fail ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Finished; every check held.
    Done,
    /// Finished, report written, but an SLO or a policy expectation did not hold (exit 1).
    Failed,
    /// Stopped by Ctrl-C; the report was written.
    Interrupted,
}

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
pub fn dispatch(cli: Cli) -> anyhow::Result<Outcome> {
    match cli.command {
        Command::Certs(cmd) => certs::run(cmd).map(|()| Outcome::Done),
        Command::Run(args) => run::run(args),
        Command::Check(args) => check::run(args).map(|()| Outcome::Done),
        Command::Broker(args) => broker::run(args).map(|()| Outcome::Done),
        Command::Proxy(args) => proxy::run(args).map(|()| Outcome::Done),
        Command::Policy(cmd) => policy::run(cmd),
        Command::Compare(args) => compare::run(args),
        Command::Merge(args) => merge::run(args),
        Command::Report(args) => report::run(args).map(|()| Outcome::Done),
        Command::TlsMatrix(args) => tls_matrix::run(args),
    }
}
