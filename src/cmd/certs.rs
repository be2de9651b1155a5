//! `thingswarm certs init|issue|export|list|inspect`.

use std::path::Path;

use anyhow::Context;
use x509_parser::prelude::*;

use crate::cli::{CertsCommand, IssueArgs};
use crate::identity::cache::{self, pem_cert, pem_key};
use crate::identity::{ca, private_dir, write_private, Ca, CaSource, Fleet, FleetSpec};
use crate::template::Template;

/// Runs one `certs` subcommand.
pub fn run(cmd: CertsCommand) -> anyhow::Result<()> {
    match cmd {
        CertsCommand::Init {
            dir,
            algorithm,
            intermediate,
            force,
        } => {
            let ca_dir = ca::generated_dir(&dir.certs_dir, algorithm, intermediate);
            let existed = ca_dir.join(ca::CA_CERT).exists();
            let ca = if existed && !force {
                Ca::generated(&dir.certs_dir, algorithm, intermediate)
            } else {
                Ca::generate(&ca_dir, algorithm, intermediate)
            }
            .with_context(|| format!("creating CA in {}", ca_dir.display()))?;
            let verb = if existed && !force {
                "exists"
            } else {
                "created"
            };
            println!("CA {verb}: {} ({})", ca.subject(), ca_dir.display());
            println!(
                "  issuing cert+chain: {}",
                ca_dir.join(ca::CA_CERT).display()
            );
            println!(
                "  issuing key:        {}",
                ca_dir.join(ca::CA_KEY).display()
            );
            println!(
                "  trust anchor:       {}",
                ca_dir.join(ca::CA_ROOT).display()
            );
            Ok(())
        }
        CertsCommand::Issue(args) => issue(args),
        CertsCommand::Export {
            dir,
            fleet,
            out,
            limit,
        } => {
            let fleet = cache::find(&dir.certs_dir, fleet.as_deref())?;
            let n = limit.unwrap_or(fleet.len()).min(fleet.len());
            export(&fleet, &out, n).with_context(|| format!("exporting to {}", out.display()))?;
            println!(
                "exported {n} identities of fleet {} to {}",
                fleet.meta().id,
                out.display()
            );
            Ok(())
        }
        CertsCommand::List { dir } => list(&dir.certs_dir),
        CertsCommand::Inspect { dir, fleet, index } => {
            let fleet = cache::find(&dir.certs_dir, fleet.as_deref())?;
            inspect(&fleet, index)
        }
    }
}

fn issue(args: IssueArgs) -> anyhow::Result<()> {
    let spec = FleetSpec {
        client_id: Template::parse(&args.client_id, crate::identity::CLIENT_ID_VARS)?,
        algorithm: args.algorithm,
        validity_days: args.validity_days,
        ca: match (args.ca_cert, args.ca_key) {
            (Some(cert), Some(key)) => CaSource::Files { cert, key },
            _ => CaSource::Generated {
                intermediate: args.intermediate,
            },
        },
    };
    let (fleet, report) = cache::ensure(&args.dir.certs_dir, &spec, args.count, args.force)?;
    if let Some(why) = &report.regenerated_because {
        eprintln!("regenerating fleet {}: {why}", fleet.meta().id);
    }
    let secs = report.elapsed.as_secs_f64();
    let rate = if report.generated > 0 && secs > 0.0 {
        format!(" in {secs:.2} s ({:.0}/s)", report.generated as f64 / secs)
    } else {
        String::new()
    };
    println!(
        "fleet {}: {} identities {} ({}), {} reused, {} generated{rate}",
        fleet.meta().id,
        fleet.len(),
        fleet.meta().client_id,
        fleet.meta().signature,
        report.reused,
        report.generated,
    );
    println!("  cache:        {}", fleet.dir().display());
    println!("  trust anchor: {}", fleet.dir().join("root.pem").display());
    Ok(())
}

/// Writes `out/<client_id>/{cert,key,chain}.pem` for the first `n` devices and `out/root.pem`.
fn export(fleet: &Fleet, out: &Path, n: usize) -> anyhow::Result<()> {
    private_dir(out)?;
    write_private(&out.join("root.pem"), pem_cert(fleet.root()).as_bytes())?;
    let intermediates: String = fleet.intermediates().iter().map(|c| pem_cert(c)).collect();
    for i in 0..n {
        let dir = out.join(fleet.client_id(i));
        private_dir(&dir)?;
        let cert = pem_cert(&fleet.cert(i));
        write_private(&dir.join("cert.pem"), cert.as_bytes())?;
        write_private(
            &dir.join("key.pem"),
            pem_key(fleet.key(i).secret_der()).as_bytes(),
        )?;
        write_private(
            &dir.join("chain.pem"),
            format!("{cert}{intermediates}").as_bytes(),
        )?;
    }
    Ok(())
}

fn list(certs_dir: &Path) -> anyhow::Result<()> {
    let mut cas: Vec<_> = std::fs::read_dir(certs_dir.join("ca"))
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    cas.sort();
    println!(
        "generated CAs in {}: {}",
        certs_dir.join("ca").display(),
        if cas.is_empty() {
            "none".into()
        } else {
            cas.join(", ")
        }
    );
    let fleets = cache::list(certs_dir);
    if fleets.is_empty() {
        println!("no fleets yet (thingswarm certs issue --count N)");
        return Ok(());
    }
    println!(
        "{:<17} {:>9}  {:<18} {:<17} {:<10} {:<24} CA",
        "FLEET", "DEVICES", "ALGORITHM", "SIGNATURE", "EXPIRES", "CLIENT ID"
    );
    for fleet in fleets {
        match fleet {
            Ok(m) => println!(
                "{:<17} {:>9}  {:<18} {:<17} {:<10} {:<24} {}",
                m.id,
                m.count,
                m.algorithm,
                m.signature,
                date(m.window.not_after),
                m.client_id,
                m.ca_subject
            ),
            Err(e) => println!("(unreadable) {e}"),
        }
    }
    Ok(())
}

fn inspect(fleet: &Fleet, index: usize) -> anyhow::Result<()> {
    let m = fleet.meta();
    anyhow::ensure!(
        index < fleet.len(),
        "--index {index} is out of range: fleet {} holds {} devices (expected 0..{})",
        m.id,
        fleet.len(),
        fleet.len()
    );
    println!("fleet {} ({})", m.id, fleet.dir().display());
    println!("  devices:    {}", fleet.len());
    println!("  client id:  {}", m.client_id);
    println!("  algorithm:  {} (signature {})", m.algorithm, m.signature);
    println!(
        "  validity:   {} .. {} ({} days)",
        date(m.window.not_before),
        date(m.window.not_after),
        m.validity_days
    );
    println!(
        "  CA:         {} (sha256 {})",
        m.ca_subject, m.ca_fingerprint
    );
    println!(
        "  chain sent: {} intermediate(s)",
        fleet.intermediates().len()
    );
    let der = fleet.cert(index);
    let (_, cert) = X509Certificate::from_der(&der).context("parsing cached certificate")?;
    println!("device {index}: {}", fleet.client_id(index));
    println!("  subject:    {}", cert.subject());
    println!("  issuer:     {}", cert.issuer());
    println!("  serial:     {}", cert.raw_serial_as_string());
    println!(
        "  signature:  {}",
        oid_name(&cert.signature_algorithm.algorithm)
    );
    println!(
        "  key:        {}",
        oid_name(&cert.public_key().algorithm.algorithm)
    );
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        let names: Vec<String> = san
            .value
            .general_names
            .iter()
            .map(|n| n.to_string())
            .collect();
        println!("  SAN:        {}", names.join(", "));
    }
    if let Ok(Some(eku)) = cert.extended_key_usage() {
        println!(
            "  EKU:        {}",
            if eku.value.client_auth {
                "clientAuth"
            } else {
                "(no clientAuth)"
            }
        );
    }
    Ok(())
}

fn oid_name(oid: &x509_parser::der_parser::oid::Oid<'_>) -> String {
    x509_parser::objects::oid2sn(oid, x509_parser::objects::oid_registry())
        .map(str::to_string)
        .unwrap_or_else(|_| oid.to_id_string())
}

fn date(unix: i64) -> String {
    ::time::OffsetDateTime::from_unix_timestamp(unix)
        .map(|t| t.date().to_string())
        .unwrap_or_else(|_| unix.to_string())
}
