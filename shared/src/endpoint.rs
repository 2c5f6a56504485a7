//! The contract's endpoints as data: each adapter registers this one table, so neither can
//! forget a route, and both answer a wrong path or method with the same reply.

use http::HeaderValue;

use crate::routes;

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
}
