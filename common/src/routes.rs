//! The contract's routes: one list both adapters register, so they cannot disagree.

/// The frontend page, served identically by both backends.
pub const INDEX: &str = "/";
pub const LOGIN: &str = "/api/auth/login";
pub const VERIFY: &str = "/api/auth/verify";
pub const GENERATE: &str = "/api/ai/generate";
pub const HEALTH: &str = "/health";
pub const METRICS: &str = "/metrics";
pub const OPENAPI: &str = "/openapi.json";

/// The `allow` header of a 405 on a POST route.
pub const ALLOW_POST: &str = "POST";
/// The `allow` header of a 405 on a GET route; HEAD is answered wherever GET is.
pub const ALLOW_GET: &str = "GET, HEAD";

/// The route label of a request that matched no route, so the label set stays bounded.
pub const OTHER_ROUTE: &str = "other";
