//! `[shadow]`: which requests are also sent to the other side, and how many may be in flight.
//! Read with the rest of the proxy's config and hot-reloaded; `percent = 0` (the default) is
//! off. The backends read only `secret_file` from this section (the key that signs a shadow,
//! `common::shadow`), so a new key here never breaks them.

use std::fmt;
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::time::Duration;

use common::config::value::Bounded;
use http::Method;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::config::Percent;

/// `[shadow]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ShadowSection {
    /// Share of eligible requests also sent to the other side; 0 is off.
    pub percent: Percent,
    /// The eligible routes, as `"METHOD /path"`; login and generate only when listed.
    pub routes: Vec<ShadowRoute>,
    /// Share of shadowed requests also sent a second time to the side that served them, to
    /// learn which fields differ by nature (ids, timestamps).
    pub noise_percent: Percent,
    /// Shadows in flight at once; over it a shadow is dropped (and counted), never queued.
    pub max_inflight: NonZeroU32,
    /// A shadow that takes longer is abandoned (and counted).
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Requests with a larger body are not shadowed (and counted as skipped); a response
    /// captured for comparison stops at this many bytes too.
    pub max_body_bytes: Bounded<0, { 16 * 1024 * 1024 }>,
    /// Fields that differ by design, `"<route> <path>"` (`*` for every route): never counted.
    pub ignore: Vec<String>,
    /// The key shadows are signed with, shared with the backends (`CANARY_SHADOW_SECRET`
    /// overrides it); created on first start.
    pub secret_file: PathBuf,
}

impl Default for ShadowSection {
    fn default() -> Self {
        Self {
            percent: Percent::default(),
            routes: vec![
                ShadowRoute::new(Method::GET, common::routes::HEALTH),
                ShadowRoute::new(Method::POST, common::routes::VERIFY),
            ],
            noise_percent: Percent::from_percent(10.0).unwrap_or_default(),
            max_inflight: NonZeroU32::new(64).unwrap_or(NonZeroU32::MIN),
            timeout: Duration::from_secs(5),
            max_body_bytes: Bounded::of(65_536),
            // The contract's one difference between the backends.
            ignore: vec!["/health $.backend".into()],
            secret_file: PathBuf::from("data/shadow.secret"),
        }
    }
}

impl ShadowSection {
    pub fn is_on(&self) -> bool {
        self.percent.basis_points() > 0
    }

    /// Whether `method path` is one of `routes`.
    pub fn is_eligible(&self, method: &Method, path: &str) -> bool {
        (self.routes.iter()).any(|route| route.method == *method && route.path == path)
    }
}

/// One entry of `shadow.routes`: a method and one of the contract's paths.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShadowRoute {
    pub method: Method,
    pub path: &'static str,
}

impl ShadowRoute {
    fn new(method: Method, path: &'static str) -> Self {
        Self { method, path }
    }

    /// The contract's routes a shadow may be sent on.
    const KNOWN: [(&'static str, &'static str); 4] = [
        ("GET", common::routes::HEALTH),
        ("POST", common::routes::VERIFY),
        ("POST", common::routes::LOGIN),
        ("POST", common::routes::GENERATE),
    ];

    pub fn parse(text: &str) -> Result<Self, String> {
        let (method, path) = text
            .trim()
            .split_once(' ')
            .ok_or_else(|| format!("{text:?} must be \"METHOD /path\", e.g. \"GET /health\""))?;
        let path = path.trim();
        Self::KNOWN
            .iter()
            .find(|(m, p)| *m == method && *p == path)
            .and_then(|(m, p)| Some(Self::new(Method::from_bytes(m.as_bytes()).ok()?, p)))
            .ok_or_else(|| {
                let known: Vec<String> = (Self::KNOWN.iter())
                    .map(|(m, p)| format!("\"{m} {p}\""))
                    .collect();
                format!(
                    "{text:?} is not a route of the API; one of {}",
                    known.join(", ")
                )
            })
    }
}

impl fmt::Display for ShadowRoute {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.method, self.path)
    }
}

impl<'de> Deserialize<'de> for ShadowRoute {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Self::parse(&String::deserialize(deserializer)?).map_err(serde::de::Error::custom)
    }
}

impl Serialize for ShadowRoute {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_are_the_contracts_by_method_and_path() {
        let health = ShadowRoute::parse("GET /health").unwrap();
        assert_eq!((health.method, health.path), (Method::GET, "/health"));
        assert_eq!(
            ShadowRoute::parse(" POST  /api/ai/generate").unwrap().path,
            "/api/ai/generate"
        );
        for bad in ["GET", "POST /health", "GET /nope", "get /health", ""] {
            let error = ShadowRoute::parse(bad).unwrap_err();
            assert!(
                error.contains("GET /health") || error.contains("METHOD"),
                "{bad}: {error}"
            );
        }
    }

    #[test]
    fn by_default_shadowing_is_off_on_the_side_effect_free_routes() {
        let section = ShadowSection::default();
        assert!(!section.is_on());
        assert!(section.is_eligible(&Method::GET, "/health"));
        assert!(section.is_eligible(&Method::POST, "/api/auth/verify"));
        assert!(!section.is_eligible(&Method::POST, "/api/auth/login"));
        assert!(!section.is_eligible(&Method::POST, "/api/ai/generate"));
        assert!(!section.is_eligible(&Method::GET, "/api/auth/verify"));
    }

    #[test]
    fn a_section_reads_back_what_it_wrote() {
        let section = ShadowSection {
            percent: Percent::from_percent(5.0).unwrap(),
            routes: vec![ShadowRoute::parse("POST /api/auth/login").unwrap()],
            ..ShadowSection::default()
        };
        let text = toml::to_string(&section).unwrap();
        assert_eq!(
            toml::from_str::<ShadowSection>(&text).unwrap(),
            section,
            "{text}"
        );
    }
}
