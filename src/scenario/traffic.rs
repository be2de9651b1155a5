//! A group's traffic: what its devices publish and subscribe to.
//!
//! Rates are **per device**: `rate = "2/s"` in a group of 1,000 devices is 2,000 messages per
//! second for the group. Each device follows its own open-model schedule (constant or Poisson
//! arrivals), so a slow acknowledgement delays that message, never the next one's intended
//! time. `rate = "max"` is the closed-loop exception: a device sends its next message as soon as the
//! previous one is acknowledged (QoS 0: written), one at a time like mqtt-benchmark; more
//! pressure means more devices. (20 in flight per device made mosquitto acknowledge 72k/s
//! and deliver 15k/s, dropping the rest: a flood measures queue overflow, not throughput.)

use toml::Spanned;

use super::error::{ScenarioError, Source};
use super::raw::{RawPublish, RawSubscribe};
use super::values;
use crate::fleet::pacer::Arrivals;
use crate::template::{Template, Value};
use crate::traffic::payload::{PayloadSpec, PayloadTemplate, HEADER_LEN};

/// Variables a topic template may use.
pub const TOPIC_VARS: &[&str] = &["client_id", "index", "group"];
/// Raw payload size when neither `size` nor `payload` is given.
pub const DEFAULT_SIZE: usize = 64;
/// Fastest per-device rate a schedule can keep: tokio timers tick in whole milliseconds, so a
/// device asked for more would silently fall behind its intended times.
pub const MAX_DEVICE_RATE: f64 = 1000.0;
/// Longest topic name or filter MQTT can carry (a 2-byte length prefix).
pub const MAX_TOPIC_BYTES: usize = 65_535;

/// What each device of a group publishes.
#[derive(Clone, Debug, PartialEq)]
pub struct PublishPlan {
    /// Topic template, e.g. `dt/{client_id}/telemetry`.
    pub topic: Template,
    /// 0, 1 or 2.
    pub qos: u8,
    /// The MQTT retain flag.
    pub retain: bool,
    /// Messages per second per device; `None` = "max" (closed loop, see the module doc).
    pub rate: Option<f64>,
    /// Spread of messages in time at `rate`.
    pub arrivals: Arrivals,
    /// Raw bytes of a size, or a JSON template; both carry the measurement header.
    pub payload: PayloadSpec,
}

impl PublishPlan {
    /// The topic device `index` (client ID `client_id`) of group `group` publishes to.
    pub fn topic_for(&self, group: &str, client_id: &str, index: u64) -> String {
        let mut topic = String::new();
        self.topic.render_into(&mut topic, |var| match var {
            "client_id" => Value::Text(client_id),
            "group" => Value::Text(group),
            _ => Value::Num(index),
        });
        topic
    }
}

/// One subscription of every device of a group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubscribePlan {
    /// MQTT topic filter (`+` and `#` wildcards).
    pub filter: String,
    /// Requested QoS, 0..=2.
    pub qos: u8,
}

pub(super) fn publish(
    src: &Source<'_>,
    key: &str,
    p: &Spanned<RawPublish>,
) -> Result<PublishPlan, ScenarioError> {
    let raw = p.get_ref();
    let topic = Template::parse(raw.topic.get_ref(), TOPIC_VARS)
        .map_err(|e| src.at(raw.topic.span().start, format!("{key}.topic: {e}")))?;
    if raw.topic.get_ref().contains(['+', '#']) {
        return Err(src.at(
            raw.topic.span().start,
            format!("{key}.topic: {:?} has a wildcard (expected a topic name; `+` and `#` belong in subscribe filters)", raw.topic.get_ref()),
        ));
    }
    if let Err(why) = check_topic_text(raw.topic.get_ref()) {
        return Err(src.at(
            raw.topic.span().start,
            format!("{key}.topic: {} {why}", shown(raw.topic.get_ref())),
        ));
    }
    // Basic ingest (`$aws/rules/RULE/...`): AWS IoT refuses a bad rule name.
    if let Err(why) = crate::aws::topics::check_ingest(raw.topic.get_ref()) {
        return Err(src.at(raw.topic.span().start, format!("{key}.topic: {why}")));
    }
    let qos = qos(src, &format!("{key}.qos"), raw.qos.as_ref())?;
    let rate = match &raw.rate {
        None => Some(1.0),
        Some(r) => values::rate(r.get_ref())
            .map_err(|m| src.at(r.span().start, format!("{key}.rate: {m}")))?,
    };
    if let (Some(per_sec), Some(r)) = (rate, &raw.rate) {
        if per_sec > MAX_DEVICE_RATE {
            return Err(src.at(
                r.span().start,
                format!(
                    r#"{key}.rate: {:?} is more than one device can schedule (expected at most "{MAX_DEVICE_RATE}/s" per device: timers have 1 ms resolution; use more devices, or "max" for closed-loop sending)"#,
                    r.get_ref()
                ),
            ));
        }
    }
    let arrivals = match raw.arrivals.as_ref().map(|a| (a, a.get_ref().as_str())) {
        None | Some((_, "constant")) => Arrivals::Constant,
        Some((_, "poisson")) => Arrivals::Poisson,
        Some((a, other)) => {
            return Err(src.at(a.span().start, format!(r#"{key}.arrivals: {other:?} is not an arrival model (expected "constant" or "poisson")"#)))
        }
    };
    if let (None, Some(a)) = (rate, &raw.arrivals) {
        return Err(src.at(a.span().start, format!(r#"{key}.arrivals: a "max" rate has no schedule (remove `arrivals` or give a rate such as "10/s")"#)));
    }
    let payload = match (&raw.size, &raw.payload) {
        (Some(_), Some(t)) => {
            return Err(src.at(t.span().start, format!("{key}: `size` and `payload` both given (expected one: raw bytes of a size, or a JSON template)")))
        }
        (Some(size), None) => PayloadSpec::raw(*size.get_ref() as usize)
            .map_err(|e| src.at(size.span().start, format!("{key}.size: {e}")))?,
        (None, Some(t)) => {
            if !t.get_ref().is_table() {
                return Err(src.at(t.span().start, format!("{key}.payload: expected a table of fields, e.g. {{ temperature = \"sinusoid(20, 5, 60s)\" }}")));
            }
            PayloadSpec::Json(
                PayloadTemplate::compile(t.get_ref())
                    .map_err(|e| src.at(t.span().start, format!("{key}.{e}")))?,
            )
        }
        (None, None) => PayloadSpec::raw(DEFAULT_SIZE.max(HEADER_LEN)).expect("default size is valid"),
    };
    Ok(PublishPlan {
        topic,
        qos,
        retain: raw.retain.unwrap_or(false),
        rate,
        arrivals,
        payload,
    })
}

pub(super) fn subscribe(
    src: &Source<'_>,
    key: &str,
    list: &Spanned<Vec<Spanned<RawSubscribe>>>,
) -> Result<Vec<SubscribePlan>, ScenarioError> {
    if list.get_ref().is_empty() {
        return Err(src.at(
            list.span().start,
            format!(r#"{key}: empty (expected e.g. [{{ filter = "dt/+/telemetry", qos = 1 }}])"#),
        ));
    }
    list.get_ref()
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let s = s.get_ref();
            let filter = s.filter.get_ref();
            if let Err(why) = check_filter(filter) {
                return Err(src.at(
                    s.filter.span().start,
                    format!("{key}[{i}].filter: {} {why}", shown(filter)),
                ));
            }
            Ok(SubscribePlan {
                filter: filter.clone(),
                qos: qos(src, &format!("{key}[{i}].qos"), s.qos.as_ref())?,
            })
        })
        .collect()
}

fn qos(src: &Source<'_>, key: &str, q: Option<&Spanned<u8>>) -> Result<u8, ScenarioError> {
    match q {
        None => Ok(1),
        Some(q) if *q.get_ref() <= 2 => Ok(*q.get_ref()),
        Some(q) => Err(src.at(
            q.span().start,
            format!("{key}: {} is not a QoS (expected 0, 1 or 2)", q.get_ref()),
        )),
    }
}

/// A value quoted for an error line: whole when short, else its start and its length (a 64 KiB
/// topic must not become a 64 KiB error line).
fn shown(text: &str) -> String {
    const KEEP: usize = 48;
    match text.char_indices().nth(KEEP) {
        None => format!("{text:?}"),
        Some((end, _)) => format!("{:?}... ({} bytes)", &text[..end], text.len()),
    }
}

/// What MQTT forbids in any topic name or filter (section 4.7.3): empty, U+0000, longer than
/// its 2-byte length prefix. Checked on the template text: variables only add non-empty text
/// (client IDs and group names are themselves checked), so a template that passes renders to a
/// topic that passes, except for length, which the runner's templates keep far below the limit.
fn check_topic_text(topic: &str) -> Result<(), &'static str> {
    if topic.is_empty() {
        return Err("is empty (expected a topic name such as \"dt/{client_id}/telemetry\")");
    }
    if topic.contains('\0') {
        return Err("contains U+0000, which MQTT forbids in topics (expected printable text)");
    }
    if topic.len() > MAX_TOPIC_BYTES {
        return Err(
            "is longer than 65535 bytes, the most MQTT can carry (expected a shorter topic)",
        );
    }
    Ok(())
}

/// MQTT filter rules: non-empty, no U+0000, at most 65535 bytes, `+` a whole level, `#` a whole
/// last level.
fn check_filter(filter: &str) -> Result<(), &'static str> {
    if filter.is_empty() {
        return Err("is empty (expected a topic filter such as \"dt/+/telemetry\")");
    }
    check_topic_text(filter)?;
    let levels: Vec<&str> = filter.split('/').collect();
    for (i, level) in levels.iter().enumerate() {
        if level.contains('+') && *level != "+" {
            return Err("uses `+` inside a level (expected `+` alone between slashes)");
        }
        if level.contains('#') && (*level != "#" || i + 1 != levels.len()) {
            return Err("uses `#` other than as the whole last level (expected e.g. \"dt/#\")");
        }
    }
    Ok(())
}

/// Whether topic name `topic` matches filter `filter` (MQTT 3.1.1 section 4.7); topics starting
/// with `$` match no filter that starts with a wildcard.
pub fn matches(filter: &str, topic: &str) -> bool {
    if topic.starts_with('$') && (filter.starts_with('+') || filter.starts_with('#')) {
        return false;
    }
    let mut f = filter.split('/');
    let mut t = topic.split('/');
    loop {
        match (f.next(), t.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filter_matching() {
        assert!(matches("dt/+/telemetry", "dt/sensor-1/telemetry"));
        assert!(!matches("dt/+/telemetry", "dt/sensor-1/status"));
        assert!(matches("dt/#", "dt/a/b/c"));
        assert!(matches("dt/#", "dt"));
        assert!(matches("#", "a"));
        assert!(!matches("#", "$aws/things"));
        assert!(matches("bench/fan-001", "bench/fan-001"));
        assert!(!matches("bench/+", "bench/a/b"));
    }

    #[test]
    fn filter_rules() {
        assert!(check_filter("a/+/b").is_ok());
        assert!(check_filter("a/#").is_ok());
        assert!(check_filter("a/b+").is_err());
        assert!(check_filter("a/#/b").is_err());
        assert!(check_filter("").is_err());
        assert!(check_filter("a/\0").is_err());
        assert!(check_filter(&"a".repeat(MAX_TOPIC_BYTES + 1)).is_err());
        assert!(check_topic_text("").is_err());
        assert!(check_topic_text("dt/{client_id}").is_ok());
    }
}
