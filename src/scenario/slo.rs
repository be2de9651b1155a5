//! The scenario's `[slo]` table into [`Slo`]s, with errors at the key's `file:line:col`.

use std::collections::BTreeMap;

use toml::Spanned;

use super::error::{ScenarioError, Source};
use crate::slo::Slo;

/// Parses `[slo]`; every entry is `metric = "threshold"` (numbers allowed for rates and
/// fractions).
pub(super) fn slos(
    src: &Source<'_>,
    table: Option<&BTreeMap<Spanned<String>, Spanned<toml::Value>>>,
) -> Result<Vec<Slo>, ScenarioError> {
    let Some(table) = table else {
        return Ok(Vec::new());
    };
    // In file order (the map is sorted by name).
    let mut entries: Vec<_> = table.iter().collect();
    entries.sort_by_key(|(k, _)| k.span().start);
    let mut out = Vec::new();
    for (key, value) in entries {
        let text = match value.get_ref() {
            toml::Value::String(s) => s.clone(),
            toml::Value::Integer(n) => n.to_string(),
            toml::Value::Float(x) => x.to_string(),
            other => {
                return Err(src.at(
                    value.span().start,
                    format!(
                        "slo.{}: {} is not a threshold (expected a string such as \"50ms\", \"1000/s\" or \"0.1%\")",
                        key.get_ref(),
                        other
                    ),
                ))
            }
        };
        let key_text = key.get_ref();
        let slo = Slo::parse_entry(key_text, &text).map_err(|e| {
            let at = if e.0.starts_with("unknown SLO metric") {
                key.span().start
            } else {
                value.span().start
            };
            let rest = e.0.strip_prefix(&format!("{key_text}: ")).unwrap_or(&e.0);
            src.at(at, format!("slo.{key_text}: {rest}"))
        })?;
        out.push(slo);
    }
    Ok(out)
}
