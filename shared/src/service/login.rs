//! `POST /api/auth/login`: body checks, the login throttle, one password verify, a token.
//!
//! A shadow (`crate::shadow`) gets the same answer, a locked email's 429 included, but never
//! moves the throttle: its primary already recorded the failure or cleared the count.

use bytes::Bytes;
use futures::Stream;
use http::StatusCode;

use super::{Service, unix_now};
use crate::api::{LoginRequest, LoginResponse};
use crate::db::now_ms;
use crate::error::ApiError;
use crate::metrics::LoginOutcome;
use crate::reply::Reply;
use crate::request::{Incoming, read_json_object};
use crate::routes;

impl Service {
    /// `POST /api/auth/login`.
    pub async fn login<B, E>(&self, request: Incoming<'_, B>) -> Reply
    where
        B: Stream<Item = Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        let shadow = request.shadow;
        let (outcome, result) = self.try_login(request).await;
        if let Some(metrics) = self.counted(shadow) {
            metrics.login(outcome);
        }
        result.unwrap_or_else(ApiError::into_reply)
    }

    async fn try_login<B, E>(
        &self,
        request: Incoming<'_, B>,
    ) -> (LoginOutcome, Result<Reply, ApiError>)
    where
        B: Stream<Item = Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        let body = read_json_object(request.content_type, request.body, self.body_limit()).await;
        let login = match body.and_then(|body| LoginRequest::from_json(&body)) {
            Ok(login) => login,
            Err(error) => return (LoginOutcome::Invalid, Err(error)),
        };
        match self.authenticate(login, request.shadow).await {
            Ok(reply) => (LoginOutcome::Success, Ok(reply)),
            Err(error @ ApiError::InvalidCredentials) => {
                (LoginOutcome::InvalidCredentials, Err(error))
            }
            Err(error @ ApiError::RateLimited { .. }) => {
                if let Some(metrics) = self.counted(request.shadow) {
                    metrics.rate_limited(routes::LOGIN);
                }
                (LoginOutcome::Throttled, Err(error))
            }
            Err(error) => (LoginOutcome::Error, Err(error)),
        }
    }

    /// Known and unknown emails take the same path (throttle, lookup, one argon2 verify,
    /// throttle update), so neither the answer nor its timing tells them apart. A `shadow`
    /// leaves out the throttle update.
    async fn authenticate(&self, login: LoginRequest, shadow: bool) -> Result<Reply, ApiError> {
        let inner = &self.inner;
        let throttle = inner.config.auth.login_throttle;
        if let Some(retry_after_secs) = inner
            .throttle
            .locked_for(&login.email, throttle, now_ms())
            .await?
        {
            return Err(ApiError::RateLimited { retry_after_secs });
        }
        let user = inner.users.find_by_email(&login.email).await?;
        let hash = user.as_ref().map(|u| u.password_hash.clone());
        let matches = inner.passwords.verify(login.password, hash).await?;
        let user = match user {
            Some(user) if matches => user,
            _ => {
                if !shadow {
                    inner
                        .throttle
                        .record_failure(&login.email, throttle, now_ms())
                        .await?;
                }
                return Err(ApiError::InvalidCredentials);
            }
        };
        if !shadow {
            inner.throttle.clear(&login.email).await?;
        }
        let claims = inner
            .tokens
            .claims_for(&user.id, &user.email, &user.name, unix_now());
        let token = inner.tokens.sign(&claims)?;
        tracing::info!(user = %user.id, "login succeeded");
        Ok(Reply::json(
            StatusCode::OK,
            &LoginResponse {
                token,
                token_type: "Bearer",
                expires_in: inner.tokens.ttl_seconds(),
                user: user.view(),
            },
        ))
    }
}
