//! A stalled broker: mosquitto is stopped (SIGSTOP) for a few seconds in the middle of a QoS 1
//! publishing run, then resumed (SIGCONT). What is queued stays capped by the per-session
//! limits (messages in flight plus the request queue), memory grows by no more than those
//! messages can hold, and when the broker resumes every message is acknowledged and every
//! device is still connected. Figures are printed as one JSON line.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use thingswarm::broker::mosquitto::Mosquitto;
use thingswarm::fleet::session::{INFLIGHT, REQUEST_CAPACITY};
use thingswarm::fleet::{self, Endpoint};
use thingswarm::identity::cache;
use thingswarm::scenario::{Overrides, Plan};
use thingswarm::stats::rusage::current_rss_bytes;
use thingswarm::stats::{Phase, Snapshot};
use thingswarm::tls::install_crypto_provider;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

const DEVICES: u64 = 50;
const SCENARIO: &str = r#"
name = "stall"
duration = "12s"
[[group]]
name = "sensors"
devices = 50
client_id = "stall-{index:02}"
keepalive = "60s"
publish = { topic = "stall/{client_id}", qos = 1, rate = "40/s", size = 256 }
"#;

/// Resumes the broker even when an assertion fails while it is stopped.
struct Stopped(u32);

impl Stopped {
    fn new(pid: u32) -> Stopped {
        // SAFETY: signalling the mosquitto child this test started.
        assert_eq!(unsafe { libc::kill(pid as libc::pid_t, libc::SIGSTOP) }, 0);
        Stopped(pid)
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        // SAFETY: as above.
        unsafe { libc::kill(self.0 as libc::pid_t, libc::SIGCONT) };
    }
}

#[test]
fn a_stalled_broker_keeps_queues_and_memory_bounded_and_the_run_resumes() {
    install_crypto_provider();
    let tmp = tempfile::tempdir().unwrap();
    let plan = Plan::from_str(SCENARIO, Path::new("stall.toml"), &Overrides::default()).unwrap();
    let (fleet, _) = cache::ensure(
        tmp.path(),
        &plan.fleet_spec(&plan.groups[0]),
        DEVICES,
        false,
    )
    .unwrap();
    let Some(broker) = Mosquitto::start_unless_missing(&[fleet.root().clone()], "").unwrap() else {
        return;
    };
    let endpoint = Endpoint::verified(broker.addr(), broker.server_ca_der()).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let (tx, mut rx) = watch::channel(Arc::new(Snapshot::default()));
    let pid = broker.pid();

    let controller = async move {
        // Steady state: traffic flowing for two seconds.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let s = rx.borrow_and_update().clone();
            if s.phase == Phase::Hold && s.totals.acked > 0 {
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "no traffic in 60 s");
            let _ = tokio::time::timeout(Duration::from_secs(1), rx.changed()).await;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        let before = rx.borrow().clone();
        let rss_steady = current_rss_bytes();
        let unacked_steady = before.totals.unacked();

        // Stall: 3 s stopped, sampled every 100 ms.
        let (mut max_unacked, mut max_rss) = (0u64, 0u64);
        {
            let _stopped = Stopped::new(pid);
            for _ in 0..30 {
                tokio::time::sleep(Duration::from_millis(100)).await;
                max_unacked = max_unacked.max(rx.borrow().totals.unacked());
                max_rss = max_rss.max(current_rss_bytes());
            }
        }
        let acked_at_resume = rx.borrow().totals.acked;
        tokio::time::sleep(Duration::from_secs(2)).await;
        let rss_after = current_rss_bytes();
        let acked_after = rx.borrow().totals.acked;
        (
            rss_steady,
            max_rss,
            rss_after,
            unacked_steady,
            max_unacked,
            acked_at_resume,
            acked_after,
        )
    };
    let (result, figures) = rt.block_on(async {
        let control = thingswarm::fleet::control::Controller::default();
        tokio::join!(
            fleet::run(
                &plan,
                vec![Arc::new(fleet)],
                endpoint,
                CancellationToken::new(),
                tx,
                &control,
            ),
            controller
        )
    });
    let (rss_steady, max_rss, rss_after, unacked_steady, max_unacked, acked_at_resume, acked_after) =
        figures;
    let t = result.last.totals;
    println!(
        "{}",
        serde_json::json!({
            "bench": "stall",
            "devices": DEVICES,
            "rate_per_device": 40,
            "stall_s": 3,
            "rss_steady_bytes": rss_steady,
            "rss_stall_max_bytes": max_rss,
            "rss_after_bytes": rss_after,
            "unacked_steady": unacked_steady,
            "unacked_stall_max": max_unacked,
            "sent": t.sent,
            "acked": t.acked,
        })
    );

    // Queues capped: never more unacknowledged than the sessions allow in flight.
    let cap = DEVICES * u64::from(INFLIGHT);
    assert!(max_unacked <= cap, "{max_unacked} unacked > cap {cap}");
    // The stall was felt: far more were waiting than in steady state.
    assert!(
        max_unacked > unacked_steady,
        "{max_unacked} vs {unacked_steady}"
    );
    // Memory: growth bounded by what the capped queues can hold (in flight plus request
    // queue per session, each message at most a few KiB with its buffers), plus allocator
    // slack; nothing grows with the stall's length.
    let queued = DEVICES * (u64::from(INFLIGHT) + REQUEST_CAPACITY as u64);
    let bound = rss_steady + queued * 4096 + 16 * 1024 * 1024;
    assert!(
        max_rss <= bound,
        "stall RSS {max_rss} > bound {bound} (steady {rss_steady})"
    );
    // The run continued: acknowledgements resumed, every device stayed connected and closed
    // cleanly, every written message was acknowledged.
    assert!(acked_after > acked_at_resume, "no acks after SIGCONT");
    assert_eq!(
        (t.connects, t.dropped, t.failed, t.closed),
        (DEVICES, 0, 0, DEVICES),
        "{:#?}",
        result.last.errors
    );
    assert_eq!(t.acked + t.refused, t.sent, "{t:?}");
    assert!(result.last.errors.is_empty(), "{:#?}", result.last.errors);
}

fn start_mosquitto(root: &rustls_pki_types::CertificateDer<'static>) -> Option<Mosquitto> {
    Mosquitto::start_unless_missing(std::slice::from_ref(root), "").unwrap()
}

/// A broker stalled for longer than the keepalive allows: each session's missing PINGRESP is
/// classified as a keepalive timeout (reconnecting is the runner's job, not this test's).
#[test]
fn a_stall_longer_than_the_keepalive_is_classified_as_keepalive_timeouts() {
    install_crypto_provider();
    let tmp = tempfile::tempdir().unwrap();
    let plan = Plan::from_str(
        r#"
name = "stall-keepalive"
duration = "30s"
[[group]]
name = "idle"
devices = 5
client_id = "ka-{index}"
keepalive = "5s"
reconnect = "none"   # the drops are the point: no reconnect attempts into the stopped broker
"#,
        Path::new("stall.toml"),
        &Overrides::default(),
    )
    .unwrap();
    let (fleet, _) =
        cache::ensure(tmp.path(), &plan.fleet_spec(&plan.groups[0]), 5, false).unwrap();
    let Some(broker) = start_mosquitto(fleet.root()) else {
        return;
    };
    let endpoint = Endpoint::verified(broker.addr(), broker.server_ca_der()).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let (tx, mut rx) = watch::channel(Arc::new(Snapshot::default()));
    let stop = CancellationToken::new();
    let pid = broker.pid();
    let controller = {
        let stop = stop.clone();
        async move {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
            while rx.borrow_and_update().totals.connected < 5 {
                assert!(tokio::time::Instant::now() < deadline, "not all connected");
                let _ = tokio::time::timeout(Duration::from_secs(1), rx.changed()).await;
            }
            let _stopped = Stopped::new(pid);
            // Ping after 5 s idle, missing PINGRESP noticed at the next one: ~10 s. Bounded.
            let deadline = tokio::time::Instant::now() + Duration::from_secs(25);
            while rx.borrow_and_update().totals.dropped < 5 {
                if tokio::time::Instant::now() >= deadline {
                    break;
                }
                let _ = tokio::time::timeout(Duration::from_secs(1), rx.changed()).await;
            }
            stop.cancel();
        }
    };
    let (result, ()) = rt.block_on(async {
        let control = thingswarm::fleet::control::Controller::default();
        tokio::join!(
            fleet::run(
                &plan,
                vec![Arc::new(fleet)],
                endpoint,
                stop.clone(),
                tx,
                &control,
            ),
            controller
        )
    });
    let t = result.last.totals;
    let errors = &result.last.errors;
    assert_eq!((t.connects, t.dropped), (5, 5), "{errors:#?}");
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert_eq!(
        errors[0].class, "disconnect: keepalive timeout",
        "{errors:#?}"
    );
    assert_eq!(errors[0].count, 5);
}

/// Devices that connect to a stalled broker (the kernel accepts, nobody answers the TLS
/// handshake) fail as connect timeouts, and the run ends on its own.
#[test]
fn connecting_to_a_stalled_broker_is_classified_as_connect_timeouts() {
    install_crypto_provider();
    let tmp = tempfile::tempdir().unwrap();
    let plan = Plan::from_str(
        r#"
name = "stall-connect"
duration = "1s"
[[group]]
name = "late"
devices = 3
client_id = "late-{index}"
connect = { timeout = "2s" }
"#,
        Path::new("stall.toml"),
        &Overrides::default(),
    )
    .unwrap();
    let (fleet, _) =
        cache::ensure(tmp.path(), &plan.fleet_spec(&plan.groups[0]), 3, false).unwrap();
    let Some(broker) = start_mosquitto(fleet.root()) else {
        return;
    };
    let endpoint = Endpoint::verified(broker.addr(), broker.server_ca_der()).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let (tx, _rx) = watch::channel(Arc::new(Snapshot::default()));
    let _stopped = Stopped::new(broker.pid());
    let result = rt.block_on(fleet::run(
        &plan,
        vec![Arc::new(fleet)],
        endpoint,
        CancellationToken::new(),
        tx,
        &Default::default(),
    ));
    let t = result.last.totals;
    let errors = &result.last.errors;
    assert_eq!((t.connects, t.failed), (0, 3), "{errors:#?}");
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert_eq!(errors[0].class, "connect timeout", "{errors:#?}");
}
