//! One device certificate: CN and SAN from the client ID, clientAuth, a unique serial.

use rcgen::{
    CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, KeyUsagePurpose,
    SanType, SerialNumber,
};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::ca::Signer;
use super::{Algorithm, IdentityError};

/// The validity window and serial prefix every certificate of one fleet shares, fixed when the
/// fleet is first generated so devices added later match the earlier ones.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct DeviceWindow {
    /// notBefore, Unix seconds (an hour before generation, for clock skew).
    pub not_before: i64,
    /// notAfter, Unix seconds.
    pub not_after: i64,
    /// Random high half of every serial; the low half is the device index, so serials are
    /// unique within a fleet by construction and across fleets with overwhelming probability.
    pub serial_prefix: u64,
}

/// A freshly issued device: certificate DER and PKCS#8 private key DER.
pub struct Issued {
    /// The device certificate (DER).
    pub cert: Vec<u8>,
    /// The device private key (PKCS#8 DER).
    pub key: Vec<u8>,
}

/// Issues the certificate for `client_id` (device number `index`), with rcgen or, for
/// RSASSA-PSS and DSA, OpenSSL.
pub fn issue(
    signer: &Signer,
    algorithm: Algorithm,
    window: &DeviceWindow,
    client_id: &str,
    index: u64,
) -> Result<Issued, IdentityError> {
    let issuer = match signer {
        Signer::Rcgen(issuer) => issuer,
        Signer::Openssl(s) => {
            let serial = serial(window.serial_prefix, index).to_bytes();
            let (cert, key) = s.issue(
                client_id,
                is_dns_name(client_id),
                &serial,
                window.not_before,
                window.not_after,
            )?;
            return Ok(Issued { cert, key });
        }
    };
    let key = algorithm.generate_key()?;
    let params = params(client_id, algorithm, window, index)?;
    let cert = params.signed_by(&key, issuer)?;
    Ok(Issued {
        cert: cert.der().to_vec(),
        key: key.serialize_der(),
    })
}

/// The certificate parameters of device `client_id` (number `index`): CN and DNS SAN from the
/// client ID, clientAuth, the fleet's window and a serial unique in it. Shared by fleet
/// issuing and the emulated fleet provisioning service (which signs a device's own CSR).
pub fn params(
    client_id: &str,
    algorithm: Algorithm,
    window: &DeviceWindow,
    index: u64,
) -> Result<CertificateParams, IdentityError> {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, client_id);
    params.distinguished_name = dn;
    if is_dns_name(client_id) {
        if let Ok(name) = client_id.to_string().try_into() {
            params.subject_alt_names = vec![SanType::DnsName(name)];
        }
    }
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = match algorithm {
        // keyEncipherment lets RSA device keys serve the seed's static-RSA suites too.
        Algorithm::Rsa { .. } => vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ],
        _ => vec![KeyUsagePurpose::DigitalSignature],
    };
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    params.use_authority_key_identifier_extension = true;
    // The window comes from the cache's fleet.json: a file, so possibly damaged.
    let time = |t: i64| {
        OffsetDateTime::from_unix_timestamp(t).map_err(|_| IdentityError::BadWindow {
            not_before: window.not_before,
            not_after: window.not_after,
        })
    };
    params.not_before = time(window.not_before)?;
    params.not_after = time(window.not_after)?;
    params.serial_number = Some(serial(window.serial_prefix, index));
    Ok(params)
}

/// prefix (top bit cleared so the DER INTEGER stays positive, next bit set so it keeps its
/// length) followed by the big-endian index: 16 bytes, well within RFC 5280's 20.
fn serial(prefix: u64, index: u64) -> SerialNumber {
    let high = (prefix & !(1 << 63)) | (1 << 62);
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&high.to_be_bytes());
    bytes[8..].copy_from_slice(&index.to_be_bytes());
    SerialNumber::from_slice(&bytes)
}

/// A client ID usable as a DNS SAN (letters, digits, hyphens, dots; labels of 1-63 chars).
/// Other client IDs still get their CN; brokers map identities by CN.
fn is_dns_name(s: &str) -> bool {
    s.len() <= 253
        && s.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{Issuer, KeyPair};

    #[test]
    fn a_damaged_cached_window_is_an_error_not_a_panic() {
        let ca_key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::default();
        params.is_ca = IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let issuer = Signer::Rcgen(Issuer::new(params, ca_key));
        let window = DeviceWindow {
            not_before: i64::MAX,
            not_after: i64::MIN,
            serial_prefix: 1,
        };
        let err = issue(&issuer, Algorithm::default(), &window, "d-0", 0)
            .err()
            .expect("out-of-range window is refused");
        assert!(matches!(err, IdentityError::BadWindow { .. }), "{err}");
        assert!(err.to_string().contains("--force"), "{err}");
    }

    #[test]
    fn serials_are_positive_fixed_length_and_index_distinct() {
        let a = serial(u64::MAX, 1).to_bytes();
        let b = serial(u64::MAX, 2).to_bytes();
        assert_eq!(a.len(), 16);
        assert!(a[0] & 0x80 == 0 && a[0] & 0x40 != 0);
        assert_ne!(a, b);
        assert_eq!(serial(0, 7).to_bytes()[0], 0x40);
    }

    #[test]
    fn dns_names() {
        assert!(is_dns_name("sensor-00001"));
        assert!(is_dns_name("a.b-c.d"));
        assert!(!is_dns_name("dev_1"));
        assert!(!is_dns_name("a/b"));
        assert!(!is_dns_name("-a"));
        assert!(!is_dns_name(""));
    }
}
