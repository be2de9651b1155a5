//! Set-up shared by the integration tests (each test file that needs it says `mod common;`).

// Each test file is its own crate and uses only some of these.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use thingswarm::broker::mosquitto::Mosquitto;
use thingswarm::fleet::{self, Endpoint, RunResult};
use thingswarm::identity::Fleet;
use thingswarm::scenario::Plan;
use thingswarm::tls::probe::{probe, Negotiated};

/// Every group's identities for `plan`, signed (or reused) under `dir`.
pub fn identities(plan: &Plan, dir: &Path) -> Vec<Arc<Fleet>> {
    fleet::identities(plan, dir)
        .unwrap()
        .into_iter()
        .map(|(f, _)| f)
        .collect()
}

/// Runs `plan`'s fleet against `endpoint` to its end (at most 2 minutes) on a runtime of its
/// own (two workers, as on the 2-core reference machine, whatever the CI machine has), with
/// nobody watching the snapshots and no control lines.
pub fn run_fleet(plan: &Plan, fleets: Vec<Arc<Fleet>>, endpoint: Endpoint) -> RunResult {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (tx, _rx) = tokio::sync::watch::channel(Default::default());
    rt.block_on(async {
        // Bounded: the tests' scenarios last seconds; a hang fails instead of blocking CI.
        tokio::time::timeout(
            Duration::from_secs(120),
            fleet::run(
                plan,
                fleets,
                endpoint,
                tokio_util::sync::CancellationToken::new(),
                tx,
                &Default::default(),
            ),
        )
        .await
        .expect("the run ends within 2 minutes")
    })
}

/// Probes `broker` once with the first identity, with the TLS choices and backend the run
/// will use, then runs the fleet against it: (what the probe negotiated, the run).
pub fn probe_and_run(
    plan: &Plan,
    fleets: Vec<Arc<Fleet>>,
    broker: &Mosquitto,
) -> (Result<Negotiated, String>, RunResult) {
    let mut endpoint = Endpoint::verified(broker.addr(), broker.server_ca_der()).unwrap();
    endpoint.trust = endpoint.trust.with_options(&plan.tls);
    let f = &fleets[0];
    let tls = endpoint
        .trust
        .device_tls(&f.client_id(0), f.cert_chain(0), f.key(0).clone_key())
        .unwrap();
    let probed = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(probe(&endpoint.host, endpoint.port, tls));
    (probed, run_fleet(plan, fleets, endpoint))
}

/// Where `report` breaks report.schema.json (empty: valid).
pub fn schema_errors(report: &Value) -> Vec<String> {
    let schema: Value = serde_json::from_str(thingswarm::report::SCHEMA_JSON).unwrap();
    errors(&schema, report)
}

/// Where `value` breaks the schema of the report's top-level property `part` (empty: valid).
pub fn schema_errors_in(part: &str, value: &Value) -> Vec<String> {
    let schema: Value = serde_json::from_str(thingswarm::report::SCHEMA_JSON).unwrap();
    errors(&schema["properties"][part], value)
}

fn errors(schema: &Value, value: &Value) -> Vec<String> {
    let validator = jsonschema::validator_for(schema).expect("the schema compiles");
    validator
        .iter_errors(value)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect()
}

/// A `thingswarm broker --aws` process, killed when dropped (even if an assertion fails).
pub struct AwsBroker {
    child: Child,
    /// `host:port` it listens on.
    pub addr: String,
    /// Path of the CA (PEM) that verifies it.
    pub server_ca: String,
}

impl AwsBroker {
    /// Starts it with identities under `certs` and waits (at most 30 s per line) until it
    /// prints a line starting with `ready`.
    pub fn start(certs: &Path, ready: &str) -> AwsBroker {
        let mut child = Command::new(env!("CARGO_BIN_EXE_thingswarm"))
            .args(["broker", "--port", "0", "--aws", "--certs-dir"])
            .arg(certs)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut broker = AwsBroker {
            child,
            addr: String::new(),
            server_ca: String::new(),
        };
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut lines = Vec::new();
        while !lines.last().is_some_and(|l: &String| l.starts_with(ready)) {
            lines.push(
                rx.recv_timeout(Duration::from_secs(30))
                    .unwrap_or_else(|_| panic!("broker output so far: {lines:?}")),
            );
        }
        broker.addr = lines[0].strip_prefix("listening on ").unwrap().to_string();
        broker.server_ca = lines[1].strip_prefix("server CA: ").unwrap().to_string();
        broker
    }
}

impl Drop for AwsBroker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
