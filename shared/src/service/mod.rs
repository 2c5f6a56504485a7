//! `Service`: the one implementation of the contract that both framework adapters call.
//!
//! Each method takes what a handler extracted (`Incoming`) and returns a framework-free
//! `Reply`, running the contract's checks in its order: token (401), content type (415),
//! body size (413), validation (400), rate limit (429).
//!
//! This module holds the wiring (`Service::new`); each endpoint has its own module, as
//! mini-redis keeps one file per command: `login`, `verify`, `generate` (with the stream
//! translation) and `meta` (health, metrics, OpenAPI, frontend).

mod generate;
mod login;
mod meta;
mod verify;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::Stream;

use crate::auth::passwords::{PasswordError, Passwords};
use crate::auth::secret::{self, SecretError};
use crate::auth::throttle::LoginThrottleStore;
use crate::auth::tokens::Tokens;
use crate::auth::users::{self, User, UserStore};
use crate::config::{Config, ProviderKind};
use crate::db::{Database, StoreError};
use crate::endpoint::Endpoint;
use crate::generate::anthropic::{API_KEY_ENV, AnthropicProvider};
use crate::generate::local::LocalProvider;
use crate::generate::{Provider, ProviderError};
use crate::metrics::Metrics;
use crate::ratelimit::RateLimitStore;
use crate::reply::Reply;
use crate::request::Incoming;
use crate::shadow::ShadowKey;
use crate::store::Stores;

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
    #[error("shadow secret: {0}")]
    ShadowSecret(SecretError),
    #[error(transparent)]
    Password(#[from] PasswordError),
    #[error("generate.provider is \"anthropic\" but {API_KEY_ENV} is not set")]
    MissingApiKey,
    #[error("generate.anthropic: {0}")]
    Provider(ProviderError),
}

#[derive(Clone)]
pub struct Service {
    inner: Arc<Inner>,
}

struct Inner {
    backend: BackendName,
    config: Config,
    users: Box<dyn UserStore>,
    passwords: Passwords,
    tokens: Tokens,
    throttle: Box<dyn LoginThrottleStore>,
    limiter: Box<dyn RateLimitStore>,
    provider: Box<dyn Provider>,
    metrics: Metrics,
    shadow: ShadowKey,
    openapi: Bytes,
}

fn unix_now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

impl Service {
    /// Opens the database, loads the secrets (the JWT one, the shadow key), seeds the demo
    /// user if configured, and picks the provider and the stores (`crate::store`). Blocking (file I/O, one password hash): call
    /// it before serving.
    pub fn new(config: Config, backend: BackendName) -> Result<Self, StartupError> {
        let db = Database::open(&config.database.path)?;
        let secret = secret::load_or_create(JWT_SECRET_ENV, &config.auth.secret_file)?;
        let shadow = config
            .shadow
            .load_key()
            .map_err(StartupError::ShadowSecret)?;
        let users = users::open(&config.database, || Ok(db.clone()))?;
        let passwords = Passwords::new(config.hash_concurrency())?;
        if config.database.seed_demo_user {
            users::block_on(seed_demo_user(users.as_ref()))??;
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
        let metrics = Metrics::new(backend.as_str());
        let stores = Stores::new(&config.store, &db, &metrics)?;
        Ok(Self {
            inner: Arc::new(Inner {
                backend,
                tokens: Tokens::new(&secret, &config.auth),
                throttle: stores.throttle,
                limiter: stores.limiter,
                provider,
                metrics,
                shadow,
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

    /// The key that tells the proxy's shadow requests (`crate::shadow`) from others.
    pub fn shadow_key(&self) -> &ShadowKey {
        &self.inner.shadow
    }

    /// The metrics a request counts in: none for a shadow, whose primary counted already.
    fn counted(&self, shadow: bool) -> Option<&Metrics> {
        (!shadow).then_some(&self.inner.metrics)
    }

    /// `endpoint`'s answer to `request`; the adapters route every endpoint here. The GET
    /// endpoints never read the request.
    pub async fn answer<B, E>(&self, endpoint: Endpoint, request: Incoming<'_, B>) -> Reply
    where
        B: Stream<Item = Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        match endpoint {
            Endpoint::Login => self.login(request).await,
            Endpoint::Verify => self.verify(request).await,
            Endpoint::Generate => self.generate(request).await,
            Endpoint::Frontend => self.frontend(),
            Endpoint::Health => self.health(),
            Endpoint::Metrics => self.metrics_text(),
            Endpoint::OpenApi => self.openapi(),
        }
    }

    /// How long a server that was told to stop lets its requests in flight finish.
    pub fn shutdown_grace(&self) -> Duration {
        self.inner.config.server.shutdown_grace_seconds.get()
    }

    fn body_limit(&self) -> usize {
        self.inner.config.server.body_limit_bytes.as_usize()
    }
}

async fn seed_demo_user(users: &dyn UserStore) -> Result<(), StartupError> {
    if users.find_by_email(DEMO_EMAIL).await?.is_some() {
        return Ok(());
    }
    let user = User {
        id: uuid::Uuid::new_v4().to_string(),
        email: DEMO_EMAIL.into(),
        name: DEMO_NAME.into(),
        password_hash: crate::auth::passwords::hash_blocking(DEMO_PASSWORD)?,
    };
    if users.insert(&user).await? {
        tracing::warn!(
            email = DEMO_EMAIL,
            "seeded the development user; set database.seed_demo_user = false outside development"
        );
    }
    Ok(())
}
