//! The command line (clap derive). Parsing only: each command's work lives in [`crate::cmd`].

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::identity::Algorithm;
use crate::scenario::Overrides;

/// thingswarm: simulate fleets of IoT devices, each with its own X.509 identity, over
/// mutually authenticated TLS MQTT, and measure the broker truthfully.
#[derive(Debug, Parser)]
#[command(name = "thingswarm", version, about, long_about = None, max_term_width = 100)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands (see DESIGN.md section 4b for the shape they share).
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create, list, inspect and export per-device identities (CA + key + certificate).
    #[command(subcommand)]
    Certs(CertsCommand),
    /// Run a scenario: connect a fleet of mTLS devices, hold, disconnect, write a report.
    Run(RunArgs),
    /// Validate a scenario and print its plan (groups, identities, pacing, timing) without
    /// connecting or signing anything.
    Check(CheckArgs),
    /// Run the embedded mTLS broker standalone (until Ctrl-C).
    Broker(BrokerArgs),
    /// Evaluate AWS IoT policies offline. [not built yet]
    Policy(NotBuilt),
    /// Compare two reports metric by metric; exit code 1 when any got worse beyond the
    /// tolerance.
    Compare(CompareArgs),
    /// Merge shard reports. [not built yet]
    Merge(NotBuilt),
    /// Re-render the text summary of a saved report (a results directory or its report.json).
    Report(ReportArgs),
}

/// Arguments of a command that is not built yet: accepted so the command can say so plainly.
#[derive(Debug, Args)]
pub struct NotBuilt {
    /// Ignored: the command is not built yet.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, hide = true)]
    pub args: Vec<String>,
}

/// `thingswarm run SCENARIO`
#[derive(Debug, Args)]
pub struct RunArgs {
    /// The scenario file (TOML; see scenarios/README.md).
    #[arg(value_name = "SCENARIO")]
    pub scenario: PathBuf,
    /// Overrides of the scenario's `[target]`.
    #[command(flatten)]
    pub target: TargetArgs,
    /// Report directory [default: results/SCENARIO-YYYYMMDD-HHMMSS/, UTC].
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Where identities are cached (missing ones are generated).
    #[command(flatten)]
    pub dir: CertsDir,
    /// Show the live dashboard [default when stdout is a terminal]. Keys: q/Esc stops the
    /// run like Ctrl-C (report written, exit code 130), ? help, Tab focus.
    #[arg(long, conflicts_with = "no_tui")]
    pub tui: bool,
    /// No dashboard: one progress line per second on stderr (as in CI or a pipe).
    #[arg(long)]
    pub no_tui: bool,
    /// Leave the dashboard as soon as the run ends instead of showing the summary until a
    /// key is pressed (the summary is printed on stdout either way).
    #[arg(long)]
    pub exit_on_finish: bool,
    /// A service-level objective, METRIC OP VALUE (repeatable), e.g. 'e2e_p99<50ms',
    /// 'delivered_rate>=1000/s', 'error_rate<=0.1%'; judged with the scenario's [slo]; any
    /// failure gives exit code 1.
    #[arg(long = "slo", value_name = "EXPR", value_parser = parse_slo)]
    pub slo: Vec<crate::slo::Slo>,
}

fn parse_slo(s: &str) -> Result<crate::slo::Slo, crate::slo::SloError> {
    crate::slo::Slo::parse_expr(s)
}

/// `thingswarm compare BASE CURRENT`
#[derive(Debug, Args)]
pub struct CompareArgs {
    /// The baseline: a report.json or a results directory.
    #[arg(value_name = "BASE")]
    pub base: PathBuf,
    /// The run to judge: a report.json or a results directory.
    #[arg(value_name = "CURRENT")]
    pub current: PathBuf,
    /// Largest change for the worse that is not a regression, e.g. 10% (or 0.1).
    #[arg(long, default_value = "10%", value_name = "PERCENT", value_parser = parse_percent)]
    pub max_regression: f64,
    /// Output format.
    #[arg(long, value_enum, default_value_t = CompareFormat::Text)]
    pub format: CompareFormat,
}

/// How `compare` prints.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum CompareFormat {
    /// Aligned columns.
    Text,
    /// A Markdown table (for a PR or a chat).
    Markdown,
}

fn parse_percent(s: &str) -> Result<f64, String> {
    let t = s.trim();
    let v = match t.strip_suffix('%') {
        Some(n) => n.trim().parse::<f64>().map(|x| x / 100.0),
        None => t.parse::<f64>(),
    };
    v.ok()
        .filter(|x| x.is_finite() && *x >= 0.0 && *x < 1.0)
        .ok_or_else(|| {
            format!("{s:?} is not a tolerance (expected a percentage from 0% to 99%, e.g. 10%)")
        })
}

/// `thingswarm report DIR`
#[derive(Debug, Args)]
pub struct ReportArgs {
    /// A results directory (or its report.json).
    #[arg(value_name = "DIR")]
    pub dir: PathBuf,
}

/// `thingswarm check SCENARIO`
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The scenario file (TOML; see scenarios/README.md).
    #[arg(value_name = "SCENARIO")]
    pub scenario: PathBuf,
    /// Overrides of the scenario's `[target]`.
    #[command(flatten)]
    pub target: TargetArgs,
    /// Where cached identities are counted (nothing is created).
    #[command(flatten)]
    pub dir: CertsDir,
}

/// Where to point a scenario, overriding its `[target]`: shared by `check` and `run` so a
/// command line that checks is the command line that runs.
#[derive(Debug, Args)]
pub struct TargetArgs {
    /// External broker to use instead of the scenario's target (mqtts://host:port).
    #[arg(long, value_name = "URL")]
    pub target: Option<String>,
    /// CA (PEM) that verifies the external broker's certificate; replaces `server_ca`.
    #[arg(long, value_name = "PEM")]
    pub server_ca: Option<PathBuf>,
    /// Do not verify the external broker's certificate (devices still present theirs).
    #[arg(long, conflicts_with = "server_ca")]
    pub insecure: bool,
}

impl TargetArgs {
    /// The flags as scenario overrides.
    pub fn overrides(&self) -> Overrides {
        Overrides {
            target: self.target.clone(),
            server_ca: self.server_ca.clone(),
            insecure: self.insecure,
        }
    }
}

/// `thingswarm certs ...`
#[derive(Debug, Subcommand)]
pub enum CertsCommand {
    /// Create the generated CA for an algorithm (a self-signed root, or root -> intermediate).
    Init {
        #[command(flatten)]
        dir: CertsDir,
        /// Signing algorithm of the CA and of the devices it will sign.
        #[arg(long, default_value_t = Algorithm::default())]
        algorithm: Algorithm,
        /// Root signs an intermediate, which signs devices (devices then send the chain).
        #[arg(long)]
        intermediate: bool,
        /// Replace an existing generated CA (fleets signed by the old one are regenerated on use).
        #[arg(long)]
        force: bool,
    },
    /// Issue (or reuse from the cache) N device identities.
    Issue(IssueArgs),
    /// Write identities as per-device PEM files (cert, key, chain) for other tools.
    Export {
        #[command(flatten)]
        dir: CertsDir,
        /// Fleet id (or a unique prefix); optional when the cache holds one fleet.
        #[arg(long)]
        fleet: Option<String>,
        /// Output directory (created 0700; keys 0600).
        #[arg(long)]
        out: PathBuf,
        /// Export only the first N devices.
        #[arg(long)]
        limit: Option<usize>,
    },
    /// List the CAs and fleets a cache holds.
    List {
        #[command(flatten)]
        dir: CertsDir,
    },
    /// Show a fleet's parameters and one device certificate in detail.
    Inspect {
        #[command(flatten)]
        dir: CertsDir,
        /// Fleet id (or a unique prefix); optional when the cache holds one fleet.
        #[arg(long)]
        fleet: Option<String>,
        /// Which device to show.
        #[arg(long, default_value_t = 0)]
        index: usize,
    },
}

/// The identity cache location, shared by every `certs` command.
#[derive(Debug, Args)]
pub struct CertsDir {
    /// Identity cache directory.
    #[arg(long, default_value = "certs", value_name = "DIR")]
    pub certs_dir: PathBuf,
}

/// `thingswarm broker`: the embedded broker as its own process, for fleets larger than one
/// process's file descriptors allow beside an in-process broker, or for other clients.
#[derive(Debug, Args)]
pub struct BrokerArgs {
    /// Port on 127.0.0.1 to listen on; 0 picks a free one (printed).
    #[arg(long, default_value_t = 8883)]
    pub port: u16,
    #[command(flatten)]
    pub dir: CertsDir,
    /// Trust client certificates that chain to the CA certificates in this PEM file; repeat
    /// for more. Default: every generated CA root in the certs dir (`<DIR>/ca/*/root.pem`),
    /// creating the default ecdsa-p256-sha256 CA when there is none.
    #[arg(long, value_name = "PEM")]
    pub trust: Vec<PathBuf>,
}

/// `thingswarm certs issue`
#[derive(Debug, Args)]
pub struct IssueArgs {
    #[command(flatten)]
    pub dir: CertsDir,
    /// Number of devices.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    pub count: u64,
    /// Client ID / certificate CN / SAN template; `{index}` or `{index:05}` numbers devices
    /// from 0.
    #[arg(long, default_value = "device-{index:05}")]
    pub client_id: String,
    /// Signing algorithm: ecdsa-p256-sha256, ecdsa-p384-sha384, ecdsa-p521-sha512,
    /// rsa{2048,3072,4096}-sha{256,384,512} (the seed's names such as ECDSA-WITH-SHA256 work too).
    #[arg(long, default_value_t = Algorithm::default())]
    pub algorithm: Algorithm,
    /// Days the device certificates stay valid.
    #[arg(long, default_value_t = 365, value_parser = clap::value_parser!(u32).range(1..=36500))]
    pub validity_days: u32,
    /// Your own CA certificate (PEM; the issuing certificate first, then its chain).
    #[arg(long, requires = "ca_key", value_name = "PEM")]
    pub ca_cert: Option<PathBuf>,
    /// Your own CA's private key (PEM).
    #[arg(long, requires = "ca_cert", value_name = "PEM")]
    pub ca_key: Option<PathBuf>,
    /// With the generated CA: root -> intermediate -> devices.
    #[arg(long, conflicts_with = "ca_cert")]
    pub intermediate: bool,
    /// Regenerate every identity even if the cache has them.
    #[arg(long)]
    pub force: bool,
}
