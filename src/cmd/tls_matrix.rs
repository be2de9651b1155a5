//! `thingswarm tls-matrix`: runs the cells of [`crate::tls::matrix`] one after another and
//! prints the table (and the JSON, with `--json`).

use anyhow::Context as _;

use super::{BadInput, Outcome};
use crate::cli::TlsMatrixArgs;
use crate::identity::Algorithm;
use crate::tls::matrix::{self, Against, MatrixError};
use crate::tls::matrix_spec::{self, Spec};
use crate::tls::options::TlsVersion;

/// Runs every cell; [`Outcome::Failed`] (exit 1) when any cell had a failed handshake or connect.
pub fn run(args: TlsMatrixArgs) -> anyhow::Result<Outcome> {
    crate::tls::install_crypto_provider();
    let spec = match &args.spec {
        Some(path) => matrix_spec::load(path).map_err(BadInput)?,
        None => Spec::default(),
    };
    let pick = |flags: &Vec<String>, file: &Vec<String>| match flags.is_empty() {
        true => file.clone(),
        false => flags.clone(),
    };
    let tls_versions = pick(&args.tls_versions, &spec.versions);
    let cipher_suites = pick(&args.cipher_suites, &spec.suites);
    let algorithm_names = pick(&args.algorithms, &spec.algorithms);
    let devices = args.devices.or(spec.devices).unwrap_or(3);
    let handshakes = args.handshakes.or(spec.handshakes).unwrap_or(5);
    let against = match args.target.clone().or(spec.target.clone()) {
        None => {
            if args.insecure || args.server_ca.is_some() || args.sni.is_some() {
                return Err(BadInput(
                    "--insecure, --server-ca and --sni apply to a --target only (expected --target mqtts://host:port beside them, or [target].url in the spec)".into(),
                )
                .into());
            }
            Against::Local
        }
        Some(url) => Against::Broker {
            url,
            server_ca: match args.insecure {
                true => None,
                false => args.server_ca.clone().or(spec.server_ca.clone()),
            },
            insecure: args.insecure,
            sni: args.sni.clone().or(spec.sni.clone()),
        },
    };
    let versions = tls_versions
        .iter()
        .map(|v| TlsVersion::parse(v).map_err(|m| BadInput(format!("--tls-version: {m}"))))
        .collect::<Result<Vec<_>, _>>()?;
    let algorithms = algorithm_names
        .iter()
        .map(|a| {
            a.parse::<Algorithm>()
                .map_err(|e| BadInput(format!("--algorithm: {e}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let cells = matrix::cells(&versions, &cipher_suites, &algorithms)
        .map_err(|m| BadInput(format!("--cipher-suite: {m}")))?;
    matrix::check_target(&against).map_err(BadInput)?;
    let where_ = match &against {
        Against::Local => "a local mosquitto per cell".to_string(),
        Against::Broker { url, insecure, .. } => {
            if *insecure {
                eprintln!("WARNING: --insecure: the broker's certificate is NOT verified; anyone on the path can impersonate it");
            }
            url.clone()
        }
    };
    eprintln!(
        "tls-matrix  {} cells x {devices} devices, {handshakes} probe handshakes each, against {where_}",
        cells.len(),
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let mut reports = Vec::with_capacity(cells.len());
    for cell in &cells {
        let r = rt.block_on(matrix::run_cell(
            cell,
            &args.dir.certs_dir,
            devices,
            handshakes,
            &against,
        ));
        let r = match r {
            Ok(r) => r,
            Err(MatrixError::Broker(b)) => {
                return Err(anyhow::Error::from(b).context("starting mosquitto for tls-matrix"))
            }
            Err(MatrixError::Target(m)) => return Err(BadInput(m).into()),
            Err(e) => return Err(anyhow::Error::from(e).context("tls-matrix cell set-up")),
        };
        eprintln!(
            "cell        {} {} {}: {}",
            r.version,
            r.suite,
            r.device_key,
            if r.ok() { "ok" } else { "FAILED" }
        );
        reports.push(r);
    }
    print!("{}", matrix::table(&reports));
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&reports).context("encoding the matrix")?;
        std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(match reports.iter().all(|r| r.ok()) {
        true => Outcome::Done,
        false => Outcome::Failed,
    })
}
