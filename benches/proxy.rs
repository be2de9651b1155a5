//! Proxy throughput on loopback, printed as JSON: bytes pushed through a plain TCP sink
//! directly, through the proxy without faults, and through the proxy with a fixed delay. The
//! delay is a timestamped queue per direction, so it should add latency without capping
//! throughput (a proxy that slept per chunk would cap 16 KiB reads at 5 ms to ~3.3 MB/s).
//!
//! `cargo bench --bench proxy -- [--megabytes N]` (default 200). Any profile works
//! (`cargo test --bench proxy` runs it unoptimised, as a smoke test and a floor).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use thingswarm::proxy::{Delay, Proxy, ProxyConfig};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

/// A sink that reads until EOF and reports how many bytes arrived.
async fn sink() -> (SocketAddr, tokio::task::JoinHandle<u64>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut buf = vec![0u8; 64 * 1024];
        let mut total = 0u64;
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return total,
                Ok(n) => total += n as u64,
            }
        }
    });
    (addr, task)
}

/// Pushes `bytes` to `to` and returns MB/s until the sink has them all.
async fn push(to: SocketAddr, sink: tokio::task::JoinHandle<u64>, bytes: u64) -> f64 {
    let mut c = TcpStream::connect(to).await.unwrap();
    let block = vec![1u8; 64 * 1024];
    let start = Instant::now();
    let mut sent = 0u64;
    while sent < bytes {
        c.write_all(&block).await.unwrap();
        sent += block.len() as u64;
    }
    c.shutdown().await.unwrap();
    drop(c);
    let got = tokio::time::timeout(Duration::from_secs(300), sink)
        .await
        .expect("bounded")
        .unwrap();
    assert_eq!(got, sent, "every byte forwarded");
    sent as f64 / 1e6 / start.elapsed().as_secs_f64()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let mb: u64 = args
        .iter()
        .position(|a| a == "--megabytes")
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let bytes = mb * 1_000_000;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let result = rt.block_on(async {
        let (addr, task) = sink().await;
        let direct = push(addr, task, bytes).await;
        let mut through = Vec::new();
        for delay_ms in [0u64, 5] {
            let (addr, task) = sink().await;
            let d = Delay {
                fixed: Duration::from_millis(delay_ms),
                jitter: Duration::ZERO,
            };
            let proxy = Proxy::start(ProxyConfig {
                listen: "127.0.0.1:0".parse().unwrap(),
                upstream: addr,
                up: d,
                down: d,
                bandwidth: None,
                seed: 0,
            })
            .await
            .unwrap();
            through.push((delay_ms, push(proxy.addr(), task, bytes).await));
        }
        (direct, through)
    });
    let (direct, through) = result;
    println!(
        "{}",
        serde_json::json!({
            "bench": "proxy",
            "megabytes": mb,
            "optimised": !cfg!(debug_assertions),
            "direct_mb_per_s": (direct * 10.0).round() / 10.0,
            "proxy_mb_per_s": through.iter().map(|(d, r)| serde_json::json!({
                "delay_ms": d, "mb_per_s": (r * 10.0).round() / 10.0
            })).collect::<Vec<_>>(),
        })
    );
}
