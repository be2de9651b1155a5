//! AWS IoT fleet provisioning by claim: the MQTT API's messages and the emulated service.
//!
//! Why: a fleet provisioned by claim starts with one shared claim certificate; each device asks
//! the provisioning service for its own key and certificate (`CreateKeysAndCertificate`, or
//! `CreateCertificateFromCsr` with a key it made itself), registers a thing with a provisioning
//! template (`RegisterThing`) and reconnects with the new identity. Load-testing that flow
//! needs an answering service without AWS; this module is that service's logic, pure and
//! synchronous (the embedded broker calls it, see `src/broker/provisioning.rs`).
//!
//! ```text
//! device (claim cert)                         service
//!  SUBSCRIBE $aws/certificates/create/json/{accepted,rejected}
//!  SUBSCRIBE $aws/provisioning-templates/T/provision/json/{accepted,rejected}
//!  PUBLISH $aws/certificates/create/json {}  ->  key + cert signed by the project CA,
//!                                              ownership token (single use, 5 minutes)
//!        <- .../create/json/accepted {certificateId, certificatePem, privateKey, certificateOwnershipToken}
//!  PUBLISH $aws/provisioning-templates/T/provision/json {certificateOwnershipToken, parameters}
//!        <- .../provision/json/accepted {thingName, deviceConfiguration}
//!  reconnect with the new certificate, client ID = thingName
//! ```
//!
//! The payload shapes are AWS's documented ones; rejections use AWS's documented error shape
//! `{"statusCode", "errorCode", "errorMessage"}`. The emulated template names the thing after
//! its `SerialNumber` parameter, which must be the certificate's CN (the emulation issues the
//! certificate to the requesting client ID, so the broker's "CN = client ID" rule admits the
//! device under its thing name). Private keys and ownership tokens are never logged: the
//! [`fmt::Debug`] of every type carrying one redacts it.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::identity::ca::{hex, random_u64, Signer};
use crate::identity::device::{self, DeviceWindow};
use crate::identity::{Algorithm, Ca};

/// The CN of the shared claim certificate: the embedded broker lets a certificate with this CN
/// connect under any client ID (AWS lets a claim certificate connect under its policy), and
/// only to the provisioning topics.
pub const CLAIM_CN: &str = "thingswarm-claim";
/// The template the embedded service knows unless told otherwise.
pub const DEFAULT_TEMPLATE: &str = "thingswarm-fleet";
/// `CreateKeysAndCertificate` request topic.
pub const CREATE_KEYS: &str = "$aws/certificates/create/json";
/// `CreateCertificateFromCsr` request topic.
pub const CREATE_FROM_CSR: &str = "$aws/certificates/create-from-csr/json";
/// An ownership token from `CreateKeysAndCertificate` expires after this (AWS: five minutes).
pub const TOKEN_TTL_KEYS: Duration = Duration::from_secs(300);
/// An ownership token from `CreateCertificateFromCsr` expires after this (AWS: one hour).
pub const TOKEN_TTL_CSR: Duration = Duration::from_secs(3600);
/// Ownership tokens outstanding at most (unused ones expire; this bounds a flood).
const MAX_TOKENS: usize = 1_000_000;
/// Expired tokens are swept every this many certificates.
const SWEEP_EVERY: u64 = 4096;

/// Topic of `RegisterThing` for `template`.
pub fn register_topic(template: &str) -> String {
    format!("$aws/provisioning-templates/{template}/provision/json")
}

/// Whether `topic` is one of the provisioning API's (requests or answers): only the service
/// publishes answers there, and requests go to the service alone.
pub fn is_provisioning_topic(topic: &str) -> bool {
    topic.starts_with("$aws/certificates/") || topic.starts_with("$aws/provisioning-templates/")
}

/// Checks a provisioning template name as AWS IoT requires it (1-36 of letters, digits, `_`
/// and `-`), returning the one-line reason otherwise.
pub fn check_template_name(name: &str) -> Result<(), String> {
    let ok = (1..=36).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{name:?} is not a provisioning template name (expected 1-36 of a-z A-Z 0-9 _ -)"
        ))
    }
}

/// A request the service answers, recognised from its topic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Request<'a> {
    /// `$aws/certificates/create/json`.
    CreateKeys,
    /// `$aws/certificates/create-from-csr/json`.
    CreateFromCsr,
    /// `$aws/provisioning-templates/{template}/provision/json`.
    Register {
        /// The template named in the topic.
        template: &'a str,
    },
}

impl<'a> Request<'a> {
    /// The request `topic` carries; `None` for any other topic (answers included).
    pub fn parse(topic: &'a str) -> Option<Request<'a>> {
        match topic {
            CREATE_KEYS => Some(Request::CreateKeys),
            CREATE_FROM_CSR => Some(Request::CreateFromCsr),
            _ => {
                let template = topic
                    .strip_prefix("$aws/provisioning-templates/")?
                    .strip_suffix("/provision/json")?;
                (!template.is_empty() && !template.contains('/'))
                    .then_some(Request::Register { template })
            }
        }
    }

    /// The answer topic: the request topic + `/accepted` or `/rejected`.
    pub fn answer_topic(&self, accepted: bool) -> String {
        let suffix = if accepted { "accepted" } else { "rejected" };
        match self {
            Request::CreateKeys => format!("{CREATE_KEYS}/{suffix}"),
            Request::CreateFromCsr => format!("{CREATE_FROM_CSR}/{suffix}"),
            Request::Register { template } => format!("{}/{suffix}", register_topic(template)),
        }
    }
}

/// `CreateKeysAndCertificate` accepted.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateKeysAccepted {
    /// The certificate's ID (SHA-256 of its DER, hex, as AWS IoT forms it).
    pub certificate_id: String,
    /// The certificate, PEM.
    pub certificate_pem: String,
    /// Its private key, PEM.
    pub private_key: String,
    /// Proof of ownership for `RegisterThing`.
    pub certificate_ownership_token: String,
}

impl fmt::Debug for CreateKeysAccepted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CreateKeysAccepted")
            .field("certificate_id", &self.certificate_id)
            .field("private_key", &"<redacted>")
            .field("certificate_ownership_token", &"<redacted>")
            .finish_non_exhaustive()
    }
}

/// `CreateCertificateFromCsr` request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateFromCsrRequest {
    /// The CSR, PEM.
    pub certificate_signing_request: String,
}

/// `CreateCertificateFromCsr` accepted.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateFromCsrAccepted {
    /// The certificate's ID.
    pub certificate_id: String,
    /// The certificate, PEM.
    pub certificate_pem: String,
    /// Proof of ownership for `RegisterThing`.
    pub certificate_ownership_token: String,
}

impl fmt::Debug for CreateFromCsrAccepted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CreateFromCsrAccepted")
            .field("certificate_id", &self.certificate_id)
            .field("certificate_ownership_token", &"<redacted>")
            .finish_non_exhaustive()
    }
}

/// `RegisterThing` request.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RegisterRequest {
    /// The token from the create call.
    pub certificate_ownership_token: String,
    /// Template parameters (`SerialNumber` names the thing in the emulated template).
    #[serde(default)]
    pub parameters: BTreeMap<String, String>,
}

impl fmt::Debug for RegisterRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RegisterRequest")
            .field("certificate_ownership_token", &"<redacted>")
            .field("parameters", &self.parameters)
            .finish()
    }
}

/// `RegisterThing` accepted.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RegisterAccepted {
    /// The template's device configuration (empty in the emulated template).
    #[serde(default)]
    pub device_configuration: BTreeMap<String, String>,
    /// The thing registered; the device connects under it from now on.
    pub thing_name: String,
}

/// Every rejection, AWS's documented error shape.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ErrorResponse {
    /// HTTP-like status (400, 404, 500).
    pub status_code: u16,
    /// Error code, e.g. `InvalidCertificateOwnershipToken`.
    pub error_code: String,
    /// What went wrong, one line.
    pub error_message: String,
}

impl ErrorResponse {
    fn new(status_code: u16, error_code: &str, error_message: String) -> ErrorResponse {
        ErrorResponse {
            status_code,
            error_code: error_code.into(),
            error_message,
        }
    }
}

/// What the service publishes back, to the requesting client only.
#[derive(Clone, PartialEq, Eq)]
pub struct Answer {
    /// The answer topic (`.../accepted` or `.../rejected`).
    pub topic: String,
    /// JSON.
    pub payload: Vec<u8>,
    /// Whether it is an acceptance.
    pub accepted: bool,
}

impl fmt::Debug for Answer {
    // The payload may hold a private key or an ownership token.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Answer")
            .field("topic", &self.topic)
            .field("payload_bytes", &self.payload.len())
            .finish()
    }
}

/// A certificate created and not yet registered.
struct Pending {
    cn: String,
    expires: Instant,
}

/// The emulated provisioning service: issues certificates with the project CA, keeps the
/// outstanding ownership tokens, and knows a set of template names.
pub struct Provisioner {
    ca: Ca,
    algorithm: Algorithm,
    templates: Vec<String>,
    window: DeviceWindow,
    serial: AtomicU64,
    tokens: Mutex<HashMap<String, Pending>>,
    issued: AtomicU64,
    registered: AtomicU64,
}

impl fmt::Debug for Provisioner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Provisioner")
            .field("ca", &self.ca.subject())
            .field("templates", &self.templates)
            .finish_non_exhaustive()
    }
}

impl Provisioner {
    /// A service issuing `algorithm` keys signed by `ca`, valid `validity_days`, for the
    /// template names `templates` (each checked by [`check_template_name`]).
    pub fn new(
        ca: Ca,
        algorithm: Algorithm,
        templates: Vec<String>,
        validity_days: u32,
    ) -> Provisioner {
        let now = crate::identity::cache::unix_now();
        Provisioner {
            ca,
            algorithm,
            templates,
            window: DeviceWindow {
                not_before: now - 3600,
                not_after: now + i64::from(validity_days) * 86_400,
                serial_prefix: random_u64(),
            },
            serial: AtomicU64::new(0),
            tokens: Mutex::new(HashMap::new()),
            issued: AtomicU64::new(0),
            registered: AtomicU64::new(0),
        }
    }

    /// The template names it answers for.
    pub fn templates(&self) -> &[String] {
        &self.templates
    }

    /// The issuing CA.
    pub fn ca(&self) -> &Ca {
        &self.ca
    }

    /// Certificates issued and things registered so far.
    pub fn counts(&self) -> (u64, u64) {
        (self.issued.load(Relaxed), self.registered.load(Relaxed))
    }

    /// Answers `payload` published on `topic` by `client_id` at `now`; `None` when `topic` is
    /// not a provisioning request. Signing costs milliseconds: call it off the async threads.
    pub fn answer(
        &self,
        client_id: &str,
        topic: &str,
        payload: &[u8],
        now: Instant,
    ) -> Option<Answer> {
        let request = Request::parse(topic)?;
        let result = match request {
            Request::CreateKeys => self.create_keys(client_id, now),
            Request::CreateFromCsr => self.create_from_csr(client_id, payload, now),
            Request::Register { template } => self.register(template, payload, now),
        };
        let (accepted, payload) = match result {
            Ok(json) => (true, json),
            Err(e) => (
                false,
                serde_json::to_vec(&e).expect("an error response serializes"),
            ),
        };
        Some(Answer {
            topic: request.answer_topic(accepted),
            payload,
            accepted,
        })
    }

    fn create_keys(&self, client_id: &str, now: Instant) -> Result<Vec<u8>, ErrorResponse> {
        let index = self.serial.fetch_add(1, Relaxed);
        let issued = device::issue(
            self.ca.signer(),
            self.algorithm,
            &self.window,
            client_id,
            index,
        )
        .map_err(|e| internal(&e))?;
        let token = self.token(client_id, now + TOKEN_TTL_KEYS)?;
        self.issued.fetch_add(1, Relaxed);
        let accepted = CreateKeysAccepted {
            certificate_id: hex(&Sha256::digest(&issued.cert)),
            certificate_pem: crate::identity::cache::pem_cert(&issued.cert),
            private_key: crate::identity::cache::pem_key(&issued.key),
            certificate_ownership_token: token,
        };
        Ok(serde_json::to_vec(&accepted).expect("serializes"))
    }

    fn create_from_csr(
        &self,
        client_id: &str,
        payload: &[u8],
        now: Instant,
    ) -> Result<Vec<u8>, ErrorResponse> {
        let request: CreateFromCsrRequest = serde_json::from_slice(payload).map_err(|e| {
            ErrorResponse::new(
                400,
                "InvalidPayload",
                format!("expected {{\"certificateSigningRequest\": PEM}}: {e}"),
            )
        })?;
        let Signer::Rcgen(issuer) = self.ca.signer() else {
            return Err(ErrorResponse::new(
                400,
                "InvalidRequest",
                "this CA signs with OpenSSL (RSASSA-PSS or DSA); the emulated CreateCertificateFromCsr needs an ECDSA or PKCS#1 RSA CA".into(),
            ));
        };
        let mut csr =
            rcgen::CertificateSigningRequestParams::from_pem(&request.certificate_signing_request)
                .map_err(|e| {
                    ErrorResponse::new(
                        400,
                        "InvalidCertificateSigningRequest",
                        format!("the CSR is not a valid PEM certificate signing request ({e})"),
                    )
                })?;
        let index = self.serial.fetch_add(1, Relaxed);
        csr.params = device::params(client_id, Algorithm::default(), &self.window, index)
            .map_err(|e| internal(&e))?;
        let cert = csr.signed_by(issuer).map_err(|e| {
            ErrorResponse::new(
                400,
                "InvalidCertificateSigningRequest",
                format!("the CSR's key cannot be certified ({e})"),
            )
        })?;
        let token = self.token(client_id, now + TOKEN_TTL_CSR)?;
        self.issued.fetch_add(1, Relaxed);
        let accepted = CreateFromCsrAccepted {
            certificate_id: hex(&Sha256::digest(cert.der())),
            certificate_pem: cert.pem(),
            certificate_ownership_token: token,
        };
        Ok(serde_json::to_vec(&accepted).expect("serializes"))
    }

    fn register(
        &self,
        template: &str,
        payload: &[u8],
        now: Instant,
    ) -> Result<Vec<u8>, ErrorResponse> {
        if !self.templates.iter().any(|t| t == template) {
            return Err(ErrorResponse::new(
                404,
                "ResourceNotFoundException",
                format!("provisioning template {template:?} does not exist"),
            ));
        }
        let request: RegisterRequest = serde_json::from_slice(payload).map_err(|e| {
            ErrorResponse::new(
                400,
                "InvalidPayload",
                format!(
                    "expected {{\"certificateOwnershipToken\": ..., \"parameters\": {{...}}}}: {e}"
                ),
            )
        })?;
        let invalid_token = |why: &str| {
            ErrorResponse::new(
                400,
                "InvalidCertificateOwnershipToken",
                format!("certificate ownership token {why}"),
            )
        };
        let mut tokens = self.tokens.lock().expect("token lock");
        let Some(pending) = tokens.remove(&request.certificate_ownership_token) else {
            return Err(invalid_token("is unknown or already used"));
        };
        if pending.expires <= now {
            return Err(invalid_token("has expired"));
        }
        let thing = match request.parameters.get("SerialNumber") {
            Some(s) if *s == pending.cn => s.clone(),
            Some(s) => {
                let message = format!("parameter SerialNumber {s:?} does not name the certificate's subject {:?} (the emulated template names the thing after the certificate)", pending.cn);
                // A wrong parameter does not burn the token.
                tokens.insert(request.certificate_ownership_token, pending);
                return Err(ErrorResponse::new(400, "InvalidParameters", message));
            }
            None => {
                tokens.insert(request.certificate_ownership_token, pending);
                return Err(ErrorResponse::new(
                    400,
                    "InvalidParameters",
                    "parameter SerialNumber is missing (the emulated template names the thing after it)".into(),
                ));
            }
        };
        drop(tokens);
        self.registered.fetch_add(1, Relaxed);
        let accepted = RegisterAccepted {
            device_configuration: BTreeMap::new(),
            thing_name: thing,
        };
        Ok(serde_json::to_vec(&accepted).expect("serializes"))
    }

    /// A new ownership token for a certificate issued to `cn`, valid until `expires`.
    fn token(&self, cn: &str, expires: Instant) -> Result<String, ErrorResponse> {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes).map_err(|e| internal(&e))?;
        let token = hex(&bytes);
        let mut tokens = self.tokens.lock().expect("token lock");
        // Unused tokens expire: sweep them now and then, and whenever the map is full.
        if tokens.len() >= MAX_TOKENS || self.serial.load(Relaxed) % SWEEP_EVERY == 0 {
            let now = Instant::now();
            tokens.retain(|_, p| p.expires > now);
            if tokens.len() >= MAX_TOKENS {
                return Err(ErrorResponse::new(
                    429,
                    "ThrottlingException",
                    format!("{MAX_TOKENS} certificates are awaiting registration"),
                ));
            }
        }
        tokens.insert(
            token.clone(),
            Pending {
                cn: cn.to_string(),
                expires,
            },
        );
        Ok(token)
    }
}

fn internal(e: &dyn fmt::Display) -> ErrorResponse {
    ErrorResponse::new(
        500,
        "InternalFailure",
        format!("issuing the certificate failed: {e}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn provisioner() -> (tempfile::TempDir, Provisioner) {
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::generate(&dir.path().join("ca"), Algorithm::default(), false).unwrap();
        let p = Provisioner::new(ca, Algorithm::default(), vec![DEFAULT_TEMPLATE.into()], 1);
        (dir, p)
    }

    fn json(a: &Answer) -> serde_json::Value {
        serde_json::from_slice(&a.payload).unwrap()
    }

    #[test]
    fn topics_parse_and_answers_render() {
        assert_eq!(Request::parse(CREATE_KEYS), Some(Request::CreateKeys));
        assert_eq!(
            Request::parse(CREATE_FROM_CSR),
            Some(Request::CreateFromCsr)
        );
        let r = Request::parse("$aws/provisioning-templates/fleet-1/provision/json").unwrap();
        assert_eq!(
            r,
            Request::Register {
                template: "fleet-1"
            }
        );
        assert_eq!(
            r.answer_topic(false),
            "$aws/provisioning-templates/fleet-1/provision/json/rejected"
        );
        assert_eq!(
            Request::CreateKeys.answer_topic(true),
            "$aws/certificates/create/json/accepted"
        );
        for other in [
            "$aws/certificates/create/json/accepted",
            "$aws/provisioning-templates//provision/json",
            "$aws/provisioning-templates/a/b/provision/json",
            "$aws/provisioning-templates/t/provision/cbor",
            "dt/x",
        ] {
            assert_eq!(Request::parse(other), None, "{other}");
        }
        assert!(is_provisioning_topic(
            "$aws/certificates/create/json/accepted"
        ));
        assert!(!is_provisioning_topic("$aws/things/t/shadow/update"));
        assert!(check_template_name("thingswarm-fleet").is_ok());
        assert!(check_template_name("bad/name").is_err());
        assert!(check_template_name("").is_err());
    }

    #[test]
    fn documented_shapes_round_trip() {
        // AWS's documented request/response field names.
        let accepted: CreateKeysAccepted = serde_json::from_str(
            r#"{"certificateId":"id","certificatePem":"pem","privateKey":"SECRET-KEY","certificateOwnershipToken":"SECRET-TOKEN"}"#,
        )
        .unwrap();
        assert_eq!(accepted.private_key, "SECRET-KEY");
        assert!(!format!("{accepted:?}").contains("SECRET"), "{accepted:?}");
        let req = RegisterRequest {
            certificate_ownership_token: "SECRET-TOKEN".into(),
            parameters: [("SerialNumber".to_string(), "d-1".to_string())].into(),
        };
        assert_eq!(
            serde_json::to_value(&req).unwrap(),
            serde_json::json!({"certificateOwnershipToken": "SECRET-TOKEN", "parameters": {"SerialNumber": "d-1"}})
        );
        assert!(!format!("{req:?}").contains("SECRET"));
        let reg: RegisterAccepted =
            serde_json::from_str(r#"{"deviceConfiguration":{"a":"b"},"thingName":"t"}"#).unwrap();
        assert_eq!(reg.thing_name, "t");
        let err = ErrorResponse::new(400, "InvalidPayload", "m".into());
        assert_eq!(
            serde_json::to_value(&err).unwrap(),
            serde_json::json!({"statusCode": 400, "errorCode": "InvalidPayload", "errorMessage": "m"})
        );
    }

    #[test]
    fn create_then_register_once_with_a_certificate_for_the_requester() {
        let (_dir, p) = provisioner();
        let now = Instant::now();
        let a = p.answer("dev-1", CREATE_KEYS, b"{}", now).unwrap();
        assert!(a.accepted, "{}", String::from_utf8_lossy(&a.payload));
        assert_eq!(a.topic, "$aws/certificates/create/json/accepted");
        let keys: CreateKeysAccepted = serde_json::from_slice(&a.payload).unwrap();
        assert_eq!(keys.certificate_id.len(), 64);
        let der = pem::parse(&keys.certificate_pem).unwrap();
        let (_, cert) = x509_parser::parse_x509_certificate(der.contents()).unwrap();
        let cn = cert.subject().iter_common_name().next().unwrap();
        assert_eq!(cn.as_str().unwrap(), "dev-1");
        assert!(keys.private_key.starts_with("-----BEGIN PRIVATE KEY-----"));

        let topic = register_topic(DEFAULT_TEMPLATE);
        let body = serde_json::to_vec(&RegisterRequest {
            certificate_ownership_token: keys.certificate_ownership_token.clone(),
            parameters: [("SerialNumber".to_string(), "dev-1".to_string())].into(),
        })
        .unwrap();
        let r = p.answer("dev-1", &topic, &body, now).unwrap();
        assert!(r.accepted, "{}", String::from_utf8_lossy(&r.payload));
        assert_eq!(
            json(&r),
            serde_json::json!({"deviceConfiguration": {}, "thingName": "dev-1"})
        );
        // Single use.
        let again = p.answer("dev-1", &topic, &body, now).unwrap();
        assert!(!again.accepted);
        assert_eq!(again.topic, format!("{topic}/rejected"));
        let e = json(&again);
        assert_eq!(e["statusCode"], 400);
        assert_eq!(e["errorCode"], "InvalidCertificateOwnershipToken");
        assert_eq!(p.counts(), (1, 1));
    }

    #[test]
    fn tokens_expire_templates_are_checked_and_parameters_must_match() {
        let (_dir, p) = provisioner();
        let t0 = Instant::now();
        let token = |p: &Provisioner, id: &str| {
            let a = p.answer(id, CREATE_KEYS, b"{}", t0).unwrap();
            serde_json::from_slice::<CreateKeysAccepted>(&a.payload)
                .unwrap()
                .certificate_ownership_token
        };
        let body = |tok: &str, serial: Option<&str>| {
            let mut parameters = BTreeMap::new();
            if let Some(s) = serial {
                parameters.insert("SerialNumber".to_string(), s.to_string());
            }
            serde_json::to_vec(&RegisterRequest {
                certificate_ownership_token: tok.into(),
                parameters,
            })
            .unwrap()
        };
        let topic = register_topic(DEFAULT_TEMPLATE);
        let tok = token(&p, "a");
        // Unknown template: 404, the token is not spent.
        let r = p
            .answer("a", &register_topic("nope"), &body(&tok, Some("a")), t0)
            .unwrap();
        assert_eq!(json(&r)["statusCode"], 404);
        assert_eq!(json(&r)["errorCode"], "ResourceNotFoundException");
        // Wrong or missing SerialNumber: 400, not spent either.
        for serial in [Some("b"), None] {
            let r = p.answer("a", &topic, &body(&tok, serial), t0).unwrap();
            assert_eq!(json(&r)["errorCode"], "InvalidParameters", "{serial:?}");
        }
        // Expired after five minutes.
        let r = p
            .answer("a", &topic, &body(&tok, Some("a")), t0 + TOKEN_TTL_KEYS)
            .unwrap();
        assert_eq!(json(&r)["errorCode"], "InvalidCertificateOwnershipToken");
        assert!(json(&r)["errorMessage"]
            .as_str()
            .unwrap()
            .contains("expired"));
        // An unknown token and a payload that is not JSON.
        let r = p.answer("a", &topic, &body("00", Some("a")), t0).unwrap();
        assert_eq!(json(&r)["errorCode"], "InvalidCertificateOwnershipToken");
        let r = p.answer("a", &topic, b"not json", t0).unwrap();
        assert_eq!(json(&r)["errorCode"], "InvalidPayload");
        assert!(p.answer("a", "dt/a", b"{}", t0).is_none());
    }

    #[test]
    fn a_csr_is_signed_for_the_requester() {
        let (_dir, p) = provisioner();
        let key = rcgen::KeyPair::generate().unwrap();
        let csr = rcgen::CertificateParams::new(vec![])
            .unwrap()
            .serialize_request(&key)
            .unwrap()
            .pem()
            .unwrap();
        let body = serde_json::to_vec(&CreateFromCsrRequest {
            certificate_signing_request: csr,
        })
        .unwrap();
        let a = p
            .answer("dev-9", CREATE_FROM_CSR, &body, Instant::now())
            .unwrap();
        assert!(a.accepted, "{}", String::from_utf8_lossy(&a.payload));
        let got: CreateFromCsrAccepted = serde_json::from_slice(&a.payload).unwrap();
        let der = pem::parse(&got.certificate_pem).unwrap();
        let (_, cert) = x509_parser::parse_x509_certificate(der.contents()).unwrap();
        assert_eq!(
            cert.public_key().subject_public_key.data.as_ref(),
            rcgen::PublicKeyData::der_bytes(&key)
        );
        let bad = p
            .answer(
                "dev-9",
                CREATE_FROM_CSR,
                br#"{"certificateSigningRequest":"x"}"#,
                Instant::now(),
            )
            .unwrap();
        assert_eq!(json(&bad)["errorCode"], "InvalidCertificateSigningRequest");
    }
}
