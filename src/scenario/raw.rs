//! The scenario file exactly as written: a strict serde model of the TOML.
//!
//! Every struct denies unknown keys, so a typo (`devics`) is an error at its line rather than a
//! silently ignored setting. Values that need checking beyond their TOML type (rates,
//! durations, URLs, ranges) are kept as [`Spanned`] so validation in the parent module can
//! point at them. Keys for capabilities that are not built yet are accepted here only so that
//! validation can refuse them by name.

use std::path::PathBuf;

use serde::de::IgnoredAny;
use serde::Deserialize;
use toml::Spanned;

/// The whole file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawScenario {
    pub name: Spanned<String>,
    pub duration: Spanned<String>,
    pub target: Option<Spanned<RawTarget>>,
    pub identity: Option<RawIdentity>,
    pub group: Option<Spanned<Vec<Spanned<RawGroup>>>>,
    /// Seed of payload generators and Poisson arrivals (reproducible runs).
    pub seed: Option<u64>,
    /// Policy expectations (`[[expect]]`).
    pub expect: Option<Spanned<Vec<Spanned<super::expect::RawExpect>>>>,
    /// AWS IoT policies as the source of expectations (`[policy]`).
    pub policy: Option<Spanned<super::expect::RawPolicy>>,
    /// Service-level objectives: metric = threshold (see [`crate::slo`]).
    pub slo: Option<std::collections::BTreeMap<Spanned<String>, Spanned<toml::Value>>>,
    /// Fault timeline (`[[fault]]`): checked in `faults.rs`.
    pub fault: Option<Spanned<Vec<Spanned<super::faults::RawFault>>>>,
    /// Lifecycle timeline (`[[event]]`, e.g. drop-all): checked in `lifecycle.rs`.
    pub event: Option<Spanned<Vec<Spanned<super::lifecycle::RawEvent>>>>,
}

/// `[target]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTarget {
    pub url: Option<Spanned<String>>,
    pub server_ca: Option<Spanned<PathBuf>>,
    pub protocol: Option<Spanned<String>>,
    /// TLS server name (SNI and certificate check) when it differs from the connect host.
    pub sni: Option<Spanned<String>>,
    /// TLS versions, cipher suites, ALPN.
    pub tls: Option<Spanned<RawTls>>,
    /// `"mqtts"` | `"wss"` | `"ws"` | `"tcp"`: checked in `protocol.rs`.
    pub transport: Option<Spanned<String>>,
    /// WebSocket URL path: checked in `protocol.rs`.
    pub path: Option<Spanned<String>>,
    /// Local addresses to connect from (checked in `source.rs`).
    pub source_addresses: Option<Vec<Spanned<String>>>,
}

/// `[target].tls = { ... }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTls {
    pub versions: Option<Vec<Spanned<String>>>,
    pub suites: Option<Vec<Spanned<String>>>,
    pub alpn: Option<Vec<Spanned<String>>>,
    /// `"rustls"`, `"openssl"` or `"auto"` (the default).
    pub backend: Option<Spanned<String>>,
}

/// `[identity]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawIdentity {
    /// `"generate"`, `"generate-intermediate"` or `{ cert = "...", key = "..." }`: checked by
    /// hand so that every wrong shape gets the same message listing the three forms.
    pub ca: Option<Spanned<toml::Value>>,
    pub algorithm: Option<Spanned<String>>,
    pub validity_days: Option<Spanned<u32>>,
    /// Certificate subject template: not built yet (the CN is the client ID).
    pub subject: Option<Spanned<IgnoredAny>>,
}

/// One `[[group]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawGroup {
    pub name: Spanned<String>,
    pub devices: Spanned<u64>,
    pub client_id: Spanned<String>,
    pub connect: Option<RawConnect>,
    pub keepalive: Option<Spanned<String>>,
    pub clean_session: Option<bool>,
    pub protocol: Option<Spanned<String>>,
    pub publish: Option<Spanned<RawPublish>>,
    pub subscribe: Option<Spanned<Vec<Spanned<RawSubscribe>>>>,
    /// `"none"` or `{ initial, max }`: checked by hand in `reconnect.rs`.
    pub reconnect: Option<Spanned<toml::Value>>,
    /// Session churn: checked in `lifecycle.rs`.
    pub churn: Option<Spanned<super::lifecycle::RawChurn>>,
    /// Last will: checked in `lifecycle.rs`.
    pub will: Option<Spanned<super::lifecycle::RawWill>>,
    /// AWS IoT Device Shadow flows: checked in `shadow.rs`.
    pub shadow: Option<Spanned<super::shadow::RawShadow>>,
    /// AWS IoT fleet provisioning by claim: checked in `provision.rs`.
    pub provision: Option<Spanned<super::provision::RawProvision>>,
    /// `{ at, for }`: checked in `protocol.rs`.
    pub offline: Option<Spanned<super::protocol::RawOffline>>,
    /// MQTT 5 options: checked in `protocol.rs`.
    pub v5: Option<Spanned<super::protocol::RawV5>>,
}

/// A group's `publish = { ... }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPublish {
    pub topic: Spanned<String>,
    pub qos: Option<Spanned<u8>>,
    pub retain: Option<bool>,
    pub rate: Option<Spanned<String>>,
    pub arrivals: Option<Spanned<String>>,
    pub size: Option<Spanned<u64>>,
    pub payload: Option<Spanned<toml::Value>>,
}

/// One entry of a group's `subscribe = [ ... ]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSubscribe {
    pub filter: Spanned<String>,
    pub qos: Option<Spanned<u8>>,
}

/// A group's `connect = { ... }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConnect {
    pub rate: Option<Spanned<String>>,
    pub max_in_flight: Option<Spanned<u64>>,
    pub timeout: Option<Spanned<String>>,
}
