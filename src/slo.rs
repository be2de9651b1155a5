//! Service-level objectives: thresholds a run must meet for its exit code to be 0.
//!
//! Why: nightly jobs run with nobody watching; they need a verdict. An SLO names one reported
//! figure, a comparison and a threshold. They come from the scenario's `[slo]` table and from
//! repeatable `run --slo EXPR` flags, and are evaluated against the finished [`Report`], so
//! what is judged is exactly what is written.
//!
//! # Syntax
//!
//! Flag: `METRIC OP VALUE`, e.g. `e2e_p99<50ms`, `delivered_rate>=1000/s`,
//! `error_rate<=0.1%`. `OP` is one of `<`, `<=`, `>`, `>=`.
//!
//! Scenario: `[slo]` keys are metrics, values thresholds; the comparison is implied (`<=` for
//! latencies, error rate and loss, `>=` for rates), made explicit with a `max_`/`min_` prefix
//! (`max_error_rate = "0.1%"`), or written in the value (`e2e_p99 = "< 50ms"`).
//!
//! Metrics:
//! - latency `{connect,ack,e2e,e2e_uncorrected}_{p50,p90,p99,p99_9,max}` (`e2e` is the
//!   coordinated-omission-corrected figure, `e2e_raw` an alias of `e2e_uncorrected`;
//!   `p999` an alias of `p99_9`); values are durations: `850us`, `12.5ms`, `2s`. Message
//!   latencies are the steady-window headline figures.
//! - rates `sent_rate`, `acked_rate`, `delivered_rate` in messages per second: `1000/s` or
//!   `1000`. Sent and delivered are over the steady window, acked over the whole window.
//! - `error_rate`: (failed connects + refused publishes + dropped sessions) divided by
//!   (connect attempts + publishes sent); `loss`: lost / (lost + distinct received) at
//!   subscribers. Values are percentages (`0.1%`) or fractions (`0.001`).
//!
//! - AWS IoT: `shadow_update_{p50,...,max}` (shadow update -> accepted, the highest over
//!   shadow groups), `provision_{p50,...,max}` (claim connect -> connected with the device's
//!   own certificate, the highest over provisioning groups), `provision_rate` (devices
//!   provisioned per second, summed over provisioning groups: `50/s`).
//!
//! A metric without data (e2e with no subscribers, rates in a connect-only run) fails with a
//! reason: an objective nobody could measure has not been met.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::report::Report;
use crate::stats::histogram::fmt_us;

/// A malformed SLO: one line naming the value and the expected form.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0}")]
pub struct SloError(pub String);

/// Comparison of the measured value with the threshold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
}

impl Op {
    fn holds(self, measured: f64, threshold: f64) -> bool {
        match self {
            Op::Lt => measured < threshold,
            Op::Le => measured <= threshold,
            Op::Gt => measured > threshold,
            Op::Ge => measured >= threshold,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Op::Lt => "<",
            Op::Le => "<=",
            Op::Gt => ">",
            Op::Ge => ">=",
        }
    }
}

/// A latency histogram of the report.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Latency {
    /// TCP connect start -> CONNACK.
    Connect,
    /// PUBLISH written -> PUBACK/PUBCOMP (steady window).
    Ack,
    /// Intended send -> received (steady window).
    E2e,
    /// Actual send -> received (steady window).
    E2eUncorrected,
    /// Shadow `update` -> `update/accepted` (the highest over shadow groups).
    ShadowUpdate,
    /// Fleet provisioning, claim connect -> connected with the device's own certificate (the
    /// highest over provisioning groups).
    Provision,
}

/// A percentile of a latency histogram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pct {
    /// Median.
    P50,
    /// 90th.
    P90,
    /// 99th.
    P99,
    /// 99.9th.
    P99_9,
    /// Largest sample.
    Max,
}

/// A message rate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rate {
    /// PUBLISH written per second (steady window).
    Sent,
    /// Acknowledged per second (whole window).
    Acked,
    /// Received by subscribers per second (steady window).
    Delivered,
}

/// What an SLO measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Metric {
    /// A latency percentile, microseconds.
    Latency(Latency, Pct),
    /// Messages per second.
    Rate(Rate),
    /// Errors over attempts, a fraction.
    ErrorRate,
    /// Lost over expected at subscribers, a fraction.
    Loss,
    /// Devices provisioned per second (summed over provisioning groups).
    ProvisionRate,
}

const METRIC_FORM: &str = "expected {connect,ack,e2e,e2e_uncorrected,shadow_update,provision}_{p50,p90,p99,p99_9,max}, sent_rate, acked_rate, delivered_rate, provision_rate, error_rate or loss";

impl Metric {
    /// Parses a metric name (see the module docs).
    pub fn parse(name: &str) -> Result<Metric, SloError> {
        let bad = || SloError(format!("unknown SLO metric {name:?} ({METRIC_FORM})"));
        let simple = match name {
            "sent_rate" => Some(Metric::Rate(Rate::Sent)),
            "acked_rate" => Some(Metric::Rate(Rate::Acked)),
            "delivered_rate" => Some(Metric::Rate(Rate::Delivered)),
            "error_rate" => Some(Metric::ErrorRate),
            "loss" => Some(Metric::Loss),
            "provision_rate" => Some(Metric::ProvisionRate),
            _ => None,
        };
        if let Some(m) = simple {
            return Ok(m);
        }
        let (hist, pct) = name.rsplit_once('_').ok_or_else(bad)?;
        // `p99_9` splits as ("..._p99", "9"): join it back.
        let (hist, pct) = match hist.strip_suffix("_p99") {
            Some(h) if pct == "9" => (h, "p99_9"),
            _ => (hist, pct),
        };
        let hist = match hist {
            "connect" => Latency::Connect,
            "ack" => Latency::Ack,
            "e2e" | "e2e_corrected" => Latency::E2e,
            "e2e_uncorrected" | "e2e_raw" => Latency::E2eUncorrected,
            "shadow_update" => Latency::ShadowUpdate,
            "provision" => Latency::Provision,
            _ => return Err(bad()),
        };
        let pct = match pct {
            "p50" => Pct::P50,
            "p90" => Pct::P90,
            "p99" => Pct::P99,
            "p99_9" | "p999" | "p99.9" => Pct::P99_9,
            "max" => Pct::Max,
            _ => return Err(bad()),
        };
        Ok(Metric::Latency(hist, pct))
    }

    /// The comparison a bare scenario threshold implies.
    fn default_op(self) -> Op {
        match self {
            Metric::Rate(_) | Metric::ProvisionRate => Op::Ge,
            _ => Op::Le,
        }
    }

    /// Parses a threshold in this metric's unit (microseconds, msg/s or a fraction).
    fn threshold(self, name: &str, value: &str) -> Result<f64, SloError> {
        let v = value.trim();
        match self {
            Metric::Latency(..) => parse_duration_us(v).ok_or_else(|| {
                SloError(format!(
                    "{name}: {value:?} is not a duration (expected e.g. 850us, 12.5ms or 2s)"
                ))
            }),
            Metric::Rate(_) | Metric::ProvisionRate => {
                let n = v.strip_suffix("/s").unwrap_or(v).trim();
                n.parse::<f64>()
                    .ok()
                    .filter(|x| x.is_finite() && *x >= 0.0)
                    .ok_or_else(|| {
                        SloError(format!(
                            "{name}: {value:?} is not a rate (expected messages per second, e.g. 1000/s)"
                        ))
                    })
            }
            Metric::ErrorRate | Metric::Loss => {
                let (n, scale) = match v.strip_suffix('%') {
                    Some(n) => (n.trim(), 100.0),
                    None => (v, 1.0),
                };
                n.parse::<f64>()
                    .ok()
                    .map(|x| x / scale)
                    .filter(|x| (0.0..=1.0).contains(x))
                    .ok_or_else(|| {
                        SloError(format!(
                            "{name}: {value:?} is not a fraction (expected a percentage such as 0.1% or a fraction from 0 to 1)"
                        ))
                    })
            }
        }
    }

    /// The measured value from `report`, or why there is none.
    pub fn measure(self, report: &Report) -> Result<f64, String> {
        let no_traffic = || "no data: the scenario has no message traffic".to_string();
        match self {
            Metric::Latency(which @ (Latency::ShadowUpdate | Latency::Provision), pct) => {
                let aws = report.aws.as_ref();
                let hs: Vec<&crate::report::HistogramReport> = match which {
                    Latency::ShadowUpdate => aws
                        .map(|a| a.shadow.iter().map(|g| &g.update_latency_us).collect())
                        .unwrap_or_default(),
                    _ => aws
                        .map(|a| a.provisioning.iter().map(|g| &g.total_latency_us).collect())
                        .unwrap_or_default(),
                };
                hs.iter()
                    .map(|h| &h.percentiles)
                    .filter(|p| p.count > 0)
                    .map(|p| match pct {
                        Pct::P50 => p.p50,
                        Pct::P90 => p.p90,
                        Pct::P99 => p.p99,
                        Pct::P99_9 => p.p99_9,
                        Pct::Max => p.max,
                    } as f64)
                    .reduce(f64::max)
                    .ok_or_else(|| match which {
                        Latency::ShadowUpdate => {
                            "no data: no shadow update was accepted (needs a group with `shadow`)"
                                .to_string()
                        }
                        _ => "no data: no device was provisioned (needs a group with `provision`)"
                            .to_string(),
                    })
            }
            Metric::ProvisionRate => {
                let groups = report
                    .aws
                    .as_ref()
                    .map(|a| a.provisioning.as_slice())
                    .unwrap_or_default();
                if groups.is_empty() {
                    return Err("no data: the scenario has no provisioning group".into());
                }
                Ok(groups.iter().map(|g| g.provisioned_per_s).sum())
            }
            Metric::Latency(which, pct) => {
                let h = match which {
                    Latency::Connect => &report.connect_latency_us,
                    Latency::Ack => {
                        &report
                            .traffic
                            .as_ref()
                            .ok_or_else(no_traffic)?
                            .steady
                            .ack_latency_us
                    }
                    Latency::E2e => {
                        &report
                            .traffic
                            .as_ref()
                            .ok_or_else(no_traffic)?
                            .steady
                            .e2e_corrected_us
                    }
                    Latency::E2eUncorrected => {
                        &report
                            .traffic
                            .as_ref()
                            .ok_or_else(no_traffic)?
                            .steady
                            .e2e_uncorrected_us
                    }
                    Latency::ShadowUpdate | Latency::Provision => {
                        unreachable!("AWS latencies are measured by the arm above")
                    }
                };
                let p = &h.percentiles;
                if p.count == 0 {
                    return Err(match which {
                        Latency::Connect => "no data: no device connected".into(),
                        Latency::Ack => "no data: no acknowledged message in the steady window (needs QoS 1 or 2 publishers)".into(),
                        _ => "no data: nothing was received in the steady window (needs subscribers whose filters match the publishers)".into(),
                    });
                }
                Ok(match pct {
                    Pct::P50 => p.p50,
                    Pct::P90 => p.p90,
                    Pct::P99 => p.p99,
                    Pct::P99_9 => p.p99_9,
                    Pct::Max => p.max,
                } as f64)
            }
            Metric::Rate(rate) => {
                let t = report.traffic.as_ref().ok_or_else(no_traffic)?;
                Ok(match rate {
                    Rate::Sent => t.steady.sent_per_s,
                    Rate::Delivered => t.steady.delivered_per_s,
                    Rate::Acked if t.window_s > 0.0 => report.devices.acked as f64 / t.window_s,
                    Rate::Acked => return Err("no data: the traffic window was empty".into()),
                })
            }
            Metric::ErrorRate => {
                let d = &report.devices;
                let attempts = d.attempted + d.sent;
                if attempts == 0 {
                    return Err("no data: nothing was attempted".into());
                }
                Ok((d.failed + d.refused + d.dropped) as f64 / attempts as f64)
            }
            Metric::Loss => {
                let s = &report.traffic.as_ref().ok_or_else(no_traffic)?.sequence;
                let expected = s.unique + s.lost;
                if expected == 0 {
                    return Err("no data: no sequence-tracked message (needs publishers and subscribers whose filters match them)".into());
                }
                Ok(s.lost as f64 / expected as f64)
            }
        }
    }

    /// `value` in this metric's unit, for people.
    pub fn format(self, value: f64) -> String {
        match self {
            Metric::Latency(..) => fmt_us(value.round() as u64),
            Metric::Rate(_) | Metric::ProvisionRate => format!("{value:.1}/s"),
            Metric::ErrorRate | Metric::Loss => format!("{:.4}%", value * 100.0),
        }
    }
}

/// Parses `850us`, `12.5ms`, `2s`, `1m` into microseconds.
fn parse_duration_us(s: &str) -> Option<f64> {
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (n, unit) = s.split_at(split);
    let n: f64 = n.parse().ok()?;
    let scale = match unit.trim() {
        "us" | "µs" => 1.0,
        "ms" => 1e3,
        "s" => 1e6,
        "m" | "min" => 60e6,
        _ => return None,
    };
    Some(n * scale).filter(|v| v.is_finite())
}

/// One objective.
#[derive(Clone, Debug, PartialEq)]
pub struct Slo {
    /// The metric's name as written (reported back verbatim).
    pub name: String,
    /// What it measures.
    pub metric: Metric,
    /// The comparison that must hold.
    pub op: Op,
    /// In the metric's unit: microseconds, messages per second, or a fraction.
    pub threshold: f64,
    /// The threshold as written.
    pub threshold_text: String,
}

impl fmt::Display for Slo {
    /// `e2e_p99 < 50ms`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} {}",
            self.name,
            self.op.as_str(),
            self.threshold_text
        )
    }
}

/// Splits a leading comparison off `s`.
fn split_op(s: &str) -> Option<(Op, &str)> {
    for (text, op) in [("<=", Op::Le), (">=", Op::Ge), ("<", Op::Lt), (">", Op::Gt)] {
        if let Some(rest) = s.strip_prefix(text) {
            return Some((op, rest.trim()));
        }
    }
    None
}

impl Slo {
    /// Parses a `--slo` expression: `METRIC OP VALUE`, e.g. `e2e_p99<50ms`.
    pub fn parse_expr(expr: &str) -> Result<Slo, SloError> {
        let at = expr.find(['<', '>']).ok_or_else(|| {
            SloError(format!(
                "SLO {expr:?} has no comparison (expected METRIC OP VALUE with OP one of < <= > >=, e.g. e2e_p99<50ms)"
            ))
        })?;
        let name = expr[..at].trim().to_ascii_lowercase();
        let (op, value) = split_op(&expr[at..]).expect("starts with < or >");
        if value.is_empty() {
            return Err(SloError(format!(
                "SLO {expr:?} has no threshold (expected METRIC OP VALUE, e.g. e2e_p99<50ms)"
            )));
        }
        let metric = Metric::parse(&name)?;
        Ok(Slo {
            threshold: metric.threshold(&name, value)?,
            threshold_text: value.to_string(),
            name,
            metric,
            op,
        })
    }

    /// Parses one `[slo]` entry: `key = "value"` (see the module docs).
    pub fn parse_entry(key: &str, value: &str) -> Result<Slo, SloError> {
        let (name, prefixed) = match (key.strip_prefix("max_"), key.strip_prefix("min_")) {
            (Some(rest), _) => (rest, Some(Op::Le)),
            (_, Some(rest)) => (rest, Some(Op::Ge)),
            _ => (key, None),
        };
        let metric = Metric::parse(name)?;
        let (op, threshold) = match (split_op(value.trim()), prefixed) {
            (Some(_), Some(_)) => {
                return Err(SloError(format!(
                    "{key}: {value:?} repeats the comparison that the max_/min_ prefix gives (expected a bare threshold, e.g. {key} = \"0.1%\")"
                )))
            }
            (Some((op, rest)), None) => (op, rest),
            (None, Some(op)) => (op, value.trim()),
            (None, None) => (metric.default_op(), value.trim()),
        };
        Ok(Slo {
            threshold: metric.threshold(key, threshold)?,
            threshold_text: threshold.to_string(),
            name: name.to_string(),
            metric,
            op,
        })
    }

    /// Judges the objective against a finished report.
    pub fn evaluate(&self, report: &Report) -> SloOutcome {
        let (measured, passed, detail) = match self.metric.measure(report) {
            Ok(v) => {
                let passed = self.op.holds(v, self.threshold);
                (
                    Some(v),
                    passed,
                    format!("measured {}", self.metric.format(v)),
                )
            }
            Err(why) => (None, false, why),
        };
        SloOutcome {
            slo: self.to_string(),
            metric: self.name.clone(),
            op: self.op.as_str().to_string(),
            threshold: self.threshold,
            measured,
            measured_text: measured.map(|v| self.metric.format(v)),
            passed,
            message: detail,
        }
    }
}

/// One evaluated objective, as the report records it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SloOutcome {
    /// The objective as written, normalised: `e2e_p99 < 50ms`.
    pub slo: String,
    /// Metric name.
    pub metric: String,
    /// Comparison: `<`, `<=`, `>` or `>=`.
    pub op: String,
    /// Threshold in the metric's unit (microseconds, messages per second, or a fraction).
    pub threshold: f64,
    /// Measured value in the same unit; absent when the run produced no data for it.
    pub measured: Option<f64>,
    /// The measured value for people.
    pub measured_text: Option<String>,
    /// Whether it held (never true without a measured value).
    pub passed: bool,
    /// `measured 12.3ms`, or why nothing could be measured.
    pub message: String,
}

/// Evaluates every objective, in order.
pub fn evaluate(slos: &[Slo], report: &Report) -> Vec<SloOutcome> {
    slos.iter().map(|s| s.evaluate(report)).collect()
}

/// The summary's SLO lines (empty when there are none).
pub fn summary_lines(outcomes: &[SloOutcome]) -> String {
    let mut s = String::new();
    for o in outcomes {
        s.push_str(&format!(
            "  slo        {:<4} {:<28} {}\n",
            if o.passed { "PASS" } else { "FAIL" },
            o.slo,
            o.message
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flag_expressions() {
        let s = Slo::parse_expr("e2e_p99<50ms").unwrap();
        assert_eq!(s.metric, Metric::Latency(Latency::E2e, Pct::P99));
        assert_eq!((s.op, s.threshold), (Op::Lt, 50_000.0));
        assert_eq!(s.to_string(), "e2e_p99 < 50ms");
        let s = Slo::parse_expr(" delivered_rate >= 1000/s").unwrap();
        assert_eq!(
            (s.metric, s.op, s.threshold),
            (Metric::Rate(Rate::Delivered), Op::Ge, 1000.0)
        );
        let s = Slo::parse_expr("error_rate<=0.1%").unwrap();
        assert!((s.threshold - 0.001).abs() < 1e-12);
        let s = Slo::parse_expr("connect_p99_9<1.5s").unwrap();
        assert_eq!(s.metric, Metric::Latency(Latency::Connect, Pct::P99_9));
        assert_eq!(s.threshold, 1_500_000.0);
        let s = Slo::parse_expr("e2e_raw_max>850us").unwrap();
        assert_eq!(
            (s.metric, s.op),
            (Metric::Latency(Latency::E2eUncorrected, Pct::Max), Op::Gt)
        );
        assert_eq!(Slo::parse_expr("loss<0.5").unwrap().threshold, 0.5);
    }

    #[test]
    fn bad_flag_expressions_name_value_and_form() {
        for (expr, needle) in [
            ("e2e_p99", "no comparison (expected METRIC OP VALUE"),
            ("e2e_p99<", "no threshold"),
            (
                "e2e_p98<5ms",
                "unknown SLO metric \"e2e_p98\" (expected {connect",
            ),
            ("latency<5ms", "unknown SLO metric \"latency\""),
            (
                "e2e_p99<fast",
                "e2e_p99: \"fast\" is not a duration (expected e.g. 850us",
            ),
            ("e2e_p99<50", "\"50\" is not a duration"),
            (
                "sent_rate>lots",
                "\"lots\" is not a rate (expected messages per second",
            ),
            ("error_rate<150%", "\"150%\" is not a fraction"),
        ] {
            let e = Slo::parse_expr(expr).unwrap_err().0;
            assert!(e.contains(needle), "{expr}: {e}");
            assert!(!e.contains('\n'));
        }
    }

    #[test]
    fn scenario_entries_imply_direction() {
        let s = Slo::parse_entry("connect_p99", "500ms").unwrap();
        assert_eq!((s.op, s.threshold), (Op::Le, 500_000.0));
        let s = Slo::parse_entry("delivered_rate", "1000/s").unwrap();
        assert_eq!(s.op, Op::Ge);
        let s = Slo::parse_entry("max_error_rate", "0.1%").unwrap();
        assert_eq!((s.name.as_str(), s.op), ("error_rate", Op::Le));
        let s = Slo::parse_entry("min_sent_rate", "10").unwrap();
        assert_eq!((s.op, s.threshold), (Op::Ge, 10.0));
        let s = Slo::parse_entry("e2e_p99", "< 50ms").unwrap();
        assert_eq!((s.op, s.threshold), (Op::Lt, 50_000.0));
        let e = Slo::parse_entry("max_loss", "<1%").unwrap_err().0;
        assert!(e.contains("repeats the comparison"), "{e}");
    }

    #[test]
    fn aws_metrics_judge_shadow_and_provisioning_groups() {
        use crate::aws::provision_stats::{ProvisionMetric, ProvisionStats};
        use crate::aws::stats::{ShadowMetric, ShadowSamples, ShadowStats};
        use std::time::{Duration, Instant};
        let mut report = fixture();
        for expr in [
            "provision_p99<1s",
            "shadow_update_p99<1s",
            "provision_rate>1/s",
        ] {
            let out = Slo::parse_expr(expr).unwrap().evaluate(&report);
            assert!(!out.passed, "{expr}: no data must fail");
            assert!(out.message.contains("no data"), "{out:?}");
        }
        let p = ProvisionStats::new(&[true]);
        let t0 = Instant::now();
        p.started(0, t0);
        p.provisioned(
            0,
            t0 + Duration::from_millis(500),
            &[(ProvisionMetric::Total, Duration::from_millis(5))],
        );
        let sh = ShadowStats::new(&[true]);
        let mut samples = ShadowSamples::new(0, 0);
        samples.record(&sh, ShadowMetric::Update, Duration::from_millis(2));
        samples.flush(&sh);
        report.aws = Some(crate::aws::AwsReport {
            shadow_service: "emulated".into(),
            shadow: vec![sh.report(0, "things", "classic")],
            ingest: Vec::new(),
            provisioning_service: "emulated".into(),
            provisioning: vec![p.report(0, "units", "t", "keys")],
        });
        for (expr, passed) in [
            ("provision_p99<=10ms", true),
            ("provision_p50<1ms", false),
            ("shadow_update_p99<=3ms", true),
            ("shadow_update_max<1ms", false),
            ("provision_rate>=1.5/s", true),
            ("provision_rate>=3/s", false),
        ] {
            let out = Slo::parse_expr(expr).unwrap().evaluate(&report);
            assert_eq!(out.passed, passed, "{expr}: {out:?}");
        }
    }

    fn fixture() -> Report {
        serde_json::from_str(include_str!("../tests/fixtures/reports/base.json")).unwrap()
    }

    #[test]
    fn evaluation_reports_value_verdict_and_missing_data() {
        let mut report = fixture();
        let p99 = report.connect_latency_us.percentiles.p99 as f64;
        let pass = Slo::parse_expr(&format!("connect_p99<={}us", p99)).unwrap();
        let fail = Slo::parse_expr(&format!("connect_p99<{}us", p99)).unwrap();
        let out = evaluate(&[pass, fail], &report);
        assert!(out[0].passed && !out[1].passed);
        assert_eq!(out[0].measured, Some(p99));
        assert!(
            out[1].message.starts_with("measured "),
            "{}",
            out[1].message
        );

        // No subscribers: e2e has no samples, which fails with a reason.
        let t = report.traffic.as_mut().unwrap();
        t.steady.e2e_corrected_us.percentiles = Default::default();
        let o = Slo::parse_expr("e2e_p99<10s").unwrap().evaluate(&report);
        assert!(!o.passed);
        assert_eq!(o.measured, None);
        assert!(o.message.contains("needs subscribers"), "{}", o.message);
        // A connect-only run: rates and loss have no data.
        report.traffic = None;
        for expr in ["delivered_rate>=0", "loss<=100%", "ack_p50<1m"] {
            let o = Slo::parse_expr(expr).unwrap().evaluate(&report);
            assert!(
                !o.passed && o.message.contains("no message traffic"),
                "{expr}"
            );
        }
        let lines = summary_lines(&out);
        assert!(lines.contains("PASS") && lines.contains("FAIL"), "{lines}");
    }
}
