//! Past one process: a fleet split by `thingswarm run --processes P` over K local mosquitto
//! instances (shard i connects to broker i mod K), merged into one report, printed as JSON.
//!
//! `cargo bench --bench processes -- [--sessions 100000] [--brokers 6] [--processes 6]
//! [--rate R] [--in-flight N] [--hold SECS]`
//! (defaults: 100,000 idle mTLS sessions, 6 brokers, 6 processes, 2,000 connects/s in all, 100
//! in flight per process, 10 s hold).
//!
//! This is issue 10's bounded demonstration that one machine holds 100,000 sessions although
//! a process (thingswarm's or mosquitto's) may open only 20,000 files here: each child holds
//! sessions/P, each broker sessions/K. It runs the real CLI (this package's binary), so what
//! it shows is what a user gets: identities signed once by the parent (timed separately, and
//! reused when the bench signs them first), children spawned, shards merged. Reported: wall
//! time of the run, sessions connected and failed (from the merged report; failed must be
//! 0), ramp time, the merged connect latency, client CPU per connect, and memory: the peak of
//! the whole thingswarm process tree and of the brokers (sampled from /proc every 0.5 s),
//! and the sum of the children's own peaks (getrusage, from the report).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use thingswarm::broker::mosquitto::Mosquitto;
use thingswarm::scenario::{Overrides, Plan};

struct Args {
    sessions: u64,
    brokers: u64,
    processes: u64,
    rate: u64,
    in_flight: u64,
    hold: u64,
}

fn args() -> Args {
    let mut a = Args {
        sessions: 100_000,
        brokers: 6,
        processes: 6,
        rate: 2000,
        in_flight: 100,
        hold: 10,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = || -> u64 {
            let v = it.next().expect("flag value");
            v.parse()
                .unwrap_or_else(|_| panic!("{arg}: {v:?} is not a count"))
        };
        match arg.as_str() {
            "--sessions" => a.sessions = value(),
            "--brokers" => a.brokers = value(),
            "--processes" => a.processes = value(),
            "--rate" => a.rate = value(),
            "--in-flight" => a.in_flight = value(),
            "--hold" => a.hold = value(),
            // `cargo bench` passes --bench.
            _ => {}
        }
    }
    assert!(a.brokers >= 1 && a.processes >= 1 && a.sessions >= a.processes);
    a
}

/// Resident bytes of `pid` (0 once it is gone).
fn rss_of(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/statm"))
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |pages| pages * 4096)
}

/// `pid` and its descendants.
fn tree(pid: u32) -> Vec<u32> {
    let mut all = vec![pid];
    let mut i = 0;
    while i < all.len() {
        let p = all[i];
        if let Ok(s) = std::fs::read_to_string(format!("/proc/{p}/task/{p}/children")) {
            all.extend(s.split_whitespace().filter_map(|c| c.parse::<u32>().ok()));
        }
        i += 1;
    }
    all
}

fn scenario(a: &Args) -> String {
    format!(
        r#"name = "processes-bench"
duration = "{hold}s"

[[group]]
name = "fleet"
devices = {sessions}
client_id = "d-{{index:06}}"
connect = {{ rate = "{rate}/s", max_in_flight = {in_flight}, timeout = "60s" }}
keepalive = "300s"
"#,
        hold = a.hold,
        sessions = a.sessions,
        rate = a.rate,
        in_flight = a.in_flight,
    )
}

fn main() {
    let a = args();
    thingswarm::tls::install_crypto_provider();
    // The brokers inherit this limit.
    let (soft, _) = thingswarm::limits::raise_nofile();
    let per_broker = a.sessions.div_ceil(a.brokers);
    assert!(
        per_broker + 100 <= soft,
        "{per_broker} sessions per broker need more than the {soft} files a process may open: use more --brokers"
    );
    let tmp = tempfile::tempdir().unwrap();
    let scenario_path = tmp.path().join("processes.toml");
    std::fs::write(&scenario_path, scenario(&a)).unwrap();
    let plan = Plan::load(&scenario_path, &Overrides::default()).unwrap();
    let certs = tmp.path().join("certs");

    // Sign here (the run then reuses them), so the run's clock measures sessions alone.
    let signing = Instant::now();
    let fleets = thingswarm::fleet::identities(&plan, &certs).unwrap();
    let signing_s = signing.elapsed().as_secs_f64();
    let root = fleets[0].0.root().clone();
    drop(fleets);
    eprintln!(
        "{} identities ready in {signing_s:.1} s",
        plan.total_devices()
    );

    let brokers: Vec<Mosquitto> = (0..a.brokers)
        .map(|_| {
            Mosquitto::start(
                std::slice::from_ref(&root),
                &format!("max_connections {}", per_broker + 100),
            )
            .expect("mosquitto starts (apt-get install -y mosquitto)")
        })
        .collect();
    // One CA file that verifies every broker.
    let server_ca: PathBuf = tmp.path().join("brokers-ca.pem");
    let pem: String = brokers
        .iter()
        .map(|b| std::fs::read_to_string(b.server_ca()).unwrap())
        .collect();
    std::fs::write(&server_ca, pem).unwrap();
    let broker_rss_before: u64 = brokers.iter().map(|b| rss_of(b.pid())).sum();

    let out = tmp.path().join("out");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_thingswarm"));
    cmd.arg("run")
        .arg(&scenario_path)
        .args(["--processes", &a.processes.to_string(), "--no-tui"])
        .arg("--out")
        .arg(&out)
        .arg("--certs-dir")
        .arg(&certs)
        .arg("--server-ca")
        .arg(&server_ca);
    for b in &brokers {
        cmd.args(["--target", &format!("mqtts://{}", b.addr())]);
    }
    let started = Instant::now();
    let mut child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("running thingswarm");
    let (mut client_peak, mut broker_peak) = (0u64, 0u64);
    // Bounded: the run itself is bounded by its ramp timeouts and hold; this is a backstop.
    let deadline = started + Duration::from_secs(a.sessions / a.rate.max(1) + a.hold + 600);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the run did not end within its bound");
        }
        client_peak = client_peak.max(tree(child.id()).into_iter().map(rss_of).sum());
        broker_peak = broker_peak.max(brokers.iter().map(|b| rss_of(b.pid())).sum());
        std::thread::sleep(Duration::from_millis(500));
    };
    let wall_s = started.elapsed().as_secs_f64();
    let report = read_report(&out.join("report.json"));
    let connected = report["devices"]["connects"].as_u64().unwrap_or(0);
    let failed = report["devices"]["failed"].as_u64().unwrap_or(u64::MAX);
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    let connect_us: serde_json::Map<String, serde_json::Value> =
        ["p50", "p90", "p99", "p99_9", "max"]
            .into_iter()
            .map(|k| (k.to_string(), report["connect_latency_us"][k].clone()))
            .collect();
    println!(
        "{}",
        serde_json::json!({
            "bench": "processes",
            "sessions": a.sessions,
            "brokers": a.brokers,
            "processes": a.processes,
            "exit_code": status.code(),
            "connected": connected,
            "failed": failed,
            "identities_s": signing_s,
            "wall_s": wall_s,
            "ramp_s": report["phases"]["ramp_s"],
            "connects_per_s": connected as f64 / report["phases"]["ramp_s"].as_f64().unwrap_or(f64::NAN),
            "connect_latency_us": connect_us,
            "client_cpu_ms_per_connect": report["client"]["cpu_ms_per_connect"],
            "client_tree_peak_mib": mib(client_peak),
            "client_children_max_rss_sum_mib": report["client"]["max_rss_bytes"].as_u64().map(mib),
            "client_kib_per_session": client_peak as f64 / 1024.0 / a.sessions as f64,
            "brokers_peak_mib": mib(broker_peak),
            "brokers_kib_per_session": broker_peak.saturating_sub(broker_rss_before) as f64 / 1024.0 / a.sessions as f64,
        })
    );
    assert_eq!(failed, 0, "sessions failed; see {}", out.display());
}

fn read_report(path: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e} (the run wrote no merged report)", path.display()));
    serde_json::from_str(&text).unwrap()
}
