//! `thingswarm tls-matrix`: runs the cells of [`crate::tls::matrix`] one after another and
//! prints the table (and the JSON, with `--json`).

use anyhow::Context as _;

use super::{BadInput, Outcome};
use crate::cli::TlsMatrixArgs;
use crate::identity::Algorithm;
use crate::tls::matrix::{self, MatrixError};
use crate::tls::options::TlsVersion;

/// Runs every cell; [`Outcome::Failed`] (exit 1) when any cell had a failed handshake or connect.
pub fn run(args: TlsMatrixArgs) -> anyhow::Result<Outcome> {
    crate::tls::install_crypto_provider();
    let versions = args
        .tls_versions
        .iter()
        .map(|v| TlsVersion::parse(v).map_err(|m| BadInput(format!("--tls-version: {m}"))))
        .collect::<Result<Vec<_>, _>>()?;
    let algorithms = args
        .algorithms
        .iter()
        .map(|a| {
            a.parse::<Algorithm>()
                .map_err(|e| BadInput(format!("--algorithm: {e}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let cells = matrix::cells(&versions, &args.cipher_suites, &algorithms)
        .map_err(|m| BadInput(format!("--cipher-suite: {m}")))?;
    eprintln!(
        "tls-matrix  {} cells x {} devices, {} probe handshakes each, against a local mosquitto per cell",
        cells.len(),
        args.devices,
        args.handshakes
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
            args.devices,
            args.handshakes,
        ));
        let r = match r {
            Ok(r) => r,
            Err(MatrixError::Broker(b)) => {
                return Err(anyhow::Error::from(b).context("starting mosquitto for tls-matrix"))
            }
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
