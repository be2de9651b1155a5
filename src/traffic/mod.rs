//! Device traffic: what publishers send and what subscribers measure.
//!
//! - [`payload`]: payload templates (raw bytes of a size, or JSON with generators), rendered
//!   without allocation on the hot path, each carrying a measurement [`payload::Header`].

pub mod payload;
