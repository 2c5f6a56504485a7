//! `{"error": {"code", "message", "details"?}}`: the shape of every error answer, from either
//! backend or from the proxy itself.

use serde::Serialize;

/// A field that failed validation, as reported in `details`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// The `error` object of every error body.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorBody {
    /// A stable, machine-readable code such as `VALIDATION_ERROR`.
    pub code: &'static str,
    pub message: String,
    /// Present only for `VALIDATION_ERROR`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub details: Option<Vec<FieldError>>,
}

/// `{"error": {...}}`: the shape of every error answer.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorEnvelope {
    pub error: ErrorBody,
}

impl ErrorEnvelope {
    /// An envelope without `details`.
    pub fn new(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            error: ErrorBody {
                code,
                message: message.into(),
                details: None,
            },
        }
    }

    /// The JSON bytes. Serialising these types cannot fail: they hold only strings.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn details_are_left_out_unless_present() {
        let plain = ErrorEnvelope::new("NOT_FOUND", "no such route");
        assert_eq!(
            String::from_utf8(plain.to_json()).unwrap(),
            r#"{"error":{"code":"NOT_FOUND","message":"no such route"}}"#
        );
    }
}
