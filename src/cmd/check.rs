//! `thingswarm check SCENARIO`: validate a scenario and show what a run would do (target,
//! groups, identities to sign, pacing, timing) without connecting or signing anything.

use std::time::Duration;

use anyhow::Context;

use crate::cli::CheckArgs;
use crate::identity::cache::cached_count;
use crate::identity::CaSource;
use crate::scenario::{Plan, Protocol, Target};
use crate::traffic::payload::PayloadSpec;

/// Runs `thingswarm check`.
pub fn run(args: CheckArgs) -> anyhow::Result<()> {
    let plan = Plan::load(&args.scenario, &args.target.overrides(0))?;
    let certs_dir = &args.dir.certs_dir;

    println!("scenario {} ({}): valid", plan.name, plan.source.display());
    let target = match &plan.target {
        Target::Embedded => "embedded broker (in-process, mTLS on a free loopback port)".into(),
        Target::Broker {
            server_ca: Some(ca),
            ..
        } => format!(
            "{} (broker verified against {})",
            plan.target.url(),
            ca.display()
        ),
        Target::Broker { .. } => format!("{} (broker NOT verified: --insecure)", plan.target.url()),
    };
    println!("  target:    {target}");
    for (i, t) in args.target.target.iter().enumerate().skip(1) {
        // Checked the same way when a shard takes it.
        Plan::load(&args.scenario, &args.target.overrides(i as u32))?;
        println!(
            "  target:    {t} (shards i with i mod {} = {i})",
            args.target.target.len()
        );
    }
    if let Some(t) = plan.groups.first().map(|g| &g.options.transport) {
        use crate::scenario::protocol::Transport;
        let path = match t {
            Transport::Wss { path } | Transport::Ws { path } => format!(" (URL path {path})"),
            _ => String::new(),
        };
        if *t != Transport::Mqtts {
            println!("  transport: {}{path}", t.scheme());
        }
        if let Some(w) = t.warning() {
            println!("  WARNING:   {w}");
        }
    }
    if !plan.source_addresses.is_empty() {
        println!("  sources:   {}", crate::cmd::run::sources_label(&plan));
    }
    if !plan.tls.is_default() {
        let t = &plan.tls;
        let or_all = |v: Vec<String>| match v.is_empty() {
            true => "all supported".to_string(),
            false => v.join(", "),
        };
        println!(
            "  tls:       versions {}; suites {}; alpn {}; backend {}{}; sni {}",
            or_all(t.versions.iter().map(|v| v.to_string()).collect()),
            or_all(t.suites.clone()),
            match t.alpn.is_empty() {
                true => "none".to_string(),
                false => t.alpn.join(", "),
            },
            t.backend.name(),
            match (t.backend, t.needs_openssl()) {
                (crate::tls::options::Backend::Auto, true) => " (openssl: a named suite needs it)",
                _ => "",
            },
            t.sni.as_deref().unwrap_or("the connect host")
        );
    }
    let mut protocols: Vec<Protocol> = plan.groups.iter().map(|g| g.protocol).collect();
    protocols.dedup();
    let protocols: Vec<String> = protocols.iter().map(|p| format!("MQTT {p}")).collect();
    println!("  protocol:  {}", protocols.join(", "));
    println!(
        "  devices:   {} in {} group(s)",
        plan.total_devices(),
        plan.groups.len()
    );
    println!(
        "  duration:  hold {} after the connect ramp",
        human(plan.duration)
    );
    // What `run` will have: the soft limit raised to the hard one.
    let (soft, hard) = crate::limits::raise_nofile();
    let budget = super::run::session_budget(&plan, soft);
    println!("  limits:    {}", budget.describe(hard));
    budget
        .check(plan.total_devices())
        .map_err(|e| super::BadInput(format!("{}: {e}", plan.source.display())))?;

    for g in &plan.groups {
        println!();
        println!("group {}", g.name);
        println!("  devices:        {}", g.devices);
        println!(
            "  client ids:     {} -> {} .. {}",
            g.client_id,
            g.client_id.render_index(0),
            g.client_id.render_index(g.devices - 1)
        );
        let ramp = match g.connect.rate {
            Some(r) => format!("ramp ~{}", human_secs(g.devices as f64 / r)),
            None => "ramp as fast as the broker answers".into(),
        };
        println!(
            "  connect:        {}, at most {} in flight, CONNACK timeout {} ({ramp})",
            g.connect.rate_label(),
            g.connect.max_in_flight,
            human(g.connect.timeout)
        );
        let keepalive = if g.keepalive.is_zero() {
            "off".into()
        } else {
            human(g.keepalive)
        };
        println!("  keepalive:      {keepalive}");
        println!(
            "  clean session:  {}",
            if g.clean_session { "yes" } else { "no" }
        );
        println!("  protocol:       MQTT {}", g.protocol);
        for line in g.options.describe() {
            println!("  {line}");
        }
        if let Some(p) = &g.publish {
            let payload = match &p.payload {
                PayloadSpec::Raw { size } => format!("{size} raw bytes"),
                PayloadSpec::Json(_) => "JSON template".into(),
            };
            let rate = match p.rate {
                Some(r) => format!(
                    "{}/s per device ({:?} arrivals) = {:.0}/s offered by the group",
                    r,
                    p.arrivals,
                    r * g.devices as f64
                ),
                None => "max (closed loop: as fast as acknowledgements allow)".into(),
            };
            println!(
                "  publish:        {} QoS {}{}, {payload}",
                p.topic,
                p.qos,
                if p.retain { " retained" } else { "" }
            );
            println!("  publish rate:   {rate}");
        }
        for s in &g.subscribe {
            println!("  subscribe:      {} QoS {}", s.filter, s.qos);
        }
        for line in crate::fleet::lifecycle::plan_lines(g) {
            println!("  {line}");
        }
        if let Some(pp) = &g.provision {
            println!("  provision:      {}", crate::aws::provision_plan_line(pp));
        }
        if let Some(sh) = &g.shadow {
            println!("  shadow:         {}", crate::aws::shadow_plan_line(sh));
        }
    }
    for line in crate::fleet::lifecycle::event_lines(&plan) {
        println!("{line}");
    }

    let id = &plan.identity;
    println!();
    println!("identities (cache {})", certs_dir.display());
    println!(
        "  algorithm:   {} ({}), valid {} days",
        id.algorithm,
        id.algorithm.seed_name(),
        id.validity_days
    );
    let ca = match &id.ca {
        CaSource::Generated {
            intermediate: false,
        } => "generated root".to_string(),
        CaSource::Generated { intermediate: true } => "generated root -> intermediate".into(),
        CaSource::Files { cert, key } => format!("{} (key {})", cert.display(), key.display()),
    };
    println!("  CA:          {ca}");
    let mut to_generate = 0;
    for g in &plan.groups {
        let cached = cached_count(certs_dir, &plan.fleet_spec(g))
            .with_context(|| format!("reading the identity cache {}", certs_dir.display()))?
            .min(g.devices);
        to_generate += g.devices - cached;
        println!(
            "  {:<12} {cached} cached, {} to generate",
            format!("{}:", g.name),
            g.devices - cached
        );
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let generation = to_generate as f64 / (id.algorithm.per_core_per_sec() * cores as f64);
    println!(
        "  generation:  ~{} for {to_generate} on {cores} core(s)",
        human_secs(generation)
    );

    let ramp = plan.expected_ramp();
    let all_paced = plan.groups.iter().all(|g| g.connect.rate.is_some());
    println!();
    println!("timing");
    println!(
        "  connect ramp:  {}{} (groups ramp concurrently)",
        if all_paced { "~" } else { "at least " },
        human(ramp)
    );
    println!("  hold:          {}", human(plan.duration));
    println!(
        "  total:         ~{} (plus ~{} of identity generation)",
        human(ramp.saturating_add(plan.duration)),
        human_secs(generation)
    );
    if !plan.expect.is_empty() {
        println!();
        println!(
            "expectations ({} probe(s) after the load)",
            plan.expect.len()
        );
        for e in &plan.expect {
            let observer = e
                .observer
                .as_ref()
                .map(|o| format!(" (observer {})", o.client_id))
                .unwrap_or_default();
            println!(
                "  {} {}: {}{observer}",
                e.device.client_id, e.action, e.outcome
            );
        }
    }
    Ok(())
}

/// A duration to the millisecond, humantime style ("1m 30s", "250ms", "0s").
fn human(d: Duration) -> String {
    let ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    humantime::format_duration(Duration::from_millis(ms)).to_string()
}

fn human_secs(secs: f64) -> String {
    human(Duration::try_from_secs_f64(secs).unwrap_or(Duration::MAX))
}
