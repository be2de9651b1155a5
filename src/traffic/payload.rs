//! Payloads that publishers send and subscribers measure.
//!
//! A scenario's `payload` is either raw bytes of a size (`size = 100`) or a JSON template whose
//! string values may be generator calls (`temperature = "sinusoid(20, 5, 60s)"`). Both forms
//! carry a measurement [`Header`] (publisher, sequence number, intended and actual send time),
//! because loss, duplicates, reordering and end-to-end latency are computed by the subscriber
//! from the message alone.
//!
//! Templates are compiled once, at scenario load, into literal JSON text interleaved with
//! generators, so every mistake is reported before the first connection and rendering one
//! message (thousands per second per core) is a few buffer appends: [`PayloadSpec::render`]
//! writes into a caller-owned `Vec<u8>` that is reused, and [`parse_header`] reads a received
//! payload without allocating.
//!
//! Generators (durations as in the scenario: `60s`, `500ms`, `2m`; `t` is the time since the
//! run's epoch):
//!
//! | call | value |
//! |---|---|
//! | `counter()`, `counter(start)` | integer: `start` (default 0) + messages the device rendered before |
//! | `timestamp()` | integer: send time in ms since the Unix epoch (wall clock) |
//! | `uniform(min, max)` | float in `[min, max]` |
//! | `uniformInt(min, max)` | integer in `[min, max]` |
//! | `pickOne("a", 'b', 3)` | one of the strings or numbers |
//! | `sinusoid(mean, amplitude, period)` | `mean + amplitude * sin(2π (t / period + phase))`, phase fixed per device |
//! | `decay(start, end, halflife)` | `end + (start - end) * 2^(-t / halflife)` |
//! | `location(lat, lon, radius_km)` | `{"lat":..,"lon":..}`: a point within `radius_km`, fixed per device |
//!
//! Generated floats carry at most 4 decimals. A string that starts like a call (`name(`) is
//! always read as a generator, so a typo is an error rather than a literal sent by mistake.
//!
//! Rendering is deterministic: the same seed, device index and sequence of [`RenderCtx`] give the
//! same bytes (within one build: rand does not promise `SmallRng`'s algorithm across versions).

use std::f64::consts::TAU;
use std::io::Write as _;
use std::time::Duration;

use rand::rngs::SmallRng;
use rand::{Rng as _, RngCore as _, SeedableRng as _};

/// Length of the binary measurement header that starts every raw payload, and so the smallest
/// raw payload size.
pub const HEADER_LEN: usize = 32;

/// The first four bytes of a raw payload: tells a subscriber the message is one of ours (and
/// which header layout follows; a new layout would get a new magic).
pub const MAGIC: [u8; 4] = *b"TSW1";

/// MQTT's largest possible packet (the variable-length "remaining length" tops out here), so no
/// payload can be larger.
pub const MAX_RAW_SIZE: usize = 268_435_455;

/// The key of the JSON header member; reserved in templates.
const JSON_KEY: &str = "_tsw";
/// How every generated JSON payload begins; [`parse_header`] looks for exactly this.
const JSON_PREFIX: &[u8] = b"{\"_tsw\":[";

/// What a subscriber needs to measure a message: who sent it, its place in that publisher's
/// sequence, and when it was meant to go and did go.
///
/// Both times are nanoseconds since the run's epoch: one `Instant` shared by publishers and
/// subscribers in this process, so receive - send is a monotonic-clock difference. Were the
/// publisher and subscriber in different processes (`--processes`, shards), these would have to
/// be wall-clock times, and the report must then say that latency is measured across clocks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Header {
    /// The publishing device's index in the fleet (loss and order are tracked per publisher).
    pub publisher: u32,
    /// The publisher's message sequence number, consecutive: gaps are loss, repeats duplicates,
    /// decreases reordering.
    pub seq: u64,
    /// When the open-model schedule meant this message to be sent: latency measured from here
    /// includes the time the message waited behind slow sends (no coordinated omission).
    pub intended_ns: u64,
    /// When the PUBLISH was handed to the MQTT client: the uncorrected latency's start.
    pub sent_ns: u64,
}

impl Header {
    /// The binary form: magic, then publisher, seq, intended_ns and sent_ns little-endian.
    ///
    /// The four fields fill the 32 bytes exactly, so there is no reserved space: a future layout
    /// changes the magic (`TSW2`) instead.
    fn to_bytes(self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[0..4].copy_from_slice(&MAGIC);
        b[4..8].copy_from_slice(&self.publisher.to_le_bytes());
        b[8..16].copy_from_slice(&self.seq.to_le_bytes());
        b[16..24].copy_from_slice(&self.intended_ns.to_le_bytes());
        b[24..32].copy_from_slice(&self.sent_ns.to_le_bytes());
        b
    }

    /// `{"_tsw":[publisher,seq,intended_ns,sent_ns]` (the object is left open).
    fn write_json(self, out: &mut Vec<u8>) {
        out.extend_from_slice(JSON_PREFIX);
        write_u64(out, self.publisher.into());
        out.push(b',');
        write_u64(out, self.seq);
        out.push(b',');
        write_u64(out, self.intended_ns);
        out.push(b',');
        write_u64(out, self.sent_ns);
        out.push(b']');
    }
}

/// Reads the measurement header of a received payload, raw or JSON; `None` when the payload is
/// not one of ours (or is damaged).
///
/// Subscribers call this once per message, so it neither allocates nor parses more than the
/// header; it never panics, whatever the bytes (a shared broker carries other traffic too).
pub fn parse_header(payload: &[u8]) -> Option<Header> {
    if payload.len() >= HEADER_LEN && payload[..4] == MAGIC {
        let u64_at = |at: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&payload[at..at + 8]);
            u64::from_le_bytes(b)
        };
        let mut p = [0u8; 4];
        p.copy_from_slice(&payload[4..8]);
        return Some(Header {
            publisher: u32::from_le_bytes(p),
            seq: u64_at(8),
            intended_ns: u64_at(16),
            sent_ns: u64_at(24),
        });
    }
    let mut rest = payload.strip_prefix(JSON_PREFIX)?;
    let mut fields = [0u64; 4];
    for (i, field) in fields.iter_mut().enumerate() {
        let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
        // JSON numbers have no leading zeros; neither does what we render.
        if digits == 0 || (digits > 1 && rest[0] == b'0') {
            return None;
        }
        let mut n: u64 = 0;
        for &d in &rest[..digits] {
            n = n.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
        }
        *field = n;
        let sep = if i == 3 { b']' } else { b',' };
        rest = rest[digits..].strip_prefix(&[sep])?;
    }
    // The header is the object's first member: a member or the object's end follows.
    if !matches!(rest.first(), Some(b',' | b'}')) {
        return None;
    }
    Some(Header {
        publisher: u32::try_from(fields[0]).ok()?,
        seq: fields[1],
        intended_ns: fields[2],
        sent_ns: fields[3],
    })
}

/// Why a payload definition was refused. Each message is one line naming the field, the bad
/// value and the expected form; the scenario loader adds `file:line:col`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PayloadError {
    /// A raw payload too small to hold the header, or too large for MQTT.
    #[error("size = {size} is out of range: raw payloads need {min} to {max} bytes (the first {min} hold the measurement header)")]
    RawSize {
        /// The size asked for.
        size: usize,
        /// [`HEADER_LEN`].
        min: usize,
        /// [`MAX_RAW_SIZE`].
        max: usize,
    },
    /// Something in a JSON template is wrong.
    #[error("{path}: {message}")]
    Template {
        /// Where in the template, e.g. `payload.sensors.temp` or `payload.tags[2]`.
        path: String,
        /// The bad text and the expected form.
        message: String,
    },
}

/// Everything a render needs from the publisher beyond its own state: passed in rather than
/// read from clocks, so rendering is deterministic and testable.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct RenderCtx {
    /// The measurement header this message carries.
    pub header: Header,
    /// Time since the run's epoch: drives `sinusoid` and `decay`.
    pub elapsed: Duration,
    /// Wall-clock send time in milliseconds since the Unix epoch: what `timestamp()` shows, the
    /// form downstream systems expect (not used for latency).
    pub unix_ms: u64,
}

/// One device's generator state: its random stream, its message counter and the seed of its
/// fixed values (sinusoid phases, locations).
///
/// Kept per device (not per template or worker) so a device's messages depend only on the run's
/// seed and the device's index, not on which worker renders them or in what interleaving.
#[derive(Clone, Debug, PartialEq)]
pub struct DeviceState {
    rng: SmallRng,
    /// Messages rendered so far: what `counter()` adds to its start.
    rendered: u64,
    /// Seeds the per-device fixed values, derived per generator without storage.
    salt: u64,
}

impl DeviceState {
    /// The state of device `device` in a run seeded with `seed`.
    pub fn new(seed: u64, device: u32) -> Self {
        let base = mix(seed ^ mix(u64::from(device)));
        DeviceState {
            rng: SmallRng::seed_from_u64(base),
            rendered: 0,
            salt: mix(base ^ 0x7473_775f_6669_7865), // "tsw_fixe"
        }
    }

    /// How many payloads this device has rendered.
    pub fn rendered(&self) -> u64 {
        self.rendered
    }

    /// A fixed per-device number in [0, 1) for generator `slot`, draw `k`: the same on every
    /// call, different between devices and between generators.
    fn fixed_unit(&self, slot: u32, k: u32) -> f64 {
        unit(mix(self.salt ^ mix((u64::from(slot) << 32) | u64::from(k))))
    }
}

/// What a publishing group sends.
#[derive(Clone, Debug, PartialEq)]
pub enum PayloadSpec {
    /// `size` bytes: the binary header, then pseudo-random filler (so the bytes do not compress
    /// and sizes are exactly what the user asked for).
    Raw {
        /// Total payload length in bytes, header included; build with [`PayloadSpec::raw`],
        /// which checks it (a smaller size written directly renders [`HEADER_LEN`] bytes).
        size: usize,
    },
    /// A JSON object: the header member, then the template's fields.
    Json(PayloadTemplate),
}

impl PayloadSpec {
    /// A raw payload of `size` bytes, which must hold the header and fit in an MQTT packet.
    pub fn raw(size: usize) -> Result<Self, PayloadError> {
        if !(HEADER_LEN..=MAX_RAW_SIZE).contains(&size) {
            return Err(PayloadError::RawSize {
                size,
                min: HEADER_LEN,
                max: MAX_RAW_SIZE,
            });
        }
        Ok(PayloadSpec::Raw { size })
    }

    /// Replaces `out`'s contents with the next payload of the device whose state is `state`.
    ///
    /// Reuse one `out` per worker or device: after the first call it has the capacity it needs
    /// and rendering does not allocate.
    pub fn render(&self, ctx: &RenderCtx, state: &mut DeviceState, out: &mut Vec<u8>) {
        match self {
            PayloadSpec::Raw { size } => {
                out.clear();
                out.extend_from_slice(&ctx.header.to_bytes());
                out.resize((*size).max(HEADER_LEN), 0);
                state.rng.fill_bytes(&mut out[HEADER_LEN..]);
                state.rendered += 1;
            }
            PayloadSpec::Json(template) => template.render(ctx, state, out),
        }
    }
}

/// A compiled JSON payload template: literal JSON text between generators.
///
/// Fields appear in the order of the TOML table they came from (toml's map: alphabetical by
/// key unless toml's `preserve_order` feature is on).
#[derive(Clone, Debug, PartialEq)]
pub struct PayloadTemplate {
    pieces: Vec<Piece>,
    /// A usual upper bound of a rendered payload's length, reserved on every render so the
    /// buffer grows once, not in steps.
    len_hint: usize,
}

#[derive(Clone, Debug, PartialEq)]
enum Piece {
    Text(Box<[u8]>),
    Gen(Gen),
}

#[derive(Clone, Debug, PartialEq)]
enum Gen {
    Counter {
        start: i64,
    },
    Timestamp,
    Uniform {
        min: f64,
        max: f64,
    },
    UniformInt {
        min: i64,
        max: i64,
    },
    /// Choices as JSON text.
    PickOne(Box<[Box<[u8]>]>),
    Sinusoid {
        mean: f64,
        amplitude: f64,
        period_s: f64,
        slot: u32,
    },
    Decay {
        start: f64,
        end: f64,
        halflife_s: f64,
    },
    Location {
        lat: f64,
        lon: f64,
        radius_km: f64,
        slot: u32,
    },
}

/// The generator names, as error messages list them.
const KNOWN: &str = "counter, timestamp, uniform, uniformInt, pickOne, sinusoid, decay, location";

/// Mean Earth radius (IUGG), km.
const EARTH_RADIUS_KM: f64 = 6371.0088;
/// Half the Earth's circumference, rounded down: a larger radius would wrap around.
const MAX_RADIUS_KM: f64 = 20_000.0;

impl PayloadTemplate {
    /// Compiles a template from the scenario's `payload` table; errors name fields as
    /// `payload.a.b`.
    ///
    /// Nested tables become nested objects and arrays arrays; strings, numbers, booleans and
    /// dates are literals, except strings that start like a call (`name(`), which must be a
    /// valid generator.
    pub fn compile(value: &toml::Value) -> Result<Self, PayloadError> {
        let table = match value {
            toml::Value::Table(t) => t,
            other => {
                return Err(PayloadError::Template {
                    path: "payload".into(),
                    message: format!(
                        "{} is not a table of fields (expected e.g. payload = {{ temperature = \"sinusoid(20, 5, 60s)\" }})",
                        describe(other)
                    ),
                })
            }
        };
        let mut b = Builder {
            pieces: Vec::new(),
            text: Vec::new(),
            slots: 0,
            // `{"_tsw":[` + u32 + 3 u64 + 3 commas + `]`, and the closing `}`.
            hint: JSON_PREFIX.len() + 10 + 3 * 20 + 3 + 1 + 1,
        };
        let mut path = String::from("payload");
        for (key, v) in table {
            if key == JSON_KEY {
                return Err(PayloadError::Template {
                    path: format!("payload.{key}"),
                    message: format!(
                        "the key `{JSON_KEY}` is reserved for the measurement header (expected any other key)"
                    ),
                });
            }
            b.text.push(b',');
            b.member(&mut path, key, v)?;
        }
        b.text.push(b'}');
        b.flush();
        Ok(PayloadTemplate {
            pieces: b.pieces,
            len_hint: b.hint,
        })
    }

    /// Replaces `out`'s contents with the next payload of the device whose state is `state`:
    /// `{"_tsw":[publisher,seq,intended_ns,sent_ns], ...fields}`.
    ///
    /// Allocation-free once `out` has grown to the template's usual length (the first call).
    pub fn render(&self, ctx: &RenderCtx, state: &mut DeviceState, out: &mut Vec<u8>) {
        out.clear();
        out.reserve(self.len_hint);
        ctx.header.write_json(out);
        for piece in &self.pieces {
            match piece {
                Piece::Text(text) => out.extend_from_slice(text),
                Piece::Gen(generator) => generator.write(ctx, state, out),
            }
        }
        state.rendered += 1;
    }
}

impl Gen {
    fn write(&self, ctx: &RenderCtx, state: &mut DeviceState, out: &mut Vec<u8>) {
        let t = ctx.elapsed.as_secs_f64();
        match *self {
            Gen::Counter { start } => {
                let n = i64::try_from(state.rendered).unwrap_or(i64::MAX);
                write_i64(out, start.saturating_add(n));
            }
            Gen::Timestamp => write_u64(out, ctx.unix_ms),
            Gen::Uniform { min, max } => {
                let v = min + (max - min) * state.rng.random::<f64>();
                write_f64(out, v, min, max);
            }
            Gen::UniformInt { min, max } => write_i64(out, state.rng.random_range(min..=max)),
            Gen::PickOne(ref choices) => {
                let i = state.rng.random_range(0..choices.len());
                out.extend_from_slice(&choices[i]);
            }
            Gen::Sinusoid {
                mean,
                amplitude,
                period_s,
                slot,
            } => {
                let phase = state.fixed_unit(slot, 0);
                let v = mean + amplitude * (TAU * (t / period_s + phase)).sin();
                write_f64(out, v, mean - amplitude, mean + amplitude);
            }
            Gen::Decay {
                start,
                end,
                halflife_s,
            } => {
                let v = end + (start - end) * (-t / halflife_s).exp2();
                write_f64(out, v, start.min(end), start.max(end));
            }
            Gen::Location {
                lat,
                lon,
                radius_km,
                slot,
            } => {
                let (lat2, lon2) = destination(
                    lat,
                    lon,
                    radius_km * state.fixed_unit(slot, 0).sqrt(),
                    TAU * state.fixed_unit(slot, 1),
                );
                out.extend_from_slice(b"{\"lat\":");
                write_f64(out, lat2, -90.0, 90.0);
                out.extend_from_slice(b",\"lon\":");
                write_f64(out, lon2, -180.0, 180.0);
                out.push(b'}');
            }
        }
    }
}

/// The point `distance_km` from (`lat`, `lon`) in direction `bearing` (radians from north), on a
/// sphere: exact near the poles and the antimeridian, where flat approximations break.
fn destination(lat: f64, lon: f64, distance_km: f64, bearing: f64) -> (f64, f64) {
    let delta = distance_km / EARTH_RADIUS_KM;
    let (phi1, lambda1) = (lat.to_radians(), lon.to_radians());
    let sin_phi2 =
        (phi1.sin() * delta.cos() + phi1.cos() * delta.sin() * bearing.cos()).clamp(-1.0, 1.0);
    let phi2 = sin_phi2.asin();
    let lambda2 = lambda1
        + (bearing.sin() * delta.sin() * phi1.cos()).atan2(delta.cos() - phi1.sin() * sin_phi2);
    let lon2 = (lambda2.to_degrees() + 180.0).rem_euclid(360.0) - 180.0;
    (
        phi2.to_degrees().clamp(-90.0, 90.0),
        lon2.clamp(-180.0, 180.0),
    )
}

/// Collects literal JSON text and generators while walking the TOML table.
struct Builder {
    pieces: Vec<Piece>,
    text: Vec<u8>,
    slots: u32,
    hint: usize,
}

impl Builder {
    /// `"key":value`.
    fn member(
        &mut self,
        path: &mut String,
        key: &str,
        v: &toml::Value,
    ) -> Result<(), PayloadError> {
        let at = path.len();
        path.push('.');
        path.push_str(key);
        self.literal(&serde_json::to_vec(key).expect("strings serialize"));
        self.text.push(b':');
        self.value(path, v)?;
        path.truncate(at);
        Ok(())
    }

    fn value(&mut self, path: &mut String, v: &toml::Value) -> Result<(), PayloadError> {
        match v {
            toml::Value::String(s) => match call_name(s) {
                Some(name) => {
                    let generator = compile_call(path, s, name, &mut self.slots)?;
                    self.hint += generator.len_hint();
                    self.flush();
                    self.pieces.push(Piece::Gen(generator));
                }
                None => self.literal(&serde_json::to_vec(s).expect("strings serialize")),
            },
            toml::Value::Integer(i) => self.literal(i.to_string().as_bytes()),
            toml::Value::Float(f) => {
                if !f.is_finite() {
                    return Err(PayloadError::Template {
                        path: path.clone(),
                        message: format!("{f} is not a JSON number (expected a finite number)"),
                    });
                }
                self.literal(&serde_json::to_vec(f).expect("finite floats serialize"));
            }
            toml::Value::Boolean(b) => self.literal(if *b { b"true" } else { b"false" }),
            toml::Value::Datetime(d) => {
                self.literal(&serde_json::to_vec(&d.to_string()).expect("strings serialize"));
            }
            toml::Value::Array(items) => {
                self.text.push(b'[');
                let at = path.len();
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        self.text.push(b',');
                    }
                    path.push_str(&format!("[{i}]"));
                    self.value(path, item)?;
                    path.truncate(at);
                }
                self.text.push(b']');
            }
            toml::Value::Table(table) => {
                self.text.push(b'{');
                for (i, (key, item)) in table.iter().enumerate() {
                    if i > 0 {
                        self.text.push(b',');
                    }
                    self.member(path, key, item)?;
                }
                self.text.push(b'}');
            }
        }
        Ok(())
    }

    fn literal(&mut self, json: &[u8]) {
        self.text.extend_from_slice(json);
    }

    /// Ends the current run of literal text.
    fn flush(&mut self) {
        if !self.text.is_empty() {
            self.hint += self.text.len();
            self.pieces.push(Piece::Text(
                std::mem::take(&mut self.text).into_boxed_slice(),
            ));
        }
    }
}

impl Gen {
    /// A usual upper bound of the rendered length.
    fn len_hint(&self) -> usize {
        match self {
            Gen::Counter { .. } | Gen::Timestamp | Gen::UniformInt { .. } => 20,
            Gen::Uniform { min, max } => float_hint(&[*min, *max]),
            Gen::Sinusoid {
                mean, amplitude, ..
            } => float_hint(&[mean - amplitude, mean + amplitude]),
            Gen::Decay { start, end, .. } => float_hint(&[*start, *end]),
            Gen::PickOne(choices) => choices.iter().map(|c| c.len()).max().unwrap_or(0),
            Gen::Location { .. } => 2 * 24 + 16,
        }
    }
}

/// Numbers between 1e-4 and 1e11 in magnitude render in at most 24 characters (see
/// [`write_f64`]); bounds outside that may need Rust's full decimal expansion.
fn float_hint(bounds: &[f64]) -> usize {
    let short = |b: &f64| *b == 0.0 || (1e-4..1e11).contains(&b.abs());
    if bounds.iter().all(short) {
        24
    } else {
        340
    }
}

/// The generator name when `s` starts like a call, `name(`: such strings are generators (a typo
/// in one is an error, not a literal sent by mistake).
fn call_name(s: &str) -> Option<&str> {
    let s = s.trim_start();
    let end = s
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(s.len());
    let name = &s[..end];
    let starts_ident = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    (starts_ident && s[end..].starts_with('(')).then_some(name)
}

/// One generator call being compiled: its arguments and how to complain about them.
struct Call<'a> {
    path: &'a str,
    text: &'a str,
    form: &'static str,
    args: Vec<&'a str>,
}

impl Call<'_> {
    fn err(&self, reason: impl std::fmt::Display) -> PayloadError {
        PayloadError::Template {
            path: self.path.to_string(),
            message: format!("{:?} {reason} (expected {})", self.text, self.form),
        }
    }

    fn arity(&self, n: usize) -> Result<(), PayloadError> {
        if self.args.len() == n {
            return Ok(());
        }
        Err(self.err(format!(
            "needs {n} argument{}",
            if n == 1 { "" } else { "s" }
        )))
    }

    /// A finite number; `1e3` and `-2.5` are fine, `inf` and `nan` are not.
    fn num(&self, i: usize, name: &str) -> Result<f64, PayloadError> {
        let text = self.args[i];
        let plain = text.bytes().any(|b| b.is_ascii_digit())
            && text
                .bytes()
                .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'+' | b'e' | b'E'));
        match text.parse::<f64>() {
            Ok(v) if plain && v.is_finite() => Ok(v),
            _ => Err(self.err(format!("has {name} `{text}`, which is not a number"))),
        }
    }

    fn int(&self, i: usize, name: &str) -> Result<i64, PayloadError> {
        let text = self.args[i];
        text.parse::<i64>()
            .map_err(|_| self.err(format!("has {name} `{text}`, which is not an integer")))
    }

    /// A positive duration in seconds, written with a unit: `60s`, `500ms`, `2m`.
    fn period(&self, i: usize, name: &str) -> Result<f64, PayloadError> {
        let text = self.args[i];
        let d = humantime::parse_duration(text).map_err(|_| {
            self.err(format!(
                "has {name} `{text}`, which is not a duration such as 60s, 500ms or 2m"
            ))
        })?;
        if d.is_zero() {
            return Err(self.err(format!("has {name} `{text}`, which is not > 0")));
        }
        Ok(d.as_secs_f64())
    }

    /// `min <= max`, and the span representable (so values never become infinite).
    fn ordered(&self, min: f64, max: f64) -> Result<(), PayloadError> {
        if min > max {
            return Err(self.err(format!("has min {min} > max {max}")));
        }
        if !(max - min).is_finite() {
            return Err(self.err("has a range too wide for a 64-bit float"));
        }
        Ok(())
    }

    /// A `pickOne` choice as JSON text: a quoted string (`"..."` or `'...'`, `\` escapes the
    /// next character) or a number.
    fn choice(&self, i: usize) -> Result<Box<[u8]>, PayloadError> {
        let text = self.args[i];
        if let Some(quote) = text.chars().next().filter(|c| matches!(c, '"' | '\'')) {
            let mut s = String::new();
            let mut chars = text[1..].chars();
            loop {
                match chars.next() {
                    Some('\\') => s.extend(chars.next()),
                    Some(c) if c == quote => break,
                    Some(c) => s.push(c),
                    None => return Err(self.err(format!("has an unclosed quote in `{text}`"))),
                }
            }
            if !chars.as_str().trim().is_empty() {
                return Err(self.err(format!(
                    "has `{text}`: text after the closing quote (put a comma between choices)"
                )));
            }
            return Ok(serde_json::to_vec(&s).expect("strings serialize").into());
        }
        if let Ok(n) = text.parse::<i64>() {
            return Ok(n.to_string().into_bytes().into());
        }
        let n = self.num(i, "choice").map_err(|_| {
            self.err(format!(
                "has choice `{text}`, which is neither a quoted string nor a number"
            ))
        })?;
        Ok(serde_json::to_vec(&n)
            .expect("finite floats serialize")
            .into())
    }
}

/// Compiles the generator call `text` (whose name is `name`) found at `path`.
fn compile_call(path: &str, text: &str, name: &str, slots: &mut u32) -> Result<Gen, PayloadError> {
    let form = match name {
        "counter" => "counter() or counter(start)",
        "timestamp" => "timestamp()",
        "uniform" => "uniform(min, max)",
        "uniformInt" => "uniformInt(min, max)",
        "pickOne" => "pickOne(\"a\", \"b\", ...)",
        "sinusoid" => "sinusoid(mean, amplitude, period)",
        "decay" => "decay(start, end, halflife)",
        "location" => "location(lat, lon, radius_km)",
        _ => {
            let hint = KNOWN
                .split(", ")
                .find(|k| k.eq_ignore_ascii_case(name))
                .map(|k| format!("; did you mean `{k}`?"))
                .unwrap_or_default();
            return Err(PayloadError::Template {
                path: path.to_string(),
                message: format!(
                    "{text:?} calls unknown generator `{name}`{hint} (expected one of {KNOWN})"
                ),
            });
        }
    };
    let mut call = Call {
        path,
        text,
        form,
        args: Vec::new(),
    };
    // `call_name` found `name(` at the start of the trimmed text.
    let Some(inner) = text.trim()[name.len() + 1..].strip_suffix(')') else {
        return Err(call.err("is missing its closing `)`"));
    };
    call.args = split_args(inner).map_err(|reason| call.err(reason))?;
    if let Some(i) = call.args.iter().position(|a| a.is_empty()) {
        return Err(call.err(format!("has an empty argument {}", i + 1)));
    }
    let mut slot = || {
        *slots += 1;
        *slots - 1
    };
    Ok(match name {
        "counter" => match call.args.len() {
            0 => Gen::Counter { start: 0 },
            1 => Gen::Counter {
                start: call.int(0, "start")?,
            },
            _ => return Err(call.err("needs 0 or 1 arguments")),
        },
        "timestamp" => {
            call.arity(0)?;
            Gen::Timestamp
        }
        "uniform" => {
            call.arity(2)?;
            let (min, max) = (call.num(0, "min")?, call.num(1, "max")?);
            call.ordered(min, max)?;
            Gen::Uniform { min, max }
        }
        "uniformInt" => {
            call.arity(2)?;
            let (min, max) = (call.int(0, "min")?, call.int(1, "max")?);
            if min > max {
                return Err(call.err(format!("has min {min} > max {max}")));
            }
            Gen::UniformInt { min, max }
        }
        "pickOne" => {
            if call.args.is_empty() {
                return Err(call.err("needs at least 1 argument"));
            }
            let choices = (0..call.args.len())
                .map(|i| call.choice(i))
                .collect::<Result<Vec<_>, _>>()?;
            Gen::PickOne(choices.into())
        }
        "sinusoid" => {
            call.arity(3)?;
            let (mean, amplitude) = (call.num(0, "mean")?, call.num(1, "amplitude")?);
            let period_s = call.period(2, "period")?;
            if amplitude < 0.0 {
                return Err(call.err(format!("has amplitude {amplitude}, which is not >= 0")));
            }
            call.ordered(mean - amplitude, mean + amplitude)?;
            Gen::Sinusoid {
                mean,
                amplitude,
                period_s,
                slot: slot(),
            }
        }
        "decay" => {
            call.arity(3)?;
            let (start, end) = (call.num(0, "start")?, call.num(1, "end")?);
            let halflife_s = call.period(2, "halflife")?;
            call.ordered(start.min(end), start.max(end))?;
            Gen::Decay {
                start,
                end,
                halflife_s,
            }
        }
        "location" => {
            call.arity(3)?;
            let (lat, lon) = (call.num(0, "lat")?, call.num(1, "lon")?);
            let radius_km = call.num(2, "radius_km")?;
            if !(-90.0..=90.0).contains(&lat) {
                return Err(call.err(format!("has lat {lat}, which is not in [-90, 90]")));
            }
            if !(-180.0..=180.0).contains(&lon) {
                return Err(call.err(format!("has lon {lon}, which is not in [-180, 180]")));
            }
            if !(0.0..=MAX_RADIUS_KM).contains(&radius_km) {
                return Err(call.err(format!(
                    "has radius_km {radius_km}, which is not in [0, {MAX_RADIUS_KM}]"
                )));
            }
            Gen::Location {
                lat,
                lon,
                radius_km,
                slot: slot(),
            }
        }
        _ => unreachable!("names are checked above"),
    })
}

/// Splits `a, "b, c", 'd'` at the commas outside quotes; arguments are trimmed.
fn split_args(inner: &str) -> Result<Vec<&str>, String> {
    if inner.trim().is_empty() {
        return Ok(Vec::new());
    }
    let mut args = Vec::new();
    let mut start = 0;
    let mut quote = None;
    let mut escaped = false;
    for (i, c) in inner.char_indices() {
        match quote {
            Some(_) if escaped => escaped = false,
            Some(_) if c == '\\' => escaped = true,
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None if matches!(c, '"' | '\'') => quote = Some(c),
            None if c == ',' => {
                args.push(inner[start..i].trim());
                start = i + 1;
            }
            None => {}
        }
    }
    if quote.is_some() {
        return Err("has an unclosed quote".into());
    }
    args.push(inner[start..].trim());
    Ok(args)
}

/// What a TOML value is, for "x is not a table" messages.
fn describe(v: &toml::Value) -> String {
    match v {
        toml::Value::String(s) => format!("the string {s:?}"),
        toml::Value::Integer(i) => format!("the integer {i}"),
        toml::Value::Float(f) => format!("the float {f}"),
        toml::Value::Boolean(b) => format!("the boolean {b}"),
        toml::Value::Datetime(d) => format!("the date {d}"),
        toml::Value::Array(_) => "an array".into(),
        toml::Value::Table(_) => "a table".into(),
    }
}

/// Appends `n` in decimal.
fn write_u64(out: &mut Vec<u8>, mut n: u64) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&buf[i..]);
}

/// Appends `n` in decimal.
fn write_i64(out: &mut Vec<u8>, n: i64) {
    if n < 0 {
        out.push(b'-');
    }
    write_u64(out, n.unsigned_abs());
}

/// Appends `v`, known to lie in `[lo, hi]`, as a JSON number: at most 4 decimals, trailing
/// zeros dropped (`20.5`, `3`), so payloads stay short and read like sensor data.
///
/// When rounding to 4 decimals would leave `[lo, hi]` (bounds finer than 0.0001), or `v` is too
/// large for 4 decimals to mean anything (>= 1e11), `v` is written exactly (shortest
/// round-trip form) instead, so a subscriber never sees a value outside the generator's range.
fn write_f64(out: &mut Vec<u8>, v: f64, lo: f64, hi: f64) {
    let v = if v.is_nan() { lo } else { v.clamp(lo, hi) };
    if v.abs() < 1e11 {
        let r = (v * 1e4).round() / 1e4;
        if (lo..=hi).contains(&r) {
            let start = out.len();
            let _ = write!(out, "{r:.4}");
            while out.last() == Some(&b'0') {
                out.pop();
            }
            if out.last() == Some(&b'.') {
                out.pop();
            }
            if out[start..] == *b"-0" {
                out.truncate(start);
                out.push(b'0');
            }
            return;
        }
    }
    let _ = write!(out, "{v}");
}

/// splitmix64's finalizer: spreads seeds and indices over all 64 bits.
fn mix(z: u64) -> u64 {
    let z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    let z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The top 53 bits of `x` as a number in [0, 1).
fn unit(x: u64) -> f64 {
    (x >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn compile(toml_text: &str) -> Result<PayloadTemplate, PayloadError> {
        let table: toml::Table = toml::from_str(toml_text).expect("test TOML parses");
        PayloadTemplate::compile(&toml::Value::Table(table))
    }

    fn template(toml_text: &str) -> PayloadTemplate {
        compile(toml_text).unwrap_or_else(|e| panic!("{toml_text}: {e}"))
    }

    fn error(toml_text: &str) -> String {
        match compile(toml_text) {
            Ok(_) => panic!("{toml_text}: compiled"),
            Err(e) => e.to_string(),
        }
    }

    fn ctx_at(seq: u64, elapsed: Duration) -> RenderCtx {
        RenderCtx {
            header: Header {
                publisher: 7,
                seq,
                intended_ns: 1_000 + seq,
                sent_ns: 2_000 + seq,
            },
            elapsed,
            unix_ms: 1_700_000_000_000 + seq,
        }
    }

    fn render(t: &PayloadTemplate, ctx: &RenderCtx, state: &mut DeviceState) -> String {
        let mut out = Vec::new();
        t.render(ctx, state, &mut out);
        String::from_utf8(out).expect("JSON payloads are UTF-8")
    }

    /// The text of field `v` in a one-field template's rendering.
    fn field_v(json: &str) -> &str {
        let at = json.find(",\"v\":").expect("field v") + 5;
        json[at..].strip_suffix('}').expect("object end")
    }

    /// Renders `v = "<generator>"` once and returns the value's text.
    fn one(generator: &str, seed: u64, device: u32, elapsed: Duration) -> String {
        let t = template(&format!("v = {generator:?}"));
        let mut state = DeviceState::new(seed, device);
        field_v(&render(&t, &ctx_at(0, elapsed), &mut state)).to_string()
    }

    fn haversine_km(lat1: f64, lon1: f64, lat2: f64, lon2: f64) -> f64 {
        let (p1, p2) = (lat1.to_radians(), lat2.to_radians());
        let dp = p2 - p1;
        let dl = (lon2 - lon1).to_radians();
        let a = (dp / 2.0).sin().powi(2) + p1.cos() * p2.cos() * (dl / 2.0).sin().powi(2);
        2.0 * EARTH_RADIUS_KM * a.sqrt().min(1.0).asin()
    }

    #[test]
    fn raw_payload_layout() {
        let spec = PayloadSpec::raw(40).unwrap();
        let header = Header {
            publisher: 0x0403_0201,
            seq: 5,
            intended_ns: 6,
            sent_ns: 7,
        };
        let ctx = RenderCtx {
            header,
            ..RenderCtx::default()
        };
        let mut out = Vec::new();
        spec.render(&ctx, &mut DeviceState::new(1, 2), &mut out);
        assert_eq!(out.len(), 40);
        assert_eq!(&out[..8], b"TSW1\x01\x02\x03\x04");
        assert_eq!(&out[8..16], &5u64.to_le_bytes());
        assert_eq!(&out[24..32], &7u64.to_le_bytes());
        assert_eq!(parse_header(&out), Some(header));
        // The filler is the device's: the same seed and device give the same bytes, others not.
        let mut again = Vec::new();
        spec.render(&ctx, &mut DeviceState::new(1, 2), &mut again);
        assert_eq!(out, again);
        spec.render(&ctx, &mut DeviceState::new(1, 3), &mut again);
        assert_ne!(out[32..], again[32..]);
        // Exactly the header.
        PayloadSpec::raw(32)
            .unwrap()
            .render(&ctx, &mut DeviceState::new(1, 2), &mut out);
        assert_eq!(out.len(), 32);
        assert_eq!(parse_header(&out), Some(header));
    }

    #[test]
    fn raw_size_limits() {
        for size in [0, 31, MAX_RAW_SIZE + 1] {
            let e = PayloadSpec::raw(size).unwrap_err().to_string();
            assert!(e.contains(&format!("size = {size} ")), "{e}");
            assert!(e.contains("need 32 to 268435455 bytes"), "{e}");
        }
        assert!(PayloadSpec::raw(MAX_RAW_SIZE).is_ok());
    }

    #[test]
    fn json_header_comes_first() {
        let mut state = DeviceState::new(0, 0);
        let ctx = ctx_at(3, Duration::ZERO);
        assert_eq!(
            render(&template(""), &ctx, &mut state),
            r#"{"_tsw":[7,3,1003,2003]}"#
        );
        assert_eq!(
            render(&template("a = 1"), &ctx, &mut state),
            r#"{"_tsw":[7,3,1003,2003],"a":1}"#
        );
        let max = RenderCtx {
            header: Header {
                publisher: u32::MAX,
                seq: u64::MAX,
                intended_ns: 0,
                sent_ns: u64::MAX,
            },
            ..ctx
        };
        let json = render(&template(""), &max, &mut state);
        assert_eq!(parse_header(json.as_bytes()), Some(max.header));
    }

    #[test]
    fn literals_are_json() {
        let t = template(
            r#"
            name = "a \"quoted\"\n\u0001 é"
            count = -3
            ratio = 0.25
            big = 1e300
            on = true
            when = 1979-05-27T07:32:00Z
            tags = ["x", 2, ["nested"], { k = "v" }]
            empty = {}
            room = "Room (A)"
            [sensors]
            unit = "C"
            [sensors.inner]
            deep = false
            "#,
        );
        let json = render(&t, &ctx_at(0, Duration::ZERO), &mut DeviceState::new(0, 0));
        assert_eq!(
            json,
            concat!(
                r#"{"_tsw":[7,0,1000,2000],"big":1e+300,"count":-3,"empty":{},"#,
                r#""name":"a \"quoted\"\n\u0001 é","on":true,"ratio":0.25,"room":"Room (A)","#,
                r#""sensors":{"inner":{"deep":false},"unit":"C"},"#,
                r#""tags":["x",2,["nested"],{"k":"v"}],"when":"1979-05-27T07:32:00Z"}"#
            )
        );
        serde_json::from_str::<serde_json::Value>(&json).unwrap();
    }

    #[test]
    fn counter_counts_messages() {
        let t = template(
            r#"a = "counter()"
b = "counter(10)"
c = "counter(-5)""#,
        );
        let mut state = DeviceState::new(0, 0);
        for n in 0..3 {
            let json = render(&t, &ctx_at(n, Duration::ZERO), &mut state);
            assert!(
                json.ends_with(&format!(r#""a":{n},"b":{},"c":{}}}"#, 10 + n, n as i64 - 5)),
                "{json}"
            );
        }
        assert_eq!(state.rendered(), 3);
    }

    #[test]
    fn timestamp_is_the_wall_clock() {
        let ctx = ctx_at(0, Duration::ZERO);
        let json = render(
            &template(r#"v = "timestamp()""#),
            &ctx,
            &mut DeviceState::new(0, 0),
        );
        assert_eq!(field_v(&json), "1700000000000");
    }

    #[test]
    fn uniform_stays_in_range_and_varies() {
        let t = template(r#"v = "uniform(-1.5, 2.5)""#);
        let mut state = DeviceState::new(9, 1);
        let mut seen = std::collections::BTreeSet::new();
        for n in 0..200 {
            let json = render(&t, &ctx_at(n, Duration::ZERO), &mut state);
            let v: f64 = field_v(&json).parse().unwrap();
            assert!((-1.5..=2.5).contains(&v), "{v}");
            assert!(field_v(&json)
                .split('.')
                .nth(1)
                .is_none_or(|d| d.len() <= 4));
            seen.insert(field_v(&json).to_string());
        }
        assert!(seen.len() > 150, "{} distinct", seen.len());
        assert_eq!(one("uniform(3, 3)", 0, 0, Duration::ZERO), "3");
        // Bounds finer than 4 decimals: the exact value is written rather than leave the range.
        let v: f64 = one("uniform(0.00001, 0.00002)", 0, 0, Duration::ZERO)
            .parse()
            .unwrap();
        assert!((0.00001..=0.00002).contains(&v), "{v}");
    }

    #[test]
    fn uniform_int_hits_both_bounds() {
        let t = template(r#"v = "uniformInt(1, 3)""#);
        let mut state = DeviceState::new(3, 4);
        let mut seen = std::collections::BTreeSet::new();
        for n in 0..100 {
            seen.insert(field_v(&render(&t, &ctx_at(n, Duration::ZERO), &mut state)).to_string());
        }
        assert_eq!(seen.into_iter().collect::<Vec<_>>(), ["1", "2", "3"]);
        assert_eq!(one("uniformInt(-7, -7)", 0, 0, Duration::ZERO), "-7");
        let full = format!("uniformInt({}, {})", i64::MIN, i64::MAX);
        one(&full, 0, 0, Duration::ZERO).parse::<i64>().unwrap();
    }

    #[test]
    fn pick_one_strings_and_numbers() {
        let t = template(r#"v = "pickOne(\"a, b\", 'c\\'d', 3, -2.5, \"q\\\"\")""#);
        let mut state = DeviceState::new(5, 5);
        let mut seen = std::collections::BTreeSet::new();
        for n in 0..200 {
            seen.insert(field_v(&render(&t, &ctx_at(n, Duration::ZERO), &mut state)).to_string());
        }
        let expected = [r#""a, b""#, r#""c'd""#, r#""q\"""#, "-2.5", "3"];
        assert_eq!(seen.into_iter().collect::<Vec<_>>(), expected);
    }

    #[test]
    fn sinusoid_has_period_amplitude_and_device_phase() {
        let value = |device: u32, secs: f64| -> f64 {
            one(
                "sinusoid(20, 5, 60s)",
                1,
                device,
                Duration::from_secs_f64(secs),
            )
            .parse()
            .unwrap()
        };
        for secs in [0.0, 7.0, 33.3] {
            let v = value(0, secs);
            assert!((15.0..=25.0).contains(&v), "{v}");
            assert!((value(0, secs + 60.0) - v).abs() < 2e-4, "periodic");
            assert!(
                ((value(0, secs + 30.0) - 20.0) + (v - 20.0)).abs() < 2e-4,
                "odd"
            );
        }
        // Devices are out of phase with each other.
        let at_zero: std::collections::BTreeSet<_> = (0..10)
            .map(|d| one("sinusoid(20, 5, 60s)", 1, d, Duration::ZERO))
            .collect();
        assert!(at_zero.len() > 5, "{at_zero:?}");
        assert_eq!(
            one("sinusoid(20, 0, 1s)", 1, 0, Duration::from_secs(3)),
            "20"
        );
    }

    #[test]
    fn decay_halves_toward_end() {
        let at = |secs: u64| one("decay(100, 0, 30s)", 0, 0, Duration::from_secs(secs));
        assert_eq!(at(0), "100");
        assert_eq!(at(30), "50");
        assert_eq!(at(60), "25");
        assert_eq!(at(3000), "0");
        assert_eq!(
            one("decay(10, 20, 1m)", 0, 0, Duration::from_secs(60)),
            "15"
        );
        assert_eq!(one("decay(10, 20, 500ms)", 0, 0, Duration::ZERO), "10");
    }

    #[test]
    fn location_is_fixed_per_device_and_within_radius() {
        let t = template(r#"v = "location(52.52, 13.405, 10)""#);
        let point = |device: u32, seq: u64| -> (f64, f64) {
            let mut state = DeviceState::new(2, device);
            let mut json = String::new();
            for n in 0..=seq {
                json = render(&t, &ctx_at(n, Duration::from_secs(n)), &mut state);
            }
            let v: serde_json::Value = serde_json::from_str(field_v(&json)).unwrap();
            (v["lat"].as_f64().unwrap(), v["lon"].as_f64().unwrap())
        };
        let mut points = Vec::new();
        for device in 0..20 {
            let p = point(device, 0);
            assert_eq!(p, point(device, 5), "fixed per device");
            assert!(haversine_km(52.52, 13.405, p.0, p.1) <= 10.01, "{p:?}");
            points.push(p);
        }
        points.dedup();
        assert_eq!(points.len(), 20, "devices differ");
        assert_eq!(
            one("location(-33.8688, 151.2093, 0)", 0, 0, Duration::ZERO),
            r#"{"lat":-33.8688,"lon":151.2093}"#
        );
        // Across the antimeridian and at the pole, the point stays valid.
        for gen in [
            "location(0, 180, 500)",
            "location(90, 0, 500)",
            "location(-90, -180, 20000)",
        ] {
            let v: serde_json::Value =
                serde_json::from_str(&one(gen, 4, 4, Duration::ZERO)).unwrap();
            let (lat, lon) = (v["lat"].as_f64().unwrap(), v["lon"].as_f64().unwrap());
            assert!(
                (-90.0..=90.0).contains(&lat) && (-180.0..=180.0).contains(&lon),
                "{gen}: {v}"
            );
        }
    }

    #[test]
    fn generators_nest_in_tables_and_arrays() {
        let t = template(
            r#"
            id = "device"
            readings = ["uniformInt(1, 1)", "counter(5)"]
            [sensors]
            temp = "decay(1, 1, 1s)"
            "#,
        );
        let json = render(&t, &ctx_at(0, Duration::ZERO), &mut DeviceState::new(0, 0));
        assert_eq!(
            json,
            r#"{"_tsw":[7,0,1000,2000],"id":"device","readings":[1,5],"sensors":{"temp":1}}"#
        );
    }

    #[test]
    fn errors_name_path_text_and_form() {
        let cases = [
            (
                r#"temp = "sinusoid(20, 5)""#,
                r#"payload.temp: "sinusoid(20, 5)" needs 3 arguments (expected sinusoid(mean, amplitude, period))"#,
            ),
            (
                r#"sensors = { temp = "uniform(5, 1)" }"#,
                r#"payload.sensors.temp: "uniform(5, 1)" has min 5 > max 1 (expected uniform(min, max))"#,
            ),
            (
                r#"tags = ["x", "uniformInt(1)"]"#,
                r#"payload.tags[1]: "uniformInt(1)" needs 2 arguments (expected uniformInt(min, max))"#,
            ),
            (
                r#"v = "random(1, 2)""#,
                "payload.v: \"random(1, 2)\" calls unknown generator `random` (expected one of counter, timestamp, uniform, uniformInt, pickOne, sinusoid, decay, location)",
            ),
        ];
        for (text, expected) in cases {
            assert_eq!(error(text), expected);
        }
        for (generator, needle) in [
            ("uniformint(1, 2)", "did you mean `uniformInt`?"),
            (
                "counter(1, 2)",
                "needs 0 or 1 arguments (expected counter() or counter(start))",
            ),
            ("counter(1.5)", "has start `1.5`, which is not an integer"),
            ("timestamp(1)", "needs 0 arguments (expected timestamp())"),
            ("uniform(a, 1)", "has min `a`, which is not a number"),
            ("uniform(0, inf)", "has max `inf`, which is not a number"),
            ("uniform(0, nan)", "has max `nan`, which is not a number"),
            (
                "uniform(0, 1e400)",
                "has max `1e400`, which is not a number",
            ),
            ("uniform(-1e308, 1e308)", "range too wide"),
            ("uniform(1,, 2)", "has an empty argument 2"),
            ("uniform(1, 2", "is missing its closing `)`"),
            (
                "uniformInt(1.5, 2)",
                "has min `1.5`, which is not an integer",
            ),
            ("uniformInt(3, 2)", "has min 3 > max 2"),
            (
                "pickOne()",
                "needs at least 1 argument (expected pickOne(\"a\", \"b\", ...))",
            ),
            (
                "pickOne(red, 2)",
                "has choice `red`, which is neither a quoted string nor a number",
            ),
            ("pickOne('a' 'b')", "text after the closing quote"),
            ("pickOne('a)", "has an unclosed quote"),
            (
                "sinusoid(20, 5, 60)",
                "has period `60`, which is not a duration such as 60s",
            ),
            ("sinusoid(20, 5, 0s)", "has period `0s`, which is not > 0"),
            (
                "sinusoid(20, -5, 60s)",
                "has amplitude -5, which is not >= 0",
            ),
            (
                "decay(100, 0)",
                "needs 3 arguments (expected decay(start, end, halflife))",
            ),
            ("decay(100, 0, 0ms)", "has halflife `0ms`, which is not > 0"),
            (
                "location(91, 0, 1)",
                "has lat 91, which is not in [-90, 90]",
            ),
            (
                "location(0, -180.5, 1)",
                "has lon -180.5, which is not in [-180, 180]",
            ),
            (
                "location(0, 0, -1)",
                "has radius_km -1, which is not in [0, 20000]",
            ),
            (
                "location(0, 0)",
                "needs 3 arguments (expected location(lat, lon, radius_km))",
            ),
        ] {
            let e = error(&format!("[a]\nb = {generator:?}"));
            assert!(e.starts_with("payload.a.b: "), "{e}");
            assert!(e.contains(&format!("{generator:?}")), "{e}");
            assert!(e.contains(needle), "{generator}: {e}");
            assert_eq!(e.lines().count(), 1, "{e}");
        }
        assert_eq!(
            error("_tsw = 1"),
            "payload._tsw: the key `_tsw` is reserved for the measurement header (expected any other key)"
        );
        assert_eq!(
            error("v = nan"),
            "payload.v: NaN is not a JSON number (expected a finite number)"
        );
        let e = PayloadTemplate::compile(&toml::Value::String("x".into()))
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("payload: the string \"x\" is not a table of fields"),
            "{e}"
        );
        // `_tsw` is only reserved at the top.
        template("[a]\n_tsw = 1");
    }

    #[test]
    fn parse_header_rejects_foreign_payloads() {
        let good = br#"{"_tsw":[1,2,3,4],"a":1}"#;
        assert!(parse_header(good).is_some());
        for bad in [
            &b""[..],
            b"TSW1",
            b"TSW2\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0",
            b"{\"_tsw\":[1,2,3]}",
            b"{\"_tsw\":[1,2,3,4,5]}",
            b"{\"_tsw\":[1, 2,3,4]}",
            b"{\"_tsw\":[-1,2,3,4]}",
            b"{\"_tsw\":[01,2,3,4]}",
            b"{\"_tsw\":[4294967296,2,3,4]}",
            b"{\"_tsw\":[1,18446744073709551616,3,4]}",
            b"{\"_tsw\":[1,2,3,4]",
            b"{\"_tsw\":[1,2,3,4]x",
            b"{\"temp\":1}",
            b"hello",
        ] {
            assert_eq!(parse_header(bad), None, "{}", String::from_utf8_lossy(bad));
        }
        assert_eq!(
            parse_header(b"{\"_tsw\":[4294967295,18446744073709551615,0,1]}"),
            Some(Header {
                publisher: u32::MAX,
                seq: u64::MAX,
                intended_ns: 0,
                sent_ns: 1
            })
        );
    }

    #[test]
    fn rendering_does_not_reallocate_after_warm_up() {
        let t = template(
            r#"
            id = "counter()"
            at = "timestamp()"
            t = "sinusoid(20, 5, 60s)"
            d = "decay(100, 0, 30s)"
            u = "uniform(-1000, 1000)"
            i = "uniformInt(-9223372036854775808, 9223372036854775807)"
            c = 'pickOne("short", "a much longer choice than the others")'
            where = "location(0, 0, 100)"
            "#,
        );
        let specs = [PayloadSpec::Json(t), PayloadSpec::raw(1000).unwrap()];
        for spec in &specs {
            let mut state = DeviceState::new(11, 3);
            let mut out = Vec::new();
            // Start small: the first message has the shortest numbers.
            spec.render(&ctx_at(0, Duration::ZERO), &mut state, &mut out);
            let (capacity, ptr) = (out.capacity(), out.as_ptr());
            for n in 1..5_000u64 {
                let ctx = RenderCtx {
                    header: Header {
                        publisher: u32::MAX,
                        seq: u64::MAX - n,
                        intended_ns: u64::MAX - n,
                        sent_ns: u64::MAX - n,
                    },
                    elapsed: Duration::from_millis(n * 37),
                    unix_ms: u64::MAX - n,
                };
                spec.render(&ctx, &mut state, &mut out);
                assert_eq!(out.capacity(), capacity, "message {n}");
                assert_eq!(out.as_ptr(), ptr, "message {n}");
            }
        }
    }

    /// Valid generator calls with their value range: (text, lo, hi).
    fn ranged_generator() -> impl Strategy<Value = (String, f64, f64)> {
        let span = prop_oneof![0.0..1e-6f64, 0.0..10.0f64, 0.0..1e9f64];
        let uniform = (-1e9..1e9f64, span.clone())
            .prop_map(|(min, span)| (format!("uniform({min}, {})", min + span), min, min + span));
        let uniform_int = (any::<i64>(), any::<i64>()).prop_map(|(a, b)| {
            let (min, max) = (a.min(b), a.max(b));
            (format!("uniformInt({min}, {max})"), min as f64, max as f64)
        });
        let sinusoid = (-1e6..1e6f64, span.clone(), 1..100_000u64).prop_map(|(mean, amp, ms)| {
            (
                format!("sinusoid({mean}, {amp}, {ms}ms)"),
                mean - amp,
                mean + amp,
            )
        });
        let decay = (-1e6..1e6f64, -1e6..1e6f64, 1..100_000u64).prop_map(|(start, end, ms)| {
            (
                format!("decay({start}, {end}, {ms}ms)"),
                start.min(end),
                start.max(end),
            )
        });
        let counter = (-1_000_000..1_000_000i64).prop_map(|start| {
            (
                format!("counter({start})"),
                start as f64,
                start as f64 + 10.0,
            )
        });
        prop_oneof![uniform, uniform_int, sinusoid, decay, counter]
    }

    /// Arbitrary templates: literals, generators, nested tables and arrays.
    fn toml_value() -> impl Strategy<Value = toml::Value> {
        let literal_string = any::<String>()
            .prop_filter("not a call", |s| call_name(s).is_none())
            .prop_map(toml::Value::String);
        let generator = prop::sample::select(vec![
            "counter()",
            "timestamp()",
            "uniform(0, 1)",
            "uniformInt(-5, 5)",
            "pickOne(\"a\", 'b', 3)",
            "sinusoid(20, 5, 60s)",
            "decay(100, 0, 30s)",
            "location(48.85, 2.35, 5)",
        ])
        .prop_map(|g| toml::Value::String(g.into()));
        let leaf = prop_oneof![
            any::<i64>().prop_map(toml::Value::Integer),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(toml::Value::Float),
            any::<bool>().prop_map(toml::Value::Boolean),
            literal_string,
            generator,
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(toml::Value::Array),
                prop::collection::btree_map(any::<String>(), inner, 0..4)
                    .prop_map(|m| toml::Value::Table(m.into_iter().collect())),
            ]
        })
    }

    /// That `json` holds what the template `t` says: same keys and array lengths, literals
    /// equal, generated values present.
    fn matches(t: &toml::Value, json: &serde_json::Value) -> bool {
        match (t, json) {
            (toml::Value::Table(t), serde_json::Value::Object(j)) => {
                t.len() == j.len()
                    && t.iter()
                        .all(|(k, v)| j.get(k).is_some_and(|jv| matches(v, jv)))
            }
            (toml::Value::Array(t), serde_json::Value::Array(j)) => {
                t.len() == j.len() && t.iter().zip(j).all(|(a, b)| matches(a, b))
            }
            (toml::Value::String(s), j) if call_name(s).is_some() => !j.is_null(),
            (toml::Value::String(s), serde_json::Value::String(j)) => s == j,
            (toml::Value::Integer(i), j) => j.as_i64() == Some(*i),
            (toml::Value::Float(f), j) => {
                // serde_json's default float parsing may be an ulp off (subnormals included).
                j.as_f64()
                    .is_some_and(|j| (j - f).abs() <= f.abs() * 1e-15 + f64::MIN_POSITIVE)
            }
            (toml::Value::Boolean(b), j) => j.as_bool() == Some(*b),
            _ => false,
        }
    }

    proptest! {
        #[test]
        fn generators_stay_in_range(
            (generator, lo, hi) in ranged_generator(),
            seed in any::<u64>(),
            device in any::<u32>(),
            elapsed_ms in 0..1_000_000_000u64,
        ) {
            let t = template(&format!("v = {generator:?}"));
            let mut state = DeviceState::new(seed, device);
            for n in 0..10 {
                let ctx = ctx_at(n, Duration::from_millis(elapsed_ms + n * 997));
                let json = render(&t, &ctx, &mut state);
                // Rust's parser, not serde_json's (which may be an ulp off by default).
                let v: f64 = field_v(&json).parse().unwrap();
                prop_assert!(lo <= v && v <= hi, "{generator}: {v} not in [{lo}, {hi}]");
            }
        }

        #[test]
        fn locations_stay_within_radius(
            lat in -90.0..=90.0f64,
            lon in -180.0..=180.0f64,
            radius in prop_oneof![0.0..=1.0f64, 0.0..=MAX_RADIUS_KM],
            seed in any::<u64>(),
            device in any::<u32>(),
        ) {
            let text = one(&format!("location({lat}, {lon}, {radius})"), seed, device, Duration::ZERO);
            let v: serde_json::Value = serde_json::from_str(&text).unwrap();
            let (lat2, lon2) = (v["lat"].as_f64().unwrap(), v["lon"].as_f64().unwrap());
            prop_assert!((-90.0..=90.0).contains(&lat2) && (-180.0..=180.0).contains(&lon2), "{text}");
            // 4 decimals of a degree are at most ~8 m off.
            let d = haversine_km(lat, lon, lat2, lon2);
            prop_assert!(d <= radius + 0.01, "{text} is {d} km from ({lat}, {lon}), radius {radius}");
        }

        #[test]
        fn same_seed_same_bytes(
            seed in any::<u64>(),
            device in any::<u32>(),
            steps in prop::collection::vec((0..10_000_000u64, any::<u64>()), 1..20),
            size in 32..300usize,
        ) {
            let t = template(
                r#"
                a = "counter(3)"
                b = "timestamp()"
                c = "uniform(-1, 1)"
                d = "uniformInt(0, 1000)"
                e = 'pickOne("x", "y", 1.5)'
                f = "sinusoid(0, 1, 10s)"
                g = "decay(5, 1, 2s)"
                h = "location(10, 10, 50)"
                "#,
            );
            let specs = [PayloadSpec::Json(t), PayloadSpec::raw(size).unwrap()];
            for spec in &specs {
                let (mut s1, mut s2) = (DeviceState::new(seed, device), DeviceState::new(seed, device));
                let (mut o1, mut o2) = (Vec::new(), Vec::new());
                for (n, (ms, unix_ms)) in steps.iter().enumerate() {
                    let mut ctx = ctx_at(n as u64, Duration::from_millis(*ms));
                    ctx.unix_ms = *unix_ms;
                    spec.render(&ctx, &mut s1, &mut o1);
                    spec.render(&ctx, &mut s2, &mut o2);
                    prop_assert_eq!(&o1, &o2);
                }
            }
        }

        #[test]
        fn headers_round_trip(
            publisher in any::<u32>(),
            seq in any::<u64>(),
            intended_ns in any::<u64>(),
            sent_ns in any::<u64>(),
            size in 32..2000usize,
            seed in any::<u64>(),
        ) {
            let header = Header { publisher, seq, intended_ns, sent_ns };
            let ctx = RenderCtx { header, elapsed: Duration::from_nanos(sent_ns), unix_ms: sent_ns / 1_000_000 };
            let specs = [
                PayloadSpec::raw(size).unwrap(),
                PayloadSpec::Json(template("")),
                PayloadSpec::Json(template(r#"v = "uniform(0, 1)"
[w]
x = 1"#)),
            ];
            for spec in &specs {
                let mut out = Vec::new();
                spec.render(&ctx, &mut DeviceState::new(seed, publisher), &mut out);
                prop_assert_eq!(parse_header(&out), Some(header));
            }
        }

        #[test]
        fn parse_header_never_panics(
            prefix in prop::sample::select(vec![&b""[..], &MAGIC[..], JSON_PREFIX]),
            bytes in prop::collection::vec(any::<u8>(), 0..64),
            digits in prop::collection::vec(prop::sample::select(b"0123456789,]}".to_vec()), 0..80),
        ) {
            let mut payload = prefix.to_vec();
            payload.extend_from_slice(&bytes);
            let _ = parse_header(&payload);
            let _ = parse_header(&bytes);
            let mut json = JSON_PREFIX.to_vec();
            json.extend_from_slice(&digits);
            if let Some(h) = parse_header(&json) {
                // Whatever parses is what was written.
                let mut again = Vec::new();
                h.write_json(&mut again);
                prop_assert!(json.starts_with(&again));
            }
        }

        #[test]
        fn compile_never_panics(
            name in prop::sample::select(KNOWN.split(", ").chain(["nope"]).collect::<Vec<_>>()),
            args in "[-0-9a-z.,\"'\\() ]{0,24}",
            close in any::<bool>(),
        ) {
            let text = format!("{name}({args}{}", if close { ")" } else { "" });
            let table = toml::Value::Table([("v".to_string(), toml::Value::String(text))].into_iter().collect());
            if let Ok(t) = PayloadTemplate::compile(&table) {
                let mut out = Vec::new();
                t.render(&ctx_at(0, Duration::from_secs(1)), &mut DeviceState::new(0, 0), &mut out);
                serde_json::from_slice::<serde_json::Value>(&out).unwrap();
            }
        }

        #[test]
        fn rendered_json_parses_and_has_the_template_keys(
            fields in prop::collection::btree_map(
                any::<String>().prop_filter("reserved", |k| k != JSON_KEY),
                toml_value(),
                0..6,
            ),
            seed in any::<u64>(),
            device in any::<u32>(),
            ms in any::<u32>(),
        ) {
            let table = toml::Value::Table(fields.into_iter().collect());
            let t = PayloadTemplate::compile(&table).unwrap();
            let mut out = Vec::new();
            t.render(&ctx_at(1, Duration::from_millis(ms.into())), &mut DeviceState::new(seed, device), &mut out);
            prop_assert!(out.starts_with(JSON_PREFIX));
            let mut json: serde_json::Value = serde_json::from_slice(&out).unwrap();
            let header = json.as_object_mut().unwrap().remove(JSON_KEY).unwrap();
            prop_assert_eq!(header, serde_json::json!([7, 1, 1001, 2001]));
            prop_assert!(matches(&table, &json), "{}", String::from_utf8_lossy(&out));
        }
    }
}
