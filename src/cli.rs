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
    /// A fault-injecting TCP proxy on loopback (delay, jitter, stall, resets, bandwidth), to
    /// put between devices and a broker.
    Proxy(ProxyArgs),
    /// AWS IoT Core policies offline: evaluate requests (like TestAuthorization) and lint.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Compare two reports metric by metric; exit code 1 when any got worse beyond the
    /// tolerance.
    Compare(CompareArgs),
    /// Merge shard reports (`run --shard i/N`) into one report: histograms added, counters
    /// summed, timelines aligned; writes what a run writes.
    Merge(MergeArgs),
    /// Re-render the text summary of a saved report (a results directory or its report.json).
    Report(ReportArgs),
    /// One small group per (TLS version, cipher suite, device key) cell against a local
    /// mosquitto allowing exactly that cell (or against --target): negotiated suite, backend,
    /// handshake time and client CPU, connects. Exit 1 when a cell fails.
    TlsMatrix(TlsMatrixArgs),
}

/// `thingswarm tls-matrix [SPEC]`
#[derive(Debug, Args)]
pub struct TlsMatrixArgs {
    /// A tls-matrix spec (`kind = "tls-matrix"`, e.g. scenarios/tls-matrix.toml); the flags
    /// below replace its values.
    #[arg(value_name = "SPEC")]
    pub spec: Option<PathBuf>,
    /// TLS version, 1.2 or 1.3 (repeatable; default both).
    #[arg(long = "tls-version", value_name = "VERSION")]
    pub tls_versions: Vec<String>,
    /// Cipher suite by OpenSSL name (repeatable; default the seed's 18 TLS 1.2 suites and
    /// TLS_AES_128_GCM_SHA256, TLS_AES_256_GCM_SHA384).
    #[arg(long = "cipher-suite", value_name = "NAME")]
    pub cipher_suites: Vec<String>,
    /// Device key / signature algorithm (repeatable; default ecdsa-p256-sha256 and
    /// rsa2048-sha256).
    #[arg(long = "algorithm", value_name = "NAME")]
    pub algorithms: Vec<String>,
    /// Devices connecting per cell [default: the spec's, else 3].
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=1000))]
    pub devices: Option<u64>,
    /// Probe handshakes per cell (their median time and mean client CPU are reported)
    /// [default: the spec's, else 5].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub handshakes: Option<u32>,
    /// Run every cell against this broker (mqtts://host:port) instead of a local mosquitto
    /// per cell; the broker decides which cells succeed. Replaces the spec's `[target].url`.
    #[arg(long, value_name = "URL")]
    pub target: Option<String>,
    /// CA (PEM) that verifies the target broker; replaces the spec's `[target].server_ca`.
    #[arg(long, value_name = "PEM")]
    pub server_ca: Option<PathBuf>,
    /// Do not verify the target broker's certificate (devices still present theirs).
    #[arg(long, conflicts_with = "server_ca")]
    pub insecure: bool,
    /// TLS server name for the target when it differs from its host; replaces `[target].sni`.
    #[arg(long, value_name = "NAME")]
    pub sni: Option<String>,
    /// Also write the cells as JSON to this file.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Identity cache.
    #[command(flatten)]
    pub dir: CertsDir,
}

/// `thingswarm policy ...`
#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Answer ALLOWED / EXPLICIT_DENY / IMPLICIT_DENY for action/resource requests, naming the
    /// deciding statement. Exit 1 when a request's `expect` differs.
    Eval(PolicyEvalArgs),
    /// Warn about known traps (Deny bypassed by an MQTT wildcard subscription, MQTT wildcards
    /// in Deny, over-broad `iot:*` / `*`). The files are linted as one principal's policies.
    /// Exit 1 when there are warnings.
    Lint {
        /// Policy documents (JSON).
        #[arg(value_name = "FILE", required = true)]
        files: Vec<PathBuf>,
        /// Output format.
        #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
        format: OutputFormat,
    },
}

/// `thingswarm policy eval`
#[derive(Debug, Args)]
pub struct PolicyEvalArgs {
    /// A policy document attached to the principal (JSON); repeat for more (they are unioned).
    #[arg(long = "policy", value_name = "FILE", required = true)]
    pub policies: Vec<PathBuf>,
    /// The principal's context (JSON: client_id, thing_name, thing_type_name,
    /// thing_attributes, certificate.subject / certificate.issuer fields, certificate.
    /// serial_number); policy variables without a value stay literal.
    #[arg(long, value_name = "FILE")]
    pub context: Option<PathBuf>,
    /// The action of a single request, e.g. iot:Publish.
    #[arg(long, requires = "resource", conflicts_with = "requests")]
    pub action: Option<String>,
    /// The resource ARN of a single request, e.g. arn:aws:iot:us-east-1:123456789012:topic/a.
    #[arg(long, value_name = "ARN", requires = "action")]
    pub resource: Option<String>,
    /// A JSON list of requests: [{"action": ..., "resource": ..., "expect"?: "ALLOWED" |
    /// "EXPLICIT_DENY" | "IMPLICIT_DENY"}].
    #[arg(long, value_name = "FILE", required_unless_present = "action")]
    pub requests: Option<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    pub format: OutputFormat,
}

/// How an offline command prints its answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    /// One line per item, for people.
    Text,
    /// One JSON document, for scripts.
    Json,
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
    /// Serve Prometheus metrics at http://ADDR/metrics while the run lasts (e.g.
    /// 127.0.0.1:9464; port 0 picks one, printed on stderr).
    #[arg(long, value_name = "ADDR")]
    pub prometheus: Option<std::net::SocketAddr>,
    /// Push metrics to this Prometheus Pushgateway (http://HOST:PORT) every 10 s and at the
    /// end, as job `thingswarm` (PUT, replacing the job's previous push).
    #[arg(long, value_name = "URL")]
    pub pushgateway: Option<String>,
    /// Leave the dashboard as soon as the run ends instead of showing the summary until a
    /// key is pressed (the summary is printed on stdout either way).
    #[arg(long)]
    pub exit_on_finish: bool,
    /// A service-level objective, METRIC OP VALUE (repeatable), e.g. 'e2e_p99<50ms',
    /// 'delivered_rate>=1000/s', 'error_rate<=0.1%'; judged with the scenario's [slo]; any
    /// failure gives exit code 1.
    #[arg(long = "slo", value_name = "EXPR", value_parser = parse_slo)]
    pub slo: Vec<crate::slo::Slo>,
    /// Run only shard i of N (0-based, e.g. 0/4): devices k with k mod N = i of every group,
    /// keeping their identities, client IDs and schedules; merge the shards' results
    /// directories with `thingswarm merge`. SLOs and expectations are judged at the merge.
    #[arg(long, value_name = "i/N", conflicts_with = "processes")]
    pub shard: Option<crate::shard::Shard>,
    /// Split the fleet over N child processes of this binary (`--shard i/N` each, results in
    /// OUT/shard-i/), show their aggregate live and merge their reports into OUT.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=256))]
    pub processes: Option<u32>,
    /// For a parent `--processes` run: print one `snapshot <JSON>` line per second on stdout
    /// instead of progress lines.
    #[arg(long, hide = true)]
    pub snapshot_lines: bool,
}

fn parse_slo(s: &str) -> Result<crate::slo::Slo, crate::slo::SloError> {
    crate::slo::Slo::parse_expr(s)
}

/// `thingswarm merge --out DIR SHARD_DIR...`
#[derive(Debug, Args)]
pub struct MergeArgs {
    /// Where the merged report goes (report.json, report.html, junit.xml, *.hlog).
    #[arg(long, value_name = "DIR", required = true)]
    pub out: PathBuf,
    /// Results directories (or report.json files) of `run --shard i/N`, one per shard.
    #[arg(value_name = "SHARD_DIR", required = true)]
    pub shards: Vec<PathBuf>,
    /// Merge even when shards are missing: warn, and mark the report partial (interrupted).
    #[arg(long)]
    pub allow_missing: bool,
    /// Another service-level objective to judge on the merged report (repeatable), besides
    /// the ones the shards were run with.
    #[arg(long = "slo", value_name = "EXPR", value_parser = parse_slo)]
    pub slo: Vec<crate::slo::Slo>,
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
    /// Also render the HTML report into this file (`-` for stdout, instead of the text).
    #[arg(long, value_name = "FILE")]
    pub html: Option<PathBuf>,
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
    /// Repeatable with `--shard i/N` or `--processes N`: shard i connects to the (i mod
    /// count)-th, so shards can spread over several brokers (or cluster nodes).
    #[arg(long, value_name = "URL")]
    pub target: Vec<String>,
    /// CA (PEM) that verifies the external broker's certificate; replaces `server_ca`.
    #[arg(long, value_name = "PEM")]
    pub server_ca: Option<PathBuf>,
    /// Do not verify the external broker's certificate (devices still present theirs).
    #[arg(long, conflicts_with = "server_ca")]
    pub insecure: bool,
    /// TLS version to offer, 1.2 or 1.3 (repeatable; replaces `[target].tls.versions`).
    #[arg(long = "tls-version", value_name = "VERSION")]
    pub tls_versions: Vec<String>,
    /// Cipher suite to offer by OpenSSL name, e.g. ECDHE-ECDSA-AES128-GCM-SHA256 (repeatable;
    /// replaces `[target].tls.suites`).
    #[arg(long = "cipher-suite", value_name = "NAME")]
    pub cipher_suites: Vec<String>,
    /// ALPN protocol to offer, e.g. x-amzn-mqtt-ca (repeatable; replaces `[target].tls.alpn`).
    #[arg(long, value_name = "PROTOCOL")]
    pub alpn: Vec<String>,
    /// TLS server name (SNI and certificate check) when it differs from the connect host;
    /// replaces `[target].sni`.
    #[arg(long, value_name = "NAME")]
    pub sni: Option<String>,
    /// TLS library: auto, rustls or openssl; replaces `[target].tls.backend`.
    #[arg(long, value_name = "BACKEND")]
    pub tls_backend: Option<String>,
    /// Local address to connect from, or an IPv4 range FIRST-LAST (repeatable; devices take
    /// them round-robin; replaces `[target].source_addresses`). Spreads sessions past the
    /// ~28k ephemeral ports one address has per destination.
    #[arg(long = "source-address", value_name = "IP")]
    pub source_addresses: Vec<String>,
}

impl TargetArgs {
    /// The flags as scenario overrides, for shard `shard` (0 outside shards): its `--target`
    /// is the (shard mod count)-th.
    pub fn overrides(&self, shard: u32) -> Overrides {
        Overrides {
            target: self.target_of(shard).map(str::to_string),
            server_ca: self.server_ca.clone(),
            insecure: self.insecure,
            tls_versions: (!self.tls_versions.is_empty()).then(|| self.tls_versions.clone()),
            cipher_suites: (!self.cipher_suites.is_empty()).then(|| self.cipher_suites.clone()),
            alpn: (!self.alpn.is_empty()).then(|| self.alpn.clone()),
            sni: self.sni.clone(),
            tls_backend: self.tls_backend.clone(),
            source_addresses: (!self.source_addresses.is_empty())
                .then(|| self.source_addresses.clone()),
        }
    }

    /// Shard `shard`'s `--target`: the (shard mod count)-th, if any was given.
    pub fn target_of(&self, shard: u32) -> Option<&str> {
        let n = self.target.len();
        (n > 0).then(|| self.target[shard as usize % n].as_str())
    }

    /// The flags again, as arguments for shard `shard`'s child process (`run --processes`):
    /// its one `--target`, and every other override unchanged.
    pub fn child_args(&self, shard: u32) -> Vec<String> {
        let mut a = Vec::new();
        if let Some(t) = self.target_of(shard) {
            a.extend(["--target".to_string(), t.to_string()]);
        }
        if let Some(ca) = &self.server_ca {
            a.extend(["--server-ca".to_string(), ca.display().to_string()]);
        }
        if self.insecure {
            a.push("--insecure".into());
        }
        a.extend(self.tls_args());
        a
    }

    /// The TLS and source-address flags alone (a child of a run against the parent's own
    /// embedded broker gets that broker as its target instead of the user's).
    pub fn tls_args(&self) -> Vec<String> {
        let mut a = Vec::new();
        let mut repeat = |flag: &str, values: &[String]| {
            for v in values {
                a.extend([flag.to_string(), v.clone()]);
            }
        };
        repeat("--tls-version", &self.tls_versions);
        repeat("--cipher-suite", &self.cipher_suites);
        repeat("--alpn", &self.alpn);
        repeat("--source-address", &self.source_addresses);
        if let Some(s) = &self.sni {
            a.extend(["--sni".to_string(), s.clone()]);
        }
        if let Some(b) = &self.tls_backend {
            a.extend(["--tls-backend".to_string(), b.clone()]);
        }
        a
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
    /// Also answer AWS IoT Device Shadow requests (`$aws/things/+/shadow/...`): the emulated
    /// shadow service connects as `thingswarm-aws-service` with a certificate from the default
    /// generated CA (whose root is then trusted too), so shadow scenarios can `--target` this
    /// broker. Also emulates fleet provisioning by claim (template `thingswarm-fleet`, issued
    /// by that CA; the claim certificate CN `thingswarm-claim` may use any client ID).
    #[arg(long)]
    pub aws: bool,
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
    /// rsa{2048,3072,4096}-sha{256,384,512}, rsa{2048,3072,4096}-pss-sha256, dsa2048-sha256 (the
    /// seed's names such as ECDSA-WITH-SHA256, RSASSAPSS, DSA_WITH_SHA256 work too).
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

/// `thingswarm proxy --listen 127.0.0.1:P --upstream 127.0.0.1:Q [faults]`
#[derive(Debug, Args)]
pub struct ProxyArgs {
    /// Where devices connect (loopback only; port 0 picks a free one, printed).
    #[arg(long, value_name = "ADDR", value_parser = crate::proxy::args::loopback)]
    pub listen: std::net::SocketAddr,
    /// The broker (loopback only).
    #[arg(long, value_name = "ADDR", value_parser = crate::proxy::args::loopback)]
    pub upstream: std::net::SocketAddr,
    /// Fixed delay added in each direction.
    #[arg(long, value_name = "DURATION", value_parser = crate::proxy::args::duration, default_value = "0s")]
    pub delay: std::time::Duration,
    /// Uniform random extra delay up to this, per chunk (order is kept).
    #[arg(long, value_name = "DURATION", value_parser = crate::proxy::args::duration, default_value = "0s")]
    pub jitter: std::time::Duration,
    /// When to stall all traffic, from start.
    #[arg(long, value_name = "DURATION", value_parser = crate::proxy::args::duration, requires = "stall")]
    pub stall_at: Option<std::time::Duration>,
    /// How long the stall lasts.
    #[arg(long, value_name = "DURATION", value_parser = crate::proxy::args::duration, requires = "stall_at")]
    pub stall: Option<std::time::Duration>,
    /// Fraction of open connections to reset (TCP RST) at --reset-at.
    #[arg(long, value_name = "FRACTION", value_parser = crate::proxy::args::fraction, requires = "reset_at")]
    pub reset: Option<f64>,
    /// When to reset, from start.
    #[arg(long, value_name = "DURATION", value_parser = crate::proxy::args::duration, requires = "reset")]
    pub reset_at: Option<std::time::Duration>,
    /// Bandwidth cap per direction and connection, e.g. 1MB/s.
    #[arg(long, value_name = "RATE", value_parser = crate::proxy::args::bandwidth)]
    pub bandwidth: Option<u64>,
}
