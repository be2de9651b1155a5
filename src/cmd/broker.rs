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
    let (mut client_roots, mut sources) = trust::load(&args.trust, &args.dir.certs_dir)?;
    let aws_identity = if args.aws {
        let spec = crate::identity::FleetSpec::new(crate::aws::service::SERVICE_CLIENT_ID)?;
        let identity = crate::aws::service_identity(&args.dir.certs_dir, &spec)?;
        if !client_roots.contains(identity.root()) {
            client_roots.push(identity.root().clone());
            sources.push("the AWS service emulation's CA".into());
        }
        Some(identity)
    } else {
        None
    };
    // Fleet provisioning by claim, issuing with the cache's default generated CA (the one a
    // scenario without [identity] signs its claim certificate with).
    let provisioner = if args.aws {
        let spec = crate::identity::FleetSpec::new(crate::aws::provisioning::CLAIM_CN)?;
        let ca = spec.load_ca(&args.dir.certs_dir)?;
        if !client_roots.contains(ca.root()) {
            client_roots.push(ca.root().clone());
            sources.push("the provisioning CA".into());
        }
        Some(std::sync::Arc::new(
            crate::aws::provisioning::Provisioner::new(
                ca,
                spec.algorithm,
                vec![crate::aws::provisioning::DEFAULT_TEMPLATE.into()],
                spec.validity_days,
            ),
        ))
    } else {
        None
    };
    let broker = EmbeddedBroker::start_with_provisioning(
        BrokerConfig {
            port: args.port,
            client_roots,
        },
        None,
        provisioner,
    )?;
    println!("listening on mqtts://{}", broker.addr());
    println!("server CA: {}", broker.server_ca().display());
    println!("trusting client roots: {}", sources.join(", "));
    println!("client certificate CN must equal the MQTT client ID; Ctrl-C stops");

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the signal handler's runtime")?;
    let service = match &aws_identity {
        Some(identity) => {
            let endpoint = crate::fleet::Endpoint::verified(broker.addr(), broker.server_ca_der())?;
            let service = runtime
                .block_on(crate::aws::start_service(&endpoint, identity))
                .map_err(|e| super::TargetError(e.to_string()))?;
            println!(
                "AWS IoT Device Shadow service emulated (client ID {})",
                crate::aws::service::SERVICE_CLIENT_ID
            );
            println!(
                "AWS IoT fleet provisioning emulated (template {}; claim certificate CN {} may connect under any client ID)",
                crate::aws::provisioning::DEFAULT_TEMPLATE,
                crate::aws::provisioning::CLAIM_CN
            );
            Some(service)
        }
        None => None,
    };
    runtime
        .block_on(tokio::signal::ctrl_c())
        .context("waiting for Ctrl-C")?;
    if let Some(service) = service {
        runtime.block_on(service.stop());
    }
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
