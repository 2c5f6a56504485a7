//! `POST /api/auth/verify`: a token from the header, else from the body, checked.

use bytes::Bytes;
use futures::Stream;
use http::StatusCode;

use super::{Service, unix_now};
use crate::api::{UserView, VerifyFailure, VerifyRequest, VerifyResponse};
use crate::auth::tokens::{self, Claims};
use crate::error::ApiError;
use crate::reply::Reply;
use crate::request::{Incoming, bearer_token, read_json_object};

impl Service {
    /// `POST /api/auth/verify`. Token failures answer `{"valid": false, "error": …}`.
    pub async fn verify<B, E>(&self, request: Incoming<'_, B>) -> Reply
    where
        B: Stream<Item = Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        match self.try_verify(request).await {
            Ok(reply) => reply,
            Err(error @ ApiError::Token { .. }) => {
                let headers = error.headers();
                Reply::json(
                    StatusCode::UNAUTHORIZED,
                    &VerifyFailure {
                        valid: false,
                        error: error.body(),
                    },
                )
                .with_headers(headers)
            }
            Err(error) => error.into_reply(),
        }
    }

    async fn try_verify<B, E>(&self, request: Incoming<'_, B>) -> Result<Reply, ApiError>
    where
        B: Stream<Item = Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        let tokens = &self.inner.tokens;
        // The header, when present, wins and is checked before the body is read.
        let from_header = match bearer_token(request.authorization)? {
            Some(token) => Some(tokens.verify(token, unix_now())?),
            None => None,
        };
        let body = read_json_object(request.content_type, request.body, self.body_limit()).await?;
        let from_body = VerifyRequest::from_json(&body)?.token;
        let claims = match (from_header, from_body) {
            (Some(claims), _) => claims,
            (None, Some(token)) => tokens.verify(&token, unix_now())?,
            (None, None) => return Err(tokens::missing()),
        };
        Ok(Reply::json(
            StatusCode::OK,
            &VerifyResponse {
                valid: true,
                expires_at: rfc3339(claims.exp),
                user: user_of(claims),
            },
        ))
    }
}

fn user_of(claims: Claims) -> UserView {
    UserView {
        id: claims.sub,
        email: claims.email,
        name: claims.name,
    }
}

fn rfc3339(unix: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}
