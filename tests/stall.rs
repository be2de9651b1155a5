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
    let broker = match Mosquitto::start(&[fleet.root().clone()], "") {
        Ok(m) => m,
        Err(e)
            if std::env::var("CI").as_deref() != Ok("true")
                && e.to_string().contains("apt-get install") =>
        {
            eprintln!("skipping: {e}");
            return;
        }
        Err(e) => panic!("{e}"),
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
        tokio::join!(
            fleet::run(
                &plan,
                vec![Arc::new(fleet)],
                endpoint,
                CancellationToken::new(),
                tx
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
