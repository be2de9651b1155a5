//! Name templates such as `sensor-{index:05}` or `dt/{client_id}/telemetry`.
//!
//! Templates are parsed once (at scenario or CLI load) into segments, so rendering a name for
//! device 41 of 100,000 is a few string pushes, and a typo in a variable name is reported before
//! any certificate is generated or any connection is opened.

use std::fmt::{self, Write as _};

/// A parsed template: literal text interleaved with `{variable}` or `{variable:0N}` slots.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Template {
    source: String,
    segments: Vec<Segment>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Segment {
    Literal(String),
    Var { name: String, width: usize },
}

/// Why a template string was refused; the message names the template and the expected form.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("template `{template}`: {reason} (expected text with slots like {{index}}, {{index:05}} using {allowed})")]
pub struct TemplateError {
    template: String,
    reason: String,
    allowed: String,
}

impl Template {
    /// Parses `source`, accepting only the variable names in `allowed`.
    ///
    /// `{{` and `}}` stand for literal braces. A width such as `:05` zero-pads numbers and
    /// right-aligns text to that many characters.
    pub fn parse(source: &str, allowed: &[&str]) -> Result<Self, TemplateError> {
        let err = |reason: String| TemplateError {
            template: source.to_string(),
            reason,
            allowed: allowed
                .iter()
                .map(|a| format!("{{{a}}}"))
                .collect::<Vec<_>>()
                .join(", "),
        };
        let mut segments = Vec::new();
        let mut literal = String::new();
        let mut chars = source.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '{' if chars.peek() == Some(&'{') => {
                    chars.next();
                    literal.push('{');
                }
                '}' if chars.peek() == Some(&'}') => {
                    chars.next();
                    literal.push('}');
                }
                '}' => return Err(err("unmatched `}`".into())),
                '{' => {
                    let mut inner = String::new();
                    loop {
                        match chars.next() {
                            Some('}') => break,
                            Some(c) => inner.push(c),
                            None => return Err(err("unclosed `{`".into())),
                        }
                    }
                    let (name, width) = match inner.split_once(':') {
                        None => (inner.as_str(), 0),
                        Some((name, spec)) => {
                            let digits = spec.strip_prefix('0').unwrap_or(spec);
                            let width = digits.parse::<usize>().ok().filter(|w| *w <= 20);
                            match width {
                                Some(w) if !digits.is_empty() => (name, w),
                                _ => {
                                    return Err(err(format!("bad width `{spec}` in `{{{inner}}}`")))
                                }
                            }
                        }
                    };
                    if !allowed.contains(&name) {
                        return Err(err(format!("unknown variable `{{{name}}}`")));
                    }
                    if !literal.is_empty() {
                        segments.push(Segment::Literal(std::mem::take(&mut literal)));
                    }
                    segments.push(Segment::Var {
                        name: name.to_string(),
                        width,
                    });
                }
                c => literal.push(c),
            }
        }
        if !literal.is_empty() {
            segments.push(Segment::Literal(literal));
        }
        Ok(Template {
            source: source.to_string(),
            segments,
        })
    }

    /// The text the template was parsed from (used as a cache key and in reports).
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Whether the template uses `name` (a client-ID template without `{index}` would give every
    /// device the same identity).
    pub fn uses(&self, name: &str) -> bool {
        self.segments
            .iter()
            .any(|s| matches!(s, Segment::Var { name: n, .. } if n == name))
    }

    /// Appends the rendering to `out`; `value` supplies each variable.
    pub fn render_into<'v>(&self, out: &mut String, mut value: impl FnMut(&str) -> Value<'v>) {
        for segment in &self.segments {
            match segment {
                Segment::Literal(text) => out.push_str(text),
                Segment::Var { name, width } => {
                    let _ = match value(name) {
                        Value::Num(n) => write!(out, "{n:0width$}"),
                        Value::Text(t) => write!(out, "{t:>width$}"),
                    };
                }
            }
        }
    }

    /// Renders with a single numeric `{index}` variable: the common client-ID case.
    pub fn render_index(&self, index: u64) -> String {
        let mut out = String::with_capacity(self.source.len() + 8);
        self.render_into(&mut out, |_| Value::Num(index));
        out
    }
}

/// A variable's value at render time.
pub enum Value<'a> {
    /// Rendered in decimal, zero-padded to the slot's width.
    Num(u64),
    /// Rendered as is, right-aligned to the slot's width.
    Text(&'a str),
}

impl fmt::Display for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_padded_index() {
        let t = Template::parse("sensor-{index:05}", &["index"]).unwrap();
        assert_eq!(t.render_index(42), "sensor-00042");
        assert_eq!(t.render_index(1234567), "sensor-1234567");
        assert!(t.uses("index"));
    }

    #[test]
    fn renders_text_and_escapes() {
        let t = Template::parse("{{x}}/{client_id}/t", &["client_id"]).unwrap();
        let mut out = String::new();
        t.render_into(&mut out, |_| Value::Text("dev-1"));
        assert_eq!(out, "{x}/dev-1/t");
    }

    #[test]
    fn rejects_bad_templates() {
        for (src, needle) in [
            ("a-{idx}", "unknown variable `{idx}`"),
            ("a-{index", "unclosed"),
            ("a}", "unmatched"),
            ("a-{index:x5}", "bad width"),
            ("a-{index:}", "bad width"),
        ] {
            let e = Template::parse(src, &["index"]).unwrap_err().to_string();
            assert!(e.contains(needle), "{src}: {e}");
            assert!(e.contains(src), "{src}: {e}");
        }
    }
}
