//! Server-chain validation once per distinct chain, not once per connect.
//!
//! Why: every device of a run connects to the same broker, which presents the same chain.
//! Validating it (parsing, path building, a signature check per link, the name check) is a
//! fixed share of the client's CPU per mTLS connect (issue 10's budget is 0.25 ms). The
//! verdict depends only on the chain's bytes, the server name and the time, so a verdict for
//! an exact (chain, name) match is reused for [`REVALIDATE_AFTER`], after which the chain is
//! validated again (an expiry is noticed within that). What proves the server holds the
//! certificate's key, the handshake signature (TLS 1.3 CertificateVerify, the TLS 1.2
//! ServerKeyExchange signature), is still checked on every connect by the inner verifier, so
//! a server without the key cannot ride a cached verdict. Failures are never cached: each
//! failing connect is validated and reports its own reason.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

/// How long a chain's verdict is reused before it is validated again.
pub const REVALIDATE_AFTER: Duration = Duration::from_secs(60);
/// Distinct (chain, name) verdicts kept (a run talks to a handful of brokers).
const ENTRIES: usize = 16;

/// A verifier that validates each distinct chain once per [`REVALIDATE_AFTER`] and checks
/// handshake signatures every time (see the module documentation).
#[derive(Debug)]
pub struct CachedVerifier {
    inner: Arc<dyn ServerCertVerifier>,
    max_age: Duration,
    verified: Mutex<Vec<Verdict>>,
}

#[derive(Debug)]
struct Verdict {
    /// End entity first, then the intermediates, as presented.
    chain: Vec<Vec<u8>>,
    name: ServerName<'static>,
    at: Instant,
}

impl Verdict {
    fn matches(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        name: &ServerName<'_>,
    ) -> bool {
        self.chain.len() == intermediates.len() + 1
            && self.chain[0] == end_entity.as_ref()
            && self.chain[1..]
                .iter()
                .zip(intermediates)
                .all(|(a, b)| a.as_slice() == b.as_ref())
            && self.name == *name
    }
}

impl CachedVerifier {
    /// Caches `inner`'s chain verdicts for [`REVALIDATE_AFTER`].
    pub fn new(inner: Arc<dyn ServerCertVerifier>) -> CachedVerifier {
        CachedVerifier::with_max_age(inner, REVALIDATE_AFTER)
    }

    /// Caches `inner`'s chain verdicts for `max_age`.
    pub fn with_max_age(inner: Arc<dyn ServerCertVerifier>, max_age: Duration) -> CachedVerifier {
        CachedVerifier {
            inner,
            max_age,
            verified: Mutex::new(Vec::new()),
        }
    }
}

impl ServerCertVerifier for CachedVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        {
            let verified = self.verified.lock().unwrap_or_else(|e| e.into_inner());
            if verified.iter().any(|v| {
                v.at.elapsed() < self.max_age && v.matches(end_entity, intermediates, server_name)
            }) {
                return Ok(ServerCertVerified::assertion());
            }
        }
        let ok = self.inner.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        )?;
        let mut verified = self.verified.lock().unwrap_or_else(|e| e.into_inner());
        verified.retain(|v| {
            v.at.elapsed() < self.max_age && !v.matches(end_entity, intermediates, server_name)
        });
        if verified.len() >= ENTRIES {
            verified.remove(0);
        }
        verified.push(Verdict {
            chain: std::iter::once(end_entity)
                .chain(intermediates)
                .map(|c| c.as_ref().to_vec())
                .collect(),
            name: server_name.to_owned(),
            at: Instant::now(),
        });
        Ok(ok)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }

    fn requires_raw_public_keys(&self) -> bool {
        self.inner.requires_raw_public_keys()
    }

    fn root_hint_subjects(&self) -> Option<&[rustls::DistinguishedName]> {
        self.inner.root_hint_subjects()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering::Relaxed};

    /// Accepts chains whose end entity is not `b"bad"`, counting validations.
    #[derive(Debug, Default)]
    struct Counting(AtomicU32);

    impl ServerCertVerifier for Counting {
        fn verify_server_cert(
            &self,
            end_entity: &CertificateDer<'_>,
            _: &[CertificateDer<'_>],
            _: &ServerName<'_>,
            _: &[u8],
            _: UnixTime,
        ) -> Result<ServerCertVerified, rustls::Error> {
            self.0.fetch_add(1, Relaxed);
            match end_entity.as_ref() {
                b"bad" => Err(rustls::Error::InvalidCertificate(
                    rustls::CertificateError::UnknownIssuer,
                )),
                _ => Ok(ServerCertVerified::assertion()),
            }
        }
        fn verify_tls12_signature(
            &self,
            _: &[u8],
            _: &CertificateDer<'_>,
            _: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            Err(rustls::Error::General("signature".into()))
        }
        fn verify_tls13_signature(
            &self,
            _: &[u8],
            _: &CertificateDer<'_>,
            _: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            Err(rustls::Error::General("signature".into()))
        }
        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            vec![SignatureScheme::ECDSA_NISTP256_SHA256]
        }
    }

    fn check(v: &CachedVerifier, ee: &'static [u8], inter: &[&'static [u8]], name: &str) -> bool {
        let inter: Vec<CertificateDer<'_>> =
            inter.iter().map(|c| CertificateDer::from(*c)).collect();
        let name = ServerName::try_from(name.to_string()).unwrap();
        v.verify_server_cert(
            &CertificateDer::from(ee),
            &inter,
            &name,
            &[],
            UnixTime::now(),
        )
        .is_ok()
    }

    #[test]
    fn a_chain_is_validated_once_per_chain_and_name_and_failures_every_time() {
        let inner = Arc::new(Counting::default());
        let v = CachedVerifier::new(inner.clone());
        for _ in 0..3 {
            assert!(check(&v, b"ee", &[b"ca"], "broker"));
        }
        assert_eq!(inner.0.load(Relaxed), 1);
        // Another name, another intermediate, another end entity: each validated.
        assert!(check(&v, b"ee", &[b"ca"], "other"));
        assert!(check(&v, b"ee", &[b"ca2"], "broker"));
        assert!(check(&v, b"ee", &[], "broker"));
        assert!(check(&v, b"ee2", &[b"ca"], "broker"));
        assert_eq!(inner.0.load(Relaxed), 5);
        for _ in 0..2 {
            assert!(!check(&v, b"bad", &[b"ca"], "broker"));
        }
        assert_eq!(inner.0.load(Relaxed), 7);
    }

    #[test]
    fn verdicts_expire() {
        let inner = Arc::new(Counting::default());
        let v = CachedVerifier::with_max_age(inner.clone(), Duration::ZERO);
        assert!(check(&v, b"ee", &[], "broker"));
        assert!(check(&v, b"ee", &[], "broker"));
        assert_eq!(inner.0.load(Relaxed), 2);
    }
}
