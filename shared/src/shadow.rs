//! Recognising the proxy's shadow copies (`common::shadow`): the one check both adapters rely
//! on, through `Observation` (metrics) and `Service` (rate limit, login throttle).
//!
//! A verified shadow gets the answer any request gets, but has no side effect its primary
//! did not already have: generate peeks at the budget instead of spending it (so it is never
//! refused by the limiter, whose decision was the primary's), login neither records a
//! failure nor clears the throttle (a locked email is still refused), and nothing is counted
//! in the metrics.

use http::HeaderName;

pub use common::shadow::{HEADER, ShadowKey};

use crate::observation::REQUEST_ID;

/// [`HEADER`] as a header name.
pub const SHADOW: HeaderName = HeaderName::from_static(HEADER);

/// Whether the request whose headers `header` looks up is a shadow the proxy sent: it carries
/// [`SHADOW`], and that is `key`'s signature of its `x-request-id`. Without a request id the
/// backend keeps (see `common::request_id::kept`) there is nothing signed, so no shadow.
pub fn is_shadow<'a>(key: &ShadowKey, header: impl Fn(&HeaderName) -> Option<&'a [u8]>) -> bool {
    let Some(tag) = header(&SHADOW) else {
        return false;
    };
    common::request_id::kept(header(&REQUEST_ID)).is_some_and(|id| key.verify(id, tag))
}

#[cfg(test)]
mod tests {
    use http::{HeaderMap, HeaderValue};

    use super::*;

    const ID: &str = common::request_id::HEADER;

    fn key(secret: &[u8]) -> ShadowKey {
        ShadowKey::new(secret).unwrap()
    }

    fn check(key: &ShadowKey, headers: &[(&'static str, HeaderValue)]) -> bool {
        let mut map = HeaderMap::new();
        for (name, value) in headers {
            map.append(*name, value.clone());
        }
        is_shadow(key, |name| map.get(name).map(HeaderValue::as_bytes))
    }

    #[test]
    fn only_a_signature_of_the_kept_request_id_under_the_key_is_a_shadow() {
        let ours = key(&[1; 32]);
        let theirs = key(&[2; 32]);
        let id = HeaderValue::from_static("req-1");
        let signed = ours.sign("req-1");
        assert!(check(&ours, &[(ID, id.clone()), (HEADER, signed.clone())]));
        for headers in [
            vec![(ID, id.clone())],
            vec![(HEADER, signed.clone())],
            vec![(ID, id.clone()), (HEADER, theirs.sign("req-1"))],
            vec![
                (ID, HeaderValue::from_static("req-2")),
                (HEADER, signed.clone()),
            ],
            vec![(ID, id.clone()), (HEADER, HeaderValue::from_static("1"))],
        ] {
            assert!(!check(&ours, &headers), "{headers:?}");
        }
        // An id the backend would replace with its own is not the one that was signed.
        let spaced = "has space";
        assert!(!check(
            &ours,
            &[
                (ID, HeaderValue::from_static(spaced)),
                (HEADER, ours.sign(spaced)),
            ]
        ));
    }
}
