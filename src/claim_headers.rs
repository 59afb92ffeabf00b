//! Claims and tokens as upstream headers, per route (`[headers]` / `[routes.headers]`): a
//! claims map (header = claim path), prefix mode (every claim as `<prefix><claim>`, as
//! mod_auth_openidc's `OIDC_CLAIM_`), the ID token, a `REMOTE_USER`-style value with a regex
//! transform, a Basic `Authorization` built from the user, oauth2-proxy's
//! `X-Auth-Request-*` names.
//!
//! The values are part of the request decision (`proxy::Gateway::decide`), for proxy mode and
//! forward-auth alike: a `remote_user` that cannot be derived refuses the request (403) in
//! both. Routes that use none of this carry `None` and cost nothing per request.
//!
//! Values are sanitised as the identity headers are ([`claim_value`]: no control character,
//! so no claim ends a header), bounded one by one and together (`max_claim_bytes`); a claim
//! that does not fit is dropped with a (rate-limited) warning naming it, never its value. The
//! ID token and the Basic credentials are secrets: never logged, marked sensitive.

use std::collections::HashSet;
use std::sync::Arc;

use base64::Engine;
use http::{HeaderName, HeaderValue};
use serde_json::Value;

use crate::config::headers::is_protected;
use crate::config::model::{ClaimHeaders, ClaimNames, IdTokenTo, IdentityHeaders};
use crate::config::Config;
use crate::identity::{canonical_name, claim_value, Claims};
use crate::out_header::OutName;
use crate::ratelimit_log::{Throttle, WINDOW};

/// "Claim headers dropped for size", per route: at most one line per window.
static DROPPED: Throttle = Throttle::new(WINDOW);
/// Claim names listed in that line, at most.
const MAX_LOGGED_NAMES: usize = 8;

/// One route's claim headers, ready for the request path.
#[derive(Debug)]
pub(crate) struct RouteClaims {
    pub(crate) settings: Arc<ClaimHeaders>,
    /// Canonical names a prefix-mode header may never take: what the gateway sets otherwise
    /// (identity headers, the assertion, the request ID, this route's exact names).
    reserved: HashSet<String>,
    /// Each provider's claim names: a claim path may name them, prefix mode sends them.
    providers: Vec<(String, ClaimNames)>,
    /// Every exact name this route may set: forward-auth answers carry each (empty when it
    /// has no value), so the front proxy overwrites a client's copy.
    exact: Vec<OutName>,
}

/// The caller the headers describe.
pub(crate) struct Vouched<'a> {
    pub(crate) provider: &'a str,
    pub(crate) claims: &'a Claims,
    /// The identity headers already built for the caller (their values are reused).
    pub(crate) identity: &'a [(OutName, HeaderValue)],
    /// The session's ID token (bearer callers have none).
    pub(crate) id_token: Option<&'a str>,
}

/// `remote_user` cannot be derived (no such claim, no match, or a Basic user with `:`):
/// the request is refused, as mod_auth_openidc refuses.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Underivable;

impl RouteClaims {
    pub(crate) fn new(settings: Arc<ClaimHeaders>, config: &Config) -> Self {
        let mut exact: Vec<OutName> = settings.claims.iter().map(|(n, _)| n.clone()).collect();
        match &settings.id_token {
            Some(IdTokenTo::Header(h)) => exact.push(h.clone()),
            Some(IdTokenTo::Authorization) => exact.push(authorization()),
            None => {}
        }
        if settings.basic_auth.is_some() && settings.id_token != Some(IdTokenTo::Authorization) {
            exact.push(authorization());
        }
        if let Some(r) = &settings.remote_user {
            exact.push(r.header.clone());
        }
        if settings.x_auth_request {
            exact.extend(
                crate::config::defaults::X_AUTH_REQUEST_HEADERS
                    .iter()
                    .map(|n| OutName::from_static(n)),
            );
        }
        let mut reserved: HashSet<String> = exact
            .iter()
            .map(|n| canonical_name(n.name().as_str()))
            .collect();
        for n in config.identity_headers.names() {
            reserved.insert(canonical_name(n.as_str()));
        }
        reserved.insert(canonical_name(config.assertion.header.as_str()));
        reserved.insert(canonical_name(config.server.request_id_header.as_str()));
        Self {
            settings,
            reserved,
            providers: config
                .providers
                .iter()
                .map(|p| (p.id.clone(), p.claims.clone()))
                .collect(),
            exact,
        }
    }

    pub(crate) fn exact_names(&self) -> &[OutName] {
        &self.exact
    }

    /// The headers for `v` on this route, in insertion order.
    pub(crate) fn headers(
        &self,
        names: &IdentityHeaders,
        v: &Vouched,
        route_id: &str,
    ) -> Result<Vec<(OutName, HeaderValue)>, Underivable> {
        let s = &*self.settings;
        let provider = self
            .providers
            .iter()
            .find(|(id, _)| id == v.provider)
            .map(|(_, n)| n);
        let mut out = Vec::with_capacity(s.claims.len() + 8);
        let mut budget = Budget::new(s.max_claim_bytes);
        let mut seen: Vec<String> = Vec::new();
        for (name, path) in &s.claims {
            seen.push(canonical_name(name.name().as_str()));
            let Some(found) = lookup(provider, v.claims, path) else {
                continue;
            };
            if let Some(value) = render(&found, &s.separator, s.max_claim_bytes) {
                budget.add(&mut out, name.clone(), value, path);
            }
        }
        if let Some(prefix) = &s.prefix {
            for (claim, found) in every_claim(provider, v.claims) {
                if s.prefix_allow
                    .as_ref()
                    .is_some_and(|allow| !allow.iter().any(|a| a == claim))
                {
                    continue;
                }
                let spelled = format!("{prefix}{claim}");
                // A claim name that makes no header name is skipped, as are names the gateway
                // sets otherwise or that carry framing or forwarding.
                let Ok(name) = HeaderName::from_bytes(spelled.as_bytes()) else {
                    continue;
                };
                let canon = canonical_name(&spelled);
                if is_protected(&canon) || self.reserved.contains(&canon) || seen.contains(&canon) {
                    continue;
                }
                seen.push(canon);
                if let Some(value) = render(&found, &s.separator, s.max_claim_bytes) {
                    budget.add(
                        &mut out,
                        OutName::with_spelling(name, &spelled),
                        value,
                        claim,
                    );
                }
            }
        }
        budget.report(route_id, v.claims);
        let user = match &s.remote_user {
            Some(r) => {
                let value = remote_user_value(r, provider, v.claims, &s.separator, route_id)?;
                out.push((r.header.clone(), value.clone()));
                value
            }
            None => claim_value(&v.claims.subject).ok_or(Underivable)?,
        };
        if let (Some(to), Some(token)) = (&s.id_token, v.id_token) {
            let value = match to {
                IdTokenTo::Header(_) => HeaderValue::from_str(token),
                IdTokenTo::Authorization => HeaderValue::from_str(&format!("Bearer {token}")),
            };
            if let Ok(mut value) = value {
                value.set_sensitive(true);
                let name = match to {
                    IdTokenTo::Header(h) => h.clone(),
                    IdTokenTo::Authorization => authorization(),
                };
                out.push((name, value));
            }
        }
        if let Some(password) = &s.basic_auth {
            out.push((authorization(), basic(&user, password.expose(), route_id)?));
        }
        if s.x_auth_request {
            let roles = [
                &names.user,
                &names.email,
                &names.groups,
                &names.preferred_username,
            ];
            for (role, xname) in roles
                .into_iter()
                .zip(crate::config::defaults::X_AUTH_REQUEST_HEADERS)
            {
                if let Some((_, value)) = v.identity.iter().find(|(n, _)| n == role) {
                    out.push((OutName::from_static(xname), value.clone()));
                }
            }
        }
        Ok(out)
    }
}

fn authorization() -> OutName {
    OutName::from_static("authorization")
}

/// `Authorization: Basic base64(user:password)` (RFC 7617: a user with `:` cannot be sent).
fn basic(user: &HeaderValue, password: &str, route_id: &str) -> Result<HeaderValue, Underivable> {
    let user = user.as_bytes();
    if user.contains(&b':') {
        tracing::info!(
            route = route_id,
            "basic_auth: the user name contains ':', which Basic credentials cannot carry: refused"
        );
        return Err(Underivable);
    }
    let mut plain = Vec::with_capacity(user.len() + 1 + password.len());
    plain.extend_from_slice(user);
    plain.push(b':');
    plain.extend_from_slice(password.as_bytes());
    let encoded = base64::engine::general_purpose::STANDARD.encode(&plain);
    let mut v = HeaderValue::from_str(&format!("Basic {encoded}")).map_err(|_| Underivable)?;
    v.set_sensitive(true);
    Ok(v)
}

/// The `remote_user` value: the claim (the user by default), through the pattern.
fn remote_user_value(
    r: &crate::config::model::RemoteUser,
    provider: Option<&ClaimNames>,
    claims: &Claims,
    separator: &str,
    route_id: &str,
) -> Result<HeaderValue, Underivable> {
    let claim = r.claim.as_deref();
    let raw = match claim {
        None => Some(claims.subject.clone()),
        Some(path) => lookup(provider, claims, path)
            .and_then(|f| render(&f, separator, crate::config::defaults::MAX_CLAIM_BYTES)),
    };
    let refused = |why: &str| {
        tracing::info!(route = route_id, sub = %claims.sub, claim = claim.unwrap_or("(user)"), "remote_user cannot be derived ({why}): refused");
        Underivable
    };
    let raw = raw.ok_or_else(|| refused("no such claim"))?;
    let value = match &r.pattern {
        None => raw,
        Some(re) => {
            let caps = re
                .captures(&raw)
                .ok_or_else(|| refused("the pattern does not match"))?;
            let mut out = String::new();
            caps.expand(&r.replace, &mut out);
            out
        }
    };
    claim_value(&value).ok_or_else(|| refused("empty"))
}

/// Adds headers while they fit the per-request budget; remembers what did not.
struct Budget {
    left: usize,
    dropped: Vec<String>,
    dropped_count: usize,
}

impl Budget {
    fn new(max: usize) -> Self {
        Self {
            left: max,
            dropped: Vec::new(),
            dropped_count: 0,
        }
    }

    fn add(
        &mut self,
        out: &mut Vec<(OutName, HeaderValue)>,
        name: OutName,
        value: String,
        claim: &str,
    ) {
        let Some(value) = claim_value(&value) else {
            return;
        };
        let cost = name.name().as_str().len() + value.len();
        if cost > self.left {
            self.dropped_count += 1;
            if self.dropped.len() < MAX_LOGGED_NAMES {
                self.dropped.push(claim.chars().take(64).collect());
            }
            return;
        }
        self.left -= cost;
        out.push((name, value));
    }

    /// One warning (per route and window) naming the claims dropped, never their values.
    fn report(&self, route_id: &str, claims: &Claims) {
        if self.dropped_count == 0 {
            return;
        }
        if let Some(n) = DROPPED.hit(route_id) {
            tracing::warn!(
                route = route_id,
                sub = %claims.sub,
                dropped = self.dropped_count,
                claims = ?self.dropped,
                occurrences = n.count,
                "claim headers over max_claim_bytes were not sent{n}"
            );
        }
    }
}

/// A claim as found.
#[derive(Debug)]
enum Found<'a> {
    Str(&'a str),
    List(&'a [String]),
    Json(&'a Value),
}

/// The standard names of the mapped claims (what prefix mode sends them as), and which field.
const STANDARD: [&str; 5] = ["sub", "email", "name", "groups", "preferred_username"];

/// A mapped claim by its standard name, or by the provider's name for it.
fn mapped<'a>(provider: Option<&ClaimNames>, c: &'a Claims, name: &str) -> Option<Found<'a>> {
    let opt = |s: &'a Option<String>| s.as_deref().map(Found::Str);
    match name {
        "sub" => return (!c.sub.is_empty()).then_some(Found::Str(&c.sub)),
        "email" => return opt(&c.email),
        "name" => return opt(&c.name),
        "groups" => return Some(Found::List(&c.groups)),
        "preferred_username" => return opt(&c.preferred_username),
        _ => {}
    }
    let p = provider?;
    if name == p.user {
        Some(Found::Str(&c.subject))
    } else if name == p.email {
        opt(&c.email)
    } else if name == p.name {
        opt(&c.name)
    } else if name == p.groups {
        Some(Found::List(&c.groups))
    } else if name == p.preferred_username {
        opt(&c.preferred_username)
    } else {
        None
    }
}

/// A claim by path: first the whole path as a claim name, else split at `.` into nested
/// object keys (the first one a claim of `extra`).
fn lookup<'a>(provider: Option<&ClaimNames>, c: &'a Claims, path: &str) -> Option<Found<'a>> {
    if let Some(f) = mapped(provider, c, path) {
        return Some(f);
    }
    if let Some(v) = c.extra.get(path) {
        return Some(Found::Json(v));
    }
    let mut parts = path.split('.');
    let mut v = c.extra.get(parts.next()?)?;
    for key in parts {
        v = v.as_object()?.get(key)?;
    }
    Some(Found::Json(v))
}

/// Every claim prefix mode may send, as (claim name, value): the mapped ones under their
/// standard names, under the provider's names where those differ, then the others.
fn every_claim<'a>(
    provider: Option<&'a ClaimNames>,
    c: &'a Claims,
) -> impl Iterator<Item = (&'a str, Found<'a>)> + 'a {
    let standard = STANDARD
        .into_iter()
        .filter_map(move |n| mapped(None, c, n).map(|f| (n, f)));
    let own = provider
        .into_iter()
        .flat_map(|p| {
            [
                p.user.as_str(),
                p.email.as_str(),
                p.name.as_str(),
                p.groups.as_str(),
                p.preferred_username.as_str(),
            ]
        })
        .filter(|n| !STANDARD.contains(n))
        .filter_map(move |n| mapped(provider, c, n).map(|f| (n, f)));
    let extra = c.extra.iter().map(|(k, v)| (k.as_str(), Found::Json(v)));
    standard.chain(own).chain(extra)
}

/// The header text of a claim: strings as they are, numbers and booleans as JSON text,
/// arrays of scalars joined with `separator` (which is removed from the items, so it cannot
/// split one), objects (and arrays holding them) as compact JSON. `None` for null, an empty
/// list, or a value longer than `max` bytes.
fn render(found: &Found, separator: &str, max: usize) -> Option<String> {
    let out = match found {
        Found::Str(s) => (*s).to_string(),
        Found::List(items) => join(items.iter().map(|s| s.as_str()), separator),
        Found::Json(v) => match v {
            Value::Null => return None,
            Value::String(s) => s.clone(),
            Value::Bool(b) => b.to_string(),
            Value::Number(n) => n.to_string(),
            Value::Array(a) if a.iter().all(|x| !x.is_object() && !x.is_array()) => {
                let items: Vec<String> = a
                    .iter()
                    .filter_map(|x| match x {
                        Value::Null => None,
                        Value::String(s) => Some(s.clone()),
                        other => Some(other.to_string()),
                    })
                    .collect();
                join(items.iter().map(String::as_str), separator)
            }
            other => {
                let mut w = Bounded {
                    buf: Vec::new(),
                    max,
                };
                serde_json::to_writer(&mut w, other).ok()?;
                String::from_utf8(w.buf).ok()?
            }
        },
    };
    (!out.is_empty() && out.len() <= max).then_some(out)
}

fn join<'a>(items: impl Iterator<Item = &'a str>, separator: &str) -> String {
    let mut out = String::new();
    for item in items {
        let item = if separator.is_empty() {
            item.to_string()
        } else {
            item.replace(separator, "")
        };
        if item.is_empty() {
            continue;
        }
        if !out.is_empty() {
            out.push_str(separator);
        }
        out.push_str(&item);
    }
    out
}

/// A writer that fails past `max` bytes: a huge nested claim stops being serialised there.
struct Bounded {
    buf: Vec<u8>,
    max: usize,
}

impl std::io::Write for Bounded {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        if self.buf.len() + data.len() > self.max {
            return Err(std::io::Error::other("claim too large"));
        }
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
