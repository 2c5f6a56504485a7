//! `POST /api/ai/generate`: token, body, the caller's rate-limit bucket, then the provider's
//! answer, whole as JSON or streamed as the contract's `delta`/`done`/`error` events.
//!
//! A shadow (`crate::shadow`) does not go through the limiter: its primary spent the token, or
//! was refused, on the other backend. It peeks instead, so its `ratelimit-*` headers report
//! the budget as it stands, unspent, and it is never answered 429 by the limiter.

use std::sync::Arc;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use http::StatusCode;

use super::{Service, unix_now};
use crate::api::{DeltaEvent, DoneEvent, GenerateRequest, GenerateResponse};
use crate::auth::tokens;
use crate::db::now_ms;
use crate::error::{ApiError, ErrorEnvelope};
use crate::generate::{Prompt, StreamEvent};
use crate::reply::{Reply, sse_event};
use crate::request::{Incoming, bearer_token, read_json_object};
use crate::routes;

impl Service {
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
        let shadow = request.shadow;
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
        let budget = if shadow {
            inner.limiter.peek(&bucket_key, bucket, now_ms()).await?
        } else {
            inner.limiter.take(&bucket_key, bucket, now_ms()).await?
        };
        if let Some(retry_after_secs) = budget.retry_after_secs {
            // Only a request that spends can be refused, and a shadow never spends.
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
            self.stream(prompt, shadow).await
        } else {
            self.whole(prompt, shadow).await
        };
        Ok(reply
            .unwrap_or_else(ApiError::into_reply)
            .with_headers(budget.headers()))
    }

    async fn whole(&self, prompt: Prompt, shadow: bool) -> Result<Reply, ApiError> {
        let provider = &self.inner.provider;
        let generation = provider.generate(prompt).await?;
        if let Some(metrics) = self.counted(shadow) {
            metrics.tokens_generated(provider.name(), generation.usage.output_tokens);
        }
        Ok(Reply::json(
            StatusCode::OK,
            &GenerateResponse {
                id: generation_id(),
                model: generation.model,
                content: generation.content,
                stop_reason: generation.stop_reason,
                usage: generation.usage,
            },
        ))
    }

    async fn stream(&self, prompt: Prompt, shadow: bool) -> Result<Reply, ApiError> {
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
                if !shadow {
                    inner
                        .metrics
                        .tokens_generated(inner.provider.name(), usage.output_tokens);
                }
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
}

fn generation_id() -> String {
    format!("gen_{}", uuid::Uuid::new_v4().simple())
}
