//! `run --prometheus` and `--pushgateway` with the real binary on the embedded broker: /metrics
//! is scraped while the fleet holds, a fake Pushgateway on loopback receives the final push,
//! and both parse as the text exposition format with values consistent with report.json.

#![cfg(feature = "embedded-broker")]

use std::collections::{BTreeMap, HashSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Parsed exposition: `name{labels}` -> value, after checking every sample's metric has a
/// TYPE line and every line has the right shape.
fn parse(text: &str) -> BTreeMap<String, f64> {
    let mut typed = HashSet::new();
    let mut samples = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut it = rest.split(' ');
            let name = it.next().unwrap();
            let kind = it.next().unwrap();
            assert!(
                ["counter", "gauge", "summary", "histogram", "untyped"].contains(&kind),
                "{line}"
            );
            assert!(typed.insert(name.to_string()), "TYPE twice: {line}");
            continue;
        }
        if line.starts_with("# HELP ") || line.is_empty() {
            continue;
        }
        assert!(!line.starts_with('#'), "unknown comment {line}");
        let (series, value) = line.rsplit_once(' ').expect("`series value`");
        let value: f64 = value.parse().unwrap_or_else(|_| panic!("value of {line}"));
        let name = series.split('{').next().unwrap();
        assert!(
            name.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "{line}"
        );
        if series.contains('{') {
            assert!(series.ends_with("\"}"), "{line}");
        }
        let base = name
            .strip_suffix("_sum")
            .or_else(|| name.strip_suffix("_count"))
            .filter(|b| typed.contains(*b))
            .unwrap_or(name);
        assert!(typed.contains(base), "no TYPE for {line}");
        assert!(
            samples.insert(series.to_string(), value).is_none(),
            "{line}"
        );
    }
    samples
}

/// Sum of a metric over its label sets.
fn total(samples: &BTreeMap<String, f64>, name: &str) -> f64 {
    samples
        .iter()
        .filter(|(k, _)| *k == name || k.starts_with(&format!("{name}{{")))
        .map(|(_, v)| v)
        .sum()
}

fn scrape(addr: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    let (head, body) = answer.split_once("\r\n\r\n").expect("HTTP answer");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.contains("text/plain; version=0.0.4"), "{head}");
    body.to_string()
}

/// A one-request-at-a-time fake Pushgateway: answers 200 and reports (method, path, body).
fn fake_pushgateway() -> (String, mpsc::Receiver<(String, String, String)>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        // Bounded: the run pushes at most a few times.
        for stream in listener.incoming().take(20) {
            let Ok(stream) = stream else { return };
            stream
                .set_read_timeout(Some(Duration::from_secs(5)))
                .unwrap();
            let mut reader = BufReader::new(stream);
            let mut request_line = String::new();
            reader.read_line(&mut request_line).unwrap();
            let mut length = 0;
            loop {
                let mut h = String::new();
                reader.read_line(&mut h).unwrap();
                if h == "\r\n" || h.is_empty() {
                    break;
                }
                if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap();
                }
            }
            let mut body = vec![0; length];
            reader.read_exact(&mut body).unwrap();
            let mut stream = reader.into_inner();
            stream
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
                .unwrap();
            let mut parts = request_line.split(' ');
            let method = parts.next().unwrap_or("").to_string();
            let path = parts.next().unwrap_or("").to_string();
            if tx
                .send((method, path, String::from_utf8(body).unwrap()))
                .is_err()
            {
                return;
            }
        }
    });
    (addr, rx)
}

#[test]
fn metrics_are_scraped_during_a_run_and_pushed_at_the_end() {
    let tmp = tempfile::tempdir().unwrap();
    let scenario = tmp.path().join("s.toml");
    std::fs::write(
        &scenario,
        r#"
name = "prom"
duration = "3s"

[[group]]
name = "watcher"
devices = 1
client_id = "w"
subscribe = [{ filter = "p/+", qos = 1 }]

[[group]]
name = "pub"
devices = 10
client_id = "p-{index:02}"
connect = { rate = "50/s", max_in_flight = 10 }
publish = { topic = "p/{client_id}", qos = 1, rate = "5/s" }
"#,
    )
    .unwrap();
    let (gateway, pushes) = fake_pushgateway();
    let out = tmp.path().join("out");
    let mut child = Command::new(env!("CARGO_BIN_EXE_thingswarm"))
        .arg("run")
        .arg(&scenario)
        .args(["--no-tui", "--prometheus", "127.0.0.1:0", "--pushgateway"])
        .arg(format!("http://{gateway}"))
        .arg("--certs-dir")
        .arg(tmp.path().join("certs"))
        .arg("--out")
        .arg(&out)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Stderr on a thread: the address line first, then everything (for failure messages).
    let (line_tx, lines) = mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line_tx.send(line).is_err() {
                return;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    let addr = loop {
        let line = lines
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .expect("the run prints the metrics address");
        if let Some(url) = line.strip_prefix("prometheus  http://") {
            break url.trim_end_matches("/metrics").to_string();
        }
    };

    // Scrape until the whole fleet is connected (bounded).
    let mut held = None;
    for _ in 0..200 {
        let samples = parse(&scrape(&addr));
        // Counters and histograms are read a moment apart in a tick: wait for both.
        if total(&samples, "thingswarm_connected_devices") == 11.0
            && samples["thingswarm_connect_latency_seconds_count"] == 11.0
        {
            held = Some(samples);
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let held = held.expect("a scrape saw all 11 devices connected");
    assert_eq!(held["thingswarm_devices_planned"], 11.0);
    assert_eq!(held["thingswarm_connects_total{group=\"pub\"}"], 10.0);
    assert_eq!(held["thingswarm_connects_total{group=\"watcher\"}"], 1.0);
    assert_eq!(held["thingswarm_connect_latency_seconds_count"], 11.0);
    let p50 = held["thingswarm_connect_latency_seconds{quantile=\"0.5\"}"];
    assert!(p50 > 0.0 && p50 < 60.0, "seconds, not microseconds: {p50}");

    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the run took longer than 60 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let log: Vec<String> = lines.try_iter().collect();
    assert!(status.success(), "{status}\n{}", log.join("\n"));

    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("report.json")).unwrap()).unwrap();
    let d = &report["devices"];
    assert_eq!(
        total(&held, "thingswarm_connects_total"),
        d["connects"].as_f64().unwrap()
    );

    // The run is shorter than the push interval: the one push is the final one.
    let (method, path, body) = pushes
        .recv_timeout(Duration::from_secs(5))
        .expect("the fake pushgateway received a push");
    assert_eq!(method, "PUT");
    assert_eq!(path, "/metrics/job/thingswarm");
    let pushed = parse(&body);
    for (metric, field) in [
        ("thingswarm_connects_total", "connects"),
        ("thingswarm_sessions_closed_total", "closed"),
        ("thingswarm_messages_sent_total", "sent"),
        ("thingswarm_messages_acked_total", "acked"),
        ("thingswarm_messages_delivered_total", "delivered"),
        (
            "thingswarm_delivered_payload_bytes_total",
            "delivered_bytes",
        ),
    ] {
        assert_eq!(
            total(&pushed, metric),
            d[field].as_f64().unwrap(),
            "{metric}"
        );
    }
    assert!(d["sent"].as_u64().unwrap() > 0);
    assert_eq!(pushed["thingswarm_run_phase{phase=\"done\"}"], 1.0);
    let e2e = &report["traffic"]["whole"]["e2e_corrected_us"];
    assert_eq!(
        pushed["thingswarm_e2e_latency_seconds_count"],
        e2e["count"].as_f64().unwrap()
    );
    assert_eq!(
        pushed["thingswarm_e2e_latency_seconds{quantile=\"0.99\"}"],
        e2e["p99"].as_f64().unwrap() / 1e6
    );
    assert!(log
        .iter()
        .any(|l| l.starts_with("pushed      final metrics")));
}

#[test]
fn a_pushgateway_url_that_is_not_http_exits_2() {
    let out = Command::new(env!("CARGO_BIN_EXE_thingswarm"))
        .args([
            "run",
            "scenarios/quickstart.toml",
            "--no-tui",
            "--pushgateway",
            "https://gw:9091",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("https://gw:9091") && stderr.contains("http://HOST:PORT"),
        "{stderr}"
    );
}

/// `--processes 2 --pushgateway`: the parent pushes the children's aggregate, and its final
/// push holds the merged report's totals.
#[test]
fn processes_push_the_aggregate_of_their_children() {
    let tmp = tempfile::tempdir().unwrap();
    let scenario = tmp.path().join("s.toml");
    std::fs::write(
        &scenario,
        r#"
name = "prom-processes"
duration = "1s"

[[group]]
name = "pub"
devices = 6
client_id = "pp-{index:02}"
publish = { topic = "pp/{client_id}", qos = 1, rate = "5/s" }
"#,
    )
    .unwrap();
    let (gateway, pushes) = fake_pushgateway();
    let out = tmp.path().join("out");
    let run = Command::new(env!("CARGO_BIN_EXE_thingswarm"))
        .arg("run")
        .arg(&scenario)
        .args(["--no-tui", "--processes", "2", "--pushgateway"])
        .arg(format!("http://{gateway}"))
        .arg("--certs-dir")
        .arg(tmp.path().join("certs"))
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{stderr}");
    assert!(stderr.contains("pushed      final metrics"), "{stderr}");
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("report.json")).unwrap()).unwrap();
    // Shorter than the push interval: the one push is the final one.
    let (method, path, body) = pushes
        .recv_timeout(Duration::from_secs(5))
        .expect("the fake pushgateway received a push");
    assert_eq!(
        (method.as_str(), path.as_str()),
        ("PUT", "/metrics/job/thingswarm")
    );
    let pushed = parse(&body);
    let d = &report["devices"];
    assert_eq!(d["connects"], 6);
    for (metric, field) in [
        ("thingswarm_connects_total", "connects"),
        ("thingswarm_messages_sent_total", "sent"),
        ("thingswarm_messages_acked_total", "acked"),
    ] {
        assert_eq!(
            total(&pushed, metric),
            d[field].as_f64().unwrap(),
            "{metric}"
        );
    }
}
