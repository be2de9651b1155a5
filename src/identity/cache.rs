//! The on-disk identity cache: one bundle file plus a small index per fleet.
//!
//! ```text
//! certs/
//!   ca/<algorithm>[-intermediate]/   generated CAs: cert.pem, key.pem (0600), root.pem
//!   fleets/<id>/                     one fleet = CA x algorithm x client-ID template x validity
//!     fleet.json                     parameters, validity window, serial prefix, count
//!     identities.bin                 records: u32 len, cert DER, u32 len, PKCS#8 key DER (0600)
//!     chain.pem, root.pem            what devices send after their cert; the trust anchor
//! ```
//!
//! Why a bundle: 100,000 devices as PEM pairs are 200,000 small files; one append-only file is
//! read in one syscall and split in place. Records are self-delimiting, so a crash while
//! appending loses at most the partial tail, which the next run truncates and regenerates.
//! Growing a fleet appends only the missing devices; changing any parameter changes the fleet
//! id, so it never mixes identities made differently.

use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use rayon::prelude::*;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::ca::{hex, random_u64};
use super::device::{self, DeviceWindow};
use super::{fs, Algorithm, Ca, IdentityError, CLIENT_ID_VARS};
use crate::template::Template;

const BUNDLE: &str = "identities.bin";
const META: &str = "fleet.json";
const CHAIN: &str = "chain.pem";
const ROOT: &str = "root.pem";
const MAGIC: &[u8] = b"thingswarm identities v1\n";
/// Devices signed per batch: large enough to keep both cores busy, small enough that progress
/// moves and memory stays flat.
const BATCH: u64 = 2048;
/// A fleet whose certificates expire within this margin is regenerated rather than reused.
const EXPIRY_MARGIN_SECS: i64 = 24 * 3600;

/// Where the CA that signs a fleet comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CaSource {
    /// The cache's generated CA for the fleet's algorithm (created on first use).
    Generated {
        /// Root -> intermediate -> devices instead of root -> devices.
        intermediate: bool,
    },
    /// A CA the user brings: certificate (optionally followed by its chain) and key, PEM.
    Files {
        /// The CA certificate file.
        cert: PathBuf,
        /// The CA private key file.
        key: PathBuf,
    },
}

/// What a fleet of identities is made of; two specs with equal fields share a cache entry.
#[derive(Clone, Debug)]
pub struct FleetSpec {
    /// Client ID / CN / SAN template, e.g. `sensor-{index:05}`.
    pub client_id: Template,
    /// Device key type and certificate signature.
    pub algorithm: Algorithm,
    /// Days from generation to notAfter.
    pub validity_days: u32,
    /// The signing CA.
    pub ca: CaSource,
}

impl FleetSpec {
    /// A spec with the defaults: P-256, 365 days, generated root CA.
    pub fn new(client_id: &str) -> Result<FleetSpec, IdentityError> {
        Ok(FleetSpec {
            client_id: Template::parse(client_id, CLIENT_ID_VARS)?,
            algorithm: Algorithm::default(),
            validity_days: 365,
            ca: CaSource::Generated {
                intermediate: false,
            },
        })
    }

    /// Loads (or, for a generated CA, creates) the CA this spec names.
    pub fn load_ca(&self, certs_dir: &Path) -> Result<Ca, IdentityError> {
        match &self.ca {
            CaSource::Generated { intermediate } => {
                Ca::generated(certs_dir, self.algorithm, *intermediate)
            }
            CaSource::Files { cert, key } => Ca::load(cert, key, self.algorithm),
        }
    }
}

/// The index of one fleet (`fleet.json`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FleetMeta {
    /// Cache id (directory name): a digest of CA fingerprint, algorithm, template, validity.
    pub id: String,
    /// The client-ID template.
    pub client_id: String,
    /// The algorithm's canonical name.
    pub algorithm: String,
    /// The signature on device certificates as the seed names it.
    pub signature: String,
    /// Validity in days.
    pub validity_days: u32,
    /// The issuing CA's subject.
    pub ca_subject: String,
    /// The issuing CA's SHA-256 fingerprint.
    pub ca_fingerprint: String,
    /// Validity window and serial prefix shared by every device.
    pub window: DeviceWindow,
    /// Devices in the bundle when the index was last written.
    pub count: u64,
}

/// What [`ensure`] did, for progress lines and notes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EnsureReport {
    /// Identities found in the cache and reused.
    pub reused: u64,
    /// Identities signed now.
    pub generated: u64,
    /// Why the cache was discarded, if it was (expired, corrupt, --force).
    pub regenerated_because: Option<String>,
    /// Wall time spent signing.
    pub elapsed: Duration,
}

/// A loaded fleet: the first `len()` identities of a cache entry, as DER in one buffer.
pub struct Fleet {
    dir: PathBuf,
    meta: FleetMeta,
    template: Template,
    data: Vec<u8>,
    records: Vec<Record>,
    chain: Vec<CertificateDer<'static>>,
    root: CertificateDer<'static>,
}

#[derive(Clone, Copy)]
struct Record {
    cert: (u32, u32),
    key: (u32, u32),
}

/// Makes sure the cache under `certs_dir` holds `count` identities for `spec`, generating only
/// what is missing (on all cores, with a progress bar on a terminal when it takes a while),
/// and returns the first `count` of them.
pub fn ensure(
    certs_dir: &Path,
    spec: &FleetSpec,
    count: u64,
    force: bool,
) -> Result<(Fleet, EnsureReport), IdentityError> {
    if count > 1 && !spec.client_id.uses("index") {
        return Err(IdentityError::SharedIdentity {
            template: spec.client_id.source().into(),
            count,
        });
    }
    let ca = spec.load_ca(certs_dir)?;
    let id = fleet_id(&ca, spec);
    let dir = certs_dir.join("fleets").join(&id);
    fs::private_dir(&dir)?;
    let now = unix_now();

    let cached = if force {
        Err("--force".to_string())
    } else {
        reusable(&dir, now)
    };
    let (mut fleet, regenerated_because) = match cached {
        Ok(Some(fleet)) => (fleet, None),
        other => {
            start_fleet(&dir, &new_meta(&id, spec, &ca, now), &ca)?;
            (Fleet::open(&dir)?, other.err())
        }
    };
    let have = fleet.len() as u64;
    let started = Instant::now();
    if have < count {
        append(
            &dir,
            spec,
            &ca,
            &fleet.meta.window,
            have..count,
            fleet.bundle_len(),
        )?;
        fleet = Fleet::open(&dir)?;
        fleet.meta.count = fleet.len() as u64;
        write_meta(&dir, &fleet.meta)?;
    }
    let report = EnsureReport {
        reused: have.min(count),
        generated: count.saturating_sub(have),
        regenerated_because,
        elapsed: started.elapsed(),
    };
    fleet.records.truncate(count as usize);
    Ok((fleet, report))
}

/// The cached fleet in `dir` if it can be reused; `Err` says why it cannot.
fn reusable(dir: &Path, now: i64) -> Result<Option<Fleet>, String> {
    if !dir.join(META).exists() {
        return Ok(None);
    }
    let fleet = Fleet::open(dir).map_err(|e| e.to_string())?;
    if fleet.meta.window.not_after - EXPIRY_MARGIN_SECS < now {
        return Err("certificates expire within a day".into());
    }
    Ok(Some(fleet))
}

/// How many identities for `spec` the cache already holds, without creating or signing
/// anything (a generated CA that does not exist yet means none). For `thingswarm check`.
pub fn cached_count(certs_dir: &Path, spec: &FleetSpec) -> Result<u64, IdentityError> {
    if let CaSource::Generated { intermediate } = spec.ca {
        let ca_dir = super::ca::generated_dir(certs_dir, spec.algorithm, intermediate);
        if !ca_dir.join(super::ca::CA_CERT).exists() {
            return Ok(0);
        }
    }
    let ca = spec.load_ca(certs_dir)?;
    let dir = certs_dir.join("fleets").join(fleet_id(&ca, spec));
    Ok(match reusable(&dir, unix_now()) {
        Ok(Some(fleet)) => fleet.len() as u64,
        _ => 0,
    })
}

/// Lists every fleet in a cache (unreadable entries are skipped with their error).
pub fn list(certs_dir: &Path) -> Vec<Result<FleetMeta, IdentityError>> {
    let Ok(entries) = std::fs::read_dir(certs_dir.join("fleets")) else {
        return Vec::new();
    };
    let mut out: Vec<_> = entries
        .flatten()
        .filter(|e| e.path().is_dir())
        .filter_map(|e| read_meta(&e.path()).transpose())
        .collect();
    out.sort_by(|a, b| match (a, b) {
        (Ok(a), Ok(b)) => (&a.client_id, &a.algorithm).cmp(&(&b.client_id, &b.algorithm)),
        _ => std::cmp::Ordering::Equal,
    });
    out
}

/// Finds the one fleet whose id starts with `prefix` (or the only fleet, with no prefix).
pub fn find(certs_dir: &Path, prefix: Option<&str>) -> Result<Fleet, IdentityError> {
    let fleets: Vec<FleetMeta> = list(certs_dir).into_iter().flatten().collect();
    let matching: Vec<&FleetMeta> = fleets
        .iter()
        .filter(|m| prefix.is_none_or(|p| m.id.starts_with(p)))
        .collect();
    let ids = || {
        fleets
            .iter()
            .map(|m| format!("{} ({})", m.id, m.client_id))
            .collect::<Vec<_>>()
            .join(", ")
    };
    match matching.as_slice() {
        [one] => Fleet::open(&certs_dir.join("fleets").join(&one.id)),
        [] => Err(IdentityError::cache(
            &certs_dir.join("fleets"),
            match prefix {
                Some(p) => format!("no fleet id starts with `{p}`; fleets: {}", ids()),
                None => "no fleets yet (create some with `thingswarm certs issue`)".into(),
            },
        )),
        _ => Err(IdentityError::cache(
            &certs_dir.join("fleets"),
            format!(
                "several fleets match; pass --fleet ID with one of: {}",
                ids()
            ),
        )),
    }
}

impl Fleet {
    /// Loads a fleet directory: index, bundle (one read), chain and root.
    pub fn open(dir: &Path) -> Result<Fleet, IdentityError> {
        let meta = read_meta(dir)?
            .ok_or_else(|| IdentityError::cache(&dir.join(META), "missing fleet index"))?;
        let template = Template::parse(&meta.client_id, CLIENT_ID_VARS)?;
        let (data, records) = scan_bundle(&dir.join(BUNDLE))?;
        let chain = fs::read_pem_certs(&dir.join(CHAIN), None)?;
        let root = fs::read_pem_certs(&dir.join(ROOT), None)?
            .pop()
            .ok_or_else(|| IdentityError::cache(&dir.join(ROOT), "no certificate"))?;
        Ok(Fleet {
            dir: dir.to_path_buf(),
            meta,
            template,
            data,
            records,
            chain,
            root,
        })
    }

    /// Bytes of the bundle up to the end of the last complete record.
    fn bundle_len(&self) -> u64 {
        self.records
            .last()
            .map_or(MAGIC.len() as u64, |r| u64::from(r.key.0 + r.key.1))
    }

    /// Keeps the certificate and key bytes of the devices `keep` selects and frees the rest
    /// (their certificate and key become empty): a process running one shard of a large
    /// fleet then holds its own devices' identities, not the whole bundle. Indices do not
    /// change. Only for a fleet that is complete: it is not grown afterwards.
    pub fn retain(&mut self, keep: impl Fn(usize) -> bool) {
        let kept: usize = (0..self.records.len())
            .filter(|&i| keep(i))
            .map(|i| (self.records[i].cert.1 + self.records[i].key.1) as usize)
            .sum();
        let mut data = Vec::with_capacity(kept);
        for (i, r) in self.records.iter_mut().enumerate() {
            let mut copy = |(start, len): (u32, u32)| -> (u32, u32) {
                let at = data.len() as u32;
                data.extend_from_slice(&self.data[start as usize..(start + len) as usize]);
                (at, len)
            };
            *r = match keep(i) {
                true => Record {
                    cert: copy(r.cert),
                    key: copy(r.key),
                },
                false => Record {
                    cert: (0, 0),
                    key: (0, 0),
                },
            };
        }
        self.data = data;
    }

    /// Number of identities loaded.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Whether no identity is loaded.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// The cache entry's index.
    pub fn meta(&self) -> &FleetMeta {
        &self.meta
    }

    /// The cache entry's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Client ID (and certificate CN) of device `index`.
    pub fn client_id(&self, index: usize) -> String {
        self.template.render_index(index as u64)
    }

    /// Device `index`'s certificate (DER), borrowed from the bundle.
    pub fn cert(&self, index: usize) -> CertificateDer<'_> {
        let (start, len) = self.records[index].cert;
        CertificateDer::from(&self.data[start as usize..(start + len) as usize])
    }

    /// Device `index`'s private key (PKCS#8 DER), borrowed from the bundle.
    pub fn key(&self, index: usize) -> PrivateKeyDer<'_> {
        let (start, len) = self.records[index].key;
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
            &self.data[start as usize..(start + len) as usize],
        ))
    }

    /// What device `index` sends: its certificate followed by any intermediates.
    pub fn cert_chain(&self, index: usize) -> Vec<CertificateDer<'static>> {
        let mut chain = Vec::with_capacity(1 + self.chain.len());
        chain.push(self.cert(index).into_owned());
        chain.extend(self.chain.iter().cloned());
        chain
    }

    /// Intermediates sent after each device certificate (empty when the root signs devices).
    pub fn intermediates(&self) -> &[CertificateDer<'static>] {
        &self.chain
    }

    /// The trust anchor a broker must be configured with.
    pub fn root(&self) -> &CertificateDer<'static> {
        &self.root
    }
}

fn fleet_id(ca: &Ca, spec: &FleetSpec) -> String {
    let key = format!(
        "v1|{}|{}|{}|{}",
        ca.fingerprint(),
        spec.algorithm,
        spec.client_id.source(),
        spec.validity_days
    );
    hex(&Sha256::digest(key.as_bytes())[..8])
}

fn new_meta(id: &str, spec: &FleetSpec, ca: &Ca, now: i64) -> FleetMeta {
    FleetMeta {
        id: id.to_string(),
        client_id: spec.client_id.source().to_string(),
        algorithm: spec.algorithm.to_string(),
        signature: ca_signature(ca),
        validity_days: spec.validity_days,
        ca_subject: ca.subject().to_string(),
        ca_fingerprint: ca.fingerprint().to_string(),
        window: DeviceWindow {
            not_before: now - 3600,
            not_after: now + i64::from(spec.validity_days) * 86_400,
            serial_prefix: random_u64(),
        },
        count: 0,
    }
}

/// The seed's name for the signature the CA's key actually makes (a brought RSA CA signs with
/// the requested digest; an EC CA with its curve's).
fn ca_signature(ca: &Ca) -> String {
    let issuer = match ca.signer() {
        super::ca::Signer::Openssl(s) => return s.seed_name().to_string(),
        super::ca::Signer::Rcgen(issuer) => issuer,
    };
    let alg = rcgen::PublicKeyData::algorithm(issuer.key());
    super::algorithm::ALL
        .iter()
        .find(|a| a.signature() == Some(alg))
        .map_or_else(|| format!("{alg:?}"), |a| a.seed_name().to_string())
}

/// Writes a fresh, empty fleet: index, chain, root, and a bundle holding only its header.
fn start_fleet(dir: &Path, meta: &FleetMeta, ca: &Ca) -> Result<(), IdentityError> {
    let pem =
        |certs: &[CertificateDer<'_>]| -> String { certs.iter().map(|c| pem_cert(c)).collect() };
    fs::write_private(&dir.join(CHAIN), pem(ca.chain_to_send()).as_bytes())?;
    fs::write_private(
        &dir.join(ROOT),
        pem(std::slice::from_ref(ca.root())).as_bytes(),
    )?;
    fs::write_private(&dir.join(BUNDLE), MAGIC)?;
    write_meta(dir, meta)
}

/// Signs devices `from..to` in parallel batches and appends them in index order.
fn append(
    dir: &Path,
    spec: &FleetSpec,
    ca: &Ca,
    window: &DeviceWindow,
    range: std::ops::Range<u64>,
    valid_len: u64,
) -> Result<(), IdentityError> {
    let (from, to) = (range.start, range.end);
    let path = dir.join(BUNDLE);
    let file = fs::append_private(&path)?;
    // Drop a partial record left by an interrupted run before appending after it.
    file.set_len(valid_len)
        .map_err(|e| IdentityError::io(&path, e))?;
    let mut out = BufWriter::with_capacity(1 << 20, file);
    let bar = progress_bar(spec.algorithm, to - from);
    let mut start = from;
    while start < to {
        let end = (start + BATCH).min(to);
        let batch = (start..end)
            .into_par_iter()
            .map(|i| {
                let client_id = spec.client_id.render_index(i);
                device::issue(ca.signer(), spec.algorithm, window, &client_id, i)
            })
            .collect::<Result<Vec<_>, _>>()?;
        for issued in &batch {
            for part in [&issued.cert, &issued.key] {
                out.write_all(&(part.len() as u32).to_le_bytes())
                    .and_then(|()| out.write_all(part))
                    .map_err(|e| IdentityError::io(&path, e))?;
            }
        }
        bar.inc(end - start);
        start = end;
    }
    let file = out
        .into_inner()
        .map_err(|e| IdentityError::io(&path, e.into_error()))?;
    file.sync_all().map_err(|e| IdentityError::io(&path, e))?;
    bar.finish_and_clear();
    Ok(())
}

/// A progress bar on stderr when generation is expected to take more than about a second and
/// stderr is a terminal (indicatif draws nothing otherwise).
fn progress_bar(algorithm: Algorithm, n: u64) -> ProgressBar {
    let cores = rayon::current_num_threads() as f64;
    let expected_secs = n as f64 / (algorithm.per_core_per_sec() * cores);
    if expected_secs < 1.0 {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(Some(n), ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template(
            "{msg} [{bar:30}] {pos}/{len} identities, {per_sec}, eta {eta}",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    bar.set_message(format!("signing {algorithm}"));
    bar
}

/// Reads a bundle and splits it into its complete records (a partial tail is ignored).
fn scan_bundle(path: &Path) -> Result<(Vec<u8>, Vec<Record>), IdentityError> {
    let data = fs::read(path)?;
    if !data.starts_with(MAGIC) {
        return Err(IdentityError::cache(
            path,
            "not a thingswarm identity bundle (bad header)",
        ));
    }
    let mut records = Vec::new();
    if data.len() > u32::MAX as usize {
        return Err(IdentityError::cache(path, "bundle larger than 4 GiB"));
    }
    let mut pos = MAGIC.len();
    let field = |pos: usize| -> Option<((u32, u32), usize)> {
        let len = u32::from_le_bytes(data.get(pos..pos + 4)?.try_into().ok()?);
        let start = pos + 4;
        let end = start.checked_add(len as usize)?;
        (end <= data.len()).then_some(((start as u32, len), end))
    };
    while let Some((cert, next)) = field(pos) {
        let Some((key, next)) = field(next) else {
            break;
        };
        records.push(Record { cert, key });
        pos = next;
    }
    Ok((data, records))
}

fn read_meta(dir: &Path) -> Result<Option<FleetMeta>, IdentityError> {
    let path = dir.join(META);
    if !path.exists() {
        return Ok(None);
    }
    let bytes = fs::read(&path)?;
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| IdentityError::cache(&path, format!("unreadable fleet index ({e})")))
}

fn write_meta(dir: &Path, meta: &FleetMeta) -> Result<(), IdentityError> {
    let json = serde_json::to_vec_pretty(meta).expect("meta serializes");
    fs::write_private(&dir.join(META), &json)
}

/// PEM text of a certificate.
pub fn pem_cert(der: &[u8]) -> String {
    pem_block("CERTIFICATE", der)
}

/// PEM text of a PKCS#8 private key.
pub fn pem_key(der: &[u8]) -> String {
    pem_block("PRIVATE KEY", der)
}

fn pem_block(label: &str, der: &[u8]) -> String {
    pem::encode_config(
        &pem::Pem::new(label, der.to_vec()),
        pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF),
    )
}

pub(crate) fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}
