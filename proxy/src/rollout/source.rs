//! Where an interval's cohorts come from (`rollout.analysis.source`): `local`, the
//! `Collector` of this proxy's own answers, or `prometheus` (`rollout::prometheus`), every
//! proxy's exported cohort series read back through PromQL, so that one controller judges
//! the whole fleet's traffic. Either way the judge gets the same `IntervalSample`; a source
//! that cannot say makes the evaluation inconclusive, never a promotion.

use std::time::{Duration, SystemTime};

use async_trait::async_trait;

use super::cohorts::{Collector, IntervalSample};

/// The span of one evaluation: since the last one, or since the weight last changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub start: SystemTime,
    pub end: SystemTime,
}

impl Window {
    /// Its length; at least a millisecond, the shortest range PromQL can say.
    pub fn length(&self) -> Duration {
        (self.end.duration_since(self.start))
            .unwrap_or_default()
            .max(Duration::from_millis(1))
    }
}

#[async_trait]
pub trait CohortSource: Send + Sync {
    /// What the two cohorts did over `window`.
    async fn sample(&self, window: Window) -> Result<IntervalSample, SourceError>;
}

#[async_trait]
impl CohortSource for Collector {
    /// The answers recorded since the last take: the runner starts a window exactly when it
    /// takes the collector, so the window is the collector's own.
    async fn sample(&self, _window: Window) -> Result<IntervalSample, SourceError> {
        Ok(self.take())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("cannot make an HTTP client for Prometheus: {0}")]
    Client(String),
    #[error("cannot reach Prometheus at {url}: {message}")]
    Unreachable { url: String, message: String },
    #[error("Prometheus at {url} refused the query ({status}): {message}")]
    Refused {
        url: String,
        status: http::StatusCode,
        message: String,
    },
    #[error("cannot read Prometheus's answer from {url}: {message}")]
    Malformed { url: String, message: String },
    #[error("Prometheus missed scrapes of {instances} in the window: their traffic is not counted")]
    Incomplete { instances: String },
}

impl SourceError {
    pub fn kind(&self) -> SourceErrorKind {
        match self {
            SourceError::Client(_) | SourceError::Unreachable { .. } => {
                SourceErrorKind::Unreachable
            }
            SourceError::Refused { .. } => SourceErrorKind::Refused,
            SourceError::Malformed { .. } => SourceErrorKind::Malformed,
            SourceError::Incomplete { .. } => SourceErrorKind::Incomplete,
        }
    }
}

/// The `kind` label of `proxy_rollout_source_errors_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceErrorKind {
    /// No answer: connection refused, timeout, no client.
    Unreachable,
    /// An answer that is an error: a bad query, Prometheus overloaded.
    Refused,
    /// An answer that is not the vector asked for.
    Malformed,
    /// A target the selector matches was not scraped throughout the window.
    Incomplete,
}

impl SourceErrorKind {
    pub const ALL: [SourceErrorKind; 4] = [
        SourceErrorKind::Unreachable,
        SourceErrorKind::Refused,
        SourceErrorKind::Malformed,
        SourceErrorKind::Incomplete,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            SourceErrorKind::Unreachable => "unreachable",
            SourceErrorKind::Refused => "refused",
            SourceErrorKind::Malformed => "malformed",
            SourceErrorKind::Incomplete => "incomplete",
        }
    }
}
