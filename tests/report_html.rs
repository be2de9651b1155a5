//! `report.html` from real runs of the binary on the embedded broker, opened in a real
//! headless browser: the screenshot must show every plot's area with lines of its series'
//! colours, and the page must reference nothing on the network.
//!
//! Needs chromium (Debian package `chromium`); skipped with a note when it is missing outside
//! CI, a failure under `CI=true`.

#![cfg(feature = "embedded-broker")]

use std::path::{Path, PathBuf};
use std::process::{Command as Process, Stdio};
use std::time::{Duration, Instant};

use assert_cmd::Command;
use thingswarm::report::html::{chart, COLOURS, NO_MESSAGES, PLOT_BACKGROUNDS};

fn chromium() -> Option<PathBuf> {
    let found = ["chromium", "chromium-browser"].iter().find_map(|name| {
        std::env::split_paths(&std::env::var_os("PATH")?)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "chromium is missing under CI (apt-get install chromium)"
        );
        eprintln!("skipped: chromium is not installed (apt-get install chromium)");
    }
    found
}

/// Runs `scenario` (TOML text) to completion and returns its output directory.
fn run(tmp: &Path, scenario: &str) -> PathBuf {
    let file = tmp.join("scenario.toml");
    std::fs::write(&file, scenario).unwrap();
    let out = tmp.join("out");
    Command::cargo_bin("thingswarm")
        .unwrap()
        .arg("run")
        .arg(&file)
        .arg("--no-tui")
        .arg("--certs-dir")
        .arg(tmp.join("certs"))
        .arg("--out")
        .arg(&out)
        .timeout(Duration::from_secs(120))
        .assert()
        .success();
    out
}

/// Screenshots `html` at 1280x2000 and returns (width, height, RGB pixels).
fn screenshot(browser: &Path, tmp: &Path, html: &Path) -> (usize, usize, Vec<[u8; 3]>) {
    let png_path = tmp.join("shot.png");
    let mut child = Process::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            "--window-size=1280,2000",
        ])
        .arg(format!("--user-data-dir={}", tmp.join("profile").display()))
        .arg(format!("--screenshot={}", png_path.display()))
        .arg(format!("file://{}", html.display()))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting chromium");
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "chromium exited with {status}");
            break;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("chromium took longer than 90 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let bytes = std::fs::read(&png_path).expect("chromium wrote the screenshot");
    let mut decoder = png::Decoder::new(std::io::Cursor::new(bytes));
    decoder.set_transformations(png::Transformations::EXPAND | png::Transformations::STRIP_16);
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let frame = reader.next_frame(&mut buf).unwrap();
    let channels = frame.color_type.samples();
    assert!(
        channels >= 3,
        "colour screenshot, got {:?}",
        frame.color_type
    );
    let pixels = buf[..frame.buffer_size()]
        .chunks_exact(channels)
        .map(|p| [p[0], p[1], p[2]])
        .collect();
    (frame.width as usize, frame.height as usize, pixels)
}

fn rgb(hex: &str) -> [u8; 3] {
    let v = u32::from_str_radix(hex.trim_start_matches('#'), 16).unwrap();
    [(v >> 16) as u8, (v >> 8) as u8, v as u8]
}

struct Shot {
    width: usize,
    pixels: Vec<[u8; 3]>,
}

impl Shot {
    /// Bounding box (x0, y0, x1, y1) of the pixels exactly of chart `index`'s plot fill.
    fn plot_area(&self, index: usize) -> Option<(usize, usize, usize, usize)> {
        let bg = rgb(PLOT_BACKGROUNDS[index]);
        let mut bbox: Option<(usize, usize, usize, usize)> = None;
        let mut count = 0;
        for (i, p) in self.pixels.iter().enumerate() {
            if *p == bg {
                count += 1;
                let (x, y) = (i % self.width, i / self.width);
                bbox = Some(match bbox {
                    None => (x, y, x, y),
                    Some((a, b, c, d)) => (a.min(x), b.min(y), c.max(x), d.max(y)),
                });
            }
        }
        // A plot area is ~490 x 220 px; demand most of it.
        (count > 50_000).then_some(bbox).flatten()
    }

    /// Pixels inside `area` within a small distance of `colour` (anti-aliasing tolerated).
    fn drawn(&self, area: (usize, usize, usize, usize), colour: &str) -> usize {
        let c = rgb(colour);
        let (x0, y0, x1, y1) = area;
        (y0..=y1)
            .flat_map(|y| (x0..=x1).map(move |x| (x, y)))
            .filter(|&(x, y)| {
                let p = self.pixels[y * self.width + x];
                (0..3).all(|k| p[k].abs_diff(c[k]) <= 40)
            })
            .count()
    }

    fn assert_series(&self, index: usize, colours: &[usize]) {
        let area = self
            .plot_area(index)
            .unwrap_or_else(|| panic!("plot area of chart {index} is not on screen"));
        for &c in colours {
            let n = self.drawn(area, COLOURS[c]);
            assert!(
                n >= 15,
                "chart {index}: only {n} pixels of series colour {} in {area:?}",
                COLOURS[c]
            );
        }
    }
}

fn no_network_references(html: &str) {
    let lower = html.to_ascii_lowercase();
    assert!(
        !lower.contains("http://") && !lower.contains("https://"),
        "report.html references the network"
    );
    assert!(!lower.contains("<script"), "report.html has no scripts");
}

#[test]
fn report_html_with_traffic_renders_every_plot() {
    let tmp = tempfile::tempdir().unwrap();
    let out = run(
        tmp.path(),
        r#"
name = "html-traffic"
duration = "4s"
seed = 1

[[group]]
name = "dashboard"
devices = 1
client_id = "dash"
subscribe = [{ filter = "t/+", qos = 1 }]

[[group]]
name = "sensors"
devices = 20
client_id = "s-{index:03}"
connect = { rate = "40/s", max_in_flight = 10 }
publish = { topic = "t/{client_id}", qos = 1, rate = "5/s" }
"#,
    );
    let html_path = out.join("report.html");
    let html = std::fs::read_to_string(&html_path).unwrap();
    no_network_references(&html);
    assert!(!html.contains(NO_MESSAGES));
    assert!(html.contains("html-traffic") && html.contains("percentile"));

    let Some(browser) = chromium() else { return };
    let (width, height, pixels) = screenshot(&browser, tmp.path(), &html_path);
    assert_eq!((width, height), (1280, 2000));
    let shot = Shot { width, pixels };
    shot.assert_series(chart::CONNECTED, &[0]);
    shot.assert_series(chart::CONNECTS_PER_S, &[0]);
    shot.assert_series(chart::MESSAGES_PER_S, &[0, 1, 2]);
    shot.assert_series(chart::E2E_OVER_TIME, &[0, 1, 2, 3]);
    shot.assert_series(chart::CONNECT_OVER_TIME, &[0, 1]);
    shot.assert_series(chart::ACK_OVER_TIME, &[0, 1, 2, 3]);
    shot.assert_series(chart::SPECTRUM, &[0, 1, 2, 3]);
}

#[test]
fn report_html_without_traffic_says_so() {
    let tmp = tempfile::tempdir().unwrap();
    let out = run(
        tmp.path(),
        r#"
name = "html-quiet"
duration = "1s"

[[group]]
name = "idle"
devices = 10
client_id = "idle-{index:02}"
connect = { rate = "20/s", max_in_flight = 5 }
"#,
    );
    let html_path = out.join("report.html");
    let html = std::fs::read_to_string(&html_path).unwrap();
    no_network_references(&html);
    assert!(html.contains(NO_MESSAGES), "says there were no messages");

    let Some(browser) = chromium() else { return };
    let (width, _, pixels) = screenshot(&browser, tmp.path(), &html_path);
    let shot = Shot { width, pixels };
    shot.assert_series(chart::CONNECTED, &[0]);
    shot.assert_series(chart::CONNECT_OVER_TIME, &[0]);
    shot.assert_series(chart::SPECTRUM, &[0]);
    assert!(
        shot.plot_area(chart::MESSAGES_PER_S).is_none(),
        "no message-rate plot without messages"
    );
}
