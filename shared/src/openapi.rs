//! The OpenAPI 3 document of the contract, built from the request and response types so it
//! cannot drift from what the service answers. Both backends serve these same bytes.

use utoipa::openapi::content::ContentBuilder;
use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::path::{HttpMethod, OperationBuilder, PathItem};
use utoipa::openapi::request_body::RequestBodyBuilder;
use utoipa::openapi::response::{Response, ResponseBuilder};
use utoipa::openapi::schema::{ObjectBuilder, Type};
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{
    ComponentsBuilder, InfoBuilder, OpenApi, OpenApiBuilder, PathsBuilder, Ref, RefOr, Required,
    Schema,
};

use crate::api::{
    DeltaEvent, DoneEvent, GenerateRequest, GenerateResponse, HealthResponse, LoginRequest,
    LoginResponse, Usage, UserView, VerifyFailure, VerifyRequest, VerifyResponse,
};
use crate::error::{ErrorBody, ErrorEnvelope, FieldError};

const JSON: &str = "application/json";

fn schema(name: &str) -> RefOr<Schema> {
    RefOr::Ref(Ref::from_schema_name(name))
}

fn json_response(description: &str, schema_name: &str) -> Response {
    ResponseBuilder::new()
        .description(description)
        .content(
            JSON,
            ContentBuilder::new()
                .schema(Some(schema(schema_name)))
                .build(),
        )
        .build()
}

fn error(description: &str) -> Response {
    json_response(description, "ErrorEnvelope")
}

fn integer_header(description: &str) -> utoipa::openapi::header::Header {
    HeaderBuilder::new()
        .schema(ObjectBuilder::new().schema_type(Type::Integer))
        .description(Some(description))
        .build()
}

fn json_body(schema_name: &str, required: bool) -> utoipa::openapi::request_body::RequestBody {
    RequestBodyBuilder::new()
        .description(Some(
            "`content-type: application/json` (parameters allowed); an empty body counts as `{}`.",
        ))
        .content(
            JSON,
            ContentBuilder::new()
                .schema(Some(schema(schema_name)))
                .build(),
        )
        .required(Some(if required {
            Required::True
        } else {
            Required::False
        }))
        .build()
}

/// The responses every POST shares, in the contract's order of checks.
fn post_errors(operation: OperationBuilder) -> OperationBuilder {
    operation
        .response("405", error("Known path, wrong method; the `allow` header lists the right one"))
        .response("413", error("Body over the configured limit (`PAYLOAD_TOO_LARGE`)"))
        .response("415", error("A body whose content-type is not `application/json`"))
        .response("400", error("Invalid JSON, a missing field, a wrong type or a value out of range (`VALIDATION_ERROR`, with `details`)"))
        .response("500", error("Anything else (`INTERNAL`); never leaks internals"))
}

fn rate_limited(mut response: ResponseBuilder) -> ResponseBuilder {
    for (name, description) in [
        ("ratelimit-limit", "Requests the bucket holds when full"),
        ("ratelimit-remaining", "Requests left now"),
        ("ratelimit-reset", "Seconds until the bucket is full again"),
    ] {
        response = response.header(name, integer_header(description));
    }
    response
}

fn login() -> PathItem {
    let operation = OperationBuilder::new()
        .operation_id(Some("login"))
        .tag("auth")
        .summary(Some("Exchange an email and password for a bearer token"))
        .request_body(Some(json_body("LoginRequest", true)))
        .response("200", json_response("Signed in", "LoginResponse"))
        .response("401", error("Unknown email or wrong password (`INVALID_CREDENTIALS`): the same answer and timing for both"))
        .response(
            "429",
            ResponseBuilder::new()
                .description("Too many failed logins for this email in the throttle window (`RATE_LIMITED`)")
                .header("retry-after", integer_header("Seconds until the window closes"))
                .content(JSON, ContentBuilder::new().schema(Some(schema("ErrorEnvelope"))).build())
                .build(),
        );
    PathItem::new(HttpMethod::Post, post_errors(operation))
}

fn verify() -> PathItem {
    let operation = OperationBuilder::new()
        .operation_id(Some("verify"))
        .tag("auth")
        .summary(Some("Check a token"))
        .description(Some("The token comes in `authorization: Bearer <JWT>` or, if that header is absent, in the body; the header wins."))
        .request_body(Some(json_body("VerifyRequest", false)))
        .response("200", json_response("The token is valid", "VerifyResponse"))
        .response("401", json_response("`TOKEN_MISSING`, `TOKEN_INVALID` or `TOKEN_EXPIRED`", "VerifyFailure"));
    PathItem::new(HttpMethod::Post, post_errors(operation))
}

fn generate() -> PathItem {
    let operation = OperationBuilder::new()
        .operation_id(Some("generate"))
        .tag("ai")
        .summary(Some("Generate text from a prompt"))
        .description(Some("With `stream: true` the answer is `text/event-stream`: one `event: delta` (`DeltaEvent`) per chunk, then one `event: done` (`DoneEvent`). An error after the first byte ends the stream with an `event: error` whose data is `ErrorEnvelope`."))
        .security(SecurityRequirement::new("bearer", Vec::<String>::new()))
        .request_body(Some(json_body("GenerateRequest", true)))
        .response(
            "200",
            rate_limited(ResponseBuilder::new().description("The generation"))
                .content(JSON, ContentBuilder::new().schema(Some(schema("GenerateResponse"))).build())
                .content("text/event-stream", ContentBuilder::new().schema(Some(ObjectBuilder::new().schema_type(Type::String))).build())
                .build(),
        )
        .response("401", error("`TOKEN_MISSING`, `TOKEN_INVALID` or `TOKEN_EXPIRED`"))
        .response(
            "429",
            rate_limited(ResponseBuilder::new().description("Over the user's budget (`RATE_LIMITED`)"))
                .header("retry-after", integer_header("Seconds until a request is allowed"))
                .content(JSON, ContentBuilder::new().schema(Some(schema("ErrorEnvelope"))).build())
                .build(),
        )
        .response("502", error("The AI provider answered with an error (`UPSTREAM_ERROR`)"))
        .response("503", error("The AI provider is overloaded or unreachable (`UPSTREAM_UNAVAILABLE`)"))
        .response("504", error("The AI provider did not answer in time (`UPSTREAM_TIMEOUT`)"));
    PathItem::new(HttpMethod::Post, post_errors(operation))
}

fn get(operation_id: &str, summary: &str, response: Response) -> PathItem {
    let operation = OperationBuilder::new()
        .operation_id(Some(operation_id))
        .tag("operations")
        .summary(Some(summary))
        .response("200", response)
        .response("405", error("Known path, wrong method"));
    PathItem::new(HttpMethod::Get, operation)
}

fn text_response(description: &str, content_type: &str) -> Response {
    ResponseBuilder::new()
        .description(description)
        .content(
            content_type,
            ContentBuilder::new()
                .schema(Some(ObjectBuilder::new().schema_type(Type::String)))
                .build(),
        )
        .build()
}

pub fn document() -> OpenApi {
    let components = ComponentsBuilder::new()
        .schema_from::<LoginRequest>()
        .schema_from::<LoginResponse>()
        .schema_from::<VerifyRequest>()
        .schema_from::<VerifyResponse>()
        .schema_from::<VerifyFailure>()
        .schema_from::<GenerateRequest>()
        .schema_from::<GenerateResponse>()
        .schema_from::<DeltaEvent>()
        .schema_from::<DoneEvent>()
        .schema_from::<Usage>()
        .schema_from::<UserView>()
        .schema_from::<HealthResponse>()
        .schema_from::<ErrorEnvelope>()
        .schema_from::<ErrorBody>()
        .schema_from::<FieldError>()
        .security_scheme(
            "bearer",
            SecurityScheme::Http(
                Http::builder()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        )
        .build();
    let paths = PathsBuilder::new()
        .path("/api/auth/login", login())
        .path("/api/auth/verify", verify())
        .path("/api/ai/generate", generate())
        .path(
            "/health",
            get(
                "health",
                "Liveness; the one answer in which the backends differ",
                json_response("Alive", "HealthResponse"),
            ),
        )
        .path(
            "/metrics",
            get(
                "metrics",
                "Prometheus text exposition of this backend's metrics",
                text_response("Metrics", "text/plain; version=0.0.4"),
            ),
        )
        .path(
            "/openapi.json",
            get(
                "openapi",
                "This document",
                text_response("The OpenAPI document", JSON),
            ),
        )
        .build();
    OpenApiBuilder::new()
        .info(
            InfoBuilder::new()
                .title("Canary gateway API")
                .version(env!("CARGO_PKG_VERSION"))
                .description(Some("The API both backends answer identically. Every error is `{\"error\": {\"code\", \"message\", \"details\"?}}`; 404 `NOT_FOUND` answers unknown routes."))
                .build(),
        )
        .paths(paths)
        .components(Some(components))
        .build()
}

/// The document as the bytes both backends serve.
pub fn document_json() -> Vec<u8> {
    document()
        .to_json()
        .map(String::into_bytes)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_document_names_every_route_and_schema() {
        let doc: serde_json::Value = serde_json::from_slice(&super::document_json()).unwrap();
        assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
        for path in [
            "/api/auth/login",
            "/api/auth/verify",
            "/api/ai/generate",
            "/health",
            "/metrics",
            "/openapi.json",
        ] {
            assert!(doc["paths"][path].is_object(), "{path}");
        }
        let generate = &doc["components"]["schemas"]["GenerateRequest"]["properties"];
        assert!(generate["maxTokens"].is_object(), "{generate}");
        assert_eq!(
            doc["components"]["schemas"]["LoginRequest"]["required"],
            serde_json::json!(["email", "password"])
        );
    }
}
