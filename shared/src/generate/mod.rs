//! Text generation behind one `Provider` trait: `local` (offline, deterministic) by default,
//! `anthropic` (the Messages API) when configured.

pub mod anthropic;
pub mod local;

use async_trait::async_trait;
use futures::stream::BoxStream;

use crate::api::Usage;
use crate::error::ApiError;

/// A validated generation request, as providers see it.
#[derive(Debug, Clone, PartialEq)]
pub struct Prompt {
    pub text: String,
    pub max_tokens: u32,
    pub temperature: f64,
    /// The caller's model, or `None` for the provider's configured one.
    pub model: Option<String>,
}

/// A whole (non-streamed) generation.
#[derive(Debug, Clone, PartialEq)]
pub struct Generation {
    pub model: String,
    pub content: String,
    pub stop_reason: String,
    pub usage: Usage,
}

/// One step of a streamed generation; a stream ends with `Done` or an error.
#[derive(Debug, Clone, PartialEq)]
pub enum StreamEvent {
    Delta(String),
    Done {
        model: String,
        stop_reason: String,
        usage: Usage,
    },
}

/// How a provider failed, in the contract's three upstream classes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProviderError {
    /// The provider answered with an error (502).
    #[error("provider error: {0}")]
    Upstream(String),
    /// Overloaded, rate-limiting us, or unreachable (503).
    #[error("provider unavailable: {0}")]
    Unavailable(String),
    /// No answer in time (504).
    #[error("provider timed out")]
    Timeout,
}

impl From<ProviderError> for ApiError {
    fn from(error: ProviderError) -> Self {
        tracing::warn!(%error, "generation failed");
        match error {
            ProviderError::Upstream(_) => ApiError::UpstreamError,
            ProviderError::Unavailable(_) => ApiError::UpstreamUnavailable,
            ProviderError::Timeout => ApiError::UpstreamTimeout,
        }
    }
}

pub type EventStream = BoxStream<'static, Result<StreamEvent, ProviderError>>;

#[async_trait]
pub trait Provider: Send + Sync {
    /// The name used in metrics (`local`, `anthropic`).
    fn name(&self) -> &'static str;

    async fn generate(&self, prompt: Prompt) -> Result<Generation, ProviderError>;

    /// Starts a streamed generation. Failures before the first event are returned here, so the
    /// caller can still answer with a status code; later ones arrive in the stream.
    async fn stream(&self, prompt: Prompt) -> Result<EventStream, ProviderError>;
}
