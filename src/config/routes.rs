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
    ClaimHeaders, ClaimPattern, ClaimRule, IdentityHeaders, NamespaceSettings, Pattern, Policy,
    RouteSettings, Unauthenticated,
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
        .filter(|(_, r)| !is_public(r) && !r.bearer)
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
    // Every route's claim headers first: request shaping may not set any name any route
    // sets (one namespace, stripped on every route).
    let all_claims: Vec<_> = cx
        .file
        .routes
        .iter()
        .enumerate()
        .map(|(i, r)| claim_headers(rep, i, r, cx))
        .collect();
    let every_claims: Vec<&ClaimHeaders> = all_claims.iter().flatten().map(|c| &**c).collect();
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
        let claim_headers = all_claims[i].clone();
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
                claim_headers: &every_claims,
                own_claims: claim_headers.as_deref(),
            },
        );
        let mode = auth(rep, i, r);
        let ids: Vec<&str> = cx
            .file
            .providers
            .iter()
            .map(|p| p.id.get_ref().as_str())
            .collect();
        let allow = r
            .policy
            .as_ref()
            .map(|p| policy(rep, &format!("routes[{i}].policy"), mode, p, &ids));
        let deny = r
            .deny
            .iter()
            .enumerate()
            .map(|(j, p)| policy(rep, &format!("routes[{i}].deny[{j}]"), mode, p, &ids))
            .collect();
        routes.push(RouteSettings {
            id,
            host,
            path,
            upstream: r.upstream.get_ref().clone(),
            public: mode == Auth::Public,
            public_methods: public_methods(rep, i, r, mode),
            optional: mode == Auth::Optional,
            pass_access_token: r.pass_access_token,
            policy: allow,
            deny,
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
    let keys = super::headers::claim_keys(
        rep,
        &base,
        own.get_ref(),
        cx.identity_headers,
        &[cx.request_id_header, cx.assertion_header],
    );
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
    if r.bearer && is_public(r) {
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

/// How a route treats callers: `auth`, with `public = true` as the alias of `"public"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Auth {
    Required,
    Optional,
    Public,
}

/// Whether the route is public, by `public = true` or `auth = "public"` (for checks that run
/// before [`auth`] reports a contradiction).
pub(super) fn is_public(r: &file::Route) -> bool {
    r.public || r.auth.as_ref().is_some_and(|a| a.get_ref() == "public")
}

fn parse_auth(v: &str) -> Option<Auth> {
    match v {
        "required" => Some(Auth::Required),
        "optional" => Some(Auth::Optional),
        "public" => Some(Auth::Public),
        _ => None,
    }
}

/// `auth`, reconciled with `public`: both set and saying different things is an error.
fn auth(rep: &mut Reporter, i: usize, r: &file::Route) -> Auth {
    let key = format!("routes[{i}].auth");
    let Some(a) = &r.auth else {
        return if r.public {
            Auth::Public
        } else {
            parse_auth(d::ROUTE_AUTH).unwrap_or(Auth::Required)
        };
    };
    let Some(mode) = parse_auth(a.get_ref()) else {
        rep.error(
            key,
            span(a),
            format!(
                "{:?}: expected \"required\", \"optional\" or \"public\"",
                a.get_ref()
            ),
        );
        return if r.public {
            Auth::Public
        } else {
            Auth::Required
        };
    };
    if r.public && mode != Auth::Public {
        rep.error(
            key,
            span(a),
            format!(
                "public = true contradicts auth = {:?}: keep one of them",
                a.get_ref()
            ),
        );
    }
    if mode == Auth::Optional {
        // Nobody is ever sent to sign in from an optional route.
        if let Some(u) = &r.unauthenticated {
            rep.error(
                format!("routes[{i}].unauthenticated"),
                span(u),
                "an optional route never asks to sign in: remove unauthenticated",
            );
        }
    }
    mode
}

/// `public_methods`: HTTP methods (spelled in any case, as policy `methods`), on a route that
/// is not public (or optional) already.
fn public_methods(rep: &mut Reporter, i: usize, r: &file::Route, mode: Auth) -> Vec<http::Method> {
    let mut out = Vec::new();
    for (j, m) in r.public_methods.iter().enumerate() {
        let key = format!("routes[{i}].public_methods[{j}]");
        match m.get_ref().to_ascii_uppercase().parse::<http::Method>() {
            Ok(method) if mode == Auth::Public => rep.error(
                key,
                span(m),
                format!("{method} is public already: public = true admits every method"),
            ),
            Ok(method) if mode == Auth::Optional => rep.error(
                key,
                span(m),
                format!("{method} needs no sign-in already: auth = \"optional\" lets every method pass without one"),
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

/// Validate `[routes.policy]` or one `[[routes.deny]]` (`at`: its key) into its rules.
/// On public and optional routes only `source_ips` may be set: a rule on the identity could
/// only stop signed-in callers while anonymous ones pass, which says nothing clear.
fn policy(
    rep: &mut Reporter,
    at: &str,
    mode: Auth,
    p: &Spanned<file::Policy>,
    provider_ids: &[&str],
) -> Policy {
    let key = |k: &str| format!("{at}.{k}");
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
    for (j, e) in f.email_patterns.iter().enumerate() {
        if let Some(p) = pattern(rep, &format!("{}[{j}]", key("email_patterns")), e, true) {
            out.email_patterns.push(p);
        }
    }
    for (claim, v) in &f.claim_patterns {
        let at = format!("{}.{claim}", key("claim_patterns"));
        let written: Vec<Spanned<String>> = match v.get_ref() {
            toml::Value::String(s) => vec![Spanned::new(v.span(), s.clone())],
            toml::Value::Array(a)
                if !a.is_empty() && a.iter().all(|x| matches!(x, toml::Value::String(_))) =>
            {
                a.iter()
                    .filter_map(|x| x.as_str())
                    .map(|s| Spanned::new(v.span(), s.to_string()))
                    .collect()
            }
            _ => {
                rep.error(
                    at,
                    span(v),
                    "expected a regex or a non-empty list of regexes",
                );
                continue;
            }
        };
        let patterns: Vec<Pattern> = written
            .iter()
            .filter_map(|w| pattern(rep, &at, w, false))
            .collect();
        out.claim_patterns.push(ClaimPattern {
            claim: claim.clone(),
            patterns,
            written: written.into_iter().map(Spanned::into_inner).collect(),
        });
    }
    for (j, s) in f.source_ips.iter().enumerate() {
        if let Some(net) = source_net(rep, &format!("{}[{j}]", key("source_ips")), s) {
            out.source_ips.push(net);
        }
    }
    match mode {
        Auth::Required => {}
        Auth::Public | Auth::Optional if out.is_empty() || out.network_only() => {}
        Auth::Public => rep.error(
            at,
            span(p),
            "a public route admits everyone: only source_ips may be set here (it holds for every caller); remove the other keys or make the route protected",
        ),
        Auth::Optional => rep.error(
            at,
            span(p),
            "an optional route lets anonymous callers pass, so a rule on who is signed in could only stop signed-in users: only source_ips may be set here (it holds for every caller)",
        ),
    }
    // Empty as written (entries that failed validation were reported already).
    let written_empty = f.users.is_empty()
        && f.emails.is_empty()
        && f.email_domains.is_empty()
        && f.groups.is_empty()
        && f.methods.is_empty()
        && f.claims.is_empty()
        && f.providers.is_empty()
        && f.email_patterns.is_empty()
        && f.claim_patterns.is_empty()
        && f.source_ips.is_empty();
    if written_empty {
        let what = if at.ends_with(".policy") {
            "policy"
        } else {
            "deny rule"
        };
        rep.error(at, span(p), format!("empty {what}: list providers, users, emails, email_domains, email_patterns, groups, methods, claims, claim_patterns or source_ips (or remove the table to admit every signed-in user)"));
    }
    out
}

/// A regex matched against a whole value: anchored here (`corp\.example` must not match
/// `evil-corp.example.org`), case-insensitive for emails, compiled once.
fn pattern(rep: &mut Reporter, key: &str, p: &Spanned<String>, email: bool) -> Option<Pattern> {
    let anchored = format!("^(?:{})$", p.get_ref());
    match regex::RegexBuilder::new(&anchored)
        .case_insensitive(email)
        .size_limit(1 << 20)
        .build()
    {
        Ok(re) => Some(Pattern(re)),
        Err(e) => {
            let why = super::fields::regex_why(&e);
            rep.error(
                key,
                span(p),
                format!("{:?} is not a valid regex: {why}", p.get_ref()),
            );
            None
        }
    }
}

/// A `source_ips` entry: an address (a /32 or /128) or a CIDR block without host bits; an
/// IPv4-mapped IPv6 block is kept as the IPv4 block it is, as client addresses are.
fn source_net(rep: &mut Reporter, key: &str, s: &Spanned<String>) -> Option<ipnet::IpNet> {
    let v = s.get_ref().trim();
    let net = match v.parse::<ipnet::IpNet>() {
        Ok(n) => n,
        Err(_) => match v.parse::<std::net::IpAddr>() {
            Ok(ip) => ipnet::IpNet::from(ip),
            Err(_) => {
                rep.error(
                    key,
                    span(s),
                    format!("{v:?} is not an IP address or CIDR block"),
                );
                return None;
            }
        },
    };
    if net.trunc() != net {
        rep.error(
            key,
            span(s),
            format!(
                "{v:?} has host bits set: write {} for the block, or the address alone",
                net.trunc()
            ),
        );
        return None;
    }
    Some(crate::forwarded::unmap_net(net))
}
