//! A scenario's fault timeline: `[[fault]]` entries the run injects through the proxy it
//! puts in front of the target (see [`crate::proxy`]).
//!
//! ```toml
//! [[fault]]
//! at = "20s"             # from the start of the run (the report's timeline origin)
//! stall = "1s"           # hold all traffic for this long
//! [[fault]]
//! at = "30s"
//! delay = "20ms"         # from now on, each direction (jitter = "5ms" adds up to that)
//! [[fault]]
//! at = "40s"
//! reset = 0.5            # reset this fraction of open connections (1.0: all)
//! [[fault]]
//! at = "50s"
//! bandwidth = "100KB/s"  # cap each direction of each connection ("off": no cap)
//! ```

use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::error::{ScenarioError, Source};
use super::values;

/// One `[[fault]]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawFault {
    at: Spanned<String>,
    stall: Option<Spanned<String>>,
    delay: Option<Spanned<String>>,
    jitter: Option<Spanned<String>>,
    reset: Option<Spanned<f64>>,
    bandwidth: Option<Spanned<String>>,
}

/// What a fault does.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum FaultAction {
    /// Hold all traffic for this long.
    Stall(Duration),
    /// From now on delay each direction by `fixed` plus up to `jitter`.
    Delay {
        /// Added to every chunk.
        fixed: Duration,
        /// Uniform random extra, at most this.
        jitter: Duration,
    },
    /// Reset this fraction of the open connections.
    Reset(f64),
    /// From now on cap each direction of each connection at this many bytes/s (`None`: no
    /// cap).
    Bandwidth(Option<u64>),
}

impl std::fmt::Display for FaultAction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FaultAction::Stall(d) => write!(f, "stall {d:?}"),
            FaultAction::Delay { fixed, jitter } => write!(f, "delay {fixed:?} + up to {jitter:?}"),
            FaultAction::Reset(x) => write!(f, "reset {x} of connections"),
            FaultAction::Bandwidth(Some(b)) => write!(f, "bandwidth {b} B/s"),
            FaultAction::Bandwidth(None) => write!(f, "bandwidth uncapped"),
        }
    }
}

/// A planned fault.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FaultPlan {
    /// When, from the start of the run.
    pub at: Duration,
    /// What.
    pub action: FaultAction,
}

const FORM: &str = r#"expected one of stall = "1s", delay = "20ms" (optional jitter = "5ms"), reset = 0.5 or bandwidth = "1MB/s" (or "off")"#;

/// Validates the `[[fault]]` entries, sorted by time.
pub(super) fn faults(
    src: &Source<'_>,
    raw: Option<&Spanned<Vec<Spanned<RawFault>>>>,
) -> Result<Vec<FaultPlan>, ScenarioError> {
    let Some(list) = raw else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for (i, f) in list.get_ref().iter().enumerate() {
        let key = format!("fault[{i}]");
        let pos = f.span().start;
        let f = f.get_ref();
        let dur = |k: &str, v: &Spanned<String>| {
            values::duration(v.get_ref())
                .map_err(|m| src.at(v.span().start, format!("{key}.{k}: {m}")))
        };
        let at = dur("at", &f.at)?;
        let action = match (&f.stall, &f.delay, &f.reset) {
            (None, None, None) if f.jitter.is_none() && f.bandwidth.is_some() => {
                let b = f.bandwidth.as_ref().expect("checked");
                FaultAction::Bandwidth(match b.get_ref().as_str() {
                    "off" => None,
                    text => Some(crate::proxy::args::bandwidth(text).map_err(|m| {
                        src.at(b.span().start, format!("{key}.bandwidth: {m}, or \"off\""))
                    })?),
                })
            }
            _ if f.bandwidth.is_some() => return Err(src.at(pos, format!("{key}: {FORM}"))),
            (Some(s), None, None) if f.jitter.is_none() => FaultAction::Stall(dur("stall", s)?),
            (None, Some(d), None) => FaultAction::Delay {
                fixed: dur("delay", d)?,
                jitter: match &f.jitter {
                    Some(j) => dur("jitter", j)?,
                    None => Duration::ZERO,
                },
            },
            (None, None, Some(r)) if f.jitter.is_none() => {
                let x = *r.get_ref();
                if !(0.0..=1.0).contains(&x) {
                    return Err(src.at(
                        r.span().start,
                        format!("{key}.reset: {x} is not a fraction (expected 0 to 1, e.g. 0.5)"),
                    ));
                }
                FaultAction::Reset(x)
            }
            _ => return Err(src.at(pos, format!("{key}: {FORM}"))),
        };
        out.push(FaultPlan { at, action });
    }
    out.sort_by_key(|f| f.at);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::time::Duration;

    use super::{FaultAction, FaultPlan};
    use crate::scenario::{Overrides, Plan};

    fn plan(extra: &str) -> Result<Plan, String> {
        let text = format!(
            "name = \"f\"\nduration = \"1s\"\n[[group]]\nname = \"g\"\ndevices = 1\nclient_id = \"d\"\n{extra}"
        );
        Plan::from_str(&text, Path::new("f.toml"), &Overrides::default()).map_err(|e| e.to_string())
    }

    #[test]
    fn parses_a_timeline_in_time_order() {
        let p = plan(
            "[[fault]]\nat = \"2s\"\nreset = 1.0\n[[fault]]\nat = \"1s\"\nstall = \"500ms\"\n[[fault]]\nat = \"3s\"\ndelay = \"20ms\"\njitter = \"1ms\"\n",
        )
        .unwrap();
        let s = Duration::from_secs;
        assert_eq!(
            p.faults,
            [
                FaultPlan {
                    at: s(1),
                    action: FaultAction::Stall(Duration::from_millis(500))
                },
                FaultPlan {
                    at: s(2),
                    action: FaultAction::Reset(1.0)
                },
                FaultPlan {
                    at: s(3),
                    action: FaultAction::Delay {
                        fixed: Duration::from_millis(20),
                        jitter: Duration::from_millis(1)
                    }
                },
            ]
        );
    }

    #[test]
    fn a_bandwidth_cap_is_set_and_lifted() {
        let p = plan(
            "[[fault]]\nat = \"1s\"\nbandwidth = \"100KB/s\"\n[[fault]]\nat = \"2s\"\nbandwidth = \"off\"\n",
        )
        .unwrap();
        let actions: Vec<_> = p.faults.iter().map(|f| f.action).collect();
        assert_eq!(
            actions,
            [
                FaultAction::Bandwidth(Some(100_000)),
                FaultAction::Bandwidth(None)
            ]
        );
        assert_eq!(actions[0].to_string(), "bandwidth 100000 B/s");
    }

    #[test]
    fn refuses_ambiguous_or_bad_faults() {
        for (bad, needle) in [
            ("[[fault]]\nat = \"1s\"\n", "expected one of"),
            (
                "[[fault]]\nat = \"1s\"\nstall = \"1s\"\nreset = 1.0\n",
                "expected one of",
            ),
            (
                "[[fault]]\nat = \"1s\"\nreset = 2.0\n",
                "2 is not a fraction",
            ),
            (
                "[[fault]]\nat = \"soon\"\nstall = \"1s\"\n",
                "fault[0].at: \"soon\" is not a duration",
            ),
            ("[[fault]]\nat = \"1s\"\ndrop = 0.1\n", "drop"),
            (
                "[[fault]]\nat = \"1s\"\nbandwidth = \"fast\"\n",
                "fault[0].bandwidth: \"fast\" is not a bandwidth",
            ),
            (
                "[[fault]]\nat = \"1s\"\nbandwidth = \"1MB/s\"\nstall = \"1s\"\n",
                "expected one of",
            ),
        ] {
            let err = plan(bad).unwrap_err();
            assert!(err.contains(needle), "{bad}: {err}");
        }
    }
}
