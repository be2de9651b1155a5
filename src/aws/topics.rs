//! AWS IoT reserved topics: shadow requests and responses, basic ingest.
//!
//! Why one place: the device side renders a shadow's topics once per device (never per
//! message) and the service side parses requests; both must agree on the AWS layout
//! `$aws/things/{thing}/shadow[/name/{shadow}]/{update|get|delete}[/{accepted|rejected|delta|documents}]`.

use super::shadow::{Op, ShadowKey, Suffix};

/// The filters the emulated service subscribes to: every request topic, and none of the
/// response topics (so it never receives its own answers, on MQTT 3.1.1 too).
pub const SERVICE_FILTERS: [&str; 6] = [
    "$aws/things/+/shadow/update",
    "$aws/things/+/shadow/get",
    "$aws/things/+/shadow/delete",
    "$aws/things/+/shadow/name/+/update",
    "$aws/things/+/shadow/name/+/get",
    "$aws/things/+/shadow/name/+/delete",
];

/// The prefix of a shadow's topics: `$aws/things/{thing}/shadow` or
/// `$aws/things/{thing}/shadow/name/{name}`.
pub fn prefix(thing: &str, name: Option<&str>) -> String {
    match name {
        None => format!("$aws/things/{thing}/shadow"),
        Some(n) => format!("$aws/things/{thing}/shadow/name/{n}"),
    }
}

/// A request topic's shadow and operation; `None` for anything else.
pub fn parse_request(topic: &str) -> Option<(ShadowKey, Op)> {
    let rest = topic.strip_prefix("$aws/things/")?;
    let (thing, rest) = rest.split_once('/')?;
    let rest = rest.strip_prefix("shadow/")?;
    let (name, op) = match rest.strip_prefix("name/") {
        Some(named) => {
            let (name, op) = named.split_once('/')?;
            (Some(name), op)
        }
        None => (None, rest),
    };
    if thing.is_empty() || name.is_some_and(str::is_empty) {
        return None;
    }
    Some((
        ShadowKey {
            thing: thing.to_string(),
            name: name.map(str::to_string),
        },
        Op::parse(op)?,
    ))
}

/// A response topic of `key`.
pub fn response(key: &ShadowKey, suffix: Suffix) -> String {
    format!(
        "{}/{}",
        prefix(&key.thing, key.name.as_deref()),
        suffix.as_str()
    )
}

/// Basic ingest: a topic `$aws/rules/{rule}/...` goes to the named rule of AWS IoT's rules
/// engine and to no subscriber (so no end-to-end latency exists for it); returns the rule.
pub fn ingest_rule(topic: &str) -> Option<&str> {
    let rest = topic.strip_prefix("$aws/rules/")?;
    Some(rest.split('/').next().unwrap_or(rest))
}

/// Checks a basic-ingest topic's rule name as AWS IoT requires it (letters, digits and `_`,
/// 1..=128 characters, followed by a `/`); `Ok` for topics that are not basic ingest.
pub fn check_ingest(topic: &str) -> Result<(), String> {
    let Some(rule) = ingest_rule(topic) else {
        return Ok(());
    };
    let valid = (1..=128).contains(&rule.len())
        && rule.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if !valid {
        return Err(format!(
            "{topic:?}: basic ingest rule name {rule:?} is not valid (expected \"$aws/rules/RULE_NAME/...\" with 1-128 letters, digits or _)"
        ));
    }
    if !topic["$aws/rules/".len() + rule.len()..].starts_with('/') {
        return Err(format!(
            "{topic:?} has nothing after the rule name (expected \"$aws/rules/{rule}/SOME/TOPIC\")"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_topics_parse_and_responses_render() {
        let (key, op) = parse_request("$aws/things/t1/shadow/update").unwrap();
        assert_eq!(
            (key.thing.as_str(), key.name.as_deref(), op),
            ("t1", None, Op::Update)
        );
        let (key, op) = parse_request("$aws/things/t1/shadow/name/cfg/delete").unwrap();
        assert_eq!((key.name.as_deref(), op), (Some("cfg"), Op::Delete));
        assert_eq!(
            response(&key, Suffix::Accepted(Op::Delete)),
            "$aws/things/t1/shadow/name/cfg/delete/accepted"
        );
        for bad in [
            "$aws/things/t1/shadow/update/accepted",
            "$aws/things/t1/shadow/name//get",
            "$aws/things//shadow/get",
            "dt/t1/shadow/get",
            "$aws/things/t1/shadow/patch",
        ] {
            assert!(parse_request(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn ingest_topics_name_a_valid_rule() {
        assert_eq!(ingest_rule("$aws/rules/store_it/dt/a"), Some("store_it"));
        assert_eq!(ingest_rule("dt/a"), None);
        assert!(check_ingest("$aws/rules/store_it/dt/a").is_ok());
        assert!(check_ingest("dt/$aws/rules").is_ok());
        assert!(check_ingest("$aws/rules/bad-name/x").is_err());
        assert!(check_ingest("$aws/rules/ok").is_err());
        assert!(check_ingest("$aws/rules//x").is_err());
    }
}
