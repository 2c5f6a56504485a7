//! `Service`: the one implementation of the contract that both framework adapters call.
//!
//! Each method takes what a handler extracted (`Incoming`) and returns a framework-free
//! `Reply`, running the contract's checks in its order: token (401), content type (415),
//! body size (413), validation (400), rate limit (429).

use std::sync::Arc;

use bytes::Bytes;
use futures::{Stream, StreamExt};

use crate::api::{
    DeltaEvent, DoneEvent, GenerateRequest, GenerateResponse, HealthResponse, LoginRequest,
    LoginResponse, UserView, VerifyFailure, VerifyRequest, VerifyResponse,
};
use crate::auth::passwords::{PasswordError, Passwords};
use crate::auth::secret::{self, SecretError};
use crate::auth::throttle::{LoginThrottleStore, SqliteLoginThrottle};
use crate::auth::tokens::{self, Claims, Tokens};
use crate::auth::users::{User, Users};
use crate::config::{Config, ProviderKind};
use crate::db::{Database, StoreError, now_ms};
use crate::error::{ApiError, ErrorEnvelope};
use crate::generate::anthropic::{API_KEY_ENV, AnthropicProvider};
use crate::generate::local::LocalProvider;
use crate::generate::{Prompt, Provider, ProviderError, StreamEvent};
use crate::metrics::{LoginOutcome, Metrics};
use crate::ratelimit::{RateLimitStore, SqliteRateLimitStore};
use crate::reply::{APPLICATION_JSON, Reply, sse_event};
use crate::request::{Incoming, bearer_token, read_json_object};
use crate::routes;

/// The environment variable that, when set, overrides `auth.secret_file`.
pub const JWT_SECRET_ENV: &str = "JWT_SECRET";

pub const DEMO_EMAIL: &str = "demo@example.com";
pub const DEMO_PASSWORD: &str = "demo-password";
pub const DEMO_NAME: &str = "Demo User";

/// Which side of the migration this process is; the `backend` of `/health` and of metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendName {
    Legacy,
    New,
}

impl BackendName {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Legacy => "legacy",
            Self::New => "new",
        }
    }
}

/// Why the service could not start; each names what to fix.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("jwt secret: {0}")]
    Secret(#[from] SecretError),
    #[error(transparent)]
    Password(#[from] PasswordError),
    #[error("generate.provider is \"anthropic\" but {API_KEY_ENV} is not set")]
    MissingApiKey,
    #[error("generate.anthropic: {0}")]
    Provider(ProviderError),
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        ApiError::internal(error)
    }
}

impl From<PasswordError> for ApiError {
    fn from(error: PasswordError) -> Self {
        ApiError::internal(error)
    }
}

#[derive(Clone)]
pub struct Service {
    inner: Arc<Inner>,
}

struct Inner {
    backend: BackendName,
    config: Config,
    users: Users,
    passwords: Passwords,
    tokens: Tokens,
    throttle: Box<dyn LoginThrottleStore>,
    limiter: Box<dyn RateLimitStore>,
    provider: Box<dyn Provider>,
    metrics: Metrics,
    openapi: Bytes,
}

fn unix_now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
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

impl Service {
    /// Opens the database, loads the secret, seeds the demo user if configured, and picks the
    /// provider. Blocking (file I/O, one password hash): call it before serving.
    pub fn new(config: Config, backend: BackendName) -> Result<Self, StartupError> {
        let db = Database::open(&config.database.path)?;
        let secret = secret::load_or_create(JWT_SECRET_ENV, &config.auth.secret_file)?;
        let users = Users::new(db.clone());
        let passwords = Passwords::new(config.hash_concurrency())?;
        if config.database.seed_demo_user {
            seed_demo_user(&users)?;
        }
        let provider: Box<dyn Provider> = match config.generate.provider {
            ProviderKind::Local => Box::new(LocalProvider::new(&config.generate.local)),
            ProviderKind::Anthropic => {
                let key = std::env::var(API_KEY_ENV).map_err(|_| StartupError::MissingApiKey)?;
                Box::new(
                    AnthropicProvider::new(&config.generate.anthropic, key)
                        .map_err(StartupError::Provider)?,
                )
            }
        };
        Ok(Self {
            inner: Arc::new(Inner {
                backend,
                tokens: Tokens::new(&secret, &config.auth),
                throttle: Box::new(SqliteLoginThrottle::new(db.clone())),
                limiter: Box::new(SqliteRateLimitStore::new(db)),
                provider,
                metrics: Metrics::new(backend.as_str()),
                openapi: Bytes::from(crate::openapi::document_json()),
                users,
                passwords,
                config,
            }),
        })
    }

    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    fn body_limit(&self) -> usize {
        self.inner.config.server.body_limit_bytes
    }

    /// `POST /api/auth/login`.
    pub async fn login<B, E>(&self, request: Incoming<'_, B>) -> Reply
    where
        B: Stream<Item = Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        let (outcome, result) = self.try_login(request).await;
        self.inner.metrics.login(outcome);
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
        match self.authenticate(login).await {
            Ok(reply) => (LoginOutcome::Success, Ok(reply)),
            Err(error @ ApiError::InvalidCredentials) => {
                (LoginOutcome::InvalidCredentials, Err(error))
            }
            Err(error @ ApiError::RateLimited { .. }) => {
                self.inner.metrics.rate_limited(routes::LOGIN);
                (LoginOutcome::Throttled, Err(error))
            }
            Err(error) => (LoginOutcome::Error, Err(error)),
        }
    }

    /// Known and unknown emails take the same path (throttle, lookup, one argon2 verify,
    /// throttle update), so neither the answer nor its timing tells them apart.
    async fn authenticate(&self, login: LoginRequest) -> Result<Reply, ApiError> {
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
                inner
                    .throttle
                    .record_failure(&login.email, throttle, now_ms())
                    .await?;
                return Err(ApiError::InvalidCredentials);
            }
        };
        inner.throttle.clear(&login.email).await?;
        let claims = inner
            .tokens
            .claims_for(&user.id, &user.email, &user.name, unix_now());
        let token = inner.tokens.sign(&claims)?;
        tracing::info!(user = %user.id, "login succeeded");
        Ok(Reply::json(
            200,
            &LoginResponse {
                token,
                token_type: "Bearer",
                expires_in: inner.tokens.ttl_seconds(),
                user: user.view(),
            },
        ))
    }

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
                    401,
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
            200,
            &VerifyResponse {
                valid: true,
                expires_at: rfc3339(claims.exp),
                user: user_of(claims),
            },
        ))
    }

    /// `POST /api/ai/generate`, whole or streamed. Every answer after the token check carries
    /// the caller's rate-limit headers.
    pub async fn generate<B, E>(&self, request: Incoming<'_, B>) -> Reply
    where
        B: Stream<Item = Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        self.try_generate(request)
            .await
            .unwrap_or_else(ApiError::into_reply)
    }

    async fn try_generate<B, E>(&self, request: Incoming<'_, B>) -> Result<Reply, ApiError>
    where
        B: Stream<Item = Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        let inner = &self.inner;
        let token = bearer_token(request.authorization)?.ok_or_else(tokens::missing)?;
        let claims = inner.tokens.verify(token, unix_now())?;
        let bucket_key = format!("generate:{}", claims.sub);
        let bucket = inner.config.rate_limit.generate;

        let body = read_json_object(request.content_type, request.body, self.body_limit()).await;
        let generate = match body.and_then(|body| GenerateRequest::from_json(&body)) {
            Ok(generate) => generate,
            Err(error) => {
                // A refused body spends nothing, but still reports the budget.
                let budget = inner.limiter.peek(&bucket_key, bucket, now_ms()).await?;
                return Ok(error.into_reply().with_headers(budget.headers()));
            }
        };
        let budget = inner.limiter.take(&bucket_key, bucket, now_ms()).await?;
        if let Some(retry_after_secs) = budget.retry_after_secs {
            inner.metrics.rate_limited(routes::GENERATE);
            return Ok(ApiError::RateLimited { retry_after_secs }
                .into_reply()
                .with_headers(budget.headers()));
        }
        let prompt = Prompt {
            text: generate.prompt,
            max_tokens: generate.max_tokens,
            temperature: generate.temperature,
            model: generate.model,
        };
        let reply = if generate.stream {
            self.stream(prompt).await
        } else {
            self.whole(prompt).await
        };
        Ok(reply
            .unwrap_or_else(ApiError::into_reply)
            .with_headers(budget.headers()))
    }

    async fn whole(&self, prompt: Prompt) -> Result<Reply, ApiError> {
        let provider = &self.inner.provider;
        let generation = provider.generate(prompt).await?;
        self.inner
            .metrics
            .tokens_generated(provider.name(), generation.usage.output_tokens);
        Ok(Reply::json(
            200,
            &GenerateResponse {
                id: generation_id(),
                model: generation.model,
                content: generation.content,
                stop_reason: generation.stop_reason,
                usage: generation.usage,
            },
        ))
    }

    async fn stream(&self, prompt: Prompt) -> Result<Reply, ApiError> {
        let events = self.inner.provider.stream(prompt).await?;
        let inner = Arc::clone(&self.inner);
        let id = generation_id();
        let body = events.map(move |event| match event {
            Ok(StreamEvent::Delta(text)) => sse_event("delta", &DeltaEvent { text }),
            Ok(StreamEvent::Done {
                model,
                stop_reason,
                usage,
            }) => {
                inner
                    .metrics
                    .tokens_generated(inner.provider.name(), usage.output_tokens);
                sse_event(
                    "done",
                    &DoneEvent {
                        id: id.clone(),
                        model,
                        stop_reason,
                        usage,
                    },
                )
            }
            Err(error) => sse_event(
                "error",
                &ErrorEnvelope {
                    error: ApiError::from(error).body(),
                },
            ),
        });
        Ok(Reply::event_stream(body.boxed()))
    }

    /// `GET /health`.
    pub fn health(&self) -> Reply {
        Reply::json(
            200,
            &HealthResponse {
                status: "ok",
                backend: self.inner.backend.as_str(),
                version: env!("CARGO_PKG_VERSION"),
            },
        )
    }

    /// `GET /metrics`.
    pub fn metrics_text(&self) -> Reply {
        Reply::full(
            200,
            "text/plain; version=0.0.4; charset=utf-8",
            Bytes::from(self.inner.metrics.render()),
        )
    }

    /// `GET /`: the frontend page. It uses only the contract's endpoints, so it works
    /// unchanged against either backend, and through the proxy.
    pub fn frontend(&self) -> Reply {
        Reply::full(
            200,
            "text/html; charset=utf-8",
            Bytes::from_static(include_bytes!("../web/index.html")),
        )
        .with_headers([
            ("cache-control", "no-cache".to_owned()),
            ("x-content-type-options", "nosniff".to_owned()),
        ])
    }

    /// `GET /openapi.json`.
    pub fn openapi(&self) -> Reply {
        Reply::full(200, APPLICATION_JSON, self.inner.openapi.clone())
    }
}

fn user_of(claims: Claims) -> UserView {
    UserView {
        id: claims.sub,
        email: claims.email,
        name: claims.name,
    }
}

fn generation_id() -> String {
    format!("gen_{}", uuid::Uuid::new_v4().simple())
}

fn seed_demo_user(users: &Users) -> Result<(), StartupError> {
    if users.exists_blocking(DEMO_EMAIL)? {
        return Ok(());
    }
    let user = User {
        id: uuid::Uuid::new_v4().to_string(),
        email: DEMO_EMAIL.into(),
        name: DEMO_NAME.into(),
        password_hash: crate::auth::passwords::hash_blocking(DEMO_PASSWORD)?,
    };
    if users.insert_blocking(&user)? {
        tracing::warn!(
            email = DEMO_EMAIL,
            "seeded the development user; set database.seed_demo_user = false outside development"
        );
    }
    Ok(())
}
