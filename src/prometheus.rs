//! Prometheus output of a run: `--prometheus ADDR` serves `/metrics` while it runs, and
//! `--pushgateway URL` pushes to a Pushgateway (every [`PUSH_EVERY`] and once at the end), for
//! jobs Prometheus cannot scrape.
//!
//! Both read the aggregator's [`Snapshot`]s (the same ones the dashboard reads), so neither
//! touches device tasks. The text exposition format 0.0.4 is written here rather than with
//! `prometheus-client`: that crate has no summary type and its histograms record
//! observations one by one, while our latencies are already HDR percentiles computed by the
//! aggregator; a custom collector would bypass most of it. Serving is one route, so it is a
//! small HTTP/1.1 responder on tokio rather than a web framework (no HTTP crate is in the
//! dependency tree); pushing is one plain-HTTP PUT likewise.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;

use crate::stats::{Counts, Percentiles, Phase, Snapshot};

/// How often `--pushgateway` pushes during a run (the final push happens regardless).
pub const PUSH_EVERY: Duration = Duration::from_secs(10);

/// Longest a scrape or push may take (slow peers cannot hold a task forever).
const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// Scrapes answered at once; further connections are closed unanswered.
const MAX_SCRAPES: usize = 16;

/// Largest request head a scrape may send.
const MAX_REQUEST: usize = 8 * 1024;

/// What went wrong talking HTTP to a Pushgateway.
#[derive(Debug, thiserror::Error)]
pub enum PushError {
    /// The URL is not of the form this client speaks.
    #[error("--pushgateway {url}: expected http://HOST:PORT[/PATH] (plain HTTP; https is not supported)")]
    BadUrl {
        /// The URL as given.
        url: String,
    },
    /// Connecting, writing or reading failed.
    #[error("pushgateway {addr}: {source}")]
    Io {
        /// `host:port`.
        addr: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The gateway did not answer in time.
    #[error("pushgateway {addr}: no answer within {IO_TIMEOUT:?}")]
    Timeout {
        /// `host:port`.
        addr: String,
    },
    /// The gateway answered with a non-2xx status.
    #[error("pushgateway {addr}: answered `{status}`")]
    Refused {
        /// `host:port`.
        addr: String,
        /// Its status line.
        status: String,
    },
}

/// A parsed `--pushgateway` URL: where to PUT `/metrics/job/thingswarm`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pushgateway {
    /// `host:port` to connect to.
    pub addr: String,
    /// Host header value.
    pub host: String,
    /// Request path (the URL's path prefix + `/metrics/job/thingswarm`).
    pub path: String,
}

impl Pushgateway {
    /// Parses `http://HOST[:PORT][/PREFIX]` (port 80 by default, as for any http URL).
    pub fn parse(url: &str) -> Result<Pushgateway, PushError> {
        let bad = || PushError::BadUrl { url: url.into() };
        let rest = url.strip_prefix("http://").ok_or_else(bad)?;
        let (authority, prefix) = match rest.find('/') {
            Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
            None => (rest, ""),
        };
        if authority.is_empty()
            || authority.contains('@')
            || prefix.contains(['?', '#', ' '])
            || authority.contains(' ')
        {
            return Err(bad());
        }
        let (host, port) = match authority.strip_prefix('[') {
            // [v6]:port
            Some(v6) => {
                let end = v6.find(']').ok_or_else(bad)?;
                match &v6[end + 1..] {
                    "" => (&v6[..end], None),
                    p => (&v6[..end], Some(p.strip_prefix(':').ok_or_else(bad)?)),
                }
            }
            None => match authority.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (authority, None),
            },
        };
        if host.is_empty() {
            return Err(bad());
        }
        if let Some(p) = port {
            p.parse::<u16>().map_err(|_| bad())?;
        }
        let has_port = port.is_some();
        let addr = if has_port {
            authority.to_string()
        } else {
            format!("{authority}:80")
        };
        Ok(Pushgateway {
            addr,
            host: authority.to_string(),
            path: format!("{prefix}/metrics/job/thingswarm"),
        })
    }

    /// PUTs `body` (text exposition), replacing this job's metrics on the gateway.
    pub async fn push(&self, body: &str) -> Result<(), PushError> {
        let io = |source| PushError::Io {
            addr: self.addr.clone(),
            source,
        };
        let exchange = async {
            let mut stream = TcpStream::connect(&self.addr).await.map_err(io)?;
            let head = format!(
                "PUT {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: thingswarm/{}\r\nContent-Type: {CONTENT_TYPE}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                self.path,
                self.host,
                env!("CARGO_PKG_VERSION"),
                body.len()
            );
            stream.write_all(head.as_bytes()).await.map_err(io)?;
            stream.write_all(body.as_bytes()).await.map_err(io)?;
            let mut answer = Vec::new();
            let mut chunk = [0u8; 1024];
            // The status line is all we need; stop reading once it is in.
            while !answer.contains(&b'\n') && answer.len() < MAX_REQUEST {
                let n = stream.read(&mut chunk).await.map_err(io)?;
                if n == 0 {
                    break;
                }
                answer.extend_from_slice(&chunk[..n]);
            }
            let status = String::from_utf8_lossy(&answer)
                .lines()
                .next()
                .unwrap_or("")
                .to_string();
            let code = status.split(' ').nth(1).unwrap_or("");
            if code.starts_with('2') && code.len() == 3 {
                Ok(())
            } else {
                Err(PushError::Refused {
                    addr: self.addr.clone(),
                    status,
                })
            }
        };
        timeout(IO_TIMEOUT, exchange)
            .await
            .map_err(|_| PushError::Timeout {
                addr: self.addr.clone(),
            })?
    }
}

/// Pushes the latest snapshot every [`PUSH_EVERY`] until `stop`; failures are retried at the
/// next interval and reported on stderr unless `quiet` (the dashboard owns the terminal; the
/// caller's final push reports after it).
pub async fn push_periodically(
    gateway: Pushgateway,
    mut rx: watch::Receiver<Arc<Snapshot>>,
    groups: Arc<[String]>,
    stop: CancellationToken,
    quiet: bool,
) {
    let mut every = tokio::time::interval(PUSH_EVERY);
    every.tick().await;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = every.tick() => {}
        }
        let body = encode(&rx.borrow_and_update(), &groups);
        if let Err(e) = gateway.push(&body).await {
            if !quiet {
                eprintln!("thingswarm: {e}");
            }
        }
    }
}

/// The last push of a run, of its final `snapshot`: a line saying where it went, or why it
/// failed (printed once the dashboard has given the terminal back).
pub async fn push_final(gateway: &Pushgateway, snapshot: &Snapshot, groups: &[String]) -> String {
    match gateway.push(&encode(snapshot, groups)).await {
        Ok(()) => format!(
            "pushed      final metrics to {}{}",
            gateway.host, gateway.path
        ),
        Err(e) => format!("thingswarm: final push failed: {e}"),
    }
}

/// The Prometheus text format's content type.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Serves `GET /metrics` from the latest snapshot until `stop`.
pub async fn serve(
    listener: TcpListener,
    rx: watch::Receiver<Arc<Snapshot>>,
    groups: Arc<[String]>,
    stop: CancellationToken,
) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_SCRAPES));
    loop {
        let stream = tokio::select! {
            _ = stop.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                // Out of descriptors and the like: back off instead of spinning.
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            continue;
        };
        let rx = rx.clone();
        let groups = groups.clone();
        tokio::spawn(async move {
            let _ = timeout(IO_TIMEOUT, answer(stream, &rx, &groups)).await;
            drop(slot);
        });
    }
}

async fn answer(
    mut stream: TcpStream,
    rx: &watch::Receiver<Arc<Snapshot>>,
    groups: &[String],
) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        if head.len() > MAX_REQUEST {
            return respond(&mut stream, "431 Request Header Fields Too Large", "").await;
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        head.extend_from_slice(&chunk[..n]);
    }
    let line = String::from_utf8_lossy(&head);
    let mut parts = line.lines().next().unwrap_or("").split(' ');
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    match (method, path) {
        ("GET" | "HEAD", "/metrics") => {
            let snapshot = rx.borrow().clone();
            let body = encode(&snapshot, groups);
            let body = if method == "HEAD" { "" } else { &body };
            respond(&mut stream, "200 OK", body).await
        }
        (_, "/metrics") => respond(&mut stream, "405 Method Not Allowed", "").await,
        _ => respond(&mut stream, "404 Not Found", "see /metrics\n").await,
    }
}

async fn respond(stream: &mut TcpStream, status: &str, body: &str) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {CONTENT_TYPE}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body.as_bytes()).await?;
    stream.shutdown().await
}

/// Binds `addr` for [`serve`] (call inside the runtime).
pub fn listener(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let std = std::net::TcpListener::bind(addr)?;
    std.set_nonblocking(true)?;
    TcpListener::from_std(std)
}

/// The text exposition of `s`; `groups` names the snapshot's groups in plan order.
pub fn encode(s: &Snapshot, groups: &[String]) -> String {
    let mut o = String::with_capacity(8 * 1024);
    let gauge = |o: &mut String, name: &str, help: &str, v: f64| {
        let _ = write!(
            o,
            "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {}\n",
            num(v)
        );
    };
    gauge(
        &mut o,
        "thingswarm_devices_planned",
        "Devices in the scenario's plan.",
        s.planned as f64,
    );
    gauge(
        &mut o,
        "thingswarm_run_elapsed_seconds",
        "Time since the run started.",
        s.elapsed.as_secs_f64(),
    );
    let _ = write!(
        o,
        "# HELP thingswarm_run_phase The run's phase (1 for the current one).\n# TYPE thingswarm_run_phase gauge\n"
    );
    for (phase, name) in [
        (Phase::Ramp, "ramp"),
        (Phase::Hold, "hold"),
        (Phase::Drain, "drain"),
        (Phase::Done, "done"),
    ] {
        let _ = writeln!(
            o,
            "thingswarm_run_phase{{phase=\"{name}\"}} {}",
            u8::from(s.phase == phase)
        );
    }

    type Field = fn(&Counts) -> u64;
    let per_group: [(&str, &str, &str, Field); 15] = [
        (
            "thingswarm_connect_attempts_total",
            "counter",
            "Connect attempts started.",
            |c| c.attempted,
        ),
        (
            "thingswarm_connects_total",
            "counter",
            "Sessions that received a successful CONNACK.",
            |c| c.connects,
        ),
        (
            "thingswarm_connect_failures_total",
            "counter",
            "Connect attempts that failed (error, refusal or timeout).",
            |c| c.failed,
        ),
        (
            "thingswarm_connects_cancelled_total",
            "counter",
            "Devices not connected because the run was stopped first.",
            |c| c.cancelled,
        ),
        (
            "thingswarm_connected_devices",
            "gauge",
            "Sessions currently up.",
            |c| c.connected,
        ),
        (
            "thingswarm_connecting_devices",
            "gauge",
            "Connect attempts in flight.",
            |c| c.connecting,
        ),
        (
            "thingswarm_sessions_dropped_total",
            "counter",
            "Established sessions lost before the run ended them.",
            |c| c.dropped,
        ),
        (
            "thingswarm_sessions_closed_total",
            "counter",
            "Sessions the run ended with DISCONNECT.",
            |c| c.closed,
        ),
        (
            "thingswarm_messages_sent_total",
            "counter",
            "PUBLISH packets written.",
            |c| c.sent,
        ),
        (
            "thingswarm_sent_payload_bytes_total",
            "counter",
            "Payload bytes of PUBLISH packets written.",
            |c| c.sent_bytes,
        ),
        (
            "thingswarm_messages_acked_total",
            "counter",
            "PUBACK/PUBCOMP received with success.",
            |c| c.acked,
        ),
        (
            "thingswarm_messages_refused_total",
            "counter",
            "Acknowledgements carrying a refusal.",
            |c| c.refused,
        ),
        (
            "thingswarm_messages_unacked",
            "gauge",
            "Messages written with neither an acknowledgement nor a refusal yet (QoS 1/2).",
            |c| c.unacked(),
        ),
        (
            "thingswarm_messages_delivered_total",
            "counter",
            "Messages received by subscribers (each copy counts).",
            |c| c.delivered,
        ),
        (
            "thingswarm_delivered_payload_bytes_total",
            "counter",
            "Payload bytes received by subscribers.",
            |c| c.delivered_bytes,
        ),
    ];
    for (name, kind, help, field) in per_group {
        let _ = write!(o, "# HELP {name} {help}\n# TYPE {name} {kind}\n");
        for (i, counts) in s.groups.iter().enumerate() {
            let group = groups.get(i).map_or("", String::as_str);
            let _ = writeln!(o, "{name}{{group=\"{}\"}} {}", label(group), field(counts));
        }
    }

    let _ = write!(
        o,
        "# HELP thingswarm_errors_total Errors by class.\n# TYPE thingswarm_errors_total counter\n"
    );
    for e in &s.errors {
        let _ = writeln!(
            o,
            "thingswarm_errors_total{{class=\"{}\"}} {}",
            label(&e.class),
            e.count
        );
    }

    summary(
        &mut o,
        "thingswarm_connect_latency_seconds",
        "TCP connect start to CONNACK, since the start",
        &s.connect_total,
    );
    let m = &s.latency_total;
    summary(
        &mut o,
        "thingswarm_ack_latency_seconds",
        "PUBLISH written to PUBACK/PUBCOMP, whole traffic window so far",
        &m.ack,
    );
    summary(
        &mut o,
        "thingswarm_e2e_latency_seconds",
        "Intended send time to received by a subscriber (coordinated-omission corrected), whole traffic window so far",
        &m.e2e_corrected,
    );
    summary(
        &mut o,
        "thingswarm_e2e_uncorrected_latency_seconds",
        "Actual send time to received by a subscriber, whole traffic window so far",
        &m.e2e_uncorrected,
    );
    o
}

/// A summary from HDR percentiles (microseconds); quantiles are NaN while empty, as usual.
/// `_sum` is count x HDR mean, exact to the histogram's 3 significant digits.
fn summary(o: &mut String, name: &str, help: &str, p: &Percentiles) {
    let _ = write!(
        o,
        "# HELP {name} {help} (HDR histogram percentiles).\n# TYPE {name} summary\n"
    );
    for (q, us) in [
        ("0.5", p.p50),
        ("0.9", p.p90),
        ("0.99", p.p99),
        ("0.999", p.p99_9),
    ] {
        let v = if p.count == 0 {
            "NaN".to_string()
        } else {
            num(us as f64 / 1e6)
        };
        let _ = writeln!(o, "{name}{{quantile=\"{q}\"}} {v}");
    }
    let _ = writeln!(o, "{name}_sum {}", num(p.mean * p.count as f64 / 1e6));
    let _ = writeln!(o, "{name}_count {}", p.count);
}

/// A sample value: integers without a fraction, otherwise Rust's shortest round-trip form.
fn num(v: f64) -> String {
    if v.is_finite() && v == v.trunc() && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

/// Escapes a label value (backslash, double quote, newline).
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::ErrorRow;

    #[test]
    fn pushgateway_urls() {
        let g = Pushgateway::parse("http://127.0.0.1:9091").unwrap();
        assert_eq!(g.addr, "127.0.0.1:9091");
        assert_eq!(g.path, "/metrics/job/thingswarm");
        let g = Pushgateway::parse("http://gw.example/prefix/").unwrap();
        assert_eq!(g.addr, "gw.example:80");
        assert_eq!(g.host, "gw.example");
        assert_eq!(g.path, "/prefix/metrics/job/thingswarm");
        let g = Pushgateway::parse("http://[::1]:9091").unwrap();
        assert_eq!(g.addr, "[::1]:9091");
        let g = Pushgateway::parse("http://[::1]").unwrap();
        assert_eq!(g.addr, "[::1]:80");
        for bad in [
            "https://gw:9091",
            "gw:9091",
            "http://",
            "http://gw:port",
            "http://u@gw:1",
        ] {
            let e = Pushgateway::parse(bad).unwrap_err().to_string();
            assert!(e.contains(bad) && e.contains("http://HOST:PORT"), "{e}");
        }
    }

    #[test]
    fn exposition_names_units_and_escaping() {
        let mut s = Snapshot {
            planned: 3,
            ..Default::default()
        };
        s.groups = vec![
            Counts {
                connects: 2,
                connected: 2,
                sent: 10,
                acked: 7,
                ..Default::default()
            },
            Counts::default(),
        ];
        s.connect_total = Percentiles {
            count: 2,
            p50: 1500,
            p90: 2000,
            p99: 2000,
            p99_9: 2000,
            max: 2000,
            mean: 1750.0,
        };
        s.errors = vec![ErrorRow {
            class: "tls: \"bad\"".into(),
            count: 1,
            example: "x".into(),
        }];
        let text = encode(&s, &["a\"b".into(), "c".into()]);
        for line in [
            "thingswarm_connects_total{group=\"a\\\"b\"} 2",
            "thingswarm_messages_sent_total{group=\"c\"} 0",
            "thingswarm_messages_unacked{group=\"a\\\"b\"} 3",
            "thingswarm_connect_latency_seconds{quantile=\"0.5\"} 0.0015",
            "thingswarm_connect_latency_seconds_sum 0.0035",
            "thingswarm_connect_latency_seconds_count 2",
            "thingswarm_ack_latency_seconds{quantile=\"0.99\"} NaN",
            "thingswarm_errors_total{class=\"tls: \\\"bad\\\"\"} 1",
            "thingswarm_run_phase{phase=\"ramp\"} 1",
            "# TYPE thingswarm_e2e_latency_seconds summary",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line}\n{text}");
        }
    }

    async fn get(addr: SocketAddr, request: &str) -> String {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(request.as_bytes()).await.unwrap();
        let mut answer = String::new();
        s.read_to_string(&mut answer).await.unwrap();
        answer
    }

    #[tokio::test]
    async fn serves_metrics_and_nothing_else() {
        let l = listener("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = l.local_addr().unwrap();
        let snapshot = Snapshot {
            planned: 7,
            ..Default::default()
        };
        let (_tx, rx) = watch::channel(Arc::new(snapshot));
        let stop = CancellationToken::new();
        let server = tokio::spawn(serve(l, rx, Arc::from(vec![]), stop.clone()));

        let ok = get(addr, "GET /metrics?x=1 HTTP/1.1\r\nHost: a\r\n\r\n").await;
        assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
        assert!(ok.contains(CONTENT_TYPE));
        assert!(ok.contains("\r\n\r\n# HELP thingswarm_devices_planned"));
        assert!(ok.contains("\nthingswarm_devices_planned 7\n"), "{ok}");
        let missing = get(addr, "GET / HTTP/1.1\r\n\r\n").await;
        assert!(missing.starts_with("HTTP/1.1 404"), "{missing}");
        let post = get(addr, "POST /metrics HTTP/1.1\r\n\r\n").await;
        assert!(post.starts_with("HTTP/1.1 405"), "{post}");
        // Oversized heads are refused; the peer may see a reset instead if bytes it sent
        // after the limit were still unread when the server closed.
        let huge = format!("GET /metrics HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(10_000));
        let mut s = TcpStream::connect(addr).await.unwrap();
        let _ = s.write_all(huge.as_bytes()).await;
        let mut answer = String::new();
        match s.read_to_string(&mut answer).await {
            Ok(_) => assert!(answer.starts_with("HTTP/1.1 431"), "{answer}"),
            Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset),
        }

        stop.cancel();
        timeout(Duration::from_secs(5), server)
            .await
            .unwrap()
            .unwrap();
    }
}
