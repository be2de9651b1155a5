//! Interrupts through the real binary: SIGTERM mid-run behaves like one Ctrl-C — publishers
//! stop, in-flight acknowledgements are awaited, devices disconnect, the report is written
//! with `interrupted: true`, and the exit code is 130.

#![cfg(feature = "embedded-broker")]

use std::io::{BufRead as _, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const SCENARIO: &str = r#"
name = "interrupt"
duration = "60s"
[[group]]
name = "dash"
devices = 1
client_id = "dash"
subscribe = [{ filter = "it/#", qos = 1 }]
[[group]]
name = "sensors"
devices = 20
client_id = "it-{index:03}"
publish = { topic = "it/{client_id}", qos = 1, rate = "20/s" }
"#;

#[test]
fn sigterm_mid_run_drains_writes_an_interrupted_report_and_exits_130() {
    let tmp = tempfile::tempdir().unwrap();
    let scenario = tmp.path().join("interrupt.toml");
    std::fs::write(&scenario, SCENARIO).unwrap();
    let out = tmp.path().join("out");
    let mut child = Command::new(env!("CARGO_BIN_EXE_thingswarm"))
        .arg("run")
        .arg(&scenario)
        .arg("--no-tui")
        .arg("--certs-dir")
        .arg(tmp.path().join("certs"))
        .arg("--out")
        .arg(&out)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();

    // Progress lines arrive once a second on stderr; wait (bounded) for the hold phase with
    // messages already sent, so the signal lands mid-traffic.
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "no traffic within 90 s: {seen:#?}");
        let Ok(line) = rx.recv_timeout(left) else {
            panic!("stderr closed before traffic: {seen:#?}")
        };
        let hold_with_traffic = line.contains("] hold") && line.contains("sent ");
        seen.push(line);
        if hold_with_traffic {
            break;
        }
    }

    // SAFETY: signalling our own child process by its pid.
    let rc = unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    assert_eq!(rc, 0);

    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() >= deadline {
            child.kill().unwrap();
            panic!("still running 30 s after SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    seen.extend(rx.try_iter());
    reader.join().unwrap();
    assert_eq!(status.code(), Some(130), "{seen:#?}");
    assert!(
        seen.iter()
            .any(|l| l.contains("interrupted: stopping publishers")),
        "{seen:#?}"
    );

    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("report.json")).unwrap()).unwrap();
    assert_eq!(report["interrupted"], true);
    let d = &report["devices"];
    let n = |k: &str| d[k].as_u64().unwrap_or_else(|| panic!("devices.{k}: {d}"));
    assert_eq!(n("connects"), 21, "{d}");
    assert_eq!(n("failed"), 0, "{d}");
    assert_eq!(n("dropped"), 0, "{d}");
    // Every session ended with a clean DISCONNECT, none left counted as connected.
    assert_eq!(n("closed"), 21, "{d}");
    assert_eq!(n("connected"), 0, "{d}");
    // Traffic happened, and the drain collected every acknowledgement of what was written.
    assert!(n("sent") > 0, "{d}");
    assert_eq!(n("acked") + n("refused"), n("sent"), "{d}");
    assert_eq!(n("refused"), 0, "{d}");
    // The subscriber saw no more copies than were sent (QoS 1 may duplicate only on a
    // reconnect, and there is none).
    assert!(n("delivered") <= n("sent"), "{d}");
    let whole = &report["traffic"]["whole"];
    assert_eq!(whole["sent"].as_u64(), Some(n("sent")), "{whole}");
}

/// With the broker stalled the drain cannot finish quickly (acknowledgements never come), so
/// a second SIGTERM must end the process at once: exit 130 well before the drain's bounds,
/// without a report.
#[test]
fn a_second_sigterm_exits_at_once_without_waiting_for_the_drain() {
    use thingswarm::broker::mosquitto::Mosquitto;
    use thingswarm::identity::cache;
    use thingswarm::scenario::{Overrides, Plan};

    let tmp = tempfile::tempdir().unwrap();
    let scenario = tmp.path().join("interrupt.toml");
    std::fs::write(&scenario, SCENARIO).unwrap();
    let certs = tmp.path().join("certs");
    // Sign the identities the binary will reuse, so mosquitto can trust their root.
    let plan = Plan::load(&scenario, &Overrides::default()).unwrap();
    let mut roots = Vec::new();
    for g in &plan.groups {
        let (fleet, _) = cache::ensure(&certs, &plan.fleet_spec(g), g.devices, false).unwrap();
        if !roots.contains(fleet.root()) {
            roots.push(fleet.root().clone());
        }
    }
    let Some(broker) = Mosquitto::start_unless_missing(&roots, "").unwrap() else {
        return;
    };
    let out = tmp.path().join("out");
    let mut child = Command::new(env!("CARGO_BIN_EXE_thingswarm"))
        .arg("run")
        .arg(&scenario)
        .arg("--no-tui")
        .arg("--certs-dir")
        .arg(&certs)
        .arg("--out")
        .arg(&out)
        .arg("--target")
        .arg(format!("mqtts://{}", broker.addr()))
        .arg("--server-ca")
        .arg(broker.server_ca())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let wait_for = |what: &str, seen: &mut Vec<String>| {
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "no {what:?} within 90 s: {seen:#?}");
            let Ok(line) = rx.recv_timeout(left) else {
                panic!("stderr closed before {what:?}: {seen:#?}")
            };
            let hit = line.contains(what) && (what != "] hold" || line.contains("sent "));
            seen.push(line);
            if hit {
                return;
            }
        }
    };
    let mut seen = Vec::new();
    wait_for("] hold", &mut seen);

    // Stall the broker, then interrupt: the drain now waits for acknowledgements that
    // cannot come.
    let pid = broker.pid() as libc::pid_t;
    // SAFETY: signalling processes this test started.
    unsafe {
        assert_eq!(libc::kill(pid, libc::SIGSTOP), 0);
        assert_eq!(libc::kill(child.id() as libc::pid_t, libc::SIGTERM), 0);
    }
    wait_for("interrupted: stopping publishers", &mut seen);
    let second = Instant::now();
    // SAFETY: as above.
    unsafe {
        assert_eq!(libc::kill(child.id() as libc::pid_t, libc::SIGTERM), 0);
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() >= deadline {
            child.kill().unwrap();
            // SAFETY: as above.
            unsafe { libc::kill(pid, libc::SIGCONT) };
            panic!("still running 30 s after the second SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let exited_after = second.elapsed();
    // SAFETY: as above.
    unsafe { libc::kill(pid, libc::SIGCONT) };
    reader.join().unwrap();
    assert_eq!(status.code(), Some(130), "{seen:#?}");
    // The drain alone would take at least its 5 s settle bound (no acks while stalled); no
    // report means the process did not wait for it.
    assert!(
        !out.join("report.json").exists(),
        "the report was written, so the drain was not cut short (exit after {exited_after:?})"
    );
}
