//! The contract's endpoints as data: each adapter registers this one table, so neither can
//! forget a route, and both answer a wrong path or method with the same reply.

use http::HeaderValue;

use crate::error::ApiError;
use crate::reply::Reply;
use crate::routes;

/// Every route of the contract; `Service::answer` answers each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    Login,
    Verify,
    Generate,
    Frontend,
    Health,
    Metrics,
    OpenApi,
}

impl Endpoint {
    pub const ALL: [Self; 7] = [
        Self::Login,
        Self::Verify,
        Self::Generate,
        Self::Frontend,
        Self::Health,
        Self::Metrics,
        Self::OpenApi,
    ];

    pub fn path(self) -> &'static str {
        match self {
            Self::Login => routes::LOGIN,
            Self::Verify => routes::VERIFY,
            Self::Generate => routes::GENERATE,
            Self::Frontend => routes::INDEX,
            Self::Health => routes::HEALTH,
            Self::Metrics => routes::METRICS,
            Self::OpenApi => routes::OPENAPI,
        }
    }

    pub fn methods(self) -> Methods {
        match self {
            Self::Login | Self::Verify | Self::Generate => Methods::Post,
            Self::Frontend | Self::Health | Self::Metrics | Self::OpenApi => Methods::Get,
        }
    }

    /// The endpoint whose path is `path`, as a router reports the route it matched.
    pub fn at(path: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|endpoint| endpoint.path() == path)
    }
}

/// The methods a route answers; any other gets 405 with the matching `allow` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Methods {
    Post,
    /// GET, and HEAD wherever GET is answered.
    Get,
}

impl Methods {
    /// The `allow` header of a 405 on a route that takes these methods.
    pub fn header_value(self) -> HeaderValue {
        match self {
            Self::Post => const { HeaderValue::from_static(routes::ALLOW_POST) },
            Self::Get => const { HeaderValue::from_static(routes::ALLOW_GET) },
        }
    }

    /// The answer to a method other than these on a known path.
    pub fn refusal(self) -> Reply {
        ApiError::MethodNotAllowed { allow: self }.into_reply()
    }
}

/// The answer to a path no endpoint has.
pub fn not_found() -> Reply {
    ApiError::NotFound.into_reply()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_endpoint_is_found_at_its_path_and_nothing_else_is() {
        for endpoint in Endpoint::ALL {
            assert_eq!(Endpoint::at(endpoint.path()), Some(endpoint));
        }
        assert_eq!(Endpoint::at("/api/auth"), None);
    }
}
