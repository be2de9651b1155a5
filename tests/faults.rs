//! Measurement truth (issue 11): the fault-injecting proxy between devices and a real broker
//! (the embedded one; mosquitto for the restart test), and checks that what thingswarm reports
//! matches what was injected. These are correctness tests, not benchmarks: injected values are
//! large against loopback noise (~0.1-0.5 ms) and every run is bounded (a few seconds).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use thingswarm::broker::{BrokerConfig, EmbeddedBroker};
use thingswarm::fleet::{self, Endpoint, RunResult};
use thingswarm::identity::Fleet;
use thingswarm::proxy::{Delay, Proxy, ProxyConfig, ProxyStats};
use thingswarm::scenario::{Overrides, Plan};
use thingswarm::stats::{Metric, Phase, Snapshot};
use thingswarm::tls::install_crypto_provider;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// A fault, at a time measured from the start of the traffic window (phase Hold).
#[derive(Clone, Copy, Debug)]
enum Fault {
    Stall(Duration),
    /// Resets the connections that sent more than they received (the publishers).
    ResetPublishers,
}

struct Outcome {
    result: RunResult,
    proxy: ProxyStats,
    resets: u64,
}

/// The tests measure time: one at a time, so they do not add noise to each other on a
/// 2-core machine.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn setup(scenario: &str) -> (Plan, Vec<Arc<Fleet>>, tempfile::TempDir) {
    install_crypto_provider();
    let plan = Plan::from_str(scenario, Path::new("faults.toml"), &Overrides::default()).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let fleets = fleet::identities(&plan, tmp.path())
        .unwrap()
        .into_iter()
        .map(|(f, _)| f)
        .collect();
    (plan, fleets, tmp)
}

/// Runs `plan` through a proxy (delays `up`/`down`) in front of `upstream`, injecting
/// `faults` at their offsets from the start of the traffic window.
fn run_through_proxy(
    plan: &Plan,
    fleets: Vec<Arc<Fleet>>,
    upstream: std::net::SocketAddr,
    server_ca: &rustls_pki_types::CertificateDer<'static>,
    up: Delay,
    down: Delay,
    faults: Vec<(Duration, Fault)>,
) -> Outcome {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let proxy = Arc::new(
            Proxy::start(ProxyConfig {
                listen: "127.0.0.1:0".parse().unwrap(),
                upstream,
                up,
                down,
                bandwidth: None,
                seed: 1,
            })
            .await
            .unwrap(),
        );
        let endpoint = Endpoint::verified(proxy.addr(), server_ca).unwrap();
        let (tx, rx) = watch::channel(Arc::new(Snapshot::default()));
        let injector = tokio::spawn(inject(proxy.clone(), rx, faults));
        let result = fleet::run(
            plan,
            fleets,
            endpoint,
            CancellationToken::new(),
            tx,
            &Default::default(),
        )
        .await;
        let resets = injector.await.unwrap();
        Outcome {
            result,
            proxy: proxy.stats(),
            resets,
        }
    })
}

/// Waits for the traffic window, then injects each fault at its time; returns the number of
/// connections reset.
async fn inject(
    proxy: Arc<Proxy>,
    mut snapshots: watch::Receiver<Arc<Snapshot>>,
    faults: Vec<(Duration, Fault)>,
) -> u64 {
    if faults.is_empty() {
        return 0;
    }
    // Bounded: a run's ramp here takes well under 30 s.
    let hold = tokio::time::timeout(Duration::from_secs(30), async {
        while snapshots.borrow_and_update().phase != Phase::Hold {
            if snapshots.changed().await.is_err() {
                return;
            }
        }
    });
    hold.await.expect("the run reaches its traffic window");
    let start = tokio::time::Instant::now();
    let mut resets = 0;
    for (at, fault) in faults {
        tokio::time::sleep_until(start + at).await;
        match fault {
            Fault::Stall(d) => proxy.stall(d),
            Fault::ResetPublishers => resets += proxy.reset_where(|c| c.up_bytes > c.down_bytes),
        }
    }
    resets
}

fn embedded(fleets: &[Arc<Fleet>]) -> EmbeddedBroker {
    EmbeddedBroker::start(BrokerConfig {
        port: 0,
        client_roots: vec![fleets[0].root().clone()],
    })
    .unwrap()
}

/// mosquitto (mTLS, raised limits) for the tests that need a broker which processes every
/// byte it read before it acts on a closed connection; `None` (skip) only outside CI when it is
/// not installed.
fn mosquitto(
    fleets: &[Arc<Fleet>],
    extra: &str,
) -> Option<thingswarm::broker::mosquitto::Mosquitto> {
    thingswarm::broker::mosquitto::Mosquitto::start_unless_missing(
        &[fleets[0].root().clone()],
        extra,
    )
    .unwrap()
}

const NO_DELAY: Delay = Delay {
    fixed: Duration::ZERO,
    jitter: Duration::ZERO,
};

fn fixed(d: Duration) -> Delay {
    Delay {
        fixed: d,
        jitter: Duration::ZERO,
    }
}

fn p50_us(result: &RunResult, metric: Metric) -> u64 {
    let t = result.traffic.as_ref().expect("traffic");
    t.latency.steady[metric as usize].value_at_quantile(0.5)
}

#[test]
fn a_fixed_one_way_delay_moves_p50_end_to_end_latency_by_that_amount() {
    let scenario = r#"
name = "delay"
duration = "3s"
[[group]]
name = "sink"
devices = 1
client_id = "sink"
subscribe = [{ filter = "d/#", qos = 1 }]
[[group]]
name = "pub"
devices = 5
client_id = "pub-{index}"
publish = { topic = "d/{client_id}", qos = 1, rate = "20/s", size = 64 }
"#;
    let _serial = serial();
    let (plan, fleets, _tmp) = setup(scenario);
    let broker = embedded(&fleets);
    let run = |up| {
        run_through_proxy(
            &plan,
            fleets.clone(),
            broker.addr(),
            broker.server_ca_der(),
            up,
            NO_DELAY,
            vec![],
        )
    };
    let base = run(NO_DELAY);
    let delayed = run(fixed(ms(50)));
    for o in [&base, &delayed] {
        let t = o.result.last.totals;
        assert!(t.sent > 200, "5 x 20/s x 3 s sent: {}", t.sent);
        assert_eq!(t.delivered, t.sent, "{:?}", o.result.last.errors);
    }
    // Publishes go up through the delay, deliveries come down without one: e2e and ack latency
    // both gain the injected 50 ms. Tolerance: the delay is a floor per chunk, plus tokio's
    // 1 ms timer granularity; the two runs' own p50s differ by scheduling noise (loopback alone
    // is 0.1-0.5 ms; debug build on a shared 2-core machine: baseline p50s of 3-8 ms). Measured
    // (tests serialised): moved 50.7-51.8 ms; run beside other tests, a 20 ms delay once moved
    // p50 by only 18.8 ms, hence the serial lock and 50 ms. Accepted: [-3 ms, +5 ms].
    for metric in [Metric::E2eCorrected, Metric::E2eUncorrected, Metric::Ack] {
        let (a, b) = (
            p50_us(&base.result, metric),
            p50_us(&delayed.result, metric),
        );
        let moved = b as i64 - a as i64;
        eprintln!("{metric:?}: p50 {a} us -> {b} us, moved {moved} us");
        assert!(
            (47_000..=55_000).contains(&moved),
            "{metric:?}: p50 moved {moved} us for a 50 ms delay ({a} -> {b})"
        );
    }
}

#[test]
fn a_one_second_stall_shows_in_corrected_latency_and_uncorrected_under_reports_it() {
    // 200/s per device at QoS 1: rumqttc allows 20 in flight and queues 10, so after ~0.15 s
    // of stall the device cannot hand over more; messages due later wait in the device and
    // are sent after the stall: their uncorrected latency omits the wait, the corrected does not.
    let scenario = r#"
name = "stall"
duration = "4s"
[[group]]
name = "sink"
devices = 1
client_id = "sink"
subscribe = [{ filter = "s/#", qos = 1 }]
[[group]]
name = "pub"
devices = 4
client_id = "pub-{index}"
publish = { topic = "s/{client_id}", qos = 1, rate = "200/s", size = 64 }
"#;
    let _serial = serial();
    let (plan, fleets, _tmp) = setup(scenario);
    let broker = embedded(&fleets);
    let o = run_through_proxy(
        &plan,
        fleets,
        broker.addr(),
        broker.server_ca_der(),
        NO_DELAY,
        NO_DELAY,
        vec![(ms(1500), Fault::Stall(Duration::from_secs(1)))],
    );
    let t = o.result.last.totals;
    assert_eq!(t.delivered, t.sent, "{:?}", o.result.last.errors);
    let lat = &o.result.traffic.as_ref().unwrap().latency.steady;
    let q = |m: Metric, p: f64| lat[m as usize].value_at_quantile(p);
    let (c999, u999) = (
        q(Metric::E2eCorrected, 0.999),
        q(Metric::E2eUncorrected, 0.999),
    );
    let (c90, u90) = (q(Metric::E2eCorrected, 0.9), q(Metric::E2eUncorrected, 0.9));
    eprintln!("e2e corrected p90 {c90} p99.9 {c999}; uncorrected p90 {u90} p99.9 {u999} (us)");
    assert!(
        (900_000..=1_300_000).contains(&c999),
        "corrected p99.9 {c999} us for a 1 s stall"
    );
    // ~200 of ~640 steady messages per device were due during the stall: the corrected p90
    // sits well inside it; the uncorrected sees only the ~30 handed over before the device
    // blocked.
    assert!(c90 >= 400_000, "corrected p90 {c90} us");
    assert!(
        u90 < c90 / 4,
        "uncorrected p90 {u90} us vs corrected {c90} us"
    );
    let (ca, ua) = (q(Metric::AckCorrected, 0.9), q(Metric::Ack, 0.9));
    eprintln!("ack corrected p90 {ca}, uncorrected p90 {ua} (us)");
    assert!(
        ca >= 400_000 && ua < ca / 4,
        "ack: corrected {ca} uncorrected {ua}"
    );
}

fn reset_scenario(qos: u8) -> String {
    format!(
        r#"
name = "resets"
duration = "3s"
[[group]]
name = "sink"
devices = 1
client_id = "sink"
subscribe = [{{ filter = "r/#", qos = {qos} }}]
[[group]]
name = "pub"
devices = 5
client_id = "pub-{{index}}"
clean_session = false
reconnect = {{ initial = "50ms", max = "200ms" }}
publish = {{ topic = "r/{{client_id}}", qos = {qos}, rate = "20/s", size = 64 }}
"#
    )
}

#[test]
fn at_qos0_messages_lost_to_resets_match_the_reported_loss() {
    // 200 ms of up-delay keeps ~4 publishes per publisher queued in the proxy; resetting the
    // publishers' connections discards them. A publish is one TLS record, so the proxy counts
    // the publishes lost; mosquitto's log counts the ones that arrived.
    let _serial = serial();
    let (plan, fleets, _tmp) = setup(&reset_scenario(0));
    let Some(broker) = mosquitto(&fleets, "log_type all\n") else {
        return;
    };
    let o = run_through_proxy(
        &plan,
        fleets,
        broker.addr(),
        broker.server_ca_der(),
        fixed(ms(200)),
        NO_DELAY,
        vec![(ms(1500), Fault::ResetPublishers)],
    );
    let traffic = o.result.traffic.as_ref().unwrap();
    let pubs = o.result.last.groups[1];
    eprintln!(
        "resets {} discarded records {} lost {} counts {pubs:?}",
        o.resets, o.proxy.discarded_up_records, traffic.sequence.lost
    );
    assert_eq!(o.resets, 5, "every publisher reset");
    assert_eq!(pubs.disconnects, 5);
    assert_eq!(
        pubs.reconnects, 5,
        "every publisher back: {:?}",
        o.result.last.errors
    );
    assert!(o.proxy.discarded_up_records >= 5, "{:?}", o.proxy);
    // The truth, from both ends. The broker's own log says which publishes it received:
    // the reported loss must be exactly the sent messages it never got, and the sink must have
    // got every one it did. The proxy says what the resets discarded: every TLS record (one
    // per publish) queued in it or unread in its socket. It can miss a publish the device
    // wrote at the very instant of a reset (the kernel drops it with the connection): measured
    // with 6 builds loading the machine, equal in 13 of 16 runs, 1-2 short in the others.
    let received = broker
        .log()
        .lines()
        .filter(|l| l.contains("Received PUBLISH from pub-"))
        .count() as u64;
    let lost = traffic.sequence.lost;
    eprintln!("broker received {received} of {} sent", pubs.sent);
    assert_eq!(lost, pubs.sent - received, "loss vs the broker's log");
    assert_eq!(o.result.last.totals.delivered, received);
    let truth = o.proxy.discarded_up_records;
    assert!(
        truth <= lost && lost <= truth + o.resets,
        "reported loss {lost} vs {truth} publishes discarded by {} resets",
        o.resets
    );
    let loss = thingswarm::report::TrafficReport::new(traffic, &o.result.last.totals).loss;
    assert_eq!(loss.not_delivered, traffic.sequence.lost);
    assert_eq!(loss.never_sent, pubs.never_sent);
    assert!(
        loss.never_sent > 0,
        "messages due while reconnecting are never sent"
    );
    assert_eq!(traffic.sequence.duplicates, 0);
    assert_eq!(
        o.result.recovery[1].count, 5,
        "one time-to-recover per reconnect"
    );
}

#[test]
fn at_qos1_retransmits_after_reconnect_are_duplicates_not_loss() {
    // 200 ms of down-delay holds the PUBACKs in the proxy: the reset discards them, so the
    // publishers re-send messages the broker already delivered.
    let _serial = serial();
    let (plan, fleets, _tmp) = setup(&reset_scenario(1));
    let broker = embedded(&fleets);
    let o = run_through_proxy(
        &plan,
        fleets,
        broker.addr(),
        broker.server_ca_der(),
        NO_DELAY,
        fixed(ms(200)),
        vec![(ms(1500), Fault::ResetPublishers)],
    );
    let traffic = o.result.traffic.as_ref().unwrap();
    let pubs = o.result.last.groups[1];
    eprintln!("{:?} {pubs:?} {:?}", traffic.sequence, o.result.last.errors);
    assert_eq!(pubs.reconnects, 5, "every publisher back");
    assert_eq!(traffic.sequence.lost, 0, "QoS 1 loses nothing to a reset");
    assert!(pubs.retransmitted > 0, "unacknowledged messages re-sent");
    assert!(
        traffic.sequence.duplicates > 0,
        "re-sent messages arrive twice"
    );
    assert!(traffic.sequence.duplicates <= pubs.retransmitted);
    assert_eq!(
        pubs.acked, pubs.sent,
        "every message acknowledged in the end"
    );
}

#[test]
fn after_a_mosquitto_restart_every_device_reconnects_resubscribes_and_resumes() {
    use thingswarm::broker::mosquitto::Mosquitto;
    let scenario = r#"
name = "restart"
duration = "5s"
[[group]]
name = "sink"
devices = 2
client_id = "sink-{index}"
subscribe = [{ filter = "m/#", qos = 1 }]
reconnect = { initial = "100ms", max = "1s" }
[[group]]
name = "pub"
devices = 20
client_id = "pub-{index:02}"
publish = { topic = "m/{client_id}", qos = 1, rate = "10/s", size = 32 }
"#;
    let _serial = serial();
    let (plan, fleets, _tmp) = setup(scenario);
    let Some(broker) = Mosquitto::start_unless_missing(&[fleets[0].root().clone()], "").unwrap()
    else {
        return;
    };
    let endpoint = Endpoint::verified(broker.addr(), broker.server_ca_der()).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (result, delivered_when_back, broker) = rt.block_on(async {
        let (tx, mut rx) = watch::channel(Arc::new(Snapshot::default()));
        let restarter = tokio::spawn(async move {
            let hold = async {
                while rx.borrow_and_update().phase != Phase::Hold {
                    rx.changed()
                        .await
                        .expect("the run reaches its traffic window");
                }
            };
            tokio::time::timeout(Duration::from_secs(30), hold)
                .await
                .expect("the run reaches its traffic window");
            tokio::time::sleep(ms(1500)).await;
            let mut broker = broker;
            let broker = tokio::task::spawn_blocking(move || {
                broker.restart(ms(500)).expect("mosquitto restarts");
                broker
            })
            .await
            .unwrap();
            let delivered = rx.borrow().totals.delivered;
            (broker, delivered)
        });
        let result = fleet::run(
            &plan,
            fleets,
            endpoint,
            CancellationToken::new(),
            tx,
            &Default::default(),
        )
        .await;
        let (broker, delivered) = restarter.await.unwrap();
        (result, delivered, broker)
    });
    drop(broker);
    let last = &result.last;
    for (g, counts) in last.groups.iter().enumerate() {
        let devices = plan.groups[g].devices;
        assert_eq!(
            counts.disconnects, devices,
            "group {g}: every device noticed: {counts:?}"
        );
        assert_eq!(
            counts.reconnects, devices,
            "group {g}: 100% back: {:?}",
            last.errors
        );
        assert_eq!(
            counts.closed, devices,
            "group {g}: every device ended cleanly"
        );
        assert_eq!(counts.dropped, 0);
        assert!(counts.reconnect_attempts >= devices);
        assert_eq!(result.recovery[g].count, devices);
        // Down for 0.5 s plus start-up, backoff ceiling 1 s (full jitter: each wait is at most
        // the ceiling).
        assert!(
            result.recovery[g].max < 6_000_000,
            "{:?}",
            result.recovery[g]
        );
    }
    let pubs = last.groups[1];
    assert!(
        pubs.never_sent > 0,
        "messages due while down are never sent"
    );
    assert!(
        last.totals.delivered > delivered_when_back + 100,
        "subscribers re-subscribed and publishers resumed: {} delivered at restart, {} at the end",
        delivered_when_back,
        last.totals.delivered
    );
    let traffic = result.traffic.as_ref().unwrap();
    let report = thingswarm::report::TrafficReport::new(traffic, &last.totals);
    assert_eq!(report.loss.never_sent, pubs.never_sent);
    eprintln!(
        "{:?}\n{:?}\n{:?}",
        last.totals, report.loss, result.recovery
    );
}

#[cfg(feature = "embedded-broker")]
#[test]
fn a_scenario_fault_timeline_is_injected_and_marked_in_the_report() {
    let _serial = serial();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let assert = assert_cmd::Command::cargo_bin("thingswarm")
        .unwrap()
        .args(["run", "scenarios/stall.toml", "--no-tui", "--certs-dir"])
        .arg(tmp.path().join("certs"))
        .arg("--out")
        .arg(&out)
        .timeout(Duration::from_secs(120))
        .assert()
        .success();
    let stdout = String::from_utf8_lossy(&assert.get_output().stdout).into_owned();
    assert!(stdout.contains("fault      t=3.0"), "{stdout}");
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("report.json")).unwrap()).unwrap();
    let faults = report["faults"].as_array().unwrap();
    assert_eq!(faults.len(), 1, "{faults:?}");
    assert_eq!(faults[0]["fault"], "stall 1s");
    let t = faults[0]["t"].as_f64().unwrap();
    assert!((3.0..3.1).contains(&t), "{t}");
    let steady = &report["traffic"]["steady"];
    let p999 = steady["e2e_corrected_us"]["p99_9"].as_u64().unwrap();
    assert!(
        (900_000..=1_300_000).contains(&p999),
        "corrected p99.9 {p999}"
    );
    let c90 = steady["ack_corrected_us"]["p90"].as_u64().unwrap();
    let u90 = steady["ack_latency_us"]["p90"].as_u64().unwrap();
    assert!(u90 < c90, "ack: uncorrected p90 {u90} vs corrected {c90}");
    assert!(report["definitions"]["traffic.ack_corrected_us"]
        .as_str()
        .unwrap()
        .starts_with("CORRECTED"));
    assert_eq!(report["traffic"]["loss"]["never_sent"], 0);
}

#[test]
fn the_proxy_command_refuses_bad_values_with_exit_code_2() {
    for (args, needle) in [
        (
            vec!["--listen", "10.1.2.3:1884", "--upstream", "127.0.0.1:1883"],
            "not a loopback address",
        ),
        (
            vec![
                "--listen",
                "127.0.0.1:0",
                "--upstream",
                "127.0.0.1:1883",
                "--delay",
                "soon",
            ],
            "\"soon\" is not a duration",
        ),
        (
            vec![
                "--listen",
                "127.0.0.1:0",
                "--upstream",
                "127.0.0.1:1883",
                "--bandwidth",
                "1MB",
            ],
            "is not a bandwidth",
        ),
        (
            vec![
                "--listen",
                "127.0.0.1:0",
                "--upstream",
                "127.0.0.1:1883",
                "--reset",
                "0.1",
            ],
            "--reset-at",
        ),
    ] {
        let out = assert_cmd::Command::cargo_bin("thingswarm")
            .unwrap()
            .arg("proxy")
            .args(&args)
            .timeout(Duration::from_secs(20))
            .assert()
            .code(2);
        let stderr = String::from_utf8_lossy(&out.get_output().stderr).into_owned();
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
    }
}

#[test]
fn with_reconnect_none_a_reset_device_stays_dropped() {
    let _serial = serial();
    let scenario = r#"
name = "no-reconnect"
duration = "3s"
[[group]]
name = "pub"
devices = 3
client_id = "pub-{index}"
reconnect = "none"
publish = { topic = "n/{client_id}", qos = 1, rate = "20/s", size = 64 }
"#;
    let (plan, fleets, _tmp) = setup(scenario);
    let broker = embedded(&fleets);
    let o = run_through_proxy(
        &plan,
        fleets,
        broker.addr(),
        broker.server_ca_der(),
        NO_DELAY,
        NO_DELAY,
        // Late enough that all three are connected even on a loaded machine (at 500 ms, one
        // run in four under a parallel CI build reset only one).
        vec![(ms(1500), Fault::ResetPublishers)],
    );
    let c = o.result.last.groups[0];
    assert_eq!(o.resets, 3);
    assert_eq!((c.disconnects, c.dropped, c.closed), (3, 3, 0), "{c:?}");
    assert_eq!((c.reconnect_attempts, c.reconnects, c.connected), (0, 0, 0));
    assert_eq!(o.result.recovery[0].count, 0);
}
