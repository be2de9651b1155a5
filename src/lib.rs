//! thingswarm: a device-fleet simulator and MQTT load generator.
//!
//! Every simulated device has its own X.509 identity, speaks MQTT over mutually authenticated
//! TLS, and is measured with HDR histograms. Data flows one way through the modules:
//!
//! ```text
//! cli ──> cmd ──> scenario (TOML -> Plan)
//!                   └─> identity (CA, per-device key+cert, on-disk cache)
//!                   └─> tls (one rustls ClientConfig per identity)
//!                   └─> broker (embedded target, or the scenario's)
//!                   └─> fleet (device tasks, traffic) ──> stats ──> tui / report
//! ```
//!
//! - [`cli`]: clap definitions only.
//! - [`cmd`]: one handler per subcommand; the only place that prints.
//! - [`scenario`]: the scenario file's strict TOML model, validated into one `Plan` (errors
//!   carry `file:line:col`) before anything is signed or connected.
//! - [`template`]: `sensor-{index:05}`-style name templates, parsed once.
//! - [`identity`]: algorithms, CAs (generated or brought), device certificates, the cache.
//! - [`tls`]: device TLS configs (verification on by default; `--insecure` opt-out).
//! - [`fleet`]: the runner: paced connects, one task per device, per-device open-model
//!   message schedules, failures classified and counted.
//! - [`stats`]: counters, batched HDR histograms, the aggregator's snapshots, sequence tracking.
//! - [`report`]: the one `Report` value, written as JSON and printed as a summary; HDR
//!   interval logs, JUnit XML and `compare` derive from it.
//! - [`slo`]: service-level objectives (`[slo]`, `--slo`), judged against the report.
//! - [`prometheus`]: `/metrics` served during a run and Pushgateway pushes, from snapshots.
//! - [`traffic`]: message payloads (raw or generated JSON) carrying the measurement header.
//! - [`tui`]: the live dashboard of `thingswarm run` (ratatui): a pure `render(View)`, an
//!   event loop on its own thread reading snapshots at 5 fps, a guard that restores the
//!   terminal on every path.
//! - [`proxy`]: a fault-injecting TCP proxy (delay, stall, reset, bandwidth) that checks the
//!   figures against a known truth.
//! - [`expect`]: authorization probes: one device, one action, allow or deny, and the signal.
//! - [`policy`]: AWS IoT Core policies offline: document model, evaluator, lint.
//! - [`aws`]: AWS IoT behaviours: Device Shadow flows (document model, an emulated shadow
//!   service answering on the `$aws/things/...` topics), basic ingest (`$aws/rules/...`) and
//!   fleet provisioning by claim (emulated inside the embedded broker).
//! - [`shard`]: `run --shard i/N` slices of the fleet; `merge` puts shard reports together.
//! - [`broker`]: brokers thingswarm starts itself: the embedded rmqtt broker (cargo feature
//!   `embedded-broker`, the default target) and a mosquitto harness for tests and benches.
//!
//! Errors are typed inside modules (`thiserror`); handlers add context (`anyhow`); `main.rs`
//! holds the one map from errors to exit codes.

pub mod aws;
pub mod broker;
pub mod cli;
pub mod cmd;
pub mod expect;
pub mod fleet;
pub mod identity;
pub mod limits;
pub mod policy;
pub mod prometheus;
pub mod proxy;
pub mod report;
pub mod scenario;
pub mod shard;
pub mod shutdown;
pub mod slo;
pub mod stats;
pub mod template;
pub mod tls;
pub mod traffic;
pub mod tui;
