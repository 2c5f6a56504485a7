//! The Anthropic Messages API, non-streaming and streaming, with its failures mapped to the
//! contract's 502/503/504.

use std::time::Duration;

use async_trait::async_trait;
use eventsource_stream::Eventsource;
use futures::StreamExt;
use futures::stream::BoxStream;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{EventStream, Generation, Prompt, Provider, ProviderError, StreamEvent};
use crate::api::Usage;
use crate::config::AnthropicProviderConfig;

pub const API_KEY_ENV: &str = "ANTHROPIC_API_KEY";

pub struct AnthropicProvider {
    client: reqwest::Client,
    url: String,
    api_key: String,
    api_version: String,
    model: String,
    /// For a whole answer; for a stream, until the headers and then between two events.
    timeout: Duration,
}

#[derive(Serialize)]
struct MessagesRequest<'a> {
    model: &'a str,
    max_tokens: u32,
    temperature: f64,
    messages: [Message<'a>; 1],
    stream: bool,
}

#[derive(Serialize)]
struct Message<'a> {
    role: &'static str,
    content: &'a str,
}

#[derive(Deserialize)]
struct MessagesResponse {
    model: String,
    content: Vec<ContentBlock>,
    stop_reason: Option<String>,
    usage: ApiUsage,
}

#[derive(Deserialize)]
struct ContentBlock {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    text: String,
}

#[derive(Deserialize, Default)]
struct ApiUsage {
    #[serde(default)]
    input_tokens: u32,
    #[serde(default)]
    output_tokens: u32,
}

impl AnthropicProvider {
    pub fn new(config: &AnthropicProviderConfig, api_key: String) -> Result<Self, ProviderError> {
        let timeout = config.timeout_seconds.get();
        let client = reqwest::Client::builder()
            .connect_timeout(timeout.min(Duration::from_secs(10)))
            .build()
            .map_err(|e| ProviderError::Upstream(format!("cannot build HTTP client: {e}")))?;
        Ok(Self {
            client,
            url: format!("{}/v1/messages", config.base_url.as_str()),
            api_key,
            api_version: config.api_version.clone(),
            model: config.model.clone(),
            timeout,
        })
    }

    async fn send(
        &self,
        prompt: &Prompt,
        stream: bool,
    ) -> Result<reqwest::Response, ProviderError> {
        let body = MessagesRequest {
            model: prompt.model.as_deref().unwrap_or(&self.model),
            max_tokens: prompt.max_tokens,
            temperature: prompt.temperature,
            messages: [Message {
                role: "user",
                content: &prompt.text,
            }],
            stream,
        };
        let request = self
            .client
            .post(&self.url)
            .header("x-api-key", &self.api_key)
            .header("anthropic-version", &self.api_version)
            .json(&body)
            .send();
        let response = tokio::time::timeout(self.timeout, request)
            .await
            .map_err(|_| ProviderError::Timeout)?
            .map_err(transport_error)?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        // The status decides the mapping; a body that stalls must not hold the caller.
        let detail = tokio::time::timeout(self.timeout, response.text())
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or_default();
        Err(status_error(status.as_u16(), &detail))
    }
}

/// 429 (rate limited) and 529 (overloaded) mean "try later": 503. Anything else is the
/// provider refusing or failing: 502.
fn status_error(status: u16, detail: &str) -> ProviderError {
    let detail: String = detail.chars().take(200).collect();
    match status {
        429 | 529 => ProviderError::Unavailable(format!("status {status}: {detail}")),
        408 | 504 => ProviderError::Timeout,
        _ => ProviderError::Upstream(format!("status {status}: {detail}")),
    }
}

fn transport_error(error: reqwest::Error) -> ProviderError {
    if error.is_timeout() {
        ProviderError::Timeout
    } else if error.is_connect() {
        ProviderError::Unavailable(error.to_string())
    } else {
        ProviderError::Upstream(error.to_string())
    }
}

/// An `error` event's `error.type`: `overloaded_error` is 503, the rest 502.
fn error_event(data: &Value) -> ProviderError {
    let kind = data["error"]["type"].as_str().unwrap_or("unknown");
    let message = data["error"]["message"].as_str().unwrap_or("").to_owned();
    match kind {
        "overloaded_error" | "rate_limit_error" => ProviderError::Unavailable(message),
        _ => ProviderError::Upstream(format!("{kind}: {message}")),
    }
}

#[async_trait]
impl Provider for AnthropicProvider {
    fn name(&self) -> &'static str {
        "anthropic"
    }

    async fn generate(&self, prompt: Prompt) -> Result<Generation, ProviderError> {
        let whole = async {
            let response = self.send(&prompt, false).await?;
            response
                .json::<MessagesResponse>()
                .await
                .map_err(transport_error)
        };
        let answer = tokio::time::timeout(self.timeout, whole)
            .await
            .map_err(|_| ProviderError::Timeout)??;
        let content = answer
            .content
            .iter()
            .filter(|block| block.kind == "text")
            .map(|block| block.text.as_str())
            .collect();
        Ok(Generation {
            model: answer.model,
            content,
            stop_reason: answer.stop_reason.unwrap_or_else(|| "end_turn".into()),
            usage: Usage {
                input_tokens: answer.usage.input_tokens,
                output_tokens: answer.usage.output_tokens,
            },
        })
    }

    async fn stream(&self, prompt: Prompt) -> Result<EventStream, ProviderError> {
        let response = self.send(&prompt, true).await?;
        let events = response.bytes_stream().eventsource().boxed();
        let state = Translation {
            events,
            idle_timeout: self.timeout,
            model: prompt.model.unwrap_or_else(|| self.model.clone()),
            usage: Usage {
                input_tokens: 0,
                output_tokens: 0,
            },
            stop_reason: None,
            finished: false,
        };
        Ok(futures::stream::unfold(state, Translation::next).boxed())
    }
}

type SseStream = BoxStream<
    'static,
    Result<eventsource_stream::Event, eventsource_stream::EventStreamError<reqwest::Error>>,
>;

/// Turns the Messages API's events into the contract's deltas and final `done`.
struct Translation {
    events: SseStream,
    idle_timeout: Duration,
    model: String,
    usage: Usage,
    stop_reason: Option<String>,
    finished: bool,
}

impl Translation {
    async fn next(mut self) -> Option<(Result<StreamEvent, ProviderError>, Self)> {
        while !self.finished {
            let event = match tokio::time::timeout(self.idle_timeout, self.events.next()).await {
                Err(_) => Err(ProviderError::Timeout),
                Ok(None) => Err(ProviderError::Upstream(
                    "stream ended before message_stop".into(),
                )),
                Ok(Some(Err(error))) => Err(match error {
                    eventsource_stream::EventStreamError::Transport(e) => transport_error(e),
                    other => ProviderError::Upstream(other.to_string()),
                }),
                Ok(Some(Ok(event))) => match self.translate(&event.event, &event.data) {
                    Some(item) => item,
                    None => continue,
                },
            };
            self.finished |= !matches!(event, Ok(StreamEvent::Delta(_)));
            return Some((event, self));
        }
        None
    }

    fn translate(&mut self, name: &str, data: &str) -> Option<Result<StreamEvent, ProviderError>> {
        let data: Value = match serde_json::from_str(data) {
            Ok(value) => value,
            Err(_) if name == "ping" => return None,
            Err(e) => {
                return Some(Err(ProviderError::Upstream(format!(
                    "bad {name} event: {e}"
                ))));
            }
        };
        match name {
            "message_start" => {
                if let Some(model) = data["message"]["model"].as_str() {
                    self.model = model.to_owned();
                }
                self.usage.input_tokens = data["message"]["usage"]["input_tokens"]
                    .as_u64()
                    .unwrap_or(0) as u32;
                None
            }
            "content_block_delta" if data["delta"]["type"] == "text_delta" => Some(Ok(
                StreamEvent::Delta(data["delta"]["text"].as_str().unwrap_or("").to_owned()),
            )),
            "message_delta" => {
                if let Some(reason) = data["delta"]["stop_reason"].as_str() {
                    self.stop_reason = Some(reason.to_owned());
                }
                if let Some(output) = data["usage"]["output_tokens"].as_u64() {
                    self.usage.output_tokens = output as u32;
                }
                None
            }
            "message_stop" => Some(Ok(StreamEvent::Done {
                model: self.model.clone(),
                stop_reason: self.stop_reason.take().unwrap_or_else(|| "end_turn".into()),
                usage: self.usage,
            })),
            "error" => Some(Err(error_event(&data))),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_map_to_the_contract_classes() {
        assert!(matches!(
            status_error(429, ""),
            ProviderError::Unavailable(_)
        ));
        assert!(matches!(
            status_error(529, ""),
            ProviderError::Unavailable(_)
        ));
        assert!(matches!(status_error(500, ""), ProviderError::Upstream(_)));
        assert!(matches!(status_error(400, ""), ProviderError::Upstream(_)));
        assert_eq!(status_error(504, ""), ProviderError::Timeout);
    }
}
