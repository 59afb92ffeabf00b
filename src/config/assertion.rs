//! `[assertion]`: the signed identity assertion sent to upstreams (`crate::assertion`).

use http::HeaderName;

use super::defaults as d;
use super::error::Reporter;
use super::fields::duration;
use super::file;
use super::model::AssertionSettings;

pub(super) fn assertion(rep: &mut Reporter, f: &file::Assertion) -> AssertionSettings {
    AssertionSettings {
        header: match &f.header {
            None => HeaderName::from_static(d::ASSERTION_HEADER),
            Some(h) => super::headers::owned_name(rep, "assertion.header", h, None)
                .unwrap_or(HeaderName::from_static(d::ASSERTION_HEADER)),
        },
        key_file: f.key_file.clone(),
        issuer: f
            .issuer
            .clone()
            .unwrap_or_else(|| d::ASSERTION_ISSUER.into()),
        ttl: duration(rep, "assertion.ttl", &f.ttl, d::ASSERTION_TTL),
    }
}
