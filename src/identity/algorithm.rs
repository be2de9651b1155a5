//! The certificate-signing algorithms from the seed, by the names users type.
//!
//! An [`Algorithm`] fixes both the device key type and the signature on the device certificate
//! (a generated CA uses the same algorithm, so "ECDSA-WITH-SHA384" means exactly that on the
//! wire). RSASSA-PSS (SHA-256) and DSA_WITH_SHA256 are in the seed but rcgen cannot produce
//! them: those are signed with OpenSSL ([`super::openssl_ca`]). Other PSS digests and DSA sizes
//! are recognised and refused with "not supported yet".

use std::fmt;
use std::str::FromStr;

use rcgen::{KeyPair, RsaKeySize, SignatureAlgorithm};

/// A signing algorithm the identity factory can produce.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Algorithm {
    /// ECDSA-WITH-SHA256 on P-256: the fastest to generate and to handshake (the default).
    #[default]
    EcdsaP256Sha256,
    /// ECDSA-WITH-SHA384 on P-384.
    EcdsaP384Sha384,
    /// ECDSA-WITH-SHA512 on P-521.
    EcdsaP521Sha512,
    /// SHA{256,384,512}WITHRSA (PKCS#1 v1.5) with a key of `bits` bits.
    Rsa { bits: RsaBits, hash: RsaHash },
    /// RSASSA-PSS with SHA-256 (an `RSA-PSS` key of `bits` bits), signed by OpenSSL.
    RsaPss { bits: RsaBits },
    /// DSA_WITH_SHA256 with a 2048-bit DSA key, signed by OpenSSL.
    Dsa,
}

/// RSA key sizes rcgen (aws-lc-rs) can generate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RsaBits {
    /// 2048-bit modulus (~15 keys/s per core here).
    B2048,
    /// 3072-bit modulus.
    B3072,
    /// 4096-bit modulus (~1.3 keys/s per core here).
    B4096,
}

/// Digest used with an RSA PKCS#1 v1.5 signature.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RsaHash {
    /// SHA256WITHRSA
    Sha256,
    /// SHA384WITHRSA
    Sha384,
    /// SHA512WITHRSA
    Sha512,
}

/// Why an algorithm name was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AlgorithmError {
    /// The name is one of the seed's algorithms that no backend produces yet.
    #[error("signing algorithm `{0}` is not supported yet (RSASSA-PSS is built with SHA-256 only, DSA with 2048-bit keys only); supported: {list}, {more}", list = Algorithm::NAMES.join(", "), more = Algorithm::OPENSSL_NAMES.join(", "))]
    NotSupportedYet(String),
    /// The name is not an algorithm at all.
    #[error("unknown signing algorithm `{0}`; expected one of: {list}, {more}", list = Algorithm::NAMES.join(", "), more = Algorithm::OPENSSL_NAMES.join(", "))]
    Unknown(String),
}

impl Algorithm {
    /// Every accepted name, in the order `--help` and errors list them.
    pub const NAMES: [&'static str; 12] = [
        "ecdsa-p256-sha256",
        "ecdsa-p384-sha384",
        "ecdsa-p521-sha512",
        "rsa2048-sha256",
        "rsa2048-sha384",
        "rsa2048-sha512",
        "rsa3072-sha256",
        "rsa3072-sha384",
        "rsa3072-sha512",
        "rsa4096-sha256",
        "rsa4096-sha384",
        "rsa4096-sha512",
    ];

    /// The algorithms OpenSSL signs (rcgen cannot), by name, in [`OPENSSL`] order.
    pub const OPENSSL_NAMES: [&'static str; 4] = [
        "rsa2048-pss-sha256",
        "rsa3072-pss-sha256",
        "rsa4096-pss-sha256",
        "dsa2048-sha256",
    ];

    /// Whether OpenSSL signs this algorithm's certificates (and runs its devices' TLS: rustls
    /// cannot sign with RSA-PSS or DSA keys).
    pub fn needs_openssl(self) -> bool {
        matches!(self, Algorithm::RsaPss { .. } | Algorithm::Dsa)
    }

    /// The canonical name (one of [`Algorithm::NAMES`] or [`Algorithm::OPENSSL_NAMES`]).
    pub fn name(self) -> &'static str {
        use Algorithm::*;
        use RsaBits::*;
        use RsaHash::*;
        match self {
            RsaPss { bits: B2048 } => "rsa2048-pss-sha256",
            RsaPss { bits: B3072 } => "rsa3072-pss-sha256",
            RsaPss { bits: B4096 } => "rsa4096-pss-sha256",
            Dsa => "dsa2048-sha256",
            EcdsaP256Sha256 => "ecdsa-p256-sha256",
            EcdsaP384Sha384 => "ecdsa-p384-sha384",
            EcdsaP521Sha512 => "ecdsa-p521-sha512",
            Rsa {
                bits: B2048,
                hash: Sha256,
            } => "rsa2048-sha256",
            Rsa {
                bits: B2048,
                hash: Sha384,
            } => "rsa2048-sha384",
            Rsa {
                bits: B2048,
                hash: Sha512,
            } => "rsa2048-sha512",
            Rsa {
                bits: B3072,
                hash: Sha256,
            } => "rsa3072-sha256",
            Rsa {
                bits: B3072,
                hash: Sha384,
            } => "rsa3072-sha384",
            Rsa {
                bits: B3072,
                hash: Sha512,
            } => "rsa3072-sha512",
            Rsa {
                bits: B4096,
                hash: Sha256,
            } => "rsa4096-sha256",
            Rsa {
                bits: B4096,
                hash: Sha384,
            } => "rsa4096-sha384",
            Rsa {
                bits: B4096,
                hash: Sha512,
            } => "rsa4096-sha512",
        }
    }

    /// The seed's (AWS IoT's) name for the signature this algorithm puts on certificates.
    pub fn seed_name(self) -> &'static str {
        match self {
            Algorithm::EcdsaP256Sha256 => "ECDSA-WITH-SHA256",
            Algorithm::EcdsaP384Sha384 => "ECDSA-WITH-SHA384",
            Algorithm::EcdsaP521Sha512 => "ECDSA-WITH-SHA512",
            Algorithm::Rsa {
                hash: RsaHash::Sha256,
                ..
            } => "SHA256WITHRSA",
            Algorithm::Rsa {
                hash: RsaHash::Sha384,
                ..
            } => "SHA384WITHRSA",
            Algorithm::Rsa {
                hash: RsaHash::Sha512,
                ..
            } => "SHA512WITHRSA",
            Algorithm::RsaPss { .. } => "RSASSAPSS",
            Algorithm::Dsa => "DSA_WITH_SHA256",
        }
    }

    /// rcgen's description of the signature; `None` for the algorithms OpenSSL signs.
    pub fn signature(self) -> Option<&'static SignatureAlgorithm> {
        Some(match self {
            Algorithm::EcdsaP256Sha256 => &rcgen::PKCS_ECDSA_P256_SHA256,
            Algorithm::EcdsaP384Sha384 => &rcgen::PKCS_ECDSA_P384_SHA384,
            Algorithm::EcdsaP521Sha512 => &rcgen::PKCS_ECDSA_P521_SHA512,
            Algorithm::Rsa {
                hash: RsaHash::Sha256,
                ..
            } => &rcgen::PKCS_RSA_SHA256,
            Algorithm::Rsa {
                hash: RsaHash::Sha384,
                ..
            } => &rcgen::PKCS_RSA_SHA384,
            Algorithm::Rsa {
                hash: RsaHash::Sha512,
                ..
            } => &rcgen::PKCS_RSA_SHA512,
            Algorithm::RsaPss { .. } | Algorithm::Dsa => return None,
        })
    }

    /// Identities one core signs per second here (key generation + certificate), measured on
    /// the reference 2-core machine by `cargo bench --bench identity`; used to estimate generation time and to decide whether a
    /// progress bar is worth drawing.
    pub fn per_core_per_sec(self) -> f64 {
        match self {
            Algorithm::EcdsaP256Sha256 => 20_000.0,
            Algorithm::EcdsaP384Sha384 => 7_000.0,
            Algorithm::EcdsaP521Sha512 => 2_500.0,
            Algorithm::Rsa {
                bits: RsaBits::B2048,
                ..
            } => 15.0,
            Algorithm::Rsa {
                bits: RsaBits::B3072,
                ..
            } => 4.0,
            Algorithm::Rsa {
                bits: RsaBits::B4096,
                ..
            } => 1.3,
            // OpenSSL's RSA-PSS key generation: `certs issue --algorithm rsassapss --count 10`
            // took 7 s on the shared 2-core machine (~1/s per core); larger keys are scaled as
            // PKCS#1 RSA's are (not measured).
            Algorithm::RsaPss {
                bits: RsaBits::B2048,
            } => 1.0,
            Algorithm::RsaPss {
                bits: RsaBits::B3072,
            } => 0.3,
            Algorithm::RsaPss {
                bits: RsaBits::B4096,
            } => 0.1,
            // A key from the CA's shared parameters plus one DSA signature: `certs issue
            // --algorithm dsa2048-sha256 --count 200` signed 174/s on 2 shared cores.
            Algorithm::Dsa => 90.0,
        }
    }

    /// Generates a fresh rcgen key pair of this algorithm (an error for the OpenSSL ones).
    pub fn generate_key(self) -> Result<KeyPair, rcgen::Error> {
        let signature = self
            .signature()
            .ok_or(rcgen::Error::UnsupportedSignatureAlgorithm)?;
        match self {
            Algorithm::Rsa { bits, .. } => {
                let size = match bits {
                    RsaBits::B2048 => RsaKeySize::_2048,
                    RsaBits::B3072 => RsaKeySize::_3072,
                    RsaBits::B4096 => RsaKeySize::_4096,
                };
                KeyPair::generate_rsa_for(signature, size)
            }
            _ => KeyPair::generate_for(signature),
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Algorithm {
    type Err = AlgorithmError;

    /// Accepts the canonical names and, case-insensitively, the seed's names
    /// (`ECDSA-WITH-SHA256`, `SHA384WITHRSA` meaning RSA-2048, ...).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let lower = s.trim().to_ascii_lowercase();
        let seed_alias = match lower.as_str() {
            "ecdsa-with-sha256" => Some("ecdsa-p256-sha256"),
            "ecdsa-with-sha384" => Some("ecdsa-p384-sha384"),
            "ecdsa-with-sha512" => Some("ecdsa-p521-sha512"),
            "sha256withrsa" => Some("rsa2048-sha256"),
            "sha384withrsa" => Some("rsa2048-sha384"),
            "sha512withrsa" => Some("rsa2048-sha512"),
            "rsassapss" | "rsassa-pss" | "rsa-pss" => Some("rsa2048-pss-sha256"),
            "dsa_with_sha256" | "dsa-sha256" | "dsa" => Some("dsa2048-sha256"),
            _ => None,
        };
        let name = seed_alias.unwrap_or(lower.as_str());
        if let Some(alg) = ALL.iter().chain(OPENSSL.iter()).find(|a| a.name() == name) {
            return Ok(*alg);
        }
        let unsupported = [
            "rsassapss",
            "rsassa-pss",
            "rsa-pss",
            "dsa_with_sha256",
            "dsa-sha256",
        ];
        if unsupported.iter().any(|u| name.starts_with(u))
            || name.contains("pss")
            || name.starts_with("dsa")
        {
            return Err(AlgorithmError::NotSupportedYet(s.to_string()));
        }
        Err(AlgorithmError::Unknown(s.to_string()))
    }
}

/// The algorithms OpenSSL signs, in [`Algorithm::OPENSSL_NAMES`] order.
pub const OPENSSL: [Algorithm; 4] = [
    Algorithm::RsaPss {
        bits: RsaBits::B2048,
    },
    Algorithm::RsaPss {
        bits: RsaBits::B3072,
    },
    Algorithm::RsaPss {
        bits: RsaBits::B4096,
    },
    Algorithm::Dsa,
];

/// Every algorithm rcgen signs, in [`Algorithm::NAMES`] order.
pub const ALL: [Algorithm; 12] = {
    use Algorithm::*;
    use RsaBits::*;
    use RsaHash::*;
    [
        EcdsaP256Sha256,
        EcdsaP384Sha384,
        EcdsaP521Sha512,
        Rsa {
            bits: B2048,
            hash: Sha256,
        },
        Rsa {
            bits: B2048,
            hash: Sha384,
        },
        Rsa {
            bits: B2048,
            hash: Sha512,
        },
        Rsa {
            bits: B3072,
            hash: Sha256,
        },
        Rsa {
            bits: B3072,
            hash: Sha384,
        },
        Rsa {
            bits: B3072,
            hash: Sha512,
        },
        Rsa {
            bits: B4096,
            hash: Sha256,
        },
        Rsa {
            bits: B4096,
            hash: Sha384,
        },
        Rsa {
            bits: B4096,
            hash: Sha512,
        },
    ]
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for (alg, name) in ALL.iter().zip(Algorithm::NAMES) {
            assert_eq!(alg.name(), name);
            assert_eq!(name.parse::<Algorithm>().unwrap(), *alg);
        }
    }

    #[test]
    fn seed_names_parse() {
        assert_eq!(
            "ECDSA-WITH-SHA384".parse::<Algorithm>().unwrap(),
            Algorithm::EcdsaP384Sha384
        );
        assert_eq!(
            "sha512WithRSA".parse::<Algorithm>().unwrap().name(),
            "rsa2048-sha512"
        );
    }

    #[test]
    fn pss_and_dsa_are_openssl_signed_in_their_seed_forms_only() {
        for (alg, name) in OPENSSL.iter().zip(Algorithm::OPENSSL_NAMES) {
            assert_eq!(name.parse::<Algorithm>().unwrap(), *alg);
            assert!(alg.needs_openssl() && alg.signature().is_none());
        }
        assert_eq!(
            "RSASSAPSS".parse::<Algorithm>().unwrap().seed_name(),
            "RSASSAPSS"
        );
        assert_eq!(
            "DSA_WITH_SHA256".parse::<Algorithm>().unwrap(),
            Algorithm::Dsa
        );
        for name in ["rsa2048-pss-sha512", "dsa3072-sha256"] {
            let e = name.parse::<Algorithm>().unwrap_err();
            assert!(matches!(e, AlgorithmError::NotSupportedYet(_)), "{name}");
            assert!(e.to_string().contains("not supported yet"));
        }
        assert!(matches!(
            "ed448".parse::<Algorithm>(),
            Err(AlgorithmError::Unknown(_))
        ));
    }
}
