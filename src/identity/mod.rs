//! Per-device X.509 identities: the part the seed insists on.
//!
//! Every virtual device gets its own private key and certificate, signed by a CA that is either
//! generated here or brought by the user. Identities are cached on disk (see [`cache`]) so that
//! a 100,000-device run pays for signing once, and grown fleets only sign the new devices.
//!
//! Flow: [`Algorithm`] + [`Template`](crate::template::Template) + CA -> [`FleetSpec`] ->
//! [`cache::ensure`] -> [`Fleet`] (DER certificates and PKCS#8 keys, ready for rustls).

pub mod algorithm;
pub mod ca;
pub mod cache;
pub mod device;
mod fs;
pub mod openssl_ca;
pub mod server;

use std::io;
use std::path::{Path, PathBuf};

pub use algorithm::{Algorithm, AlgorithmError};
pub use ca::Ca;
pub use cache::{ensure, CaSource, EnsureReport, Fleet, FleetMeta, FleetSpec};
pub use device::DeviceWindow;
pub use fs::{private_dir, read_pem_certs, write_private};
pub use server::{server_identity, ServerIdentity};

/// Variables a client-ID template may use.
pub const CLIENT_ID_VARS: &[&str] = &["index"];

/// Everything that can go wrong creating, loading or caching identities. Each message is one
/// line naming the file or value at fault and what was expected.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// A file could not be read or written.
    #[error("{path}: {err}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error (not a `source`: the message already carries it, once).
        err: io::Error,
    },
    /// A certificate file is unreadable or unusable.
    #[error("{path}: {reason}")]
    BadCert {
        /// The file.
        path: PathBuf,
        /// What is wrong and what was expected.
        reason: String,
    },
    /// The certificate is valid X.509 but not a CA.
    #[error("{path}: certificate `{subject}` is not a CA (basicConstraints CA:TRUE missing); expected a CA certificate to sign devices with")]
    NotCa {
        /// The file.
        path: PathBuf,
        /// Its subject.
        subject: String,
    },
    /// A private key file is unreadable.
    #[error("{path}: {reason}")]
    BadKey {
        /// The file.
        path: PathBuf,
        /// What is wrong and what was expected.
        reason: String,
    },
    /// The CA key is not the key of the CA certificate.
    #[error("{key}: private key does not match the public key of CA certificate {cert}")]
    KeyMismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
    },
    /// The identity cache holds something this version cannot read.
    #[error("{path}: {reason} (remove it or issue with --force to regenerate)")]
    Cache {
        /// The cache file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A bad client-ID template.
    #[error(transparent)]
    Template(#[from] crate::template::TemplateError),
    /// A bad algorithm name.
    #[error(transparent)]
    Algorithm(#[from] AlgorithmError),
    /// A client-ID template without `{index}` would give every device the same identity.
    #[error("client-ID template `{template}` has no {{index}}: all {count} devices would share one identity (expected e.g. `sensor-{{index:05}}`)")]
    SharedIdentity {
        /// The template.
        template: String,
        /// How many devices were asked for.
        count: u64,
    },
    /// A cached fleet's validity window (from its `fleet.json`) is not a representable time.
    #[error("cached validity window {not_before}..{not_after} (Unix seconds) is not a valid date range (expected years 1 to 9999; remove the fleet's cache entry or issue with --force to regenerate)")]
    BadWindow {
        /// notBefore as read.
        not_before: i64,
        /// notAfter as read.
        not_after: i64,
    },
    /// Certificate generation failed inside rcgen.
    #[error("certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),
    /// Certificate generation failed inside OpenSSL (RSASSA-PSS, DSA).
    #[error("certificate generation (OpenSSL) failed: {0}")]
    Openssl(String),
}

impl IdentityError {
    fn io(path: &Path, source: io::Error) -> Self {
        IdentityError::Io {
            path: path.to_path_buf(),
            err: source,
        }
    }

    fn bad_cert(path: &Path, reason: impl Into<String>) -> Self {
        IdentityError::BadCert {
            path: path.to_path_buf(),
            reason: reason.into(),
        }
    }

    fn bad_key(path: &Path, reason: impl Into<String>) -> Self {
        IdentityError::BadKey {
            path: path.to_path_buf(),
            reason: reason.into(),
        }
    }

    fn cache(path: &Path, reason: impl Into<String>) -> Self {
        IdentityError::Cache {
            path: path.to_path_buf(),
            reason: reason.into(),
        }
    }
}
