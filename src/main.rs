//! The `thingswarm` binary: parse the command line, run it, map the outcome to an exit code.

use std::process::ExitCode;

use clap::Parser;
use thingswarm::broker::BrokerError;
use thingswarm::cli::{Cli, Command};
use thingswarm::cmd::{self, BadInput, FeatureMissing, NotBuiltYet, Outcome, TargetError};
use thingswarm::identity::IdentityError;
use thingswarm::policy::PolicyError;
use thingswarm::scenario::ScenarioError;
use thingswarm::template::TemplateError;

/// Exit codes (DESIGN.md section 6): 0 ok, 1 an SLO or expectation failed, 2 bad input,
/// 3 target unreachable / set-up failed, 130 interrupted.
fn exit_code(err: &anyhow::Error) -> u8 {
    for cause in err.chain() {
        if cause.is::<IdentityError>()
            || cause.is::<TemplateError>()
            || cause.is::<ScenarioError>()
            || cause.is::<BadInput>()
            || cause.is::<NotBuiltYet>()
            || cause.is::<FeatureMissing>()
            || cause.is::<PolicyError>()
            || cause.is::<thingswarm::report::LoadError>()
        {
            return 2;
        }
        if cause.is::<TargetError>() || cause.is::<thingswarm::proxy::ProxyError>() {
            return 3;
        }
        if let Some(err) = cause.downcast_ref::<BrokerError>() {
            return match err {
                // A bad certificate file or missing trust roots is bad input.
                BrokerError::Identity(_) | BrokerError::NoClientRoots => 2,
                _ => 3,
            };
        }
    }
    1
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if matches!(
        cli.command,
        Command::Certs(_) | Command::Check(_) | Command::Policy(_)
    ) {
        // Offline commands die quietly on a closed pipe (`thingswarm certs list | head`) like
        // other Unix tools instead of panicking in println!. Never for commands with sockets:
        // a peer closing a connection would then kill the process (rmqtt writes with plain
        // write(2)).
        // SAFETY: setting a signal disposition to its default before any thread starts.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
    match cmd::dispatch(cli) {
        Ok(Outcome::Done) => ExitCode::SUCCESS,
        Ok(Outcome::Failed) => ExitCode::from(1),
        Ok(Outcome::Interrupted) => ExitCode::from(130),
        Err(err) => {
            eprintln!("thingswarm: {err:#}");
            ExitCode::from(exit_code(&err))
        }
    }
}
