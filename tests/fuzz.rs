//! Property tests: the scenario parser, payload templates, name templates and topic/filter
//! validation and the AWS IoT policy parser, evaluator and lint never panic, whatever they are
//! given; what they accept renders (or evaluates) without panicking too.

use std::path::Path;
use std::time::Duration;

use proptest::prelude::*;
use thingswarm::policy::{evaluate, lint, Context, Policy};
use thingswarm::scenario::traffic::matches;
use thingswarm::scenario::{Overrides, Plan};
use thingswarm::template::{Template, Value};
use thingswarm::traffic::payload::{DeviceState, PayloadTemplate, RenderCtx};

const VALID: &str = r#"name = "fuzz"
duration = "5s"
seed = 7
[target]
protocol = "5"
[identity]
validity_days = 30
[[group]]
name = "sensors"
devices = 10
client_id = "sensor-{index:05}"
connect = { rate = "100/s", max_in_flight = 10, timeout = "5s" }
keepalive = "30s"
publish = { topic = "dt/{client_id}/t", qos = 1, rate = "2/s", arrivals = "poisson", payload = { t = "sinusoid(20, 5, 60s)", n = "counter()", s = "pickOne('a', 'b')" } }
[[group]]
name = "dash"
devices = 1
client_id = "dash"
subscribe = [{ filter = "dt/+/t", qos = 1 }, { filter = "dt/#", qos = 0 }]
"#;

/// Characters scenario syntax is made of, so random text often gets past the TOML parser.
fn tomlish() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop_oneof![
            Just("[[group]]\n".to_string()),
            Just("[target]\n".to_string()),
            Just("[identity]\n".to_string()),
            Just(" = ".to_string()),
            Just("\n".to_string()),
            Just("\"".to_string()),
            Just("{index:05}".to_string()),
            Just("{ ".to_string()),
            Just(" }".to_string()),
            "[a-z_]{1,10}",
            "-?[0-9]{1,12}(\\.[0-9]{1,3})?",
            "\"[ -~]{0,20}\"",
            any::<String>(),
        ],
        0..40,
    )
    .prop_map(|parts| parts.concat())
}

/// Loads `text` and, when it is accepted, exercises what a run does with a plan first.
fn load_and_use(text: &str) {
    if let Ok(plan) = Plan::from_str(text, Path::new("fuzz.toml"), &Overrides::default()) {
        for g in &plan.groups {
            let _ = plan.fleet_spec(g);
            let last = g.devices.saturating_sub(1);
            let id = g.client_id.render_index(last);
            if let Some(p) = &g.publish {
                let topic = p.topic_for(&g.name, &id, last);
                for s in &g.subscribe {
                    let _ = matches(&s.filter, &topic);
                }
            }
        }
        let _ = plan.expected_ramp();
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn the_parser_never_panics_on_arbitrary_text(text in any::<String>()) {
        load_and_use(&text);
    }

    #[test]
    fn the_parser_never_panics_on_tomlish_text(text in tomlish()) {
        load_and_use(&text);
    }

    #[test]
    fn the_parser_never_panics_on_mutations_of_a_valid_scenario(
        edits in prop::collection::vec((any::<prop::sample::Index>(), 0..8usize, tomlish()), 1..4),
    ) {
        let mut text = VALID.to_string();
        for (at, len, insert) in edits {
            let mut start = at.index(text.len() + 1);
            while !text.is_char_boundary(start) {
                start -= 1;
            }
            let mut end = (start + len).min(text.len());
            while !text.is_char_boundary(end) {
                end += 1;
            }
            text.replace_range(start..end, &insert);
        }
        load_and_use(&text);
    }

    #[test]
    fn values_anywhere_in_a_valid_scenario_never_panic(
        value in prop_oneof![
            any::<String>().prop_map(|s| format!("{s:?}")),
            "-?[0-9]{1,25}",
            "\"[-0-9.]{1,12}/(s|min|h|d)\"",
            "\"[{}a-z_:0-9]{0,20}\"",
            "\"[+#/a-z\\u{0}$]{0,12}\"",
        ],
        slot in 0..12usize,
    ) {
        let keys = [
            "duration", "seed", "validity_days", "devices", "client_id", "rate",
            "max_in_flight", "timeout", "keepalive", "topic", "qos", "filter",
        ];
        // Replace the first value of the chosen key.
        let key = keys[slot];
        let mut text = VALID.to_string();
        if let Some(at) = text.find(&format!("{key} = ")) {
            let start = at + key.len() + 3;
            let rest = &text[start..];
            let end = start + rest.find([',', '\n', '}']).unwrap_or(rest.len());
            text.replace_range(start..end, &value);
        }
        load_and_use(&text);
    }

    #[test]
    fn payload_expressions_never_panic(
        name in "[a-zA-Z]{1,10}",
        args in prop::collection::vec(
            prop_oneof![
                "-?[0-9]{1,20}(\\.[0-9]{0,5})?",
                "-?[0-9]{1,6}(ms|s|m|h)",
                "'[ -~]{0,8}'",
                any::<String>(),
                Just("1e308".to_string()),
                Just("NaN".to_string()),
                Just("inf".to_string()),
            ],
            0..5,
        ),
        raw in any::<String>(),
        seed in any::<u64>(),
        elapsed_ms in any::<u32>(),
    ) {
        let call = format!("{name}({})", args.join(", "));
        for expr in [call, raw] {
            let mut table = toml::map::Map::new();
            table.insert("v".into(), toml::Value::String(expr));
            if let Ok(t) = PayloadTemplate::compile(&toml::Value::Table(table)) {
                let mut state = DeviceState::new(seed, 3);
                let mut out = Vec::new();
                for n in 0..3u64 {
                    let ctx = RenderCtx {
                        elapsed: Duration::from_millis(u64::from(elapsed_ms) + n),
                        ..RenderCtx::default()
                    };
                    out.clear();
                    t.render(&ctx, &mut state, &mut out);
                    prop_assert!(!out.is_empty());
                }
            }
        }
    }

    #[test]
    fn name_templates_never_panic(source in any::<String>(), index in any::<u64>()) {
        if let Ok(t) = Template::parse(&source, &["index", "client_id", "group"]) {
            let _ = t.render_index(index);
            let mut out = String::new();
            t.render_into(&mut out, |v| match v {
                "index" => Value::Num(index),
                _ => Value::Text("x"),
            });
        }
    }

    #[test]
    fn topic_matching_never_panics(filter in "[+#/a-z$]{0,12}", topic in "[/a-z$+#]{0,12}") {
        let _ = matches(&filter, &topic);
    }
}

#[test]
fn the_scenario_mutated_above_is_valid() {
    let plan = Plan::from_str(VALID, Path::new("fuzz.toml"), &Overrides::default()).unwrap();
    assert_eq!(plan.total_devices(), 11);
    assert!(plan.groups[0].publish.is_some());
    assert_eq!(plan.groups[1].subscribe.len(), 2);
}

/// Characters policy strings are made of: wildcards, variables, ARN and MQTT punctuation.
fn policy_text() -> impl Strategy<Value = String> {
    "[a-z0-9*?${}:/#+.\\[\\]-]{0,24}"
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn policy_documents_never_panic_the_parser(text in any::<String>()) {
        let _ = Policy::parse("fuzz.json", &text);
    }

    #[test]
    fn policy_evaluation_and_lint_never_panic(
        effects in prop::collection::vec(prop_oneof![Just("Allow"), Just("Deny")], 1..4),
        actions in prop::collection::vec(policy_text(), 1..4),
        resources in prop::collection::vec(policy_text(), 1..4),
        action in policy_text(),
        resource in policy_text(),
        client_id in policy_text(),
    ) {
        let statements: Vec<serde_json::Value> = effects
            .iter()
            .zip(actions.iter().cycle())
            .zip(resources.iter().cycle())
            .map(|((e, a), r)| serde_json::json!({
                "Effect": e,
                "Action": format!("iot:{a}"),
                "Resource": format!("arn:aws:iot:us-east-1:123456789012:{r}"),
            }))
            .collect();
        let doc = serde_json::json!({ "Version": "2012-10-17", "Statement": statements });
        if let Ok(policy) = Policy::parse("fuzz.json", &doc.to_string()) {
            let policies = [policy];
            let ctx = Context { client_id: Some(client_id), ..Context::default() };
            let _ = evaluate(&policies, &ctx, &format!("iot:{action}"), &resource);
            let _ = evaluate(
                &policies,
                &ctx,
                "iot:Publish",
                &format!("arn:aws:iot:us-east-1:123456789012:topic/{resource}"),
            );
            let _ = lint(&policies);
        }
    }
}
