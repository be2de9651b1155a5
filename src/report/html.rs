//! `report.html`: the [`Report`] as one self-contained page for people (nightly jobs attach
//! it; nobody watched the run). Inline CSS and inline SVG generated here: no scripts, no
//! fonts or styles fetched, so it opens the same from a CI artifact store, a mail or offline.
//!
//! Plots: connected and connects/s over time, msg/s over time, latency percentiles over time
//! (from the timeline's per-second intervals), and the latency distribution as a percentile
//! spectrum decoded from the report's serialised HDR histograms.

use std::fmt::Write as _;

use base64::Engine as _;
use hdrhistogram::serialization::Deserializer;
use hdrhistogram::Histogram;

use super::{HistogramReport, Report};
use crate::stats::histogram::fmt_us;
use crate::stats::{IntervalPercentiles, TimelinePoint};

/// Series colours, in the order charts use them (distinct in colour and in brightness).
pub const COLOURS: [&str; 4] = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e"];

/// Plot-area fill of each chart, in page order: near-white and each slightly different, so a
/// screenshot test can find every chart's plot area by its exact colour.
pub const PLOT_BACKGROUNDS: [&str; 8] = [
    "#f7f8fa", "#f7f8f9", "#f7f8f8", "#f7f8f7", "#f7f8f6", "#f7f8f5", "#f7f8f4", "#f7f8f3",
];

/// Which chart (index into [`PLOT_BACKGROUNDS`]) draws what, so tests and readers agree.
pub mod chart {
    /// Connected devices over time.
    pub const CONNECTED: usize = 0;
    /// Connects per second over time.
    pub const CONNECTS_PER_S: usize = 1;
    /// Messages per second (sent, acked, delivered) over time.
    pub const MESSAGES_PER_S: usize = 2;
    /// Corrected end-to-end latency percentiles over time.
    pub const E2E_OVER_TIME: usize = 3;
    /// Connect latency percentiles over time.
    pub const CONNECT_OVER_TIME: usize = 4;
    /// Ack latency percentiles over time.
    pub const ACK_OVER_TIME: usize = 5;
    /// Percentile spectrum of every latency metric.
    pub const SPECTRUM: usize = 6;
}

/// Shown instead of the message plots when the run sent nothing.
pub const NO_MESSAGES: &str = "no messages in this run";

const WIDTH: f64 = 580.0;
const HEIGHT: f64 = 300.0;
const LEFT: f64 = 72.0;
const RIGHT: f64 = 26.0;
const TOP: f64 = 34.0;
const BOTTOM: f64 = 46.0;

/// Renders the whole page.
pub fn render(r: &Report) -> String {
    let mut h = String::with_capacity(64 * 1024);
    let title = format!("thingswarm {} — {}", r.scenario.name, r.started_at);
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width\">\
         <title>{}</title><style>{CSS}</style></head><body>\n",
        esc(&title)
    );
    let _ = write!(h, "<h1>{}</h1>\n<p class=\"sub\">", esc(&title));
    let _ = write!(
        h,
        "{} ({}, server certificate {}) · {} devices planned · thingswarm {}",
        esc(&r.target.url),
        if r.target.embedded {
            "embedded broker"
        } else {
            "external broker"
        },
        esc(&r.target.server_verification),
        r.planned_devices,
        esc(&r.thingswarm_version)
    );
    h.push_str("</p>\n");
    if r.interrupted {
        h.push_str("<p class=\"warn\">Interrupted: the run was stopped early and the figures are partial.</p>\n");
    }
    if let Some(sh) = &r.shard {
        let _ = writeln!(
            h,
            "<p class=\"sub\">Shard {}/{} (0-based) of a split run: devices k with k mod {} = {} of each group; merge the shards with <code>thingswarm merge</code>.</p>",
            sh.index, sh.count, sh.count, sh.index
        );
    }
    if let Some(m) = &r.merged {
        let _ = writeln!(
            h,
            "<p class=\"sub\">Merged from {} of {} shards{}.</p>",
            m.shards.len(),
            m.count,
            if m.missing.is_empty() {
                String::new()
            } else {
                format!(" (missing: {:?})", m.missing)
            }
        );
    }

    let tl = &r.timeline;
    let secs = |f: fn(&TimelinePoint) -> f64| -> Vec<(f64, f64)> {
        tl.iter().map(|p| (p.t, f(p))).collect()
    };
    h.push_str("<h2>Connections</h2>\n<div class=\"row\">");
    h.push_str(
        &Chart {
            index: chart::CONNECTED,
            width: WIDTH,
            title: "Connected devices",
            x_label: "time since start (s)",
            y_label: "devices",
            series: vec![Series::new("connected", 0, secs(|p| p.connected as f64))],
            x: Axis::Linear,
        }
        .svg(),
    );
    h.push_str(
        &Chart {
            index: chart::CONNECTS_PER_S,
            width: WIDTH,
            title: "Connect rate",
            x_label: "time since start (s)",
            y_label: "connects/s",
            series: vec![
                Series::new("connects/s", 0, secs(|p| p.connects_per_s)),
                Series::new("failed (cumulative)", 1, secs(|p| p.failed as f64)),
            ],
            x: Axis::Linear,
        }
        .svg(),
    );
    h.push_str("</div>\n");

    let messages = r.devices.sent + r.devices.delivered > 0;
    h.push_str("<h2>Messages</h2>\n<div class=\"row\">");
    if messages {
        h.push_str(
            &Chart {
                index: chart::MESSAGES_PER_S,
                width: WIDTH,
                title: "Message rate",
                x_label: "time since start (s)",
                y_label: "messages/s",
                series: vec![
                    Series::new("sent", 0, secs(|p| p.sent_per_s)),
                    Series::new("acked", 2, secs(|p| p.acked_per_s)),
                    Series::new("delivered", 1, secs(|p| p.delivered_per_s)),
                ],
                x: Axis::Linear,
            }
            .svg(),
        );
        h.push_str(&latency_chart(
            chart::E2E_OVER_TIME,
            "End-to-end latency (corrected) per second",
            tl,
            |p| &p.e2e_corrected_us,
        ));
    } else {
        let _ = write!(h, "<p class=\"empty\">{NO_MESSAGES}.</p>");
    }
    h.push_str("</div>\n<h2>Latency over time</h2>\n<div class=\"row\">");
    h.push_str(&latency_chart(
        chart::CONNECT_OVER_TIME,
        "Connect latency per second",
        tl,
        |p| &p.connect_us,
    ));
    if messages {
        h.push_str(&latency_chart(
            chart::ACK_OVER_TIME,
            "Ack latency per second",
            tl,
            |p| &p.ack_us,
        ));
    }
    h.push_str("</div>\n<h2>Latency distribution</h2>\n<div class=\"row\">");
    h.push_str(&spectrum(r));
    h.push_str("</div>\n");

    checks(&mut h, r);
    aws(&mut h, r);
    summary_tables(&mut h, r);
    changes(&mut h, r);
    errors(&mut h, r);

    h.push_str("<h2>Environment</h2>\n<table>");
    let env = &r.environment;
    row(&mut h, "cores", &env.cores.to_string());
    row(&mut h, "os", &env.os);
    row(
        &mut h,
        "open files (soft, hard)",
        &format!("{}, {}", env.nofile.0, env.nofile.1),
    );
    row(
        &mut h,
        "client CPU",
        &format!(
            "{:.2} s{}",
            r.client.cpu_s,
            if r.client.includes_embedded_broker {
                " (embedded broker included)"
            } else {
                ""
            }
        ),
    );
    row(
        &mut h,
        "client peak RSS",
        &format!("{:.1} MiB", r.client.max_rss_bytes as f64 / 1048576.0),
    );
    h.push_str("</table>\n");
    let _ = write!(
        h,
        "<h2>Scenario</h2>\n<p class=\"sub\">{}</p>\n<pre>{}</pre>\n",
        esc(&r.scenario.file),
        esc(&r.scenario.text)
    );
    h.push_str("</body></html>\n");
    h
}

const CSS: &str = "body{font-family:system-ui,sans-serif;margin:16px 24px;color:#222;background:#fff}\
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:18px 0 6px;border-bottom:1px solid #ddd}\
.sub{color:#555;margin:2px 0}.warn{background:#fde2e1;padding:6px 10px;border-radius:4px}\
.row{display:flex;flex-wrap:wrap;gap:12px}.empty{color:#777;font-style:italic;padding:8px}\
table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ddd;padding:3px 8px;text-align:left}\
th{background:#f2f2f2}td.n{text-align:right;font-variant-numeric:tabular-nums}\
pre{background:#f6f6f6;padding:8px;font-size:12px;overflow:auto}svg{background:#fff}";

fn row(h: &mut String, k: &str, v: &str) {
    let _ = write!(h, "<tr><th>{}</th><td>{}</td></tr>", esc(k), esc(v));
}

fn summary_tables(h: &mut String, r: &Report) {
    let d = &r.devices;
    h.push_str("<h2>Summary</h2>\n<table><tr><th>group</th><th>planned</th><th>protocol</th><th>connects</th><th>failed</th><th>dropped</th><th>closed</th><th>cancelled</th><th>sent</th><th>acked</th><th>delivered</th></tr>");
    for g in &r.groups {
        let c = &g.counts;
        let _ = write!(
            h,
            "<tr><td>{}</td><td class=\"n\">{}</td><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td></tr>",
            esc(&g.name), g.planned, esc(&g.protocol), c.connects, c.failed, c.dropped, c.closed,
            c.cancelled, c.sent, c.acked, c.delivered
        );
    }
    let _ = write!(
        h,
        "<tr><th>total</th><td class=\"n\">{}</td><td></td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td></tr></table>",
        r.planned_devices, d.connects, d.failed, d.dropped, d.closed, d.cancelled, d.sent, d.acked, d.delivered
    );
    let _ = write!(
        h,
        "<p>ramp {:.2} s, whole run {:.2} s</p>\n<table><tr><th>latency</th><th>samples</th><th>p50</th><th>p90</th><th>p99</th><th>p99.9</th><th>max</th><th>what</th></tr>",
        r.phases.ramp_s, r.phases.total_s
    );
    let mut line = |name: &str, hr: &HistogramReport, what: &str| {
        let p = &hr.percentiles;
        let _ = write!(
            h,
            "<tr><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td>{}</td></tr>",
            esc(name), p.count, fmt_us(p.p50), fmt_us(p.p90), fmt_us(p.p99), fmt_us(p.p99_9),
            fmt_us(p.max), esc(what)
        );
    };
    line(
        "connect",
        &r.connect_latency_us,
        "TCP connect start -> CONNACK",
    );
    if let Some(t) = &r.traffic {
        let w = &t.steady;
        line(
            "ack (steady)",
            &w.ack_latency_us,
            "PUBLISH written -> PUBACK/PUBCOMP",
        );
        line(
            "e2e (steady)",
            &w.e2e_corrected_us,
            "intended send -> received (corrected)",
        );
        line(
            "e2e raw (steady)",
            &w.e2e_uncorrected_us,
            "actual send -> received",
        );
    }
    h.push_str("</table>\n");
    if let Some(t) = &r.traffic {
        let w = &t.steady;
        let _ = write!(
            h,
            "<p>steady window {:.1} s of {:.1} s: sent {} ({:.0}/s), delivered {} ({:.0}/s); lost {}, duplicates {}, reordered {}</p>",
            t.steady_window_s, t.window_s, w.sent, w.sent_per_s, w.delivered, w.delivered_per_s,
            t.sequence.lost, t.sequence.duplicates, t.sequence.reordered
        );
    }
}

/// SLO verdicts and policy expectations first: they decide the exit code.
fn checks(h: &mut String, r: &Report) {
    let verdict = |ok: bool| if ok { "PASS" } else { "<b>FAIL</b>" };
    if !r.slos.is_empty() {
        h.push_str(
            "<h2>SLOs</h2>\n<table><tr><th>objective</th><th>verdict</th><th>measured</th></tr>",
        );
        for o in &r.slos {
            let _ = write!(
                h,
                "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&o.slo),
                verdict(o.passed),
                esc(&o.message)
            );
        }
        h.push_str("</table>\n");
    }
    if let Some(e) = &r.expectations {
        let _ = write!(
            h,
            "<h2>Expectations</h2>\n<p>{} checked, {} mismatched (mismatches first)</p>\n\
             <table><tr><th>device</th><th>action</th><th>expected</th><th>observed</th><th>verdict</th><th>signal</th></tr>",
            e.total, e.mismatches
        );
        for g in &e.results {
            let x = &g.result;
            let _ = write!(
                h,
                "<tr><td>{}</td><td>{}</td><td>{:?}</td><td>{:?}</td><td>{}</td><td>{}</td></tr>",
                esc(&x.client_id),
                esc(&x.action),
                x.expected,
                x.observed,
                verdict(g.holds),
                esc(&x.signal)
            );
        }
        h.push_str("</table>\n");
    }
}

/// AWS IoT flows: per shadow group and per provisioning group, counts and latencies.
fn aws(h: &mut String, r: &Report) {
    let Some(a) = &r.aws else { return };
    let codes = |m: &std::collections::BTreeMap<String, u64>| {
        let v: Vec<String> = m.iter().map(|(c, n)| format!("{c}: {n}")).collect();
        if v.is_empty() {
            "none".to_string()
        } else {
            v.join(", ")
        }
    };
    let lat = |hr: &HistogramReport| {
        let p = &hr.percentiles;
        format!(
            "<td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td>",
            p.count,
            fmt_us(p.p50),
            fmt_us(p.p99)
        )
    };
    if !a.shadow.is_empty() {
        let _ = write!(
            h,
            "<h2>Device Shadow</h2>\n<p class=\"sub\">service: {}</p>\n<table><tr><th>group</th><th>shadow</th><th>updates accepted / sent</th><th>rejected</th><th>unexpected</th><th>deltas (applied)</th><th>unanswered</th><th>version regressions</th></tr>",
            esc(&a.shadow_service)
        );
        for g in &a.shadow {
            let _ = write!(
                h,
                "<tr><td>{}</td><td>{}</td><td class=\"n\">{} / {}</td><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{} ({})</td><td class=\"n\">{}</td><td class=\"n\">{}</td></tr>",
                esc(&g.group), esc(&g.shadow), g.accepted.update, g.requests.update,
                esc(&codes(&g.rejected)), g.unexpected_rejects, g.deltas, g.delta_reports,
                g.unanswered, g.version_regressions
            );
        }
        h.push_str("</table>\n<table><tr><th>group</th><th>latency</th><th>samples</th><th>p50</th><th>p99</th></tr>");
        for g in &a.shadow {
            for (name, hr) in [
                ("update -> accepted", &g.update_latency_us),
                ("desired -> delta", &g.delta_latency_us),
                ("delta round trip", &g.delta_round_trip_us),
            ] {
                let _ = write!(
                    h,
                    "<tr><td>{}</td><td>{}</td>{}</tr>",
                    esc(&g.group),
                    name,
                    lat(hr)
                );
            }
        }
        h.push_str("</table>\n");
    }
    if !a.provisioning.is_empty() {
        let _ = write!(
            h,
            "<h2>Fleet provisioning</h2>\n<p class=\"sub\">service: {}</p>\n<table><tr><th>group</th><th>template</th><th>mode</th><th>provisioned / started</th><th>per second</th><th>rejected</th><th>timeouts</th><th>own-certificate connects failed</th><th>claim sessions lost</th></tr>",
            esc(&a.provisioning_service)
        );
        for p in &a.provisioning {
            let _ = write!(
                h,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td class=\"n\">{} / {}</td><td class=\"n\">{:.1}</td><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td></tr>",
                esc(&p.group), esc(&p.template), esc(&p.mode), p.provisioned, p.started,
                p.provisioned_per_s, esc(&codes(&p.rejected)), p.timeouts, p.own_connect_failed,
                p.session_lost
            );
        }
        h.push_str("</table>\n<table><tr><th>group</th><th>latency</th><th>samples</th><th>p50</th><th>p99</th></tr>");
        for p in &a.provisioning {
            for (name, hr) in [
                ("create -> accepted", &p.create_latency_us),
                ("register -> accepted", &p.register_latency_us),
                ("claim connect -> own connect", &p.total_latency_us),
            ] {
                let _ = write!(
                    h,
                    "<tr><td>{}</td><td>{}</td>{}</tr>",
                    esc(&p.group),
                    name,
                    lat(hr)
                );
            }
        }
        h.push_str("</table>\n");
    }
}

/// What changed under the run: dashboard traffic controls, injected faults, and what TLS each
/// group negotiated.
fn changes(h: &mut String, r: &Report) {
    if r.groups
        .iter()
        .any(|g| g.tls.is_some() || g.tls_probe_error.is_some())
    {
        h.push_str(
            "<h2>TLS</h2>\n<table><tr><th>group</th><th>negotiated (probe handshake)</th></tr>",
        );
        for g in &r.groups {
            let text = match (&g.tls, &g.tls_probe_error) {
                (Some(n), _) => format!(
                    "{n} ({}), {:.1} ms{}",
                    n.kx_group.as_deref().unwrap_or("no key exchange"),
                    n.handshake_ms,
                    n.client_cpu_ms
                        .map_or(String::new(), |c| format!(", client CPU {c:.2} ms"))
                ),
                (None, Some(e)) => format!("probe failed: {e}"),
                (None, None) => continue,
            };
            let _ = write!(
                h,
                "<tr><td>{}</td><td>{}</td></tr>",
                esc(&g.name),
                esc(&text)
            );
        }
        h.push_str("</table>\n");
    }
    if r.events.is_empty() && r.faults.is_empty() {
        return;
    }
    h.push_str("<h2>Events</h2>\n<table><tr><th>t (s)</th><th>what</th></tr>");
    let mut rows: Vec<(f64, String)> = r
        .events
        .iter()
        .map(|e| {
            (
                e.t,
                format!("traffic {:?}, rate {}% of plan", e.action, e.rate_percent),
            )
        })
        .chain(
            r.faults
                .iter()
                .map(|f| (f.t, format!("fault: {}", f.fault))),
        )
        .collect();
    rows.sort_by(|a, b| a.0.total_cmp(&b.0));
    for (t, what) in rows {
        let _ = write!(
            h,
            "<tr><td class=\"n\">{t:.1}</td><td>{}</td></tr>",
            esc(&what)
        );
    }
    h.push_str("</table>\n");
}

fn errors(h: &mut String, r: &Report) {
    h.push_str("<h2>Errors</h2>\n");
    if r.errors.is_empty() {
        h.push_str("<p>none</p>\n");
        return;
    }
    h.push_str("<table><tr><th>class</th><th>count</th><th>latest example</th></tr>");
    for e in &r.errors {
        let _ = write!(
            h,
            "<tr><td>{}</td><td class=\"n\">{}</td><td>{}</td></tr>",
            esc(&e.class),
            e.count,
            esc(&e.example)
        );
    }
    h.push_str("</table>\n");
}

fn latency_chart(
    index: usize,
    title: &'static str,
    tl: &[TimelinePoint],
    of: fn(&TimelinePoint) -> &IntervalPercentiles,
) -> String {
    // Seconds without samples have no percentiles: leave them out rather than draw zeros.
    let pick = |f: fn(&IntervalPercentiles) -> u64| -> Vec<(f64, f64)> {
        tl.iter()
            .filter(|p| of(p).count > 0)
            .map(|p| (p.t, f(of(p)) as f64 / 1000.0))
            .collect()
    };
    Chart {
        index,
        width: WIDTH,
        title,
        x_label: "time since start (s)",
        y_label: "latency (ms)",
        series: vec![
            Series::new("p50", 0, pick(|p| p.p50)),
            Series::new("p90", 2, pick(|p| p.p90)),
            Series::new("p99", 3, pick(|p| p.p99)),
            Series::new("max", 1, pick(|p| p.max)),
        ],
        x: Axis::Linear,
    }
    .svg()
}

/// Decodes a report histogram (V2+deflate, base64); `None` when empty or unreadable.
fn decode(hr: &HistogramReport) -> Option<Histogram<u64>> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(&hr.hdr)
        .ok()?;
    let h: Histogram<u64> = Deserializer::new()
        .deserialize(&mut bytes.as_slice())
        .ok()?;
    (!h.is_empty()).then_some(h)
}

/// Highest percentile the spectrum reaches: 99.999 (x = 5 on the log axis).
const SPECTRUM_NINES: f64 = 5.0;

fn spectrum(r: &Report) -> String {
    let mut series = Vec::new();
    let mut add = |name: &'static str, colour: usize, hr: &HistogramReport| {
        if let Some(h) = decode(hr) {
            // x = log10(1 / (1 - q)): 0 -> 0th percentile, 2 -> 99th, 5 -> 99.999th.
            let points = (0..=250)
                .map(|i| {
                    let x = SPECTRUM_NINES * i as f64 / 250.0;
                    let q = 1.0 - 10f64.powf(-x);
                    (x, h.value_at_quantile(q) as f64 / 1000.0)
                })
                .collect();
            series.push(Series::new(name, colour, points));
        }
    };
    add("connect", 0, &r.connect_latency_us);
    if let Some(t) = &r.traffic {
        add("ack", 2, &t.whole.ack_latency_us);
        add("e2e corrected", 1, &t.whole.e2e_corrected_us);
        add("e2e uncorrected", 3, &t.whole.e2e_uncorrected_us);
    }
    let mut out = Chart {
        index: chart::SPECTRUM,
        width: 2.0 * WIDTH + 12.0,
        title: "Latency by percentile, whole run",
        x_label: "percentile",
        y_label: "latency (ms)",
        series,
        x: Axis::Nines,
    }
    .svg();
    if r.traffic.is_none() || r.devices.sent + r.devices.delivered == 0 {
        let _ = write!(out, "<p class=\"empty\">{NO_MESSAGES}.</p>");
    }
    out
}

enum Axis {
    /// Plain numbers.
    Linear,
    /// log10(1/(1-q)) labelled as percentiles 0, 90, 99, ..., 99.999.
    Nines,
}

struct Series {
    name: &'static str,
    colour: &'static str,
    points: Vec<(f64, f64)>,
}

impl Series {
    fn new(name: &'static str, colour: usize, points: Vec<(f64, f64)>) -> Series {
        Series {
            name,
            colour: COLOURS[colour % COLOURS.len()],
            points,
        }
    }
}

struct Chart {
    index: usize,
    /// Total width in px (two standard charts and their gap for the spectrum).
    width: f64,
    title: &'static str,
    x_label: &'static str,
    y_label: &'static str,
    series: Vec<Series>,
    x: Axis,
}

impl Chart {
    fn svg(&self) -> String {
        let mut s = String::with_capacity(8 * 1024);
        let bg = PLOT_BACKGROUNDS[self.index % PLOT_BACKGROUNDS.len()];
        let width = self.width;
        let (pw, ph) = (width - LEFT - RIGHT, HEIGHT - TOP - BOTTOM);
        let _ = write!(
            s,
            "<svg width=\"{width}\" height=\"{HEIGHT}\" viewBox=\"0 0 {width} {HEIGHT}\" role=\"img\" aria-label=\"{t}\" font-family=\"sans-serif\" font-size=\"11\">\
             <text x=\"{LEFT}\" y=\"18\" font-size=\"13\" font-weight=\"bold\">{t}</text>\
             <rect x=\"{LEFT}\" y=\"{TOP}\" width=\"{pw}\" height=\"{ph}\" fill=\"{bg}\" stroke=\"#999\"/>",
            t = esc(self.title)
        );
        let points = self.series.iter().flat_map(|s| s.points.iter());
        let (mut x_max, mut y_max) = (0f64, 0f64);
        for &(x, y) in points.clone() {
            x_max = x_max.max(x);
            y_max = y_max.max(y);
        }
        let empty = points.count() == 0;
        let (x_lo, x_hi, x_ticks) = match self.x {
            Axis::Linear => {
                let (hi, ticks) = nice_ticks(x_max.max(1.0));
                (0.0, hi, ticks.into_iter().map(|v| (v, num(v))).collect())
            }
            Axis::Nines => (
                0.0,
                SPECTRUM_NINES,
                vec![
                    (0.0, "0".to_string()),
                    (1.0, "90".into()),
                    (2.0, "99".into()),
                    (3.0, "99.9".into()),
                    (4.0, "99.99".into()),
                    (5.0, "99.999".into()),
                ],
            ),
        };
        let (y_hi, y_ticks) = nice_ticks(if y_max > 0.0 { y_max } else { 1.0 });
        let px = |x: f64| LEFT + (x - x_lo) / (x_hi - x_lo) * pw;
        let py = |y: f64| TOP + ph - y / y_hi * ph;
        for (v, label) in &x_ticks {
            let x = px(*v);
            let _ = write!(
                s,
                "<line x1=\"{x:.1}\" y1=\"{TOP}\" x2=\"{x:.1}\" y2=\"{b}\" stroke=\"#e3e3e3\"/>\
                 <text x=\"{x:.1}\" y=\"{ty}\" text-anchor=\"middle\">{label}</text>",
                b = TOP + ph + 4.0,
                ty = TOP + ph + 16.0
            );
        }
        for v in &y_ticks {
            let y = py(*v);
            let _ = write!(
                s,
                "<line x1=\"{l}\" y1=\"{y:.1}\" x2=\"{r}\" y2=\"{y:.1}\" stroke=\"#e3e3e3\"/>\
                 <text x=\"{tx}\" y=\"{ty:.1}\" text-anchor=\"end\">{}</text>",
                num(*v),
                l = LEFT - 4.0,
                r = LEFT + pw,
                tx = LEFT - 6.0,
                ty = y + 4.0
            );
        }
        let _ = write!(
            s,
            "<text x=\"{x}\" y=\"{y}\" text-anchor=\"middle\">{}</text>\
             <text transform=\"translate(14 {ym}) rotate(-90)\" text-anchor=\"middle\">{}</text>",
            esc(self.x_label),
            esc(self.y_label),
            x = LEFT + pw / 2.0,
            y = HEIGHT - 8.0,
            ym = TOP + ph / 2.0
        );
        if empty {
            let _ = write!(
                s,
                "<text x=\"{x}\" y=\"{y}\" text-anchor=\"middle\" fill=\"#777\">no samples</text>",
                x = LEFT + pw / 2.0,
                y = TOP + ph / 2.0
            );
        }
        // Earlier series are drawn wider, so a line hidden under a later equal one still
        // shows at its edges (sent, acked and delivered often coincide).
        let n = self.series.len();
        for (i, se) in self.series.iter().enumerate() {
            if se.points.is_empty() {
                continue;
            }
            let _ = write!(
                s,
                "<polyline fill=\"none\" stroke-width=\"{}\" stroke-linejoin=\"round\" stroke=\"{}\" points=\"",
                2.0 + 1.5 * (n - 1 - i) as f64,
                se.colour
            );
            for &(x, y) in &se.points {
                let _ = write!(s, "{:.1},{:.1} ", px(x), py(y));
            }
            s.push_str("\"/>");
            // Markers for short series (a single point draws no line), sized like the
            // lines: an earlier marker under a later one at the same value shows as a ring.
            if se.points.len() <= 30 {
                let r = 2.5 + 1.5 * (n - 1 - i) as f64;
                for &(x, y) in &se.points {
                    let _ = write!(
                        s,
                        "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"{r}\" fill=\"{}\"/>",
                        px(x),
                        py(y),
                        se.colour
                    );
                }
            }
        }
        // Legend: top right, above the plot area (which holds only data and grid lines).
        let mut lx = LEFT + pw;
        for se in self.series.iter().rev() {
            let w = 22.0 + 6.5 * se.name.len() as f64;
            lx -= w;
            let _ = write!(
                s,
                "<rect x=\"{lx:.1}\" y=\"{y}\" width=\"14\" height=\"4\" fill=\"{c}\"/>\
                 <text x=\"{tx:.1}\" y=\"{ty}\">{n}</text>",
                y = TOP - 14.0,
                c = se.colour,
                tx = lx + 18.0,
                ty = TOP - 9.0,
                n = esc(se.name)
            );
        }
        s.push_str("</svg>");
        s
    }
}

/// A rounded axis maximum >= `max` and ticks at 1/2/5 x 10^k steps from 0.
fn nice_ticks(max: f64) -> (f64, Vec<f64>) {
    let raw = max / 5.0;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * mag)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * mag);
    let n = (max / step).ceil().max(1.0) as usize;
    (
        (n as f64) * step,
        (0..=n).map(|i| i as f64 * step).collect(),
    )
}

/// Tick labels: integers plainly, fractions with up to 3 significant decimals.
fn num(v: f64) -> String {
    if v == v.trunc() && v.abs() < 1e12 {
        format!("{}", v as i64)
    } else {
        let s = format!("{v:.3}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

/// Escapes text for HTML content and attribute values.
fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_round_and_cover_the_maximum() {
        let (hi, t) = nice_ticks(7.3);
        assert_eq!(hi, 8.0);
        assert_eq!(t, vec![0.0, 2.0, 4.0, 6.0, 8.0]);
        let (hi, t) = nice_ticks(0.037);
        assert!(hi >= 0.037 && t.len() <= 6, "{hi} {t:?}");
        assert_eq!(num(0.01), "0.01");
        assert_eq!(num(300.0), "300");
    }

    #[test]
    fn escaping_covers_markup() {
        assert_eq!(
            esc("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
    }

    fn empty_report() -> Report {
        use crate::report::*;
        Report {
            schema_version: SCHEMA_VERSION,
            thingswarm_version: "0.0.0".into(),
            started_at: "2026-01-01T00:00:00Z".into(),
            interrupted: true,
            scenario: ScenarioEcho {
                name: "<empty>".into(),
                file: "e.toml".into(),
                text: "name = \"<empty>\"\n".into(),
            },
            target: TargetInfo {
                url: "mqtts://127.0.0.1:1".into(),
                embedded: false,
                server_verification: "verified".into(),
            },
            environment: Environment {
                cores: 1,
                os: "linux".into(),
                nofile: (1024, 4096),
            },
            definitions: definitions(),
            identities: Vec::new(),
            planned_devices: 0,
            devices: Default::default(),
            groups: Vec::new(),
            phases: Phases {
                ramp_s: 0.0,
                total_s: 0.0,
            },
            connect_latency_us: HistogramReport::of(&crate::stats::histogram::latency()),
            traffic: None,
            errors: vec![crate::stats::ErrorRow {
                class: "tls: <unknown CA>".into(),
                count: 3,
                example: "dev-1: a & b".into(),
            }],
            timeline: Vec::new(),
            events: Vec::new(),
            faults: Vec::new(),
            expectations: None,
            slos: Vec::new(),
            lifecycle: None,
            aws: None,
            shard: None,
            merged: None,
            client: ClientUsage {
                cpu_s: 0.0,
                cpu_ms_per_connect: 0.0,
                cpu_us_per_message: 0.0,
                max_rss_bytes: 0,
                includes_embedded_broker: false,
            },
        }
    }

    #[test]
    fn aws_flows_get_their_sections() {
        let mut r = empty_report();
        assert!(!render(&r).contains("Device Shadow"));
        r.aws = Some(crate::aws::tests::sample());
        let html = render(&r);
        assert!(html.contains("<h2>Device Shadow</h2>"), "shadow section");
        assert!(
            html.contains("<td>therm&lt;o&gt;</td><td>classic</td>"),
            "escaped group row"
        );
        assert!(html.contains("<td>409: 2</td>"), "rejections by code");
        assert!(
            html.contains("<h2>Fleet provisioning</h2>"),
            "provisioning section"
        );
        assert!(
            html.contains("<td class=\"n\">2 / 3</td>"),
            "provisioned / started"
        );
        assert!(html.contains("<td>InvalidParameters: 1</td>"));
    }

    #[test]
    fn a_run_without_samples_renders_plainly_and_escaped() {
        let html = render(&empty_report());
        assert!(html.contains(NO_MESSAGES));
        assert!(html.contains(">no samples</text>"), "empty charts say so");
        assert!(!html.contains("<polyline"), "nothing to draw");
        assert!(html.contains("Interrupted"));
        assert!(html.contains("tls: &lt;unknown CA&gt;") && html.contains("dev-1: a &amp; b"));
        assert!(html.contains("name = &quot;&lt;empty&gt;&quot;"));
        assert!(!html.contains("<empty>"));
        assert!(!html.contains("http://") && !html.contains("https://"));
    }
}
