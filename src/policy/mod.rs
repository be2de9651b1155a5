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
