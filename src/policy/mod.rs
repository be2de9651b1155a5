//! AWS IoT Core policies, offline: the document model, the evaluator (`policy eval`) and the
//! lint (`policy lint`).
//!
//! Developers who change a device policy need to know before production that device A may
//! publish to its own topics and must not read device B's. AWS answers one request at a time
//! with its TestAuthorization API, online; this answers batches locally with the semantics of
//! the AWS IoT Core developer guide (cited in each submodule), and lints the documented traps.

mod document;
mod eval;
mod lint;
mod pattern;

pub use document::{load_all, Effect, Policy, PolicyError, Statement};
pub use eval::{evaluate, Decision, Evaluation, Request, StatementRef};
pub use lint::{lint, Finding};
pub use pattern::{CertificateFields, Context, Pattern, ResourcePattern};

#[cfg(test)]
mod tests;

/// The policies a scenario attaches to every device, and the `arn:aws:iot:REGION:ACCOUNT`
/// prefix their resources use: what the embedded broker enforces and `[policy]` expects.
#[derive(Clone, Debug)]
pub struct PolicySet {
    /// The policy documents (unioned).
    pub policies: Vec<Policy>,
    /// `arn:aws:iot:REGION:ACCOUNT`, without the trailing `:`.
    pub arn: String,
    /// Client ids the embedded broker does not restrict: the scenario's observer, which on
    /// AWS would be another principal with its own policy.
    pub unrestricted: Vec<String>,
}

impl PolicySet {
    /// Whether `client_id` (also its certificate CN) may do `action` on `kind/name`
    /// (`client/ID`, `topic/T`, `topicfilter/F`).
    pub fn allows(&self, client_id: &str, action: &str, kind: &str, name: &str) -> bool {
        self.decide(client_id, action, kind, name)
    }

    /// What the embedded broker enforces: [`allows`](PolicySet::allows), except that
    /// `unrestricted` devices may do anything.
    pub fn enforce(&self, client_id: &str, action: &str, kind: &str, name: &str) -> bool {
        self.unrestricted.iter().any(|u| u == client_id)
            || self.decide(client_id, action, kind, name)
    }

    fn decide(&self, client_id: &str, action: &str, kind: &str, name: &str) -> bool {
        let mut ctx = Context {
            client_id: Some(client_id.to_owned()),
            ..Context::default()
        };
        ctx.certificate
            .subject
            .insert("CommonName".into(), client_id.to_owned());
        let resource = format!("{}:{kind}/{name}", self.arn);
        evaluate(&self.policies, &ctx, action, &resource).decision == Decision::Allowed
    }
}
