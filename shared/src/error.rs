//! The one error type of the API and its one mapping to status, code, headers and JSON body.

pub use common::envelope::{ErrorBody, ErrorEnvelope, FieldError};

use crate::reply::Reply;

/// Why a bearer token was refused; each kind has its own code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenErrorKind {
    Missing,
    Invalid,
    Expired,
}

/// Everything a request can fail with. `shared` owns the mapping so both backends answer alike.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{}", join_details(.0))]
    Validation(Vec<FieldError>),
    #[error("invalid email or password")]
    InvalidCredentials,
    #[error("{message}")]
    Token {
        kind: TokenErrorKind,
        message: &'static str,
    },
    #[error("no such route")]
    NotFound,
    #[error("method not allowed")]
    MethodNotAllowed { allow: &'static str },
    #[error("request body is larger than {limit} bytes")]
    PayloadTooLarge { limit: usize },
    #[error("content-type must be application/json")]
    UnsupportedMediaType,
    #[error("too many requests; retry in {retry_after_secs} seconds")]
    RateLimited { retry_after_secs: u64 },
    #[error("the AI provider answered with an error")]
    UpstreamError,
    #[error("the AI provider is overloaded or unreachable")]
    UpstreamUnavailable,
    #[error("the AI provider did not answer in time")]
    UpstreamTimeout,
    /// The detail is logged, never sent.
    #[error("internal error")]
    Internal(String),
}

fn join_details(details: &[FieldError]) -> String {
    details
        .iter()
        .map(|d| format!("{}: {}", d.field, d.message))
        .collect::<Vec<_>>()
        .join("; ")
}

impl ApiError {
    pub fn validation(field: &str, message: &str) -> Self {
        Self::Validation(vec![FieldError::new(field, message)])
    }

    pub fn token(kind: TokenErrorKind, message: &'static str) -> Self {
        Self::Token { kind, message }
    }

    pub fn internal(detail: impl std::fmt::Display) -> Self {
        Self::Internal(detail.to_string())
    }

    pub fn status(&self) -> u16 {
        match self {
            Self::Validation(_) => 400,
            Self::InvalidCredentials | Self::Token { .. } => 401,
            Self::NotFound => 404,
            Self::MethodNotAllowed { .. } => 405,
            Self::PayloadTooLarge { .. } => 413,
            Self::UnsupportedMediaType => 415,
            Self::RateLimited { .. } => 429,
            Self::UpstreamError => 502,
            Self::UpstreamUnavailable => 503,
            Self::UpstreamTimeout => 504,
            Self::Internal(_) => 500,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            Self::Validation(_) => "VALIDATION_ERROR",
            Self::InvalidCredentials => "INVALID_CREDENTIALS",
            Self::Token { kind, .. } => match kind {
                TokenErrorKind::Missing => "TOKEN_MISSING",
                TokenErrorKind::Invalid => "TOKEN_INVALID",
                TokenErrorKind::Expired => "TOKEN_EXPIRED",
            },
            Self::NotFound => "NOT_FOUND",
            Self::MethodNotAllowed { .. } => "METHOD_NOT_ALLOWED",
            Self::PayloadTooLarge { .. } => "PAYLOAD_TOO_LARGE",
            Self::UnsupportedMediaType => "UNSUPPORTED_MEDIA_TYPE",
            Self::RateLimited { .. } => "RATE_LIMITED",
            Self::UpstreamError => "UPSTREAM_ERROR",
            Self::UpstreamUnavailable => "UPSTREAM_UNAVAILABLE",
            Self::UpstreamTimeout => "UPSTREAM_TIMEOUT",
            Self::Internal(_) => "INTERNAL",
        }
    }

    /// The body's `error` object.
    pub fn body(&self) -> ErrorBody {
        ErrorBody {
            code: self.code(),
            message: self.to_string(),
            details: match self {
                Self::Validation(details) => Some(details.clone()),
                _ => None,
            },
        }
    }

    /// Headers the contract attaches to this error.
    pub fn headers(&self) -> Vec<(&'static str, String)> {
        match self {
            Self::MethodNotAllowed { allow } => vec![("allow", (*allow).to_owned())],
            Self::RateLimited { retry_after_secs } => {
                vec![("retry-after", retry_after_secs.to_string())]
            }
            Self::Token { .. } => vec![("www-authenticate", "Bearer".to_owned())],
            _ => Vec::new(),
        }
    }

    /// The whole answer for this error in the standard `{"error": …}` shape.
    pub fn into_reply(self) -> Reply {
        if let Self::Internal(detail) = &self {
            tracing::error!(error = %detail, "internal error");
        }
        let body = ErrorEnvelope { error: self.body() };
        Reply::json(self.status(), &body).with_headers(self.headers())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_lists_every_field_in_the_message_and_details() {
        let error = ApiError::Validation(vec![
            FieldError::new("email", "must be a valid email address"),
            FieldError::new("password", "is required"),
        ]);
        let body = serde_json::to_value(ErrorEnvelope {
            error: error.body(),
        })
        .unwrap();
        assert_eq!(
            body,
            serde_json::json!({"error": {
                "code": "VALIDATION_ERROR",
                "message": "email: must be a valid email address; password: is required",
                "details": [
                    {"field": "email", "message": "must be a valid email address"},
                    {"field": "password", "message": "is required"}
                ]
            }})
        );
    }

    #[test]
    fn internal_errors_never_leak_their_detail() {
        let error = ApiError::internal("disk I/O error at /var/secret");
        assert_eq!(error.body().message, "internal error");
        assert!(error.body().details.is_none());
    }
}
