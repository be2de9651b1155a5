//! Certificate authorities: a generated root (optionally root -> intermediate), or your own.
//!
//! Both paths end in the same [`Ca`]: the issuing certificate and key, the chain devices send
//! after their own certificate, and the root a broker must trust. A generated CA is written to
//! disk in the same PEM layout a bring-your-own CA is read from, so there is one loading path.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, PublicKeyData,
};
use rustls_pki_types::CertificateDer;
use sha2::{Digest, Sha256};
use time::{Duration, OffsetDateTime};

use super::{fs, Algorithm, IdentityError};

/// File names inside a CA directory written by [`Ca::generate`].
pub const CA_CERT: &str = "cert.pem";
/// The issuing key (0600).
pub const CA_KEY: &str = "key.pem";
/// The trust anchor to give brokers (`cafile` in mosquitto).
pub const CA_ROOT: &str = "root.pem";
/// The root's key when an intermediate issues devices (kept so the root can sign a server
/// certificate for a test broker).
pub const CA_ROOT_KEY: &str = "root-key.pem";

/// Who signs device certificates: rcgen, or OpenSSL for RSASSA-PSS and DSA.
// One per CA, never moved in a hot path: boxing rcgen's issuer would buy nothing.
#[allow(clippy::large_enum_variant)]
pub enum Signer {
    /// rcgen's issuer (ECDSA, PKCS#1 RSA).
    Rcgen(Issuer<'static, KeyPair>),
    /// OpenSSL (RSASSA-PSS, DSA_WITH_SHA256).
    Openssl(super::openssl_ca::OpensslSigner),
}

/// A loaded certificate authority, ready to sign device certificates.
pub struct Ca {
    signer: Signer,
    /// Issuing certificate first, then any intermediates up to (excluding) the root.
    chain: Vec<CertificateDer<'static>>,
    root: CertificateDer<'static>,
    subject: String,
    fingerprint: String,
}

impl Ca {
    /// Loads a CA from PEM files: `cert` holds the issuing certificate, optionally followed by
    /// its chain up to the root; `key` holds the issuing certificate's private key.
    ///
    /// Refuses a key that does not match the certificate and a certificate that is not a CA,
    /// because either would produce device certificates every broker rejects with "unknown CA".
    /// For RSA keys the signature digest follows `want` (SHA-256/384/512); EC keys sign with
    /// their curve's digest.
    pub fn load(cert: &Path, key: &Path, want: Algorithm) -> Result<Ca, IdentityError> {
        let chain = fs::read_pem_certs(cert, Some("a PEM CA certificate"))?;
        let first = &chain[0];
        let (_, x509) = x509_parser::parse_x509_certificate(first).map_err(|e| {
            IdentityError::bad_cert(cert, format!("not an X.509 certificate ({e})"))
        })?;
        let is_ca = matches!(x509.basic_constraints(), Ok(Some(bc)) if bc.value.ca);
        if !is_ca {
            return Err(IdentityError::NotCa {
                path: cert.to_path_buf(),
                subject: x509.subject().to_string(),
            });
        }
        if let Ok(Some(ku)) = x509.key_usage() {
            if !ku.value.key_cert_sign() {
                return Err(IdentityError::bad_cert(
                    cert,
                    "CA certificate's keyUsage lacks keyCertSign (expected a signing CA)",
                ));
            }
        }
        let key_pem = String::from_utf8(fs::read(key)?)
            .map_err(|_| IdentityError::bad_key(key, "not text (expected a PEM private key)"))?;
        let signer = match want.signature() {
            None => Signer::Openssl(super::openssl_ca::OpensslSigner::new(
                first,
                key_pem.as_bytes(),
                want,
                cert,
                key,
            )?),
            Some(signature) => {
                let signing_key = KeyPair::from_pem_and_sign_algo(&key_pem, signature)
                    .or_else(|_| KeyPair::from_pem(&key_pem))
                    .map_err(|e| {
                        IdentityError::bad_key(
                            key,
                            format!(
                                "unreadable private key ({e}); expected PEM PKCS#8, SEC1 or PKCS#1"
                            ),
                        )
                    })?;
                if signing_key.der_bytes() != x509.public_key().subject_public_key.data.as_ref() {
                    return Err(IdentityError::KeyMismatch {
                        cert: cert.to_path_buf(),
                        key: key.to_path_buf(),
                    });
                }
                Signer::Rcgen(Issuer::from_ca_cert_der(first, signing_key).map_err(|e| {
                    IdentityError::bad_cert(cert, format!("cannot sign with it ({e})"))
                })?)
            }
        };
        let subject = x509.subject().to_string();
        let fingerprint = hex(&Sha256::digest(first.as_ref()));
        let mut chain: Vec<_> = chain.into_iter().map(|c| c.into_owned()).collect();
        // The root is the last certificate; a self-signed root is not sent by clients.
        let root = chain.last().cloned().expect("non-empty");
        if chain.len() > 1 && is_self_signed(&root) {
            chain.pop();
        }
        Ok(Ca {
            signer,
            chain,
            root,
            subject,
            fingerprint,
        })
    }

    /// Creates a CA under `dir` (0700) for `algorithm`: a self-signed root, or with
    /// `intermediate` a root that signs an intermediate which then issues devices.
    pub fn generate(
        dir: &Path,
        algorithm: Algorithm,
        intermediate: bool,
    ) -> Result<Ca, IdentityError> {
        fs::private_dir(dir)?;
        // A random tag makes every generated CA's name unique: verifiers pick trust anchors by
        // subject name, and two CAs with one name make the wrong one fail signature checks
        // (alert DecryptError) instead of reporting an unknown CA.
        let tag = format!("{:08x}", random_u64() as u32);
        if algorithm.needs_openssl() {
            super::openssl_ca::generate_ca(dir, algorithm, intermediate, &tag)?;
            return Ca::load(&dir.join(CA_CERT), &dir.join(CA_KEY), algorithm);
        }
        let root_key = algorithm.generate_key()?;
        let path_len = if intermediate { 1 } else { 0 };
        let root_params = ca_params(&format!("thingswarm root CA ({algorithm}) {tag}"), path_len);
        let root_cert = root_params.self_signed(&root_key)?;
        fs::write_private(&dir.join(CA_ROOT), root_cert.pem().as_bytes())?;
        if intermediate {
            let root_issuer = Issuer::new(root_params, &root_key);
            let int_key = algorithm.generate_key()?;
            let int_params = ca_params(
                &format!("thingswarm intermediate CA ({algorithm}) {tag}"),
                0,
            );
            let int_cert = int_params.signed_by(&int_key, &root_issuer)?;
            let bundle = format!("{}{}", int_cert.pem(), root_cert.pem());
            fs::write_private(&dir.join(CA_ROOT_KEY), root_key.serialize_pem().as_bytes())?;
            fs::write_private(&dir.join(CA_KEY), int_key.serialize_pem().as_bytes())?;
            fs::write_private(&dir.join(CA_CERT), bundle.as_bytes())?;
        } else {
            fs::write_private(&dir.join(CA_KEY), root_key.serialize_pem().as_bytes())?;
            fs::write_private(&dir.join(CA_CERT), root_cert.pem().as_bytes())?;
        }
        Ca::load(&dir.join(CA_CERT), &dir.join(CA_KEY), algorithm)
    }

    /// Loads the generated CA for `algorithm` from the cache, creating it on first use.
    pub fn generated(
        certs_dir: &Path,
        algorithm: Algorithm,
        intermediate: bool,
    ) -> Result<Ca, IdentityError> {
        let dir = generated_dir(certs_dir, algorithm, intermediate);
        if dir.join(CA_CERT).exists() {
            Ca::load(&dir.join(CA_CERT), &dir.join(CA_KEY), algorithm)
        } else {
            Ca::generate(&dir, algorithm, intermediate)
        }
    }

    /// The signer for device certificates.
    pub fn signer(&self) -> &Signer {
        &self.signer
    }

    /// rcgen's issuer; `None` when OpenSSL signs (RSASSA-PSS, DSA).
    pub fn issuer(&self) -> Option<&Issuer<'static, KeyPair>> {
        match &self.signer {
            Signer::Rcgen(issuer) => Some(issuer),
            Signer::Openssl(_) => None,
        }
    }

    /// Certificates a device sends after its own: the issuing CA when it is an intermediate,
    /// nothing when the root signs devices directly.
    pub fn chain_to_send(&self) -> &[CertificateDer<'static>] {
        if self.chain.len() == 1 && self.chain[0] == self.root {
            &[]
        } else {
            &self.chain
        }
    }

    /// The trust anchor brokers need.
    pub fn root(&self) -> &CertificateDer<'static> {
        &self.root
    }

    /// The issuing certificate's subject, for listings.
    pub fn subject(&self) -> &str {
        &self.subject
    }

    /// SHA-256 of the issuing certificate: part of every fleet's cache key, so identities
    /// signed by another CA are never reused by mistake.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }
}

/// Where the generated CA for `algorithm` lives in a cache.
pub fn generated_dir(certs_dir: &Path, algorithm: Algorithm, intermediate: bool) -> PathBuf {
    let name = if intermediate {
        format!("{algorithm}-intermediate")
    } else {
        algorithm.to_string()
    };
    certs_dir.join("ca").join(name)
}

pub(crate) fn ca_params(cn: &str, path_len: u8) -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "thingswarm");
    dn.push(DnType::CommonName, cn);
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(path_len));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let now = OffsetDateTime::now_utc();
    params.not_before = now - Duration::hours(1);
    params.not_after = now + Duration::days(3650);
    params.serial_number = Some(rcgen::SerialNumber::from(random_u64() >> 1));
    params.use_authority_key_identifier_extension = true;
    params
}

fn is_self_signed(cert: &CertificateDer<'_>) -> bool {
    x509_parser::parse_x509_certificate(cert)
        .map(|(_, c)| c.subject().as_raw() == c.issuer().as_raw())
        .unwrap_or(false)
}

/// A random 64-bit value from the OS, for serial numbers.
pub(crate) fn random_u64() -> u64 {
    getrandom::u64().expect("the OS random source is available")
}

/// Lower-case hex of `bytes`.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
