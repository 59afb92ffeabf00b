//! `[headers]`: the identity header namespace stripped from clients, the names of the
//! identity headers the gateway sets, and the claim headers (claims, tokens, `REMOTE_USER`,
//! Basic auth, `X-Auth-Request-*`) of every route, which a route's `[routes.headers]`
//! overrides key by key ([`merge`]).

use http::HeaderName;
use toml::Spanned;

use super::defaults as d;
use super::error::Reporter;
use super::fields::{header_name, span};
use super::file;
use super::model::{ClaimHeaders, IdTokenTo, IdentityHeaders, NamespaceSettings, RemoteUser};
use super::secret::Secret;
use crate::identity::canonical_name;
use crate::out_header::OutName;

pub(super) fn headers(
    rep: &mut Reporter,
    f: &file::Headers,
) -> (NamespaceSettings, IdentityHeaders) {
    (namespace(rep, f), identity_headers(rep, f))
}

/// A header name the gateway sets (an identity header, the assertion) or strips from every
/// request (the namespace): never one it reads to decide or that describes the request
/// ([`is_protected`]). Stripped, `Origin` would blind the CSRF guard and `X-Forwarded-For`
/// make every client the proxy; set, `X-HTTP-Method-Override` would run another method.
/// `except`: a name this key may have (the request ID header's own default).
pub(super) fn owned_name(
    rep: &mut Reporter,
    key: &str,
    v: &Spanned<String>,
    except: Option<&str>,
) -> Option<HeaderName> {
    let name = header_name(rep, key, v)?;
    let canon = canonical_name(name.as_str());
    if is_protected(&canon) && except != Some(canon.as_str()) {
        rep.error(
            key,
            span(v),
            format!(
                "{:?} is a framing, forwarding, cookie or method-override header, or one the gateway reads to decide (Origin, Sec-*, ...): the gateway cannot own it",
                v.get_ref()
            ),
        );
        return None;
    }
    Some(name)
}

/// The protected header a prefix (canonical) would cover, or whose family it is in.
fn prefix_clash(canon: &str) -> Option<&'static str> {
    d::PROTECTED_HEADERS
        .iter()
        .copied()
        .chain(crate::forwarded::FORWARDING_HEADERS.iter().copied())
        .chain(crate::policy::METHOD_OVERRIDE_HEADERS.iter().copied())
        .chain(DECISION_HEADERS.iter().copied())
        .chain(DECISION_PREFIXES.iter().copied())
        .find(|h| h.starts_with(canon))
        .or_else(|| {
            DECISION_PREFIXES
                .iter()
                .find(|p| canon.starts_with(*p))
                .copied()
        })
}

fn namespace(rep: &mut Reporter, f: &file::Headers) -> NamespaceSettings {
    let defaults = NamespaceSettings::default();
    let names: Vec<String> = match &f.identity_headers {
        None => defaults.names,
        Some(v) => v
            .iter()
            .enumerate()
            .filter_map(|(i, h)| {
                owned_name(rep, &format!("headers.identity_headers[{i}]"), h, None)
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
        } else if let Some(h) = prefix_clash(&canonical_name(p.get_ref())) {
            rep.error(
                format!("headers.identity_prefixes[{i}]"),
                span(p),
                format!(
                    "{:?} would strip {h} from every request, which the gateway reads",
                    p.get_ref()
                ),
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
            .and_then(|h| owned_name(rep, &format!("headers.{k}"), h, None))
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
            .and_then(|h| owned_name(rep, "headers.provider", h, None))
            .map(OutName::new),
        groups_filter: match &f.groups_filter {
            None => None,
            Some(r) => match regex::Regex::new(r.get_ref()) {
                Ok(re) => Some(re),
                Err(e) => {
                    rep.error(
                        "headers.groups_filter",
                        span(r),
                        format!(
                            "invalid regular expression: {}",
                            super::fields::regex_why(&e)
                        ),
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

/// Where `[headers]`' claim header keys are, for errors about their combination: the first of
/// them that is set.
pub(super) fn claim_span(f: &file::Headers) -> Option<std::ops::Range<usize>> {
    f.basic_auth
        .as_ref()
        .and_then(span)
        .or_else(|| f.id_token.as_ref().and_then(span))
        .or_else(|| f.claim_prefix_allow.as_ref()?.first().and_then(span))
}

/// Whether a header (canonical spelling, see `identity::canonical_name`) is one no claim may
/// ever become: framing, hop-by-hop, forwarding, cookies ([`d::PROTECTED_HEADERS`],
/// `proxy-*`).
pub(crate) fn is_protected(canon: &str) -> bool {
    // Every header that describes the original request (`X-Original-URL`, `X-Client-IP`...) is
    // the forwarding module's list, every method override the policy's: one list each, so a
    // claim can never pose as one of them.
    d::PROTECTED_HEADERS.contains(&canon)
        || crate::forwarded::FORWARDING_HEADERS.contains(&canon)
        || crate::policy::METHOD_OVERRIDE_HEADERS.contains(&canon)
        || DECISION_HEADERS.contains(&canon)
        || DECISION_PREFIXES.iter().any(|p| canon.starts_with(p))
}

/// Headers the gateway reads to decide about a request (the CSRF guard, whether to redirect
/// to sign in) or sets on it (the default request ID): a claim header by such a name would
/// forge them upstream, and, stripped from every request as part of the namespace, blind the
/// gateway (no `Origin` and no `Sec-Fetch-Site`: no cross-site request is ever seen).
const DECISION_HEADERS: &[&str] = &[
    "origin",
    "referer",
    "accept",
    "x-requested-with",
    "x-request-id",
    "user-agent",
    // What front proxies say about a client certificate or an earlier hop: identity too.
    "x-forwarded-client-cert",
    "x-forwarded-tls-client-cert",
    "x-forwarded-tls-client-cert-info",
    "x-original-forwarded-for",
    "ssl-client-cert",
    "x-client-cert",
];
const DECISION_PREFIXES: &[&str] = &["proxy-", "sec-", "x-ssl-", "x-amzn-oidc-"];

/// The `X-Forwarded-*` family describes the request; the default identity headers are in it
/// (`X-Forwarded-User`), so it is closed to claims only, not to `[headers]`.
const CLAIM_FREE_PREFIX: &str = "x-forwarded-";

/// The claim header keys of one table (`[headers]` or a `[routes.headers]`), checked, before
/// the route's are laid over the global ones ([`merge`]).
#[derive(Debug, Clone, Default)]
pub(super) struct ClaimKeys {
    claims: Vec<(OutName, String)>,
    separator: Option<String>,
    prefix: Option<String>,
    prefix_allow: Option<Vec<String>>,
    max_bytes: Option<usize>,
    id_token: Option<IdTokenTo>,
    remote_user: Option<RemoteUser>,
    basic_auth: Option<Secret>,
    x_auth_request: Option<bool>,
}

/// Check one table's claim header keys; `base` is its key path (`headers`,
/// `routes[2].headers`). `fixed`: the identity headers, which no claim header may rename.
pub(super) fn claim_keys(
    rep: &mut Reporter,
    base: &str,
    f: &file::ClaimKeys,
    fixed: &IdentityHeaders,
    reserved: &[&HeaderName],
) -> ClaimKeys {
    let key = |k: &str| format!("{base}.{k}");
    // The identity headers, and the headers the gateway sets besides (the request ID, the
    // assertion): a claim by one of these names would replace the gateway's value.
    let fixed_names: Vec<String> = fixed
        .names()
        .iter()
        .map(|n| n.as_str())
        .chain(reserved.iter().map(|n| n.as_str()))
        .map(canonical_name)
        .collect();
    // A header name the gateway may set from a claim or token: valid, not protected, not one
    // of the fixed identity headers (which one would the upstream believe?).
    let settable = |rep: &mut Reporter, k: &str, v: &Spanned<String>| -> Option<OutName> {
        let name = header_name(rep, k, v)?;
        let canon = canonical_name(name.as_str());
        if is_protected(&canon) {
            rep.error(
                k,
                span(v),
                format!(
                    "{:?} is a framing, hop-by-hop, forwarding, cookie or method-override header, or one the gateway reads to decide (Origin, Sec-*, ...): no claim may set it",
                    v.get_ref()
                ),
            );
            return None;
        }
        if canon.starts_with(d::OWN_PREFIX) {
            rep.error(
                k,
                span(v),
                format!(
                    "{:?} is in the gateway's own namespace ({})",
                    v.get_ref(),
                    d::OWN_PREFIX
                ),
            );
            return None;
        }
        if fixed_names.contains(&canon) {
            rep.error(
                k,
                span(v),
                format!(
                    "{:?} is already an identity header ([headers] user, email, groups, preferred_username, access_token or provider) or a header the gateway sets (server.request_id_header, assertion.header)",
                    v.get_ref()
                ),
            );
            return None;
        }
        if canon.starts_with(CLAIM_FREE_PREFIX) {
            rep.error(
                k,
                span(v),
                format!(
                    "{:?}: X-Forwarded-* headers describe the request (proxies read and write them): no claim may set one",
                    v.get_ref()
                ),
            );
            return None;
        }
        Some(OutName::with_spelling(name, v.get_ref()))
    };
    let mut out = ClaimKeys::default();
    let mut seen: Vec<String> = Vec::new();
    for (name, claim) in f.claims.iter().flatten() {
        let k = format!("{base}.claims.{name}");
        let as_spanned = Spanned::new(span(claim).unwrap_or(0..0), name.clone());
        let Some(out_name) = settable(rep, &k, &as_spanned) else {
            continue;
        };
        let canon = canonical_name(name);
        if seen.contains(&canon) {
            rep.error(
                &k,
                span(claim),
                format!("{name:?} names the same header as another entry (headers are compared in every spelling)"),
            );
            continue;
        }
        seen.push(canon);
        if claim.get_ref().is_empty() {
            rep.error(&k, span(claim), "empty claim name");
            continue;
        }
        out.claims.push((out_name, claim.get_ref().clone()));
    }
    if let Some(s) = &f.claim_separator {
        if s.get_ref().chars().any(char::is_control) {
            rep.error(
                key("claim_separator"),
                span(s),
                "control characters cannot be sent in a header",
            );
        }
        out.separator = Some(s.get_ref().clone());
    }
    if let Some(p) = &f.claim_prefix {
        out.prefix = claim_prefix(rep, &key("claim_prefix"), p, &fixed_names);
    }
    if let Some(allow) = &f.claim_prefix_allow {
        for (i, c) in allow.iter().enumerate() {
            if c.get_ref().is_empty() {
                rep.error(
                    format!("{base}.claim_prefix_allow[{i}]"),
                    span(c),
                    "empty claim name",
                );
            }
        }
        out.prefix_allow = Some(allow.iter().map(|c| c.get_ref().clone()).collect());
    }
    if let Some(v) = &f.max_claim_bytes {
        out.max_bytes = Some(super::fields::bounded(
            rep,
            &key("max_claim_bytes"),
            &Some(v.clone()),
            d::MAX_CLAIM_BYTES_RANGE,
            d::MAX_CLAIM_BYTES,
        ));
    }
    if let Some(v) = &f.id_token {
        out.id_token = if v.get_ref().eq_ignore_ascii_case("authorization") {
            Some(IdTokenTo::Authorization)
        } else {
            settable(rep, &key("id_token"), v).map(IdTokenTo::Header)
        };
    }
    if let Some(r) = &f.remote_user {
        out.remote_user = remote_user(rep, &key("remote_user"), r, &settable);
    }
    if let Some(b) = &f.basic_auth {
        let password = super::fields::secret_value(
            rep,
            &key("basic_auth.password"),
            &b.get_ref().password,
            &key("basic_auth.password_file"),
            &b.get_ref().password_file,
        );
        // Neither: an empty password, as oauth2-proxy sends with --pass-basic-auth.
        out.basic_auth = Some(password.unwrap_or_else(|| Secret::new("")));
    }
    out.x_auth_request = f.x_auth_request.as_ref().map(|v| *v.get_ref());
    // Two of this table's own names for one header.
    let mut own: Vec<(String, &str)> = out
        .claims
        .iter()
        .map(|(n, _)| (canonical_name(n.name().as_str()), "claims"))
        .collect();
    if let Some(IdTokenTo::Header(h)) = &out.id_token {
        own.push((canonical_name(h.name().as_str()), "id_token"));
    }
    if let Some(r) = &out.remote_user {
        own.push((
            canonical_name(r.header.name().as_str()),
            "remote_user.header",
        ));
    }
    for (i, (a, ka)) in own.iter().enumerate() {
        if let Some((_, kb)) = own[..i].iter().find(|(b, _)| b == a) {
            // Claims entries are distinct already: `ka` is id_token or remote_user.header.
            let at = match *ka {
                "id_token" => f.id_token.as_ref().and_then(span),
                _ => f.remote_user.as_ref().and_then(span),
            };
            rep.error(
                key(ka),
                at,
                format!("{ka} and {kb} name the same header {a:?}"),
            );
        }
    }
    out
}

/// `claim_prefix`: long enough not to swallow ordinary headers, a header-name token, and
/// never the start of a protected or identity header (`X-Forwarded-` + a claim `for`).
fn claim_prefix(
    rep: &mut Reporter,
    key: &str,
    p: &Spanned<String>,
    fixed_names: &[String],
) -> Option<String> {
    let v = p.get_ref();
    if v.len() < d::MIN_IDENTITY_PREFIX_LEN {
        rep.error(
            key,
            span(p),
            "prefix too short: it would strip ordinary headers",
        );
        return None;
    }
    if HeaderName::from_bytes(v.as_bytes()).is_err() {
        rep.error(key, span(p), format!("{v:?} cannot start a header name"));
        return None;
    }
    let canon = canonical_name(v);
    let clash = prefix_clash(&canon)
        .or_else(|| {
            [d::OWN_PREFIX, CLAIM_FREE_PREFIX]
                .into_iter()
                .chain(fixed_names.iter().map(String::as_str))
                .find(|h| h.starts_with(&canon))
        })
        .or(canon
            .starts_with(CLAIM_FREE_PREFIX)
            .then_some("X-Forwarded-*"));
    if let Some(h) = clash {
        rep.error(
            key,
            span(p),
            format!("{v:?} would let a claim set {h}, and strip it from every request"),
        );
        return None;
    }
    Some(v.clone())
}

fn remote_user(
    rep: &mut Reporter,
    key: &str,
    r: &Spanned<file::RemoteUser>,
    settable: &impl Fn(&mut Reporter, &str, &Spanned<String>) -> Option<OutName>,
) -> Option<RemoteUser> {
    let f = r.get_ref();
    let claim = match &f.claim {
        Some(c) if c.get_ref().is_empty() => {
            rep.error(format!("{key}.claim"), span(c), "empty claim name");
            None
        }
        c => c.as_ref().map(|c| c.get_ref().clone()),
    };
    let pattern = match &f.pattern {
        None => None,
        Some(p) => match regex::Regex::new(p.get_ref()) {
            Ok(re) => Some(re),
            Err(e) => {
                rep.error(
                    format!("{key}.pattern"),
                    span(p),
                    format!(
                        "invalid regular expression: {}",
                        super::fields::regex_why(&e)
                    ),
                );
                return None;
            }
        },
    };
    let replace = match (&f.replace, &pattern) {
        (Some(v), None) => {
            rep.error(
                format!("{key}.replace"),
                span(v),
                "replace needs a pattern to take groups from",
            );
            return None;
        }
        (Some(v), Some(re)) => {
            if let Err(group) = groups_exist(re, v.get_ref()) {
                rep.error(
                    format!("{key}.replace"),
                    span(v),
                    format!("refers to group {group}, which the pattern does not have"),
                );
                return None;
            }
            v.get_ref().clone()
        }
        (None, Some(re)) if re.captures_len() > 1 => "$1".to_string(),
        (None, _) => "$0".to_string(),
    };
    let header = match &f.header {
        Some(h) => settable(rep, &format!("{key}.header"), h)?,
        // The default is checked too: `[headers] user` may be "Remote-User".
        None => settable(
            rep,
            &format!("{key}.header"),
            &Spanned::new(span(r).unwrap_or(0..0), d::REMOTE_USER_HEADER.to_string()),
        )?,
    };
    Some(RemoteUser {
        claim,
        pattern,
        replace,
        header,
    })
}

/// Every `$n`, `${n}`, `$name`, `${name}` of a replacement (as `regex` expands them) names a
/// group of `re`; `Err` with the first that does not.
fn groups_exist(re: &regex::Regex, replace: &str) -> Result<(), String> {
    let mut rest = replace;
    while let Some(at) = rest.find('$') {
        rest = &rest[at + 1..];
        if let Some(r) = rest.strip_prefix('$') {
            rest = r;
            continue;
        }
        let (group, after) = if let Some(r) = rest.strip_prefix('{') {
            match r.find('}') {
                Some(end) => (&r[..end], &r[end + 1..]),
                None => ("", rest),
            }
        } else {
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            (&rest[..end], &rest[end..])
        };
        rest = after;
        if group.is_empty() {
            continue;
        }
        let exists = match group.parse::<usize>() {
            Ok(n) => n < re.captures_len(),
            Err(_) => re.capture_names().flatten().any(|n| n == group),
        };
        if !exists {
            return Err(format!("${group}"));
        }
    }
    Ok(())
}

/// A route's claim header keys over the global ones: each key the route sets replaces the
/// global one; `claims` are merged, the route's entry winning for the same header (in any
/// spelling). `None` when the result sends nothing. `route_key`: where to report a
/// combination the route cannot have.
pub(super) fn merge(
    rep: &mut Reporter,
    global: &ClaimKeys,
    route: Option<&ClaimKeys>,
    route_key: &str,
    at: Option<std::ops::Range<usize>>,
) -> Option<ClaimHeaders> {
    let empty = ClaimKeys::default();
    let r = route.unwrap_or(&empty);
    let mut claims: Vec<(OutName, String)> = r.claims.clone();
    for (name, claim) in &global.claims {
        let canon = canonical_name(name.name().as_str());
        if !claims
            .iter()
            .any(|(n, _)| canonical_name(n.name().as_str()) == canon)
        {
            claims.push((name.clone(), claim.clone()));
        }
    }
    let merged = ClaimHeaders {
        claims,
        separator: r
            .separator
            .clone()
            .or_else(|| global.separator.clone())
            .unwrap_or_else(|| d::CLAIM_SEPARATOR.to_string()),
        prefix: r.prefix.clone().or_else(|| global.prefix.clone()),
        prefix_allow: r
            .prefix_allow
            .clone()
            .or_else(|| global.prefix_allow.clone()),
        max_claim_bytes: r
            .max_bytes
            .or(global.max_bytes)
            .unwrap_or(d::MAX_CLAIM_BYTES),
        id_token: r.id_token.clone().or_else(|| global.id_token.clone()),
        remote_user: r.remote_user.clone().or_else(|| global.remote_user.clone()),
        basic_auth: r.basic_auth.clone().or_else(|| global.basic_auth.clone()),
        x_auth_request: r
            .x_auth_request
            .or(global.x_auth_request)
            .unwrap_or(d::X_AUTH_REQUEST),
    };
    // One value per name: two keys setting one header would send one value in proxy mode
    // (the later insert) and another in forward-auth (the first answered). The
    // `X-Auth-Request-*` names are the identity headers' copies (`x_auth_request`, forward-auth
    // `auth_request_headers`): never a claim's.
    let mut named: Vec<(String, String)> = merged
        .claims
        .iter()
        .map(|(n, c)| (n.name().as_str().to_string(), format!("claims {c:?}")))
        .collect();
    if let Some(IdTokenTo::Header(h)) = &merged.id_token {
        named.push((h.name().as_str().to_string(), "id_token".into()));
    }
    if let Some(ru) = &merged.remote_user {
        named.push((ru.header.name().as_str().to_string(), "remote_user".into()));
    }
    for (i, (name, what)) in named.iter().enumerate() {
        let canon = canonical_name(name);
        let twice = named[..i]
            .iter()
            .find(|(n, _)| canonical_name(n) == canon)
            .map(|(_, w)| w.clone());
        let copy = d::X_AUTH_REQUEST_HEADERS
            .iter()
            .any(|x| canonical_name(x) == canon)
            .then(|| "x_auth_request (the identity headers' copies)".to_string());
        if let Some(other) = twice.or(copy) {
            rep.error(
                route_key,
                at.clone(),
                format!("{what} and {other} both set {name:?}: one header, one source"),
            );
        }
    }
    if merged.basic_auth.is_some() && merged.id_token == Some(IdTokenTo::Authorization) {
        rep.error(
            route_key,
            at.clone(),
            "basic_auth and id_token = \"Authorization\" would both set Authorization: choose one",
        );
    }
    if merged.prefix_allow.is_some() && merged.prefix.is_none() {
        rep.error(
            route_key,
            at,
            "claim_prefix_allow without claim_prefix: set the prefix claims are sent under",
        );
    }
    let sends = !merged.claims.is_empty()
        || merged.prefix.is_some()
        || merged.id_token.is_some()
        || merged.remote_user.is_some()
        || merged.basic_auth.is_some()
        || merged.x_auth_request;
    sends.then_some(merged)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    const UP: &str = "[upstreams.app]\nservers = [\"http://127.0.0.1:3000\"]\n[[routes]]\nupstream = \"app\"\npublic = true\n";

    /// The errors of `src` (before the route), as "key: message".
    fn errors(src: &str) -> Vec<String> {
        match crate::config::parse(Path::new("t.toml"), &format!("{src}\n{UP}")) {
            Ok(_) => vec![],
            Err(e) => {
                e.0.iter()
                    .map(|e| format!("{}: {}", e.key, e.message))
                    .collect()
            }
        }
    }

    /// Every name the gateway sets or strips is checked as the claim names are: none may be
    /// a header the gateway reads to decide or that describes the request.
    #[test]
    fn owned_names_are_never_headers_the_gateway_reads() {
        for (src, key) in [
            (
                "[headers]\nidentity_headers = [\"Origin\"]",
                "headers.identity_headers[0]",
            ),
            (
                "[headers]\nidentity_headers = [\"sec_fetch_site\"]",
                "headers.identity_headers[0]",
            ),
            (
                "[headers]\nidentity_headers = [\"X-HTTP-Method-Override\"]",
                "headers.identity_headers[0]",
            ),
            (
                "[headers]\nidentity_headers = [\"X-Forwarded-For\"]",
                "headers.identity_headers[0]",
            ),
            (
                "[headers]\nidentity_prefixes = [\"x-forwarded-\"]",
                "headers.identity_prefixes[0]",
            ),
            (
                "[headers]\nidentity_prefixes = [\"X-Forwarded-F\"]",
                "headers.identity_prefixes[0]",
            ),
            (
                "[headers]\nidentity_prefixes = [\"ori\"]",
                "headers.identity_prefixes[0]",
            ),
            (
                "[headers]\nidentity_prefixes = [\"Sec-Fetch-\"]",
                "headers.identity_prefixes[0]",
            ),
            (
                "[headers]\nidentity_prefixes = [\"x-original-\"]",
                "headers.identity_prefixes[0]",
            ),
            (
                "[headers]\nidentity_prefixes = [\"X-HTTP-\"]",
                "headers.identity_prefixes[0]",
            ),
            (
                "[headers]\npreferred_username = \"X-HTTP-Method-Override\"",
                "headers.preferred_username",
            ),
            ("[headers]\nuser = \"Origin\"", "headers.user"),
            ("[headers]\nprovider = \"X-Real-IP\"", "headers.provider"),
            ("[headers]\ngroups = \"X-Requested-With\"", "headers.groups"),
            ("[assertion]\nheader = \"Origin\"", "assertion.header"),
            (
                "[assertion]\nheader = \"Sec-Assertion\"",
                "assertion.header",
            ),
            (
                "[server]\nrequest_id_header = \"Origin\"",
                "server.request_id_header",
            ),
            (
                "[server]\nrequest_id_header = \"X-Forwarded-For\"",
                "server.request_id_header",
            ),
        ] {
            let e = errors(src);
            assert!(e.iter().any(|e| e.starts_with(key)), "{src}: {e:?}");
        }
        for ok in [
            "[headers]\nidentity_headers = [\"X-Legacy-User\"]\nidentity_prefixes = [\"x-legacy-\"]",
            "[headers]\nuser = \"Remote-User\"\npreferred_username = \"X-Login\"",
            "[server]\nrequest_id_header = \"X-Request-Id\"",
            "[server]\nrequest_id_header = \"X-Correlation-Id\"",
            "[assertion]\nheader = \"X-Identity-Proof\"",
        ] {
            assert_eq!(errors(ok), Vec::<String>::new(), "{ok}");
        }
    }

    /// A claim header may not take the name of a header the gateway sets besides the
    /// identity headers (the configured request ID, the assertion), nor of the X-Forwarded-*
    /// family, by name or by prefix.
    #[test]
    fn claims_never_replace_what_the_gateway_sets() {
        for (src, want) in [
            ("[server]\nrequest_id_header = \"X-Correlation-Id\"\n[headers]\nclaims = { \"x_correlation_id\" = \"name\" }", "header the gateway sets"),
            ("[assertion]\nheader = \"X-Proof\"\n[headers]\nclaims = { \"X-Proof\" = \"name\" }", "header the gateway sets"),
            ("[server]\nrequest_id_header = \"X-Correlation-Id\"\n[headers]\nremote_user = { header = \"X-Correlation-Id\" }", "header the gateway sets"),
            ("[headers]\nclaims = { \"X-Forwarded-Department\" = \"department\" }", "X-Forwarded-*"),
            ("[headers]\nclaims = { \"X-Forwarded-Client-Cert\" = \"x\" }", "no claim may set it"),
            ("[headers]\nclaims = { \"X-Amzn-Oidc-Identity\" = \"x\" }", "no claim may set it"),
            ("[headers]\nclaim_prefix = \"X-Forwarded-C\"", "would let a claim set"),
            ("[headers]\nclaim_prefix = \"X-Forwarded-Tls-\"", "would let a claim set"),
            ("[headers]\nclaim_prefix = \"X-Ssl-\"", "would let a claim set"),
            ("[server]\nrequest_id_header = \"X-Correlation-Id\"\n[headers]\nclaim_prefix = \"X-Corr\"", "would let a claim set"),
        ] {
            let e = errors(src);
            assert!(e.iter().any(|e| e.contains(want)), "{src}: {e:?}");
        }
    }
}
