//! The OpenSSL-backed TLS transport: the seed's 14 CBC / static-RSA suites (which rustls
//! refuses by design), and keys rustls cannot sign with.
//!
//! How it rides on rumqttc: the vendored rumqttc's `NetworkOptions::set_stream_layer` hands
//! the connected TCP stream to a closure before its transport runs; with `Transport::Tcp` the
//! closure runs the whole TLS handshake here (tokio-openssl) and MQTT then flows over the
//! `SslStream`. So the MQTT session, its codec and the runner are the same for both backends.
//!
//! One shared `SslConnector` (an `SSL_CTX`: offer, trust, options) per run, and per device only
//! its parsed identity ([`OpensslIdentity`]: certificate, chain, key), set on each connection's
//! `SSL` object: a context per device would cost its cipher tables and trust store per device.
//! Trust is only the run's server CA
//! (never the system store, as with rustls), the server certificate and name are verified by
//! default, session tickets and the session cache are off (no identity mixing, no resumption
//! the devices would not make).
//!
//! OpenSSL 3 security level: every seed suite negotiates at TLS 1.2 at the default level
//! (checked with `openssl s_server`/`s_client` and by tests/tls_openssl.rs): static-RSA key
//! exchange and SHA-1 record MACs are allowed at levels 0-2; what level 1+ forbids is SHA-1
//! *signatures* and RSA keys under 2048 bits (in practice TLS 1.0/1.1, which sign with
//! MD5/SHA-1). thingswarm offers TLS 1.2 and 1.3 only (the seed's minimum is 1.2), so it never
//! lowers the level with `@SECLEVEL=0`: a broker whose certificate is too weak fails the
//! handshake with a classified error instead of silently passing.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};

use openssl::pkey::{Id, PKey, Private};
use openssl::ssl::{
    SslConnector, SslMethod, SslOptions, SslSessionCacheMode, SslVerifyMode, SslVersion,
};
use openssl::x509::store::X509StoreBuilder;
use openssl::x509::X509;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_openssl::SslStream;

use super::options::{TlsOptions, TlsVersion};

/// The run's OpenSSL choices, shared by every identity's connector.
#[derive(Clone, Debug)]
pub struct OpensslPlan {
    min: SslVersion,
    max: SslVersion,
    /// TLS 1.2 cipher list (`set_cipher_list`), when the scenario names suites.
    cipher_list: Option<String>,
    /// TLS 1.3 suites (`set_ciphersuites`), when the scenario names suites.
    ciphersuites: Option<String>,
    /// ALPN protocols in wire format (length-prefixed).
    alpn_wire: Vec<u8>,
    /// Trust anchors for the server certificate; empty with `verify == false`.
    cas: Vec<CertificateDer<'static>>,
    /// Verify the server's chain and name (off only with `--insecure`).
    verify: bool,
    /// The shared context, built on first use.
    shared: Arc<OnceLock<SslConnector>>,
}

/// One device's identity, parsed once for OpenSSL and set on each of its connections.
#[derive(Clone)]
pub struct OpensslIdentity {
    cert: X509,
    chain: Vec<X509>,
    key: PKey<Private>,
}

/// Why an OpenSSL connector could not be built for an identity.
#[derive(Debug, thiserror::Error)]
pub enum OpensslError {
    /// OpenSSL refused a setting, the certificate or the key.
    #[error("openssl: {what}: {source}")]
    Setup {
        /// Which step.
        what: &'static str,
        /// OpenSSL's error stack.
        source: openssl::error::ErrorStack,
    },
    /// The identity has no certificate.
    #[error("openssl: no client certificate (expected the device certificate first)")]
    NoCertificate,
    /// The private key does not belong to the certificate.
    #[error("openssl: the private key does not match the certificate")]
    KeyMismatch,
}

fn step<T>(
    what: &'static str,
    r: Result<T, openssl::error::ErrorStack>,
) -> Result<T, OpensslError> {
    r.map_err(|source| OpensslError::Setup { what, source })
}

impl OpensslPlan {
    /// The plan for `options` (validated), trusting `cas` (`verify`) or nothing (`--insecure`).
    pub fn new(options: &TlsOptions, cas: &[CertificateDer<'static>], verify: bool) -> OpensslPlan {
        let versions = if options.versions.is_empty() {
            vec![TlsVersion::V1_2, TlsVersion::V1_3]
        } else {
            options.versions.clone()
        };
        let (mut min, mut max) = (
            versions.iter().min().copied().unwrap_or(TlsVersion::V1_2),
            versions.iter().max().copied().unwrap_or(TlsVersion::V1_3),
        );
        let (mut cipher_list, mut ciphersuites) = (None, None);
        if !options.suites.is_empty() {
            let v12 = options.suites_at(TlsVersion::V1_2);
            let v13 = options.suites_at(TlsVersion::V1_3);
            // Named suites of one version only: the other version has nothing to offer, so
            // it is not offered at all (as rustls does with a restricted suite list).
            if v12.is_empty() {
                min = TlsVersion::V1_3;
            } else {
                cipher_list = Some(v12.join(":"));
            }
            if v13.is_empty() {
                max = TlsVersion::V1_2;
            } else {
                ciphersuites = Some(v13.join(":"));
            }
        }
        let mut alpn_wire = Vec::new();
        for p in &options.alpn {
            // Validated: 1..=255 bytes.
            alpn_wire.push(p.len() as u8);
            alpn_wire.extend_from_slice(p.as_bytes());
        }
        OpensslPlan {
            min: ssl_version(min),
            max: ssl_version(max),
            cipher_list,
            ciphersuites,
            alpn_wire,
            cas: cas.to_vec(),
            verify,
            shared: Arc::new(OnceLock::new()),
        }
    }

    /// The run's shared connector (offer, trust, options; no client identity).
    pub fn connector(&self) -> Result<SslConnector, OpensslError> {
        if let Some(c) = self.shared.get() {
            return Ok(c.clone());
        }
        let built = self.build()?;
        Ok(self.shared.get_or_init(|| built).clone())
    }

    /// A device identity for OpenSSL: its certificate chain and key, checked to match.
    pub fn identity(
        &self,
        chain: &[CertificateDer<'static>],
        key: &PrivateKeyDer<'_>,
    ) -> Result<OpensslIdentity, OpensslError> {
        let mut certs = chain.iter();
        let leaf = certs.next().ok_or(OpensslError::NoCertificate)?;
        let cert = step("client certificate", X509::from_der(leaf))?;
        let chain = certs
            .map(|c| step("client chain", X509::from_der(c)))
            .collect::<Result<Vec<_>, _>>()?;
        let der = key.secret_der();
        let key = step(
            "client key",
            PKey::private_key_from_der(der).or_else(|_| PKey::private_key_from_pkcs8(der)),
        )?;
        let public = step("client certificate key", cert.public_key())?;
        if !public.public_eq(&key) {
            return Err(OpensslError::KeyMismatch);
        }
        Ok(OpensslIdentity { cert, chain, key })
    }

    fn build(&self) -> Result<SslConnector, OpensslError> {
        let mut b = step("context", SslConnector::builder(SslMethod::tls_client()))?;
        step("minimum version", b.set_min_proto_version(Some(self.min)))?;
        step("maximum version", b.set_max_proto_version(Some(self.max)))?;
        if let Some(list) = &self.cipher_list {
            step("cipher list", b.set_cipher_list(list))?;
        }
        if let Some(list) = &self.ciphersuites {
            step("TLS 1.3 cipher suites", b.set_ciphersuites(list))?;
        }
        if !self.alpn_wire.is_empty() {
            step("ALPN", b.set_alpn_protos(&self.alpn_wire))?;
        }
        b.set_options(SslOptions::NO_TICKET);
        b.set_session_cache_mode(SslSessionCacheMode::OFF);
        if self.verify {
            // Only the run's CA: SslConnector::builder also loaded the system store, replaced here.
            let mut store = step("trust store", X509StoreBuilder::new())?;
            for ca in &self.cas {
                let ca = step("server CA", X509::from_der(ca))?;
                step("server CA", store.add_cert(ca))?;
            }
            b.set_cert_store(store.build());
            b.set_verify(SslVerifyMode::PEER);
        } else {
            b.set_verify(SslVerifyMode::NONE);
        }
        Ok(b.build())
    }

    /// The trust anchors.
    pub fn cas(&self) -> Vec<CertificateDer<'static>> {
        self.cas.clone()
    }

    /// Whether server verification is on.
    pub fn verifies(&self) -> bool {
        self.verify
    }
}

fn ssl_version(v: TlsVersion) -> SslVersion {
    match v {
        TlsVersion::V1_2 => SslVersion::TLS1_2,
        TlsVersion::V1_3 => SslVersion::TLS1_3,
    }
}

/// A failed OpenSSL handshake with its failure class (the same classes as rustls's, see
/// `fleet::failure`), carried inside the `io::Error` the stream layer returns.
#[derive(Debug, thiserror::Error)]
#[error("{detail}")]
pub struct HandshakeFailed {
    /// Stable class, e.g. `tls: handshake failure`.
    pub class: &'static str,
    /// OpenSSL's error text (and the certificate verification result when that failed).
    pub detail: String,
}

/// OpenSSL `X509_V_ERR_*` codes the classes name (stable across OpenSSL versions).
mod verify_code {
    pub const UNABLE_TO_GET_ISSUER_CERT: i32 = 2;
    pub const CERT_HAS_EXPIRED: i32 = 10;
    pub const DEPTH_ZERO_SELF_SIGNED_CERT: i32 = 18;
    pub const SELF_SIGNED_CERT_IN_CHAIN: i32 = 19;
    pub const UNABLE_TO_GET_ISSUER_CERT_LOCALLY: i32 = 20;
    pub const UNABLE_TO_VERIFY_LEAF_SIGNATURE: i32 = 21;
    pub const HOSTNAME_MISMATCH: i32 = 62;
    pub const IP_ADDRESS_MISMATCH: i32 = 64;
}

impl HandshakeFailed {
    fn new(err: &openssl::ssl::Error, ssl: &openssl::ssl::SslRef) -> HandshakeFailed {
        use verify_code::*;
        let verify = ssl.verify_result();
        let mut detail = err.to_string();
        if let Some(io) = err.io_error() {
            if detail.is_empty() || !detail.contains(&io.to_string()) {
                detail = format!("{detail}: {io}");
            }
        }
        let class = if verify.as_raw() != 0 {
            detail = format!("server certificate: {}: {detail}", verify.error_string());
            match verify.as_raw() {
                HOSTNAME_MISMATCH | IP_ADDRESS_MISMATCH => "tls: server name mismatch",
                CERT_HAS_EXPIRED => "tls: server certificate expired",
                UNABLE_TO_GET_ISSUER_CERT
                | DEPTH_ZERO_SELF_SIGNED_CERT
                | SELF_SIGNED_CERT_IN_CHAIN
                | UNABLE_TO_GET_ISSUER_CERT_LOCALLY
                | UNABLE_TO_VERIFY_LEAF_SIGNATURE => "tls: server not trusted (unknown CA)",
                _ => "tls: bad server certificate",
            }
        } else if let Some(class) = class_in_text(&detail) {
            class
        } else if err.io_error().is_some() || detail.contains("unexpected eof") {
            "closed by broker"
        } else {
            "tls: handshake"
        };
        HandshakeFailed { class, detail }
    }
}

/// The failure class of an OpenSSL error text (its reason strings, e.g. `sslv3 alert handshake
/// failure`), for errors that reach the runner as text (rumqttc's v5 codec stringifies I/O
/// errors, and a TLS 1.3 client-certificate rejection arrives on the first read).
pub fn class_in_text(text: &str) -> Option<&'static str> {
    let t = text.to_ascii_lowercase();
    let table: [(&str, &'static str); 16] = [
        ("alert handshake failure", "tls: handshake failure"),
        ("no shared cipher", "tls: handshake failure"),
        ("no ciphers available", "tls: handshake failure"),
        ("no cipher match", "tls: handshake failure"),
        ("alert protocol version", "tls: protocol version"),
        ("unsupported protocol", "tls: protocol version"),
        ("wrong version number", "tls: protocol version"),
        ("no protocols available", "tls: protocol version"),
        ("alert unknown ca", "tls: unknown CA"),
        ("alert bad certificate", "tls: bad certificate"),
        ("alert unsupported certificate", "tls: bad certificate"),
        ("alert certificate expired", "tls: expired"),
        ("alert certificate required", "tls: certificate required"),
        ("alert certificate revoked", "tls: revoked"),
        ("alert access denied", "tls: access denied"),
        ("alert decrypt error", "tls: wrong key for certificate"),
    ];
    if let Some((_, class)) = table.iter().find(|(needle, _)| t.contains(needle)) {
        return Some(class);
    }
    t.contains("certificate verify failed")
        .then_some("tls: bad server certificate")
}

/// Runs the client handshake over `stream` for server `name` (SNI unless it is an IP address;
/// the certificate is checked against it when the connector verifies).
pub async fn connect<S>(
    connector: &SslConnector,
    identity: &OpensslIdentity,
    name: &str,
    stream: S,
) -> Result<SslStream<S>, HandshakeFailed>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let setup = |e: openssl::error::ErrorStack| HandshakeFailed {
        class: "tls: handshake",
        detail: format!("openssl set-up for {name:?}: {e}"),
    };
    let mut ssl = connector
        .configure()
        .and_then(|c| c.into_ssl(name))
        .map_err(setup)?;
    ssl.set_certificate(&identity.cert).map_err(setup)?;
    ssl.set_private_key(&identity.key).map_err(setup)?;
    for c in &identity.chain {
        ssl.add_chain_cert(c.clone()).map_err(setup)?;
    }
    let mut tls = SslStream::new(ssl, stream).map_err(setup)?;
    match Pin::new(&mut tls).connect().await {
        Ok(()) => Ok(tls),
        Err(e) => Err(HandshakeFailed::new(&e, tls.ssl())),
    }
}

/// [`connect`] as an `io::Result`, the typed failure inside (what the stream layer returns).
pub async fn connect_io<S>(
    connector: &SslConnector,
    identity: &OpensslIdentity,
    name: &str,
    stream: S,
) -> io::Result<SslStream<S>>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    connect(connector, identity, name, stream)
        .await
        .map_err(io::Error::other)
}

/// The negotiated key exchange group, named as rustls names them (`X25519`, `secp256r1`, ...);
/// `None` for static-RSA key exchange.
pub fn kx_group(ssl: &openssl::ssl::SslRef) -> Option<String> {
    let key = ssl.peer_tmp_key().ok()?;
    Some(match key.id() {
        Id::X25519 => "X25519".into(),
        Id::X448 => "X448".into(),
        Id::EC => {
            let nid = key.ec_key().ok()?.group().curve_name()?;
            match nid.short_name().ok()? {
                "prime256v1" => "secp256r1".into(),
                other => other.into(),
            }
        }
        Id::DH => "FFDHE".into(),
        other => format!("{other:?}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openssl_reasons_map_to_the_rustls_classes() {
        let e = "error:0A000410:SSL routines:ssl3_read_bytes:sslv3 alert handshake failure:../ssl/record/rec_layer_s3.c:1601:SSL alert number 40";
        assert_eq!(class_in_text(e), Some("tls: handshake failure"));
        assert_eq!(
            class_in_text("error:0A00042E:SSL routines::tlsv1 alert protocol version"),
            Some("tls: protocol version")
        );
        assert_eq!(
            class_in_text("ssl3_read_bytes:tlsv13 alert certificate required"),
            Some("tls: certificate required")
        );
        assert_eq!(class_in_text("connection reset"), None);
    }

    #[test]
    fn the_offer_follows_the_options() {
        let cbc = TlsOptions {
            suites: vec!["aes128-sha".into(), "ECDHE-ECDSA-AES256-SHA384".into()],
            alpn: vec!["mqtt".into()],
            ..TlsOptions::default()
        };
        let p = OpensslPlan::new(&cbc, &[], false);
        assert_eq!(
            p.cipher_list.as_deref(),
            Some("AES128-SHA:ECDHE-ECDSA-AES256-SHA384")
        );
        // Only TLS 1.2 suites named: TLS 1.3 is not offered.
        assert_eq!((p.min, p.max), (SslVersion::TLS1_2, SslVersion::TLS1_2));
        assert_eq!(p.ciphersuites, None);
        assert_eq!(p.alpn_wire, b"\x04mqtt");
        let v13 = TlsOptions {
            suites: vec!["TLS_AES_128_GCM_SHA256".into()],
            ..TlsOptions::default()
        };
        let p = OpensslPlan::new(&v13, &[], true);
        assert_eq!((p.min, p.max), (SslVersion::TLS1_3, SslVersion::TLS1_3));
        assert_eq!(p.ciphersuites.as_deref(), Some("TLS_AES_128_GCM_SHA256"));
        let default = OpensslPlan::new(&TlsOptions::default(), &[], true);
        assert_eq!(
            (default.min, default.max, default.cipher_list),
            (SslVersion::TLS1_2, SslVersion::TLS1_3, None)
        );
    }
}
