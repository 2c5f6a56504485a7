//! The security fields of every answer, in the spirit of helmet's defaults: those of
//! `[proxy.security_headers]` that are on replace a backend's, and the fields that name the
//! server's software (`server`, `x-powered-by`) never leave the proxy. Written against
//! `HeaderEdit`, so the same step serves proxied answers, the proxy's own and the admin
//! listener's. (The frontend page's `content-security-policy` comes with the page, from
//! `shared`.)

use crate::config::SecurityHeadersSection;
use crate::forwarding::HeaderEdit;

/// Fields that would tell a client which software (and version) answered.
const NAMING_SOFTWARE: [&str; 2] = ["server", "x-powered-by"];

/// Each configured field by name; `None` where it is switched off.
fn configured(section: &SecurityHeadersSection) -> [(&'static str, Option<&http::HeaderValue>); 6] {
    [
        (
            "x-content-type-options",
            section.x_content_type_options.get(),
        ),
        ("x-frame-options", section.x_frame_options.get()),
        ("referrer-policy", section.referrer_policy.get()),
        (
            "cross-origin-opener-policy",
            section.cross_origin_opener_policy.get(),
        ),
        (
            "cross-origin-resource-policy",
            section.cross_origin_resource_policy.get(),
        ),
        (
            "x-dns-prefetch-control",
            section.x_dns_prefetch_control.get(),
        ),
    ]
}

/// Sets the fields that are on and drops those that name software.
pub fn to_client<H: HeaderEdit>(
    section: &SecurityHeadersSection,
    response: &mut H,
) -> Result<(), H::Error> {
    for name in NAMING_SOFTWARE {
        response.remove(name);
    }
    for (name, value) in configured(section) {
        if let Some(value) = value {
            response.insert(name, value.clone())?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::test_support::lines;
    use common::config::value::OptionalHeaderValue;
    use http::HeaderMap;

    use super::*;

    #[test]
    fn defaults_replace_a_backends_fields_and_software_names_go() {
        let off_frame = SecurityHeadersSection {
            x_frame_options: OptionalHeaderValue::off(),
            referrer_policy: OptionalHeaderValue::of("strict-origin"),
            ..SecurityHeadersSection::default()
        };
        let defaults = [
            "cross-origin-opener-policy: same-origin",
            "cross-origin-resource-policy: same-origin",
            "referrer-policy: no-referrer",
            "x-content-type-options: nosniff",
            "x-dns-prefetch-control: off",
            "x-frame-options: SAMEORIGIN",
        ];
        let changed = [
            "cross-origin-opener-policy: same-origin",
            "cross-origin-resource-policy: same-origin",
            "referrer-policy: strict-origin",
            "x-content-type-options: nosniff",
            "x-dns-prefetch-control: off",
            // Switched off: the backend's passes.
            "x-frame-options: DENY",
        ];
        for (name, section, expected) in [
            ("defaults", SecurityHeadersSection::default(), &defaults),
            ("one off, one changed", off_frame, &changed),
        ] {
            let mut response = HeaderMap::new();
            for (field, value) in [
                ("server", "actix-web/4"),
                ("x-powered-by", "Rust"),
                ("x-frame-options", "DENY"),
                ("referrer-policy", "unsafe-url"),
            ] {
                response.insert(field, value.parse().unwrap());
            }
            to_client(&section, &mut response).unwrap();
            assert_eq!(lines(&response), expected.to_vec(), "{name}");
        }
    }
}
