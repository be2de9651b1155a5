//! The seed's signing algorithms rcgen cannot produce, made with OpenSSL: RSASSA-PSS (SHA-256)
//! and DSA_WITH_SHA256.
//!
//! rcgen has no RSASSA-PSS or DSA signature algorithm (and no way to name a foreign one), so
//! for these two the CA and the device certificates are built with OpenSSL's `X509Builder`.
//! An `RSA-PSS` key type makes OpenSSL sign with PSS (SHA-256, salt = digest length); a DSA key
//! signs with dsa_with_SHA256. The certificates carry what rcgen's do (CN, DNS SAN when the
//! client ID is a DNS name, keyUsage, clientAuth, key identifiers, the shared validity window
//! and serial scheme) and land in the same cache layout, so the rest of thingswarm does not
//! care who signed them. The TLS side picks the OpenSSL backend for these keys by itself
//! (rustls cannot sign with either).

use std::path::Path;

use openssl::asn1::{Asn1Integer, Asn1Time};
use openssl::bn::BigNum;
use openssl::dsa::Dsa;
use openssl::hash::MessageDigest;
use openssl::pkey::{Id, PKey, Private};
use openssl::pkey_ctx::PkeyCtx;
use openssl::x509::extension::{
    AuthorityKeyIdentifier, BasicConstraints, ExtendedKeyUsage, KeyUsage, SubjectAlternativeName,
    SubjectKeyIdentifier,
};
use openssl::x509::{X509Builder, X509NameBuilder, X509};

use super::algorithm::RsaBits;
use super::ca::{CA_CERT, CA_KEY, CA_ROOT, CA_ROOT_KEY};
use super::{fs, Algorithm, IdentityError};

/// A CA whose key only OpenSSL can sign with.
pub struct OpensslSigner {
    cert: X509,
    key: PKey<Private>,
    algorithm: Algorithm,
}

/// OpenSSL's failure, as an identity error.
fn ossl(what: &str) -> impl Fn(openssl::error::ErrorStack) -> IdentityError + '_ {
    move |e| IdentityError::Openssl(format!("{what}: {e}"))
}

impl OpensslSigner {
    /// The signer for a loaded CA certificate and key; the key must belong to the certificate
    /// and be of `algorithm`'s type.
    pub fn new(
        cert_der: &[u8],
        key_pem: &[u8],
        algorithm: Algorithm,
        cert_path: &Path,
        key_path: &Path,
    ) -> Result<OpensslSigner, IdentityError> {
        let cert = X509::from_der(cert_der)
            .map_err(|e| IdentityError::bad_cert(cert_path, format!("OpenSSL: {e}")))?;
        let key = PKey::private_key_from_pem(key_pem).map_err(|e| {
            IdentityError::bad_key(key_path, format!("unreadable private key ({e})"))
        })?;
        let want = key_id(algorithm);
        if key.id() != want {
            return Err(IdentityError::bad_key(
                key_path,
                format!(
                    "a {:?} key cannot sign {} (expected a {want:?} key)",
                    key.id(),
                    algorithm.seed_name()
                ),
            ));
        }
        let matches = cert
            .public_key()
            .map(|p| p.public_eq(&key))
            .unwrap_or(false);
        if !matches {
            return Err(IdentityError::KeyMismatch {
                cert: cert_path.to_path_buf(),
                key: key_path.to_path_buf(),
            });
        }
        Ok(OpensslSigner {
            cert,
            key,
            algorithm,
        })
    }

    /// The seed's name for the signature this CA makes.
    pub fn seed_name(&self) -> &'static str {
        self.algorithm.seed_name()
    }

    /// A fresh device key and certificate (DER, and PKCS#8 DER for the key).
    pub fn issue(
        &self,
        client_id: &str,
        dns_san: bool,
        serial: &[u8],
        not_before: i64,
        not_after: i64,
    ) -> Result<(Vec<u8>, Vec<u8>), IdentityError> {
        // DSA device keys share the CA's domain parameters: generating parameters takes
        // seconds, a key from existing ones one modular exponentiation.
        let key = generate_key(self.algorithm, Some(&self.key))?;
        let mut b = X509Builder::new().map_err(ossl("certificate"))?;
        b.set_version(2).map_err(ossl("version"))?;
        let serial = BigNum::from_slice(serial)
            .and_then(|n| Asn1Integer::from_bn(&n))
            .map_err(ossl("serial"))?;
        b.set_serial_number(&serial).map_err(ossl("serial"))?;
        let mut name = X509NameBuilder::new().map_err(ossl("subject"))?;
        name.append_entry_by_text("CN", client_id)
            .map_err(ossl("subject CN"))?;
        let name = name.build();
        b.set_subject_name(&name).map_err(ossl("subject"))?;
        b.set_issuer_name(self.cert.subject_name())
            .map_err(ossl("issuer"))?;
        b.set_pubkey(&key).map_err(ossl("public key"))?;
        let time = |t: i64| Asn1Time::from_unix(t as libc::time_t).map_err(ossl("validity"));
        let (nb, na) = (time(not_before)?, time(not_after)?);
        b.set_not_before(&nb).map_err(ossl("notBefore"))?;
        b.set_not_after(&na).map_err(ossl("notAfter"))?;
        let ext = |r: Result<openssl::x509::X509Extension, openssl::error::ErrorStack>| {
            r.map_err(ossl("extension"))
        };
        b.append_extension(ext(BasicConstraints::new().critical().build())?)
            .map_err(ossl("basicConstraints"))?;
        let mut ku = KeyUsage::new();
        ku.critical().digital_signature();
        b.append_extension(ext(ku.build())?)
            .map_err(ossl("keyUsage"))?;
        b.append_extension(ext(ExtendedKeyUsage::new().client_auth().build())?)
            .map_err(ossl("extendedKeyUsage"))?;
        let ctx = b.x509v3_context(Some(&self.cert), None);
        let ski = ext(SubjectKeyIdentifier::new().build(&ctx))?;
        let aki = ext(AuthorityKeyIdentifier::new().keyid(true).build(&ctx))?;
        let san = match dns_san {
            true => Some(ext(SubjectAlternativeName::new()
                .dns(client_id)
                .build(&ctx))?),
            false => None,
        };
        b.append_extension(ski)
            .map_err(ossl("subjectKeyIdentifier"))?;
        b.append_extension(aki)
            .map_err(ossl("authorityKeyIdentifier"))?;
        if let Some(san) = san {
            b.append_extension(san).map_err(ossl("subjectAltName"))?;
        }
        b.sign(&self.key, MessageDigest::sha256())
            .map_err(ossl("signing"))?;
        let cert = b.build().to_der().map_err(ossl("certificate DER"))?;
        let key = key.private_key_to_pkcs8().map_err(ossl("key PKCS#8"))?;
        Ok((cert, key))
    }
}

/// The OpenSSL key type of an OpenSSL-only algorithm.
fn key_id(algorithm: Algorithm) -> Id {
    match algorithm {
        Algorithm::Dsa => Id::DSA,
        _ => Id::RSA_PSS,
    }
}

/// A new key: RSA-PSS of the algorithm's size, or DSA-2048 (with fresh parameters unless
/// `dsa_params_from` gives a key whose parameters to share).
fn generate_key(
    algorithm: Algorithm,
    dsa_params_from: Option<&PKey<Private>>,
) -> Result<PKey<Private>, IdentityError> {
    match algorithm {
        Algorithm::RsaPss { bits } => {
            let bits = match bits {
                RsaBits::B2048 => 2048,
                RsaBits::B3072 => 3072,
                RsaBits::B4096 => 4096,
            };
            let mut ctx = PkeyCtx::new_id(Id::RSA_PSS).map_err(ossl("RSA-PSS context"))?;
            ctx.keygen_init().map_err(ossl("RSA-PSS keygen"))?;
            ctx.set_rsa_keygen_bits(bits)
                .map_err(ossl("RSA-PSS key size"))?;
            ctx.keygen().map_err(ossl("RSA-PSS keygen"))
        }
        Algorithm::Dsa => {
            let dsa = match dsa_params_from {
                Some(k) => {
                    let d = k.dsa().map_err(ossl("DSA key"))?;
                    Dsa::from_pqg(
                        d.p().to_owned().map_err(ossl("DSA p"))?,
                        d.q().to_owned().map_err(ossl("DSA q"))?,
                        d.g().to_owned().map_err(ossl("DSA g"))?,
                    )
                    .and_then(|p| p.generate_key())
                    .map_err(ossl("DSA key"))?
                }
                None => Dsa::generate(2048).map_err(ossl("DSA parameters and key"))?,
            };
            PKey::from_dsa(dsa).map_err(ossl("DSA key"))
        }
        other => Err(IdentityError::Openssl(format!(
            "{other} is signed by rcgen, not OpenSSL"
        ))),
    }
}

/// A CA certificate for `key`, signed by `issuer` (self-signed when `None`).
fn ca_cert(
    cn: &str,
    key: &PKey<Private>,
    issuer: Option<(&X509, &PKey<Private>)>,
    path_len: u32,
) -> Result<X509, IdentityError> {
    let mut b = X509Builder::new().map_err(ossl("CA certificate"))?;
    b.set_version(2).map_err(ossl("version"))?;
    let mut serial = BigNum::new().map_err(ossl("serial"))?;
    serial
        .rand(120, openssl::bn::MsbOption::MAYBE_ZERO, false)
        .map_err(ossl("serial"))?;
    let serial = Asn1Integer::from_bn(&serial).map_err(ossl("serial"))?;
    b.set_serial_number(&serial).map_err(ossl("serial"))?;
    let mut name = X509NameBuilder::new().map_err(ossl("subject"))?;
    name.append_entry_by_text("O", "thingswarm")
        .and_then(|()| name.append_entry_by_text("CN", cn))
        .map_err(ossl("subject"))?;
    let name = name.build();
    b.set_subject_name(&name).map_err(ossl("subject"))?;
    b.set_issuer_name(issuer.map_or(name.as_ref(), |(c, _)| c.subject_name()))
        .map_err(ossl("issuer"))?;
    b.set_pubkey(key).map_err(ossl("public key"))?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let time = |t: i64| Asn1Time::from_unix(t as libc::time_t).map_err(ossl("validity"));
    let (nb, na) = (time(now - 3600)?, time(now + 10 * 365 * 86_400)?);
    b.set_not_before(&nb).map_err(ossl("notBefore"))?;
    b.set_not_after(&na).map_err(ossl("notAfter"))?;
    let ext = |r: Result<openssl::x509::X509Extension, openssl::error::ErrorStack>| {
        r.map_err(ossl("extension"))
    };
    b.append_extension(ext(BasicConstraints::new()
        .critical()
        .ca()
        .pathlen(path_len)
        .build())?)
        .map_err(ossl("basicConstraints"))?;
    let mut ku = KeyUsage::new();
    ku.critical().key_cert_sign().crl_sign().digital_signature();
    b.append_extension(ext(ku.build())?)
        .map_err(ossl("keyUsage"))?;
    let ski = ext(SubjectKeyIdentifier::new().build(&b.x509v3_context(None, None)))?;
    b.append_extension(ski)
        .map_err(ossl("subjectKeyIdentifier"))?;
    let signer = issuer.map_or(key, |(_, k)| k);
    b.sign(signer, MessageDigest::sha256())
        .map_err(ossl("signing"))?;
    Ok(b.build())
}

/// Writes a generated CA for an OpenSSL-only algorithm under `dir` in the layout
/// [`super::Ca::generate`] uses (cert.pem, key.pem, root.pem; root-key.pem with an
/// intermediate). `tag` makes the CA names unique.
pub fn generate_ca(
    dir: &Path,
    algorithm: Algorithm,
    intermediate: bool,
    tag: &str,
) -> Result<(), IdentityError> {
    let root_key = generate_key(algorithm, None)?;
    let root = ca_cert(
        &format!("thingswarm root CA ({algorithm}) {tag}"),
        &root_key,
        None,
        u32::from(intermediate),
    )?;
    let pem_cert = |c: &X509| c.to_pem().map_err(ossl("CA PEM"));
    let pem_key = |k: &PKey<Private>| k.private_key_to_pem_pkcs8().map_err(ossl("CA key PEM"));
    fs::write_private(&dir.join(CA_ROOT), &pem_cert(&root)?)?;
    if intermediate {
        let int_key = generate_key(algorithm, Some(&root_key))?;
        let int = ca_cert(
            &format!("thingswarm intermediate CA ({algorithm}) {tag}"),
            &int_key,
            Some((&root, &root_key)),
            0,
        )?;
        let mut bundle = pem_cert(&int)?;
        bundle.extend_from_slice(&pem_cert(&root)?);
        fs::write_private(&dir.join(CA_ROOT_KEY), &pem_key(&root_key)?)?;
        fs::write_private(&dir.join(CA_KEY), &pem_key(&int_key)?)?;
        fs::write_private(&dir.join(CA_CERT), &bundle)?;
    } else {
        fs::write_private(&dir.join(CA_KEY), &pem_key(&root_key)?)?;
        fs::write_private(&dir.join(CA_CERT), &pem_cert(&root)?)?;
    }
    Ok(())
}
