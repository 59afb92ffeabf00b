//! `[gateway]` and `[paths]`: the gateway's reserved prefix, redirect targets, the bearer
//! cache bound, page templates, and how request paths are read.

use super::defaults as d;
use super::error::Reporter;
use super::fields::span;
use super::file;
use crate::path::PathOptions;
use crate::routing::HostPattern;

/// `[gateway]`, validated.
pub(super) struct Gateway {
    pub(crate) prefix: String,
    pub(crate) allowed_redirect_hosts: Vec<String>,
    pub(crate) bearer_cache_entries: usize,
    /// `templates_dir`: (template name, source) of each page override, checked.
    pub(crate) templates: Vec<(String, String)>,
}

pub(super) fn paths(f: &file::Paths) -> PathOptions {
    PathOptions {
        allow_semicolon: f.allow_semicolon,
        allow_encoded_slash: f.allow_encoded_slash,
    }
}

pub(super) fn gateway(rep: &mut Reporter, f: &file::Gateway, paths: PathOptions) -> Gateway {
    let mut allowed_redirect_hosts = Vec::new();
    for (i, h) in f.allowed_redirect_hosts.iter().enumerate() {
        let v = h.get_ref().to_ascii_lowercase();
        let bare = v.strip_prefix('.').unwrap_or(&v);
        if HostPattern::parse(bare).is_none() || bare.contains('*') {
            rep.error(
                format!("gateway.allowed_redirect_hosts[{i}]"),
                span(h),
                "a host name, or .suffix for any name below it",
            );
        }
        allowed_redirect_hosts.push(v);
    }
    let prefix = match &f.prefix {
        None => d::GATEWAY_PREFIX.to_string(),
        Some(p) => {
            let v = p.get_ref();
            let ok = v.len() > 2
                && v.starts_with('/')
                && v.ends_with('/')
                && crate::path::normalize(v, paths)
                    .map(|c| c.as_str() == v)
                    .unwrap_or(false);
            if !ok {
                rep.error(
                    "gateway.prefix",
                    span(p),
                    "must be a canonical path that starts and ends with '/', e.g. \"/.authgate/\"",
                );
            }
            v.clone()
        }
    };
    let bearer_cache_entries = match &f.bearer_cache_entries {
        None => d::BEARER_CACHE_ENTRIES,
        Some(v) if *v.get_ref() >= 0 => *v.get_ref() as usize,
        Some(v) => {
            rep.error(
                "gateway.bearer_cache_entries",
                span(v),
                "must not be negative",
            );
            0
        }
    };
    let templates =
        (f.templates_dir.as_ref()).map_or_else(Vec::new, |d| super::templates::read(rep, d));
    Gateway {
        prefix,
        allowed_redirect_hosts,
        bearer_cache_entries,
        templates,
    }
}
