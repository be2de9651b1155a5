//! The dashboard is a pure function of a `View`: these tests render typical runs into
//! ratatui's `TestBackend` and assert on the text a person would look for (not whole-screen
//! golden files, which break on every cosmetic change).

use std::sync::Arc;
use std::time::Duration;

use ratatui::backend::TestBackend;
use ratatui::Terminal;
use thingswarm::stats::{Counts, ErrorRow, Percentiles, Phase, Snapshot};
use thingswarm::tui::{render, Header, Panel, View};

fn header() -> Header {
    Header {
        scenario: "connect-2k".into(),
        target: "mqtts://127.0.0.1:40211".into(),
        protocols: "MQTT 5".into(),
        hold: Duration::from_secs(5),
        expected_ramp: Some(Duration::from_secs(4)),
        tls: Some("TLSv1.3 TLS13_AES_128_GCM_SHA256".into()),
    }
}

fn latency(p50: u64) -> Percentiles {
    Percentiles {
        count: 1200,
        p50,
        p90: p50 * 2,
        p99: p50 * 4,
        p99_9: p50 * 8,
        max: p50 * 10,
        mean: p50 as f64 * 1.3,
    }
}

/// A view fed the snapshots of a run that connects 500 devices/s up to `until_s`.
fn view_of(last: Snapshot) -> View {
    let mut view = View::new(header());
    for tick in 1..=(last.elapsed.as_millis() / 250) as u64 {
        let connected = (tick * 125).min(last.totals.connected);
        view.update(Arc::new(Snapshot {
            elapsed: Duration::from_millis(tick * 250),
            phase: if connected < last.planned {
                Phase::Ramp
            } else {
                Phase::Hold
            },
            planned: last.planned,
            totals: Counts {
                connected,
                connects: connected,
                attempted: connected,
                ..Counts::default()
            },
            connects_per_s: if connected < last.planned { 500.0 } else { 0.0 },
            ..Snapshot::default()
        }));
    }
    view.update(Arc::new(last));
    view
}

fn ramping() -> View {
    view_of(Snapshot {
        elapsed: Duration::from_millis(2500),
        phase: Phase::Ramp,
        planned: 2000,
        totals: Counts {
            attempted: 1300,
            connecting: 100,
            connected: 1200,
            connects: 1200,
            ..Counts::default()
        },
        connects_per_s: 500.0,
        connect_interval: latency(9_000),
        connect_total: latency(12_300),
        ..Snapshot::default()
    })
}

fn steady() -> View {
    view_of(Snapshot {
        elapsed: Duration::from_millis(6000),
        phase: Phase::Hold,
        planned: 2000,
        totals: Counts {
            attempted: 2000,
            connected: 2000,
            connects: 2000,
            ..Counts::default()
        },
        connects_per_s: 0.0,
        connect_interval: Percentiles::default(),
        connect_total: latency(11_000),
        ..Snapshot::default()
    })
}

fn long(prefix: &str) -> String {
    format!(
        "{prefix}: {}",
        "the broker said something very long about it; ".repeat(6)
    )
}

fn erroring() -> View {
    view_of(Snapshot {
        elapsed: Duration::from_millis(3000),
        phase: Phase::Ramp,
        planned: 2000,
        totals: Counts {
            attempted: 1500,
            connecting: 50,
            connected: 1290,
            connects: 1300,
            failed: 157,
            dropped: 10,
            ..Counts::default()
        },
        connects_per_s: 420.0,
        connect_interval: latency(20_000),
        connect_total: latency(15_000),
        errors: vec![
            ErrorRow {
                class: "connect timeout".into(),
                count: 30,
                example: long("sensor-00042: no CONNACK within 10s"),
            },
            ErrorRow {
                class: "mqtt: not authorized".into(),
                count: 2,
                example: long("sensor-01999: CONNACK 0x87"),
            },
            ErrorRow {
                class: "tcp: refused".into(),
                count: 5,
                example: long("sensor-00077"),
            },
            ErrorRow {
                class: "tls: unknown CA".into(),
                count: 120,
                example: long("sensor-00123: received fatal alert: UnknownCA"),
            },
        ],
        ..Snapshot::default()
    })
}

/// The screen as text, one line per row.
fn screen(view: &View, width: u16, height: u16) -> String {
    let mut terminal = Terminal::new(TestBackend::new(width, height)).unwrap();
    terminal.draw(|frame| render(frame, view)).unwrap();
    let buffer = terminal.backend().buffer();
    let mut text = String::new();
    for y in 0..height {
        for x in 0..width {
            text.push_str(buffer[(x, y)].symbol());
        }
        text.push('\n');
    }
    text
}

fn assert_shows(screen: &str, wanted: &[&str]) {
    for w in wanted {
        assert!(screen.contains(w), "missing {w:?} in\n{screen}");
    }
}

#[test]
fn ramping_run_80x24() {
    let s = screen(&ramping(), 80, 24);
    assert_shows(
        &s,
        &[
            "RAMP",
            "connect-2k",
            "mqtts://127.0.0.1:40211",
            "MQTT 5",
            "elapsed 2.5s",
            "~6.5s left", // 1.5 s of ramp at the planned pace + 5 s hold
            "connected 1200/2000",
            "60.0%",
            "connecting 100",
            "failed 0",
            "connects/s 500",
            "p99.9",
            "12.3ms",  // cumulative p50
            "9.0ms",   // last tick p50
            "123.0ms", // cumulative max, in the bar view too
            "traffic: none yet",
            "errors",
            "none",
            "q stop",
        ],
    );
    // Only the chart waits for a taller terminal; the traffic line stands in for it.
    assert!(s.contains("hidden: throughput (Tab)"), "{s}");
}

#[test]
fn steady_run_80x24() {
    let s = screen(&steady(), 80, 24);
    assert_shows(
        &s,
        &[
            "HOLD",
            "elapsed 6.0s",
            "connected 2000/2000",
            "100.0%",
            "11.0ms",
            "44.0ms", // p99
            "none",
        ],
    );
    // The hold was first seen at 4.0 s (the 2000th connect): 3 s of 5 s left.
    assert!(s.contains("3.0s left"), "{s}");
}

#[test]
fn erroring_run_80x24() {
    let s = screen(&erroring(), 80, 24);
    assert_shows(
        &s,
        &[
            "errors: 157 in 4 classes",
            "tls: unknown CA",
            "120",
            "connect timeout",
            "tcp: refused",
            "mqtt: not authorized",
            "sensor-00123: received fatal alert",
            "…", // long examples are cut at the panel's edge
            "failed 157",
            "dropped 10",
        ],
    );
    // Most frequent class first.
    let first = s.find("tls: unknown CA").unwrap();
    assert!(first < s.find("connect timeout").unwrap(), "{s}");
    // The panel's right border is intact on every error row: nothing ran over it.
    for line in s.lines().filter(|l| l.contains("tls: unknown CA")) {
        assert!(line.ends_with('│'), "{line:?}");
    }
}

#[test]
fn small_terminal_40x12_hides_panels_instead_of_garbling() {
    for view in [ramping(), steady(), erroring()] {
        let s = screen(&view, 40, 12);
        assert_shows(&s, &["connected", "hidden: latency, throughput (Tab)"]);
        assert!(!s.contains("p99.9"), "{s}");
    }
    let s = screen(&erroring(), 40, 12);
    assert_shows(&s, &["failed 157", "tls: unknown CA", "120"]);

    // Tab brings the latency panel in, at the cost of the others.
    let mut view = ramping();
    view.focus = Panel::Latency;
    let s = screen(&view, 40, 12);
    assert_shows(
        &s,
        &["p99.9", "12.3ms", "hidden: connections, throughput, errors"],
    );
}

#[test]
fn help_and_status_line() {
    let mut view = ramping();
    view.help = true;
    view.status = Some("traffic at 110% of the planned rate (recorded in the report)".into());
    let s = screen(&view, 80, 24);
    assert_shows(
        &s,
        &[
            "keys",
            "exit code 130 (as Ctrl-C)",
            "a second Ctrl-C exits at once",
            "pause / resume publishing",
            "traffic at 110% of the planned rate",
        ],
    );
}

#[test]
fn final_screen_shows_the_summary() {
    let mut view = erroring();
    view.finished = Some(
        "thingswarm connect-2k — mqtts://127.0.0.1:40211 (embedded broker), 2000 devices\n  connected  1300/2000 (65.0%)  failed 157\n".into(),
    );
    let s = screen(&view, 80, 24);
    assert_shows(
        &s,
        &[
            "run finished: press any key",
            "connected  1300/2000 (65.0%)",
        ],
    );
    assert!(
        !s.contains("p99.9"),
        "the dashboard gives way to the summary\n{s}"
    );
}

#[test]
fn no_size_panics() {
    let mut views = vec![ramping(), steady(), erroring(), View::new(header())];
    let mut helped = erroring();
    helped.help = true;
    views.push(helped);
    let mut done = steady();
    done.finished = Some("summary\n".repeat(40));
    views.push(done);
    for view in &views {
        for focus in Panel::ALL {
            let mut view = view.clone();
            view.focus = focus;
            for width in [1, 2, 5, 10, 20, 39, 40, 41, 60, 79, 80, 120, 200] {
                for height in [1, 2, 3, 4, 5, 8, 11, 12, 13, 24, 50] {
                    screen(&view, width, height);
                }
            }
        }
    }
}

/// A run publishing ~1,000 msg/s for 8 s, with rates rising over the first seconds.
fn publishing() -> View {
    let mut view = View::new(header());
    for tick in 1..=32u64 {
        let mut s = Snapshot {
            elapsed: Duration::from_millis(tick * 250),
            phase: Phase::Hold,
            planned: 1001,
            totals: Counts {
                attempted: 1001,
                connected: 1001,
                connects: 1001,
                sent: tick * 250,
                delivered: tick * 250,
                ..Counts::default()
            },
            ..Snapshot::default()
        };
        let rate = (tick as f64 * 100.0).min(993.0);
        s.rates.sent_per_s = rate;
        s.rates.acked_per_s = rate - 3.0;
        s.rates.delivered_per_s = rate;
        s.rates.sent_bytes_per_s = rate * 100.0;
        s.rates.delivered_bytes_per_s = rate * 100.0;
        s.latency_interval.ack.p99 = 2_700;
        s.latency_interval.e2e_corrected.p99 = 6_300;
        view.update(Arc::new(s));
    }
    view
}

#[test]
fn throughput_chart_has_a_time_axis_and_the_current_rates() {
    let view = publishing();
    let s = screen(&view, 160, 45);
    assert_shows(
        &s,
        &[
            "throughput msg/s: sent 993 (yellow)  acked 990 (green)  delivered 993 (cyan)",
            "KiB/s out 97.0 in 97.0",
            "run time (s)",
            "8", // the axis ends at the last sample's run time
            "TLSv1.3 TLS13_AES_128_GCM_SHA256",
        ],
    );
    // The chart drew braille dots, and the one-line view is not shown beside it.
    assert!(
        s.chars().any(|c| ('\u{2801}'..='\u{28ff}').contains(&c)),
        "{s}"
    );
    assert!(!s.contains("traffic: sent"), "{s}");
    // The series are ordered by time: the first sample is at 0.25 s.
    assert_eq!(view.history.rates.front().unwrap().t, 0.25);
}

#[test]
fn traffic_line_stands_in_for_the_chart_on_80x24() {
    let s = screen(&publishing(), 80, 24);
    for needle in [
        "sent 993/s",
        "acked 990/s",
        "delivered 993/s",
        "ack p99 2.7ms",
        "hidden: throughput (Tab)",
    ] {
        assert!(s.contains(needle), "{needle}:\n{s}");
    }
}

#[test]
fn traffic_controls_show_in_the_header() {
    let mut view = publishing();
    view.control.paused = true;
    assert_shows(&screen(&view, 160, 45), &["TRAFFIC PAUSED"]);
    view.control.paused = false;
    view.control.rate_percent = 120;
    assert_shows(&screen(&view, 160, 45), &["rate 120%"]);
}

#[test]
fn distribution_view_draws_one_bar_per_power_of_two() {
    let mut snapshot = Snapshot {
        elapsed: Duration::from_millis(8000),
        phase: Phase::Hold,
        planned: 2000,
        connect_total: latency(1_000),
        ..Snapshot::default()
    };
    // 1 ms .. 4 ms: buckets 2^9 (512 us), 2^10 (1 ms), 2^11 (2 ms).
    snapshot.distribution.connect.0[9] = 10;
    snapshot.distribution.connect.0[10] = 100;
    snapshot.distribution.connect.0[11] = 40;
    let mut view = view_of(snapshot);
    view.distribution = true;
    let s = screen(&view, 160, 45);
    assert_shows(&s, &["d: bars", "512u", "1m", "2m"]);
    assert!(
        !s.contains("4m"),
        "empty buckets past the last are not drawn\n{s}"
    );
    view.distribution = false;
    let s = screen(&view, 160, 45);
    assert_shows(&s, &["d: histogram"]);
    assert!(!s.contains("512u"), "{s}");
}

#[test]
fn latency_panel_shows_the_chosen_metric() {
    let mut snapshot = Snapshot {
        elapsed: Duration::from_millis(8000),
        phase: Phase::Hold,
        planned: 2000,
        totals: Counts {
            attempted: 2000,
            connected: 2000,
            connects: 2000,
            sent: 10,
            delivered: 10,
            ..Counts::default()
        },
        connect_total: latency(11_000),
        ..Snapshot::default()
    };
    snapshot.latency_total.e2e_corrected = latency(4_200);
    let mut view = view_of(snapshot);
    view.metric = view.metric.next().next(); // connect -> ack -> e2e
    let s = screen(&view, 160, 45);
    assert!(
        s.contains("end-to-end latency, intended send -> received (1200 samples"),
        "{s}"
    );
    assert!(s.contains("4.2ms"), "cumulative e2e p50:\n{s}");
    assert!(!s.contains("TCP start -> CONNACK"), "{s}");
}
