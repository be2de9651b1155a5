//! Connection lifecycle of a group: churn (sessions that end and come back all day), last
//! wills, and the `[[event]]` timeline that drops every session of a group at once (a
//! reconnect storm).
//!
//! ```toml
//! [[group]]
//! # Either a session lifetime ...
//! churn = { lifetime = "exponential(30s)", offline = "uniform(1s, 3s)", end = "abrupt" }
//! # ... or a target churn rate for the group at steady state:
//! churn = { rate = "20/s", offline = "2s", end = "clean" }
//! will = { topic = "will/{client_id}", payload = "offline", qos = 1, retain = false, delay = "0s" }
//!
//! [[event]]                  # one timeline with [[fault]]: times from the start of the run
//! at = "30s"
//! action = "drop-all"        # drop every session of the group at once, without DISCONNECT
//! group = "sensors"
//! ```
//!
//! The churn model: a session lives for a drawn lifetime (from its CONNACK), ends (`clean`:
//! DISCONNECT; `abrupt`: the connection is dropped without DISCONNECT, as by a device losing
//! power), stays offline for a drawn time, and connects again. With `rate = "R/s"` the
//! lifetime is exponential with mean `devices / R - mean(offline)` (memoryless, so connects
//! form a steady stream), which makes the group's connects/s at steady state `R` (slightly
//! less by the connect latency itself). A device's first lifetime is a uniform fraction of a
//! drawn one, so the fleet starts at its steady churn rate instead of in lockstep.

use std::time::Duration;

use rand::Rng;
use serde::Deserialize;
use toml::Spanned;

use super::error::{ScenarioError, Source};
use super::traffic::TOPIC_VARS;
use super::values;
use super::Protocol;
use crate::template::{Template, Value};

/// Shortest mean session lifetime churn accepts: below it a device spends its life connecting.
pub const MIN_MEAN_LIFETIME: Duration = Duration::from_millis(100);

const DIST_FORM: &str =
    r#"expected a duration ("30s"), "uniform(10s, 50s)" or "exponential(30s)" (the mean)"#;
const CHURN_FORM: &str = r#"expected { lifetime = "30s" } or { rate = "20/s" }, with optional offline = "2s" and end = "clean" or "abrupt""#;

/// A group's `churn = { ... }` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawChurn {
    lifetime: Option<Spanned<String>>,
    rate: Option<Spanned<String>>,
    offline: Option<Spanned<String>>,
    end: Option<Spanned<String>>,
}

/// A group's `will = { ... }` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawWill {
    topic: Spanned<String>,
    payload: Option<String>,
    qos: Option<Spanned<u8>>,
    retain: Option<bool>,
    delay: Option<Spanned<String>>,
}

/// One `[[event]]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawEvent {
    at: Spanned<String>,
    action: Spanned<String>,
    group: Spanned<String>,
}

/// A distribution of durations (session lifetimes, offline times).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Dist {
    /// Always this long.
    Fixed(Duration),
    /// Uniform between the two bounds.
    Uniform(Duration, Duration),
    /// Exponential with this mean.
    Exponential(Duration),
}

impl Dist {
    /// The mean duration.
    pub fn mean(&self) -> Duration {
        match *self {
            Dist::Fixed(d) | Dist::Exponential(d) => d,
            Dist::Uniform(a, b) => (a + b) / 2,
        }
    }

    /// One draw.
    pub fn sample(&self, rng: &mut impl Rng) -> Duration {
        match *self {
            Dist::Fixed(d) => d,
            Dist::Uniform(a, b) => a + (b - a).mul_f64(rng.random::<f64>()),
            Dist::Exponential(mean) => {
                // Inverse CDF; 1 - u lies in (0, 1], so ln is finite. Capped at 50 means so a
                // freak draw cannot park a device for the whole run.
                let u: f64 = rng.random();
                mean.mul_f64((-(1.0 - u).ln()).min(50.0))
            }
        }
    }

    /// Parses `"30s"`, `"uniform(10s, 50s)"` or `"exponential(30s)"`; the message is the
    /// "is not ... (expected ...)" part.
    pub fn parse(text: &str) -> Result<Dist, String> {
        let t = text.trim();
        let bad = || format!("{text:?} is not a duration distribution ({DIST_FORM})");
        let inner = |name: &str| {
            t.strip_prefix(name)
                .and_then(|r| r.trim_start().strip_prefix('('))
                .and_then(|r| r.strip_suffix(')'))
        };
        if let Some(args) = inner("uniform") {
            let (a, b) = args.split_once(',').ok_or_else(bad)?;
            let (a, b) = (
                values::duration(a).map_err(|_| bad())?,
                values::duration(b).map_err(|_| bad())?,
            );
            if a > b {
                return Err(format!(
                    "{text:?} has its bounds the wrong way round ({DIST_FORM}, low <= high)"
                ));
            }
            return Ok(Dist::Uniform(a, b));
        }
        if let Some(mean) = inner("exponential").or_else(|| inner("exp")) {
            return Ok(Dist::Exponential(
                values::duration(mean).map_err(|_| bad())?,
            ));
        }
        values::duration(t).map(Dist::Fixed).map_err(|_| bad())
    }
}

impl std::fmt::Display for Dist {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let h = |d: Duration| humantime::format_duration(d).to_string();
        match *self {
            Dist::Fixed(d) => f.write_str(&h(d)),
            Dist::Uniform(a, b) => write!(f, "uniform({}, {})", h(a), h(b)),
            Dist::Exponential(m) => write!(f, "exponential({})", h(m)),
        }
    }
}

/// How a churned session ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EndKind {
    /// DISCONNECT, then the connection is closed: the broker discards the will.
    Clean,
    /// The connection is dropped without DISCONNECT ("power loss"): the broker publishes the
    /// will.
    Abrupt,
}

/// A group's validated churn.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ChurnPlan {
    /// Session lifetime from CONNACK.
    pub lifetime: Dist,
    /// Time between a session's end and the next connect attempt.
    pub offline: Dist,
    /// How sessions end.
    pub end: EndKind,
    /// The group's connects/s at steady state this plan aims at (devices / (mean lifetime +
    /// mean offline)).
    pub target_rate: f64,
}

/// A group's validated last will.
#[derive(Clone, Debug, PartialEq)]
pub struct WillPlan {
    /// Topic template (`{client_id}`, `{index}`, `{group}`).
    pub topic: Template,
    /// Will payload.
    pub payload: String,
    /// 0, 1 or 2.
    pub qos: u8,
    /// The will's retain flag.
    pub retain: bool,
    /// MQTT 5 will delay interval (zero: at once).
    pub delay: Duration,
}

impl WillPlan {
    /// The will topic of device `index` (client ID `client_id`) of `group`.
    pub fn topic_for(&self, group: &str, client_id: &str, index: u64) -> String {
        let mut topic = String::new();
        self.topic.render_into(&mut topic, |var| match var {
            "client_id" => Value::Text(client_id),
            "group" => Value::Text(group),
            _ => Value::Num(index),
        });
        topic
    }

    /// A subscription filter that matches every device's will topic: each topic level with a
    /// template variable becomes `+`.
    pub fn filter(&self) -> String {
        self.topic
            .source()
            .split('/')
            .map(|level| if level.contains('{') { "+" } else { level })
            .collect::<Vec<_>>()
            .join("/")
    }
}

/// What a group's lifecycle is (all optional).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LifecyclePlan {
    /// Sessions end and come back (`churn`).
    pub churn: Option<ChurnPlan>,
    /// Each device's last will (`will`).
    pub will: Option<WillPlan>,
}

/// What an `[[event]]` does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventAction {
    /// Drop every session of the group at once, without DISCONNECT.
    DropAll,
}

/// A planned `[[event]]`.
#[derive(Clone, Debug, PartialEq)]
pub struct EventPlan {
    /// When, from the start of the run (the same origin as `[[fault]]`).
    pub at: Duration,
    /// What.
    pub action: EventAction,
    /// Index of the group it applies to.
    pub group: usize,
}

/// Validates a group's `churn` and `will`.
pub(super) fn group(
    src: &Source<'_>,
    key: &dyn Fn(&str) -> String,
    devices: u64,
    protocol: Protocol,
    churn: Option<&Spanned<RawChurn>>,
    will: Option<&Spanned<RawWill>>,
) -> Result<LifecyclePlan, ScenarioError> {
    Ok(LifecyclePlan {
        churn: churn
            .map(|c| churn_plan(src, &key("churn"), devices, c))
            .transpose()?,
        will: will
            .map(|w| will_plan(src, &key("will"), protocol, w))
            .transpose()?,
    })
}

fn dist(src: &Source<'_>, key: &str, v: &Spanned<String>) -> Result<Dist, ScenarioError> {
    Dist::parse(v.get_ref()).map_err(|m| src.at(v.span().start, format!("{key}: {m}")))
}

fn churn_plan(
    src: &Source<'_>,
    key: &str,
    devices: u64,
    raw: &Spanned<RawChurn>,
) -> Result<ChurnPlan, ScenarioError> {
    let c = raw.get_ref();
    let offline = match &c.offline {
        Some(o) => dist(src, &format!("{key}.offline"), o)?,
        None => Dist::Fixed(Duration::ZERO),
    };
    let end = match c.end.as_ref().map(|e| (e, e.get_ref().as_str())) {
        None | Some((_, "clean")) => EndKind::Clean,
        Some((_, "abrupt")) => EndKind::Abrupt,
        Some((e, other)) => {
            return Err(src.at(
                e.span().start,
                format!(
                    r#"{key}.end: {other:?} is not a way to end (expected "clean" or "abrupt")"#
                ),
            ))
        }
    };
    let lifetime = match (&c.lifetime, &c.rate) {
        (Some(l), None) => {
            let d = dist(src, &format!("{key}.lifetime"), l)?;
            if d.mean() < MIN_MEAN_LIFETIME {
                return Err(src.at(
                    l.span().start,
                    format!(
                        "{key}.lifetime: {:?} has a mean below {MIN_MEAN_LIFETIME:?} (expected a longer lifetime)",
                        l.get_ref()
                    ),
                ));
            }
            d
        }
        (None, Some(r)) => {
            let at = r.span().start;
            let Some(rate) =
                values::rate(r.get_ref()).map_err(|m| src.at(at, format!("{key}.rate: {m}")))?
            else {
                return Err(src.at(
                    at,
                    format!(r#"{key}.rate: "max" is not a churn rate (expected connects/s such as "20/s")"#),
                ));
            };
            let cycle = devices as f64 / rate;
            let mean = cycle - offline.mean().as_secs_f64();
            if mean < MIN_MEAN_LIFETIME.as_secs_f64() {
                return Err(src.at(
                    at,
                    format!(
                        "{key}.rate: {:?} over {devices} devices leaves each a cycle of {cycle:.3}s, too short for a {offline} offline time plus a session of at least {MIN_MEAN_LIFETIME:?} (expected a lower rate or a shorter offline time)",
                        r.get_ref()
                    ),
                ));
            }
            Dist::Exponential(Duration::from_secs_f64(mean))
        }
        _ => return Err(src.at(raw.span().start, format!("{key}: {CHURN_FORM}"))),
    };
    let cycle = lifetime.mean() + offline.mean();
    Ok(ChurnPlan {
        lifetime,
        offline,
        end,
        target_rate: devices as f64 / cycle.as_secs_f64(),
    })
}

fn will_plan(
    src: &Source<'_>,
    key: &str,
    protocol: Protocol,
    raw: &Spanned<RawWill>,
) -> Result<WillPlan, ScenarioError> {
    let w = raw.get_ref();
    let topic = Template::parse(w.topic.get_ref(), TOPIC_VARS)
        .map_err(|e| src.at(w.topic.span().start, format!("{key}.topic: {e}")))?;
    if w.topic.get_ref().contains(['+', '#']) || w.topic.get_ref().is_empty() {
        return Err(src.at(
            w.topic.span().start,
            format!(
                "{key}.topic: {:?} is not a topic name (expected e.g. \"will/{{client_id}}\", no wildcards)",
                w.topic.get_ref()
            ),
        ));
    }
    let qos = match &w.qos {
        None => 0,
        Some(q) if *q.get_ref() <= 2 => *q.get_ref(),
        Some(q) => {
            return Err(src.at(
                q.span().start,
                format!(
                    "{key}.qos: {} is not a QoS (expected 0, 1 or 2)",
                    q.get_ref()
                ),
            ))
        }
    };
    let delay = match &w.delay {
        None => Duration::ZERO,
        Some(d) => {
            let v = values::duration(d.get_ref())
                .map_err(|m| src.at(d.span().start, format!("{key}.delay: {m}")))?;
            if !v.is_zero() && protocol != Protocol::V5 {
                return Err(src.at(
                    d.span().start,
                    format!(
                        r#"{key}.delay: {:?} needs MQTT 5 (expected protocol = "5", or no delay)"#,
                        d.get_ref()
                    ),
                ));
            }
            if v.subsec_nanos() != 0 || v.as_secs() > u64::from(u32::MAX) {
                return Err(src.at(
                    d.span().start,
                    format!(
                        r#"{key}.delay: {:?} is not whole seconds (expected e.g. "5s")"#,
                        d.get_ref()
                    ),
                ));
            }
            v
        }
    };
    Ok(WillPlan {
        topic,
        payload: w.payload.clone().unwrap_or_else(|| "offline".to_string()),
        qos,
        retain: w.retain.unwrap_or(false),
        delay,
    })
}

/// Validates the `[[event]]` entries against the group names, sorted by time.
pub(super) fn events(
    src: &Source<'_>,
    raw: Option<&Spanned<Vec<Spanned<RawEvent>>>>,
    groups: &[super::GroupPlan],
) -> Result<Vec<EventPlan>, ScenarioError> {
    let Some(list) = raw else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for (i, e) in list.get_ref().iter().enumerate() {
        let key = format!("event[{i}]");
        let e = e.get_ref();
        let at = values::duration(e.at.get_ref())
            .map_err(|m| src.at(e.at.span().start, format!("{key}.at: {m}")))?;
        let action = match e.action.get_ref().as_str() {
            "drop-all" => EventAction::DropAll,
            other => {
                return Err(src.at(
                    e.action.span().start,
                    format!(r#"{key}.action: {other:?} is not an event (expected "drop-all")"#),
                ))
            }
        };
        let Some(group) = groups.iter().position(|g| &g.name == e.group.get_ref()) else {
            let names: Vec<&str> = groups.iter().map(|g| g.name.as_str()).collect();
            return Err(src.at(
                e.group.span().start,
                format!(
                    "{key}.group: {:?} is not a group (expected one of {})",
                    e.group.get_ref(),
                    names.join(", ")
                ),
            ));
        };
        out.push(EventPlan { at, action, group });
    }
    out.sort_by_key(|e| e.at);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::time::Duration;

    use rand::SeedableRng;

    use super::*;
    use crate::scenario::{Overrides, Plan};

    fn plan(group: &str, extra: &str) -> Result<Plan, String> {
        let text = format!(
            "name = \"l\"\nduration = \"1s\"\n[[group]]\nname = \"g\"\ndevices = 100\nclient_id = \"d-{{index}}\"\n{group}\n{extra}"
        );
        Plan::from_str(&text, Path::new("l.toml"), &Overrides::default()).map_err(|e| e.to_string())
    }

    #[test]
    fn distributions_parse_and_print() {
        let s = Duration::from_secs;
        assert_eq!(Dist::parse("30s"), Ok(Dist::Fixed(s(30))));
        assert_eq!(
            Dist::parse("uniform(10s, 50s)"),
            Ok(Dist::Uniform(s(10), s(50)))
        );
        assert_eq!(
            Dist::parse(" exponential( 30s ) "),
            Ok(Dist::Exponential(s(30)))
        );
        assert_eq!(Dist::parse("exp(2m)"), Ok(Dist::Exponential(s(120))));
        assert_eq!(Dist::Uniform(s(10), s(50)).mean(), s(30));
        assert_eq!(Dist::Uniform(s(1), s(3)).to_string(), "uniform(1s, 3s)");
        for bad in [
            "soon",
            "uniform(5s)",
            "uniform(5s, 1s)",
            "exponential(x)",
            "normal(1s)",
        ] {
            assert!(Dist::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn seeded_draws_repeat_and_have_the_planned_mean() {
        let mean_of = |d: Dist, seed| {
            let mut rng = rand::rngs::SmallRng::seed_from_u64(seed);
            let draws: Vec<Duration> = (0..20_000).map(|_| d.sample(&mut rng)).collect();
            (draws.iter().sum::<Duration>() / draws.len() as u32, draws)
        };
        let s = Duration::from_secs;
        let (m, a) = mean_of(Dist::Exponential(s(10)), 1);
        assert!((9.6..10.4).contains(&m.as_secs_f64()), "{m:?}");
        assert_eq!(
            a,
            mean_of(Dist::Exponential(s(10)), 1).1,
            "same seed, same draws"
        );
        // Exponential: about 1 - 1/e = 63% below the mean.
        let below = a.iter().filter(|d| **d < s(10)).count() as f64 / a.len() as f64;
        assert!((0.61..0.65).contains(&below), "{below}");
        let (m, u) = mean_of(Dist::Uniform(s(2), s(4)), 2);
        assert!((2.95..3.05).contains(&m.as_secs_f64()), "{m:?}");
        assert!(u.iter().all(|d| (s(2)..=s(4)).contains(d)));
        assert_eq!(mean_of(Dist::Fixed(s(7)), 3).0, s(7));
    }

    #[test]
    fn churn_by_lifetime_or_by_rate() {
        let p = plan(
            r#"churn = { lifetime = "uniform(10s, 30s)", offline = "5s", end = "abrupt" }"#,
            "",
        )
        .unwrap();
        let c = p.groups[0].lifecycle.churn.unwrap();
        assert_eq!(c.end, EndKind::Abrupt);
        assert!((c.target_rate - 4.0).abs() < 1e-9, "{}", c.target_rate);
        // 100 devices at 20/s: a 5 s cycle, 1 s of it offline -> exponential lifetime, mean 4 s.
        let p = plan(r#"churn = { rate = "20/s", offline = "1s" }"#, "").unwrap();
        let c = p.groups[0].lifecycle.churn.unwrap();
        assert_eq!(c.lifetime, Dist::Exponential(Duration::from_secs(4)));
        assert_eq!(c.end, EndKind::Clean);
        assert!((c.target_rate - 20.0).abs() < 1e-9);
    }

    #[test]
    fn bad_churn_names_key_value_and_form() {
        for (bad, needle) in [
            (r#"churn = { offline = "1s" }"#, "group[0].churn: expected"),
            (
                r#"churn = { lifetime = "1s", rate = "1/s" }"#,
                "group[0].churn: expected",
            ),
            (
                r#"churn = { lifetime = "often" }"#,
                "group[0].churn.lifetime: \"often\" is not a duration distribution",
            ),
            (r#"churn = { lifetime = "10ms" }"#, "mean below"),
            (
                r#"churn = { rate = "1000/s", offline = "1s" }"#,
                "too short",
            ),
            (r#"churn = { rate = "max" }"#, "not a churn rate"),
            (
                r#"churn = { lifetime = "1s", end = "crash" }"#,
                r#""crash" is not a way to end"#,
            ),
            (r#"churn = { lifetime = "1s", every = "1s" }"#, "every"),
        ] {
            let err = plan(bad, "").unwrap_err();
            assert!(err.contains(needle), "{bad}: {err}");
            assert!(err.starts_with("l.toml:7:"), "{err}");
        }
    }

    #[test]
    fn wills_and_their_filter() {
        let p = plan(
            r#"will = { topic = "will/{group}/{client_id}", payload = "bye", qos = 1, retain = true }"#,
            "",
        )
        .unwrap();
        let w = p.groups[0].lifecycle.will.clone().unwrap();
        assert_eq!(w.topic_for("g", "d-7", 7), "will/g/d-7");
        assert_eq!(w.filter(), "will/+/+");
        assert_eq!((w.qos, w.retain, w.payload.as_str()), (1, true, "bye"));
        let err = plan(r#"will = { topic = "w/{client_id}", delay = "5s" }"#, "").unwrap_err();
        assert!(err.contains("needs MQTT 5"), "{err}");
        let v5 = plan(
            "protocol = \"5\"\nwill = { topic = \"w/{client_id}\", delay = \"5s\" }",
            "",
        )
        .unwrap();
        assert_eq!(
            v5.groups[0].lifecycle.will.as_ref().unwrap().delay,
            Duration::from_secs(5)
        );
        let err = plan(r#"will = { topic = "w/#" }"#, "").unwrap_err();
        assert!(err.contains("is not a topic name"), "{err}");
        let err = plan(r#"will = { topic = "w", qos = 3 }"#, "").unwrap_err();
        assert!(err.contains("3 is not a QoS"), "{err}");
    }

    #[test]
    fn events_name_an_existing_group() {
        let p = plan(
            "",
            "[[event]]\nat = \"3s\"\naction = \"drop-all\"\ngroup = \"g\"\n[[event]]\nat = \"1s\"\naction = \"drop-all\"\ngroup = \"g\"\n",
        )
        .unwrap();
        assert_eq!(p.events.len(), 2);
        assert_eq!(p.events[0].at, Duration::from_secs(1));
        assert_eq!(p.events[1].action, EventAction::DropAll);
        let err = plan(
            "",
            "[[event]]\nat = \"1s\"\naction = \"drop-all\"\ngroup = \"x\"\n",
        )
        .unwrap_err();
        assert!(
            err.contains(r#"event[0].group: "x" is not a group (expected one of g)"#),
            "{err}"
        );
        let err = plan(
            "",
            "[[event]]\nat = \"1s\"\naction = \"explode\"\ngroup = \"g\"\n",
        )
        .unwrap_err();
        assert!(err.contains(r#""explode" is not an event"#), "{err}");
    }
}
