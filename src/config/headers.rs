//! `[headers]`: the identity header namespace stripped from clients and the names of the
//! identity headers the gateway sets.

use toml::Spanned;

use super::defaults as d;
use super::error::Reporter;
use super::fields::{header_name, span};
use super::file;
use super::model::{IdentityHeaders, NamespaceSettings};
use crate::out_header::OutName;

pub(super) fn headers(
    rep: &mut Reporter,
    f: &file::Headers,
) -> (NamespaceSettings, IdentityHeaders) {
    (namespace(rep, f), identity_headers(rep, f))
}

fn namespace(rep: &mut Reporter, f: &file::Headers) -> NamespaceSettings {
    let defaults = NamespaceSettings::default();
    let names: Vec<String> = match &f.identity_headers {
        None => defaults.names,
        Some(v) => v
            .iter()
            .enumerate()
            .filter_map(|(i, h)| {
                header_name(rep, &format!("headers.identity_headers[{i}]"), h)
                    .map(|h| h.to_string())
            })
            .collect(),
    };
    let mut prefixes: Vec<String> = match &f.identity_prefixes {
        None => defaults.prefixes,
        Some(v) => v.iter().map(|s| s.get_ref().to_ascii_lowercase()).collect(),
    };
    for (i, p) in f.identity_prefixes.iter().flatten().enumerate() {
        if p.get_ref().len() < d::MIN_IDENTITY_PREFIX_LEN {
            rep.error(
                format!("headers.identity_prefixes[{i}]"),
                span(p),
                "prefix too short: it would strip ordinary headers",
            );
        }
    }
    // Our own namespace is never optional.
    if !prefixes.iter().any(|p| p == d::OWN_PREFIX) {
        prefixes.push(d::OWN_PREFIX.into());
    }
    NamespaceSettings { names, prefixes }
}

fn identity_headers(rep: &mut Reporter, f: &file::Headers) -> IdentityHeaders {
    let defaults = IdentityHeaders::default();
    let mut out_header = |k: &str, v: &Option<Spanned<String>>, d: &OutName| -> OutName {
        v.as_ref()
            .and_then(|h| header_name(rep, &format!("headers.{k}"), h))
            .map(OutName::new)
            .unwrap_or_else(|| d.clone())
    };
    IdentityHeaders {
        user: out_header("user", &f.user, &defaults.user),
        email: out_header("email", &f.email, &defaults.email),
        groups: out_header("groups", &f.groups, &defaults.groups),
        preferred_username: out_header(
            "preferred_username",
            &f.preferred_username,
            &defaults.preferred_username,
        ),
        access_token: out_header("access_token", &f.access_token, &defaults.access_token),
        provider: f
            .provider
            .as_ref()
            .and_then(|h| header_name(rep, "headers.provider", h))
            .map(OutName::new),
        groups_filter: match &f.groups_filter {
            None => None,
            Some(r) => match regex::Regex::new(r.get_ref()) {
                Ok(re) => Some(re),
                Err(e) => {
                    rep.error(
                        "headers.groups_filter",
                        span(r),
                        format!("invalid regular expression: {e}"),
                    );
                    None
                }
            },
        },
        max_groups_bytes: match &f.max_groups_bytes {
            None => d::MAX_GROUPS_BYTES,
            Some(v) if d::MAX_GROUPS_BYTES_RANGE.contains(v.get_ref()) => *v.get_ref() as usize,
            Some(v) => {
                rep.error(
                    "headers.max_groups_bytes",
                    span(v),
                    format!(
                        "must be between {} and {}",
                        d::MAX_GROUPS_BYTES_RANGE.start(),
                        d::MAX_GROUPS_BYTES_RANGE.end()
                    ),
                );
                d::MAX_GROUPS_BYTES
            }
        },
    }
}
