//! The rollout's part of the admin API, as pure steps over method, path, headers and body:
//! `GET /admin/rollout`, and `POST /admin/rollout/{approve,pause,resume,abort}`. The admin
//! listener reads the body and calls `runner::Rollout`; everything that can be refused is
//! refused here, in the contract's error shape.

use http::{HeaderMap, Method, StatusCode};
use serde::Deserialize;

use super::runner::{Command, CommandError};

/// The prefix of every rollout path.
pub const PREFIX: &str = "/admin/rollout";
/// An approve's body is a few bytes; anything longer is not one.
pub const MAX_BODY_BYTES: usize = 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    Status,
    /// A command, whose body is still to be read and checked (`command`).
    Command(CommandPath),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommandPath {
    Approve,
    Pause,
    Resume,
    Abort,
}

/// A refusal, in the contract's error shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    pub fn to_response(&self) -> http::Response<Vec<u8>> {
        let body = serde_json::to_vec(&common::ErrorEnvelope::new(self.code, &self.message))
            .unwrap_or_default();
        let mut response = http::Response::new(body);
        *response.status_mut() = self.status;
        let headers = response.headers_mut();
        headers.insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/json"),
        );
        if self.status == StatusCode::METHOD_NOT_ALLOWED {
            headers.insert(http::header::ALLOW, http::HeaderValue::from_static("POST"));
        }
        response
    }
}

impl From<CommandError> for ApiError {
    fn from(error: CommandError) -> Self {
        let code = match error {
            CommandError::Disabled => "ROLLOUT_DISABLED",
            CommandError::NotController => "NOT_CONTROLLER",
            CommandError::Refused(_) => "STALE_APPROVAL",
        };
        ApiError::new(StatusCode::CONFLICT, code, error.to_string())
    }
}

/// Which rollout request this is: `None` for a path outside `/admin/rollout`.
pub fn route(method: &Method, path: &str) -> Option<Result<Request, ApiError>> {
    let rest = path.strip_prefix(PREFIX)?;
    let command = match rest {
        "" | "/" => {
            return Some(if method == Method::GET || method == Method::HEAD {
                Ok(Request::Status)
            } else {
                Err(method_not_allowed())
            });
        }
        "/approve" => CommandPath::Approve,
        "/pause" => CommandPath::Pause,
        "/resume" => CommandPath::Resume,
        "/abort" => CommandPath::Abort,
        _ => return None,
    };
    Some(if method == Method::POST {
        Ok(Request::Command(command))
    } else {
        Err(method_not_allowed())
    })
}

fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "METHOD_NOT_ALLOWED",
        "method not allowed",
    )
}

/// A command's JSON body. A browser form on another site cannot send
/// `content-type: application/json` without a CORS preflight, which the admin listener never
/// grants: requiring it keeps a page the operator visits from pressing the buttons.
pub fn command(path: CommandPath, headers: &HeaderMap, body: &[u8]) -> Result<Command, ApiError> {
    let is_json = crate::admin_auth::is_json_post(headers);
    if !is_json {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UNSUPPORTED_MEDIA_TYPE",
            "send the command with content-type: application/json",
        ));
    }
    Ok(match path {
        CommandPath::Approve => {
            #[derive(Deserialize)]
            struct Approve {
                step: usize,
            }
            let approve: Approve = serde_json::from_slice(body).map_err(|error| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "VALIDATION_ERROR",
                    format!(
                        "the body must be {{\"step\": N}}, the index of the step awaiting \
                         approval: {error}"
                    ),
                )
            })?;
            Command::Approve { step: approve.step }
        }
        CommandPath::Pause => Command::Pause,
        CommandPath::Resume => Command::Resume,
        CommandPath::Abort => Command::Abort,
    })
}

/// The body was longer than `MAX_BODY_BYTES`.
pub fn body_too_large() -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "PAYLOAD_TOO_LARGE",
        format!("a rollout command's body is at most {MAX_BODY_BYTES} bytes"),
    )
}

/// The body broke off or broke its framing.
pub fn unreadable_body() -> ApiError {
    ApiError::new(
        StatusCode::BAD_REQUEST,
        "BAD_REQUEST",
        "the request body could not be read",
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rollout::controller::{Phase, Refusal};

    fn json_headers() -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/json; charset=utf-8"),
        );
        headers
    }

    #[test]
    fn paths_and_methods() {
        let get = Method::GET;
        let post = Method::POST;
        assert_eq!(route(&get, "/admin/rollout"), Some(Ok(Request::Status)));
        assert_eq!(route(&get, "/admin/rollout/"), Some(Ok(Request::Status)));
        assert_eq!(
            route(&post, "/admin/rollout/approve"),
            Some(Ok(Request::Command(CommandPath::Approve)))
        );
        assert_eq!(
            route(&post, "/admin/rollout/abort"),
            Some(Ok(Request::Command(CommandPath::Abort)))
        );
        let refused = route(&get, "/admin/rollout/abort").unwrap().unwrap_err();
        assert_eq!(refused.status, StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(
            route(&post, "/admin/rollout").unwrap().unwrap_err().status,
            405
        );
        assert_eq!(route(&get, "/admin/rollout/other"), None);
        assert_eq!(route(&get, "/admin/status"), None);
    }

    #[test]
    fn an_approve_names_its_step_in_json() {
        let headers = json_headers();
        assert_eq!(
            command(CommandPath::Approve, &headers, br#"{"step": 2}"#),
            Ok(Command::Approve { step: 2 })
        );
        for bad in [
            &b""[..],
            b"{}",
            br#"{"step": -1}"#,
            br#"{"step": "2"}"#,
            b"2",
        ] {
            let error = command(CommandPath::Approve, &headers, bad).unwrap_err();
            assert_eq!(
                (error.status, error.code),
                (StatusCode::BAD_REQUEST, "VALIDATION_ERROR")
            );
            assert!(error.message.contains("\"step\""), "{}", error.message);
        }
        // The other commands take no body, or an empty object.
        assert_eq!(
            command(CommandPath::Pause, &headers, b""),
            Ok(Command::Pause)
        );
        assert_eq!(
            command(CommandPath::Resume, &headers, b"{}"),
            Ok(Command::Resume)
        );
    }

    #[test]
    fn a_command_without_a_json_content_type_is_refused() {
        let mut form = HeaderMap::new();
        form.insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/x-www-form-urlencoded"),
        );
        for headers in [HeaderMap::new(), form] {
            let error = command(CommandPath::Abort, &headers, b"").unwrap_err();
            assert_eq!(error.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
        }
    }

    #[test]
    fn a_stale_approval_is_a_conflict_that_says_where_the_rollout_is() {
        let stale = CommandError::Refused(Refusal::StaleApproval {
            requested: 2,
            current: 3,
            phase: Phase::Progressing,
        });
        let error = ApiError::from(stale);
        assert_eq!(
            (error.status, error.code),
            (StatusCode::CONFLICT, "STALE_APPROVAL")
        );
        assert!(
            error.message.contains("progressing at step 3"),
            "{}",
            error.message
        );
        let response = ApiError::from(CommandError::Disabled).to_response();
        assert_eq!(response.status(), StatusCode::CONFLICT);
        let body: serde_json::Value = serde_json::from_slice(response.body()).unwrap();
        assert_eq!(body["error"]["code"], "ROLLOUT_DISABLED");
    }
}
