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
use crate::fleet::control::Controller;
use crate::fleet::{self, Endpoint};
use crate::identity::read_pem_certs;
use crate::report::{
    self, ClientUsage, Environment, GroupReport, HistogramReport, IdentityInfo, Phases, Report,
    ScenarioEcho, TargetInfo, TrafficReport,
};
use crate::scenario::{Plan, Target};
use crate::stats::histogram::fmt_us;
use crate::stats::{rusage, Snapshot};
use crate::tls::probe::{probe, Negotiated};
use crate::tls::ServerTrust;
use crate::tui::{self, Ui};

/// The target could not be reached or set up (exit code 3).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct TargetError(pub String);

/// The proxy a fault timeline needs, in front of a loopback target (the TLS server name stays
/// the target's: only the port changes).
async fn fault_proxy(plan: &Plan, target: &Endpoint) -> anyhow::Result<crate::proxy::Proxy> {
    let ip: std::net::IpAddr = match target.host.parse() {
        Ok(ip) if std::net::IpAddr::is_loopback(&ip) => ip,
        _ if target.host == "localhost" => std::net::Ipv4Addr::LOCALHOST.into(),
        _ => {
            return Err(BadInput(format!(
                "{}: [[fault]] needs a loopback target, got host {:?} (expected 127.0.0.1, ::1 or localhost: faults are injected on loopback only)",
                plan.source.display(),
                target.host
            ))
            .into())
        }
    };
    let proxy = crate::proxy::Proxy::start(crate::proxy::ProxyConfig {
        listen: (ip, 0).into(),
        upstream: (ip, target.port).into(),
        up: Default::default(),
        down: Default::default(),
        bandwidth: None,
        seed: plan.seed,
    })
    .await?;
    Ok(proxy)
}

/// The emulated shadow service, for a scenario with shadow groups against the embedded
/// broker (which `endpoint` reaches); `None` otherwise.
pub(super) fn shadow_service(
    plan: &Plan,
    certs_dir: &std::path::Path,
    runtime: &tokio::runtime::Runtime,
    endpoint: &Endpoint,
) -> anyhow::Result<Option<crate::aws::service::AwsService>> {
    if !crate::aws::has_shadow(plan) || !matches!(plan.target, Target::Embedded) {
        return Ok(None);
    }
    let identity = crate::aws::service_identity(certs_dir, &plan.fleet_spec(&plan.groups[0]))?;
    let service = runtime
        .block_on(crate::aws::start_service(endpoint, &identity))
        .map_err(|e| TargetError(e.to_string()))?;
    eprintln!(
        "aws         shadow service emulated in-process (client ID {})",
        crate::aws::service::SERVICE_CLIENT_ID
    );
    Ok(Some(service))
}

/// `--pushgateway`, parsed.
pub(super) fn pushgateway(
    args: &RunArgs,
) -> Result<Option<crate::prometheus::Pushgateway>, BadInput> {
    args.pushgateway
        .as_deref()
        .map(crate::prometheus::Pushgateway::parse)
        .transpose()
        .map_err(|e| BadInput(e.to_string()))
}

/// Runs a scenario end to end.
pub fn run(args: RunArgs) -> anyhow::Result<Outcome> {
    if let Some(n) = args.processes {
        return super::processes::run(args, n);
    }
    let shard = args.shard.unwrap_or_default();
    if args.target.target.len() > 1 && args.shard.is_none() {
        return Err(BadInput(format!(
            "--target given {} times: several targets spread shards over brokers (expected --shard i/N or --processes N with them, or one --target)",
            args.target.target.len()
        ))
        .into());
    }
    let mut plan = Plan::load(&args.scenario, &args.target.overrides(shard.index))?;
    plan.shard = shard;
    if plan.shard.index > 0 {
        // `[[expect]]` probes run once, in shard 0.
        plan.expect.clear();
    }
    let dashboard = use_dashboard(&args)?;
    let pushgateway = pushgateway(&args)?;
    crate::tls::install_crypto_provider();
    check_fd_budget(&plan)?;
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
        let what = if group.provision.is_some() {
            format!(
                "1 claim certificate (CN {}) shared by {} devices",
                crate::aws::provisioning::CLAIM_CN,
                group.devices
            )
        } else {
            format!("{} devices", fleet.len())
        };
        eprintln!(
            "identities  group {}: {what}, {} reused, {} generated in {:.2} s ({})",
            group.name,
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
    let provisioner = provisioner(&plan, &args.dir.certs_dir)?;
    let aws_provisioning = provisioner.is_some();
    let (mut endpoint, broker, target) = connect_target(&plan, &fleets, provisioner)?;
    endpoint.trust = endpoint.trust.with_options(&plan.tls);
    eprintln!(
        "target      {} ({})",
        target.url, target.server_verification
    );
    if let Some(t) = plan.groups.first().map(|g| &g.options.transport) {
        eprintln!(
            "transport   {}",
            t.broker_addr(&endpoint.host, endpoint.port)
        );
        if let Some(w) = t.warning() {
            eprintln!("WARNING: {w}");
        }
    }
    if !plan.source_addresses.is_empty() {
        eprintln!("sources     {}", sources_label(&plan));
    }

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    let probes = runtime.block_on(probe_groups(&plan, &fleets, &endpoint));
    let stop = CancellationToken::new();
    let (tx, rx) = watch::channel(Arc::new(Snapshot::default()));
    let control = Arc::new(Controller::default());
    // Bound before the dashboard takes the terminal, so the address line is readable.
    let group_names: Arc<[String]> = plan.groups.iter().map(|g| g.name.clone()).collect();
    let exporters = CancellationToken::new();
    let metrics = bind_prometheus(&runtime, args.prometheus)?;
    // The dashboard draws on its own thread from here until the summary has been seen.
    let ui = if dashboard {
        let mut header = tui::Header::of(&plan, &target.url);
        header.tls = probes.iter().flatten().next().map(|n| n.to_string());
        let ui = Ui::start(
            header,
            rx.clone(),
            stop.clone(),
            control.clone(),
            args.exit_on_finish,
        )
        .context("starting the terminal UI (--no-tui runs without it)")?;
        Some(ui)
    } else {
        None
    };
    // `[[expect]]` probes run after the load, each with its own short-lived sessions.
    let expect_probes = crate::expect::probes(&plan, &fleets, &endpoint)?;
    // Shadow groups against the embedded broker: the emulated AWS shadow service answers
    // (connected directly, never through a fault proxy).
    let aws_service = shadow_service(&plan, &args.dir.certs_dir, &runtime, &endpoint)?;
    // A fault timeline: the devices reach the target through the fault-injecting proxy.
    let proxy = if plan.faults.is_empty() {
        None
    } else {
        let proxy = runtime.block_on(fault_proxy(&plan, &endpoint))?;
        eprintln!(
            "faults      {} planned; devices connect through the proxy at {}",
            plan.faults.len(),
            proxy.addr()
        );
        endpoint.port = proxy.addr().port();
        Some(Arc::new(proxy))
    };
    let wall = Instant::now();
    let result = runtime.block_on(async {
        crate::shutdown::on_ctrl_c(stop.clone());
        if let Some(listener) = metrics {
            let serve = crate::prometheus::serve(
                listener,
                rx.clone(),
                group_names.clone(),
                exporters.clone(),
            );
            tokio::spawn(serve);
        }
        if let Some(gateway) = &pushgateway {
            let push = crate::prometheus::push_periodically(
                gateway.clone(),
                rx.clone(),
                group_names.clone(),
                exporters.clone(),
                dashboard,
            );
            tokio::spawn(push);
        }
        if args.snapshot_lines {
            // A `--processes` child: its parent's pause and rate keys arrive on stdin.
            tokio::spawn(crate::shard::follow_control(control.clone()));
        }
        let progress = ui.is_none().then(|| {
            if args.snapshot_lines {
                tokio::spawn(crate::shard::snapshot_lines(rx))
            } else {
                tokio::spawn(progress_lines(rx))
            }
        });
        let faults_stop = CancellationToken::new();
        let injector = proxy.clone().map(|p| {
            tokio::spawn(crate::proxy::timeline::play(
                p,
                plan.faults.clone(),
                tokio::time::Instant::now(),
                faults_stop.clone(),
            ))
        });
        let result = fleet::run(&plan, fleets, endpoint, stop.clone(), tx, &control).await;
        if let Some(progress) = progress {
            progress.abort();
        }
        if args.snapshot_lines {
            crate::shard::snapshot_line(&result.last);
        }
        let faults = match injector {
            Some(injector) => {
                // Faults planned after the run's end are not injected.
                faults_stop.cancel();
                injector.await.unwrap_or_default()
            }
            None => Vec::new(),
        };
        exporters.cancel();
        // Printed after the dashboard has given the terminal back.
        let pushed = match &pushgateway {
            Some(g) => Some(crate::prometheus::push_final(g, &result.last, &group_names).await),
            None => None,
        };
        let probed = if expect_probes.is_empty() || result.interrupted {
            None
        } else {
            eprintln!("expect      {} probe(s)", expect_probes.len());
            tokio::select! {
                r = crate::expect::run_plan(&expect_probes) => Some(r),
                () = stop.cancelled() => None,
            }
        };
        (result, faults, pushed, probed)
    });
    let (mut result, mut faults, pushed, probe_results) = result;
    // `[[event]]`s share the `[[fault]]` timeline.
    faults.append(&mut result.lifecycle_events);
    faults.sort_by(|a, b| a.t.total_cmp(&b.t));
    let aws_emulated = aws_service.is_some();
    if let Some(service) = aws_service {
        runtime.block_on(service.stop());
    }
    drop(proxy);
    let interrupted = result.interrupted || (!expect_probes.is_empty() && probe_results.is_none());
    let expectations = probe_results.map(|r| crate::expect::ExpectationsReport::new(&plan, r));
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
        interrupted,
        scenario: ScenarioEcho {
            name: plan.name.clone(),
            file: plan.source.display().to_string(),
            text: plan.scenario_text.clone(),
        },
        target,
        environment: Environment::current(),
        definitions: report::definitions(),
        identities,
        planned_devices: plan.shard_devices(),
        devices: totals,
        groups: plan
            .groups
            .iter()
            .zip(&result.last.groups)
            .zip(probes)
            .enumerate()
            .map(|(i, ((g, counts), probe))| {
                let (tls, tls_probe_error) = match probe {
                    Ok(n) => (Some(n), None),
                    Err(e) => (None, Some(e)),
                };
                GroupReport {
                    name: g.name.clone(),
                    planned: plan.shard.slice(g.devices).count,
                    protocol: g.protocol.to_string(),
                    counts: *counts,
                    tls,
                    tls_probe_error,
                    time_to_recover_us: result.recovery.get(i).copied().unwrap_or_default(),
                    protocol_options: result.protocol.get(i).cloned().flatten(),
                    time_to_recover_hdr: result
                        .recovery_histograms
                        .get(i)
                        .map(crate::stats::histogram::encode),
                }
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
        events: result.events,
        faults,
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
        expectations,
        slos: Vec::new(),
        lifecycle: result.lifecycle.take(),
        aws: crate::aws::AwsReport::with_provisioning(
            &plan,
            result.shadow.as_deref(),
            aws_emulated,
            result.provision.as_deref().map(|p| (p, aws_provisioning)),
        ),
        shard: args.shard.map(|shard| {
            let ledgers = result.traffic.as_ref().map(|t| &t.loss_ledgers[..]);
            crate::shard::ShardInfo::of(
                shard,
                plan.groups.iter().enumerate().map(|(i, g)| {
                    let loss = ledgers.and_then(|l| l.get(i).copied().flatten());
                    (g.name.as_str(), g.devices, loss)
                }),
            )
        }),
        merged: None,
    };
    if args.shard.is_some() {
        report
            .definitions
            .insert("shard".into(), crate::shard::DEFINITION.into());
    }
    let slos: Vec<_> = plan.slos.iter().chain(&args.slo).cloned().collect();
    report.slos = crate::slo::evaluate(&slos, &report);
    report
        .write(&out)
        .with_context(|| format!("writing the report to {}", out.display()))?;
    super::outputs::write(&out, &report, &result.intervals)?;
    let expect_summary = report
        .expectations
        .as_ref()
        .map(|e| e.summary())
        .unwrap_or_default();
    let summary = format!(
        "{expect_summary}{}  report     {}\n",
        report.summary(),
        out.join("report.json").display()
    );
    if let Some(ui) = ui {
        // Shows the summary until a key is pressed, then gives the terminal back.
        if let Err(e) = ui.finish(summary.clone()) {
            eprintln!("thingswarm: terminal UI: {e}");
        }
    }
    if let Some(pushed) = pushed {
        eprintln!("{pushed}");
    }
    print!("{summary}");

    if interrupted {
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
    if args.shard.is_some() {
        // A shard's figures are a part: SLOs and expectations are judged on the merge (a
        // Kubernetes Job would otherwise retry a shard for a verdict about the whole).
        return Ok(Outcome::Done);
    }
    let expectations_failed = report
        .expectations
        .as_ref()
        .is_some_and(|e| e.mismatches > 0);
    if expectations_failed || report.slos.iter().any(|s| !s.passed) {
        return Ok(Outcome::Failed);
    }
    Ok(Outcome::Done)
}

/// One TLS handshake per group with its first device's identity (see [`crate::tls::probe`]),
/// printed as it goes; failures are findings, not errors.
async fn probe_groups(
    plan: &Plan,
    fleets: &[Arc<crate::identity::Fleet>],
    endpoint: &Endpoint,
) -> Vec<Result<Negotiated, String>> {
    let mut out = Vec::new();
    for (group, fleet) in plan.groups.iter().zip(fleets) {
        let config = endpoint
            .trust
            .device_tls(
                &fleet.client_id(0),
                fleet.cert_chain(0),
                fleet.key(0).clone_key(),
            )
            .map_err(|e| e.to_string());
        let result = match config {
            Ok(config) => probe(&endpoint.host, endpoint.port, config).await,
            Err(e) => Err(e),
        };
        match &result {
            Ok(n) => eprintln!(
                "tls         group {}: {n} ({}), probe handshake {:.1} ms, client CPU {}",
                group.name,
                n.kx_group.as_deref().unwrap_or("no key exchange"),
                n.handshake_ms,
                n.client_cpu_ms
                    .map_or("unknown".into(), |c| format!("{c:.2} ms"))
            ),
            Err(e) => eprintln!("tls         group {}: probe failed: {e}", group.name),
        }
        out.push(result);
    }
    out
}

/// Whether to draw the dashboard: `--tui` / `--no-tui`, else only when stdout is a terminal
/// (CI logs and pipes get progress lines instead of escape sequences).
pub(super) fn use_dashboard(args: &RunArgs) -> anyhow::Result<bool> {
    let terminal = std::io::stdout().is_terminal();
    if args.tui && !terminal {
        anyhow::bail!(BadInput(
            "--tui needs stdout to be a terminal; drop it (or pass --no-tui) when piping".into()
        ));
    }
    Ok(args.tui || (terminal && !args.no_tui))
}

/// Refuses plans that would run out of file descriptors mid-ramp, before any connection.
/// Raises the open-file limit, says how many sessions it allows, and refuses a fleet that
/// one process cannot hold (exit 2, naming the processes or shards that would).
fn check_fd_budget(plan: &Plan) -> anyhow::Result<()> {
    let (soft, hard) = crate::limits::raise_nofile();
    let budget = session_budget(plan, soft);
    eprintln!("limits      {}", budget.describe(hard));
    budget
        .check(plan.shard_devices())
        .map_err(|e| BadInput(format!("{}: {e}", plan.source.display())))?;
    Ok(())
}

/// `3 source addresses, round-robin by device: 127.0.0.2, 127.0.0.3, 127.0.0.4` (the
/// first few of a long list).
pub(crate) fn sources_label(plan: &Plan) -> String {
    let n = plan.source_addresses.len();
    let shown: Vec<String> = plan
        .source_addresses
        .iter()
        .take(4)
        .map(|ip| ip.to_string())
        .collect();
    format!(
        "{n} source address{}, round-robin by device: {}{}",
        if n == 1 { "" } else { "es" },
        shown.join(", "),
        if n > 4 { ", ..." } else { "" }
    )
}

/// The descriptor budget of `plan` in this process under `open_files`.
pub(crate) fn session_budget(plan: &Plan, open_files: u64) -> crate::limits::SessionBudget {
    let budget =
        crate::limits::SessionBudget::new(open_files, matches!(plan.target, Target::Embedded));
    if plan.faults.is_empty() {
        budget
    } else {
        budget.with_fault_proxy()
    }
}

pub(super) type BrokerGuard = Option<Box<dyn std::any::Any>>;

/// The emulated fleet provisioning service, for a scenario with provisioning groups against
/// the embedded broker: it issues with the scenario's CA and knows the groups' templates.
pub(super) fn provisioner(
    plan: &Plan,
    certs_dir: &std::path::Path,
) -> anyhow::Result<Option<Arc<crate::aws::provisioning::Provisioner>>> {
    let Some(first) = plan.groups.iter().find(|g| g.provision.is_some()) else {
        return Ok(None);
    };
    if !matches!(plan.target, Target::Embedded) {
        return Ok(None);
    }
    let ca = plan.fleet_spec(first).load_ca(certs_dir)?;
    let mut templates: Vec<String> = plan
        .groups
        .iter()
        .filter_map(|g| g.provision.as_ref().map(|p| p.template.clone()))
        .collect();
    templates.sort();
    templates.dedup();
    eprintln!(
        "aws         fleet provisioning emulated in the embedded broker (templates {}; claim certificate CN {})",
        templates.join(", "),
        crate::aws::provisioning::CLAIM_CN
    );
    Ok(Some(Arc::new(crate::aws::provisioning::Provisioner::new(
        ca,
        plan.identity.algorithm,
        templates,
        plan.identity.validity_days,
    ))))
}

pub(super) fn connect_target(
    plan: &Plan,
    fleets: &[Arc<crate::identity::Fleet>],
    provisioning: Option<Arc<crate::aws::provisioning::Provisioner>>,
) -> anyhow::Result<(Endpoint, BrokerGuard, TargetInfo)> {
    match &plan.target {
        Target::Embedded => embedded(fleets, plan.policy.clone(), provisioning),
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
    policy: Option<Arc<crate::policy::PolicySet>>,
    provisioning: Option<Arc<crate::aws::provisioning::Provisioner>>,
) -> anyhow::Result<(Endpoint, BrokerGuard, TargetInfo)> {
    use crate::broker::{BrokerConfig, EmbeddedBroker};
    let mut roots = Vec::new();
    for root in fleets.iter().map(|f| f.root()) {
        if !roots.contains(root) {
            roots.push(root.clone());
        }
    }
    let broker = EmbeddedBroker::start_with_provisioning(
        BrokerConfig {
            port: 0,
            client_roots: roots,
        },
        policy,
        provisioning,
    )
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
    _: Option<Arc<crate::policy::PolicySet>>,
    _: Option<Arc<crate::aws::provisioning::Provisioner>>,
) -> anyhow::Result<(Endpoint, BrokerGuard, TargetInfo)> {
    Err(BadInput(
        "this scenario has no [target] and this build has no embedded broker (cargo feature `embedded-broker`); pass --target mqtts://HOST:PORT --server-ca PEM".into(),
    )
    .into())
}

pub(super) fn default_out(name: &str, at: time::OffsetDateTime) -> PathBuf {
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
pub(super) async fn progress_lines(mut rx: watch::Receiver<Arc<Snapshot>>) {
    let mut every = tokio::time::interval(Duration::from_secs(1));
    every.tick().await;
    loop {
        every.tick().await;
        let s = rx.borrow_and_update().clone();
        let t = s.totals;
        let traffic = if t.sent + t.delivered > 0 {
            format!(
                "  sent {:.0}/s  acked {:.0}/s  delivered {:.0}/s  ack p99 {}  e2e p99 {}",
                s.rates.sent_per_s,
                s.rates.acked_per_s,
                s.rates.delivered_per_s,
                fmt_us(s.latency_interval.ack.p99),
                fmt_us(s.latency_interval.e2e_corrected.p99)
            )
        } else {
            String::new()
        };
        eprintln!(
            "[{:>6.1}s] {:<5} connected {}/{}  connecting {}  failed {}  dropped {}  {:.0} conn/s  connect p99 {}{traffic}  errors {}",
            s.elapsed.as_secs_f64(),
            format!("{:?}", s.phase).to_lowercase(),
            t.connected,
            s.planned,
            t.connecting,
            t.failed,
            t.dropped,
            s.connects_per_s,
            fmt_us(s.connect_total.p99),
            s.errors.iter().map(|e| e.count).sum::<u64>(),
        );
    }
}

/// Binds `--prometheus ADDR` (before the dashboard takes the terminal, so the address line
/// is readable); a busy address is bad input.
pub(super) fn bind_prometheus(
    runtime: &tokio::runtime::Runtime,
    addr: Option<std::net::SocketAddr>,
) -> Result<Option<tokio::net::TcpListener>, BadInput> {
    addr.map(|addr| {
        let listener = runtime
            .block_on(async { crate::prometheus::listener(addr) })
            .map_err(|e| BadInput(format!("--prometheus {addr}: cannot listen: {e}")))?;
        let local = listener.local_addr().unwrap_or(addr);
        eprintln!("prometheus  http://{local}/metrics");
        Ok(listener)
    })
    .transpose()
}
