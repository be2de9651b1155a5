//! `thingswarm compare BASE CURRENT`: metric by metric, did the current run get worse?
//!
//! Why: a nightly job needs to know whether tonight is worse than last night, not just whether
//! fixed SLOs held. Each metric knows its good direction (latency and errors down, throughput
//! up); a change for the worse beyond the tolerance is a regression.

use std::fmt::Write as _;

use super::{HistogramReport, Report};

/// Which way is good for a metric.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Better {
    /// Latency, errors, loss.
    Lower,
    /// Throughput.
    Higher,
}

/// The verdict on one metric.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Better by more than the tolerance.
    Better,
    /// Within the tolerance.
    Same,
    /// Worse by more than the tolerance.
    Regression,
    /// Present in the base run only: the current run lost the data.
    Missing,
    /// Present in the current run only (nothing to compare with).
    New,
}

impl Verdict {
    fn label(self) -> &'static str {
        match self {
            Verdict::Better => "better",
            Verdict::Same => "ok",
            Verdict::Regression => "REGRESSION",
            Verdict::Missing => "MISSING",
            Verdict::New => "new",
        }
    }

    /// Whether this verdict fails the comparison.
    pub fn fails(self) -> bool {
        matches!(self, Verdict::Regression | Verdict::Missing)
    }
}

/// One compared metric.
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    /// Metric name (the SLO name where one exists).
    pub metric: &'static str,
    /// Good direction.
    pub better: Better,
    /// Base value.
    pub base: Option<f64>,
    /// Current value.
    pub current: Option<f64>,
    /// The verdict.
    pub verdict: Verdict,
    unit: Unit,
}

impl Row {
    /// `current - base`.
    pub fn delta(&self) -> Option<f64> {
        Some(self.current? - self.base?)
    }

    /// `current / base` (infinite when only the base is zero; 1 when both are).
    pub fn ratio(&self) -> Option<f64> {
        let (b, c) = (self.base?, self.current?);
        Some(if b == 0.0 {
            if c == 0.0 {
                1.0
            } else {
                f64::INFINITY
            }
        } else {
            c / b
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Unit {
    Us,
    PerS,
    Fraction,
}

impl Unit {
    fn fmt(self, v: f64) -> String {
        match self {
            Unit::Us => crate::stats::histogram::fmt_us(v.round() as u64),
            Unit::PerS => format!("{v:.1}/s"),
            Unit::Fraction => format!("{:.4}%", v * 100.0),
        }
    }
}

/// One comparable figure: (name, direction, unit, value).
type Figure = (&'static str, Better, Unit, Option<f64>);

/// Every comparable figure of a report.
fn figures(r: &Report) -> Vec<Figure> {
    fn lat(out: &mut Vec<Figure>, names: [&'static str; 5], h: Option<&HistogramReport>) {
        let p = h.map(|h| &h.percentiles).filter(|p| p.count > 0);
        let vals = p.map(|p| [p.p50, p.p90, p.p99, p.p99_9, p.max]);
        for (i, name) in names.into_iter().enumerate() {
            out.push((name, Better::Lower, Unit::Us, vals.map(|v| v[i] as f64)));
        }
    }
    let mut out = Vec::new();
    lat(
        &mut out,
        [
            "connect_p50",
            "connect_p90",
            "connect_p99",
            "connect_p99_9",
            "connect_max",
        ],
        Some(&r.connect_latency_us),
    );
    let ramp = (r.phases.ramp_s > 0.0 && r.devices.connects > 0)
        .then(|| r.devices.connects as f64 / r.phases.ramp_s);
    out.push(("connect_rate", Better::Higher, Unit::PerS, ramp));
    let t = r.traffic.as_ref();
    lat(
        &mut out,
        ["ack_p50", "ack_p90", "ack_p99", "ack_p99_9", "ack_max"],
        t.map(|t| &t.steady.ack_latency_us),
    );
    lat(
        &mut out,
        ["e2e_p50", "e2e_p90", "e2e_p99", "e2e_p99_9", "e2e_max"],
        t.map(|t| &t.steady.e2e_corrected_us),
    );
    lat(
        &mut out,
        [
            "e2e_uncorrected_p50",
            "e2e_uncorrected_p90",
            "e2e_uncorrected_p99",
            "e2e_uncorrected_p99_9",
            "e2e_uncorrected_max",
        ],
        t.map(|t| &t.steady.e2e_uncorrected_us),
    );
    out.push((
        "sent_rate",
        Better::Higher,
        Unit::PerS,
        t.map(|t| t.steady.sent_per_s),
    ));
    out.push((
        "delivered_rate",
        Better::Higher,
        Unit::PerS,
        t.map(|t| t.steady.delivered_per_s),
    ));
    let m = |metric: crate::slo::Metric| metric.measure(r).ok();
    out.push((
        "error_rate",
        Better::Lower,
        Unit::Fraction,
        m(crate::slo::Metric::ErrorRate),
    ));
    out.push((
        "loss",
        Better::Lower,
        Unit::Fraction,
        m(crate::slo::Metric::Loss),
    ));
    out
}

/// The comparison of two reports.
#[derive(Clone, Debug)]
pub struct Comparison {
    /// Per metric, in a fixed order.
    pub rows: Vec<Row>,
    /// Allowed change for the worse, as a fraction (0.1 = 10%).
    pub tolerance: f64,
    /// Scenario names (base, current): differing names are warned about.
    pub scenarios: (String, String),
}

/// Compares `current` with `base`, allowing `tolerance` (a fraction) for the worse.
pub fn compare(base: &Report, current: &Report, tolerance: f64) -> Comparison {
    let rows = figures(base)
        .into_iter()
        .zip(figures(current))
        .filter_map(|((metric, better, unit, b), (_, _, _, c))| {
            let verdict = match (b, c) {
                (None, None) => return None,
                (Some(_), None) => Verdict::Missing,
                (None, Some(_)) => Verdict::New,
                (Some(b), Some(c)) => judge(better, b, c, tolerance),
            };
            Some(Row {
                metric,
                better,
                base: b,
                current: c,
                verdict,
                unit,
            })
        })
        .collect();
    Comparison {
        rows,
        tolerance,
        scenarios: (base.scenario.name.clone(), current.scenario.name.clone()),
    }
}

fn judge(better: Better, base: f64, current: f64, tol: f64) -> Verdict {
    let (worse, improved) = match better {
        Better::Lower => (current > base * (1.0 + tol), current < base * (1.0 - tol)),
        Better::Higher => (current < base * (1.0 - tol), current > base * (1.0 + tol)),
    };
    if worse {
        Verdict::Regression
    } else if improved {
        Verdict::Better
    } else {
        Verdict::Same
    }
}

impl Comparison {
    /// Whether any metric regressed (or vanished).
    pub fn regressed(&self) -> bool {
        self.rows.iter().any(|r| r.verdict.fails())
    }

    fn cells(&self) -> Vec<[String; 6]> {
        self.rows
            .iter()
            .map(|r| {
                let opt = |v: Option<f64>| v.map_or("-".to_string(), |v| r.unit.fmt(v));
                let delta = r.delta().map_or("-".to_string(), |d| {
                    let s = r.unit.fmt(d.abs());
                    if d < 0.0 {
                        format!("-{s}")
                    } else {
                        format!("+{s}")
                    }
                });
                let ratio = r.ratio().map_or("-".to_string(), |x| {
                    if x.is_finite() {
                        format!("{x:.3}x")
                    } else {
                        "inf".into()
                    }
                });
                [
                    format!(
                        "{} ({})",
                        r.metric,
                        if r.better == Better::Lower {
                            "lower is better"
                        } else {
                            "higher is better"
                        }
                    ),
                    opt(r.base),
                    opt(r.current),
                    delta,
                    ratio,
                    r.verdict.label().to_string(),
                ]
            })
            .collect()
    }

    fn headline(&self) -> String {
        let bad = self.rows.iter().filter(|r| r.verdict.fails()).count();
        let mut s = format!(
            "{} of {} metrics regressed beyond {:.1}%",
            bad,
            self.rows.len(),
            self.tolerance * 100.0
        );
        if self.scenarios.0 != self.scenarios.1 {
            let _ = write!(
                s,
                " (WARNING: different scenarios: {} vs {})",
                self.scenarios.0, self.scenarios.1
            );
        }
        s
    }

    /// Aligned columns for a terminal.
    pub fn text(&self) -> String {
        let header = ["metric", "base", "current", "delta", "ratio", "verdict"].map(String::from);
        let cells = self.cells();
        let mut width = [0usize; 6];
        for row in std::iter::once(&header).chain(&cells) {
            for (w, c) in width.iter_mut().zip(row) {
                *w = (*w).max(c.chars().count());
            }
        }
        let mut s = String::new();
        for row in std::iter::once(&header).chain(&cells) {
            let line: Vec<String> = row
                .iter()
                .zip(width)
                .enumerate()
                .map(|(i, (c, w))| {
                    if i == 0 {
                        format!("{c:<w$}")
                    } else {
                        format!("{c:>w$}")
                    }
                })
                .collect();
            let _ = writeln!(s, "{}", line.join("  ").trim_end());
        }
        let _ = writeln!(s, "{}", self.headline());
        s
    }

    /// A GitHub-flavoured Markdown table, for a PR or a chat.
    pub fn markdown(&self) -> String {
        let mut s = String::from("| metric | base | current | delta | ratio | verdict |\n");
        s.push_str("|---|---:|---:|---:|---:|---|\n");
        for row in self.cells() {
            let mut row = row;
            if row[5] == "REGRESSION" || row[5] == "MISSING" {
                row[5] = format!("**{}**", row[5]);
            }
            let _ = writeln!(s, "| {} |", row.join(" | "));
        }
        let _ = writeln!(s, "\n{}", self.headline());
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture() -> Report {
        serde_json::from_str(include_str!("../../tests/fixtures/reports/base.json")).unwrap()
    }

    #[test]
    fn direction_aware_verdicts() {
        assert_eq!(judge(Better::Lower, 100.0, 120.0, 0.1), Verdict::Regression);
        assert_eq!(judge(Better::Lower, 100.0, 102.0, 0.1), Verdict::Same);
        assert_eq!(judge(Better::Lower, 100.0, 80.0, 0.1), Verdict::Better);
        assert_eq!(judge(Better::Higher, 100.0, 80.0, 0.1), Verdict::Regression);
        assert_eq!(judge(Better::Higher, 100.0, 120.0, 0.1), Verdict::Better);
        assert_eq!(judge(Better::Lower, 0.0, 0.0, 0.1), Verdict::Same);
        assert_eq!(judge(Better::Lower, 0.0, 0.001, 0.1), Verdict::Regression);
    }

    #[test]
    fn identical_reports_do_not_regress_and_lost_data_does() {
        let base = fixture();
        let c = compare(&base, &base, 0.1);
        assert!(!c.regressed(), "{}", c.text());
        assert!(c.rows.iter().any(|r| r.metric == "e2e_p99"));
        let mut current = base.clone();
        current.traffic = None;
        let c = compare(&base, &current, 0.1);
        assert!(c.regressed());
        let row = c
            .rows
            .iter()
            .find(|r| r.metric == "delivered_rate")
            .unwrap();
        assert_eq!(row.verdict, Verdict::Missing);
        assert!(c.markdown().contains("**MISSING**"));
    }
}
