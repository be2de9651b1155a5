//! Scale: idle mTLS sessions from this one process against K local mosquitto instances,
//! printed as JSON (one line per stage, then a summary line).
//!
//! `cargo bench --bench scale -- [--sessions 10000,19500] [--brokers K] [--rate R]
//! [--in-flight N] [--sources S] [--hold SECS] [--protocol 3.1.1|5]`
//! (defaults: stages of 10,000 then 19,500 sessions, 4 brokers, 1,000 connects/s in all,
//! 100 in flight per broker, no source-address spread, 8 s hold, 3.1.1).
//!
//! Each stage runs in a fresh child process (memory is not inherited from the last stage), with
//! fresh brokers, each holding its share (`max_connections` set, its open-file limit
//! checked from `/proc/PID/limits`); identities signed or reused before the clock starts (ECDSA
//! P-256). Reported: sessions connected and failed (must be 0), connects/s over the ramp,
//! client CPU per connect (getrusage over the ramp: TLS configs, handshakes, CONNECT/CONNACK),
//! resident memory per idle session (RSS 1 s into the hold minus RSS before the ramp), the
//! brokers' own memory per session, the kernel's `ListenOverflows` during the stage, connect
//! latency percentiles, and the sizes of the per-session structures. Goals (issue 10):
//! <= 24 KiB per idle session at 10,000 and <= 0.25 ms CPU per connect. 19,500 sessions fit
//! under a hard limit of 20,000 open files (200 are reserved, see `thingswarm::limits`).

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use thingswarm::broker::mosquitto::Mosquitto;
use thingswarm::fleet::{self, session::Session, Endpoint};
use thingswarm::identity::cache;
use thingswarm::limits::SessionBudget;
use thingswarm::scenario::{Overrides, Plan};
use thingswarm::stats::rusage::{current_rss_bytes, usage};
use thingswarm::stats::{Percentiles, Phase, Snapshot};
use thingswarm::tls::install_crypto_provider;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

struct Args {
    stages: Vec<u64>,
    brokers: u64,
    rate: u64,
    in_flight: u64,
    sources: u64,
    hold: u64,
    protocol: String,
}

fn args() -> Args {
    let mut a = Args {
        stages: vec![10_000, 19_500],
        brokers: 4,
        rate: 1000,
        in_flight: 100,
        sources: 0,
        hold: 8,
        protocol: "3.1.1".into(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = || it.next().expect("flag value");
        match arg.as_str() {
            "--sessions" => {
                a.stages = value()
                    .split(',')
                    .map(|v| v.trim().parse().expect("--sessions N[,N...]"))
                    .collect()
            }
            "--brokers" => a.brokers = value().parse().expect("--brokers K"),
            "--rate" => a.rate = value().parse().expect("--rate R"),
            "--in-flight" => a.in_flight = value().parse().expect("--in-flight N"),
            "--sources" => a.sources = value().parse().expect("--sources S"),
            "--hold" => a.hold = value().parse().expect("--hold SECS"),
            "--protocol" => a.protocol = value(),
            _ => {}
        }
    }
    assert!(a.brokers >= 1 && a.sources <= 250);
    a
}

/// `TcpExt: ListenOverflows` from /proc/net/netstat (this network namespace), if readable.
fn listen_overflows() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/net/netstat").ok()?;
    let mut lines = text.lines().filter(|l| l.starts_with("TcpExt:"));
    let (names, values) = (lines.next()?, lines.next()?);
    let i = names
        .split_whitespace()
        .position(|n| n == "ListenOverflows")?;
    values.split_whitespace().nth(i)?.parse().ok()
}

/// A process's soft open-file limit, from /proc/PID/limits.
fn nofile_of(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/limits")).ok()?;
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// A process's resident memory, from /proc/PID/status.
fn rss_of(pid: u32) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    text.lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |kib| kib * 1024)
}

/// Sizes of a session's connect and poll futures (the device task holds the larger of its
/// states inline, so these bound what every idle session carries).
fn future_sizes() -> (usize, usize) {
    let trust = thingswarm::tls::ServerTrust::insecure();
    let id = thingswarm::identity::cache::ensure(
        tempfile::tempdir().unwrap().path(),
        &plan_for(&args(), 0, 1).fleet_spec(&plan_for(&args(), 0, 1).groups[0]),
        1,
        false,
    )
    .unwrap()
    .0;
    let tls = trust
        .client_config(&id.client_id(0), id.cert_chain(0), id.key(0).clone_key())
        .unwrap();
    let mut session = Session::new(thingswarm::fleet::session::SessionOptions {
        client_id: "x".into(),
        host: "127.0.0.1",
        port: 1,
        protocol: thingswarm::scenario::Protocol::V311,
        keepalive: Duration::from_secs(60),
        clean_session: true,
        timeout: Duration::from_secs(1),
        tls: tls.into(),
        source: None,
        inflight: 1,
    });
    let connect = std::mem::size_of_val(&session.connect());
    let next = std::mem::size_of_val(&session.next());
    (connect, next)
}

fn plan_for(a: &Args, k: u64, devices: u64) -> Plan {
    let sources = match a.sources {
        0 => String::new(),
        s => format!(
            "[target]\nsource_addresses = [\"127.0.0.2-127.0.0.{}\"]\n",
            1 + s
        ),
    };
    let text = format!(
        r#"name = "scale-bench"
duration = "{hold}s"
{sources}
[[group]]
name = "b{k}"
devices = {devices}
client_id = "b{k}-{{index:05}}"
protocol = "{protocol}"
connect = {{ rate = "{rate}/s", max_in_flight = {in_flight}, timeout = "30s" }}
keepalive = "120s"
"#,
        hold = a.hold,
        protocol = a.protocol,
        rate = (a.rate as f64 / a.brokers as f64).max(1.0),
        in_flight = a.in_flight,
    );
    Plan::from_str(&text, Path::new("scale.toml"), &Overrides::default()).unwrap()
}

/// Several stages run one child process each (this binary, one `--sessions N`), so a stage's
/// memory is measured from a fresh process, not from what the previous stage left in malloc.
fn run_stages_in_children(a: &Args) {
    let mut failed = 0;
    for &sessions in &a.stages {
        let mut argv: Vec<String> = std::env::args().skip(1).collect();
        match argv.iter().position(|x| x == "--sessions") {
            Some(i) => argv[i + 1] = sessions.to_string(),
            None => argv.extend(["--sessions".to_string(), sessions.to_string()]),
        }
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args(&argv)
            .stderr(std::process::Stdio::inherit())
            .output()
            .expect("re-running this bench for one stage");
        assert!(
            out.status.success(),
            "stage {sessions} failed: {}",
            out.status
        );
        let text = String::from_utf8_lossy(&out.stdout);
        let line = text.lines().next().unwrap_or("{}");
        let v: serde_json::Value = serde_json::from_str(line).unwrap_or_default();
        failed += v["failed"].as_u64().unwrap_or(1);
        println!("{line}");
    }
    println!(
        "{}",
        serde_json::json!({ "bench": "scale", "stages": a.stages.len(), "failed_total": failed })
    );
}

fn main() {
    let a = args();
    if a.stages.len() > 1 {
        return run_stages_in_children(&a);
    }
    install_crypto_provider();
    let (soft, hard) = thingswarm::limits::raise_nofile();
    let budget = SessionBudget::new(soft, false);
    eprintln!("limits: {}", budget.describe(hard));
    let certs = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut lines = Vec::new();
    // One stage per process (see `run_stages_in_children`).
    for &sessions in &a.stages {
        if let Err(e) = budget.check(sessions) {
            panic!("stage of {sessions} sessions: {e}");
        }
        let shares: Vec<u64> = (0..a.brokers)
            .map(|k| sessions / a.brokers + u64::from(k < sessions % a.brokers))
            .collect();
        let plans: Vec<Plan> = shares
            .iter()
            .enumerate()
            .map(|(k, &n)| plan_for(&a, k as u64, n))
            .collect();
        let signing = Instant::now();
        let fleets: Vec<_> = plans
            .iter()
            .map(|p| {
                let g = &p.groups[0];
                Arc::new(
                    cache::ensure(certs.path(), &p.fleet_spec(g), g.devices, false)
                        .unwrap()
                        .0,
                )
            })
            .collect();
        eprintln!(
            "stage {sessions}: identities ready in {:.1} s",
            signing.elapsed().as_secs_f64()
        );
        let brokers: Vec<Mosquitto> = fleets
            .iter()
            .zip(&shares)
            .map(|(f, share)| {
                let b = Mosquitto::start(
                    &[f.root().clone()],
                    &format!("max_connections {}", share + 100),
                )
                .expect("mosquitto starts (apt-get install -y mosquitto)");
                let nofile = nofile_of(b.pid()).unwrap_or(0);
                assert!(
                    nofile >= share + 50,
                    "mosquitto pid {} may open {nofile} files, too few for {share} sessions",
                    b.pid()
                );
                b
            })
            .collect();
        let broker_rss_before: u64 = brokers.iter().map(|b| rss_of(b.pid())).sum();
        let endpoints: Vec<Endpoint> = brokers
            .iter()
            .map(|b| Endpoint::verified(b.addr(), b.server_ca_der()).unwrap())
            .collect();

        let overflows_before = listen_overflows();
        let rss_before = current_rss_bytes();
        let cpu_before = usage().cpu;
        let started = Instant::now();
        let (results, hold) = rt.block_on(async {
            let control = fleet::control::Controller::default();
            let mut receivers = Vec::new();
            let mut runs = Vec::new();
            for ((plan, fleet), endpoint) in plans.iter().zip(&fleets).zip(endpoints) {
                let (tx, rx) = watch::channel(Arc::new(Snapshot::default()));
                receivers.push(rx);
                runs.push(fleet::run(
                    plan,
                    vec![fleet.clone()],
                    endpoint,
                    CancellationToken::new(),
                    tx,
                    &control,
                ));
            }
            // When every broker's ramp is over: the ramp's CPU, then (1 s later, idle) memory.
            let sampler = tokio::spawn(async move {
                for rx in &mut receivers {
                    while rx.borrow().phase == Phase::Ramp {
                        if rx.changed().await.is_err() {
                            break;
                        }
                    }
                }
                let ramp_cpu = usage().cpu;
                let ramp_wall = started.elapsed();
                tokio::time::sleep(Duration::from_secs(1)).await;
                (ramp_cpu, ramp_wall, current_rss_bytes())
            });
            let results = futures_util::future::join_all(runs).await;
            (results, sampler.await.unwrap())
        });
        let (ramp_cpu, ramp_wall, rss_hold) = hold;
        let broker_rss_hold: u64 = brokers.iter().map(|b| rss_of(b.pid())).sum();
        let overflows = listen_overflows()
            .zip(overflows_before)
            .map(|(after, before)| after.saturating_sub(before));
        drop(brokers);

        let mut connect = results[0].connect.clone();
        for r in &results[1..] {
            connect.add(&r.connect).unwrap();
        }
        let connected: u64 = results.iter().map(|r| r.last.totals.connects).sum();
        let failed: u64 = results.iter().map(|r| r.last.totals.failed).sum();
        let errors: Vec<_> = results.iter().map(|r| &r.last.errors).collect();
        let per = connected.max(1) as f64;
        let p = Percentiles::of(&connect);
        let line = serde_json::json!({
            "bench": "scale",
            "broker": "mosquitto",
            "brokers": a.brokers,
            "protocol": a.protocol,
            "sessions": sessions,
            "source_addresses": a.sources,
            "rate_per_s": a.rate,
            "max_in_flight_per_broker": a.in_flight,
            "connected": connected,
            "failed": failed,
            "errors": errors,
            "ramp_s": ramp_wall.as_secs_f64(),
            "connects_per_s": connected as f64 / ramp_wall.as_secs_f64(),
            "client_cpu_ms_per_connect": ramp_cpu.saturating_sub(cpu_before).as_secs_f64() * 1e3 / per,
            "rss_per_session_kib": rss_hold.saturating_sub(rss_before) as f64 / 1024.0 / per,
            "rss_before_mib": rss_before as f64 / 1048576.0,
            "rss_hold_mib": rss_hold as f64 / 1048576.0,
            "broker_rss_per_session_kib": broker_rss_hold.saturating_sub(broker_rss_before) as f64 / 1024.0 / per,
            "listen_overflows": overflows,
            "connect_us": { "p50": p.p50, "p90": p.p90, "p99": p.p99, "p99_9": p.p99_9, "max": p.max },
            "sizes_bytes": {
                "device_task_future": fleet::device_task_bytes(),
                "session": std::mem::size_of::<Session>(),
                "session_connect_future": future_sizes().0,
                "session_next_future": future_sizes().1,
                "rumqttc_event_v311": std::mem::size_of::<rumqttc::Event>(),
                "rumqttc_event_v5": std::mem::size_of::<rumqttc::v5::Event>(),
            },
            "wall_s": started.elapsed().as_secs_f64(),
        });
        println!("{line}");
        lines.push(line);
    }
    let failed: u64 = lines
        .iter()
        .map(|l| l["failed"].as_u64().unwrap_or(0))
        .sum();
    println!(
        "{}",
        serde_json::json!({ "bench": "scale", "stages": lines.len(), "failed_total": failed })
    );
}
