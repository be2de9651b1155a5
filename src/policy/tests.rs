//! Table-driven evaluator and lint tests from the AWS IoT Core developer guide's examples, and
//! a property: an explicit Deny matching a request always wins.

use proptest::prelude::*;

use super::*;

const ARN: &str = "arn:aws:iot:us-east-1:123456789012";

fn policy(name: &str, json: &str) -> Policy {
    Policy::parse(name, &json.replace("ARN", ARN)).unwrap()
}

fn ctx(client: &str, thing: Option<&str>, cn: Option<&str>) -> Context {
    let mut c = Context {
        client_id: Some(client.into()),
        thing_name: thing.map(Into::into),
        ..Context::default()
    };
    if let Some(cn) = cn {
        c.certificate.subject.insert("CommonName".into(), cn.into());
    }
    c
}

/// (context, action, resource without the ARN prefix, expected decision, deciding statement).
type Row<'a> = (&'a Context, &'a str, &'a str, Decision, Option<usize>);

fn check(policies: &[Policy], rows: &[Row]) {
    for (i, (c, action, res, want, by)) in rows.iter().enumerate() {
        let got = evaluate(policies, c, action, &format!("{ARN}:{res}"));
        assert_eq!(got.decision, *want, "row {i}: {action} {res}");
        assert_eq!(
            got.decided_by.as_ref().map(|s| s.statement),
            *by,
            "row {i}: {action} {res} decided by"
        );
    }
}

// "Policies to publish, subscribe and receive messages to/from topics specific to each device"
// (pub-sub-policy.html), with thing-name variables, plus a certificate CN variable.
const PER_DEVICE: &str = r#"{
  "Version": "2012-10-17",
  "Statement": [
    {"Effect": "Allow", "Action": ["iot:Connect"], "Resource": ["ARN:client/${iot:Connection.Thing.ThingName}"]},
    {"Effect": "Allow", "Action": ["iot:Publish", "iot:Receive"], "Resource": ["ARN:topic/sensors/${iot:Connection.Thing.ThingName}"]},
    {"Sid": "sub", "Effect": "Allow", "Action": "iot:Subscribe", "Resource": "ARN:topicfilter/sensors/${iot:Connection.Thing.ThingName}"},
    {"Effect": "Allow", "Action": "iot:Publish", "Resource": "ARN:topic/cn/${iot:Certificate.Subject.CommonName}/*"}
  ]
}"#;

#[test]
fn per_device_variables() {
    let p = [policy("per-device.json", PER_DEVICE)];
    let a = ctx("thing1", Some("thing1"), Some("cn-1"));
    let unattached = ctx("thing1", None, None);
    check(
        &p,
        &[
            (
                &a,
                "iot:Connect",
                "client/thing1",
                Decision::Allowed,
                Some(0),
            ),
            (
                &a,
                "iot:Connect",
                "client/thing2",
                Decision::ImplicitDeny,
                None,
            ),
            (
                &a,
                "iot:Publish",
                "topic/sensors/thing1",
                Decision::Allowed,
                Some(1),
            ),
            (
                &a,
                "iot:Receive",
                "topic/sensors/thing1",
                Decision::Allowed,
                Some(1),
            ),
            (
                &a,
                "iot:Publish",
                "topic/sensors/thing2",
                Decision::ImplicitDeny,
                None,
            ),
            (
                &a,
                "iot:Subscribe",
                "topicfilter/sensors/thing1",
                Decision::Allowed,
                Some(2),
            ),
            (
                &a,
                "iot:Subscribe",
                "topicfilter/sensors/+",
                Decision::ImplicitDeny,
                None,
            ),
            (
                &a,
                "iot:Publish",
                "topic/cn/cn-1/a/b",
                Decision::Allowed,
                Some(3),
            ),
            (
                &a,
                "iot:Publish",
                "topic/cn/cn-2/a",
                Decision::ImplicitDeny,
                None,
            ),
            // Unresolved variables stay literal and match nothing real.
            (
                &unattached,
                "iot:Connect",
                "client/thing1",
                Decision::ImplicitDeny,
                None,
            ),
            (
                &unattached,
                "iot:Publish",
                "topic/cn/cn-1/a",
                Decision::ImplicitDeny,
                None,
            ),
            // Action names are case-insensitive.
            (
                &a,
                "iot:publish",
                "topic/sensors/thing1",
                Decision::Allowed,
                Some(1),
            ),
        ],
    );
    let got = evaluate(
        &p,
        &a,
        "iot:Subscribe",
        &format!("{ARN}:topicfilter/sensors/thing1"),
    );
    assert_eq!(got.decided_by.unwrap().sid.as_deref(), Some("sub"));
}

// "Policies to deny publishing messages to subtopics of a topic name" (pub-sub-policy.html).
const DENY_SUBTOPICS: &str = r#"{
  "Version": "2012-10-17",
  "Statement": [
    {"Effect": "Allow", "Action": "iot:Connect", "Resource": "*"},
    {"Effect": "Allow", "Action": "iot:Publish", "Resource": "ARN:topic/department/*"},
    {"Effect": "Deny", "Action": "iot:Publish", "Resource": "ARN:topic/department/admins/*"}
  ]
}"#;

#[test]
fn explicit_deny_wins_and_star_spans_levels() {
    let p = [policy("deny.json", DENY_SUBTOPICS)];
    let c = ctx("any", None, None);
    check(
        &p,
        &[
            (
                &c,
                "iot:Connect",
                "client/whatever",
                Decision::Allowed,
                Some(0),
            ),
            (
                &c,
                "iot:Publish",
                "topic/department/engineering/x",
                Decision::Allowed,
                Some(1),
            ),
            (
                &c,
                "iot:Publish",
                "topic/department/admins/x/y",
                Decision::ExplicitDeny,
                Some(2),
            ),
            (
                &c,
                "iot:Publish",
                "topic/department",
                Decision::ImplicitDeny,
                None,
            ),
            (
                &c,
                "iot:Receive",
                "topic/department/x",
                Decision::ImplicitDeny,
                None,
            ),
        ],
    );
}

#[test]
fn union_of_policies_and_deny_across_files() {
    let allow = policy(
        "a.json",
        r#"{"Statement": {"Effect": "Allow", "Action": "iot:*", "Resource": "ARN:topic/t?/*"}}"#,
    );
    let deny = policy(
        "b.json",
        r#"{"Statement": [{"Effect": "Allow", "Action": "iot:Receive", "Resource": "ARN:topic/other"},
                          {"Sid": "no9", "Effect": "Deny", "Action": ["iot:Pub*"], "Resource": "ARN:topic/t9/*"}]}"#,
    );
    let p = [allow, deny];
    let c = Context::default();
    check(
        &p,
        &[
            (&c, "iot:Publish", "topic/t1/x", Decision::Allowed, Some(0)),
            (
                &c,
                "iot:Publish",
                "topic/t10/x",
                Decision::ImplicitDeny,
                None,
            ),
            (&c, "iot:Receive", "topic/other", Decision::Allowed, Some(0)),
            (
                &c,
                "iot:Publish",
                "topic/t9/x",
                Decision::ExplicitDeny,
                Some(1),
            ),
            (&c, "iot:Receive", "topic/t9/x", Decision::Allowed, Some(0)),
        ],
    );
    let d = evaluate(&p, &c, "iot:Publish", &format!("{ARN}:topic/t9/x"));
    let by = d.decided_by.unwrap();
    assert_eq!(
        (by.policy.as_str(), by.sid.as_deref()),
        ("b.json", Some("no9"))
    );
}

#[test]
fn not_action_and_not_resource() {
    let p = [policy(
        "not.json",
        r#"{"Statement": [
            {"Effect": "Allow", "NotAction": "iot:Connect", "Resource": "*"},
            {"Effect": "Deny", "Action": "iot:Publish", "NotResource": "ARN:topic/ok/*"}]}"#,
    )];
    let c = Context::default();
    check(
        &p,
        &[
            (&c, "iot:Connect", "client/x", Decision::ImplicitDeny, None),
            (&c, "iot:Publish", "topic/ok/1", Decision::Allowed, Some(0)),
            (
                &c,
                "iot:Publish",
                "topic/bad",
                Decision::ExplicitDeny,
                Some(1),
            ),
        ],
    );
}

// AWS IoT Device Defender, "AWS IoT policy potentially misconfigured": the bypass example and
// the MQTT-wildcard-in-Deny example.
const BYPASS: &str = r#"{
  "Version": "2012-10-17",
  "Statement": [
    {"Effect": "Allow", "Action": "iot:Subscribe", "Resource": "ARN:topicfilter/building/*"},
    {"Effect": "Deny", "Action": "iot:Subscribe", "Resource": "ARN:topicfilter/building/control_room/*"},
    {"Effect": "Allow", "Action": "iot:Receive", "Resource": "ARN:topic/building/*"}
  ]
}"#;

#[test]
fn bypass_example_evaluates_and_lints() {
    let p = [policy("bypass.json", BYPASS)];
    let c = Context::default();
    check(
        &p,
        &[
            (
                &c,
                "iot:Subscribe",
                "topicfilter/building/control_room/*",
                Decision::ExplicitDeny,
                Some(1),
            ),
            (
                &c,
                "iot:Subscribe",
                "topicfilter/building/control_room/data1",
                Decision::ExplicitDeny,
                Some(1),
            ),
            // The bypass: `building/#` is not under the denied filter ...
            (
                &c,
                "iot:Subscribe",
                "topicfilter/building/#",
                Decision::Allowed,
                Some(0),
            ),
            // ... and receiving on the restricted topic is allowed.
            (
                &c,
                "iot:Receive",
                "topic/building/control_room/data1",
                Decision::Allowed,
                Some(2),
            ),
        ],
    );
    let findings = lint(&p);
    let f: Vec<_> = findings
        .iter()
        .filter(|f| f.code == "deny-bypassed-by-mqtt-wildcard")
        .collect();
    assert_eq!(f.len(), 1, "{findings:?}");
    assert_eq!(f[0].statement, 1);
    assert!(f[0].message.contains("\"building/#\""), "{}", f[0].message);

    // The documented fix: deny iot:Receive on the restricted topics too. No bypass left.
    let fixed = BYPASS.replace(
        "  ]\n}",
        r#"  ,{"Effect": "Deny", "Action": "iot:Receive", "Resource": "ARN:topic/building/control_room/*"}]}"#,
    );
    let p = [policy("fixed.json", &fixed)];
    assert!(
        lint(&p)
            .iter()
            .all(|f| f.code != "deny-bypassed-by-mqtt-wildcard"),
        "{:?}",
        lint(&p)
    );
}

#[test]
fn lint_mqtt_wildcard_in_deny_and_overbroad() {
    let p = [policy(
        "broad.json",
        r#"{"Statement": [
            {"Effect": "Allow", "Action": "iot:*", "Resource": "*"},
            {"Effect": "Allow", "Action": "iot:Connect", "Resource": "ARN:client/*"},
            {"Effect": "Allow", "Action": "iot:Connect", "Resource": "ARN:client/${iot:ClientId}"},
            {"Effect": "Deny", "Action": "iot:Subscribe", "Resource": "ARN:topicfilter/building/control_room/#"}]}"#,
    )];
    let codes: Vec<(usize, &str)> = lint(&p).iter().map(|f| (f.statement, f.code)).collect();
    assert!(codes.contains(&(0, "overbroad-action")), "{codes:?}");
    assert!(codes.contains(&(0, "overbroad-resource")), "{codes:?}");
    assert!(codes.contains(&(1, "overbroad-resource")), "{codes:?}");
    assert!(!codes.iter().any(|(s, _)| *s == 2), "{codes:?}");
    assert!(codes.contains(&(3, "mqtt-wildcard-in-deny")), "{codes:?}");
    // `+`/`#` are literal: the Deny does not cover a real subtopic filter.
    let d = evaluate(
        &p,
        &Context::default(),
        "iot:Subscribe",
        &format!("{ARN}:topicfilter/building/control_room/data1"),
    );
    assert_eq!(d.decision, Decision::Allowed);
}

#[test]
fn bad_documents_are_one_line_errors_naming_file_and_value() {
    let cases = [
        ("{not json", "bad.json: invalid policy JSON"),
        (
            r#"{"Statement": [{"Effect": "Alow", "Action": "iot:Connect", "Resource": "*"}]}"#,
            "statement 0: unknown Effect \"Alow\" (expected \"Allow\" or \"Deny\")",
        ),
        (
            r#"{"Statement": [{"Sid": "s", "Effect": "Allow", "Action": "iot:Connect"}]}"#,
            "statement 0 (Sid \"s\"): missing Resource",
        ),
        (
            r#"{"Statement": [{"Effect": "Allow", "Resource": "*"}]}"#,
            "missing Action",
        ),
        (
            r#"{"Statement": [{"Effect": "Allow", "Action": "iot:Connect", "Resource": "client/x"}]}"#,
            "resource \"client/x\" is not an ARN",
        ),
        (
            r#"{"Statement": [{"Effect": "Allow", "Action": "iot:Connect", "Resource": "*", "Condition": {}}]}"#,
            "Condition is not built yet",
        ),
        (
            r#"{"Version": "2020", "Statement": []}"#,
            "unknown Version \"2020\"",
        ),
        (
            r#"{"Statement": [{"Effect": "Allow", "Action": "iot:Connect", "Resource": "*", "Efect": "x"}]}"#,
            "unknown field `Efect`",
        ),
    ];
    for (json, want) in cases {
        let err = Policy::parse("bad.json", json).unwrap_err().to_string();
        assert!(err.starts_with("bad.json"), "{err}");
        assert!(err.contains(want), "{err:?} should contain {want:?}");
        assert!(!err.contains('\n'), "{err:?}");
    }
}

#[test]
fn requests_are_validated() {
    let ok = Request {
        action: "iot:Publish".into(),
        resource: format!("{ARN}:topic/a"),
        expect: None,
    };
    assert!(ok.validate().is_ok());
    for (action, res, want) in [
        ("Publish", "topic/a", "not of the form \"iot:Name\""),
        ("iot:Pub*", "topic/a", "no wildcards"),
        ("iot:Publish", "topicfilter/a", "takes a topic/... resource"),
        (
            "iot:Subscribe",
            "topic/a",
            "takes a topicfilter/... resource",
        ),
        ("iot:Connect", "topic/a", "takes a client/... resource"),
    ] {
        let r = Request {
            action: action.into(),
            resource: format!("{ARN}:{res}"),
            expect: None,
        };
        let err = r.validate().unwrap_err().to_string();
        assert!(err.contains(want), "{err}");
    }
    let r = Request {
        action: "iot:Publish".into(),
        resource: "topic/a".into(),
        expect: None,
    };
    assert!(r
        .validate()
        .unwrap_err()
        .to_string()
        .contains("is not an AWS IoT ARN"));
}

/// A topic level from a small alphabet that includes the policy and MQTT wildcard characters
/// as plain text, so collisions are likely.
fn level() -> impl Strategy<Value = String> {
    proptest::string::string_regex("[ab+#]{1,3}").unwrap()
}

proptest! {
    #[test]
    fn explicit_deny_matching_the_resource_always_wins(
        levels in proptest::collection::vec(level(), 1..5),
        cut in 0usize..5,
        allow_star in proptest::bool::ANY,
        extra_allows in 0usize..4,
        action in prop_oneof![Just("iot:Publish"), Just("iot:Receive")],
    ) {
        let topic = levels.join("/");
        // A Deny pattern that matches the topic: a literal prefix then `*`, or the exact topic.
        let cut = cut.min(topic.len());
        let deny_pat = if cut < topic.len() { format!("{}*", &topic[..cut]) } else { topic.clone() };
        let mut stmts = vec![];
        for _ in 0..extra_allows {
            stmts.push(format!(r#"{{"Effect": "Allow", "Action": "iot:*", "Resource": "{ARN}:topic/{topic}"}}"#));
        }
        if allow_star {
            stmts.push(r#"{"Effect": "Allow", "Action": "*", "Resource": "*"}"#.to_string());
        }
        stmts.push(format!(r#"{{"Effect": "Deny", "Action": "{action}", "Resource": "{ARN}:topic/{deny_pat}"}}"#));
        let doc = format!(r#"{{"Statement": [{}]}}"#, stmts.join(","));
        let deny = Policy::parse("deny.json", &doc).unwrap();
        let allow = policy("allow.json", r#"{"Statement": {"Effect": "Allow", "Action": "iot:*", "Resource": "*"}}"#);
        for set in [vec![deny.clone(), allow.clone()], vec![allow, deny]] {
            let got = evaluate(&set, &Context::default(), action, &format!("{ARN}:topic/{topic}"));
            prop_assert_eq!(got.decision, Decision::ExplicitDeny);
            prop_assert_eq!(got.decided_by.unwrap().policy, "deny.json");
        }
    }
}

#[test]
fn wrong_types_name_the_value() {
    let err = Policy::parse(
        "t.json",
        r#"{"Statement": [{"Effect": "Allow", "Action": 5, "Resource": "*"}]}"#,
    )
    .unwrap_err()
    .to_string();
    assert_eq!(
        err,
        "t.json: statement 0: Action 5 is not a string or a list of strings"
    );
    let err = Policy::parse("t.json", r#"{"Statement": "x"}"#)
        .unwrap_err()
        .to_string();
    assert!(err.contains("Statement \"x\" is not an object"), "{err}");
}
