//! Drawing one frame: a pure function of a [`View`], so every screen can be tested with
//! ratatui's `TestBackend` without a terminal, a clock or a running fleet.
//!
//! Screen, top to bottom: header (2 lines), connections, latency, throughput chart, errors,
//! status line. Panels that do not fit are hidden (the focused one last, the chart first) and
//! the status line names them, so small terminals (40x12) degrade instead of garbling; when
//! the chart is hidden, a one-line traffic view takes its place if a row is free.

use std::time::Duration;

use ratatui::layout::Rect;
use ratatui::style::{Color, Modifier, Style};
use ratatui::symbols::Marker;
use ratatui::text::{Line, Span};
use ratatui::widgets::{
    Axis, Bar, BarChart, BarGroup, Block, Chart, Clear, Dataset, Gauge, GraphType, Paragraph,
    Sparkline, Wrap,
};
use ratatui::Frame;

use super::{Panel, RateSample, View};
use crate::stats::histogram::fmt_us;
use crate::stats::{Distribution, Percentiles, Phase};

/// What the traffic line says before any message moved (or in a connect-only scenario).
pub const NO_TRAFFIC: &str = "traffic: none yet";

/// The one-line throughput view: message rates over the last tick and its ack / end-to-end p99.
fn traffic_line(view: &View) -> String {
    let s = &view.snapshot;
    let t = &s.totals;
    if t.sent + t.delivered == 0 {
        return NO_TRAFFIC.into();
    }
    let r = &s.rates;
    format!(
        "traffic: sent {:.0}/s  acked {:.0}/s  delivered {:.0}/s ({:.1} KiB/s)  ack p99 {}  e2e p99 {}  total sent {} delivered {}",
        r.sent_per_s,
        r.acked_per_s,
        r.delivered_per_s,
        r.delivered_bytes_per_s / 1024.0,
        fmt_us(s.latency_interval.ack.p99),
        fmt_us(s.latency_interval.e2e_corrected.p99),
        t.sent,
        t.delivered
    )
}

/// Rows a panel needs to be worth showing (borders included).
fn min_height(p: Panel) -> u16 {
    match p {
        // gauge, counts, one sparkline row
        Panel::Connections => 5,
        // header row + p50 p90 p99 p99.9 max
        Panel::Latency => 8,
        // title, three chart rows, the time axis
        Panel::Throughput => 7,
        // one row of errors
        Panel::Errors => 3,
    }
}

/// Rows the connections panel grows to when there is room (taller sparklines).
const CONNECTIONS_TALL: u16 = 6;
/// Rows the throughput chart grows to when there is room; the rest goes to errors.
const THROUGHPUT_TALL: u16 = 14;

/// Where each part of the dashboard goes in `area`.
#[derive(Debug, Default)]
struct Rows {
    header: Rect,
    panels: Vec<(Panel, Rect)>,
    traffic: Option<Rect>,
    footer: Option<Rect>,
    hidden: Vec<Panel>,
}

/// Stacks the parts into `area`: header and status line first, then panels by priority (the
/// focused one, then connections, latency, errors, and the chart last) while they fit; spare
/// rows go to connections, then the chart, then errors.
fn layout(area: Rect, focus: Panel) -> Rows {
    let header_h = area.height.min(2);
    let footer_h = u16::from(area.height > header_h);
    let mut free = area.height - header_h - footer_h;

    let mut heights = [0u16; Panel::ALL.len()];
    let rest = [
        Panel::Connections,
        Panel::Latency,
        Panel::Errors,
        Panel::Throughput,
    ];
    let by_priority = std::iter::once(focus).chain(rest.into_iter().filter(move |p| *p != focus));
    for p in by_priority {
        if min_height(p) <= free {
            heights[p as usize] = min_height(p);
            free -= min_height(p);
        }
    }
    let chart_shown = heights[Panel::Throughput as usize] > 0;
    let traffic_h = u16::from(free > 0 && !chart_shown);
    free -= traffic_h;
    for (p, tall) in [
        (Panel::Connections, CONNECTIONS_TALL),
        (Panel::Throughput, THROUGHPUT_TALL),
        (Panel::Errors, u16::MAX),
    ] {
        let h = &mut heights[p as usize];
        if *h > 0 {
            let grow = free.min(tall.saturating_sub(*h));
            *h += grow;
            free -= grow;
        }
    }

    let row = |y: u16, h: u16| Rect::new(area.x, y, area.width, h);
    let mut rows = Rows {
        header: row(area.y, header_h),
        footer: (footer_h > 0).then(|| row(area.bottom() - 1, 1)),
        ..Rows::default()
    };
    let mut y = area.y + header_h;
    let mut place = |h: u16| {
        y += h;
        row(y - h, h)
    };
    for p in Panel::ALL {
        match heights[p as usize] {
            0 => rows.hidden.push(p),
            h => rows.panels.push((p, place(h))),
        }
        // Without the chart, the traffic line sits where it would be: below latency.
        if p == Panel::Latency && traffic_h > 0 {
            rows.traffic = Some(place(1));
        }
    }
    rows
}

/// Draws `view` on `frame`: the dashboard, or the final summary once the run is over.
pub fn render(frame: &mut Frame, view: &View) {
    let area = frame.area();
    if area.is_empty() {
        return;
    }
    if let Some(summary) = &view.finished {
        finished(frame, area, summary);
        return;
    }
    let rows = layout(area, view.focus);
    header(frame, rows.header, view);
    for &(panel, rect) in &rows.panels {
        let focused = panel == view.focus;
        match panel {
            Panel::Connections => connections(frame, rect, view, focused),
            Panel::Latency => latency(frame, rect, view, focused),
            Panel::Throughput => throughput(frame, rect, view, focused),
            Panel::Errors => errors(frame, rect, view, focused),
        }
    }
    if let Some(rect) = rows.traffic {
        let line = Line::styled(
            format!(" {}", traffic_line(view)),
            Style::new().fg(Color::Cyan),
        );
        frame.render_widget(Paragraph::new(line), rect);
    }
    if let Some(rect) = rows.footer {
        footer(frame, rect, view, &rows.hidden);
    }
    if view.help {
        help(frame, area);
    }
}

fn phase_style(phase: Phase) -> Style {
    let color = match phase {
        Phase::Ramp => Color::Yellow,
        Phase::Hold => Color::Green,
        Phase::Drain => Color::Magenta,
        Phase::Done => Color::Blue,
    };
    Style::new()
        .fg(Color::Black)
        .bg(color)
        .add_modifier(Modifier::BOLD)
}

fn phase_name(phase: Phase) -> &'static str {
    match phase {
        Phase::Ramp => "RAMP",
        Phase::Hold => "HOLD",
        Phase::Drain => "DRAIN",
        Phase::Done => "DONE",
    }
}

/// Seconds with a tenth under a minute (`4.2s`), whole units above (`2m 5s`).
fn secs(d: Duration) -> String {
    if d < Duration::from_secs(60) {
        format!("{:.1}s", d.as_secs_f64())
    } else {
        humantime::format_duration(Duration::from_secs(d.as_secs())).to_string()
    }
}

/// Time left as far as the plan tells: the rest of the ramp at the planned pace plus the hold.
fn remaining(view: &View) -> String {
    let s = &view.snapshot;
    let h = &view.header;
    match s.phase {
        Phase::Ramp => match h.expected_ramp {
            Some(ramp) => format!("~{} left", secs(ramp.saturating_sub(s.elapsed) + h.hold)),
            None => format!("ramp + {} hold left", secs(h.hold)),
        },
        Phase::Hold => {
            let held = s
                .elapsed
                .saturating_sub(view.hold_since.unwrap_or(s.elapsed));
            format!("{} left", secs(h.hold.saturating_sub(held)))
        }
        Phase::Drain => "disconnecting".into(),
        Phase::Done => "done".into(),
    }
}

fn header(frame: &mut Frame, area: Rect, view: &View) {
    let s = &view.snapshot;
    let h = &view.header;
    let bold = Style::new().add_modifier(Modifier::BOLD);
    let clock = format!("elapsed {}  {}", secs(s.elapsed), remaining(view));
    let badge = Span::styled(format!(" {} ", phase_name(s.phase)), phase_style(s.phase));
    let mut first = Line::from(vec![
        badge.clone(),
        Span::styled(format!(" {} ", h.scenario), bold),
        Span::raw(format!(" {clock}")),
    ]);
    let mut second = format!(" {}  {}  hold {}", h.target, h.protocols, secs(h.hold));
    if let Some(ramp) = h.expected_ramp {
        second.push_str(&format!("  ramp ~{}", secs(ramp)));
    }
    if let Some(tls) = &h.tls {
        second.push_str(&format!("  {tls}"));
    }
    if first.width() > area.width as usize {
        // Narrow: the clock first; the scenario name moves to the second line.
        first = Line::from(vec![badge, Span::raw(format!(" {clock}"))]);
        second = format!(" {} {second}", h.scenario);
    }
    // Traffic that is not what the scenario planned is said first, where the eye lands.
    let control = match view.control {
        c if c.paused => Some(" TRAFFIC PAUSED ".to_string()),
        c if c.rate_percent != 100 => Some(format!(" rate {}% ", c.rate_percent)),
        _ => None,
    };
    if let Some(text) = control {
        let style = Style::new()
            .fg(Color::Black)
            .bg(Color::Yellow)
            .add_modifier(Modifier::BOLD);
        first.spans.insert(1, Span::styled(text, style));
        first.spans.insert(1, Span::raw(" "));
    }
    let second = Line::styled(second, Style::new().fg(Color::Gray));
    frame.render_widget(Paragraph::new(vec![first, second]), area);
}

fn panel_block(title: String, focused: bool) -> Block<'static> {
    let style = if focused {
        Style::new().fg(Color::Cyan).add_modifier(Modifier::BOLD)
    } else {
        Style::new().fg(Color::DarkGray)
    };
    Block::bordered().border_style(style).title(Span::styled(
        title,
        style.fg(if focused { Color::Cyan } else { Color::White }),
    ))
}

fn connections(frame: &mut Frame, area: Rect, view: &View, focused: bool) {
    let s = &view.snapshot;
    let t = &s.totals;
    let block = panel_block(format!(" connections ({} planned) ", s.planned), focused);
    let inner = block.inner(area);
    frame.render_widget(block, area);
    if inner.height == 0 {
        return;
    }

    let ratio = if s.planned > 0 {
        (t.connected as f64 / s.planned as f64).clamp(0.0, 1.0)
    } else {
        0.0
    };
    let gauge = Gauge::default()
        .ratio(ratio)
        .use_unicode(true)
        .label(format!(
            "connected {}/{}  {:.1}%",
            t.connected,
            s.planned,
            ratio * 100.0
        ))
        .gauge_style(Style::new().fg(Color::Green).bg(Color::Black));
    frame.render_widget(gauge, Rect { height: 1, ..inner });

    if inner.height < 2 {
        return;
    }
    let num = |n: u64, bad: bool| {
        let style = if bad && n > 0 {
            Style::new().fg(Color::Red).add_modifier(Modifier::BOLD)
        } else {
            Style::new().add_modifier(Modifier::BOLD)
        };
        Span::styled(n.to_string(), style)
    };
    let counts = Line::from(vec![
        Span::raw("connecting "),
        num(t.connecting, false),
        Span::raw("  failed "),
        num(t.failed, true),
        Span::raw("  dropped "),
        num(t.dropped, true),
        Span::raw("  closed "),
        num(t.closed, false),
        Span::raw("  cancelled "),
        num(t.cancelled, false),
    ]);
    frame.render_widget(
        Paragraph::new(counts),
        Rect {
            y: inner.y + 1,
            height: 1,
            ..inner
        },
    );

    if inner.height < 3 {
        return;
    }
    let rest = Rect {
        y: inner.y + 2,
        height: inner.height - 2,
        ..inner
    };
    let peak = view
        .history
        .connects_per_s
        .iter()
        .max()
        .copied()
        .unwrap_or(0);
    let rate = [
        format!("connects/s {:.0}", s.connects_per_s),
        format!("peak {peak}"),
    ];
    if rest.width >= 70 {
        let left = Rect {
            width: rest.width / 2,
            ..rest
        };
        let right = Rect {
            x: rest.x + left.width + 1,
            width: rest.width - left.width - 1,
            ..rest
        };
        spark(
            frame,
            left,
            &rate,
            &view.history.connects_per_s,
            Color::Yellow,
        );
        let up = [
            format!("connected {}", t.connected),
            format!("of {}", s.planned),
        ];
        spark(frame, right, &up, &view.history.connected, Color::Green);
    } else {
        spark(
            frame,
            rest,
            &rate,
            &view.history.connects_per_s,
            Color::Yellow,
        );
    }
}

/// A labelled sparkline: `labels` stacked on the left (as many as fit), samples oldest first
/// (once the history is wider than the graph, the newest sample is on the right edge).
fn spark(
    frame: &mut Frame,
    area: Rect,
    labels: &[String],
    samples: &std::collections::VecDeque<u64>,
    color: Color,
) {
    let label_w = (labels.iter().map(|l| l.len()).max().unwrap_or(0) as u16 + 1).min(area.width);
    let lines: Vec<Line> = labels.iter().map(|l| Line::raw(l.as_str())).collect();
    frame.render_widget(
        Paragraph::new(lines),
        Rect {
            width: label_w,
            ..area
        },
    );
    let graph = Rect {
        x: area.x + label_w,
        width: area.width - label_w,
        ..area
    };
    let skip = samples.len().saturating_sub(graph.width as usize);
    let data: Vec<u64> = samples.iter().skip(skip).copied().collect();
    frame.render_widget(
        Sparkline::default()
            .data(data)
            .style(Style::new().fg(color)),
        graph,
    );
}

fn latency(frame: &mut Frame, area: Rect, view: &View, focused: bool) {
    let (interval_p, total_p) = view.metric.of(&view.snapshot);
    let total = &total_p;
    let block = panel_block(
        format!(
            " {} ({} samples; m: metric, d: {}) ",
            view.metric.title(),
            total.count,
            if view.distribution {
                "bars"
            } else {
                "histogram"
            }
        ),
        focused,
    );
    let inner = block.inner(area);
    frame.render_widget(block, area);

    let cell = |p: &Percentiles, v: u64| {
        if p.count == 0 {
            "-".to_string()
        } else {
            fmt_us(v)
        }
    };
    let rows = quantiles(total);
    let interval = quantiles(&interval_p);
    // The cumulative distribution as bars beside the table, when there is room: linear, the
    // max fills the width, so a long tail shows as a long last bar.
    const TABLE_W: u16 = 30;
    let bar_w = inner.width.saturating_sub(TABLE_W + 1) as usize;
    let bar_w = if bar_w >= 10 && total.count > 0 {
        bar_w
    } else {
        0
    };
    let show_distribution = view.distribution && bar_w > 0;
    let bar_w = if show_distribution { 0 } else { bar_w };
    let mut lines = vec![Line::styled(
        format!("{:<6}{:>10}{:>12}", "", "last tick", "cumulative"),
        Style::new().fg(Color::Gray),
    )];
    for ((name, cumulative), (_, last)) in rows.iter().zip(interval) {
        lines.push(Line::from(vec![
            Span::raw(format!("{name:<6}")),
            Span::raw(format!("{:>10}", cell(&interval_p, last))),
            Span::styled(
                format!("{:>12}", cell(total, *cumulative)),
                Style::new().add_modifier(Modifier::BOLD),
            ),
            Span::raw("   "),
            Span::styled(
                bar(*cumulative, total.max, bar_w),
                Style::new().fg(Color::Cyan),
            ),
        ]));
    }
    frame.render_widget(Paragraph::new(lines), inner);
    if show_distribution {
        let rect = Rect {
            x: inner.x + TABLE_W + 1,
            width: inner.width - TABLE_W - 1,
            ..inner
        };
        distribution(frame, rect, &view.metric.distribution(&view.snapshot));
    }
}

/// A bucket's lower bound for an axis label: `64u`, `2m`, `1s` (powers of two of us, rounded).
fn bucket_label(k: usize) -> String {
    let us = 1u64 << k;
    match us {
        0..=999 => format!("{us}u"),
        1_000..=999_999 => format!("{}m", us / 1_000),
        _ => format!("{}s", us / 1_000_000),
    }
}

/// The cumulative distribution as vertical bars, one per power of two of microseconds
/// (labelled with the bucket's lower bound), from the first to the last occupied bucket.
fn distribution(frame: &mut Frame, area: Rect, d: &Distribution) {
    let occupied = d.occupied();
    if occupied.is_empty() || area.width < 10 {
        return;
    }
    // Bars at least 3 wide (labels like `512u` clip to the bar width), one gap each.
    let n = occupied.len() as u16;
    let bar_width = ((area.width + 1) / n).saturating_sub(1).clamp(1, 5);
    let bars: Vec<Bar> = occupied
        .map(|k| {
            Bar::default()
                .value(d.0[k])
                .text_value(String::new())
                .label(Line::from(bucket_label(k)))
        })
        .collect();
    frame.render_widget(
        BarChart::default()
            .data(BarGroup::default().bars(&bars))
            .bar_width(bar_width)
            .bar_gap(1)
            .bar_style(Style::new().fg(Color::Cyan)),
        area,
    );
}

/// Message rates over run time: sent, acked and delivered msg/s, one point per snapshot, with
/// the current rates and byte rates in the title.
fn throughput(frame: &mut Frame, area: Rect, view: &View, focused: bool) {
    let s = &view.snapshot;
    let r = &s.rates;
    let title = format!(
        " throughput msg/s: sent {:.0} (yellow)  acked {:.0} (green)  delivered {:.0} (cyan); KiB/s out {:.1} in {:.1} ",
        r.sent_per_s,
        r.acked_per_s,
        r.delivered_per_s,
        r.sent_bytes_per_s / 1024.0,
        r.delivered_bytes_per_s / 1024.0
    );
    let block = panel_block(title, focused);
    let inner = block.inner(area);
    frame.render_widget(block, area);
    let samples = &view.history.rates;
    if s.totals.sent + s.totals.delivered == 0 || samples.is_empty() {
        frame.render_widget(Paragraph::new(format!(" {NO_TRAFFIC}")), inner);
        return;
    }
    let series = |f: fn(&RateSample) -> f64| -> Vec<(f64, f64)> {
        samples.iter().map(|x| (x.t, f(x))).collect()
    };
    let sent = series(|x| x.sent);
    let acked = series(|x| x.acked);
    let delivered = series(|x| x.delivered);
    let t0 = samples.front().map_or(0.0, |x| x.t);
    let t1 = samples.back().map_or(1.0, |x| x.t).max(t0 + 1.0);
    let top = samples
        .iter()
        .map(|x| x.sent.max(x.acked).max(x.delivered))
        .fold(1.0, f64::max)
        * 1.1;
    fn dataset(data: &[(f64, f64)], color: Color) -> Dataset<'_> {
        Dataset::default()
            .marker(Marker::Braille)
            .graph_type(GraphType::Line)
            .style(Style::new().fg(color))
            .data(data)
    }
    let label = |v: f64| Span::raw(format!("{v:.0}"));
    let chart = Chart::new(vec![
        dataset(&sent, Color::Yellow),
        dataset(&acked, Color::Green),
        dataset(&delivered, Color::Cyan),
    ])
    .x_axis(Axis::default().bounds([t0, t1]).labels([
        label(t0),
        Span::raw("run time (s)"),
        label(t1),
    ]))
    .y_axis(
        Axis::default()
            .bounds([0.0, top])
            .labels([label(0.0), label(top)]),
    );
    frame.render_widget(chart, inner);
}

/// `value` as a bar of `width` cells at full scale `max`, in eighths of a cell.
fn bar(value: u64, max: u64, width: usize) -> String {
    const EIGHTHS: [&str; 8] = ["", "▏", "▎", "▍", "▌", "▋", "▊", "▉"];
    if max == 0 || width == 0 {
        return String::new();
    }
    let eighths = (value.min(max) as f64 / max as f64 * (width * 8) as f64).round() as usize;
    let mut out = "█".repeat(eighths / 8);
    out.push_str(EIGHTHS[eighths % 8]);
    out
}

/// The percentiles every latency view shows, in display order.
fn quantiles(p: &Percentiles) -> [(&'static str, u64); 5] {
    [
        ("p50", p.p50),
        ("p90", p.p90),
        ("p99", p.p99),
        ("p99.9", p.p99_9),
        ("max", p.max),
    ]
}

/// `text` cut to `width` characters, with an ellipsis when cut.
fn clip(text: &str, width: usize) -> String {
    if width == 0 {
        return String::new();
    }
    if text.chars().count() <= width {
        return text.to_string();
    }
    let mut out: String = text.chars().take(width.saturating_sub(1)).collect();
    out.push('…');
    out
}

fn errors(frame: &mut Frame, area: Rect, view: &View, focused: bool) {
    let errors = &view.snapshot.errors;
    let sum: u64 = errors.iter().map(|e| e.count).sum();
    // Most frequent first; the title says how many classes did not fit.
    let mut rows: Vec<_> = errors.iter().collect();
    rows.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.class.cmp(&b.class)));
    let fit = area.height.saturating_sub(2) as usize;
    let shown = rows.len().min(fit);
    let title = match rows.len() {
        0 => " errors ".to_string(),
        n if shown < n => format!(" errors: {sum} in {n} classes, {} not shown ", n - shown),
        n => format!(" errors: {sum} in {n} classes "),
    };
    let block = panel_block(title, focused);
    let inner = block.inner(area);
    frame.render_widget(block, area);
    if inner.height == 0 {
        return;
    }
    if errors.is_empty() {
        frame.render_widget(
            Paragraph::new(Line::styled("none", Style::new().fg(Color::Green))),
            inner,
        );
        return;
    }

    let width = inner.width as usize;
    let count_w = rows
        .iter()
        .map(|e| e.count.to_string().len())
        .max()
        .unwrap_or(1);
    let class_w = rows
        .iter()
        .map(|e| e.class.chars().count())
        .max()
        .unwrap_or(0)
        .min(28)
        .min(width.saturating_sub(count_w + 1));
    let example_w = width.saturating_sub(class_w + count_w + 4);
    let lines: Vec<Line> = rows[..shown]
        .iter()
        .map(|e| {
            let mut spans = vec![
                Span::styled(
                    format!("{:<class_w$}", clip(&e.class, class_w)),
                    Style::new().fg(Color::Red),
                ),
                Span::styled(
                    format!(" {:>count_w$}", e.count),
                    Style::new().add_modifier(Modifier::BOLD),
                ),
            ];
            if example_w >= 12 {
                spans.push(Span::styled(
                    format!("  {}", clip(&e.example, example_w)),
                    Style::new().fg(Color::Gray),
                ));
            }
            Line::from(spans)
        })
        .collect();
    frame.render_widget(Paragraph::new(lines), inner);
}

fn footer(frame: &mut Frame, area: Rect, view: &View, hidden: &[Panel]) {
    let line = match &view.status {
        Some(status) => Line::styled(
            format!(" {status}"),
            Style::new().fg(Color::Yellow).add_modifier(Modifier::BOLD),
        ),
        None => {
            // Hidden panels first: on a narrow terminal that is the part worth reading.
            let mut text = String::new();
            if !hidden.is_empty() {
                let names: Vec<&str> = hidden.iter().map(|p| p.name()).collect();
                text.push_str(&format!(" hidden: {} (Tab) |", names.join(", ")));
            }
            text.push_str(" q stop  ? help  Tab focus");
            Line::styled(text, Style::new().fg(Color::DarkGray))
        }
    };
    frame.render_widget(Paragraph::new(line), area);
}

/// The key help, as shown by `?`.
pub const HELP: &[(&str, &str)] = &[
    (
        "q, Esc",
        "stop: devices disconnect, report written, exit code 130 (as Ctrl-C)",
    ),
    ("Ctrl-C", "same as q; a second Ctrl-C exits at once"),
    (
        "Tab",
        "focus the next panel (a small terminal shows it first)",
    ),
    (
        "m",
        "latency panel: connect -> ack -> end-to-end -> end-to-end uncorrected",
    ),
    (
        "d",
        "latency panel: distribution (powers of two) <-> percentile bars",
    ),
    (
        "p",
        "pause / resume publishing (sessions stay up; recorded in the report)",
    ),
    (
        "+, -",
        "publish rate up / down by 10% of the plan (recorded in the report)",
    ),
    ("?", "show / hide this help"),
];

fn help(frame: &mut Frame, area: Rect) {
    let rect = area.centered(
        ratatui::layout::Constraint::Max(80),
        // one row per key, two spare for wrapping on narrow terminals
        ratatui::layout::Constraint::Max(HELP.len() as u16 + 4),
    );
    let lines: Vec<Line> = HELP
        .iter()
        .map(|(key, what)| {
            Line::from(vec![
                Span::styled(
                    format!("{key:<9}"),
                    Style::new().fg(Color::Cyan).add_modifier(Modifier::BOLD),
                ),
                Span::raw(*what),
            ])
        })
        .collect();
    frame.render_widget(Clear, rect);
    frame.render_widget(
        Paragraph::new(lines)
            .wrap(Wrap { trim: false })
            .block(Block::bordered().title(" keys (? closes) ")),
        rect,
    );
}

fn finished(frame: &mut Frame, area: Rect, summary: &str) {
    let block = Block::bordered()
        .border_style(Style::new().fg(Color::Green))
        .title(Span::styled(
            " run finished: press any key to exit ",
            Style::new().fg(Color::Green).add_modifier(Modifier::BOLD),
        ));
    frame.render_widget(
        Paragraph::new(summary.to_string())
            .wrap(Wrap { trim: false })
            .block(block),
        area,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_stays_inside_and_hides_what_does_not_fit() {
        for h in 0..40 {
            for focus in Panel::ALL {
                let area = Rect::new(0, 0, 80, h);
                let rows = layout(area, focus);
                let mut used = rows.header.height + rows.footer.map_or(0, |r| r.height);
                for (_, r) in &rows.panels {
                    assert!(r.bottom() <= area.bottom(), "h={h} {rows:?}");
                    used += r.height;
                }
                used += rows.traffic.map_or(0, |r| r.height);
                assert!(used <= h, "h={h} {rows:?}");
                if h >= 2 + 1 + min_height(focus) {
                    assert!(rows.panels.iter().any(|(p, _)| *p == focus), "h={h}");
                }
            }
        }
        let rows = layout(Rect::new(0, 0, 40, 12), Panel::Connections);
        assert_eq!(rows.hidden, vec![Panel::Latency, Panel::Throughput]);
        // 80x24: everything but the chart, which the traffic line stands in for.
        let rows = layout(Rect::new(0, 0, 80, 24), Panel::Connections);
        assert_eq!(rows.hidden, vec![Panel::Throughput]);
        assert!(rows.traffic.is_some());
        let rows = layout(Rect::new(0, 0, 80, 24), Panel::Throughput);
        assert!(rows.panels.iter().any(|(p, _)| *p == Panel::Throughput));
        // 160x45: everything, and no traffic line beside the chart.
        let rows = layout(Rect::new(0, 0, 160, 45), Panel::Connections);
        assert!(rows.hidden.is_empty());
        assert!(rows.traffic.is_none());
    }

    #[test]
    fn bars_in_eighths() {
        assert_eq!(bar(10, 10, 4), "████");
        assert_eq!(bar(5, 10, 4), "██");
        assert_eq!(bar(1, 16, 2), "▏");
        assert_eq!(bar(0, 10, 4), "");
        assert_eq!(bar(20, 10, 2), "██");
        assert_eq!(bar(1, 0, 4), "");
    }

    #[test]
    fn bucket_labels() {
        assert_eq!(bucket_label(6), "64u");
        assert_eq!(bucket_label(10), "1m");
        assert_eq!(bucket_label(21), "2s");
    }

    #[test]
    fn clip_marks_cuts() {
        assert_eq!(clip("abcdef", 6), "abcdef");
        assert_eq!(clip("abcdefg", 6), "abcde…");
        assert_eq!(clip("abc", 0), "");
    }
}
