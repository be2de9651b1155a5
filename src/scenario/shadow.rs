//! A group's `shadow = { ... }`: AWS IoT Device Shadow flows per device.
//!
//! ```toml
//! [[group]]
//! name = "thermostats"
//! devices = 20
//! client_id = "thermo-{index:03}"          # the thing name is the client ID (AWS's convention)
//! shadow = { name = "config", update = "1/s", desired = "0.2/s", react = true, get = true, delete = true, versioned = true, qos = 1 }
//! ```
//!
//! - `name`: a named shadow (`$aws/things/{thing}/shadow/name/{name}/...`); omitted: the
//!   classic shadow.
//! - `update`: reported-state updates per device (`"1/s"`, constant schedule, default "1/s").
//! - `desired`: optional; the device also writes `desired` at this rate, acting as the app
//!   that commands it, so the delta path (`update/delta`) is exercised and timed.
//! - `react` (default true): on a delta, apply it and report it back; times the round trip.
//! - `get` (default true): read the shadow after subscribing (a 404 then is expected).
//! - `delete` (default false): delete the shadow when the run ends.
//! - `versioned` (default true): updates carry the version last seen (optimistic locking: a
//!   409 means someone else wrote in between).
//! - `qos`: 0 or 1 (AWS IoT does not take QoS 2), default 1.

use toml::Spanned;

use super::error::{ScenarioError, Source};
use super::raw::RawGroup;
use super::values;

/// Fastest shadow request rate per device: AWS IoT throttles a thing's shadow updates well
/// below this, and one device keeps one request in flight at a time.
pub const MAX_SHADOW_RATE: f64 = 100.0;

/// `shadow = { ... }` as written.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawShadow {
    pub name: Option<Spanned<String>>,
    pub update: Option<Spanned<String>>,
    pub desired: Option<Spanned<String>>,
    pub react: Option<bool>,
    pub get: Option<bool>,
    pub delete: Option<bool>,
    pub versioned: Option<bool>,
    pub qos: Option<Spanned<u8>>,
}

/// What each device of a shadow group does with its shadow.
#[derive(Clone, Debug, PartialEq)]
pub struct ShadowPlan {
    /// Named shadow; `None`: the classic shadow.
    pub name: Option<String>,
    /// Reported-state updates per second per device.
    pub update_rate: f64,
    /// Desired-state writes per second per device (the device acting as its app), if any.
    pub desired_rate: Option<f64>,
    /// Apply each delta and report it back.
    pub react: bool,
    /// GET the shadow once subscribed.
    pub get: bool,
    /// DELETE the shadow at the end of the run.
    pub delete: bool,
    /// Send the last seen version with each update.
    pub versioned: bool,
    /// MQTT QoS of requests and response subscriptions (0 or 1).
    pub qos: u8,
}

pub(super) fn shadow(
    src: &Source<'_>,
    key: &str,
    g: &RawGroup,
) -> Result<Option<ShadowPlan>, ScenarioError> {
    let Some(s) = &g.shadow else { return Ok(None) };
    let at = src;
    if let Some(p) = &g.publish {
        return Err(at.at(p.span().start, format!("{key}: a shadow group cannot also have `publish` (expected the publisher in a separate [[group]])")));
    }
    if let Some(p) = &g.subscribe {
        return Err(at.at(p.span().start, format!("{key}: a shadow group cannot also have `subscribe` (its devices subscribe to their shadow's response topics themselves; expected other subscriptions in a separate [[group]])")));
    }
    let raw = s.get_ref();
    let name = match &raw.name {
        None => None,
        Some(n) => {
            let v = n.get_ref();
            let ok = (1..=64).contains(&v.len())
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"_-:".contains(&b));
            if !ok {
                return Err(src.at(n.span().start, format!("{key}.name: {v:?} is not a shadow name (expected 1-64 of a-z A-Z 0-9 _ - :)")));
            }
            Some(v.clone())
        }
    };
    let rate = |r: &Spanned<String>, what: &str| -> Result<f64, ScenarioError> {
        match values::rate(r.get_ref()) {
            Ok(Some(v)) if v > 0.0 && v <= MAX_SHADOW_RATE => Ok(v),
            Ok(_) => Err(src.at(r.span().start, format!("{key}.{what}: {:?} is out of range (expected a rate such as \"1/s\", at most {MAX_SHADOW_RATE}/s per device; \"max\" is not a shadow rate)", r.get_ref()))),
            Err(m) => Err(src.at(r.span().start, format!("{key}.{what}: {m}"))),
        }
    };
    let update_rate = match &raw.update {
        None => 1.0,
        Some(r) => rate(r, "update")?,
    };
    let desired_rate = raw
        .desired
        .as_ref()
        .map(|r| rate(r, "desired"))
        .transpose()?;
    let qos = match &raw.qos {
        None => 1,
        Some(q) if *q.get_ref() <= 1 => *q.get_ref(),
        Some(q) => {
            return Err(src.at(
                q.span().start,
                format!(
                "{key}.qos: {} is not a shadow QoS (expected 0 or 1: AWS IoT does not take QoS 2)",
                q.get_ref()
            ),
            ))
        }
    };
    Ok(Some(ShadowPlan {
        name,
        update_rate,
        desired_rate,
        react: raw.react.unwrap_or(true),
        get: raw.get.unwrap_or(true),
        delete: raw.delete.unwrap_or(false),
        versioned: raw.versioned.unwrap_or(true),
        qos,
    }))
}
