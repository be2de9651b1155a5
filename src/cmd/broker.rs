//! `thingswarm broker`: the embedded mTLS broker as a standalone process, until Ctrl-C.
//!
//! Why standalone: in-process, every loopback session costs the process two file descriptors,
//! so fleets beyond ~9,500 devices need the broker in another process; and other MQTT clients
//! can be pointed at it too.

use crate::cli::BrokerArgs;

/// Runs the broker until Ctrl-C.
#[cfg(feature = "embedded-broker")]
pub fn run(args: BrokerArgs) -> anyhow::Result<()> {
    use anyhow::Context;

    use crate::broker::{BrokerConfig, EmbeddedBroker};

    crate::tls::install_crypto_provider();
    let (client_roots, sources) = trust::load(&args.trust, &args.dir.certs_dir)?;
    let broker = EmbeddedBroker::start(BrokerConfig {
        port: args.port,
        client_roots,
    })?;
    println!("listening on mqtts://{}", broker.addr());
    println!("server CA: {}", broker.server_ca().display());
    println!("trusting client roots: {}", sources.join(", "));
    println!("client certificate CN must equal the MQTT client ID; Ctrl-C stops");

    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the signal handler's runtime")?
        .block_on(tokio::signal::ctrl_c())
        .context("waiting for Ctrl-C")?;
    broker.stop();
    println!("stopped");
    Ok(())
}

/// Without the embedded broker compiled in, say so plainly (exit code 2).
#[cfg(not(feature = "embedded-broker"))]
pub fn run(_args: BrokerArgs) -> anyhow::Result<()> {
    Err(super::FeatureMissing {
        command: "broker",
        feature: "embedded-broker",
    }
    .into())
}

/// Which client roots the broker trusts.
#[cfg(feature = "embedded-broker")]
mod trust {
    use std::path::{Path, PathBuf};

    use rustls_pki_types::CertificateDer;

    use crate::identity::ca::CA_ROOT;
    use crate::identity::{read_pem_certs, Algorithm, Ca, IdentityError};

    /// The roots in the `--trust` files, or else every generated CA root under
    /// `<certs_dir>/ca/*/root.pem` (creating the default CA when there is none, so a fresh
    /// checkout works). Returns the certificates and the files they came from.
    pub fn load(
        trust: &[PathBuf],
        certs_dir: &Path,
    ) -> Result<(Vec<CertificateDer<'static>>, Vec<String>), IdentityError> {
        let files = if trust.is_empty() {
            let mut found = generated_roots(certs_dir);
            if found.is_empty() {
                Ca::generated(certs_dir, Algorithm::default(), false)?;
                found = generated_roots(certs_dir);
            }
            found
        } else {
            trust.to_vec()
        };
        let mut roots = Vec::new();
        for file in &files {
            roots.extend(read_pem_certs(file, Some("a PEM CA certificate to trust"))?);
        }
        let names = files.iter().map(|f| f.display().to_string()).collect();
        Ok((roots, names))
    }

    /// `<certs_dir>/ca/*/root.pem`, sorted.
    fn generated_roots(certs_dir: &Path) -> Vec<PathBuf> {
        let Ok(entries) = std::fs::read_dir(certs_dir.join("ca")) else {
            return Vec::new();
        };
        let mut roots: Vec<PathBuf> = entries
            .flatten()
            .map(|e| e.path().join(CA_ROOT))
            .filter(|p| p.is_file())
            .collect();
        roots.sort();
        roots
    }
}
