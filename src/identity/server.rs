//! A throwaway server identity for brokers started by thingswarm itself (the embedded broker,
//! mosquitto in tests and benches).
//!
//! Devices verify the broker as strictly as the broker verifies them, so even a broker that
//! lives for one test needs a certificate chain the client can check: a fresh CA (used for
//! nothing else) signs a server certificate for `localhost`, `127.0.0.1` and `::1`. Nothing here
//! is cached: a new CA per broker means a stale `server-ca.pem` can never vouch for a later one.

use std::path::{Path, PathBuf};

use rcgen::{
    CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
    KeyUsagePurpose, SanType,
};
use rustls_pki_types::CertificateDer;
use time::{Duration, OffsetDateTime};

use super::ca::{ca_params, random_u64};
use super::{fs, Algorithm, IdentityError};

/// The CA clients verify the server against (PEM).
pub const SERVER_CA: &str = "server-ca.pem";
/// The server certificate followed by the CA (PEM): what a broker presents.
pub const SERVER_CERT: &str = "server-cert.pem";
/// The server's private key (PKCS#8 PEM, 0600).
pub const SERVER_KEY: &str = "server-key.pem";

/// Where [`server_identity`] wrote a broker's TLS files, plus the CA in DER for rustls.
#[derive(Clone, Debug)]
pub struct ServerIdentity {
    /// The throwaway CA certificate (PEM): the trust anchor clients use for this broker.
    pub ca_pem: PathBuf,
    /// The server certificate followed by the CA certificate (PEM): the chain the broker sends.
    pub cert_pem: PathBuf,
    /// The server's private key (PKCS#8 PEM, mode 0600).
    pub key_pem: PathBuf,
    /// The CA certificate in DER, ready for a rustls `RootCertStore`.
    pub ca_der: CertificateDer<'static>,
}

/// Generates a fresh P-256 CA and a server certificate for `localhost`, `127.0.0.1` and `::1`,
/// writing [`SERVER_CA`], [`SERVER_CERT`] and [`SERVER_KEY`] into `dir` (created 0700; every file
/// 0600).
///
/// Why P-256: it is the cheapest handshake for the broker (the thing under test should not pay
/// for RSA signing unless a scenario asks for it), and every TLS stack accepts it.
pub fn server_identity(dir: &Path) -> Result<ServerIdentity, IdentityError> {
    server_identity_with(dir, Algorithm::EcdsaP256Sha256)
}

/// [`server_identity`] with another key type for the CA and server certificate: RSA for the
/// ECDHE-RSA and static-RSA cipher suites (which need an RSA server key), or P-384/P-521.
pub fn server_identity_with(
    dir: &Path,
    algorithm: Algorithm,
) -> Result<ServerIdentity, IdentityError> {
    fs::private_dir(dir)?;

    let ca_key = algorithm.generate_key()?;
    let ca_params = ca_params("thingswarm throwaway server CA", 0);
    let ca_cert = ca_params.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca_params, &ca_key);

    let key = algorithm.generate_key()?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "thingswarm");
    dn.push(DnType::CommonName, "localhost");
    params.distinguished_name = dn;
    params.subject_alt_names = vec![
        SanType::DnsName("localhost".to_string().try_into()?),
        SanType::IpAddress([127, 0, 0, 1].into()),
        SanType::IpAddress(std::net::Ipv6Addr::LOCALHOST.into()),
    ];
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = match algorithm {
        // Static-RSA key exchange encrypts the premaster secret to the server key.
        Algorithm::Rsa { .. } => vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ],
        _ => vec![KeyUsagePurpose::DigitalSignature],
    };
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.use_authority_key_identifier_extension = true;
    let now = OffsetDateTime::now_utc();
    params.not_before = now - Duration::hours(1);
    params.not_after = now + Duration::days(365);
    params.serial_number = Some(rcgen::SerialNumber::from(random_u64() >> 1));
    let cert = params.signed_by(&key, &issuer)?;

    let out = ServerIdentity {
        ca_pem: dir.join(SERVER_CA),
        cert_pem: dir.join(SERVER_CERT),
        key_pem: dir.join(SERVER_KEY),
        ca_der: ca_cert.der().clone(),
    };
    fs::write_private(&out.ca_pem, ca_cert.pem().as_bytes())?;
    let chain = format!("{}{}", cert.pem(), ca_cert.pem());
    fs::write_private(&out.cert_pem, chain.as_bytes())?;
    fs::write_private(&out.key_pem, key.serialize_pem().as_bytes())?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_a_chain_for_localhost() {
        let dir = tempfile::tempdir().unwrap();
        let id = server_identity(&dir.path().join("srv")).unwrap();
        let chain = std::fs::read_to_string(&id.cert_pem).unwrap();
        let pems = pem::parse_many(&chain).unwrap();
        assert_eq!(pems.len(), 2, "server certificate then CA");
        let (_, leaf) = x509_parser::parse_x509_certificate(pems[0].contents()).unwrap();
        assert!(leaf.subject().to_string().contains("CN=localhost"));
        let (_, ca) = x509_parser::parse_x509_certificate(&id.ca_der).unwrap();
        assert!(ca.is_ca());
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&id.key_pem).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
