//! TLS for devices: one rustls `ClientConfig` (or OpenSSL `SslConnector`, see [`openssl`]) per
//! identity, shared by `Arc`; [`device::DeviceTls`] says which, and plugs it into rumqttc.
//!
//! Why one config per identity: the client certificate lives in the config, and rumqttc's
//! `TlsConfiguration::Simple` would rebuild (and re-parse) it on every reconnect. Session
//! resumption is disabled: a cache shared across identities would mix them, and a per-device
//! cache costs memory for reconnects the runner does not make.

pub mod device;
pub mod matrix;
pub mod matrix_spec;
pub mod openssl;
pub mod options;
pub mod probe;
pub mod verify_cache;

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::Resumption;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

use device::DeviceTls;
use options::{Backend, TlsOptions};
use rustls_pki_types::PrivateKeyDer as KeyDer;

/// Installs aws-lc-rs as the process-wide rustls crypto provider.
///
/// rmqtt pulls in quinn, which enables rustls's `ring` provider beside `aws-lc-rs`; with two
/// providers compiled in, `ClientConfig::builder()` panics unless one is installed. Call this
/// once at start-up (main, each test, each bench); later calls are harmless.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

/// Why a TLS configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The server CA could not be used as a trust anchor.
    #[error("server CA: {0}")]
    BadServerCa(String),
    /// rustls refused the client certificate or key.
    #[error("client identity `{client_id}`: {source}")]
    ClientIdentity {
        /// Which device.
        client_id: String,
        /// rustls's reason.
        source: rustls::Error,
    },
    /// OpenSSL refused the client certificate, the key or a setting.
    #[error("client identity `{client_id}`: {source}")]
    OpensslIdentity {
        /// Which device.
        client_id: String,
        /// OpenSSL's reason.
        source: openssl::OpensslError,
    },
}

/// How devices check the broker's certificate.
#[derive(Clone)]
pub struct ServerTrust {
    verifier: Option<Arc<dyn ServerCertVerifier>>,
    roots: Arc<RootCertStore>,
    provider: Arc<CryptoProvider>,
    /// Protocol versions offered (both unless the scenario narrows them).
    versions: Vec<&'static rustls::SupportedProtocolVersion>,
    /// ALPN protocols offered, in preference order.
    alpn: Vec<Vec<u8>>,
    /// `tls.backend` as configured (`Auto` resolves per identity).
    backend: Backend,
    /// Whether the named suites need OpenSSL.
    needs_openssl: bool,
    /// Server name when it differs from the connect host (`[target].sni`).
    sni: Option<Arc<str>>,
    /// The OpenSSL side of the same choices.
    openssl: Arc<openssl::OpensslPlan>,
    /// Everything but the client identity, built once and cloned per device: the clone shares
    /// the verifier, provider and the other `Arc`s instead of allocating them per session.
    base: std::sync::OnceLock<Arc<ClientConfig>>,
}

impl ServerTrust {
    /// Verify the server's chain and name against these trust anchors (the default).
    pub fn roots(cas: &[CertificateDer<'static>]) -> Result<ServerTrust, TlsError> {
        let mut store = RootCertStore::empty();
        for ca in cas {
            store
                .add(ca.clone())
                .map_err(|e| TlsError::BadServerCa(e.to_string()))?;
        }
        if store.is_empty() {
            return Err(TlsError::BadServerCa(
                "no certificate given (expected a PEM CA certificate)".into(),
            ));
        }
        Ok(ServerTrust {
            verifier: None,
            roots: Arc::new(store),
            provider: provider(),
            versions: rustls::ALL_VERSIONS.to_vec(),
            alpn: Vec::new(),
            backend: Backend::Auto,
            needs_openssl: false,
            sni: None,
            openssl: Arc::new(openssl::OpensslPlan::new(&TlsOptions::default(), cas, true)),
            base: Default::default(),
        })
    }

    /// Accept any server certificate (`--insecure`). Handshake signatures are still checked,
    /// so the connection is encrypted, but not authenticated: the caller warns loudly.
    pub fn insecure() -> ServerTrust {
        let provider = provider();
        ServerTrust {
            verifier: Some(Arc::new(AcceptAnyServer(provider.clone()))),
            roots: Arc::new(RootCertStore::empty()),
            provider,
            versions: rustls::ALL_VERSIONS.to_vec(),
            alpn: Vec::new(),
            backend: Backend::Auto,
            needs_openssl: false,
            sni: None,
            openssl: Arc::new(openssl::OpensslPlan::new(
                &TlsOptions::default(),
                &[],
                false,
            )),
            base: Default::default(),
        }
    }

    /// Whether server verification is off.
    pub fn is_insecure(&self) -> bool {
        self.verifier.is_some()
    }

    /// The backend that runs handshakes for an identity with this key: the configured one,
    /// or (`auto`) rustls unless the named suites need OpenSSL or rustls cannot sign with the
    /// key (RSA-PSS, DSA).
    pub fn backend_for(&self, key: &KeyDer<'_>) -> Backend {
        match self.backend {
            Backend::Auto if self.needs_openssl => Backend::Openssl,
            Backend::Auto => match self.signing_key(key.clone_key()) {
                Ok(_) => Backend::Rustls,
                Err(_) => Backend::Openssl,
            },
            chosen => chosen,
        }
    }

    /// rustls's signing key for `key`. ECDSA first: rustls's generic loader tries RSA before
    /// ECDSA, a failed parse per connect for the default P-256 fleets. Loading validates the
    /// key pair (a scalar multiplication for EC keys), so a device loads its key once.
    fn signing_key(
        &self,
        key: KeyDer<'static>,
    ) -> Result<Arc<dyn rustls::sign::SigningKey>, rustls::Error> {
        match rustls::crypto::aws_lc_rs::sign::any_ecdsa_type(&key) {
            Ok(k) => Ok(k),
            Err(_) => self.provider.key_provider.load_private_key(key),
        }
    }

    /// The server name sent as SNI and checked in the certificate, when not the connect host.
    pub fn sni(&self) -> Option<&str> {
        self.sni.as_deref()
    }

    /// One device's TLS with the backend [`ServerTrust::backend_for`] picks.
    pub fn device_tls(
        &self,
        client_id: &str,
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
    ) -> Result<DeviceTls, TlsError> {
        // Auto: the key decides, loaded once (the rustls config keeps it).
        let loaded = match self.backend {
            Backend::Auto if !self.needs_openssl => self.signing_key(key.clone_key()).ok(),
            _ => None,
        };
        let backend = match (self.backend, &loaded) {
            (Backend::Auto, Some(_)) => Backend::Rustls,
            (Backend::Auto, None) => Backend::Openssl,
            (chosen, _) => chosen,
        };
        match backend {
            Backend::Openssl => {
                let failed = |source| TlsError::OpensslIdentity {
                    client_id: client_id.to_string(),
                    source,
                };
                let connector = self.openssl.connector().map_err(failed)?;
                let identity = self.openssl.identity(&chain, &key).map_err(failed)?;
                Ok(DeviceTls::Openssl {
                    connector,
                    identity: Arc::new(identity),
                    sni: self.sni.clone(),
                })
            }
            _ => {
                let identity = |source| TlsError::ClientIdentity {
                    client_id: client_id.to_string(),
                    source,
                };
                let signing_key = match loaded {
                    Some(k) => k,
                    None => self.signing_key(key).map_err(identity)?,
                };
                Ok(DeviceTls::Rustls {
                    config: self.config_with(client_id, chain, signing_key)?,
                    sni: self.sni.clone(),
                })
            }
        }
    }

    /// Builds the rustls config for one device identity.
    pub fn client_config(
        &self,
        client_id: &str,
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
    ) -> Result<Arc<ClientConfig>, TlsError> {
        let signing_key = self
            .signing_key(key)
            .map_err(|source| TlsError::ClientIdentity {
                client_id: client_id.to_string(),
                source,
            })?;
        self.config_with(client_id, chain, signing_key)
    }

    /// The device config around an already loaded key.
    fn config_with(
        &self,
        client_id: &str,
        chain: Vec<CertificateDer<'static>>,
        signing_key: Arc<dyn rustls::sign::SigningKey>,
    ) -> Result<Arc<ClientConfig>, TlsError> {
        let identity = |source| TlsError::ClientIdentity {
            client_id: client_id.to_string(),
            source,
        };
        let base = match self.base.get() {
            Some(base) => base,
            None => {
                let built = self.base_config().map_err(identity)?;
                self.base.get_or_init(|| built)
            }
        };
        let certified = rustls::sign::CertifiedKey::new(chain, signing_key);
        // As rustls's own loader: a key whose consistency cannot be checked is accepted.
        match certified.keys_match() {
            Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {}
            Err(e) => return Err(identity(e)),
        }
        let mut config = ClientConfig::clone(base);
        config.client_auth_cert_resolver =
            Arc::new(rustls::sign::SingleCertAndKey::from(certified));
        Ok(Arc::new(config))
    }

    /// The shared part of every device's config: versions, verifier, ALPN, no resumption.
    fn base_config(&self) -> Result<Arc<ClientConfig>, rustls::Error> {
        let builder = ClientConfig::builder_with_provider(self.provider.clone())
            .with_protocol_versions(&self.versions)?;
        let verifier = match &self.verifier {
            Some(v) => v.clone(),
            None => {
                let webpki = rustls::client::WebPkiServerVerifier::builder_with_provider(
                    self.roots.clone(),
                    self.provider.clone(),
                )
                .build()
                .map_err(|e| rustls::Error::General(e.to_string()))?;
                Arc::new(verify_cache::CachedVerifier::new(webpki))
            }
        };
        let builder = builder
            .dangerous()
            .with_custom_certificate_verifier(verifier);
        let mut config = builder.with_no_client_auth();
        config.resumption = Resumption::disabled();
        config.alpn_protocols = self.alpn.clone();
        Ok(Arc::new(config))
    }
}

/// aws-lc-rs with classical key exchange only (X25519, P-256, P-384), as the devices this
/// simulates speak. rustls would also offer the X25519MLKEM768 hybrid, and a broker that
/// picks it makes every simulated handshake costlier than a real device's. (Measured: no
/// change in client CPU per connect against mosquitto, which never picks it.)
impl ServerTrust {
    /// This trust with the scenario's TLS choices: versions, cipher suites, ALPN. `options`
    /// must have passed [`TlsOptions::validate`].
    pub fn with_options(mut self, options: &TlsOptions) -> ServerTrust {
        self.versions = options
            .versions()
            .into_iter()
            .filter_map(|v| {
                rustls::ALL_VERSIONS
                    .iter()
                    .copied()
                    .find(|s| s.version == v)
            })
            .collect();
        if let Some(suites) = options.cipher_suites().filter(|s| !s.is_empty()) {
            self.provider = Arc::new(CryptoProvider {
                cipher_suites: suites,
                ..(*self.provider).clone()
            });
        }
        self.alpn = options.alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
        self.backend = options.backend;
        self.needs_openssl = options.needs_openssl();
        self.sni = options.sni.as_deref().map(Arc::from);
        self.openssl = Arc::new(openssl::OpensslPlan::new(
            options,
            &self.openssl.cas(),
            self.openssl.verifies(),
        ));
        self.base = Default::default();
        self
    }
}

fn provider() -> Arc<CryptoProvider> {
    use rustls::crypto::aws_lc_rs::{default_provider, kx_group};
    Arc::new(CryptoProvider {
        kx_groups: vec![kx_group::X25519, kx_group::SECP256R1, kx_group::SECP384R1],
        ..default_provider()
    })
}

/// The `--insecure` verifier: any certificate, any name; signatures still verified.
#[derive(Debug)]
struct AcceptAnyServer(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAnyServer {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
