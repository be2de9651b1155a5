//! Device traffic against mosquitto started by each test (mTLS, loopback): exactly-once
//! delivery and a zero loss counter with raised limits; with tight queue limits (mosquitto
//! drops what a slow subscriber cannot take) the loss counter equals sent - delivered exactly.

use std::path::Path;

use thingswarm::broker::mosquitto::Mosquitto;
use thingswarm::fleet::control::Controller;
use thingswarm::fleet::{self, Endpoint, RunResult};
use thingswarm::scenario::{Overrides, Plan};
use thingswarm::tls::install_crypto_provider;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

fn run_against_mosquitto(scenario: &str, extra_config: &str) -> Option<(Plan, RunResult)> {
    run_controlled(scenario, extra_config, &Controller::default())
}

fn run_controlled(
    scenario: &str,
    extra_config: &str,
    control: &Controller,
) -> Option<(Plan, RunResult)> {
    install_crypto_provider();
    let plan = Plan::from_str(scenario, Path::new("traffic.toml"), &Overrides::default()).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let fleets: Vec<_> = fleet::identities(&plan, tmp.path())
        .unwrap()
        .into_iter()
        .map(|(f, _)| f)
        .collect();
    let broker =
        Mosquitto::start_unless_missing(&[fleets[0].root().clone()], extra_config).unwrap()?;
    let endpoint = Endpoint::verified(broker.addr(), broker.server_ca_der()).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let (tx, _rx) = watch::channel(Default::default());
    let result = rt.block_on(fleet::run(
        &plan,
        fleets,
        endpoint,
        CancellationToken::new(),
        tx,
        control,
    ));
    Some((plan, result))
}

#[test]
fn every_qos1_message_is_delivered_exactly_once_with_raised_limits() {
    let scenario = r#"
name = "exactly-once"
duration = "3s"
[[group]]
name = "sink"
devices = 1
client_id = "sink"
subscribe = [{ filter = "t/#", qos = 1 }]
[[group]]
name = "pub"
devices = 20
client_id = "pub-{index:02}"
publish = { topic = "t/{client_id}", qos = 1, rate = "100/s", size = 64 }
"#;
    let Some((_, result)) = run_against_mosquitto(scenario, "") else {
        return;
    };
    let t = result.last.totals;
    let traffic = result.traffic.expect("the scenario has traffic");
    assert!(t.sent > 4000, "about 20 x 100/s x 3 s sent: {}", t.sent);
    assert_eq!(t.acked, t.sent, "every QoS 1 message acknowledged");
    assert_eq!(t.delivered, t.sent, "every message delivered once");
    assert_eq!(traffic.sequence.unique, t.sent);
    assert_eq!((traffic.sequence.lost, traffic.sequence.duplicates), (0, 0));
    let latency = &traffic.latency.whole;
    assert_eq!(latency[0].len(), t.sent, "one ack latency per message");
    assert_eq!(latency[1].len(), t.sent, "one e2e latency per delivery");
    assert!(result.last.errors.is_empty(), "{:?}", result.last.errors);
}

#[test]
fn with_tight_broker_queues_loss_equals_sent_minus_delivered() {
    // A firehose into one subscriber while mosquitto may queue only 10 messages for it: the
    // broker acknowledges publishes and silently drops what the subscriber cannot take.
    let scenario = r#"
name = "lossy"
duration = "2s"
[[group]]
name = "sink"
devices = 1
client_id = "sink"
subscribe = [{ filter = "t/#", qos = 1 }]
[[group]]
name = "pub"
devices = 20
client_id = "pub-{index:02}"
publish = { topic = "t/{client_id}", qos = 1, rate = "max", size = 64 }
"#;
    let tight = "max_inflight_messages 5\nmax_queued_messages 10";
    let Some((_, result)) = run_against_mosquitto(scenario, tight) else {
        return;
    };
    let t = result.last.totals;
    let traffic = result.traffic.expect("the scenario has traffic");
    assert!(
        t.delivered < t.sent,
        "the broker dropped some: sent {} delivered {}",
        t.sent,
        t.delivered
    );
    assert_eq!(traffic.sequence.lost, t.sent - t.delivered);
    assert_eq!(traffic.sequence.duplicates, 0);
}

#[test]
fn qos2_messages_complete_and_arrive_exactly_once() {
    let scenario = r#"
name = "qos2"
duration = "2s"
[target]
protocol = "5"
[[group]]
name = "sink"
devices = 1
client_id = "sink"
subscribe = [{ filter = "q2/#", qos = 2 }]
[[group]]
name = "pub"
devices = 10
client_id = "pub-{index:02}"
publish = { topic = "q2/{client_id}", qos = 2, rate = "50/s", payload = { n = "counter()", v = "uniform(0, 1)" } }
"#;
    let Some((_, result)) = run_against_mosquitto(scenario, "") else {
        return;
    };
    let t = result.last.totals;
    let traffic = result.traffic.expect("the scenario has traffic");
    assert!(t.sent > 700, "about 10 x 50/s x 2 s sent: {}", t.sent);
    assert_eq!(t.acked, t.sent, "every QoS 2 message completed (PUBCOMP)");
    assert_eq!(t.delivered, t.sent);
    assert_eq!((traffic.sequence.lost, traffic.sequence.duplicates), (0, 0));
}

#[test]
fn pause_and_rate_steps_change_the_traffic_and_are_logged() {
    let scenario = r#"
name = "controlled"
duration = "4s"
[[group]]
name = "sink"
devices = 1
client_id = "sink"
subscribe = [{ filter = "t/#", qos = 1 }]
[[group]]
name = "pub"
devices = 10
client_id = "pub-{index:02}"
publish = { topic = "t/{client_id}", qos = 1, rate = "50/s", size = 64 }
"#;
    let control = std::sync::Arc::new(Controller::default());
    for _ in 0..5 {
        control.step(false);
    }
    assert_eq!(control.current().rate_percent, 50);
    // A key press in the middle of the run: pause for 1.5 s, then resume (bounded sleeps).
    let keys = {
        let control = control.clone();
        std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(1500));
            control.toggle_pause();
            std::thread::sleep(std::time::Duration::from_millis(1500));
            control.toggle_pause();
        })
    };
    let Some((_, result)) = run_controlled(scenario, "", &control) else {
        return;
    };
    keys.join().unwrap();
    let t = result.last.totals;
    let traffic = result.traffic.expect("the scenario has traffic");
    // Planned at 100% for 4 s: 10 x 50/s x 4 s = 2,000. At 50% with ~1.5 s paused: ~625.
    // The bounds are wide (ramp and thread timing vary); both ends would be far off without
    // the controls.
    assert!((300..1100).contains(&t.sent), "sent {}", t.sent);
    // A pause is not loss: nothing is owed for it, and what was sent arrives.
    assert_eq!(t.delivered, t.sent);
    assert_eq!(traffic.sequence.lost, 0);
    use thingswarm::fleet::control::ControlAction::*;
    let actions: Vec<_> = result.events.iter().map(|e| e.action).collect();
    assert_eq!(actions, [Rate, Rate, Rate, Rate, Rate, Pause, Resume]);
    assert!(result.events[5].t < result.events[6].t);
    assert_eq!(result.events[6].rate_percent, 50);
}
