//! Shadow traffic's response diffing (issue 11), the pure part: the proxy sends a copy of an
//! eligible request to the other backend (and now and then a second copy to the same one, to
//! measure noise) and hands the complete answers here. Nothing in this module does I/O or
//! knows Pingora: plain data in, plain data out, table-tested.
//!
//! - `response` — `CapturedResponse`, what the wiring captured of one answer.
//! - `field` — `FieldPath` (`status`, `ratelimit-remaining`, `$.user.email`, `$.token#sub`,
//!   `sse.final`, …) and `FieldDiff`.
//! - `diff` — `compare(route, a, b, ignore) -> Comparison`: status, content type, the
//!   contract's headers, and the body (JSON field by field, JWTs by their lasting claims,
//!   server-sent events by sequence and shape, anything else as bytes).
//! - `ignore` — `IgnoreList`, the configured `"ROUTE FIELD"` entries a diff never reports.
//! - `redact` — every value cut short, with credentials and JWTs hidden.
//! - `noise` — Diffy's rule: a field is a real mismatch only when it differs across versions
//!   clearly more often than between two calls to the same version.
//! - `stats` — per route and field counts, bounded, with redacted samples; `report` — the
//!   `GET /admin/shadow` document and the mismatch rate the rollout judge can read.
//!
//! Around that core, the wiring: `settings` (`[shadow]`), `choice` (whether a request is
//! shadowed, a pure step of the request path), `request` (one request's shadow through
//! Pingora's hooks: body copy, primary capture), `mirror` (sending it, bounded in flight and
//! time), `state` (the client, the key, the statistics) and `metrics`.

pub mod choice;
pub mod diff;
pub mod field;
pub mod ignore;
mod json;
mod jwt;
pub mod metrics;
pub mod mirror;
pub mod noise;
pub mod redact;
pub mod report;
pub mod request;
pub mod response;
pub mod settings;
mod sse;
pub mod state;
pub mod stats;

pub use diff::{BodyCheck, Comparison, compare};
pub use field::{FieldDiff, FieldPath};
pub use ignore::{IgnoreError, IgnoreList};
pub use noise::{Thresholds, Verdict};
pub use response::CapturedResponse;
pub use stats::{Kind, Limits, Outcome, Outcomes, Stats};
