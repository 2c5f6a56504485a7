//! Whether one request is shadowed: a pure step of the request path, taken once the side is
//! known. Eligible routes only, at `percent`, never to a side that is down, never a body over
//! `max_body_bytes`, never a generation that costs money.

use http::{HeaderMap, Method};

use super::settings::ShadowSection;
use crate::routing::Side;

/// What the request path learns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Choice {
    /// Not a shadowed route, or not drawn: nothing is counted.
    No,
    /// Drawn, but not sent; counted as skipped.
    Skipped(SkipReason),
    /// Send one; `noise` also sends a second copy to the serving side.
    Shadow { noise: bool },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SkipReason {
    /// `content-length` over `max_body_bytes` (a streamed body found over it later is
    /// skipped by the request path).
    BodyTooLarge,
    /// The side the shadow would go to is down.
    SideDown,
    /// Generate while the backends use the Anthropic provider: it costs money and is not
    /// deterministic.
    PaidProvider,
}

impl SkipReason {
    pub fn as_str(self) -> &'static str {
        match self {
            SkipReason::BodyTooLarge => "body_too_large",
            SkipReason::SideDown => "side_down",
            SkipReason::PaidProvider => "paid_provider",
        }
    }
}

/// What `choose` reads about the request.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    pub method: &'a Method,
    pub path: &'a str,
    pub headers: &'a HeaderMap,
    /// The side serving it.
    pub side: Side,
    /// Whether the other side is up.
    pub other_up: bool,
    /// `generate.provider` is `anthropic`.
    pub paid_provider: bool,
    /// A rollout's shadow step runs: shadowing is on even at `percent = 0` (then for every
    /// eligible request).
    pub dark_launch: bool,
}

/// `draw` gives a uniform number in `0..10_000` (a basis point), once or twice.
pub fn choose(
    section: &ShadowSection,
    request: Request<'_>,
    mut draw: impl FnMut() -> u32,
) -> Choice {
    let percent = match (section.percent.basis_points(), request.dark_launch) {
        (0, true) => 10_000,
        (configured, _) => configured,
    };
    if percent == 0 || !section.is_eligible(request.method, request.path) {
        return Choice::No;
    }
    if draw() >= percent {
        return Choice::No;
    }
    if request.paid_provider && request.path == common::routes::GENERATE {
        return Choice::Skipped(SkipReason::PaidProvider);
    }
    if !request.other_up {
        return Choice::Skipped(SkipReason::SideDown);
    }
    let declared = (request.headers.get(http::header::CONTENT_LENGTH))
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok());
    if declared.is_some_and(|length| length > section.max_body_bytes.get()) {
        return Choice::Skipped(SkipReason::BodyTooLarge);
    }
    Choice::Shadow {
        noise: draw() < section.noise_percent.basis_points(),
    }
}

/// Whether the request has a body still to come (so the shadow starts when it has arrived).
pub fn has_body(headers: &HeaderMap) -> bool {
    let length = (headers.get(http::header::CONTENT_LENGTH))
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok());
    headers.contains_key(http::header::TRANSFER_ENCODING) || length.is_some_and(|l| l > 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Percent;

    fn on(percent: f64) -> ShadowSection {
        ShadowSection {
            percent: Percent::from_percent(percent).unwrap(),
            ..ShadowSection::default()
        }
    }

    fn health(headers: &HeaderMap) -> Request<'_> {
        Request {
            method: &Method::GET,
            path: "/health",
            headers,
            side: Side::Legacy,
            other_up: true,
            paid_provider: false,
            dark_launch: false,
        }
    }

    #[test]
    fn off_or_not_listed_or_not_drawn_is_no() {
        let headers = HeaderMap::new();
        assert_eq!(
            choose(&ShadowSection::default(), health(&headers), || 0),
            Choice::No
        );
        let login = Request {
            method: &Method::POST,
            path: "/api/auth/login",
            ..health(&headers)
        };
        assert_eq!(choose(&on(100.0), login, || 0), Choice::No);
        // 5 %: basis points 0..500 are drawn.
        assert_eq!(
            choose(&on(5.0), health(&headers), || 499),
            Choice::Shadow { noise: true }
        );
        assert_eq!(choose(&on(5.0), health(&headers), || 500), Choice::No);
    }

    #[test]
    fn a_dark_launch_shadows_every_eligible_request_when_percent_is_0() {
        let headers = HeaderMap::new();
        let dark = Request {
            dark_launch: true,
            ..health(&headers)
        };
        let off = ShadowSection::default();
        assert!(matches!(
            choose(&off, dark, || 9_999),
            Choice::Shadow { .. }
        ));
        // A configured share is kept.
        assert_eq!(choose(&on(5.0), dark, || 500), Choice::No);
    }

    #[test]
    fn noise_is_drawn_again_at_noise_percent() {
        let headers = HeaderMap::new();
        let mut draws = [0, 1000].into_iter();
        // Default noise_percent: 10 %, basis points 0..1000, so 1000 is not drawn.
        let choice = choose(&on(100.0), health(&headers), || draws.next().unwrap());
        assert_eq!(choice, Choice::Shadow { noise: false });
    }

    #[test]
    fn a_down_side_a_large_body_or_a_paid_generation_is_skipped() {
        let headers = HeaderMap::new();
        let down = Request {
            other_up: false,
            ..health(&headers)
        };
        assert_eq!(
            choose(&on(100.0), down, || 0),
            Choice::Skipped(SkipReason::SideDown)
        );
        let mut large = HeaderMap::new();
        large.insert(http::header::CONTENT_LENGTH, "65537".parse().unwrap());
        let verify = Request {
            method: &Method::POST,
            path: "/api/auth/verify",
            ..health(&large)
        };
        assert_eq!(
            choose(&on(100.0), verify, || 0),
            Choice::Skipped(SkipReason::BodyTooLarge)
        );
        let mut section = on(100.0);
        section
            .routes
            .push(super::super::settings::ShadowRoute::parse("POST /api/ai/generate").unwrap());
        let generate = Request {
            method: &Method::POST,
            path: "/api/ai/generate",
            paid_provider: true,
            ..health(&headers)
        };
        assert_eq!(
            choose(&section, generate, || 0),
            Choice::Skipped(SkipReason::PaidProvider)
        );
        let local = Request {
            paid_provider: false,
            ..generate
        };
        assert!(matches!(
            choose(&section, local, || 0),
            Choice::Shadow { .. }
        ));
    }

    #[test]
    fn a_body_is_awaited_when_declared_or_chunked() {
        let mut headers = HeaderMap::new();
        assert!(!has_body(&headers));
        headers.insert(http::header::CONTENT_LENGTH, "0".parse().unwrap());
        assert!(!has_body(&headers));
        headers.insert(http::header::CONTENT_LENGTH, "12".parse().unwrap());
        assert!(has_body(&headers));
        let mut chunked = HeaderMap::new();
        chunked.insert(http::header::TRANSFER_ENCODING, "chunked".parse().unwrap());
        assert!(has_body(&chunked));
    }
}
