//! A group's reconnect policy: `reconnect = { initial = "100ms", max = "5s" }` (the default:
//! exponential backoff with full jitter), `reconnect = { fixed = "1s" }` (every attempt waits
//! exactly that long: no jitter, so a fleet dropped at one instant comes back in lockstep), or
//! `reconnect = "none"` (a lost session stays lost, counted `dropped`).
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

const FORM: &str = r#"expected "none", { fixed = "1s" } or { initial = "100ms", max = "5s" } with 1ms <= initial <= max <= 1h"#;

/// How a device whose session was lost comes back: exponential backoff with full jitter, the
/// ceiling starting at `initial` and doubling up to `max`; or, when `fixed`, exactly `initial`
/// before every attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReconnectPlan {
    /// Ceiling of the first delay (`fixed`: every delay).
    pub initial: Duration,
    /// Largest ceiling (`fixed`: equal to `initial`).
    pub max: Duration,
    /// Fixed delay, no jitter (`{ fixed = "1s" }`).
    pub fixed: bool,
}

impl Default for ReconnectPlan {
    fn default() -> Self {
        ReconnectPlan {
            initial: DEFAULT_INITIAL,
            max: DEFAULT_MAX,
            fixed: false,
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
                    toml::Value::String(s) => {
                        values::duration(s).map_err(|m| bad(format!("{k}: {m}")))?
                    }
                    other => return Err(bad(format!("{k} = {other} is not a duration ({FORM})"))),
                };
                match k.as_str() {
                    "initial" => plan.initial = d,
                    "max" => plan.max = d,
                    "fixed" if t.len() == 1 => {
                        plan = ReconnectPlan {
                            initial: d,
                            max: d,
                            fixed: true,
                        }
                    }
                    "fixed" => {
                        return Err(bad(format!("`fixed` takes no `initial` or `max` ({FORM})")))
                    }
                    _ => return Err(bad(format!("unknown key `{k}` ({FORM})"))),
                }
            }
            let ms = Duration::from_millis(1);
            if plan.initial < ms || plan.initial > plan.max || plan.max > Duration::from_secs(3600)
            {
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

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::time::Duration;

    use super::ReconnectPlan;
    use crate::scenario::{Overrides, Plan};

    fn plan(extra: &str) -> Result<Plan, String> {
        let text = format!(
            "name = \"r\"\nduration = \"1s\"\n[[group]]\nname = \"g\"\ndevices = 1\nclient_id = \"d\"\n{extra}"
        );
        Plan::from_str(&text, Path::new("r.toml"), &Overrides::default()).map_err(|e| e.to_string())
    }

    #[test]
    fn default_none_and_custom() {
        assert_eq!(
            plan("").unwrap().groups[0].reconnect,
            Some(ReconnectPlan::default())
        );
        assert_eq!(
            plan("reconnect = \"none\"").unwrap().groups[0].reconnect,
            None
        );
        let custom = plan("reconnect = { initial = \"50ms\", max = \"2s\" }").unwrap();
        assert_eq!(
            custom.groups[0].reconnect,
            Some(ReconnectPlan {
                initial: Duration::from_millis(50),
                max: Duration::from_secs(2),
                fixed: false,
            })
        );
        let fixed = plan("reconnect = { fixed = \"1s\" }").unwrap();
        assert_eq!(
            fixed.groups[0].reconnect,
            Some(ReconnectPlan {
                initial: Duration::from_secs(1),
                max: Duration::from_secs(1),
                fixed: true,
            })
        );
    }

    #[test]
    fn bad_values_name_the_key_the_value_and_the_form() {
        for (bad, needle) in [
            (
                "reconnect = \"sometimes\"",
                "\"sometimes\" is not a reconnect policy",
            ),
            (
                "reconnect = { initial = \"5s\", max = \"1s\" }",
                "out of range",
            ),
            (
                "reconnect = { initial = \"soon\" }",
                "\"soon\" is not a duration",
            ),
            ("reconnect = { jitter = \"1s\" }", "unknown key `jitter`"),
            (
                "reconnect = { fixed = \"1s\", max = \"2s\" }",
                "`fixed` takes no `initial` or `max`",
            ),
            (
                "reconnect = { initial = 5 }",
                "initial = 5 is not a duration",
            ),
        ] {
            let err = plan(bad).unwrap_err();
            assert!(err.contains("group[0].reconnect"), "{err}");
            assert!(err.contains(needle), "{bad}: {err}");
            assert!(err.contains("r.toml:7:"), "{err}");
        }
    }
}
