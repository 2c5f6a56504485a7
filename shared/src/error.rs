//! The one error type of the API and its one mapping to status, code, headers and JSON body.

pub use common::envelope::{ErrorBody, ErrorEnvelope, FieldError};
use http::header::{ALLOW, RETRY_AFTER, WWW_AUTHENTICATE};
use http::{HeaderName, HeaderValue, StatusCode};

use crate::endpoint::Methods;
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
    MethodNotAllowed { allow: Methods },
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
    /// A shared store (Redis) holding the budget or the login throttle did not answer. The
    /// detail is logged, never sent.
    #[error("a shared store is unreachable; retry shortly")]
    StoreUnavailable(String),
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

    pub fn status(&self) -> StatusCode {
        match self {
            Self::Validation(_) => StatusCode::BAD_REQUEST,
            Self::InvalidCredentials | Self::Token { .. } => StatusCode::UNAUTHORIZED,
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            Self::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::UpstreamError => StatusCode::BAD_GATEWAY,
            Self::UpstreamUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            Self::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
            Self::StoreUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
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
            Self::StoreUnavailable(_) => "STORE_UNAVAILABLE",
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
    pub fn headers(&self) -> Vec<(HeaderName, HeaderValue)> {
        match self {
            Self::MethodNotAllowed { allow } => vec![(ALLOW, allow.header_value())],
            Self::RateLimited { retry_after_secs } => {
                vec![(RETRY_AFTER, HeaderValue::from(*retry_after_secs))]
            }
            // The store is usually back within a second (a restart, a failover).
            Self::StoreUnavailable(_) => {
                vec![(RETRY_AFTER, const { HeaderValue::from_static("1") })]
            }
            Self::Token { .. } => vec![(
                WWW_AUTHENTICATE,
                const { HeaderValue::from_static("Bearer") },
            )],
            _ => Vec::new(),
        }
    }

    /// The whole answer for this error in the standard `{"error": …}` shape.
    pub fn into_reply(self) -> Reply {
        match &self {
            Self::Internal(detail) => tracing::error!(error = %detail, "internal error"),
            Self::StoreUnavailable(detail) => {
                tracing::warn!(error = %detail, "shared store unavailable");
            }
            _ => {}
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

    /// One error of each kind. The match has no wildcard, so a new variant does not compile
    /// until it is listed here, and then the spec test below asks for it in `docs/API.md`.
    fn one_of_each() -> Vec<ApiError> {
        let every = vec![
            ApiError::validation("email", "is required"),
            ApiError::InvalidCredentials,
            ApiError::token(TokenErrorKind::Missing, "m"),
            ApiError::token(TokenErrorKind::Invalid, "m"),
            ApiError::token(TokenErrorKind::Expired, "m"),
            ApiError::NotFound,
            ApiError::MethodNotAllowed {
                allow: crate::endpoint::Methods::Post,
            },
            ApiError::PayloadTooLarge { limit: 1 },
            ApiError::UnsupportedMediaType,
            ApiError::RateLimited {
                retry_after_secs: 1,
            },
            ApiError::UpstreamError,
            ApiError::UpstreamUnavailable,
            ApiError::UpstreamTimeout,
            ApiError::StoreUnavailable("x".into()),
            ApiError::internal("x"),
        ];
        for error in &every {
            match error {
                ApiError::Validation(_)
                | ApiError::InvalidCredentials
                | ApiError::Token { .. }
                | ApiError::NotFound
                | ApiError::MethodNotAllowed { .. }
                | ApiError::PayloadTooLarge { .. }
                | ApiError::UnsupportedMediaType
                | ApiError::RateLimited { .. }
                | ApiError::UpstreamError
                | ApiError::UpstreamUnavailable
                | ApiError::UpstreamTimeout
                | ApiError::StoreUnavailable(_)
                | ApiError::Internal(_) => {}
            }
        }
        every
    }

    #[test]
    fn the_spec_in_the_repo_lists_every_code_with_its_status_and_every_endpoint() {
        let spec = include_str!("../../docs/API.md");
        for error in one_of_each() {
            let row = format!("| {} | `{}`", error.status().as_u16(), error.code());
            let listed = spec.lines().any(|line| {
                line.starts_with(&format!("| {} |", error.status().as_u16()))
                    && line.contains(&format!("`{}`", error.code()))
            });
            assert!(listed, "docs/API.md has no row like {row:?}");
        }
        for endpoint in crate::endpoint::Endpoint::ALL {
            let method = match endpoint.methods() {
                crate::endpoint::Methods::Post => "POST",
                crate::endpoint::Methods::Get => "GET",
            };
            let heading = format!("## {method} {}", endpoint.path());
            assert!(
                spec.lines().any(|line| line == heading),
                "docs/API.md has no section {heading:?}"
            );
        }
    }
}
