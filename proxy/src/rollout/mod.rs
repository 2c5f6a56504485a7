//! Progressive delivery: the statistical judge of new against legacy (`judge`, over `stats`)
//! and the controller that moves `routing.new_percent` through a step schedule
//! (`controller`). Both are pure: plain data in, plain data out, time passed in, so they are
//! tested over a simulated clock with seeded synthetic traffic, on their own and together
//! in whole simulated rollouts (`simulation`, tests only). Around them: `cohorts`
//! (collected on the request path), `report` (one interval's verdicts, overall and per
//! route), `config_file` (writing the weight into `config.toml`, comments kept, and any file
//! atomically) and `runner` (the background service that carries out the controller's
//! actions: it writes `config.toml` and the state file, and applies the new weight at once).
//! The cohorts come from a `source`: this proxy's own collector, or every proxy's exported
//! series read back from Prometheus (`promql`), so one controller judges a whole fleet.

pub mod api;
pub mod cohorts;
pub mod config_file;
pub mod controller;
pub mod judge;
pub mod metrics;
pub mod promql;
pub mod report;
pub mod runner;
#[cfg(test)]
mod simulation;
pub mod source;
pub mod stats;
#[cfg(test)]
mod synthetic;

use serde::{Deserialize, Serialize};

/// The result of judging one metric, or a whole evaluation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Pass,
    Fail,
    /// Too little data to say; never promotes, never rolls back.
    Inconclusive,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Pass => "pass",
            Outcome::Fail => "fail",
            Outcome::Inconclusive => "inconclusive",
        }
    }
}

/// What the controller learns from one evaluation interval.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Evaluation {
    /// `Pass` only if every metric passed; `Fail` if any failed; else `Inconclusive`.
    pub outcome: Outcome,
    /// Roll back at once, whatever the counts of passes and failures: the canary's error
    /// rate reached `critical_error_rate`, or the new backend is down.
    pub critical: Option<CriticalReason>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CriticalReason {
    CriticalErrorRate,
    BackendDown,
}
