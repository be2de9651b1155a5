//! Protocol breadth of a scenario: transports, persistent sessions going offline, shared
//! subscriptions and MQTT 5 options.
//!
//! Why here: brokers fail less from steady traffic than from how fleets connect. A device that
//! goes offline with a persistent session makes the broker queue its QoS 1 messages; a shared
//! subscription makes it split one stream among members; MQTT 5 options change what each
//! packet costs. Each is a scenario option, checked into the [`GroupOptions`] of every group
//! before anything connects.
//!
//! ```toml
//! [target]
//! transport = "wss"               # "mqtts" (default) | "wss" | "ws" | "tcp"; ws/tcp are plain text
//! path = "/mqtt"                  # WebSocket URL path (ws/wss only); default "/mqtt"
//!
//! [[group]]
//! clean_session = false           # keep the session (3.1.1) / clean start false (5)
//! offline = { at = "2s", for = "3s" }  # from the start of traffic: DISCONNECT, wait, reconnect
//! subscribe = [{ filter = "$share/workers/t/#", qos = 1 }]  # shared subscription
//! v5 = { session_expiry = "1h", topic_alias = true, user_properties = { site = "lab" },
//!        message_expiry = "30s", receive_maximum = 50, max_packet_size = 65536 }
//! ```

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::error::{ScenarioError, Source};
use super::values;
use super::{GroupPlan, Protocol};

/// Default URL path of MQTT over WebSocket (mosquitto, EMQX, HiveMQ and AWS IoT all serve it).
pub const DEFAULT_WS_PATH: &str = "/mqtt";
/// Most user properties per packet a scenario may set (each is sent on every PUBLISH).
pub const MAX_USER_PROPERTIES: usize = 32;

/// `[target].transport`: how bytes reach the broker.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub enum Transport {
    /// MQTT over mutually authenticated TLS (the default; what the seed requires).
    #[default]
    Mqtts,
    /// MQTT over WebSocket over TLS, with the same per-device client certificates.
    Wss {
        /// URL path, e.g. `/mqtt`.
        path: String,
    },
    /// MQTT over plain WebSocket: no TLS, no client identity. Only when asked, with a warning.
    Ws {
        /// URL path, e.g. `/mqtt`.
        path: String,
    },
    /// MQTT over plain TCP: no TLS, no client identity. Only when asked, with a warning.
    Tcp,
}

impl Transport {
    /// The scheme as written in scenarios and URLs.
    pub fn scheme(&self) -> &'static str {
        match self {
            Transport::Mqtts => "mqtts",
            Transport::Wss { .. } => "wss",
            Transport::Ws { .. } => "ws",
            Transport::Tcp => "tcp",
        }
    }

    /// Whether bytes travel without TLS (then there is no client identity either).
    pub fn is_plain(&self) -> bool {
        matches!(self, Transport::Ws { .. } | Transport::Tcp)
    }

    /// The warning a plain transport carries, at start and in the report.
    pub fn warning(&self) -> Option<String> {
        self.is_plain().then(|| {
            format!(
                "transport {:?} is PLAIN TEXT: no TLS, no server verification, no client certificate (the seed requires TLS; use \"mqtts\" or \"wss\")",
                self.scheme()
            )
        })
    }

    /// The broker address rumqttc wants: the host for mqtts/tcp (also the TLS server name),
    /// the full URL for ws(s) (an IPv6 host in brackets).
    pub fn broker_addr(&self, host: &str, port: u16) -> String {
        if let Transport::Mqtts | Transport::Tcp = self {
            return host.to_string();
        }
        let host = if host.contains(':') {
            format!("[{host}]")
        } else {
            host.to_string()
        };
        match self {
            Transport::Mqtts | Transport::Tcp => host,
            Transport::Wss { path } => format!("wss://{host}:{port}{path}"),
            Transport::Ws { path } => format!("ws://{host}:{port}{path}"),
        }
    }
}

/// A window in which every device of a group is offline: it sends DISCONNECT `at` after the
/// traffic starts and connects again (same client ID, same clean-session setting) after `for`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OfflineWindow {
    /// From the start of the traffic window.
    pub at: Duration,
    /// How long the devices stay away.
    pub duration: Duration,
}

/// MQTT 5 options of a group, each sent as asked; the report says which the broker refused,
/// lowered or ignored.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct V5Options {
    /// CONNECT session expiry interval (seconds on the wire); `None`: not sent (0: the session
    /// ends with the connection).
    pub session_expiry: Option<Duration>,
    /// Publish with a topic alias (1): the first PUBLISH carries topic and alias, later ones
    /// only the alias.
    pub topic_alias: bool,
    /// User properties on CONNECT and on every PUBLISH.
    pub user_properties: Vec<(String, String)>,
    /// Message expiry interval on every PUBLISH.
    pub message_expiry: Option<Duration>,
    /// CONNECT receive maximum: QoS 1/2 messages the broker may have in flight to us.
    pub receive_maximum: Option<u16>,
    /// CONNECT maximum packet size: the largest packet we accept.
    pub max_packet_size: Option<u32>,
}

impl V5Options {
    /// Whether any option is set (then the group needs MQTT 5).
    pub fn any(&self) -> bool {
        *self != V5Options::default()
    }

    /// Seconds on the wire of a duration option (saturating at `u32::MAX`).
    pub fn secs(d: Duration) -> u32 {
        u32::try_from(d.as_secs()).unwrap_or(u32::MAX)
    }
}

/// Everything of this module a group's devices need.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct GroupOptions {
    /// How devices reach the broker (from `[target]`, the same for every group).
    pub transport: Transport,
    /// The group's offline window, if any.
    pub offline: Option<OfflineWindow>,
    /// `$share/{name}/...`: the share name every filter of the group uses, if shared.
    pub share: Option<String>,
    /// MQTT 5 options.
    pub v5: V5Options,
}

impl GroupOptions {
    /// `thingswarm check` lines for the group's offline window, share and MQTT 5 options
    /// (empty when none is set), so a plan shows what a run will do.
    pub fn describe(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(o) = &self.offline {
            out.push(format!(
                "offline:        at {:?} from the start of traffic, for {:?} (DISCONNECT, then reconnect)",
                o.at, o.duration
            ));
        }
        if let Some(name) = &self.share {
            out.push(format!(
                "shared:         $share/{name}/... (loss settled over the members together)"
            ));
        }
        let v = &self.v5;
        if v.any() {
            let mut parts = Vec::new();
            if let Some(d) = v.session_expiry {
                parts.push(format!("session expiry {}s", V5Options::secs(d)));
            }
            if v.topic_alias {
                parts.push("topic alias".to_string());
            }
            if !v.user_properties.is_empty() {
                parts.push(format!("{} user properties", v.user_properties.len()));
            }
            if let Some(d) = v.message_expiry {
                parts.push(format!("message expiry {}s", V5Options::secs(d)));
            }
            if let Some(n) = v.receive_maximum {
                parts.push(format!("receive maximum {n}"));
            }
            if let Some(n) = v.max_packet_size {
                parts.push(format!("maximum packet size {n}"));
            }
            out.push(format!("mqtt 5:         {}", parts.join(", ")));
        }
        out
    }
}

/// `[target].transport` and `[target].path` as written.
#[derive(Debug, Default)]
pub(super) struct RawTransport<'a> {
    pub transport: Option<&'a Spanned<String>>,
    pub path: Option<&'a Spanned<String>>,
}

/// A group's `offline = { at, for }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawOffline {
    pub at: Spanned<String>,
    #[serde(rename = "for")]
    pub for_: Spanned<String>,
}

/// A group's `v5 = { ... }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawV5 {
    pub session_expiry: Option<Spanned<String>>,
    pub topic_alias: Option<bool>,
    pub user_properties: Option<Spanned<BTreeMap<String, String>>>,
    pub message_expiry: Option<Spanned<String>>,
    pub receive_maximum: Option<Spanned<u64>>,
    pub max_packet_size: Option<Spanned<u64>>,
}

/// Checks `[target].transport` and `path`.
pub(super) fn transport(
    src: &Source<'_>,
    embedded: bool,
    raw: RawTransport<'_>,
) -> Result<Transport, ScenarioError> {
    const FORM: &str = r#"expected "mqtts", "wss", "ws" or "tcp""#;
    let path = match raw.path {
        None => DEFAULT_WS_PATH.to_string(),
        Some(p) => {
            let text = p.get_ref();
            let ok = text.starts_with('/')
                && text.len() <= 1024
                && !text
                    .chars()
                    .any(|c| c.is_whitespace() || c == '#' || c.is_control());
            if !ok {
                return Err(src.at(
                    p.span().start,
                    format!(r#"target.path: {text:?} is not a URL path (expected e.g. "/mqtt": starts with `/`, no spaces or `#`)"#),
                ));
            }
            text.clone()
        }
    };
    let t = match raw.transport {
        None => Transport::Mqtts,
        Some(t) => match t.get_ref().to_ascii_lowercase().as_str() {
            "mqtts" => Transport::Mqtts,
            "wss" => Transport::Wss { path },
            "ws" => Transport::Ws { path },
            "tcp" | "mqtt" => Transport::Tcp,
            other => {
                return Err(src.at(
                    t.span().start,
                    format!("target.transport: {other:?} is not a transport ({FORM})"),
                ))
            }
        },
    };
    if let (true, Some(raw_t), false) = (embedded, raw.transport, t == Transport::Mqtts) {
        return Err(src.at(
            raw_t.span().start,
            format!(
                r#"target.transport: {:?} needs an external broker: the embedded one listens for mqtts only (expected url = "mqtts://host:port" in [target], or --target URL, beside it)"#,
                t.scheme()
            ),
        ));
    }
    if let (Some(p), Transport::Mqtts | Transport::Tcp) = (raw.path, &t) {
        return Err(src.at(
            p.span().start,
            format!(
                r#"target.path: applies to WebSocket transports only (expected transport = "wss" or "ws" beside it, not {:?})"#,
                t.scheme()
            ),
        ));
    }
    Ok(t)
}

/// Checks a group's `offline` and `v5` keys and its shared filters into its [`GroupOptions`].
pub(super) fn group_options(
    src: &Source<'_>,
    key: &dyn Fn(&str) -> String,
    plan: &GroupPlan,
    offline: Option<&Spanned<RawOffline>>,
    v5: Option<&Spanned<RawV5>>,
    transport: &Transport,
) -> Result<GroupOptions, ScenarioError> {
    let offline = match offline {
        None => None,
        Some(o) => {
            let raw = o.get_ref();
            let at = values::duration(raw.at.get_ref())
                .map_err(|m| src.at(raw.at.span().start, format!("{}.at: {m}", key("offline"))))?;
            let duration = values::duration(raw.for_.get_ref()).map_err(|m| {
                src.at(
                    raw.for_.span().start,
                    format!("{}.for: {m}", key("offline")),
                )
            })?;
            if duration.is_zero() {
                return Err(src.at(
                    raw.for_.span().start,
                    format!(r#"{}.for: "0s" is no offline time (expected a positive duration, e.g. "3s")"#, key("offline")),
                ));
            }
            Some(OfflineWindow { at, duration })
        }
    };
    let share = share_name(src, key, plan)?;
    let v5 = match v5 {
        None => V5Options::default(),
        Some(v) => {
            if plan.protocol != Protocol::V5 {
                return Err(src.at(
                    v.span().start,
                    format!(
                        r#"{}: MQTT 5 options on a group speaking {} (expected protocol = "5" on the group or in [target])"#,
                        key("v5"),
                        plan.protocol
                    ),
                ));
            }
            v5_options(src, &key("v5"), v.get_ref())?
        }
    };
    Ok(GroupOptions {
        transport: transport.clone(),
        offline,
        share,
        v5,
    })
}

fn v5_options(src: &Source<'_>, key: &str, raw: &RawV5) -> Result<V5Options, ScenarioError> {
    let dur =
        |v: &Option<Spanned<String>>, name: &str| -> Result<Option<Duration>, ScenarioError> {
            v.as_ref()
                .map(|d| {
                    values::duration(d.get_ref())
                        .map_err(|m| src.at(d.span().start, format!("{key}.{name}: {m}")))
                })
                .transpose()
        };
    let ranged = |v: &Option<Spanned<u64>>, name: &str, lo: u64, hi: u64| {
        v.as_ref()
            .map(|n| {
                let x = *n.get_ref();
                if (lo..=hi).contains(&x) {
                    Ok(x)
                } else {
                    Err(src.at(
                        n.span().start,
                        format!("{key}.{name}: {x} is out of range (expected {lo}..={hi})"),
                    ))
                }
            })
            .transpose()
    };
    let message_expiry = dur(&raw.message_expiry, "message_expiry")?;
    if let (Some(d), Some(raw_d)) = (message_expiry, &raw.message_expiry) {
        if d.as_secs() == 0 {
            return Err(src.at(
                raw_d.span().start,
                format!(r#"{key}.message_expiry: {:?} is under a second (expected whole seconds, at least "1s")"#, raw_d.get_ref()),
            ));
        }
    }
    let user_properties: Vec<(String, String)> = match &raw.user_properties {
        None => Vec::new(),
        Some(map) if map.get_ref().len() > MAX_USER_PROPERTIES => {
            return Err(src.at(
                map.span().start,
                format!(
                    "{key}.user_properties: {} properties (expected at most {MAX_USER_PROPERTIES}: each is sent on every PUBLISH)",
                    map.get_ref().len()
                ),
            ))
        }
        Some(map) => map
            .get_ref()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    };
    Ok(V5Options {
        session_expiry: dur(&raw.session_expiry, "session_expiry")?,
        topic_alias: raw.topic_alias.unwrap_or(false),
        user_properties,
        message_expiry,
        receive_maximum: ranged(&raw.receive_maximum, "receive_maximum", 1, 65_535)?
            .map(|n| n as u16),
        max_packet_size: ranged(&raw.max_packet_size, "max_packet_size", 128, 268_435_460)?
            .map(|n| n as u32),
    })
}

/// Splits `$share/{name}/{filter}` into the share name and the filter messages match;
/// any other filter comes back unshared.
pub fn split_share(filter: &str) -> (Option<&str>, &str) {
    match filter
        .strip_prefix("$share/")
        .and_then(|rest| rest.split_once('/'))
    {
        Some((name, inner)) => (Some(name), inner),
        None => (None, filter),
    }
}

/// The one share name of a group whose filters are all shared, `None` when none is.
fn share_name(
    src: &Source<'_>,
    key: &dyn Fn(&str) -> String,
    plan: &GroupPlan,
) -> Result<Option<String>, ScenarioError> {
    let names: Vec<Option<&str>> = plan
        .subscribe
        .iter()
        .map(|s| split_share(&s.filter).0)
        .collect();
    let at = |m: String| src.flag(format!("{}: {m}", key("subscribe")));
    for (s, name) in plan.subscribe.iter().zip(&names) {
        if s.filter.starts_with("$share") && name.is_none() {
            return Err(at(format!(
                "{:?} is not a shared subscription (expected \"$share/{{name}}/{{filter}}\")",
                s.filter
            )));
        }
        if let Some(n) = name {
            if n.is_empty() || n.contains(['+', '#']) {
                return Err(at(format!(
                    "{:?}: share name {n:?} is invalid (expected a name without `+`, `#` or `/`)",
                    s.filter
                )));
            }
            if split_share(&s.filter).1.is_empty() {
                return Err(at(format!(
                    "{:?} shares no filter (expected \"$share/{n}/{{filter}}\")",
                    s.filter
                )));
            }
        }
    }
    match names.first() {
        None => Ok(None),
        Some(first) if names.iter().all(|n| n == first) => Ok(first.map(str::to_string)),
        Some(_) => Err(at(format!(
            "mixes shared and unshared filters or several share names ({:?}) (expected all filters of a group shared under one name, or none)",
            plan.subscribe.iter().map(|s| s.filter.as_str()).collect::<Vec<_>>()
        ))),
    }
}

/// Across groups: a share name belongs to one group, so its members' loss can be settled
/// together (the broker hands each message to one member of the share); an offline window
/// starts within the run.
pub(super) fn check_groups(
    src: &Source<'_>,
    groups: &[GroupPlan],
    duration: Duration,
) -> Result<(), ScenarioError> {
    let mut seen: HashMap<&str, &str> = HashMap::new();
    for g in groups {
        if let Some(o) = g.options.offline.filter(|o| o.at >= duration) {
            return Err(src.flag(format!(
                "group {:?}: offline.at = {:?} is not within the run's duration {:?} (expected an earlier time)",
                g.name, o.at, duration
            )));
        }
        if let Some(name) = g.options.share.as_deref() {
            if let Some(first) = seen.insert(name, &g.name) {
                return Err(src.flag(format!(
                    "group {:?}: share name {name:?} is also used by group {first:?} (expected one group per share name, so loss is settled per share)",
                    g.name
                )));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::time::Duration;

    use super::*;
    use crate::scenario::{Overrides, Plan};

    const CA: &str = "-----BEGIN CERTIFICATE-----";

    fn load(text: &str) -> Result<Plan, String> {
        Plan::from_str(text, Path::new("dir/t.toml"), &Overrides::default())
            .map_err(|e| e.to_string())
    }

    fn scenario(target: &str, group: &str) -> String {
        format!(
            "name = \"t\"\nduration = \"10s\"\n{target}\n[[group]]\nname = \"g\"\ndevices = 2\nclient_id = \"g-{{index}}\"\n{group}\n"
        )
    }

    #[test]
    fn defaults_are_mqtts_and_nothing_else() {
        let plan = load(&scenario("", "")).unwrap();
        assert_eq!(plan.groups[0].options, GroupOptions::default());
        assert_eq!(plan.groups[0].options.transport.scheme(), "mqtts");
    }

    #[test]
    fn group_options_are_read() {
        let plan = load(&scenario(
            "[target]\nprotocol = \"5\"",
            r#"clean_session = false
offline = { at = "2s", for = "3s" }
subscribe = [{ filter = "$share/pool/t/#", qos = 1 }]
v5 = { session_expiry = "1h", topic_alias = true, user_properties = { site = "lab" }, message_expiry = "30s", receive_maximum = 50, max_packet_size = 4096 }"#,
        ))
        .unwrap();
        let o = &plan.groups[0].options;
        assert_eq!(
            o.offline,
            Some(OfflineWindow {
                at: Duration::from_secs(2),
                duration: Duration::from_secs(3)
            })
        );
        assert_eq!(o.share.as_deref(), Some("pool"));
        assert_eq!(
            o.v5,
            V5Options {
                session_expiry: Some(Duration::from_secs(3600)),
                topic_alias: true,
                user_properties: vec![("site".into(), "lab".into())],
                message_expiry: Some(Duration::from_secs(30)),
                receive_maximum: Some(50),
                max_packet_size: Some(4096),
            }
        );
        assert_eq!(split_share("$share/pool/t/#"), (Some("pool"), "t/#"));
        assert_eq!(split_share("t/#"), (None, "t/#"));
    }

    #[test]
    fn transports_build_their_broker_address() {
        let wss = Transport::Wss {
            path: "/mqtt".into(),
        };
        assert_eq!(
            wss.broker_addr("127.0.0.1", 8443),
            "wss://127.0.0.1:8443/mqtt"
        );
        assert_eq!(wss.broker_addr("::1", 8443), "wss://[::1]:8443/mqtt");
        assert_eq!(Transport::Mqtts.broker_addr("::1", 8883), "::1");
        assert!(wss.warning().is_none());
        assert!(Transport::Tcp.warning().unwrap().contains("PLAIN TEXT"));
        assert!(Transport::Ws { path: "/".into() }.is_plain());
    }

    #[test]
    fn bad_values_name_the_key_and_the_expected_form() {
        let cases = [
            (
                scenario("", "v5 = { topic_alias = true }"),
                "group[0].v5: MQTT 5 options on a group speaking 3.1.1",
            ),
            (
                scenario("[target]\nprotocol = \"5\"", "v5 = { receive_maximum = 0 }"),
                "group[0].v5.receive_maximum: 0 is out of range (expected 1..=65535)",
            ),
            (
                scenario("[target]\nprotocol = \"5\"", "v5 = { message_expiry = \"500ms\" }"),
                "group[0].v5.message_expiry: \"500ms\" is under a second",
            ),
            (
                scenario("", "offline = { at = \"2s\", for = \"0s\" }"),
                "group[0].offline.for: \"0s\" is no offline time",
            ),
            (
                scenario("", "offline = { at = \"20s\", for = \"1s\" }"),
                "offline.at = 20s is not within the run's duration 10s",
            ),
            (
                scenario("", "offline = { at = \"2s\", until = \"1s\" }"),
                "unknown field `until`",
            ),
            (
                scenario(
                    "",
                    r#"subscribe = [{ filter = "$share/a/t/#" }, { filter = "u/#" }]"#,
                ),
                "mixes shared and unshared filters",
            ),
            (
                scenario("[target]\ntransport = \"quic\"", ""),
                "target.transport: \"quic\" is not a transport (expected \"mqtts\", \"wss\", \"ws\" or \"tcp\")",
            ),
            (
                scenario("[target]\ntransport = \"wss\"", ""),
                "the embedded one listens for mqtts only",
            ),
            (
                scenario("[target]\npath = \"mqtt\"", ""),
                "target.path: \"mqtt\" is not a URL path",
            ),
        ];
        for (text, expected) in cases {
            let err = load(&text).expect_err(&text);
            assert!(err.contains(expected), "{err}\n  expected: {expected}");
        }
    }

    #[test]
    fn a_share_name_belongs_to_one_group() {
        let text = format!(
            "{}\n[[group]]\nname = \"h\"\ndevices = 1\nclient_id = \"h\"\nsubscribe = [{{ filter = \"$share/pool/x\" }}]\n",
            scenario("", r#"subscribe = [{ filter = "$share/pool/t/#" }]"#)
        );
        let err = load(&text).unwrap_err();
        assert!(
            err.contains("share name \"pool\" is also used by group \"g\""),
            "{err}"
        );
    }

    #[test]
    fn a_wss_target_names_its_path_and_checks_a_path_needs_ws() {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, format!("{CA}\nMIIB\n-----END CERTIFICATE-----\n")).unwrap();
        let overrides = Overrides {
            target: Some("mqtts://127.0.0.1:8443".into()),
            server_ca: Some(ca),
            ..Default::default()
        };
        let text = scenario("[target]\ntransport = \"wss\"\npath = \"/ws\"", "");
        // Only the PEM framing is checked when validating; TLS set-up parses the certificate.
        let plan = Plan::from_str(&text, Path::new("t.toml"), &overrides).unwrap();
        assert_eq!(
            plan.groups[0].options.transport,
            Transport::Wss { path: "/ws".into() }
        );
        let text = scenario("[target]\ntransport = \"tcp\"\npath = \"/ws\"", "");
        let err = Plan::from_str(&text, Path::new("t.toml"), &overrides)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("target.path: applies to WebSocket transports only"),
            "{err}"
        );
    }
}
