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
        Failure { class, detail: detail.into() }
    }

    /// Classifies any error from the connection stack.
    pub fn classify(err: &(dyn StdError + 'static)) -> Failure {
        Failure { class: class_of(err), detail: chain_text(err) }
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
        Failure { class, detail: format!("CONNACK refused: {code}") }
    }
}

fn class_of(err: &(dyn StdError + 'static)) -> &'static str {
    let mut cur: Option<&(dyn StdError + 'static)> = Some(err);
    let mut io_kind = None;
    while let Some(e) = cur {
        if let Some(tls) = e.downcast_ref::<rustls::Error>() {
            return tls_class(tls);
        }
        if let Some(io) = e.downcast_ref::<io::Error>() {
            io_kind.get_or_insert(io.kind());
            // io::Error's inner error is not always exposed through source().
            if let Some(inner) = io.get_ref() {
                if let Some(tls) = inner.downcast_ref::<rustls::Error>() {
                    return tls_class(tls);
                }
            }
        }
        cur = e.source();
    }
    match io_kind {
        Some(io::ErrorKind::ConnectionRefused) => "tcp: refused",
        Some(io::ErrorKind::TimedOut) => "tcp: timeout",
        Some(io::ErrorKind::ConnectionReset) => "tcp: reset by peer",
        Some(io::ErrorKind::UnexpectedEof) => "closed by broker",
        Some(io::ErrorKind::AddrNotAvailable) => "tcp: no local port",
        Some(_) => "io error",
        None => "protocol error",
    }
}

fn tls_class(err: &rustls::Error) -> &'static str {
    use rustls::CertificateError as C;
    match err {
        rustls::Error::AlertReceived(alert) => match alert {
            AlertDescription::UnknownCA => "tls: unknown CA",
            AlertDescription::BadCertificate | AlertDescription::UnsupportedCertificate => "tls: bad certificate",
            AlertDescription::CertificateExpired => "tls: expired",
            AlertDescription::CertificateRequired => "tls: certificate required",
            AlertDescription::CertificateRevoked => "tls: revoked",
            AlertDescription::AccessDenied => "tls: access denied",
            AlertDescription::HandshakeFailure => "tls: handshake failure",
            AlertDescription::ProtocolVersion => "tls: protocol version",
            _ => "tls: alert",
        },
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
        let io = io::Error::new(io::ErrorKind::InvalidData, rustls::Error::AlertReceived(AlertDescription::UnknownCA));
        assert_eq!(Failure::classify(&io).class, "tls: unknown CA");
        let refused = io::Error::from(io::ErrorKind::ConnectionRefused);
        assert_eq!(Failure::classify(&refused).class, "tcp: refused");
    }

    #[test]
    fn connack_codes() {
        #[derive(Debug)]
        #[allow(dead_code)]
        enum Code {
            NotAuthorized,
            Banned,
        }
        assert_eq!(Failure::refused(Code::NotAuthorized).class, "mqtt: not authorized");
        assert_eq!(Failure::refused(Code::Banned).class, "mqtt: refused");
    }
}
