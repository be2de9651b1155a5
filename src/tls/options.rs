//! TLS choices a scenario (or the command line) makes: protocol versions, cipher suites by the
//! names the seed document uses (OpenSSL's), and ALPN protocols.
//!
//! The seed lists 18 suites AWS IoT accepts. rustls implements four of them (the ECDHE AES-GCM
//! ones) plus the TLS 1.3 suites and ChaCha20; the other fourteen (CBC and static-RSA key
//! exchange) it refuses by design, so those are served by the OpenSSL-backed transport
//! ([`crate::tls::openssl`]). The backend is chosen per group: `tls.backend` when the scenario
//! names one, else rustls when it can do what is asked, else OpenSSL.

use rustls::crypto::aws_lc_rs::cipher_suite as cs;
use rustls::{ProtocolVersion, SupportedCipherSuite};

/// A TLS protocol version the client may offer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum TlsVersion {
    /// TLS 1.2 (the seed's minimum).
    V1_2,
    /// TLS 1.3.
    V1_3,
}

impl TlsVersion {
    /// Parses `1.2` / `1.3` (also `TLSv1.2`, `tls1.3`).
    pub fn parse(s: &str) -> Result<TlsVersion, String> {
        let bare = s.trim().to_ascii_lowercase();
        match bare.trim_start_matches("tlsv").trim_start_matches("tls") {
            "1.2" => Ok(TlsVersion::V1_2),
            "1.3" => Ok(TlsVersion::V1_3),
            _ => Err(format!(
                "{s:?} is not a TLS version thingswarm offers (expected \"1.2\" or \"1.3\")"
            )),
        }
    }

    /// rustls's protocol version number.
    pub fn protocol(self) -> ProtocolVersion {
        match self {
            TlsVersion::V1_2 => ProtocolVersion::TLSv1_2,
            TlsVersion::V1_3 => ProtocolVersion::TLSv1_3,
        }
    }
}

impl std::fmt::Display for TlsVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TlsVersion::V1_2 => "1.2",
            TlsVersion::V1_3 => "1.3",
        })
    }
}

/// The seed's suites that rustls does not implement (CBC modes, static RSA key exchange).
pub const NEEDS_OPENSSL: [&str; 14] = [
    "ECDHE-ECDSA-AES128-SHA256",
    "ECDHE-RSA-AES128-SHA256",
    "ECDHE-ECDSA-AES128-SHA",
    "ECDHE-RSA-AES128-SHA",
    "ECDHE-ECDSA-AES256-SHA384",
    "ECDHE-RSA-AES256-SHA384",
    "ECDHE-RSA-AES256-SHA",
    "ECDHE-ECDSA-AES256-SHA",
    "AES128-GCM-SHA256",
    "AES128-SHA256",
    "AES128-SHA",
    "AES256-GCM-SHA384",
    "AES256-SHA256",
    "AES256-SHA",
];

/// Every suite the rustls transport serves, by OpenSSL name (TLS 1.2) or IANA name (TLS 1.3,
/// which OpenSSL also uses).
fn rustls_suites() -> [(&'static str, SupportedCipherSuite); 9] {
    [
        (
            "ECDHE-ECDSA-AES128-GCM-SHA256",
            cs::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
        ),
        (
            "ECDHE-RSA-AES128-GCM-SHA256",
            cs::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
        ),
        (
            "ECDHE-ECDSA-AES256-GCM-SHA384",
            cs::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
        ),
        (
            "ECDHE-RSA-AES256-GCM-SHA384",
            cs::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
        ),
        (
            "ECDHE-ECDSA-CHACHA20-POLY1305",
            cs::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
        ),
        (
            "ECDHE-RSA-CHACHA20-POLY1305",
            cs::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
        ),
        ("TLS_AES_128_GCM_SHA256", cs::TLS13_AES_128_GCM_SHA256),
        ("TLS_AES_256_GCM_SHA384", cs::TLS13_AES_256_GCM_SHA384),
        (
            "TLS_CHACHA20_POLY1305_SHA256",
            cs::TLS13_CHACHA20_POLY1305_SHA256,
        ),
    ]
}

/// Looks up a suite rustls serves by name (case-insensitive); the seed's CBC / static-RSA
/// names are refused here with the backend that serves them.
pub fn suite(name: &str) -> Result<SupportedCipherSuite, String> {
    let known = Suite::parse(name)?;
    known.rustls.ok_or_else(|| {
        format!(
            "cipher suite {name:?} is one of the seed's CBC / static-RSA suites, which rustls refuses by design; it needs the OpenSSL backend (tls.backend = \"openssl\", or leave tls.backend unset to choose it automatically)"
        )
    })
}

/// A suite name thingswarm knows: its canonical (OpenSSL) spelling, its protocol version and,
/// when rustls implements it, the rustls suite.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Suite {
    /// OpenSSL's name (TLS 1.2) or the IANA name (TLS 1.3), upper case.
    pub name: &'static str,
    /// The one protocol version it belongs to.
    pub version: TlsVersion,
    /// rustls's implementation; `None` for the suites only OpenSSL serves.
    pub rustls: Option<SupportedCipherSuite>,
}

impl Suite {
    /// Looks a suite up by name (case-insensitive).
    pub fn parse(name: &str) -> Result<Suite, String> {
        let upper = name.trim().to_ascii_uppercase();
        if let Some((n, s)) = rustls_suites().into_iter().find(|(n, _)| *n == upper) {
            let version = match s.version().version {
                ProtocolVersion::TLSv1_3 => TlsVersion::V1_3,
                _ => TlsVersion::V1_2,
            };
            return Ok(Suite {
                name: n,
                version,
                rustls: Some(s),
            });
        }
        if let Some(n) = NEEDS_OPENSSL.iter().find(|n| **n == upper) {
            return Ok(Suite {
                name: n,
                version: TlsVersion::V1_2,
                rustls: None,
            });
        }
        Err(format!(
            "{name:?} is not a cipher suite name thingswarm knows (expected an OpenSSL name such as ECDHE-ECDSA-AES128-GCM-SHA256, or a TLS 1.3 name such as TLS_AES_128_GCM_SHA256)"
        ))
    }
}

/// Which TLS library runs a group's handshakes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// rustls when it can do what is asked (suites, key type), else OpenSSL.
    #[default]
    Auto,
    /// rustls (inside rumqttc, or in the stream layer when an SNI name is set).
    Rustls,
    /// OpenSSL through tokio-openssl in rumqttc's stream layer.
    Openssl,
}

impl Backend {
    /// Parses `auto`, `rustls` or `openssl`.
    pub fn parse(s: &str) -> Result<Backend, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "auto" => Ok(Backend::Auto),
            "rustls" => Ok(Backend::Rustls),
            "openssl" => Ok(Backend::Openssl),
            _ => Err(format!(
                "{s:?} is not a TLS backend (expected \"rustls\", \"openssl\" or \"auto\")"
            )),
        }
    }

    /// The name reports use.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Auto => "auto",
            Backend::Rustls => "rustls",
            Backend::Openssl => "openssl",
        }
    }
}

/// What the client offers in its handshakes. The default offers what rustls supports: TLS 1.2
/// and 1.3, every suite above, no ALPN, the connect host as the server name, backend chosen
/// automatically.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TlsOptions {
    /// TLS library (`tls.backend`); `Auto` picks per group.
    pub backend: Backend,
    /// Server name sent as SNI and verified in the server certificate (`[target].sni`);
    /// `None` uses the connect host.
    pub sni: Option<String>,
    /// Versions to offer; empty means both.
    pub versions: Vec<TlsVersion>,
    /// Suite names as given (validated); empty means all the transport supports.
    pub suites: Vec<String>,
    /// ALPN protocol names, in preference order (AWS IoT on port 443 wants `x-amzn-mqtt-ca`).
    pub alpn: Vec<String>,
}

impl TlsOptions {
    /// Checks the names and that the versions and suites leave something to negotiate.
    pub fn validate(&self) -> Result<(), String> {
        let suites = self
            .suites
            .iter()
            .map(|n| Suite::parse(n))
            .collect::<Result<Vec<_>, _>>()?;
        if self.backend == Backend::Rustls {
            if let Some(s) = suites.iter().find(|s| s.rustls.is_none()) {
                return Err(format!(
                    "cipher suite {:?} is one of the seed's CBC / static-RSA suites, which rustls refuses by design; it needs tls.backend = \"openssl\" (or leave tls.backend unset)",
                    s.name
                ));
            }
        }
        if let Some(sni) = &self.sni {
            rustls::pki_types::ServerName::try_from(sni.as_str()).map_err(|_| {
                format!("sni {sni:?} is not a valid TLS server name (expected a DNS name such as broker.example.com)")
            })?;
        }
        let versions = self.versions();
        if !suites.is_empty()
            && !suites
                .iter()
                .any(|s| versions.contains(&s.version.protocol()))
        {
            return Err(format!(
                "cipher suites [{}] and TLS versions [{}] have nothing in common (TLS 1.3 suites are named TLS_*, the others are TLS 1.2)",
                self.suites.join(", "),
                self.versions
                    .iter()
                    .map(|v| v.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        if let Some(empty) = self.alpn.iter().find(|p| p.is_empty() || p.len() > 255) {
            return Err(format!(
                "ALPN protocol {empty:?} must be 1 to 255 bytes (expected a name such as \"x-amzn-mqtt-ca\")"
            ));
        }
        Ok(())
    }

    /// The protocol versions to offer.
    pub fn versions(&self) -> Vec<ProtocolVersion> {
        match self.versions.is_empty() {
            true => vec![ProtocolVersion::TLSv1_2, ProtocolVersion::TLSv1_3],
            false => self.versions.iter().map(|v| v.protocol()).collect(),
        }
    }

    /// The cipher suites to offer, restricted to the versions offered; `None` keeps the
    /// provider's default list. Call [`TlsOptions::validate`] first.
    pub fn cipher_suites(&self) -> Option<Vec<SupportedCipherSuite>> {
        if self.suites.is_empty() {
            return None;
        }
        let versions = self.versions();
        let mut out: Vec<SupportedCipherSuite> = Vec::new();
        for s in self.suites.iter().filter_map(|n| suite(n).ok()) {
            if versions.contains(&s.version().version) && !out.contains(&s) {
                out.push(s);
            }
        }
        Some(out)
    }

    /// Whether some named suite needs OpenSSL (rustls cannot serve the offer).
    pub fn needs_openssl(&self) -> bool {
        self.suites
            .iter()
            .any(|n| Suite::parse(n).is_ok_and(|s| s.rustls.is_none()))
    }

    /// The named suites offered at `version` (canonical names; empty when none is named).
    pub fn suites_at(&self, version: TlsVersion) -> Vec<&'static str> {
        let mut out: Vec<&'static str> = Vec::new();
        for s in self.suites.iter().filter_map(|n| Suite::parse(n).ok()) {
            if s.version == version && !out.contains(&s.name) {
                out.push(s.name);
            }
        }
        out
    }

    /// Whether anything differs from the default offer (for the plan printout).
    pub fn is_default(&self) -> bool {
        *self == TlsOptions::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_parse_in_the_usual_spellings() {
        assert_eq!(TlsVersion::parse("1.2"), Ok(TlsVersion::V1_2));
        assert_eq!(TlsVersion::parse("TLSv1.3"), Ok(TlsVersion::V1_3));
        assert!(TlsVersion::parse("1.1")
            .unwrap_err()
            .contains("expected \"1.2\" or \"1.3\""));
    }

    #[test]
    fn every_seed_suite_is_served_or_refused_by_name() {
        let seed = [
            "ECDHE-ECDSA-AES128-GCM-SHA256",
            "ECDHE-RSA-AES128-GCM-SHA256",
            "ECDHE-ECDSA-AES256-GCM-SHA384",
            "ECDHE-RSA-AES256-GCM-SHA384",
        ];
        for name in seed {
            let s = suite(name).unwrap();
            assert_eq!(s.version().version, ProtocolVersion::TLSv1_2, "{name}");
        }
        for name in NEEDS_OPENSSL {
            let e = suite(name).unwrap_err();
            assert!(e.contains("needs the OpenSSL backend"), "{e}");
            let s = Suite::parse(&name.to_ascii_lowercase()).unwrap();
            assert_eq!(
                (s.name, s.version, s.rustls),
                (name, TlsVersion::V1_2, None)
            );
        }
        // Only an explicit rustls backend refuses them.
        let cbc = TlsOptions {
            suites: vec!["AES128-SHA".into()],
            ..TlsOptions::default()
        };
        cbc.validate().unwrap();
        assert!(cbc.needs_openssl());
        assert_eq!(cbc.suites_at(TlsVersion::V1_2), ["AES128-SHA"]);
        let forced = TlsOptions {
            backend: Backend::Rustls,
            ..cbc
        };
        assert!(forced
            .validate()
            .unwrap_err()
            .contains("tls.backend = \"openssl\""));
        assert_eq!(
            format!(
                "{:?}",
                suite("ecdhe-rsa-aes256-gcm-sha384").unwrap().suite()
            ),
            "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384"
        );
        assert!(suite("RC4-MD5")
            .unwrap_err()
            .contains("not a cipher suite name"));
    }

    #[test]
    fn suites_and_versions_must_overlap() {
        let o = TlsOptions {
            versions: vec![TlsVersion::V1_3],
            suites: vec!["ECDHE-ECDSA-AES128-GCM-SHA256".into()],
            ..TlsOptions::default()
        };
        assert!(o.validate().unwrap_err().contains("nothing in common"));
        let o = TlsOptions {
            versions: vec![],
            suites: vec![
                "ECDHE-ECDSA-AES128-GCM-SHA256".into(),
                "TLS_AES_256_GCM_SHA384".into(),
            ],
            alpn: vec!["x-amzn-mqtt-ca".into()],
            ..TlsOptions::default()
        };
        o.validate().unwrap();
        assert_eq!(o.cipher_suites().unwrap().len(), 2);
        assert!(TlsOptions::default().cipher_suites().is_none());
        let bad_alpn = TlsOptions {
            alpn: vec![String::new()],
            ..TlsOptions::default()
        };
        assert!(bad_alpn.validate().unwrap_err().contains("1 to 255 bytes"));
        let bad_sni = TlsOptions {
            sni: Some("not a name".into()),
            ..TlsOptions::default()
        };
        assert!(bad_sni
            .validate()
            .unwrap_err()
            .contains("valid TLS server name"));
        assert_eq!(Backend::parse("OpenSSL"), Ok(Backend::Openssl));
        assert!(Backend::parse("gnutls")
            .unwrap_err()
            .contains("\"rustls\", \"openssl\""));
    }
}
