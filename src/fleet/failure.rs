//! Classifying device failures into the stable classes of DESIGN.md section 5.
//!
//! A class is a short `&'static str` (so counting one costs no allocation and reports group
//! them reliably); the full message is kept as an example. rumqttc wraps the interesting
//! errors at different depths (a TLS 1.3 client-certificate rejection surfaces late, as an I/O
//! error carrying the peer's alert), so classification walks the whole source chain.

use std::error::Error as StdError;
use std::io;

use rustls::AlertDescription;

/// A failed connect or a lost session: its class and a human message.
#[derive(Debug)]
pub struct Failure {
    /// Stable class, e.g. `tls: unknown CA`.
    pub class: &'static str,
    /// The error's message.
    pub detail: String,
}

impl Failure {
    /// A failure with a fixed class.
    pub fn new(class: &'static str, detail: impl Into<String>) -> Failure {
        Failure {
            class,
            detail: detail.into(),
        }
    }

    /// Classifies any error from the connection stack.
    pub fn classify(err: &(dyn StdError + 'static)) -> Failure {
        let detail = chain_text(err);
        let class = tls_in_chain(err)
            .or_else(|| alert_in_text(&detail))
            .or_else(|| crate::tls::openssl::class_in_text(&detail))
            .or_else(|| io_in_chain(err))
            .unwrap_or("protocol error");
        Failure { class, detail }
    }

    /// The same failure, named after what is wrong with the device's own certificate when
    /// the broker rejected the handshake and the certificate explains why.
    ///
    /// A broker's alert is coarse (OpenSSL sends `bad_certificate` for a certificate that is
    /// not yet valid, `unsupported_certificate` for a missing clientAuth purpose, and under TLS
    /// 1.3 the alert may be lost to a closed socket), but the device knows its certificate:
    /// checking its validity window and purpose locally names the cause exactly. Failures
    /// that do not look like a rejection of the client (refused TCP, server certificate
    /// problems, unknown CA, revocation) are returned unchanged.
    pub fn explained_by(self, cert: &[u8], now_unix: i64) -> Failure {
        let rejection = matches!(
            self.class,
            "tls: bad certificate"
                | "tls: expired"
                | "tls: handshake failure"
                | "tls: alert"
                | "tls: access denied"
                | "closed by broker"
                | "tcp: reset by peer"
        );
        match client_cert_problem(cert, now_unix) {
            Some(class) if rejection => Failure {
                class,
                detail: self.detail,
            },
            _ => self,
        }
    }

    /// A CONNACK refusal with its return/reason code.
    pub fn refused(code: impl std::fmt::Debug) -> Failure {
        let code = format!("{code:?}");
        let class = match code.as_str() {
            "NotAuthorized" => "mqtt: not authorized",
            "BadUserNamePassword" => "mqtt: bad username or password",
            "BadClientId" | "ClientIdentifierNotValid" => "mqtt: client id rejected",
            "ServiceUnavailable" | "ServerUnavailable" | "ServerBusy" => "mqtt: server unavailable",
            "QuotaExceeded" | "ConnectionRateExceeded" => "mqtt: quota exceeded",
            _ => "mqtt: refused",
        };
        Failure {
            class,
            detail: format!("CONNACK refused: {code}"),
        }
    }
}

/// What is wrong with a device certificate on its own, at `now_unix`: outside its validity
/// window, or restricted by extendedKeyUsage to purposes other than TLS client
/// authentication. `None` for a certificate that is fine (or that does not parse: the TLS
/// stack reports that itself).
pub fn client_cert_problem(cert: &[u8], now_unix: i64) -> Option<&'static str> {
    let (_, cert) = x509_parser::parse_x509_certificate(cert).ok()?;
    let validity = cert.validity();
    if now_unix < validity.not_before.timestamp() {
        return Some("tls: client certificate not yet valid");
    }
    if now_unix > validity.not_after.timestamp() {
        return Some("tls: client certificate expired");
    }
    if let Ok(Some(eku)) = cert.extended_key_usage() {
        if !eku.value.client_auth && !eku.value.any {
            return Some("tls: client certificate lacks clientAuth");
        }
    }
    None
}

/// The class of a typed rustls error anywhere in the source chain (io::Error's inner error is
/// not always exposed through `source()`, so look inside those too).
fn tls_in_chain(err: &(dyn StdError + 'static)) -> Option<&'static str> {
    let mut cur: Option<&(dyn StdError + 'static)> = Some(err);
    while let Some(e) = cur {
        let inner = e.downcast_ref::<io::Error>().and_then(|io| io.get_ref());
        let tls = e
            .downcast_ref::<rustls::Error>()
            .or_else(|| inner?.downcast_ref::<rustls::Error>());
        if let Some(tls) = tls {
            return Some(tls_class(tls));
        }
        // The OpenSSL backend's handshake failure, classified where it happened.
        let openssl = e
            .downcast_ref::<crate::tls::openssl::HandshakeFailed>()
            .or_else(|| inner?.downcast_ref::<crate::tls::openssl::HandshakeFailed>());
        if let Some(failed) = openssl {
            return Some(failed.class);
        }
        cur = e.source();
    }
    None
}

/// The class of the first I/O error in the source chain.
fn io_in_chain(err: &(dyn StdError + 'static)) -> Option<&'static str> {
    let mut cur: Option<&(dyn StdError + 'static)> = Some(err);
    while let Some(e) = cur {
        if let Some(io) = e.downcast_ref::<io::Error>() {
            return Some(match io.kind() {
                io::ErrorKind::ConnectionRefused => "tcp: refused",
                io::ErrorKind::TimedOut => "tcp: timeout",
                io::ErrorKind::ConnectionReset => "tcp: reset by peer",
                io::ErrorKind::UnexpectedEof => "closed by broker",
                io::ErrorKind::AddrNotAvailable => "tcp: no local port",
                _ => "io error",
            });
        }
        cur = e.source();
    }
    None
}

/// rumqttc's v5 codec turns I/O errors into strings, dropping the typed rustls alert: recover
/// it from rustls's wording ("received fatal alert: UnknownCA").
fn alert_in_text(text: &str) -> Option<&'static str> {
    let name = text.split("received fatal alert: ").nth(1)?;
    let name = name.split(|c: char| !c.is_ascii_alphanumeric()).next()?;
    let alert = [
        AlertDescription::UnknownCA,
        AlertDescription::BadCertificate,
        AlertDescription::UnsupportedCertificate,
        AlertDescription::CertificateExpired,
        AlertDescription::CertificateRequired,
        AlertDescription::CertificateRevoked,
        AlertDescription::AccessDenied,
        AlertDescription::HandshakeFailure,
        AlertDescription::ProtocolVersion,
        AlertDescription::DecryptError,
    ]
    .into_iter()
    .find(|a| format!("{a:?}") == name)?;
    Some(tls_class(&rustls::Error::AlertReceived(alert)))
}

fn tls_class(err: &rustls::Error) -> &'static str {
    use rustls::CertificateError as C;
    match err {
        rustls::Error::AlertReceived(alert) => match alert {
            AlertDescription::UnknownCA => "tls: unknown CA",
            AlertDescription::BadCertificate | AlertDescription::UnsupportedCertificate => {
                "tls: bad certificate"
            }
            AlertDescription::CertificateExpired => "tls: expired",
            AlertDescription::CertificateRequired => "tls: certificate required",
            AlertDescription::CertificateRevoked => "tls: revoked",
            AlertDescription::AccessDenied => "tls: access denied",
            AlertDescription::HandshakeFailure => "tls: handshake failure",
            AlertDescription::ProtocolVersion => "tls: protocol version",
            // The broker could not verify the CertificateVerify signature: the private key
            // does not belong to the certificate sent.
            AlertDescription::DecryptError => "tls: wrong key for certificate",
            _ => "tls: alert",
        },
        rustls::Error::InconsistentKeys(_) => "tls: wrong key for certificate",
        rustls::Error::InvalidCertificate(c) => match c {
            C::UnknownIssuer => "tls: server not trusted (unknown CA)",
            C::Expired | C::ExpiredContext { .. } => "tls: server certificate expired",
            C::NotValidForName | C::NotValidForNameContext { .. } => "tls: server name mismatch",
            _ => "tls: bad server certificate",
        },
        _ => "tls: handshake",
    }
}

fn chain_text(err: &(dyn StdError + 'static)) -> String {
    let mut text = err.to_string();
    let mut cur = err.source();
    while let Some(e) = cur {
        let s = e.to_string();
        if !text.contains(&s) {
            text.push_str(": ");
            text.push_str(&s);
        }
        cur = e.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_tls_alerts_inside_io_errors() {
        let io = io::Error::new(
            io::ErrorKind::InvalidData,
            rustls::Error::AlertReceived(AlertDescription::UnknownCA),
        );
        assert_eq!(Failure::classify(&io).class, "tls: unknown CA");
        let refused = io::Error::from(io::ErrorKind::ConnectionRefused);
        assert_eq!(Failure::classify(&refused).class, "tcp: refused");
    }

    #[test]
    fn recovers_alerts_from_stringified_errors() {
        let v5 = io::Error::other("Mqtt state: IO: received fatal alert: CertificateRequired");
        // io::Error::other with a string has no typed source: only the text tells.
        assert_eq!(Failure::classify(&v5).class, "tls: certificate required");
        let unknown = io::Error::other("received fatal alert: UnknownCA");
        assert_eq!(Failure::classify(&unknown).class, "tls: unknown CA");
        assert_eq!(alert_in_text("no alert here"), None);
    }

    fn cert(not_before: i64, not_after: i64, eku: rcgen::ExtendedKeyUsagePurpose) -> Vec<u8> {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut p = rcgen::CertificateParams::new(vec!["d-0".to_string()]).unwrap();
        p.not_before = time::OffsetDateTime::from_unix_timestamp(not_before).unwrap();
        p.not_after = time::OffsetDateTime::from_unix_timestamp(not_after).unwrap();
        p.extended_key_usages = vec![eku];
        p.self_signed(&key).unwrap().der().to_vec()
    }

    #[test]
    fn the_device_certificate_names_a_rejection() {
        use rcgen::ExtendedKeyUsagePurpose::{ClientAuth, ServerAuth};
        let now = 1_800_000_000;
        let day = 86_400;
        let expired = cert(now - 10 * day, now - day, ClientAuth);
        let early = cert(now + day, now + 10 * day, ClientAuth);
        let server_only = cert(now - day, now + day, ServerAuth);
        let fine = cert(now - day, now + day, ClientAuth);
        let rejected = || Failure::new("tls: bad certificate", "received fatal alert");
        assert_eq!(
            rejected().explained_by(&expired, now).class,
            "tls: client certificate expired"
        );
        assert_eq!(
            rejected().explained_by(&early, now).class,
            "tls: client certificate not yet valid"
        );
        assert_eq!(
            Failure::new("closed by broker", "eof")
                .explained_by(&server_only, now)
                .class,
            "tls: client certificate lacks clientAuth"
        );
        assert_eq!(
            rejected().explained_by(&fine, now).class,
            "tls: bad certificate"
        );
        // Causes the device's certificate cannot explain keep their class.
        for class in [
            "tls: unknown CA",
            "tls: revoked",
            "tcp: refused",
            "tls: server name mismatch",
        ] {
            assert_eq!(
                Failure::new(class, "x").explained_by(&expired, now).class,
                class
            );
        }
        assert_eq!(client_cert_problem(b"not DER", now), None);
    }

    #[test]
    fn a_key_that_is_not_the_certificates_is_named() {
        let wrong = rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch);
        assert_eq!(tls_class(&wrong), "tls: wrong key for certificate");
        let alert = io::Error::other("received fatal alert: DecryptError");
        assert_eq!(
            Failure::classify(&alert).class,
            "tls: wrong key for certificate"
        );
    }

    #[test]
    fn connack_codes() {
        #[derive(Debug)]
        #[allow(dead_code)]
        enum Code {
            NotAuthorized,
            Banned,
        }
        assert_eq!(
            Failure::refused(Code::NotAuthorized).class,
            "mqtt: not authorized"
        );
        assert_eq!(Failure::refused(Code::Banned).class, "mqtt: refused");
    }
}
