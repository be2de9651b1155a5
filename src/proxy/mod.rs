//! A fault-injecting TCP proxy on loopback, so tests (and users) can check thingswarm's
//! figures against a known truth: fixed or jittered delay per direction, a stall of all
//! traffic, connection resets, a bandwidth cap.
//!
//! ```text
//! device --> [listen] --reader--> timestamped queue --writer (due time, stall, bandwidth)--> upstream
//!        <--          <--writer--  timestamped queue <--reader--                          <--
//! ```
//!
//! Delay is a timestamped queue per direction: the reader stamps each chunk with its due time
//! (never earlier than the previous chunk's, so order holds under jitter) and the writer waits
//! until then. Many chunks are in flight at once, so a delay adds latency without capping
//! throughput. The proxy never parses what it carries (it is TLS); the TLS server name stays
//! the broker's, so devices verify the broker's certificate through it unchanged.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::{Rng as _, SeedableRng as _};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::time::{sleep_until, Instant};
use tokio_util::sync::CancellationToken;

use records::Records;

pub mod args;
mod records;
pub mod timeline;

/// Bytes read per chunk.
const CHUNK: usize = 16 * 1024;
/// Chunks queued per direction before the reader stops reading (TCP backpressure takes over).
const QUEUE: usize = 4096;

/// Why the proxy could not start.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// The listen address could not be bound.
    #[error("proxy: cannot listen on {addr}: {source}")]
    Listen {
        /// The address asked for.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
}

/// Delay added to every chunk in one direction: `fixed` plus a uniform `[0, jitter]`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Delay {
    /// Added to every chunk.
    pub fixed: Duration,
    /// Upper bound of a uniform random extra.
    pub jitter: Duration,
}

/// How the proxy starts; faults can also be injected later through [`Proxy`]'s methods.
#[derive(Clone, Debug)]
pub struct ProxyConfig {
    /// Where devices connect (port 0: a free one).
    pub listen: SocketAddr,
    /// The broker.
    pub upstream: SocketAddr,
    /// Device -> broker.
    pub up: Delay,
    /// Broker -> device.
    pub down: Delay,
    /// Bytes per second per direction and connection; `None`: unlimited.
    pub bandwidth: Option<u64>,
    /// Seed of jitter and of which connections a partial reset picks.
    pub seed: u64,
}

/// What the proxy has seen, for tests and the `proxy` command's summary.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProxyStats {
    /// Connections accepted.
    pub accepted: u64,
    /// Connections open now.
    pub open: u64,
    /// Connections reset by an injected fault.
    pub resets: u64,
    /// Bytes forwarded device -> broker.
    pub up_bytes: u64,
    /// Bytes forwarded broker -> device.
    pub down_bytes: u64,
    /// Bytes read but discarded by a reset (still queued in the proxy).
    pub discarded_bytes: u64,
    /// TLS application-data records device -> broker whose end a reset discarded. rumqttc
    /// sends each MQTT packet in a record of its own, so over mqtts this is the number of
    /// packets (messages) lost to resets: the truth the loss figures are checked against.
    pub discarded_up_records: u64,
}

/// One open connection, as a reset predicate sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnectionInfo {
    /// Accept order, from 1.
    pub id: u64,
    /// Bytes forwarded device -> broker so far.
    pub up_bytes: u64,
    /// Bytes forwarded broker -> device so far.
    pub down_bytes: u64,
}

#[derive(Default)]
struct ConnBytes {
    up: AtomicU64,
    down: AtomicU64,
}

#[derive(Default)]
struct Counters {
    accepted: AtomicU64,
    open: AtomicU64,
    resets: AtomicU64,
    up_bytes: AtomicU64,
    down_bytes: AtomicU64,
    discarded_bytes: AtomicU64,
    discarded_up_records: AtomicU64,
}

struct Shared {
    counters: Counters,
    /// Traffic resumes at this instant (stall).
    stall_until: watch::Sender<Option<Instant>>,
    /// Per direction (up, down).
    delay: watch::Sender<(Delay, Delay)>,
    /// Each live connection's reset token, by connection number.
    live: Mutex<Vec<(u64, CancellationToken, Arc<ConnBytes>)>>,
    /// Bytes per second each direction of each connection may carry; 0: no cap.
    bandwidth: AtomicU64,
    rng: Mutex<rand::rngs::SmallRng>,
}

/// A running proxy; stops when dropped (every connection closed).
pub struct Proxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: CancellationToken,
}

impl Proxy {
    /// Binds `config.listen` and starts forwarding to `config.upstream` on the current tokio
    /// runtime.
    pub async fn start(config: ProxyConfig) -> Result<Proxy, ProxyError> {
        let listener =
            TcpListener::bind(config.listen)
                .await
                .map_err(|source| ProxyError::Listen {
                    addr: config.listen,
                    source,
                })?;
        let addr = listener.local_addr().map_err(|source| ProxyError::Listen {
            addr: config.listen,
            source,
        })?;
        let shared = Arc::new(Shared {
            counters: Counters::default(),
            stall_until: watch::channel(None).0,
            delay: watch::channel((config.up, config.down)).0,
            live: Mutex::new(Vec::new()),
            bandwidth: AtomicU64::new(config.bandwidth.unwrap_or(0)),
            rng: Mutex::new(rand::rngs::SmallRng::seed_from_u64(config.seed)),
        });
        let stop = CancellationToken::new();
        tokio::spawn(accept_loop(
            listener,
            config.upstream,
            shared.clone(),
            stop.clone(),
        ));
        Ok(Proxy { addr, shared, stop })
    }

    /// Where devices connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Holds all traffic (both directions, every connection) for `period` from now; data read
    /// meanwhile is queued and forwarded when the stall ends.
    pub fn stall(&self, period: Duration) {
        self.shared
            .stall_until
            .send_replace(Some(Instant::now() + period));
    }

    /// Changes the delays from now on (chunks already queued keep their due times).
    pub fn set_delay(&self, up: Delay, down: Delay) {
        self.shared.delay.send_replace((up, down));
    }

    /// Caps each direction of each connection at `bytes_per_s` from now on (`None`: no cap).
    pub fn set_bandwidth(&self, bytes_per_s: Option<u64>) {
        self.shared
            .bandwidth
            .store(bytes_per_s.unwrap_or(0), Relaxed);
    }

    /// Resets (TCP RST, queued data discarded) each open connection with probability
    /// `fraction` (1.0: all of them); returns how many were reset.
    pub fn reset(&self, fraction: f64) -> u64 {
        let mut rng = self.shared.rng.lock().expect("rng lock");
        self.reset_where(|_| fraction >= 1.0 || rng.random::<f64>() < fraction)
    }

    /// Resets each open connection for which `pick` says so (e.g. only the publishers:
    /// connections that sent more than they received); returns how many.
    pub fn reset_where(&self, mut pick: impl FnMut(ConnectionInfo) -> bool) -> u64 {
        let live = self.shared.live.lock().expect("connection list lock");
        let mut n = 0;
        for (id, token, bytes) in live.iter() {
            let info = ConnectionInfo {
                id: *id,
                up_bytes: bytes.up.load(Relaxed),
                down_bytes: bytes.down.load(Relaxed),
            };
            if pick(info) && !token.is_cancelled() {
                token.cancel();
                self.shared.counters.resets.fetch_add(1, Relaxed);
                n += 1;
            }
        }
        n
    }

    /// Counters so far.
    pub fn stats(&self) -> ProxyStats {
        let c = &self.shared.counters;
        ProxyStats {
            accepted: c.accepted.load(Relaxed),
            open: c.open.load(Relaxed),
            resets: c.resets.load(Relaxed),
            up_bytes: c.up_bytes.load(Relaxed),
            down_bytes: c.down_bytes.load(Relaxed),
            discarded_bytes: c.discarded_bytes.load(Relaxed),
            discarded_up_records: c.discarded_up_records.load(Relaxed),
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn accept_loop(
    listener: TcpListener,
    upstream: SocketAddr,
    shared: Arc<Shared>,
    stop: CancellationToken,
) {
    let mut next_id = 0u64;
    loop {
        let accepted = tokio::select! {
            _ = stop.cancelled() => return,
            a = listener.accept() => a,
        };
        let Ok((client, _)) = accepted else {
            // EMFILE and the like: back off briefly rather than spin.
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        next_id += 1;
        let reset = stop.child_token();
        let bytes = Arc::new(ConnBytes::default());
        shared.live.lock().expect("connection list lock").push((
            next_id,
            reset.clone(),
            bytes.clone(),
        ));
        shared.counters.accepted.fetch_add(1, Relaxed);
        shared.counters.open.fetch_add(1, Relaxed);
        let shared = shared.clone();
        let id = next_id;
        tokio::spawn(async move {
            connection(client, upstream, &shared, &bytes, reset).await;
            shared.counters.open.fetch_sub(1, Relaxed);
            shared
                .live
                .lock()
                .expect("connection list lock")
                .retain(|(i, _, _)| *i != id);
        });
    }
}

/// Forwards one connection until either side closes or a reset is injected.
async fn connection(
    client: TcpStream,
    upstream: SocketAddr,
    shared: &Shared,
    bytes: &ConnBytes,
    reset: CancellationToken,
) {
    let Ok(server) = TcpStream::connect(upstream).await else {
        // The broker is down: the device sees its connection closed, as it would directly.
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (client_r, client_w) = client.into_split();
    let (server_r, server_w) = server.into_split();
    let (up_tx, up_rx) = mpsc::channel(QUEUE);
    let (down_tx, down_rx) = mpsc::channel(QUEUE);
    let jitter_seed = shared.rng.lock().expect("rng lock").random::<u64>();
    let done = reset.child_token();
    let pumps = async {
        tokio::join!(
            read_side(client_r, up_tx, shared, true, jitter_seed, &done),
            read_side(server_r, down_tx, shared, false, jitter_seed ^ 1, &done),
            write_side(server_w, up_rx, shared, Dir::Up(&bytes.up), &done),
            write_side(client_w, down_rx, shared, Dir::Down(&bytes.down), &done),
        )
    };
    let ((client_r, mut records), _, _, client_w) = pumps.await;
    if reset.is_cancelled() {
        // Everything the device wrote until this instant is lost to the reset: count it, then
        // close at once with RST (linger 0), so nothing arrives uncounted in between.
        if let Ok(stream) = client_r.reunite(client_w) {
            let _ = socket_linger_zero(&stream);
            drain_discarded(&stream, shared, &mut records);
            drop(stream);
        }
    }
}

/// A read, queued until it is due, with the TLS records that end in it (device -> broker).
struct Chunk {
    due: Instant,
    bytes: Vec<u8>,
    records: u64,
}

/// Reads chunks and queues them with their due times; ends on EOF, error or `done`, and
/// hands back the read half with where its stream stands between TLS records.
async fn read_side(
    mut from: tokio::net::tcp::OwnedReadHalf,
    to: mpsc::Sender<Chunk>,
    shared: &Shared,
    up: bool,
    seed: u64,
    done: &CancellationToken,
) -> (tokio::net::tcp::OwnedReadHalf, Records) {
    let mut records = Records::default();
    let mut rng = rand::rngs::SmallRng::seed_from_u64(seed);
    let mut last_due = Instant::now();
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = tokio::select! {
            _ = done.cancelled() => {
                if up {
                    // What the device wrote before the reset but the proxy had not read yet
                    // is lost to the reset too: count it.
                    drain_discarded(from.as_ref(), shared, &mut records);
                }
                return (from, records);
            }
            r = from.read(&mut buf) => match r {
                Ok(0) | Err(_) => return (from, records),
                Ok(n) => n,
            },
        };
        // One copy per read, sized to what was read: queued chunks hold no slack.
        let chunk = Chunk {
            due: Instant::now(),
            bytes: buf[..n].to_vec(),
            records: if up { records.feed(&buf[..n]) } else { 0 },
        };
        let (u, d) = *shared.delay.borrow();
        let delay = if up { u } else { d };
        let extra = delay.jitter.mul_f64(rng.random::<f64>());
        let due = (Instant::now() + delay.fixed + extra).max(last_due);
        last_due = due;
        let chunk = Chunk { due, ..chunk };
        let records_in = chunk.records;
        tokio::select! {
            _ = done.cancelled() => {
                shared.counters.discarded_bytes.fetch_add(n as u64, Relaxed);
                shared.counters.discarded_up_records.fetch_add(records_in, Relaxed);
                return (from, records);
            }
            r = to.send(chunk) => if r.is_err() { return (from, records); },
        }
    }
}

/// Writes queued chunks at their due times, honouring stalls and the bandwidth cap. On EOF
/// of the reader it shuts the write side down (FIN) and ends; on `done` it discards what is
/// queued and ends.
async fn write_side(
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut from: mpsc::Receiver<Chunk>,
    shared: &Shared,
    dir: Dir<'_>,
    done: &CancellationToken,
) -> tokio::net::tcp::OwnedWriteHalf {
    let up = matches!(dir, Dir::Up(_));
    let mut stall = shared.stall_until.subscribe();
    let mut budget_at = Instant::now();
    loop {
        let next = tokio::select! {
            _ = done.cancelled() => None,
            c = from.recv() => c,
        };
        let Some(Chunk {
            due,
            bytes: chunk,
            records,
        }) = next
        else {
            if done.is_cancelled() {
                abort(&mut to, &mut from, shared, up).await;
            } else {
                let _ = to.shutdown().await;
            }
            return to;
        };
        let mut ready = due;
        loop {
            let until = *stall.borrow_and_update();
            if let Some(u) = until.filter(|u| *u > ready) {
                ready = u;
            }
            let bps = shared.bandwidth.load(Relaxed);
            if bps > 0 {
                // A token bucket without burst: each chunk takes len/bps of the link.
                ready = ready.max(budget_at);
            }
            tokio::select! {
                _ = done.cancelled() => {
                    shared.counters.discarded_bytes.fetch_add(chunk.len() as u64, Relaxed);
                    shared.counters.discarded_up_records.fetch_add(records, Relaxed);
                    abort(&mut to, &mut from, shared, up).await;
                    return to;
                }
                _ = stall.changed() => continue,
                _ = sleep_until(ready) => break,
            }
        }
        let bps = shared.bandwidth.load(Relaxed);
        if bps > 0 {
            budget_at = ready + Duration::from_secs_f64(chunk.len() as f64 / bps as f64);
        }
        if to.write_all(&chunk).await.is_err() {
            // The peer is gone: end the whole connection.
            done.cancel();
            return to;
        }
        let n = chunk.len() as u64;
        match dir {
            Dir::Up(c) => {
                c.fetch_add(n, Relaxed);
                shared.counters.up_bytes.fetch_add(n, Relaxed);
            }
            Dir::Down(c) => {
                c.fetch_add(n, Relaxed);
                shared.counters.down_bytes.fetch_add(n, Relaxed);
            }
        }
    }
}

/// Which way a writer forwards, with the connection's byte counter.
#[derive(Clone, Copy)]
enum Dir<'a> {
    Up(&'a AtomicU64),
    Down(&'a AtomicU64),
}

/// A reset: queued data discarded; the device sees RST (linger 0 on close), the broker an
/// orderly close (FIN), so everything the proxy forwarded to the
/// broker is still processed and the discarded data is exactly what the reset lost.
async fn abort(
    to: &mut tokio::net::tcp::OwnedWriteHalf,
    from: &mut mpsc::Receiver<Chunk>,
    shared: &Shared,
    up: bool,
) {
    discard(from, shared);
    if up {
        let _ = to.shutdown().await;
    } else {
        let stream: &TcpStream = (*to).as_ref();
        let _ = socket_linger_zero(stream);
    }
}

/// Reads and counts as discarded whatever the device has written that the proxy has not read.
/// It asks the kernel directly (non-blocking recv) rather than `try_read`: tokio answers that
/// from readiness its reactor may not have polled yet, and data that had arrived would be lost
/// uncounted (seen on a loaded machine: 1 to 4 messages per run of 5 resets).
fn drain_discarded(stream: &TcpStream, shared: &Shared, records: &mut Records) {
    use std::os::fd::AsRawFd as _;
    let mut buf = [0u8; CHUNK];
    loop {
        // SAFETY: recv writes at most buf.len() bytes into buf, which outlives the call.
        let n = unsafe {
            libc::recv(
                stream.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                libc::MSG_DONTWAIT,
            )
        };
        if n <= 0 {
            break;
        }
        let ended = records.feed(&buf[..n as usize]);
        shared.counters.discarded_bytes.fetch_add(n as u64, Relaxed);
        shared
            .counters
            .discarded_up_records
            .fetch_add(ended, Relaxed);
    }
}

fn socket_linger_zero(stream: &TcpStream) -> std::io::Result<()> {
    #[allow(deprecated)]
    stream.set_linger(Some(Duration::ZERO))
}

fn discard(from: &mut mpsc::Receiver<Chunk>, shared: &Shared) {
    from.close();
    while let Ok(c) = from.try_recv() {
        let counters = &shared.counters;
        counters.discarded_up_records.fetch_add(c.records, Relaxed);
        counters
            .discarded_bytes
            .fetch_add(c.bytes.len() as u64, Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An upstream that reads everything and hands it back on a channel with its arrival time.
    async fn sink() -> (SocketAddr, mpsc::Receiver<(Instant, Vec<u8>)>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = mpsc::channel(1024);
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                match s.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => {
                        if tx.send((Instant::now(), buf[..n].to_vec())).await.is_err() {
                            return;
                        }
                    }
                }
            }
        });
        (addr, rx)
    }

    async fn proxy(upstream: SocketAddr, up: Delay, bandwidth: Option<u64>) -> Proxy {
        Proxy::start(ProxyConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            upstream,
            up,
            down: Delay::default(),
            bandwidth,
            seed: 5,
        })
        .await
        .unwrap()
    }

    /// Reads from `rx` until `total` bytes arrived (bounded: 10,000 chunks).
    async fn collect(
        rx: &mut mpsc::Receiver<(Instant, Vec<u8>)>,
        total: usize,
    ) -> (Vec<u8>, Instant) {
        let mut got = Vec::new();
        let mut last = Instant::now();
        for _ in 0..10_000 {
            if got.len() >= total {
                break;
            }
            let (at, chunk) = rx.recv().await.expect("upstream open");
            got.extend_from_slice(&chunk);
            last = at;
        }
        (got, last)
    }

    #[tokio::test(start_paused = true)]
    async fn jittered_delay_keeps_order_and_adds_at_least_the_fixed_part() {
        let (up, mut rx) = sink().await;
        let p = proxy(
            up,
            Delay {
                fixed: Duration::from_millis(20),
                jitter: Duration::from_millis(15),
            },
            None,
        )
        .await;
        let mut c = TcpStream::connect(p.addr()).await.unwrap();
        c.set_nodelay(true).unwrap();
        let sent = Instant::now();
        let mut expected = Vec::new();
        for i in 0..200u32 {
            let bytes = i.to_be_bytes();
            c.write_all(&bytes).await.unwrap();
            expected.extend_from_slice(&bytes);
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let (got, _) = collect(&mut rx, expected.len()).await;
        assert_eq!(got, expected, "order kept under jitter");
        // The first chunk cannot arrive before the fixed delay.
        assert!(p.stats().up_bytes == expected.len() as u64);
        assert!(Instant::now() - sent >= Duration::from_millis(200 + 20));
    }

    #[tokio::test(start_paused = true)]
    async fn bandwidth_cap_spreads_bytes_over_time() {
        let (up, mut rx) = sink().await;
        let p = proxy(up, Delay::default(), Some(100_000)).await;
        let mut c = TcpStream::connect(p.addr()).await.unwrap();
        let start = Instant::now();
        let data = vec![7u8; 50_000];
        c.write_all(&data).await.unwrap();
        let (got, last) = collect(&mut rx, data.len()).await;
        assert_eq!(got.len(), data.len());
        // 50 kB at 100 kB/s: the last byte leaves after ~0.5 s of (paused, virtual) time; the
        // final chunk's own share is not waited for, so at least 0.5 s minus one chunk.
        let took = last - start;
        let chunk = Duration::from_secs_f64(CHUNK as f64 / 100_000.0);
        assert!(took + chunk >= Duration::from_millis(500), "{took:?}");
        assert!(took <= Duration::from_millis(700), "{took:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_bandwidth_cap_set_while_running_applies_from_then_on() {
        let (up, mut rx) = sink().await;
        let p = proxy(up, Delay::default(), None).await;
        let mut c = TcpStream::connect(p.addr()).await.unwrap();
        let data = vec![7u8; 50_000];
        let start = Instant::now();
        c.write_all(&data).await.unwrap();
        let (_, last) = collect(&mut rx, data.len()).await;
        assert!(last - start < Duration::from_millis(50), "uncapped");
        p.set_bandwidth(Some(100_000));
        let start = Instant::now();
        c.write_all(&data).await.unwrap();
        let (_, last) = collect(&mut rx, data.len()).await;
        let chunk = Duration::from_secs_f64(CHUNK as f64 / 100_000.0);
        assert!(
            last - start + chunk >= Duration::from_millis(500),
            "capped: {:?}",
            last - start
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_stall_holds_traffic_until_it_ends_and_a_reset_discards_the_queue() {
        // TLS application-data records, as devices send them: [23, version 3.3, length, body].
        let record = |body: &[u8]| [&[23, 3, 3, 0, body.len() as u8], body].concat();
        let (up, mut rx) = sink().await;
        let p = proxy(up, Delay::default(), None).await;
        let mut c = TcpStream::connect(p.addr()).await.unwrap();
        let before = record(b"before");
        c.write_all(&before).await.unwrap();
        assert_eq!(collect(&mut rx, before.len()).await.0, before);
        let stalled_at = Instant::now();
        p.stall(Duration::from_secs(1));
        let during = record(b"during");
        c.write_all(&during).await.unwrap();
        let (got, at) = collect(&mut rx, during.len()).await;
        assert_eq!(got, during);
        assert!(
            at - stalled_at >= Duration::from_secs(1),
            "{:?}",
            at - stalled_at
        );

        // Queue something behind a long stall, then reset: it is discarded and counted.
        p.stall(Duration::from_secs(60));
        c.write_all(&record(b"lost")).await.unwrap();
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(p.reset(1.0), 1);
        let mut buf = [0u8; 8];
        let r = tokio::time::timeout(Duration::from_secs(5), c.read(&mut buf)).await;
        assert!(
            matches!(r, Ok(Err(_)) | Ok(Ok(0))),
            "the device sees its connection end: {r:?}"
        );
        let s = p.stats();
        assert_eq!(
            (s.resets, s.discarded_bytes, s.discarded_up_records),
            (1, 9, 1)
        );
    }
}
