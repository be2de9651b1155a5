//! `thingswarm proxy`: the fault-injecting proxy as a standalone process, until Ctrl-C,
//! printing what it injected and forwarded.

use std::time::Duration;

use anyhow::Context;
use tokio::time::{sleep_until, Instant};

use crate::cli::ProxyArgs;
use crate::proxy::{Delay, Proxy, ProxyConfig};

/// Runs the proxy until Ctrl-C.
pub fn run(args: ProxyArgs) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the proxy's runtime")?;
    rt.block_on(serve(args))
}

async fn serve(args: ProxyArgs) -> anyhow::Result<()> {
    let delay = Delay {
        fixed: args.delay,
        jitter: args.jitter,
    };
    let proxy = Proxy::start(ProxyConfig {
        listen: args.listen,
        upstream: args.upstream,
        up: delay,
        down: delay,
        bandwidth: args.bandwidth,
        seed: 0,
    })
    .await?;
    println!(
        "proxy {} -> {} (delay {:?} + jitter up to {:?} each way{}); Ctrl-C stops",
        proxy.addr(),
        args.upstream,
        args.delay,
        args.jitter,
        args.bandwidth
            .map(|b| format!(", {b} B/s per direction"))
            .unwrap_or_default()
    );
    let start = Instant::now();
    let far = start + Duration::from_secs(100 * 365 * 24 * 3600);
    let mut stall = args.stall_at.zip(args.stall).map(|(at, d)| (start + at, d));
    let mut reset = args.reset_at.zip(args.reset).map(|(at, f)| (start + at, f));
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    loop {
        tokio::select! {
            r = &mut ctrl_c => { r.context("waiting for Ctrl-C")?; break; }
            _ = sleep_until(stall.map_or(far, |s| s.0)), if stall.is_some() => {
                if let Some((_, d)) = stall.take() {
                    proxy.stall(d);
                    println!("{:.3}s stall {d:?}", start.elapsed().as_secs_f64());
                }
            }
            _ = sleep_until(reset.map_or(far, |r| r.0)), if reset.is_some() => {
                if let Some((_, f)) = reset.take() {
                    let n = proxy.reset(f);
                    println!("{:.3}s reset {n} connection(s) ({f})", start.elapsed().as_secs_f64());
                }
            }
        }
    }
    let s = proxy.stats();
    println!(
        "accepted {} connections, reset {}, forwarded {} B up / {} B down, discarded {} B",
        s.accepted, s.resets, s.up_bytes, s.down_bytes, s.discarded_bytes
    );
    Ok(())
}
