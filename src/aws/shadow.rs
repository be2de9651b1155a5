//! The Device Shadow document model, as AWS IoT documents it, for the emulated shadow service.
//!
//! Why a model of our own: a shadow flow is only testable without AWS if something answers
//! `update`, `get` and `delete` the way the Device Shadow service does: merge the request into
//! `desired`/`reported` (a `null` deletes a key, `"desired": null` the whole section, arrays
//! are replaced whole), keep per-leaf metadata timestamps, count versions (a request naming a
//! version other than the current one is a 409 conflict), compute the delta (fields of
//! `desired` that `reported` lacks or holds differently, recursing into objects), and refuse
//! bad requests with the documented codes and messages:
//!
//! | code | message |
//! |---|---|
//! | 400 | `Invalid JSON`, `Missing required node: state`, `State node must be an object`, `Desired node must be an object`, `Reported node must be an object`, `Invalid version`, `Invalid clientToken` (longer than 64 bytes or not a string), `JSON contains too many levels of nesting; maximum is 6`, `State contains an invalid node` |
//! | 404 | `No shadow exists with name: {name}` |
//! | 409 | `Version conflict` |
//! | 413 | `The payload exceeds the maximum size allowed` (a `desired` or `reported` section over 8 KiB) |
//! | 415 | `Unsupported documented encoding; supported encoding is UTF-8` |
//!
//! Deleting a shadow keeps its version: a shadow re-created under the same name continues from
//! it (AWS does so for 48 hours; the emulation for the life of the store).
//!
//! A delta is published on `update/delta` when an accepted update carried a `desired` section
//! and desired still differs from reported afterwards (an update of `reported` alone that
//! leaves a difference does not publish one again).
//!
//! The service side allocates freely (it parses and renders JSON per request); the device
//! side never uses this module on its hot path.

use std::collections::HashMap;

use serde_json::{json, Map, Value};

/// Most bytes of a `desired` or `reported` section (serialized) a shadow keeps.
pub const MAX_SECTION_BYTES: usize = 8 * 1024;
/// Deepest nesting of objects and arrays below `desired` / `reported`.
pub const MAX_DEPTH: usize = 6;
/// Longest client token, in bytes.
pub const MAX_CLIENT_TOKEN: usize = 64;

/// The three shadow operations a device publishes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Op {
    /// `update`: merge a state document.
    Update,
    /// `get`: read the whole document.
    Get,
    /// `delete`: remove the shadow.
    Delete,
}

impl Op {
    /// The topic level of the operation (`update`, `get`, `delete`).
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Update => "update",
            Op::Get => "get",
            Op::Delete => "delete",
        }
    }

    /// The operation named by a topic level.
    pub fn parse(level: &str) -> Option<Op> {
        match level {
            "update" => Some(Op::Update),
            "get" => Some(Op::Get),
            "delete" => Some(Op::Delete),
            _ => None,
        }
    }
}

/// Which shadow: a thing's classic shadow (`name == None`) or one of its named shadows.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ShadowKey {
    /// The thing name.
    pub thing: String,
    /// The shadow name; `None` for the classic (unnamed) shadow.
    pub name: Option<String>,
}

/// The response topics of a request, relative to the shadow's topic prefix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Suffix {
    /// `{op}/accepted`.
    Accepted(Op),
    /// `{op}/rejected`.
    Rejected(Op),
    /// `update/delta`.
    Delta,
    /// `update/documents`.
    Documents,
}

impl Suffix {
    /// The topic levels after the shadow prefix, e.g. `update/accepted`.
    pub fn as_str(self) -> &'static str {
        match self {
            Suffix::Accepted(Op::Update) => "update/accepted",
            Suffix::Accepted(Op::Get) => "get/accepted",
            Suffix::Accepted(Op::Delete) => "delete/accepted",
            Suffix::Rejected(Op::Update) => "update/rejected",
            Suffix::Rejected(Op::Get) => "get/rejected",
            Suffix::Rejected(Op::Delete) => "delete/rejected",
            Suffix::Delta => "update/delta",
            Suffix::Documents => "update/documents",
        }
    }
}

/// One message the service publishes in answer to a request.
#[derive(Clone, Debug, PartialEq)]
pub struct Reply {
    /// Where, relative to the shadow's prefix.
    pub suffix: Suffix,
    /// The JSON document.
    pub body: Value,
}

/// A refusal: the HTTP-style code and the documented message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejection {
    /// 400, 404, 409, 413 or 415.
    pub code: u16,
    /// The message AWS documents for it.
    pub message: String,
}

impl Rejection {
    fn new(code: u16, message: impl Into<String>) -> Rejection {
        Rejection {
            code,
            message: message.into(),
        }
    }
}

#[derive(Clone, Debug, Default)]
struct Shadow {
    desired: Map<String, Value>,
    reported: Map<String, Value>,
    meta_desired: Map<String, Value>,
    meta_reported: Map<String, Value>,
    version: u64,
}

/// Every shadow the emulated service keeps, with the versions of deleted ones.
#[derive(Debug, Default)]
pub struct ShadowStore {
    shadows: HashMap<ShadowKey, Shadow>,
    deleted: HashMap<ShadowKey, u64>,
}

impl ShadowStore {
    /// An empty store.
    pub fn new() -> ShadowStore {
        ShadowStore::default()
    }

    /// How many shadows exist.
    pub fn len(&self) -> usize {
        self.shadows.len()
    }

    /// Whether no shadow exists.
    pub fn is_empty(&self) -> bool {
        self.shadows.is_empty()
    }

    /// The current version of a shadow, if it exists.
    pub fn version(&self, key: &ShadowKey) -> Option<u64> {
        self.shadows.get(key).map(|s| s.version)
    }

    /// Answers one request; `now` is the service's clock in Unix seconds (AWS timestamps are
    /// seconds). Returns the messages to publish, the rejection first when there is one.
    pub fn handle(&mut self, key: &ShadowKey, op: Op, payload: &[u8], now: u64) -> Vec<Reply> {
        let token = client_token_of(payload);
        let result = match op {
            Op::Update => self.update(key, payload, now),
            Op::Get => self.get(key, payload, now),
            Op::Delete => self.delete(key, payload, now),
        };
        match result {
            Ok(replies) => replies,
            Err(r) => {
                let mut body = json!({ "code": r.code, "message": r.message, "timestamp": now });
                if let Some(t) = token {
                    body["clientToken"] = Value::String(t);
                }
                vec![Reply {
                    suffix: Suffix::Rejected(op),
                    body,
                }]
            }
        }
    }

    fn update(
        &mut self,
        key: &ShadowKey,
        payload: &[u8],
        now: u64,
    ) -> Result<Vec<Reply>, Rejection> {
        let req = request(payload, false)?;
        let state = match req.doc.get("state") {
            None => return Err(Rejection::new(400, "Missing required node: state")),
            Some(Value::Object(s)) => s,
            Some(_) => return Err(Rejection::new(400, "State node must be an object")),
        };
        if state.keys().any(|k| k != "desired" && k != "reported") {
            return Err(Rejection::new(400, "State contains an invalid node"));
        }
        for (section, what) in [("desired", "Desired"), ("reported", "Reported")] {
            match state.get(section) {
                None | Some(Value::Null) => {}
                Some(v @ Value::Object(_)) => {
                    if depth(v) > MAX_DEPTH {
                        return Err(Rejection::new(
                            400,
                            "JSON contains too many levels of nesting; maximum is 6",
                        ));
                    }
                }
                Some(_) => {
                    return Err(Rejection::new(
                        400,
                        format!("{what} node must be an object"),
                    ))
                }
            }
        }
        let current = self
            .shadows
            .get(key)
            .map(|s| s.version)
            .or_else(|| self.deleted.get(key).copied())
            .unwrap_or(0);
        if let Some(v) = req.version {
            if v != current {
                return Err(Rejection::new(409, "Version conflict"));
            }
        }
        let previous = self.shadows.get(key).cloned();
        let mut shadow = previous.clone().unwrap_or_default();
        apply(
            &mut shadow.desired,
            &mut shadow.meta_desired,
            state.get("desired"),
            now,
        );
        apply(
            &mut shadow.reported,
            &mut shadow.meta_reported,
            state.get("reported"),
            now,
        );
        for section in [&shadow.desired, &shadow.reported] {
            if serde_json::to_vec(section).map_or(usize::MAX, |b| b.len()) > MAX_SECTION_BYTES {
                return Err(Rejection::new(
                    413,
                    "The payload exceeds the maximum size allowed",
                ));
            }
        }
        shadow.version = current + 1;

        let mut accepted_meta = Map::new();
        for section in ["desired", "reported"] {
            if let Some(v) = state.get(section) {
                accepted_meta.insert(section.into(), meta_of(v, now));
            }
        }
        let mut accepted = json!({
            "state": Value::Object(state.clone()),
            "metadata": accepted_meta,
            "version": shadow.version,
            "timestamp": now,
        });
        let mut documents = json!({
            "previous": previous.as_ref().map_or(Value::Null, snapshot),
            "current": snapshot(&shadow),
            "timestamp": now,
        });
        let desired_given = matches!(state.get("desired"), Some(Value::Object(_)));
        let delta = delta(&shadow.desired, &shadow.reported);
        let mut delta_reply = (desired_given && !delta.is_empty()).then(|| {
            json!({
                "version": shadow.version,
                "timestamp": now,
                "state": Value::Object(delta.clone()),
                "metadata": Value::Object(meta_like(&delta, &shadow.meta_desired)),
            })
        });
        if let Some(t) = &req.token {
            accepted["clientToken"] = Value::String(t.clone());
            documents["clientToken"] = Value::String(t.clone());
            if let Some(d) = delta_reply.as_mut() {
                d["clientToken"] = Value::String(t.clone());
            }
        }
        self.deleted.remove(key);
        self.shadows.insert(key.clone(), shadow);

        let mut replies = vec![
            Reply {
                suffix: Suffix::Accepted(Op::Update),
                body: accepted,
            },
            Reply {
                suffix: Suffix::Documents,
                body: documents,
            },
        ];
        if let Some(body) = delta_reply {
            replies.push(Reply {
                suffix: Suffix::Delta,
                body,
            });
        }
        Ok(replies)
    }

    fn get(&self, key: &ShadowKey, payload: &[u8], now: u64) -> Result<Vec<Reply>, Rejection> {
        let req = request(payload, true)?;
        let shadow = self.shadows.get(key).ok_or_else(|| not_found(key))?;
        let mut state = Map::new();
        let mut metadata = Map::new();
        if !shadow.desired.is_empty() {
            state.insert("desired".into(), Value::Object(shadow.desired.clone()));
            metadata.insert("desired".into(), Value::Object(shadow.meta_desired.clone()));
        }
        if !shadow.reported.is_empty() {
            state.insert("reported".into(), Value::Object(shadow.reported.clone()));
            metadata.insert(
                "reported".into(),
                Value::Object(shadow.meta_reported.clone()),
            );
        }
        let d = delta(&shadow.desired, &shadow.reported);
        if !d.is_empty() {
            state.insert("delta".into(), Value::Object(d));
        }
        let mut body = json!({
            "state": state,
            "metadata": metadata,
            "version": shadow.version,
            "timestamp": now,
        });
        if let Some(t) = req.token {
            body["clientToken"] = Value::String(t);
        }
        Ok(vec![Reply {
            suffix: Suffix::Accepted(Op::Get),
            body,
        }])
    }

    fn delete(
        &mut self,
        key: &ShadowKey,
        payload: &[u8],
        now: u64,
    ) -> Result<Vec<Reply>, Rejection> {
        let req = request(payload, true)?;
        let shadow = self.shadows.get(key).ok_or_else(|| not_found(key))?;
        if let Some(v) = req.version {
            if v != shadow.version {
                return Err(Rejection::new(409, "Version conflict"));
            }
        }
        let version = shadow.version;
        self.shadows.remove(key);
        self.deleted.insert(key.clone(), version);
        let mut body = json!({ "version": version, "timestamp": now });
        if let Some(t) = req.token {
            body["clientToken"] = Value::String(t);
        }
        Ok(vec![Reply {
            suffix: Suffix::Accepted(Op::Delete),
            body,
        }])
    }
}

fn not_found(key: &ShadowKey) -> Rejection {
    let name = key.name.as_deref().unwrap_or(&key.thing);
    Rejection::new(404, format!("No shadow exists with name: {name}"))
}

/// A parsed request: the document, its client token and version.
struct Request {
    doc: Map<String, Value>,
    token: Option<String>,
    version: Option<u64>,
}

/// Parses and checks what every request shares; `empty_ok`: get and delete may carry no
/// payload at all.
fn request(payload: &[u8], empty_ok: bool) -> Result<Request, Rejection> {
    let text = std::str::from_utf8(payload).map_err(|_| {
        Rejection::new(
            415,
            "Unsupported documented encoding; supported encoding is UTF-8",
        )
    })?;
    if empty_ok && text.trim().is_empty() {
        return Ok(Request {
            doc: Map::new(),
            token: None,
            version: None,
        });
    }
    let doc = match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(doc)) => doc,
        _ => return Err(Rejection::new(400, "Invalid JSON")),
    };
    let token = match doc.get("clientToken") {
        None => None,
        Some(Value::String(t)) if t.len() <= MAX_CLIENT_TOKEN => Some(t.clone()),
        Some(_) => return Err(Rejection::new(400, "Invalid clientToken")),
    };
    let version = match doc.get("version") {
        None => None,
        Some(v) => Some(
            v.as_u64()
                .ok_or_else(|| Rejection::new(400, "Invalid version"))?,
        ),
    };
    Ok(Request {
        doc,
        token,
        version,
    })
}

/// The client token of a request, if it has a usable one (rejections echo it).
fn client_token_of(payload: &[u8]) -> Option<String> {
    let v: Value = serde_json::from_slice(payload).ok()?;
    match v.get("clientToken") {
        Some(Value::String(t)) if t.len() <= MAX_CLIENT_TOKEN => Some(t.clone()),
        _ => None,
    }
}

/// Levels of objects and arrays in `v`: `{"a":1}` is 1, `{"a":{"b":1}}` is 2.
fn depth(v: &Value) -> usize {
    match v {
        Value::Object(m) => 1 + m.values().map(depth).max().unwrap_or(0),
        Value::Array(a) => 1 + a.iter().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

/// Merges a request section into a shadow section and its metadata: `null` removes the
/// whole section, a `null` value removes its key, objects merge, anything else replaces.
fn apply(
    section: &mut Map<String, Value>,
    meta: &mut Map<String, Value>,
    patch: Option<&Value>,
    now: u64,
) {
    match patch {
        None => {}
        Some(Value::Null) => {
            section.clear();
            meta.clear();
        }
        Some(Value::Object(p)) => merge(section, meta, p, now),
        Some(_) => unreachable!("checked: sections are objects or null"),
    }
}

fn merge(
    target: &mut Map<String, Value>,
    meta: &mut Map<String, Value>,
    patch: &Map<String, Value>,
    now: u64,
) {
    for (k, v) in patch {
        match v {
            Value::Null => {
                target.remove(k);
                meta.remove(k);
            }
            Value::Object(p) => {
                if !matches!(target.get(k), Some(Value::Object(_))) {
                    target.insert(k.clone(), Value::Object(Map::new()));
                }
                if !matches!(meta.get(k), Some(Value::Object(_))) {
                    meta.insert(k.clone(), Value::Object(Map::new()));
                }
                if let (Some(Value::Object(t)), Some(Value::Object(m))) =
                    (target.get_mut(k), meta.get_mut(k))
                {
                    merge(t, m, p, now);
                }
                // An object emptied by its nulls is gone, as AWS shows it.
                if target
                    .get(k)
                    .is_some_and(|t| t.as_object().is_some_and(Map::is_empty))
                {
                    target.remove(k);
                    meta.remove(k);
                }
            }
            other => {
                target.insert(k.clone(), other.clone());
                meta.insert(k.clone(), meta_of(other, now));
            }
        }
    }
}

/// The metadata of a request value: its structure with `{"timestamp": now}` at every leaf
/// (array elements each get one).
fn meta_of(v: &Value, now: u64) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, v)| (k.clone(), meta_of(v, now)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(|v| meta_of(v, now)).collect()),
        _ => json!({ "timestamp": now }),
    }
}

/// Desired fields that reported lacks or holds differently; objects recurse, arrays and
/// scalars compare whole.
pub fn delta(desired: &Map<String, Value>, reported: &Map<String, Value>) -> Map<String, Value> {
    let mut out = Map::new();
    for (k, d) in desired {
        match (d, reported.get(k)) {
            (Value::Object(dm), Some(Value::Object(rm))) => {
                let sub = delta(dm, rm);
                if !sub.is_empty() {
                    out.insert(k.clone(), Value::Object(sub));
                }
            }
            (_, Some(r)) if r == d => {}
            _ => {
                out.insert(k.clone(), d.clone());
            }
        }
    }
    out
}

/// The part of `meta` shaped like `like` (the delta's metadata, taken from desired's).
fn meta_like(like: &Map<String, Value>, meta: &Map<String, Value>) -> Map<String, Value> {
    let mut out = Map::new();
    for (k, v) in like {
        let Some(m) = meta.get(k) else { continue };
        match (v, m) {
            (Value::Object(lv), Value::Object(mm)) if !mm.contains_key("timestamp") => {
                out.insert(k.clone(), Value::Object(meta_like(lv, mm)));
            }
            _ => {
                out.insert(k.clone(), m.clone());
            }
        }
    }
    out
}

/// A shadow as `update/documents` shows it.
fn snapshot(s: &Shadow) -> Value {
    let mut state = Map::new();
    let mut metadata = Map::new();
    if !s.desired.is_empty() {
        state.insert("desired".into(), Value::Object(s.desired.clone()));
        metadata.insert("desired".into(), Value::Object(s.meta_desired.clone()));
    }
    if !s.reported.is_empty() {
        state.insert("reported".into(), Value::Object(s.reported.clone()));
        metadata.insert("reported".into(), Value::Object(s.meta_reported.clone()));
    }
    json!({ "state": state, "metadata": metadata, "version": s.version })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> ShadowKey {
        ShadowKey {
            thing: "thing-1".into(),
            name: None,
        }
    }

    fn send(store: &mut ShadowStore, op: Op, body: &str) -> Vec<Reply> {
        store.handle(&key(), op, body.as_bytes(), 1_700_000_000)
    }

    fn find(replies: &[Reply], suffix: Suffix) -> Option<&Value> {
        replies.iter().find(|r| r.suffix == suffix).map(|r| &r.body)
    }

    /// Table: (requests applied in order, expected desired, expected reported, expected delta,
    /// expected version). Examples from the AWS IoT Device Shadow documentation
    /// (device-shadow-document, device-shadow-data-flow).
    #[test]
    fn documented_state_transitions() {
        struct Case {
            what: &'static str,
            requests: &'static [&'static str],
            desired: Value,
            reported: Value,
            delta: Value,
            version: u64,
        }
        let cases = [
            Case {
                what: "desired and reported differ: delta holds desired's differing fields",
                requests: &[
                    r#"{"state":{"desired":{"color":"RED","state":"STOP"}}}"#,
                    r#"{"state":{"reported":{"color":"GREEN","engine":"ON"}}}"#,
                ],
                desired: json!({"color":"RED","state":"STOP"}),
                reported: json!({"color":"GREEN","engine":"ON"}),
                delta: json!({"color":"RED","state":"STOP"}),
                version: 2,
            },
            Case {
                what: "a null value deletes that key only",
                requests: &[
                    r#"{"state":{"desired":{"engine":"ON","color":"RED"}}}"#,
                    r#"{"state":{"desired":{"engine":null}}}"#,
                ],
                desired: json!({"color":"RED"}),
                reported: json!({}),
                delta: json!({"color":"RED"}),
                version: 2,
            },
            Case {
                what: "\"desired\": null removes the whole section",
                requests: &[
                    r#"{"state":{"desired":{"color":"RED"}}}"#,
                    r#"{"state":{"reported":{"color":"red"},"desired":null}}"#,
                ],
                desired: json!({}),
                reported: json!({"color":"red"}),
                delta: json!({}),
                version: 2,
            },
            Case {
                what: "nested objects merge and their delta is the differing leaves",
                requests: &[
                    r#"{"state":{"reported":{"lights":{"color":{"r":255,"g":0,"b":255}}}}}"#,
                    r#"{"state":{"desired":{"lights":{"color":{"r":255,"g":255,"b":255}}}}}"#,
                ],
                desired: json!({"lights":{"color":{"r":255,"g":255,"b":255}}}),
                reported: json!({"lights":{"color":{"r":255,"g":0,"b":255}}}),
                delta: json!({"lights":{"color":{"g":255}}}),
                version: 2,
            },
            Case {
                what: "arrays are values: replaced whole, compared whole",
                requests: &[
                    r#"{"state":{"reported":{"colors":["RED","GREEN"]}}}"#,
                    r#"{"state":{"desired":{"colors":["RED","GREEN","BLUE"]}}}"#,
                    r#"{"state":{"reported":{"colors":["BLUE"]}}}"#,
                ],
                desired: json!({"colors":["RED","GREEN","BLUE"]}),
                reported: json!({"colors":["BLUE"]}),
                delta: json!({"colors":["RED","GREEN","BLUE"]}),
                version: 3,
            },
            Case {
                what: "reporting the desired value clears the delta",
                requests: &[
                    r#"{"state":{"desired":{"color":"GREEN"}}}"#,
                    r#"{"state":{"reported":{"color":"GREEN"}}}"#,
                ],
                desired: json!({"color":"GREEN"}),
                reported: json!({"color":"GREEN"}),
                delta: json!({}),
                version: 2,
            },
            Case {
                what: "an object emptied by nulls disappears",
                requests: &[
                    r#"{"state":{"reported":{"a":{"b":1}}}}"#,
                    r#"{"state":{"reported":{"a":{"b":null}}}}"#,
                ],
                desired: json!({}),
                reported: json!({}),
                delta: json!({}),
                version: 2,
            },
        ];
        for c in cases {
            let mut store = ShadowStore::new();
            for r in c.requests {
                let replies = send(&mut store, Op::Update, r);
                assert!(
                    find(&replies, Suffix::Accepted(Op::Update)).is_some(),
                    "{}: {r} was not accepted: {replies:?}",
                    c.what
                );
            }
            let got = send(&mut store, Op::Get, "");
            let doc = find(&got, Suffix::Accepted(Op::Get)).expect("get accepted");
            let empty = json!({});
            let section = |s: &str| doc["state"].get(s).unwrap_or(&empty).clone();
            assert_eq!(section("desired"), c.desired, "{}: desired", c.what);
            assert_eq!(section("reported"), c.reported, "{}: reported", c.what);
            assert_eq!(section("delta"), c.delta, "{}: delta", c.what);
            assert_eq!(doc["version"], c.version, "{}: version", c.what);
        }
    }

    /// Table: (shadow set-up, request, operation, expected code, expected message).
    #[test]
    fn documented_rejections() {
        let deep = r#"{"state":{"reported":{"a":{"b":{"c":{"d":{"e":{"f":{"g":1}}}}}}}}}"#;
        let big = format!(
            r#"{{"state":{{"reported":{{"blob":"{}"}}}}}}"#,
            "x".repeat(MAX_SECTION_BYTES)
        );
        let long_token = format!(
            r#"{{"state":{{}},"clientToken":"{}"}}"#,
            "t".repeat(MAX_CLIENT_TOKEN + 1)
        );
        let cases: Vec<(bool, Op, String, u16, &str)> = vec![
            (false, Op::Update, "not json".into(), 400, "Invalid JSON"),
            (false, Op::Update, "[1,2]".into(), 400, "Invalid JSON"),
            (
                false,
                Op::Update,
                r#"{"clientToken":"a"}"#.into(),
                400,
                "Missing required node: state",
            ),
            (
                false,
                Op::Update,
                r#"{"state":5}"#.into(),
                400,
                "State node must be an object",
            ),
            (
                false,
                Op::Update,
                r#"{"state":{"desired":"on"}}"#.into(),
                400,
                "Desired node must be an object",
            ),
            (
                false,
                Op::Update,
                r#"{"state":{"reported":[1]}}"#.into(),
                400,
                "Reported node must be an object",
            ),
            (
                false,
                Op::Update,
                r#"{"state":{"delta":{"a":1}}}"#.into(),
                400,
                "State contains an invalid node",
            ),
            (
                false,
                Op::Update,
                r#"{"state":{},"version":"7"}"#.into(),
                400,
                "Invalid version",
            ),
            (false, Op::Update, long_token, 400, "Invalid clientToken"),
            (
                false,
                Op::Update,
                deep.into(),
                400,
                "JSON contains too many levels of nesting; maximum is 6",
            ),
            (
                false,
                Op::Update,
                big,
                413,
                "The payload exceeds the maximum size allowed",
            ),
            (
                true,
                Op::Update,
                r#"{"state":{"reported":{"a":2}},"version":7}"#.into(),
                409,
                "Version conflict",
            ),
            (
                false,
                Op::Get,
                "".into(),
                404,
                "No shadow exists with name: thing-1",
            ),
            (
                false,
                Op::Delete,
                "{}".into(),
                404,
                "No shadow exists with name: thing-1",
            ),
            (
                true,
                Op::Delete,
                r#"{"version":9}"#.into(),
                409,
                "Version conflict",
            ),
        ];
        for (exists, op, body, code, message) in cases {
            let mut store = ShadowStore::new();
            if exists {
                send(&mut store, Op::Update, r#"{"state":{"reported":{"a":1}}}"#);
            }
            let before = store.version(&key());
            let replies = store.handle(&key(), op, body.as_bytes(), 5);
            assert_eq!(replies.len(), 1, "{body}: {replies:?}");
            let r = find(&replies, Suffix::Rejected(op)).expect("rejected");
            assert_eq!(r["code"], code, "{body}");
            assert_eq!(r["message"], message, "{body}");
            assert_eq!(r["timestamp"], 5);
            assert_eq!(
                store.version(&key()),
                before,
                "{body}: a rejection changes nothing"
            );
        }
        let mut store = ShadowStore::new();
        let bad = store.handle(&key(), Op::Update, &[0xff, 0xfe], 1);
        assert_eq!(
            find(&bad, Suffix::Rejected(Op::Update)).unwrap()["code"],
            415
        );
    }

    #[test]
    fn versions_count_and_a_matching_version_is_accepted() {
        let mut store = ShadowStore::new();
        // A new shadow: the current version is 0.
        let r = send(
            &mut store,
            Op::Update,
            r#"{"state":{"reported":{"a":1}},"version":0}"#,
        );
        assert_eq!(
            find(&r, Suffix::Accepted(Op::Update)).unwrap()["version"],
            1
        );
        let r = send(
            &mut store,
            Op::Update,
            r#"{"state":{"reported":{"a":2}},"version":1}"#,
        );
        assert_eq!(
            find(&r, Suffix::Accepted(Op::Update)).unwrap()["version"],
            2
        );
        let r = send(
            &mut store,
            Op::Update,
            r#"{"state":{"reported":{"a":3}},"version":1}"#,
        );
        assert_eq!(find(&r, Suffix::Rejected(Op::Update)).unwrap()["code"], 409);
        // Deleting keeps the version; re-creating continues from it.
        let r = send(&mut store, Op::Delete, r#"{"clientToken":"d1"}"#);
        let d = find(&r, Suffix::Accepted(Op::Delete)).unwrap();
        assert_eq!(d["version"], 2);
        assert_eq!(d["clientToken"], "d1");
        let r = send(&mut store, Op::Update, r#"{"state":{"reported":{"a":4}}}"#);
        assert_eq!(
            find(&r, Suffix::Accepted(Op::Update)).unwrap()["version"],
            3
        );
    }

    #[test]
    fn accepted_documents_and_delta_carry_what_aws_sends() {
        let mut store = ShadowStore::new();
        send(
            &mut store,
            Op::Update,
            r#"{"state":{"reported":{"color":"GREEN"}}}"#,
        );
        let r = store.handle(
            &key(),
            Op::Update,
            br#"{"state":{"desired":{"color":"RED","mode":{"fan":2}}},"clientToken":"c-7"}"#,
            42,
        );
        let accepted = find(&r, Suffix::Accepted(Op::Update)).unwrap();
        assert_eq!(
            accepted,
            &json!({
                "state": {"desired": {"color": "RED", "mode": {"fan": 2}}},
                "metadata": {"desired": {"color": {"timestamp": 42}, "mode": {"fan": {"timestamp": 42}}}},
                "version": 2,
                "timestamp": 42,
                "clientToken": "c-7",
            })
        );
        let delta = find(&r, Suffix::Delta).unwrap();
        assert_eq!(
            delta,
            &json!({
                "version": 2,
                "timestamp": 42,
                "state": {"color": "RED", "mode": {"fan": 2}},
                "metadata": {"color": {"timestamp": 42}, "mode": {"fan": {"timestamp": 42}}},
                "clientToken": "c-7",
            })
        );
        let docs = find(&r, Suffix::Documents).unwrap();
        assert_eq!(docs["previous"]["version"], 1);
        assert_eq!(
            docs["previous"]["state"],
            json!({"reported": {"color": "GREEN"}})
        );
        assert_eq!(docs["current"]["version"], 2);
        assert_eq!(docs["current"]["state"]["desired"]["color"], "RED");
        // Reporting the desired state: accepted, no delta.
        let r = send(
            &mut store,
            Op::Update,
            r#"{"state":{"reported":{"color":"RED","mode":{"fan":2}}}}"#,
        );
        assert!(find(&r, Suffix::Delta).is_none(), "{r:?}");
        // A reported-only update leaving a difference does not publish a delta either.
        let r = send(
            &mut store,
            Op::Update,
            r#"{"state":{"reported":{"color":"BLUE"}}}"#,
        );
        assert!(find(&r, Suffix::Delta).is_none(), "{r:?}");
        let r = send(&mut store, Op::Get, r#"{"clientToken":"g"}"#);
        let got = find(&r, Suffix::Accepted(Op::Get)).unwrap();
        assert_eq!(got["state"]["delta"], json!({"color": "RED"}));
        assert_eq!(got["clientToken"], "g");
        assert_eq!(
            got["metadata"]["reported"]["color"]["timestamp"],
            1_700_000_000
        );
    }

    #[test]
    fn named_shadows_are_separate_from_the_classic_one() {
        let mut store = ShadowStore::new();
        let named = ShadowKey {
            thing: "thing-1".into(),
            name: Some("config".into()),
        };
        store.handle(&named, Op::Update, br#"{"state":{"reported":{"a":1}}}"#, 1);
        assert_eq!(store.version(&named), Some(1));
        assert_eq!(store.version(&key()), None);
        let r = store.handle(&key(), Op::Get, b"", 1);
        assert_eq!(find(&r, Suffix::Rejected(Op::Get)).unwrap()["code"], 404);
        let r = store.handle(&named, Op::Get, b"", 1);
        assert!(find(&r, Suffix::Accepted(Op::Get)).is_some());
        let r = store.handle(
            &ShadowKey {
                name: Some("other".into()),
                ..named
            },
            Op::Delete,
            b"",
            1,
        );
        assert_eq!(
            find(&r, Suffix::Rejected(Op::Delete)).unwrap()["message"],
            "No shadow exists with name: other"
        );
    }
}
