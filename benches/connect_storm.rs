//! Connect storm against a local mosquitto (mTLS, loopback), printed as JSON.
//!
//! `cargo bench --bench connect_storm -- [--devices N] [--rate R] [--in-flight K]
//! [--protocol 3.1.1|5] [--hold SECONDS]` (defaults: 2,000 devices, 1,000/s, 100 in flight,
//! 3.1.1, 2 s). Reports connects/s, thingswarm's own CPU per connect (getrusage over the whole
//! run, and over the ramp alone; identities excluded), resident memory per connected session,
//! failures, the connect latency percentiles, and the crypto floor (the handshake's public-key
//! operations timed alone on this CPU). Yardsticks on 2 cores: rumqttc naive 0.37-0.54 ms CPU
//! per connect; mqtt-benchmark ~730 connects/s and ~80 KiB per connection. Goals (issue 10):
//! <= 0.25 ms CPU per connect, <= 24 KiB per idle session. `handshake` measures the TLS part of
//! a connect alone.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use thingswarm::broker::mosquitto::Mosquitto;
use thingswarm::fleet::{self, Endpoint};
use thingswarm::identity::cache;
use thingswarm::scenario::{Overrides, Plan};
use thingswarm::stats::rusage::{current_rss_bytes, usage};
use thingswarm::stats::Phase;
use thingswarm::tls::install_crypto_provider;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

fn main() {
    let (mut devices, mut rate, mut in_flight, mut protocol, mut hold) =
        (2000u64, 1000u64, 100u64, "3.1.1".to_string(), 2u64);
    let mut bare = false;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().expect("flag value");
        match arg.as_str() {
            "--devices" => devices = value().parse().unwrap(),
            "--rate" => rate = value().parse().unwrap(),
            "--in-flight" => in_flight = value().parse().unwrap(),
            "--protocol" => protocol = value(),
            "--hold" => hold = value().parse().unwrap(),
            "--bare" => bare = true,
            _ => {}
        }
    }
    install_crypto_provider();
    thingswarm::limits::raise_nofile();
    let scenario = format!(
        r#"name = "connect-storm-bench"
duration = "{hold}s"
[target]
protocol = "{protocol}"
[[group]]
name = "storm"
devices = {devices}
client_id = "storm-{{index:05}}"
connect = {{ rate = "{rate}/s", max_in_flight = {in_flight}, timeout = "30s" }}
keepalive = "60s"
"#
    );
    let plan = Plan::from_str(&scenario, Path::new("bench.toml"), &Overrides::default()).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let group = &plan.groups[0];
    let fleet = Arc::new(
        cache::ensure(tmp.path(), &plan.fleet_spec(group), group.devices, false)
            .unwrap()
            .0,
    );
    let floor = crypto_floor(&fleet.key(0));
    let broker = Mosquitto::start(&[fleet.root().clone()], "")
        .expect("mosquitto starts (apt-get install -y mosquitto)");
    let endpoint = Endpoint::verified(broker.addr(), broker.server_ca_der()).unwrap();

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    if bare {
        let (connected, ramp, ramp_cpu) =
            rt.block_on(bare_clients(fleet, endpoint, rate, in_flight));
        println!(
            "{}",
            serde_json::json!({
                "bench": "connect_storm",
                "clients": "bare rumqttc",
                "devices": devices,
                "rate_per_s": rate,
                "connected": connected,
                "failed": devices - connected,
                "connects_per_s": connected as f64 / ramp.as_secs_f64(),
                "ramp_cpu_ms_per_connect": ramp_cpu.as_secs_f64() * 1e3 / connected.max(1) as f64,
                "crypto_floor_ms": floor,
            })
        );
        return;
    }
    let rss_before = current_rss_bytes();
    let cpu_before = usage().cpu;
    let started = Instant::now();
    let (result, (ramp_cpu, rss_hold)) = rt.block_on(async {
        let (tx, mut rx) = watch::channel(Arc::new(thingswarm::stats::Snapshot::default()));
        let sampler = tokio::spawn(async move {
            // CPU when every device has been attempted, and resident memory shortly after (the
            // hold phase): the ramp's own cost, without the disconnects of the drain.
            while rx.changed().await.is_ok() {
                if rx.borrow().phase == Phase::Hold {
                    let ramp_cpu = usage().cpu;
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    return (ramp_cpu, current_rss_bytes());
                }
            }
            (Duration::ZERO, 0)
        });
        let result = fleet::run(
            &plan,
            vec![fleet],
            endpoint,
            CancellationToken::new(),
            tx,
            &Default::default(),
        )
        .await;
        (result, sampler.await.unwrap_or_default())
    });
    let wall = started.elapsed();
    let cpu = usage().cpu - cpu_before;
    let t = result.last.totals;
    let p = thingswarm::stats::Percentiles::of(&result.connect);
    println!(
        "{}",
        serde_json::json!({
            "bench": "connect_storm",
            "broker": "mosquitto",
            "protocol": protocol,
            "devices": devices,
            "rate_per_s": rate,
            "max_in_flight": in_flight,
            "connected": t.connects,
            "failed": t.failed,
            "errors": result.last.errors,
            "ramp_s": result.ramp.as_secs_f64(),
            "connects_per_s": t.connects as f64 / result.ramp.as_secs_f64(),
            "client_cpu_s": cpu.as_secs_f64(),
            "client_cpu_ms_per_connect": cpu.as_secs_f64() * 1e3 / t.connects.max(1) as f64,
            "ramp_cpu_ms_per_connect": ramp_cpu.saturating_sub(cpu_before).as_secs_f64() * 1e3 / t.connects.max(1) as f64,
            "rss_per_session_kib": rss_hold.saturating_sub(rss_before) as f64 / 1024.0 / t.connects.max(1) as f64,
            "rss_before_mib": rss_before as f64 / 1048576.0,
            "rss_hold_mib": rss_hold as f64 / 1048576.0,
            "connect_us": { "p50": p.p50, "p90": p.p90, "p99": p.p99, "p99_9": p.p99_9, "max": p.max },
            "wall_s": wall.as_secs_f64(),
            "crypto_floor_ms": floor,
        })
    );
}

/// `--bare`: plain rumqttc clients, for comparison with `fleet::run`. The same identities, TLS
/// configs (`device_tls`), broker, runtime and pacing (one connect per 1/rate, at most
/// `in_flight` unanswered); nothing else: no statistics, lifecycle, control or timeouts. Returns
/// the sessions connected, the ramp's wall time and the process CPU it took. 3.1.1 only.
async fn bare_clients(
    fleet: Arc<thingswarm::identity::Fleet>,
    endpoint: Endpoint,
    rate: u64,
    in_flight: u64,
) -> (u64, Duration, Duration) {
    use rumqttc::{AsyncClient, Event, MqttOptions, NetworkOptions, Packet};
    let permits = Arc::new(tokio::sync::Semaphore::new(in_flight as usize));
    let (done, mut answers) = tokio::sync::mpsc::unbounded_channel();
    let stop = CancellationToken::new();
    let endpoint = Arc::new(endpoint);
    let mut every = tokio::time::interval(Duration::from_secs_f64(1.0 / rate as f64));
    let (cpu_before, started) = (usage().cpu, Instant::now());
    for i in 0..fleet.len() {
        every.tick().await;
        let permit = permits.clone().acquire_owned().await.unwrap();
        let (fleet, endpoint, done, stop) =
            (fleet.clone(), endpoint.clone(), done.clone(), stop.clone());
        tokio::spawn(async move {
            let id = fleet.client_id(i);
            let tls = endpoint
                .trust
                .device_tls(&id, fleet.cert_chain(i), fleet.key(i).clone_key())
                .unwrap();
            let mut net = NetworkOptions::new();
            net.set_tcp_nodelay(true);
            let mut opts = MqttOptions::new(id, endpoint.host.clone(), endpoint.port);
            opts.set_transport(tls.transport(&endpoint.host, &mut net))
                .set_keep_alive(Duration::from_secs(60));
            let (_client, mut events) = AsyncClient::new(opts, 10);
            events.set_network_options(net);
            let connected = loop {
                match events.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => break true,
                    Ok(_) => {}
                    Err(_) => break false,
                }
            };
            drop(permit);
            let _ = done.send(connected);
            if connected {
                tokio::select! {
                    _ = stop.cancelled() => {}
                    _ = async { while events.poll().await.is_ok() {} } => {}
                }
            }
        });
    }
    let mut connected = 0;
    for _ in 0..fleet.len() {
        connected += u64::from(answers.recv().await.unwrap_or(false));
    }
    let (ramp, ramp_cpu) = (started.elapsed(), usage().cpu - cpu_before);
    stop.cancel();
    (connected, ramp, ramp_cpu)
}

/// The client's public-key operations of one TLS 1.3 mTLS handshake with a P-256 identity,
/// timed alone (CPU, 2,000 rounds, on this machine): X25519 key generation and agreement, the
/// CertificateVerify signature, and one P-256 verification (the server's CertificateVerify;
/// the server chain's own signature is validated once per run, see `tls::verify_cache`).
/// Hashing, HKDF and record encryption are not included. This is the floor under
/// `ramp_cpu_ms_per_connect` that no client code can go below on this CPU.
fn crypto_floor(key: &rustls::pki_types::PrivateKeyDer<'_>) -> serde_json::Value {
    use rustls::crypto::aws_lc_rs::{default_provider, kx_group, sign};
    use rustls::SignatureScheme;
    const ROUNDS: u32 = 2000;
    let time = |f: &mut dyn FnMut()| {
        let before = usage().cpu;
        for _ in 0..ROUNDS {
            f();
        }
        (usage().cpu - before).as_secs_f64() * 1e3 / f64::from(ROUNDS)
    };
    let peer = kx_group::X25519.start().unwrap().pub_key().to_vec();
    let kx = time(&mut || {
        let mine = kx_group::X25519.start().unwrap();
        std::hint::black_box(mine.complete(&peer).unwrap());
    });
    let signing = sign::any_ecdsa_type(key).unwrap();
    let signer = signing
        .choose_scheme(&[SignatureScheme::ECDSA_NISTP256_SHA256])
        .unwrap();
    let message = [7u8; 130];
    let signature = signer.sign(&message).unwrap();
    let sign_ms = time(&mut || {
        std::hint::black_box(signer.sign(&message).unwrap());
    });
    let spki = signing.public_key().unwrap();
    // The uncompressed point ends a P-256 SubjectPublicKeyInfo.
    let point = &spki.as_ref()[spki.as_ref().len() - 65..];
    let algs = default_provider().signature_verification_algorithms;
    let (_, verifiers) = algs
        .mapping
        .iter()
        .find(|(s, _)| *s == SignatureScheme::ECDSA_NISTP256_SHA256)
        .unwrap();
    let verify_ms = time(&mut || {
        verifiers[0]
            .verify_signature(point, &message, &signature)
            .unwrap();
    });
    serde_json::json!({
        "x25519_keygen_and_agree": kx,
        "ecdsa_p256_sign": sign_ms,
        "ecdsa_p256_verify": verify_ms,
        "total": kx + sign_ms + verify_ms,
    })
}
