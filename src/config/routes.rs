//! `[[routes]]` and their `[routes.policy]`: host + path prefix → upstream, with how callers
//! are authenticated and who may pass. Cross-references (upstreams, providers, the gateway
//! prefix) are resolved here.

use std::collections::HashSet;

use toml::Spanned;

use super::defaults as d;
use super::error::Reporter;
use super::fields::span;
use super::file;
use super::model::{
    ClaimHeaders, ClaimRule, IdentityHeaders, NamespaceSettings, Policy, RouteSettings,
    Unauthenticated,
};
use crate::path::PathOptions;
use crate::routing::HostPattern;

/// `check`: a protected route needs a provider to sign in through. Without one the gateway
/// starts and refuses everyone (401/503), which `run` allows (a provider may come later) but
/// a CI check must not call ok.
pub(super) fn need_a_provider(rep: &mut Reporter, f: &file::File) {
    if !f.providers.is_empty() {
        return;
    }
    // Bearer routes are refused without a provider in every mode already.
    for (i, r) in f
        .routes
        .iter()
        .enumerate()
        .filter(|(_, r)| !r.public && !r.bearer)
    {
        rep.error(
            format!("routes[{i}]"),
            r.path.as_ref().map_or(span(&r.upstream), span),
            "protected route, but no [[providers]] is configured: nobody could sign in \
             (add a provider, or set public = true)",
        );
    }
}

/// What routes are checked against.
pub(super) struct Context<'a> {
    pub(crate) file: &'a file::File,
    pub(crate) paths: PathOptions,
    pub(crate) gateway_prefix: &'a str,
    /// `[headers]`' claim header keys, which a route's `[routes.headers]` overrides.
    pub(crate) claim_keys: &'a super::headers::ClaimKeys,
    /// What a route without `[routes.headers]` sends: `[headers]` alone.
    pub(crate) claim_headers: &'a Option<std::sync::Arc<ClaimHeaders>>,
    pub(crate) identity_headers: &'a IdentityHeaders,
    /// What request shaping may not touch (see `super::shaping`).
    pub(crate) namespace: &'a NamespaceSettings,
    pub(crate) assertion_header: &'a http::HeaderName,
    pub(crate) request_id_header: &'a http::HeaderName,
}

pub(super) fn routes(rep: &mut Reporter, cx: &Context) -> Vec<RouteSettings> {
    let mut routes = Vec::new();
    let mut seen_routes = HashSet::new();
    let mut seen_ids = HashSet::new();
    for (i, r) in cx.file.routes.iter().enumerate() {
        let key = |k: &str| format!("routes[{i}].{k}");
        let host = host(rep, i, &r.host);
        let path = path(rep, i, r, cx);
        references(rep, i, r, cx.file);
        let (Some(host), Some(path)) = (host, path) else {
            continue;
        };
        let match_key = if cx.file.paths.case_insensitive {
            path.to_ascii_lowercase()
        } else {
            path.clone()
        };
        if !seen_routes.insert((host.clone(), match_key)) {
            let at = r
                .path
                .as_ref()
                .or(r.host.as_ref())
                .map_or(span(&r.upstream), span);
            rep.error(
                key("path"),
                at,
                "duplicate route: another route has the same host and path",
            );
        }
        let id = route_id(rep, i, &r.id);
        if !seen_ids.insert(id.clone()) {
            rep.error(
                key("id"),
                r.id.as_ref().map_or(span(&r.upstream), span),
                format!("duplicate route id {id:?}"),
            );
        }
        let claim_headers = claim_headers(rep, i, r, cx);
        let shaping = super::shaping::shaping(
            rep,
            i,
            r,
            Some(path.as_str()),
            cx.paths,
            cx.file.paths.case_insensitive,
            &super::shaping::Owned {
                namespace: cx.namespace,
                identity_headers: cx.identity_headers,
                assertion_header: cx.assertion_header,
                request_id_header: cx.request_id_header,
                claim_headers: claim_headers.as_deref(),
            },
        );
        routes.push(RouteSettings {
            id,
            host,
            path,
            upstream: r.upstream.get_ref().clone(),
            public: r.public,
            public_methods: public_methods(rep, i, r),
            pass_access_token: r.pass_access_token,
            policy: r.policy.as_ref().and_then(|p| {
                let ids: Vec<&str> = cx
                    .file
                    .providers
                    .iter()
                    .map(|p| p.id.get_ref().as_str())
                    .collect();
                policy(rep, i, r.public, p, &ids)
            }),
            bearer: r.bearer,
            audiences: r.audiences.clone(),
            providers: r.providers.iter().map(|p| p.get_ref().clone()).collect(),
            identity_assertion: r.identity_assertion,
            csrf: r.csrf.unwrap_or(d::ROUTE_CSRF),
            unauthenticated: unauthenticated(rep, i, &r.unauthenticated),
            claim_headers,
            shaping,
        });
    }
    routes
}

/// The route's claim headers: `[headers]` with its own `[routes.headers]` laid over.
fn claim_headers(
    rep: &mut Reporter,
    i: usize,
    r: &file::Route,
    cx: &Context,
) -> Option<std::sync::Arc<ClaimHeaders>> {
    let Some(own) = &r.headers else {
        return cx.claim_headers.clone();
    };
    let base = format!("routes[{i}].headers");
    let keys = super::headers::claim_keys(rep, &base, own.get_ref(), cx.identity_headers);
    super::headers::merge(rep, cx.claim_keys, Some(&keys), &base, span(own))
        .map(std::sync::Arc::new)
}

fn host(rep: &mut Reporter, i: usize, v: &Option<Spanned<String>>) -> Option<HostPattern> {
    match v {
        None => Some(HostPattern::Any),
        Some(h) => {
            let p = HostPattern::parse(h.get_ref());
            if p.is_none() {
                rep.error(
                    format!("routes[{i}].host"),
                    span(h),
                    format!("{:?} is not a host name or *.wildcard", h.get_ref()),
                );
            }
            p
        }
    }
}

/// The route's canonical path prefix, outside the gateway's reserved prefix.
fn path(rep: &mut Reporter, i: usize, r: &file::Route, cx: &Context) -> Option<String> {
    let key = format!("routes[{i}].path");
    let path = match &r.path {
        None => Some(d::ROUTE_PATH.to_string()),
        Some(p) => match crate::path::normalize(p.get_ref(), cx.paths) {
            Ok(c) if c.as_str() == p.get_ref() => Some(c.as_str().to_string()),
            Ok(c) => {
                rep.error(
                    &key,
                    span(p),
                    format!("path is not canonical; write {:?}", c.as_str()),
                );
                None
            }
            Err(e) => {
                rep.error(
                    &key,
                    span(p),
                    format!("invalid path {:?}: {e}", p.get_ref()),
                );
                None
            }
        },
    };
    let prefix = cx.gateway_prefix;
    if let Some(p) = &path {
        if p.starts_with(prefix.trim_end_matches('/')) && prefix.len() > 1 {
            rep.error(
                &key,
                r.path.as_ref().and_then(span),
                format!("{p} is inside the gateway's reserved prefix {prefix}"),
            );
        }
    }
    path
}

/// The route's upstream and providers exist, and its bearer settings make sense.
fn references(rep: &mut Reporter, i: usize, r: &file::Route, f: &file::File) {
    let key = |k: &str| format!("routes[{i}].{k}");
    if !f.upstreams.contains_key(r.upstream.get_ref()) {
        rep.error(
            key("upstream"),
            span(&r.upstream),
            format!(
                "unknown upstream {:?}; define it under [upstreams.{}]",
                r.upstream.get_ref(),
                r.upstream.get_ref()
            ),
        );
    }
    if r.bearer && r.audiences.is_empty() {
        rep.error(
            key("audiences"),
            span(&r.upstream),
            "bearer = true needs the audiences its access tokens are issued for",
        );
    }
    if r.bearer && r.public {
        rep.error(
            key("bearer"),
            span(&r.upstream),
            "a public route does not check tokens",
        );
    }
    if r.bearer && f.providers.is_empty() {
        rep.error(
            key("bearer"),
            span(&r.upstream),
            "bearer = true needs at least one [[providers]] to verify tokens",
        );
    }
    if r.bearer {
        introspection(rep, i, r, &f.providers);
    }
    for (j, p) in r.providers.iter().enumerate() {
        if !f.providers.iter().any(|fp| fp.id.get_ref() == p.get_ref()) {
            rep.error(
                format!("routes[{i}].providers[{j}]"),
                span(p),
                format!("unknown provider {:?}", p.get_ref()),
            );
        }
    }
}

/// An opaque token goes to one provider only: with several introspecting providers on a
/// bearer route, each needs a prefix that tells its tokens from the others'.
fn introspection(rep: &mut Reporter, i: usize, r: &file::Route, providers: &[file::Provider]) {
    let introspecting: Vec<&file::Provider> = providers
        .iter()
        .filter(|p| {
            p.introspect_opaque_tokens
                .unwrap_or(d::INTROSPECT_OPAQUE_TOKENS)
        })
        .filter(|p| {
            r.providers.is_empty() || r.providers.iter().any(|n| n.get_ref() == p.id.get_ref())
        })
        .collect();
    if introspecting.len() <= 1 {
        return;
    }
    let prefixes: Vec<Option<&str>> = introspecting
        .iter()
        .map(|p| p.opaque_token_prefix.as_ref().map(|v| v.get_ref().as_str()))
        .collect();
    let distinct = prefixes.iter().enumerate().all(|(a, pa)| {
        prefixes.iter().enumerate().all(|(b, pb)| match (pa, pb) {
            (Some(pa), Some(pb)) => a == b || !pb.starts_with(pa),
            _ => false,
        })
    });
    if !distinct {
        let ids: Vec<&str> = introspecting
            .iter()
            .map(|p| p.id.get_ref().as_str())
            .collect();
        rep.error(
            format!("routes[{i}].providers"),
            r.providers.first().map_or(span(&r.upstream), span),
            format!(
                "this bearer route would send opaque tokens to several introspecting providers ({}) and cannot tell whose a token is: name one of them in the route's providers = [...], or give each an opaque_token_prefix (distinct, none the start of another)",
                ids.join(", ")
            ),
        );
    }
}

fn route_id(rep: &mut Reporter, i: usize, v: &Option<Spanned<String>>) -> String {
    match v {
        Some(id) => {
            let ok = !id.get_ref().is_empty()
                && id
                    .get_ref()
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
            if !ok {
                rep.error(
                    format!("routes[{i}].id"),
                    span(id),
                    "route ids use letters, digits, '-', '_' and '.'",
                );
            }
            id.get_ref().clone()
        }
        None => d::route_id(i),
    }
}

fn unauthenticated(rep: &mut Reporter, i: usize, v: &Option<Spanned<String>>) -> Unauthenticated {
    match v.as_ref().map(|u| (u.get_ref().as_str(), u)) {
        None | Some(("auto", _)) => Unauthenticated::Auto,
        Some(("redirect", _)) => Unauthenticated::Redirect,
        Some(("401", _)) => Unauthenticated::Status401,
        Some((other, u)) => {
            rep.error(
                format!("routes[{i}].unauthenticated"),
                span(u),
                format!("{other:?}: expected \"auto\", \"redirect\" or \"401\""),
            );
            Unauthenticated::Auto
        }
    }
}

/// Validate `[routes.policy]` into its rules.
/// `public_methods`: HTTP methods (spelled in any case, as policy `methods`), on a route that
/// is not public already.
fn public_methods(rep: &mut Reporter, i: usize, r: &file::Route) -> Vec<http::Method> {
    let mut out = Vec::new();
    for (j, m) in r.public_methods.iter().enumerate() {
        let key = format!("routes[{i}].public_methods[{j}]");
        match m.get_ref().to_ascii_uppercase().parse::<http::Method>() {
            Ok(method) if r.public => rep.error(
                key,
                span(m),
                format!("{method} is public already: public = true admits every method"),
            ),
            Ok(method) => out.push(method),
            Err(_) => rep.error(
                key,
                span(m),
                format!("{:?} is not an HTTP method", m.get_ref()),
            ),
        }
    }
    out
}

fn policy(
    rep: &mut Reporter,
    i: usize,
    public: bool,
    p: &Spanned<file::Policy>,
    provider_ids: &[&str],
) -> Option<Policy> {
    let key = |k: &str| format!("routes[{i}].policy.{k}");
    let f = p.get_ref();
    let mut providers = HashSet::new();
    for (j, id) in f.providers.iter().enumerate() {
        if !provider_ids.contains(&id.get_ref().as_str()) {
            rep.error(
                format!("{}[{j}]", key("providers")),
                span(id),
                format!("unknown provider {:?}", id.get_ref()),
            );
        }
        providers.insert(id.get_ref().clone());
    }
    if public {
        rep.error(
            format!("routes[{i}].policy"),
            span(p),
            "a public route admits everyone: remove the policy or public = true",
        );
    }
    let mut out = Policy {
        providers,
        users: f.users.iter().cloned().collect(),
        groups: f.groups.iter().cloned().collect(),
        ..Policy::default()
    };
    for (j, e) in f.emails.iter().enumerate() {
        let v = e.get_ref();
        if v.matches('@').count() != 1 || v.starts_with('@') || v.ends_with('@') {
            rep.error(
                format!("{}[{j}]", key("emails")),
                span(e),
                format!("{v:?} is not an email address"),
            );
        }
        out.emails.insert(v.to_ascii_lowercase());
    }
    for (j, d) in f.email_domains.iter().enumerate() {
        let v = d.get_ref();
        if v.contains('@')
            || v.starts_with('.')
            || HostPattern::parse(v).is_none()
            || v.contains('*')
        {
            rep.error(format!("{}[{j}]", key("email_domains")), span(d), format!("{v:?}: write the domain only, e.g. \"example.com\" (matched exactly, no subdomains)"));
        }
        out.email_domains.insert(v.to_ascii_lowercase());
    }
    for (j, m) in f.methods.iter().enumerate() {
        match m.get_ref().to_ascii_uppercase().parse::<http::Method>() {
            Ok(method) => out.methods.push(method),
            Err(_) => rep.error(
                format!("{}[{j}]", key("methods")),
                span(m),
                format!("{:?} is not an HTTP method", m.get_ref()),
            ),
        }
    }
    for (claim, value) in &f.claims {
        out.claims.push(ClaimRule {
            claim: claim.clone(),
            value: value.clone(),
        });
    }
    if out.is_empty() {
        rep.error(format!("routes[{i}].policy"), span(p), "empty policy: list providers, users, emails, email_domains, groups, methods or claims (or remove the table to admit every signed-in user)");
    }
    Some(out)
}
