//! `thingswarm run SCENARIO`: plan -> identities -> target -> fleet -> report.

use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::{BadInput, Outcome};
use crate::cli::RunArgs;
use crate::fleet::{self, Endpoint};
use crate::identity::read_pem_certs;
use crate::report::{
    self, ClientUsage, Environment, GroupReport, HistogramReport, IdentityInfo, Phases, Report,
    ScenarioEcho, TargetInfo, TrafficReport,
};
use crate::scenario::{Plan, Target};
use crate::stats::histogram::fmt_us;
use crate::stats::{rusage, Snapshot};
use crate::tls::ServerTrust;
use crate::tui::{self, Ui};

/// The target could not be reached or set up (exit code 3).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct TargetError(pub String);

/// File descriptors kept free for everything that is not a session.
const FD_RESERVE: u64 = 200;

/// Runs a scenario end to end.
pub fn run(args: RunArgs) -> anyhow::Result<Outcome> {
    let plan = Plan::load(&args.scenario, &args.target.overrides())?;
    let dashboard = use_dashboard(&args)?;
    crate::tls::install_crypto_provider();
    let (soft, _) = crate::limits::raise_nofile();
    check_fd_budget(&plan, soft)?;
    let started_at = time::OffsetDateTime::now_utc();
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| default_out(&plan.name, started_at));

    // Identities: reuse the cache, sign what is missing.
    let mut fleets = Vec::new();
    let mut identities = Vec::new();
    for (group, (fleet, made)) in plan
        .groups
        .iter()
        .zip(fleet::identities(&plan, &args.dir.certs_dir)?)
    {
        eprintln!(
            "identities  group {}: {} devices, {} reused, {} generated in {:.2} s ({})",
            group.name,
            fleet.len(),
            made.reused,
            made.generated,
            made.elapsed.as_secs_f64(),
            fleet.meta().signature
        );
        identities.push(IdentityInfo {
            group: group.name.clone(),
            fleet: fleet.meta().id.clone(),
            algorithm: fleet.meta().algorithm.clone(),
            signature: fleet.meta().signature.clone(),
            reused: made.reused,
            generated: made.generated,
            generation_s: made.elapsed.as_secs_f64(),
        });
        fleets.push(fleet);
    }

    // Target: the embedded broker (trusting every fleet's root) or the scenario's broker.
    let (endpoint, broker, target) = connect_target(&plan, &fleets)?;
    eprintln!(
        "target      {} ({})",
        target.url, target.server_verification
    );

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    let stop = CancellationToken::new();
    let (tx, rx) = watch::channel(Arc::new(Snapshot::default()));
    // The dashboard draws on its own thread from here until the summary has been seen.
    let ui = if dashboard {
        let header = tui::Header::of(&plan, &target.url);
        let ui = Ui::start(header, rx.clone(), stop.clone(), args.exit_on_finish)
            .context("starting the terminal UI (--no-tui runs without it)")?;
        Some(ui)
    } else {
        None
    };
    let wall = Instant::now();
    let result = runtime.block_on(async {
        crate::shutdown::on_ctrl_c(stop.clone());
        let progress = ui.is_none().then(|| tokio::spawn(progress_lines(rx)));
        let result = fleet::run(&plan, fleets, endpoint, stop, tx).await;
        if let Some(progress) = progress {
            progress.abort();
        }
        result
    });
    runtime.shutdown_timeout(Duration::from_secs(1));
    drop(broker);

    let usage = rusage::usage();
    let totals = result.last.totals;
    let mut report = Report {
        schema_version: report::SCHEMA_VERSION,
        thingswarm_version: env!("CARGO_PKG_VERSION").to_string(),
        started_at: started_at
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default(),
        interrupted: result.interrupted,
        scenario: ScenarioEcho {
            name: plan.name.clone(),
            file: plan.source.display().to_string(),
            text: plan.scenario_text.clone(),
        },
        target,
        environment: Environment::current(),
        definitions: report::definitions(),
        identities,
        planned_devices: plan.total_devices(),
        devices: totals,
        groups: plan
            .groups
            .iter()
            .zip(&result.last.groups)
            .map(|(g, counts)| GroupReport {
                name: g.name.clone(),
                planned: g.devices,
                protocol: g.protocol.to_string(),
                counts: *counts,
            })
            .collect(),
        phases: Phases {
            ramp_s: result.ramp.as_secs_f64(),
            total_s: wall.elapsed().as_secs_f64(),
        },
        connect_latency_us: HistogramReport::of(&result.connect),
        traffic: result
            .traffic
            .as_ref()
            .map(|t| TrafficReport::new(t, &totals)),
        errors: result.last.errors.clone(),
        timeline: result.timeline,
        client: ClientUsage {
            cpu_s: usage.cpu.as_secs_f64(),
            cpu_ms_per_connect: if totals.connects > 0 {
                usage.cpu.as_secs_f64() * 1e3 / totals.connects as f64
            } else {
                0.0
            },
            cpu_us_per_message: if totals.sent + totals.delivered > 0 {
                usage.cpu.as_secs_f64() * 1e6 / (totals.sent + totals.delivered) as f64
            } else {
                0.0
            },
            max_rss_bytes: usage.max_rss_bytes,
            includes_embedded_broker: matches!(plan.target, Target::Embedded),
        },
        slos: Vec::new(),
    };
    let slos: Vec<_> = plan.slos.iter().chain(&args.slo).cloned().collect();
    report.slos = crate::slo::evaluate(&slos, &report);
    report
        .write(&out)
        .with_context(|| format!("writing the report to {}", out.display()))?;
    super::outputs::write(&out, &report, &result.intervals)?;
    let summary = format!(
        "{}  report     {}\n",
        report.summary(),
        out.join("report.json").display()
    );
    if let Some(ui) = ui {
        // Shows the summary until a key is pressed, then gives the terminal back.
        if let Err(e) = ui.finish(summary.clone()) {
            eprintln!("thingswarm: terminal UI: {e}");
        }
    }
    print!("{summary}");

    if result.interrupted {
        return Ok(Outcome::Interrupted);
    }
    let unreachable = totals.connects == 0
        && !report.errors.is_empty()
        && report
            .errors
            .iter()
            .all(|e| e.class.starts_with("tcp:") || e.class == "connect timeout");
    if unreachable {
        return Err(TargetError(format!(
            "no device could reach {} (see {})",
            report.target.url,
            out.join("report.json").display()
        ))
        .into());
    }
    if report.slos.iter().any(|s| !s.passed) {
        return Ok(Outcome::Failed);
    }
    Ok(Outcome::Done)
}

/// Whether to draw the dashboard: `--tui` / `--no-tui`, else only when stdout is a terminal
/// (CI logs and pipes get progress lines instead of escape sequences).
fn use_dashboard(args: &RunArgs) -> anyhow::Result<bool> {
    let terminal = std::io::stdout().is_terminal();
    if args.tui && !terminal {
        anyhow::bail!(BadInput(
            "--tui needs stdout to be a terminal; drop it (or pass --no-tui) when piping".into()
        ));
    }
    Ok(args.tui || (terminal && !args.no_tui))
}

/// Refuses plans that would run out of file descriptors mid-ramp, before any connection.
fn check_fd_budget(plan: &Plan, soft_limit: u64) -> anyhow::Result<()> {
    let per_session = if matches!(plan.target, Target::Embedded) {
        2
    } else {
        1
    };
    let needed = plan.total_devices() * per_session + FD_RESERVE;
    if needed > soft_limit {
        let hint = if per_session == 2 {
            "the in-process embedded broker holds the other end of every session: run `thingswarm broker` separately and pass --target/--server-ca, or use fewer devices"
        } else {
            "use fewer devices per process"
        };
        anyhow::bail!(BadInput(format!(
            "{}: {} devices need ~{needed} open files but this process may open {soft_limit}; {hint}",
            plan.source.display(),
            plan.total_devices()
        )));
    }
    Ok(())
}

type BrokerGuard = Option<Box<dyn std::any::Any>>;

fn connect_target(
    plan: &Plan,
    fleets: &[Arc<crate::identity::Fleet>],
) -> anyhow::Result<(Endpoint, BrokerGuard, TargetInfo)> {
    match &plan.target {
        Target::Embedded => embedded(fleets),
        Target::Broker {
            host,
            port,
            server_ca,
            insecure,
        } => {
            let trust = if *insecure {
                eprintln!("WARNING: --insecure: the broker's certificate is NOT verified; anyone on the path can impersonate it");
                ServerTrust::insecure()
            } else {
                let path = server_ca
                    .as_ref()
                    .expect("validated: external targets have a server CA or --insecure");
                let cas =
                    read_pem_certs(path, Some("the CA certificate that signed the broker's"))?;
                ServerTrust::roots(&cas).with_context(|| path.display().to_string())?
            };
            let info = TargetInfo {
                url: plan.target.url(),
                embedded: false,
                server_verification: if *insecure {
                    "disabled (--insecure)".into()
                } else {
                    "verified".into()
                },
            };
            Ok((
                Endpoint {
                    host: host.clone(),
                    port: *port,
                    trust,
                },
                None,
                info,
            ))
        }
    }
}

#[cfg(feature = "embedded-broker")]
fn embedded(
    fleets: &[Arc<crate::identity::Fleet>],
) -> anyhow::Result<(Endpoint, BrokerGuard, TargetInfo)> {
    use crate::broker::{BrokerConfig, EmbeddedBroker};
    let mut roots = Vec::new();
    for root in fleets.iter().map(|f| f.root()) {
        if !roots.contains(root) {
            roots.push(root.clone());
        }
    }
    let broker = EmbeddedBroker::start(BrokerConfig {
        port: 0,
        client_roots: roots,
    })
    .map_err(|e| TargetError(format!("embedded broker: {e}")))?;
    let endpoint = Endpoint::verified(broker.addr(), broker.server_ca_der())?;
    let info = TargetInfo {
        url: format!("mqtts://{}", broker.addr()),
        embedded: true,
        server_verification: "verified".into(),
    };
    Ok((endpoint, Some(Box::new(broker)), info))
}

#[cfg(not(feature = "embedded-broker"))]
fn embedded(
    _: &[Arc<crate::identity::Fleet>],
) -> anyhow::Result<(Endpoint, BrokerGuard, TargetInfo)> {
    Err(BadInput(
        "this scenario has no [target] and this build has no embedded broker (cargo feature `embedded-broker`); pass --target mqtts://HOST:PORT --server-ca PEM".into(),
    )
    .into())
}

fn default_out(name: &str, at: time::OffsetDateTime) -> PathBuf {
    let stamp = format!(
        "{:04}{:02}{:02}-{:02}{:02}{:02}",
        at.year(),
        at.month() as u8,
        at.day(),
        at.hour(),
        at.minute(),
        at.second()
    );
    PathBuf::from("results").join(format!("{name}-{stamp}"))
}

/// One line per second on stderr: the headless view of a run.
async fn progress_lines(mut rx: watch::Receiver<Arc<Snapshot>>) {
    let mut every = tokio::time::interval(Duration::from_secs(1));
    every.tick().await;
    loop {
        every.tick().await;
        let s = rx.borrow_and_update().clone();
        let t = s.totals;
        let traffic = if t.sent + t.delivered > 0 {
            format!(
                "  sent {:.0}/s  delivered {:.0}/s  e2e p99 {}",
                s.rates.sent_per_s,
                s.rates.delivered_per_s,
                fmt_us(s.latency_interval.e2e_corrected.p99)
            )
        } else {
            String::new()
        };
        eprintln!(
            "[{:>6.1}s] {:<5} connected {}/{}  connecting {}  failed {}  dropped {}  {:.0} conn/s  connect p99 {}{traffic}",
            s.elapsed.as_secs_f64(),
            format!("{:?}", s.phase).to_lowercase(),
            t.connected,
            s.planned,
            t.connecting,
            t.failed,
            t.dropped,
            s.connects_per_s,
            fmt_us(s.connect_total.p99),
        );
    }
}
