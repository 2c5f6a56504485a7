//! The contract's request and response bodies, and the validation of requests.
//!
//! Requests are checked field by field from a JSON object (rather than through serde's
//! derive) so that every bad field is reported by name with the contract's messages.

use serde::Serialize;
use serde_json::{Map, Value};
use utoipa::ToSchema;

use crate::error::{ApiError, ErrorBody, FieldError};

pub const MAX_EMAIL_CHARS: usize = 254;
pub const MAX_PASSWORD_CHARS: usize = 1024;
pub const MAX_PROMPT_CHARS: usize = 32_000;
pub const MAX_MODEL_CHARS: usize = 128;
pub const MAX_TOKENS_LIMIT: u32 = 4096;
pub const DEFAULT_MAX_TOKENS: u32 = 256;
pub const DEFAULT_TEMPERATURE: f64 = 0.7;

/// `POST /api/auth/login`. Unknown fields are ignored.
#[derive(Debug, Clone, ToSchema)]
#[schema(example = json!({"email": "ada@example.com", "password": "correct horse battery staple"}))]
pub struct LoginRequest {
    /// Matched case-insensitively; at most 254 characters.
    #[schema(format = "email", max_length = 254)]
    pub email: String,
    #[schema(min_length = 1, max_length = 1024)]
    pub password: String,
}

/// `POST /api/auth/verify` body; used only when there is no `authorization` header.
#[derive(Debug, Clone, ToSchema)]
pub struct VerifyRequest {
    pub token: Option<String>,
}

/// `POST /api/ai/generate`.
#[derive(Debug, Clone, PartialEq, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct GenerateRequest {
    #[schema(min_length = 1, max_length = 32000)]
    pub prompt: String,
    #[schema(minimum = 1, maximum = 4096, default = 256)]
    pub max_tokens: u32,
    #[schema(minimum = 0.0, maximum = 1.0, default = 0.7)]
    pub temperature: f64,
    #[schema(min_length = 1, max_length = 128)]
    pub model: Option<String>,
    #[schema(default = false)]
    pub stream: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct UserView {
    pub id: String,
    pub email: String,
    pub name: String,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LoginResponse {
    /// An HS256 JWT with `sub`, `email`, `name`, `iat`, `exp`, `iss`, `aud` and `jti`.
    pub token: String,
    #[schema(example = "Bearer")]
    pub token_type: &'static str,
    /// Seconds until the token expires.
    pub expires_in: u64,
    pub user: UserView,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct VerifyResponse {
    pub valid: bool,
    pub user: UserView,
    /// RFC 3339, UTC.
    #[schema(example = "2026-11-24T07:00:00Z")]
    pub expires_at: String,
}

/// The 401 of `/api/auth/verify`: the error shape with `valid: false`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct VerifyFailure {
    pub valid: bool,
    pub error: ErrorBody,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Usage {
    pub input_tokens: u32,
    pub output_tokens: u32,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct GenerateResponse {
    #[schema(example = "gen_4f1c2b7e9d0a4b6c8e2f1a3b5c7d9e0f")]
    pub id: String,
    pub model: String,
    pub content: String,
    /// `end_turn`, `max_tokens` or another reason the provider gives.
    pub stop_reason: String,
    pub usage: Usage,
}

/// `data` of an `event: delta` in a streamed generation.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct DeltaEvent {
    pub text: String,
}

/// `data` of the final `event: done` in a streamed generation.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DoneEvent {
    pub id: String,
    pub model: String,
    pub stop_reason: String,
    pub usage: Usage,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct HealthResponse {
    #[schema(example = "ok")]
    pub status: &'static str,
    /// `legacy` or `new`: the one field in which the backends differ.
    #[schema(example = "legacy")]
    pub backend: &'static str,
    #[schema(example = "0.1.0")]
    pub version: &'static str,
}

/// Collects every field error of one request body.
struct Fields<'a> {
    object: &'a Map<String, Value>,
    errors: Vec<FieldError>,
}

impl<'a> Fields<'a> {
    fn new(object: &'a Map<String, Value>) -> Self {
        Self {
            object,
            errors: Vec::new(),
        }
    }

    fn fail(&mut self, field: &str, message: String) {
        self.errors.push(FieldError::new(field, message));
    }

    /// A field that is absent or `null` is treated as absent.
    fn get(&self, field: &str) -> Option<&'a Value> {
        self.object.get(field).filter(|v| !v.is_null())
    }

    fn string(&mut self, field: &str, min: usize, max: usize) -> Option<String> {
        match self.get(field) {
            None => {
                self.fail(field, "is required".into());
                None
            }
            Some(_) => self.optional_string(field, min, max),
        }
    }

    fn optional_string(&mut self, field: &str, min: usize, max: usize) -> Option<String> {
        let value = self.get(field)?;
        let Some(text) = value.as_str() else {
            self.fail(field, "must be a string".into());
            return None;
        };
        let chars = text.chars().count();
        if chars < min || chars > max {
            self.fail(field, format!("must be between {min} and {max} characters"));
            return None;
        }
        Some(text.to_owned())
    }

    fn integer(&mut self, field: &str, min: u32, max: u32, default: u32) -> u32 {
        let Some(value) = self.get(field) else {
            return default;
        };
        match value.as_u64() {
            Some(n) if (u64::from(min)..=u64::from(max)).contains(&n) => n as u32,
            _ => {
                self.fail(field, format!("must be an integer between {min} and {max}"));
                default
            }
        }
    }

    fn number(&mut self, field: &str, min: f64, max: f64, default: f64) -> f64 {
        let Some(value) = self.get(field) else {
            return default;
        };
        match value.as_f64() {
            Some(n) if (min..=max).contains(&n) => n,
            _ => {
                self.fail(field, format!("must be a number between {min} and {max}"));
                default
            }
        }
    }

    fn boolean(&mut self, field: &str, default: bool) -> bool {
        match self.get(field) {
            None => default,
            Some(Value::Bool(b)) => *b,
            Some(_) => {
                self.fail(field, "must be a boolean".into());
                default
            }
        }
    }

    fn finish<T>(self, value: impl FnOnce() -> T) -> Result<T, ApiError> {
        if self.errors.is_empty() {
            Ok(value())
        } else {
            Err(ApiError::Validation(self.errors))
        }
    }
}

/// Lowercases an address if it is valid, `None` otherwise.
pub fn normalise_email(email: &str) -> Option<String> {
    let valid = email.chars().count() <= MAX_EMAIL_CHARS
        && email_address::EmailAddress::is_valid(email)
        && !email.chars().any(|c| c.is_whitespace() || c.is_control());
    valid.then(|| email.to_lowercase())
}

impl LoginRequest {
    pub fn from_json(object: &Map<String, Value>) -> Result<Self, ApiError> {
        let mut fields = Fields::new(object);
        let email = match fields.get("email") {
            None => {
                fields.fail("email", "is required".into());
                None
            }
            Some(Value::String(raw)) => {
                let normalised = normalise_email(raw);
                if normalised.is_none() {
                    fields.fail("email", "must be a valid email address".into());
                }
                normalised
            }
            Some(_) => {
                fields.fail("email", "must be a string".into());
                None
            }
        };
        let password = fields.string("password", 1, MAX_PASSWORD_CHARS);
        fields.finish(|| Self {
            email: email.unwrap_or_default(),
            password: password.unwrap_or_default(),
        })
    }
}

impl VerifyRequest {
    pub fn from_json(object: &Map<String, Value>) -> Result<Self, ApiError> {
        let mut fields = Fields::new(object);
        let token = match fields.get("token") {
            None => None,
            Some(Value::String(token)) => Some(token.clone()),
            Some(_) => {
                fields.fail("token", "must be a string".into());
                None
            }
        };
        fields.finish(|| Self { token })
    }
}

impl GenerateRequest {
    pub fn from_json(object: &Map<String, Value>) -> Result<Self, ApiError> {
        let mut fields = Fields::new(object);
        let prompt = fields.string("prompt", 1, MAX_PROMPT_CHARS);
        let max_tokens = fields.integer("maxTokens", 1, MAX_TOKENS_LIMIT, DEFAULT_MAX_TOKENS);
        let temperature = fields.number("temperature", 0.0, 1.0, DEFAULT_TEMPERATURE);
        let model = fields.optional_string("model", 1, MAX_MODEL_CHARS);
        let stream = fields.boolean("stream", false);
        fields.finish(|| Self {
            prompt: prompt.unwrap_or_default(),
            max_tokens,
            temperature,
            model,
            stream,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn object(value: Value) -> Map<String, Value> {
        match value {
            Value::Object(map) => map,
            _ => unreachable!("test bodies are objects"),
        }
    }

    fn details(result: Result<impl std::fmt::Debug, ApiError>) -> Vec<(String, String)> {
        match result {
            Err(ApiError::Validation(details)) => {
                details.into_iter().map(|d| (d.field, d.message)).collect()
            }
            other => panic!("expected a validation error, got {other:?}"),
        }
    }

    #[test]
    fn login_normalises_email_and_ignores_unknown_fields() {
        let request = LoginRequest::from_json(&object(
            json!({"email": "Ada@Example.COM", "password": "x", "extra": 1}),
        ))
        .unwrap();
        assert_eq!(request.email, "ada@example.com");
    }

    #[test]
    fn login_reports_every_bad_field() {
        let cases = [
            (
                json!({}),
                vec![("email", "is required"), ("password", "is required")],
            ),
            (
                json!({"email": 1, "password": ""}),
                vec![
                    ("email", "must be a string"),
                    ("password", "must be between 1 and 1024 characters"),
                ],
            ),
            (
                json!({"email": "not-an-address", "password": "x"}),
                vec![("email", "must be a valid email address")],
            ),
            (
                json!({"email": format!("{}@example.com", "a".repeat(250)), "password": "x"}),
                vec![("email", "must be a valid email address")],
            ),
            (
                json!({"email": "a@example.com", "password": "é".repeat(1025)}),
                vec![("password", "must be between 1 and 1024 characters")],
            ),
        ];
        for (body, expected) in cases {
            let expected: Vec<(String, String)> = expected
                .into_iter()
                .map(|(f, m)| (f.to_owned(), m.to_owned()))
                .collect();
            assert_eq!(
                details(LoginRequest::from_json(&object(body.clone()))),
                expected,
                "{body}"
            );
        }
    }

    #[test]
    fn lengths_count_characters_not_bytes() {
        let request = LoginRequest::from_json(&object(
            json!({"email": "a@b.co", "password": "é".repeat(1024)}),
        ));
        assert!(request.is_ok());
    }

    #[test]
    fn generate_applies_defaults_and_ranges() {
        let request = GenerateRequest::from_json(&object(json!({"prompt": "hi"}))).unwrap();
        assert_eq!(request.max_tokens, 256);
        assert_eq!(request.temperature, 0.7);
        assert!(!request.stream);
        assert_eq!(request.model, None);

        let bad = json!({"prompt": "", "maxTokens": 4097, "temperature": 1.5, "stream": "yes", "model": 3});
        assert_eq!(
            details(GenerateRequest::from_json(&object(bad))),
            vec![
                (
                    "prompt".to_owned(),
                    "must be between 1 and 32000 characters".to_owned()
                ),
                (
                    "maxTokens".to_owned(),
                    "must be an integer between 1 and 4096".to_owned()
                ),
                (
                    "temperature".to_owned(),
                    "must be a number between 0 and 1".to_owned()
                ),
                ("model".to_owned(), "must be a string".to_owned()),
                ("stream".to_owned(), "must be a boolean".to_owned()),
            ]
        );
        let fractional = json!({"prompt": "x", "maxTokens": 2.5});
        assert_eq!(
            details(GenerateRequest::from_json(&object(fractional))).len(),
            1
        );
    }
}
