//! A group's reconnect policy: `reconnect = { initial = "100ms", max = "5s" }` (the default)
//! or `reconnect = "none"` (a lost session stays lost, counted `dropped`).
//!
//! rumqttc reconnects on its next poll with no backoff, so the runner owns the policy
//! (DESIGN.md section 9); this is only its validated description.

use std::time::Duration;

use toml::Spanned;

use super::error::{ScenarioError, Source};
use super::values;

/// Default first backoff ceiling.
pub const DEFAULT_INITIAL: Duration = Duration::from_millis(100);
/// Default largest backoff ceiling.
pub const DEFAULT_MAX: Duration = Duration::from_secs(5);

const FORM: &str = r#"expected "none" or { initial = "100ms", max = "5s" } with 1ms <= initial <= max <= 1h"#;

/// How a device whose session was lost comes back: exponential backoff with full jitter, the
/// ceiling starting at `initial` and doubling up to `max`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReconnectPlan {
    /// Ceiling of the first delay.
    pub initial: Duration,
    /// Largest ceiling.
    pub max: Duration,
}

impl Default for ReconnectPlan {
    fn default() -> Self {
        ReconnectPlan {
            initial: DEFAULT_INITIAL,
            max: DEFAULT_MAX,
        }
    }
}

/// Validates a group's `reconnect` value; `None` in the result means "none".
pub(super) fn reconnect(
    src: &Source<'_>,
    key: &str,
    value: Option<&Spanned<toml::Value>>,
) -> Result<Option<ReconnectPlan>, ScenarioError> {
    let Some(value) = value else {
        return Ok(Some(ReconnectPlan::default()));
    };
    let bad = |m: String| src.at(value.span().start, format!("{key}: {m}"));
    match value.get_ref() {
        toml::Value::String(s) if s == "none" => Ok(None),
        toml::Value::Table(t) => {
            let mut plan = ReconnectPlan::default();
            for (k, v) in t {
                let d = match v {
                    toml::Value::String(s) => values::duration(s).map_err(|m| bad(format!("{k}: {m}")))?,
                    other => return Err(bad(format!("{k} = {other} is not a duration ({FORM})"))),
                };
                match k.as_str() {
                    "initial" => plan.initial = d,
                    "max" => plan.max = d,
                    _ => return Err(bad(format!("unknown key `{k}` ({FORM})"))),
                }
            }
            let ms = Duration::from_millis(1);
            if plan.initial < ms || plan.initial > plan.max || plan.max > Duration::from_secs(3600) {
                return Err(bad(format!(
                    "initial {:?} / max {:?} are out of range ({FORM})",
                    plan.initial, plan.max
                )));
            }
            Ok(Some(plan))
        }
        other => Err(bad(format!("{other} is not a reconnect policy ({FORM})"))),
    }
}
