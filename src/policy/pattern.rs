//! Policy string matching: `*` and `?` wildcards and policy variables.
//!
//! AWS IoT Core developer guide, "Publish/Subscribe policy examples"
//! (<https://docs.aws.amazon.com/iot/latest/developerguide/pub-sub-policy.html>): in a policy
//! document `*` represents any combination of characters (including `/`) and `?` any single
//! character; the MQTT wildcards `+` and `#` are plain characters. "Policy variables"
//! (<https://docs.aws.amazon.com/iot/latest/developerguide/iot-policy-variables.html>):
//! `${iot:ClientId}` and friends are replaced by the connection's values; `${*}`, `${?}` and
//! `${$}` stand for the literal characters. A variable with no value in the request context is
//! left as written (so it matches only that literal text, in practice nothing).

use std::collections::BTreeMap;

use serde::Deserialize;

/// One element of a compiled pattern.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Tok {
    Lit(char),
    /// `*`: any run of characters, `/` included.
    Star,
    /// `?`: exactly one character.
    One,
}

/// A compiled wildcard pattern (no variables left).
#[derive(Clone, Debug)]
pub struct Pattern {
    toks: Vec<Tok>,
    /// Action names compare case-insensitively (IAM convention); resources do not.
    fold_case: bool,
}

impl Pattern {
    /// An action pattern such as `iot:*` or `iot:Pub*` (compared without regard to case).
    pub fn action(text: &str) -> Pattern {
        Pattern {
            toks: text.to_ascii_lowercase().chars().map(wild).collect(),
            fold_case: true,
        }
    }

    /// A resource pattern with no variables (as in tests and lint probes).
    pub fn resource(text: &str) -> Pattern {
        Pattern {
            toks: text.chars().map(wild).collect(),
            fold_case: false,
        }
    }

    /// Whether `input` (a concrete action or ARN) matches.
    pub fn matches(&self, input: &str) -> bool {
        if self.fold_case {
            glob(
                &self.toks,
                &input.to_ascii_lowercase().chars().collect::<Vec<_>>(),
            )
        } else {
            glob(&self.toks, &input.chars().collect::<Vec<_>>())
        }
    }
}

fn wild(c: char) -> Tok {
    match c {
        '*' => Tok::Star,
        '?' => Tok::One,
        c => Tok::Lit(c),
    }
}

/// Wildcard match with single-star backtracking: O(len(p) * len(s)) worst case, no recursion.
fn glob(p: &[Tok], s: &[char]) -> bool {
    let (mut pi, mut si) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while si < s.len() {
        match p.get(pi) {
            Some(Tok::Star) => {
                star = Some((pi, si));
                pi += 1;
            }
            Some(Tok::One) => {
                pi += 1;
                si += 1;
            }
            Some(Tok::Lit(c)) if *c == s[si] => {
                pi += 1;
                si += 1;
            }
            _ => match star {
                Some((sp, ss)) => {
                    pi = sp + 1;
                    si = ss + 1;
                    star = Some((sp, ss + 1));
                }
                None => return false,
            },
        }
    }
    p[pi..].iter().all(|t| *t == Tok::Star)
}

/// A piece of a resource pattern before variables are resolved.
#[derive(Clone, Debug)]
enum Part {
    Toks(Vec<Tok>),
    /// `${name}`: the name and the text as written.
    Var(String),
}

/// A resource pattern as written in a statement, variables unresolved.
#[derive(Clone, Debug)]
pub struct ResourcePattern {
    /// The text as written.
    pub text: String,
    parts: Vec<Part>,
}

impl ResourcePattern {
    /// Parses `${...}` variables out of a resource string.
    pub fn parse(text: &str) -> Result<ResourcePattern, String> {
        let mut parts = Vec::new();
        let mut toks = Vec::new();
        let mut rest = text;
        while let Some(start) = rest.find("${") {
            toks.extend(rest[..start].chars().map(wild));
            let after = &rest[start + 2..];
            let Some(end) = after.find('}') else {
                return Err("unclosed policy variable \"${\" (expected \"${name}\")".into());
            };
            let name = &after[..end];
            match name {
                "*" => toks.push(Tok::Lit('*')),
                "?" => toks.push(Tok::Lit('?')),
                "$" => toks.push(Tok::Lit('$')),
                _ => {
                    parts.push(Part::Toks(std::mem::take(&mut toks)));
                    parts.push(Part::Var(name.to_owned()));
                }
            }
            rest = &after[end + 1..];
        }
        toks.extend(rest.chars().map(wild));
        parts.push(Part::Toks(toks));
        Ok(ResourcePattern {
            text: text.to_owned(),
            parts,
        })
    }

    /// The pattern with the context's variables substituted (values are literal text).
    pub fn resolve(&self, ctx: &Context) -> Pattern {
        let mut toks = Vec::new();
        for part in &self.parts {
            match part {
                Part::Toks(t) => toks.extend_from_slice(t),
                Part::Var(name) => match ctx.variable(name) {
                    Some(v) => toks.extend(v.chars().map(Tok::Lit)),
                    None => toks.extend(format!("${{{name}}}").chars().map(Tok::Lit)),
                },
            }
        }
        Pattern {
            toks,
            fold_case: false,
        }
    }

    /// The names of the variables it uses.
    pub fn variables(&self) -> impl Iterator<Item = &str> {
        self.parts.iter().filter_map(|p| match p {
            Part::Var(n) => Some(n.as_str()),
            Part::Toks(_) => None,
        })
    }
}

/// The principal's request context: what the policy variables resolve to.
///
/// Variables (developer guide, "Basic", "Thing" and "X.509 Certificate" policy variables,
/// <https://docs.aws.amazon.com/iot/latest/developerguide/basic-policy-variables.html>,
/// <https://docs.aws.amazon.com/iot/latest/developerguide/thing-policy-variables.html>,
/// <https://docs.aws.amazon.com/iot/latest/developerguide/cert-policy-variables.html>):
/// `iot:ClientId`, `iot:Connection.Thing.ThingName`, `iot:Connection.Thing.ThingTypeName`,
/// `iot:Connection.Thing.IsAttached`, `iot:Connection.Thing.Attributes[NAME]`,
/// `iot:Certificate.Subject.FIELD`, `iot:Certificate.Issuer.FIELD`,
/// `iot:Certificate.SerialNumber`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Context {
    /// The MQTT client id.
    #[serde(default)]
    pub client_id: Option<String>,
    /// The thing attached to the certificate, if any.
    #[serde(default)]
    pub thing_name: Option<String>,
    /// The thing's type.
    #[serde(default)]
    pub thing_type_name: Option<String>,
    /// The thing's attributes.
    #[serde(default)]
    pub thing_attributes: BTreeMap<String, String>,
    /// Certificate fields.
    #[serde(default)]
    pub certificate: CertificateFields,
}

/// The certificate fields policy variables can name.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertificateFields {
    /// Subject attributes by AWS name (`CommonName`, `Organization`, `Country`, ...).
    #[serde(default)]
    pub subject: BTreeMap<String, String>,
    /// Issuer attributes by AWS name.
    #[serde(default)]
    pub issuer: BTreeMap<String, String>,
    /// The serial number as AWS prints it.
    #[serde(default)]
    pub serial_number: Option<String>,
}

impl Context {
    /// The value of policy variable `name` (without `${}`), if the context has one.
    pub fn variable(&self, name: &str) -> Option<&str> {
        let rest = name.strip_prefix("iot:")?;
        match rest {
            "ClientId" => self.client_id.as_deref(),
            "Connection.Thing.ThingName" => self.thing_name.as_deref(),
            "Connection.Thing.ThingTypeName" => self.thing_type_name.as_deref(),
            "Connection.Thing.IsAttached" => Some(if self.thing_name.is_some() {
                "true"
            } else {
                "false"
            }),
            "Certificate.SerialNumber" => self.certificate.serial_number.as_deref(),
            _ => {
                if let Some(attr) = rest
                    .strip_prefix("Connection.Thing.Attributes[")
                    .and_then(|a| a.strip_suffix(']'))
                {
                    self.thing_attributes.get(attr).map(String::as_str)
                } else if let Some(f) = rest.strip_prefix("Certificate.Subject.") {
                    self.certificate.subject.get(f).map(String::as_str)
                } else if let Some(f) = rest.strip_prefix("Certificate.Issuer.") {
                    self.certificate.issuer.get(f).map(String::as_str)
                } else {
                    None
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn star_spans_slashes_and_question_is_one_char() {
        let p = Pattern::resource("topic/a/*");
        assert!(p.matches("topic/a/b/c"));
        assert!(p.matches("topic/a/"));
        assert!(!p.matches("topic/b/c"));
        let q = Pattern::resource("topic/t?/x");
        assert!(q.matches("topic/t1/x"));
        assert!(!q.matches("topic/t12/x"));
        assert!(!q.matches("topic/t/x"));
    }

    #[test]
    fn mqtt_wildcards_are_literal() {
        let p = Pattern::resource("topicfilter/a/#");
        assert!(p.matches("topicfilter/a/#"));
        assert!(!p.matches("topicfilter/a/b"));
        let p = Pattern::resource("topicfilter/+/x");
        assert!(!p.matches("topicfilter/a/x"));
    }

    #[test]
    fn actions_fold_case() {
        assert!(Pattern::action("iot:Pub*").matches("iot:publish"));
        assert!(Pattern::action("iot:*").matches("iot:Connect"));
        assert!(!Pattern::action("iot:Publish").matches("iot:RetainPublish"));
    }

    #[test]
    fn variables_resolve_or_stay_literal() {
        let ctx = Context {
            client_id: Some("dev-1*".into()),
            ..Context::default()
        };
        let r = ResourcePattern::parse("client/${iot:ClientId}").unwrap();
        let p = r.resolve(&ctx);
        // The substituted value is literal: its `*` is not a wildcard.
        assert!(p.matches("client/dev-1*"));
        assert!(!p.matches("client/dev-1x"));
        let r = ResourcePattern::parse("topic/${iot:Connection.Thing.ThingName}/*").unwrap();
        let p = r.resolve(&ctx);
        assert!(!p.matches("topic/dev-1/x"));
        assert!(p.matches("topic/${iot:Connection.Thing.ThingName}/x"));
        let r = ResourcePattern::parse("topic/${*}/${?}/${$}").unwrap();
        assert!(r.resolve(&ctx).matches("topic/*/?/$"));
        assert!(!r.resolve(&ctx).matches("topic/a/b/$"));
        assert!(ResourcePattern::parse("topic/${iot:ClientId").is_err());
    }
}
