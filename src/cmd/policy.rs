//! `thingswarm policy eval` and `thingswarm policy lint`: the offline AWS IoT policy tools.

use std::path::Path;

use anyhow::Context as _;

use crate::cli::{OutputFormat, PolicyCommand, PolicyEvalArgs};
use crate::cmd::Outcome;
use crate::policy::{self, Context, Decision, PolicyError, Request};

/// Runs `thingswarm policy ...`.
pub fn run(cmd: PolicyCommand) -> anyhow::Result<Outcome> {
    match cmd {
        PolicyCommand::Eval(args) => eval(args),
        PolicyCommand::Lint { files, format } => lint(&files, format),
    }
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path, what: &str) -> Result<T, PolicyError> {
    let file = path.display();
    let text = std::fs::read_to_string(path)
        .map_err(|e| PolicyError::Input(format!("{file}: cannot read {what}: {e}")))?;
    serde_json::from_str(&text)
        .map_err(|e| PolicyError::Input(format!("{file}: invalid {what}: {e}")))
}

fn eval(args: PolicyEvalArgs) -> anyhow::Result<Outcome> {
    let policies = policy::load_all(&args.policies)?;
    let ctx: Context = match &args.context {
        Some(path) => read_json(
            path,
            "context (expected a JSON object with client_id, thing_name, certificate.subject, ...)",
        )?,
        None => Context::default(),
    };
    let requests: Vec<Request> = match (&args.requests, args.action, args.resource) {
        (Some(path), _, _) => read_json(
            path,
            "requests (expected a JSON list of {\"action\", \"resource\", \"expect\"?})",
        )?,
        (None, Some(action), Some(resource)) => vec![Request {
            action,
            resource,
            expect: None,
        }],
        // clap requires one of the two forms.
        _ => anyhow::bail!(PolicyError::Input(
            "give --action and --resource, or --requests FILE".into()
        )),
    };
    for (i, r) in requests.iter().enumerate() {
        r.validate().with_context(|| match &args.requests {
            Some(p) => format!("{}: request {i}", p.display()),
            None => "the request".into(),
        })?;
    }
    let mut mismatches = 0usize;
    let mut rows = Vec::with_capacity(requests.len());
    for r in &requests {
        let e = policy::evaluate(&policies, &ctx, &r.action, &r.resource);
        let ok = r.expect.is_none_or(|want| want == e.decision);
        if !ok {
            mismatches += 1;
        }
        rows.push((r, e, ok));
    }
    match args.format {
        OutputFormat::Json => {
            let results: Vec<_> = rows
                .iter()
                .map(|(r, e, ok)| {
                    serde_json::json!({
                        "action": r.action,
                        "resource": r.resource,
                        "decision": e.decision,
                        "decided_by": e.decided_by,
                        "expect": r.expect,
                        "as_expected": r.expect.map(|_| *ok),
                    })
                })
                .collect();
            let doc = serde_json::json!({ "results": results, "mismatches": mismatches });
            println!("{}", serde_json::to_string_pretty(&doc)?);
        }
        OutputFormat::Text => {
            for (r, e, ok) in &rows {
                let by = match &e.decided_by {
                    Some(s) => format!("  by {s}"),
                    None if e.decision == Decision::ImplicitDeny => {
                        "  (no statement matched)".into()
                    }
                    None => String::new(),
                };
                let flag = match r.expect {
                    Some(want) if !ok => format!("  MISMATCH: expected {want}"),
                    _ => String::new(),
                };
                println!("{:<13} {} {}{by}{flag}", e.decision, r.action, r.resource);
            }
            if mismatches > 0 {
                println!(
                    "{mismatches} of {} request(s) differ from their expectation",
                    rows.len()
                );
            }
        }
    }
    Ok(if mismatches > 0 {
        Outcome::Failed
    } else {
        Outcome::Done
    })
}

fn lint(files: &[std::path::PathBuf], format: OutputFormat) -> anyhow::Result<Outcome> {
    let policies = policy::load_all(files)?;
    let findings = policy::lint(&policies);
    match format {
        OutputFormat::Json => {
            let doc = serde_json::json!({ "findings": findings });
            println!("{}", serde_json::to_string_pretty(&doc)?);
        }
        OutputFormat::Text => {
            for f in &findings {
                let sid = f
                    .sid
                    .as_ref()
                    .map(|s| format!(" (Sid {s:?})"))
                    .unwrap_or_default();
                println!(
                    "warning[{}] {} statement {}{sid}: {}",
                    f.code, f.policy, f.statement, f.message
                );
            }
            println!(
                "{} policy file(s), {} warning(s)",
                policies.len(),
                findings.len()
            );
        }
    }
    Ok(if findings.is_empty() {
        Outcome::Done
    } else {
        Outcome::Failed
    })
}
