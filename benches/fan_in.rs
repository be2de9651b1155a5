//! Fan-in throughput against a local mosquitto (mTLS, loopback), printed as JSON.
//!
//! `cargo bench --bench fan_in -- [--publishers N] [--seconds S] [--qos Q] [--size B]`
//! (defaults: 100 publishers, 10 s, QoS 1, 100 bytes, rate "max"; one subscriber). Reports
//! delivered messages per second in the steady window, thingswarm's own CPU per 1,000
//! messages (getrusage; identities excluded) and mosquitto's (from /proc), loss, and ack /
//! end-to-end latency. Yardstick on 2 cores: mqtt-benchmark (Go) ~20 us client CPU per QoS 1
//! 100-byte message at 56-58k msg/s delivered. Goal: <= 10 us per message, with the delivered
//! rate bounded by the broker.

use std::path::Path;

use thingswarm::broker::mosquitto::Mosquitto;
use thingswarm::fleet::{self, Endpoint};
use thingswarm::scenario::{Overrides, Plan};
use thingswarm::stats::rusage::usage;
use thingswarm::stats::{Metric, Percentiles};
use thingswarm::tls::install_crypto_provider;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// CPU seconds a process has used (user + system), from /proc/PID/stat.
fn process_cpu_s(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // After the ")": state is field 0, utime 11, stime 12.
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    (ticks(11) + ticks(12)) / hz
}

fn main() {
    let (mut publishers, mut seconds, mut qos, mut size) = (100u64, 10u64, 1u8, 100u64);
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().expect("flag value");
        match arg.as_str() {
            "--publishers" => publishers = value().parse().unwrap(),
            "--seconds" => seconds = value().parse().unwrap(),
            "--qos" => qos = value().parse().unwrap(),
            "--size" => size = value().parse().unwrap(),
            _ => {}
        }
    }
    install_crypto_provider();
    let scenario = format!(
        r#"name = "fan-in-bench"
duration = "{seconds}s"
[[group]]
name = "sink"
devices = 1
client_id = "sink"
subscribe = [{{ filter = "bench/#", qos = {qos} }}]
[[group]]
name = "firehose"
devices = {publishers}
client_id = "fan-{{index:03}}"
connect = {{ rate = "500/s" }}
publish = {{ topic = "bench/{{client_id}}", qos = {qos}, rate = "max", size = {size} }}
"#
    );
    let plan = Plan::from_str(&scenario, Path::new("bench.toml"), &Overrides::default()).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let fleets: Vec<_> = fleet::identities(&plan, tmp.path())
        .unwrap()
        .into_iter()
        .map(|(f, _)| f)
        .collect();
    let broker = Mosquitto::start(&[fleets[0].root().clone()], "")
        .expect("mosquitto starts (apt-get install -y mosquitto)");
    let endpoint = Endpoint::verified(broker.addr(), broker.server_ca_der()).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let (cpu0, broker0) = (usage().cpu, process_cpu_s(broker.pid()));
    let (tx, _rx) = watch::channel(Default::default());
    let result = rt.block_on(fleet::run(
        &plan,
        fleets,
        endpoint,
        CancellationToken::new(),
        tx,
        &Default::default(),
    ));
    let (cpu, broker_cpu) = (usage().cpu - cpu0, process_cpu_s(broker.pid()) - broker0);
    let t = result.last.totals;
    let traffic = result.traffic.expect("traffic");
    let steady_s = (traffic.window.steady_end - traffic.window.steady_start).as_secs_f64();
    let messages = (t.sent + t.delivered).max(1) as f64;
    let pct = |m: Metric| {
        let p = Percentiles::of(&traffic.latency.steady[m as usize]);
        serde_json::json!({ "p50": p.p50, "p99": p.p99, "p99_9": p.p99_9, "max": p.max })
    };
    println!(
        "{}",
        serde_json::json!({
            "bench": "fan_in",
            "broker": "mosquitto",
            "publishers": publishers,
            "qos": qos,
            "size": size,
            "sent": t.sent,
            "acked": t.acked,
            "delivered": t.delivered,
            "lost": traffic.sequence.lost,
            "duplicates": traffic.sequence.duplicates,
            "steady_delivered_per_s": t.steady_delivered as f64 / steady_s,
            "steady_sent_per_s": t.steady_sent as f64 / steady_s,
            "client_cpu_s": cpu.as_secs_f64(),
            "client_cpu_us_per_message": cpu.as_secs_f64() * 1e6 / messages,
            "client_cpu_s_per_1000_delivered": cpu.as_secs_f64() * 1e3 / t.delivered.max(1) as f64,
            "broker_cpu_s": broker_cpu,
            "broker_cpu_s_per_1000_delivered": broker_cpu * 1e3 / t.delivered.max(1) as f64,
            "ack_us": pct(Metric::Ack),
            "e2e_us": pct(Metric::E2eUncorrected),
            "errors": result.last.errors,
        })
    );
}
