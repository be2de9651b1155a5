//! `thingswarm run --processes N`: the fleet split over N child processes of this binary
//! (`run --shard i/N`), watched live and merged at the end.
//!
//! Why child processes: one process holds at most its file-descriptor limit of sessions and
//! one tokio runtime's worth of cores; children scale past both on one machine, with the
//! same code path as shards on many machines (`deploy/`). The parent:
//! 1. loads the plan and makes the identity cache complete (children then only read it, so
//!    they never race to sign);
//! 2. starts the embedded broker itself when the scenario has no target (one broker for all
//!    children: they get `--target` and its CA), else passes the target flags through, child
//!    i taking the (i mod count)-th of several `--target` values (one broker per shard where
//!    one broker's file limit is too small for the whole fleet);
//! 3. spawns the children in their own process group (a terminal's Ctrl-C reaches only the
//!    parent, which forwards one SIGINT to each), stdout piped for their once-per-second
//!    `snapshot <JSON>` lines, stderr to `OUT/shard-i/run.log`;
//! 4. shows the aggregate of the children's latest snapshots (progress lines or the
//!    dashboard, Prometheus if asked); the dashboard's pause and rate keys reach every child
//!    as a `control paused=.. rate=..` line on its stdin;
//! 5. merges whatever reports the children wrote into OUT, judges the SLOs on the merged
//!    figures, and reports a child that failed (its exit code and last log line) instead of
//!    hiding it.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use tokio::io::AsyncBufReadExt as _;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::run::{connect_target, default_out, progress_lines, use_dashboard, TargetError};
use super::{BadInput, Outcome};
use crate::cli::RunArgs;
use crate::fleet::control::Controller;
use crate::report::merge::{self, ShardRun};
use crate::scenario::{Plan, Target};
use crate::shard::{aggregate, control_line, parse_snapshot_line, Shard};
use crate::stats::{rusage, Snapshot};
use crate::tui::{self, Ui};

/// How a child ended.
struct ChildEnd {
    shard: Shard,
    dir: PathBuf,
    code: Option<i32>,
}

/// Runs `args`' scenario as `n` shards in child processes and merges them into `--out`.
pub fn run(args: RunArgs, n: u32) -> anyhow::Result<Outcome> {
    let plan = Plan::load(&args.scenario, &args.target.overrides(0))?;
    let dashboard = use_dashboard(&args)?;
    let pushgateway = super::run::pushgateway(&args)?;
    crate::tls::install_crypto_provider();
    let (soft, _) = crate::limits::raise_nofile();
    let started_at = time::OffsetDateTime::now_utc();
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| default_out(&plan.name, started_at));
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;

    // Identities once, here: the children find a complete cache.
    let mut fleets = Vec::new();
    let mut made_here = Vec::new();
    for (group, (fleet, made)) in plan
        .groups
        .iter()
        .zip(crate::fleet::identities(&plan, &args.dir.certs_dir)?)
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
        fleets.push(fleet);
        made_here.push(made);
    }

    // One target for every child.
    let embedded = matches!(plan.target, Target::Embedded);
    if embedded {
        // The in-process broker holds one end of every child's session.
        let needed = plan.total_devices() + 200;
        if needed > soft {
            return Err(BadInput(format!(
                "{}: {} devices need ~{needed} open files in this process for the embedded broker but it may open {soft}; run `thingswarm broker` separately and pass --target/--server-ca",
                plan.source.display(),
                plan.total_devices()
            ))
            .into());
        }
    }
    let provisioning = super::run::provisioner(&plan, &args.dir.certs_dir)?;
    let emulates_provisioning = provisioning.is_some();
    let (endpoint, broker, target) = connect_target(&plan, &fleets, provisioning)?;
    drop(fleets);
    // Each child's target flags: the broker started here, or the user's (several `--target`
    // values spread the shards round-robin).
    let embedded_target = if embedded {
        embedded_flags(broker.as_deref(), &out)?
    } else {
        Vec::new()
    };
    let child_target = |shard: u32| match embedded {
        true => [embedded_target.clone(), args.target.tls_args()].concat(),
        false => args.target.child_args(shard),
    };
    let mut target = target;
    if args.target.target.len() > 1 {
        target.url = format!(
            "{} (shard i: the (i mod {})-th)",
            args.target.target.join(", "),
            args.target.target.len()
        );
    }
    eprintln!(
        "target      {} ({}); {n} processes",
        target.url, target.server_verification
    );

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    // The children see the embedded broker as an external target: shadow requests are
    // answered here, once for all of them.
    let aws_service = super::run::shadow_service(&plan, &args.dir.certs_dir, &runtime, &endpoint)?;
    let stop = CancellationToken::new();
    let (tx, rx) = watch::channel(Arc::new(Snapshot::default()));
    let group_names: Arc<[String]> = plan.groups.iter().map(|g| g.name.clone()).collect();
    let exporters = CancellationToken::new();
    let metrics = super::run::bind_prometheus(&runtime, args.prometheus)?;
    let exe = std::env::current_exe().context("finding this thingswarm binary to spawn")?;
    // The dashboard's pause and rate keys change this controller; every change goes to the
    // children as a control line on their stdin.
    let controller = Arc::new(Controller::default());
    let ui = if dashboard {
        let header = tui::Header::of(&plan, &target.url);
        let ui = Ui::start(
            header,
            rx.clone(),
            stop.clone(),
            controller.clone(),
            args.exit_on_finish,
        )
        .context("starting the terminal UI (--no-tui runs without it)")?;
        Some(ui)
    } else {
        None
    };

    let wall = Instant::now();
    let (ends, pushed) = runtime.block_on(async {
        crate::shutdown::on_ctrl_c(stop.clone());
        if let Some(listener) = metrics {
            tokio::spawn(crate::prometheus::serve(
                listener,
                rx.clone(),
                group_names.clone(),
                exporters.clone(),
            ));
        }
        if let Some(gateway) = &pushgateway {
            tokio::spawn(crate::prometheus::push_periodically(
                gateway.clone(),
                rx.clone(),
                group_names.clone(),
                exporters.clone(),
                dashboard,
            ));
        }
        let progress = ui
            .is_none()
            .then(|| tokio::spawn(progress_lines(rx.clone())));
        let latest = Arc::new(Mutex::new(vec![Snapshot::default(); n as usize]));
        let mut children = Vec::new();
        for i in 0..n {
            let shard = Shard { index: i, count: n };
            let dir = out.join(format!("shard-{i}"));
            let child = spawn_child(&exe, &args, shard, &dir, &child_target(shard.index));
            children.push((shard, dir, child));
        }
        let mut stdins: Vec<tokio::process::ChildStdin> = children
            .iter_mut()
            .filter_map(|(_, _, c)| c.as_mut().ok().and_then(|c| c.stdin.take()))
            .collect();
        let mut control_rx = controller.subscribe();
        let control = tokio::spawn(async move {
            use tokio::io::AsyncWriteExt as _;
            while control_rx.changed().await.is_ok() {
                let line = control_line(*control_rx.borrow_and_update());
                for stdin in &mut stdins {
                    // A child that already ended has nothing left to control.
                    let _ = stdin.write_all(line.as_bytes()).await;
                    let _ = stdin.flush().await;
                }
            }
        });
        let pids: Vec<u32> = children
            .iter()
            .filter_map(|(_, _, c)| c.as_ref().ok().and_then(|c| c.id()))
            .collect();
        let forward = {
            let stop = stop.clone();
            tokio::spawn(async move {
                stop.cancelled().await;
                for pid in pids {
                    if let Ok(pid) = libc::pid_t::try_from(pid) {
                        // SAFETY: signalling a child process we spawned, by its id.
                        unsafe {
                            libc::kill(pid, libc::SIGINT);
                        }
                    }
                }
            })
        };
        let mut waits = Vec::new();
        for (shard, dir, child) in children {
            let tx = tx.clone();
            let latest = latest.clone();
            waits.push(tokio::spawn(async move {
                let code = match child {
                    Ok(child) => watch_child(child, shard.index as usize, latest, tx).await,
                    Err(e) => {
                        eprintln!("thingswarm: shard {shard}: could not start: {e:#}");
                        None
                    }
                };
                ChildEnd { shard, dir, code }
            }));
        }
        let mut ends = Vec::new();
        for w in waits {
            if let Ok(end) = w.await {
                ends.push(end);
            }
        }
        forward.abort();
        control.abort();
        if let Some(progress) = progress {
            progress.abort();
        }
        exporters.cancel();
        // The aggregate of the children's last snapshots.
        let last = rx.borrow().clone();
        let pushed = match &pushgateway {
            Some(g) => Some(crate::prometheus::push_final(g, &last, &group_names).await),
            None => None,
        };
        (ends, pushed)
    });
    let shadow_emulated = aws_service.is_some();
    if let Some(service) = aws_service {
        runtime.block_on(service.stop());
    }
    runtime.shutdown_timeout(Duration::from_secs(1));
    drop(broker);
    let wall = wall.elapsed();

    // Merge whatever the children wrote.
    let merge_started = Instant::now();
    let mut shards = Vec::new();
    for end in &ends {
        if end.dir.join("report.json").is_file() {
            shards.push(ShardRun {
                report: crate::report::Report::load(&end.dir)?,
                dir: end.dir.clone(),
            });
        }
    }
    let failed: Vec<&ChildEnd> = ends
        .iter()
        .filter(|e| !matches!(e.code, Some(0) | Some(130)))
        .collect();
    let failures: Vec<String> = failed
        .iter()
        .map(|e| {
            format!(
                "shard {} {} (see {}: {})",
                e.shard,
                e.code
                    .map_or("was killed by a signal".to_string(), |c| format!(
                        "exited with code {c}"
                    )),
                e.dir.join("run.log").display(),
                last_line(&e.dir.join("run.log"))
            )
        })
        .collect();
    if shards.is_empty() {
        if let Some(ui) = ui {
            let _ = ui.finish(String::new());
        }
        return Err(child_error(&failed, failures.join("; ")));
    }
    let mut merged = merge::merge(&shards, true).map_err(|e| BadInput(e.to_string()))?;
    let usage = rusage::usage();
    let r = &mut merged.report;
    r.target = target;
    if let Some(aws) = r.aws.as_mut() {
        // The children could not tell: they reached the broker (and its services) as a target.
        if shadow_emulated {
            aws.shadow_service = "emulated".into();
        }
        if emulates_provisioning {
            aws.provisioning_service = "emulated".into();
        }
    }
    // Every child applied the same control changes: one log of them.
    r.events = shards[0].report.events.clone();
    // The children found the cache complete: what was signed, was signed here.
    for (id, made) in r.identities.iter_mut().zip(&made_here) {
        id.reused = made.reused;
        id.generated = made.generated;
        id.generation_s = made.elapsed.as_secs_f64();
    }
    r.phases.total_s = wall.as_secs_f64();
    r.client.cpu_s += usage.cpu.as_secs_f64();
    r.client.max_rss_bytes += usage.max_rss_bytes;
    r.client.includes_embedded_broker = embedded;
    let d = r.devices;
    r.client.cpu_ms_per_connect = if d.connects > 0 {
        r.client.cpu_s * 1e3 / d.connects as f64
    } else {
        0.0
    };
    r.client.cpu_us_per_message = if d.sent + d.delivered > 0 {
        r.client.cpu_s * 1e6 / (d.sent + d.delivered) as f64
    } else {
        0.0
    };
    let interrupted = r.interrupted || stop.is_cancelled();
    r.interrupted = interrupted;
    let merge_took = merge_started.elapsed();
    let slos: Vec<_> = plan.slos.iter().chain(&args.slo).cloned().collect();
    if let Some(ui) = ui {
        // The dashboard gives the terminal back before the merged summary is printed.
        if let Err(e) = ui.finish(String::new()) {
            eprintln!("thingswarm: terminal UI: {e}");
        }
    }
    if let Some(pushed) = pushed {
        eprintln!("{pushed}");
    }
    let outcome = super::merge::write(&out, merged, &slos)?;
    eprintln!(
        "merged      {} of {n} shard report(s) in {:.2} s",
        shards.len(),
        merge_took.as_secs_f64()
    );
    if !failures.is_empty() {
        return Err(child_error(&failed, failures.join("; ")));
    }
    if interrupted {
        return Ok(Outcome::Interrupted);
    }
    Ok(outcome)
}

/// The error for failed children, with the exit-code class of the first failure (2: bad
/// input, 3: target, else 1).
fn child_error(failed: &[&ChildEnd], message: String) -> anyhow::Error {
    match failed.first().and_then(|e| e.code) {
        Some(2) => BadInput(message).into(),
        Some(3) => TargetError(message).into(),
        _ => anyhow::anyhow!(message),
    }
}

fn last_line(log: &Path) -> String {
    std::fs::read_to_string(log)
        .ok()
        .and_then(|s| {
            s.lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .map(str::to_string)
        })
        .unwrap_or_else(|| "no log".into())
}

/// `--target`/`--server-ca` for the embedded broker this process runs (its CA written into
/// `out`).
fn embedded_flags(broker: Option<&dyn std::any::Any>, out: &Path) -> anyhow::Result<Vec<String>> {
    #[cfg(feature = "embedded-broker")]
    if let Some(b) = broker.and_then(|b| b.downcast_ref::<crate::broker::EmbeddedBroker>()) {
        let ca = out.join("broker-ca.pem");
        std::fs::write(&ca, crate::identity::cache::pem_cert(b.server_ca_der()))
            .with_context(|| format!("writing {}", ca.display()))?;
        return Ok(vec![
            "--target".into(),
            format!("mqtts://{}", b.addr()),
            "--server-ca".into(),
            ca.display().to_string(),
        ]);
    }
    let _ = (broker, out);
    Err(TargetError("the embedded broker did not start".into()).into())
}

/// Starts shard `shard`'s child: same scenario and flags, its own results directory.
fn spawn_child(
    exe: &Path,
    args: &RunArgs,
    shard: Shard,
    dir: &Path,
    target_flags: &[String],
) -> anyhow::Result<tokio::process::Child> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let log = std::fs::File::create(dir.join("run.log"))
        .with_context(|| format!("creating {}", dir.join("run.log").display()))?;
    let mut cmd = tokio::process::Command::new(exe);
    cmd.arg("run")
        .arg(&args.scenario)
        .arg("--shard")
        .arg(shard.to_string())
        .arg("--out")
        .arg(dir)
        .arg("--certs-dir")
        .arg(&args.dir.certs_dir)
        .args(["--no-tui", "--snapshot-lines"])
        .args(target_flags);
    for slo in &args.slo {
        cmd.arg("--slo").arg(slo.to_string());
    }
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log))
        // Its own process group: a terminal's Ctrl-C reaches the parent only, which forwards
        // exactly one SIGINT (two would make the child exit without its report).
        .process_group(0);
    // SAFETY: prctl is async-signal-safe; the closure allocates nothing. When this process
    // ends (a second Ctrl-C exits at once), each child gets SIGTERM: after the forwarded
    // SIGINT, that is its second interrupt, so the whole tree stops together.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
            Ok(())
        });
    }
    cmd.spawn()
        .with_context(|| format!("spawning {} for shard {shard}", exe.display()))
}

/// Reads a child's snapshot lines into `latest[slot]` (publishing the aggregate on `tx`) until
/// it closes stdout, then waits for its exit code.
async fn watch_child(
    mut child: tokio::process::Child,
    slot: usize,
    latest: Arc<Mutex<Vec<Snapshot>>>,
    tx: watch::Sender<Arc<Snapshot>>,
) -> Option<i32> {
    if let Some(stdout) = child.stdout.take() {
        let mut lines = tokio::io::BufReader::new(stdout).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            let Some(snapshot) = parse_snapshot_line(&line) else {
                continue;
            };
            let all = {
                let mut latest = latest.lock().unwrap_or_else(|e| e.into_inner());
                latest[slot] = snapshot;
                aggregate(&latest)
            };
            tx.send_replace(Arc::new(all));
        }
    }
    child.wait().await.ok().and_then(|s| s.code())
}
