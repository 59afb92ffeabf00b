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
    /// Canonical prefix-mode names of the mapped claims (standard and every provider's own,
    /// with `email_verified`), sent or not: an other claim spelled like one (`Email` beside
    /// an unverified `email`) never takes the name the mapped one left empty.
    slots: HashSet<String>,
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
            exact.extend(X_AUTH_REQUEST.iter().cloned());
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
        let mut slots = HashSet::new();
        if let Some(prefix) = &settings.prefix {
            let own = config.providers.iter().flat_map(|p| {
                let c = &p.claims;
                [&c.user, &c.email, &c.name, &c.groups, &c.preferred_username].map(String::as_str)
            });
            for claim in STANDARD.into_iter().chain(["email_verified"]).chain(own) {
                slots.insert(canonical_name(&format!("{prefix}{claim}")));
            }
        }
        Self {
            settings,
            reserved,
            slots,
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
            for (claim, found, mapped) in every_claim(provider, v.claims) {
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
                if is_protected(&canon)
                    || self.reserved.contains(&canon)
                    || seen.contains(&canon)
                    || (!mapped && self.slots.contains(&canon))
                {
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
            None => claim_value(v.claims.subject()).ok_or(Underivable)?,
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
            for (role, xname) in roles.into_iter().zip(X_AUTH_REQUEST.iter()) {
                if let Some((_, value)) = v.identity.iter().find(|(n, _)| n == role) {
                    out.push((xname.clone(), value.clone()));
                }
            }
        }
        Ok(out)
    }
}

/// Names built once: these are written per request.
static AUTHORIZATION: std::sync::LazyLock<OutName> =
    std::sync::LazyLock::new(|| OutName::from_static("authorization"));
static X_AUTH_REQUEST: std::sync::LazyLock<Vec<OutName>> = std::sync::LazyLock::new(|| {
    (crate::config::defaults::X_AUTH_REQUEST_HEADERS.iter())
        .map(|n| OutName::from_static(n))
        .collect()
});

fn authorization() -> OutName {
    AUTHORIZATION.clone()
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
        None => Some(claims.subject().to_string()),
        Some(path) => lookup(provider, claims, path)
            .and_then(|f| render(&f, separator, crate::config::defaults::MAX_CLAIM_BYTES)),
    };
    let refused = |why: &str| {
        tracing::info!(route = route_id, sub = %claims.sub(), claim = claim.unwrap_or("(user)"), "remote_user cannot be derived ({why}): refused");
        Underivable
    };
    let raw = raw.ok_or_else(|| refused("no such claim"))?;
    // The pattern reads the claim as the provider wrote it: a control character or an
    // outer space it would cut away could make another user's name.
    if !crate::identity::is_sendable(&raw) {
        return Err(refused("the claim cannot be sent as written"));
    }
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
                sub = %claims.sub(),
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
    List(&'a crate::strlist::StrList),
    Json(&'a Value),
}

/// The standard names of the mapped claims (what prefix mode sends them as), and which field.
const STANDARD: [&str; 5] = ["sub", "email", "name", "groups", "preferred_username"];

/// A mapped claim by its standard name, or by the provider's name for it.
fn mapped<'a>(provider: Option<&ClaimNames>, c: &'a Claims, name: &str) -> Option<Found<'a>> {
    let opt = |s: Option<&'a str>| s.map(Found::Str);
    match name {
        "sub" => return (!c.sub().is_empty()).then_some(Found::Str(c.sub())),
        "email" => return opt(c.email()),
        "name" => return opt(c.name()),
        "groups" => return Some(Found::List(&c.groups)),
        "preferred_username" => return opt(c.preferred_username()),
        _ => {}
    }
    let p = provider?;
    if name == p.user {
        Some(Found::Str(c.subject()))
    } else if name == p.email {
        opt(c.email())
    } else if name == p.name {
        opt(c.name())
    } else if name == p.groups {
        Some(Found::List(&c.groups))
    } else if name == p.preferred_username {
        opt(c.preferred_username())
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

/// Every claim prefix mode may send, as (claim name, value, whether it is a mapped one): the
/// mapped ones under their standard names, under the provider's names where those differ,
/// then the others.
fn every_claim<'a>(
    provider: Option<&'a ClaimNames>,
    c: &'a Claims,
) -> impl Iterator<Item = (&'a str, Found<'a>, bool)> + 'a {
    let standard = STANDARD
        .into_iter()
        .filter_map(move |n| mapped(None, c, n).map(|f| (n, f, true)));
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
        .filter_map(move |n| mapped(provider, c, n).map(|f| (n, f, true)));
    let extra = c.extra.iter().map(|(k, v)| (k, Found::Json(v), false));
    standard.chain(own).chain(extra)
}

/// The header text of a claim: strings as they are, numbers and booleans as JSON text,
/// arrays of scalars joined with `separator` (an item holding it is left out, so it cannot
/// split one), objects (and arrays holding them) as compact JSON. `None` for null, an empty
/// list, or a value longer than `max` bytes.
fn render(found: &Found, separator: &str, max: usize) -> Option<String> {
    let out = match found {
        Found::Str(s) => (*s).to_string(),
        Found::List(items) => join(items.iter(), separator),
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
        // An item that cannot be one item as it is (the separator in it, a control character,
        // whitespace at an end) is left out, not cleaned: `b,c` made `bc`, or ` admins` made
        // `admins`, would be another value to an app that splits and trims.
        if !crate::identity::is_sendable(item)
            || (!separator.is_empty() && item.contains(separator))
        {
            continue;
        }
        if !out.is_empty() {
            out.push_str(separator);
        }
        out.push_str(item);
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const UP: &str = "[upstreams.app]\nservers = [\"http://127.0.0.1:3000\"]\n";

    fn config(src: &str) -> Config {
        crate::config::parse(std::path::Path::new("t.toml"), &format!("{UP}{src}")).unwrap()
    }

    /// The route's claim headers of a config whose first route is `[[routes]]` in `src`.
    fn route(src: &str) -> (Config, RouteClaims) {
        let c = config(src);
        let s = c.routes[0].claim_headers.clone().expect("claim headers");
        let rc = RouteClaims::new(s, &c);
        (c, rc)
    }

    fn claims() -> Claims {
        let extra = json!({
            "department": "eng\r\nX-Evil: 1",
            "level": 42,
            "ratio": 1.5,
            "admin": true,
            "nothing": null,
            "roles": ["a", "b,c", 7, null, false],
            "realm_access": {"roles": ["r1", "r2"], "deep": {"x": {"y": 1}}},
            "mixed": [{"k": "v"}, 1],
            "dotted.name": "whole",
            "bad name": "skipped",
            "email_hint": "x@y",
        });
        Claims {
            text: crate::identity::UserText::from_parts(crate::identity::UserParts {
                sub: "sub-1",
                subject: "alice",
                email: Some("alice@corp.example"),
                name: Some("Alice Liddell"),
                preferred_username: Some("al"),
            }),
            email_verified: Some(true),
            groups: ["admins", "dev"].into_iter().collect(),
            extra: serde_json::from_value(extra).unwrap(),
        }
    }

    fn run(rc: &RouteClaims, c: &Claims) -> Result<Vec<(String, String)>, Underivable> {
        let names = IdentityHeaders::default();
        let identity = names.values("p", c);
        let v = Vouched {
            provider: "p",
            claims: c,
            identity: &identity,
            id_token: Some("h.p.s"),
        };
        Ok(rc
            .headers(&names, &v, "r")?
            .into_iter()
            .map(|(n, v)| (n.name().to_string(), v.to_str().unwrap().to_string()))
            .collect())
    }

    fn get<'a>(h: &'a [(String, String)], name: &str) -> Option<&'a str> {
        h.iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    #[test]
    fn claims_map_renders_every_json_type() {
        let (_, rc) = route(
            "[[routes]]\nupstream = \"app\"\n[routes.headers]\nclaims = { \"X-Dept\" = \"department\", \"X-Level\" = \"level\", \"X-Ratio\" = \"ratio\", \"X-Admin\" = \"admin\", \"X-Null\" = \"nothing\", \"X-Roles\" = \"roles\", \"X-Realm\" = \"realm_access.roles\", \"X-Realm-All\" = \"realm_access\", \"X-Deep\" = \"realm_access.deep.x.y\", \"X-Mixed\" = \"mixed\", \"X-Dotted\" = \"dotted.name\", \"X-Missing\" = \"no.such\", \"X-Groups\" = \"groups\", \"X-Sub\" = \"sub\", \"X-Mail\" = \"email\", \"X-Name\" = \"name\" }\nclaim_separator = \";\"\n",
        );
        let h = run(&rc, &claims()).unwrap();
        assert_eq!(
            get(&h, "x-dept"),
            None,
            "a value with control characters is not sent, not cleaned"
        );
        assert_eq!(get(&h, "x-level"), Some("42"));
        assert_eq!(get(&h, "x-ratio"), Some("1.5"));
        assert_eq!(get(&h, "x-admin"), Some("true"));
        assert_eq!(get(&h, "x-null"), None);
        assert_eq!(get(&h, "x-roles"), Some("a;b,c;7;false"));
        assert_eq!(get(&h, "x-realm"), Some("r1;r2"));
        assert_eq!(
            get(&h, "x-realm-all"),
            Some(r#"{"deep":{"x":{"y":1}},"roles":["r1","r2"]}"#)
        );
        assert_eq!(get(&h, "x-deep"), Some("1"));
        assert_eq!(get(&h, "x-mixed"), Some(r#"[{"k":"v"},1]"#));
        assert_eq!(get(&h, "x-dotted"), Some("whole"));
        assert_eq!(get(&h, "x-missing"), None);
        assert_eq!(get(&h, "x-groups"), Some("admins;dev"));
        assert_eq!(get(&h, "x-sub"), Some("sub-1"));
        assert_eq!(get(&h, "x-mail"), Some("alice@corp.example"));
        assert_eq!(get(&h, "x-name"), Some("Alice Liddell"));
    }

    #[test]
    fn separators_inside_items_cannot_split_them() {
        let (_, rc) = route("[[routes]]\nupstream = \"app\"\n[routes.headers]\nclaims = { \"X-Roles\" = \"roles\" }\n");
        let h = run(&rc, &claims()).unwrap();
        assert_eq!(get(&h, "x-roles"), Some("a,7,false"));
    }

    #[test]
    fn prefix_mode_sends_every_claim_or_the_allowed_ones() {
        let (_, rc) =
            route("[headers]\nclaim_prefix = \"OIDC_CLAIM_\"\n[[routes]]\nupstream = \"app\"\n");
        let mut c = claims();
        let h = run(&rc, &c).unwrap();
        for (n, v) in [
            ("oidc_claim_sub", "sub-1"),
            ("oidc_claim_email", "alice@corp.example"),
            ("oidc_claim_name", "Alice Liddell"),
            ("oidc_claim_groups", "admins,dev"),
            ("oidc_claim_preferred_username", "al"),
            ("oidc_claim_level", "42"),
            ("oidc_claim_dotted.name", "whole"),
            (
                "oidc_claim_realm_access",
                r#"{"deep":{"x":{"y":1}},"roles":["r1","r2"]}"#,
            ),
        ] {
            assert_eq!(get(&h, n), Some(v), "{n}");
        }
        assert!(
            get(&h, "oidc_claim_bad name").is_none(),
            "not a header name: skipped"
        );
        assert!(get(&h, "oidc_claim_nothing").is_none());
        // Sent as spelled, as mod_auth_openidc does.
        let names = IdentityHeaders::default();
        let identity = names.values("p", &c);
        let v = Vouched {
            provider: "p",
            claims: &c,
            identity: &identity,
            id_token: None,
        };
        let out = rc.headers(&names, &v, "r").unwrap();
        let mut req = pingora::http::RequestHeader::build("GET", b"/", None).unwrap();
        for (n, v) in &out {
            n.insert(&mut req, v.clone()).unwrap();
        }
        let mut wire = Vec::new();
        req.header_to_h1_wire(&mut wire);
        let wire = String::from_utf8(wire).unwrap();
        assert!(
            wire.contains("OIDC_CLAIM_email: alice@corp.example"),
            "{wire}"
        );
        // Only a verified email is ever sent.
        c.text = c.text.with(|p| p.email = None);
        c.email_verified = Some(false);
        assert!(get(&run(&rc, &c).unwrap(), "oidc_claim_email").is_none());
        // ...nor an other claim spelled like a mapped one, sent or not (a record stored
        // before such twins were left out of the claims may still hold them).
        c.text = c.text.with(|p| p.preferred_username = None);
        for (k, v) in [
            ("Email", json!("ceo@corp.example")),
            ("EMAIL_VERIFIED", json!(true)),
            ("Email.Verified", json!(true)),
            ("Preferred-Username", json!("ceo")),
            ("SUB", json!("ceo")),
            ("Groups", json!(["admins"])),
        ] {
            c.extra.insert(k.into(), v);
        }
        let h = run(&rc, &c).unwrap();
        assert_eq!(get(&h, "oidc_claim_groups"), Some("admins,dev"));
        for (n, v) in &h {
            assert!(!v.contains("ceo"), "{n}: {v}");
            let canon = canonical_name(n);
            assert!(
                ![
                    "oidc-claim-email",
                    "oidc-claim-email-verified",
                    "oidc-claim-preferred-username"
                ]
                .contains(&canon.as_str()),
                "{n}: {v}"
            );
        }

        let (_, only) = route(
            "[headers]\nclaim_prefix = \"OIDC_CLAIM_\"\nclaim_prefix_allow = [\"email\", \"level\"]\n[[routes]]\nupstream = \"app\"\n",
        );
        let h = run(&only, &claims()).unwrap();
        let names: Vec<&str> = h.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["oidc_claim_email", "oidc_claim_level"]);
    }

    #[test]
    fn prefix_mode_never_overwrites_what_the_gateway_sets() {
        // "X-Forwarded-" is refused by check; "X-Auth-Request-" with a claim "user" would
        // collide with x_auth_request, and a claims-map name wins over the prefix's.
        let (_, rc) = route(
            "[headers]\nclaim_prefix = \"X-Auth-Request-\"\nx_auth_request = true\nclaims = { \"X-Auth-Request-Level\" = \"admin\" }\n[[routes]]\nupstream = \"app\"\n",
        );
        let mut c = claims();
        c.extra.insert("user".into(), json!("mallory"));
        let h = run(&rc, &c).unwrap();
        let users: Vec<&str> = h
            .iter()
            .filter(|(n, _)| n == "x-auth-request-user")
            .map(|(_, v)| v.as_str())
            .collect();
        assert_eq!(users, ["alice"]);
        let levels: Vec<&str> = h
            .iter()
            .filter(|(n, _)| n == "x-auth-request-level")
            .map(|(_, v)| v.as_str())
            .collect();
        assert_eq!(levels, ["true"]);
    }

    #[test]
    fn the_budget_bounds_every_request() {
        let (_, rc) = route(
            "[headers]\nclaim_prefix = \"OIDC_CLAIM_\"\nmax_claim_bytes = 256\n[[routes]]\nupstream = \"app\"\n",
        );
        let mut c = claims();
        for i in 0..100 {
            c.extra
                .insert(format!("c{i:03}").into(), json!("x".repeat(20)));
        }
        c.extra
            .insert("huge".into(), json!({"a": "y".repeat(100_000)}));
        let h = run(&rc, &c).unwrap();
        let total: usize = h.iter().map(|(n, v)| n.len() + v.len()).sum();
        assert!(total <= 256, "{total}");
        assert!(get(&h, "oidc_claim_sub").is_some(), "what fits is sent");
        assert!(get(&h, "oidc_claim_huge").is_none());
        // A value past the bound is cut off while serialising, not built whole.
        let deep = (0..100).fold(json!("z"), |v, _| json!([v]));
        assert!(render(&Found::Json(&deep), ",", 50).is_none());
        assert!(render(&Found::Json(&deep), ",", 500).is_some());
    }

    #[test]
    fn remote_user_transforms_or_refuses() {
        let (_, rc) = route(
            "[[routes]]\nupstream = \"app\"\n[routes.headers]\nremote_user = { claim = \"email\", pattern = \"^(.+)@corp\\\\.example$\" }\n",
        );
        let mut c = claims();
        assert_eq!(get(&run(&rc, &c).unwrap(), "remote-user"), Some("alice"));
        c.text = c.text.with(|p| p.email = Some("eve@other.example"));
        assert_eq!(run(&rc, &c), Err(Underivable), "no match: refused");
        c.text = c.text.with(|p| p.email = None);
        assert_eq!(run(&rc, &c), Err(Underivable), "no claim: refused");
        // A claim the pattern would make another user's name from: refused, not cleaned.
        for odd in [
            "alice\u{7}@corp.example",
            "alice@corp.example\u{a0}",
            " alice@corp.example",
        ] {
            c.text = c.text.with(|p| p.email = Some(odd));
            assert_eq!(run(&rc, &c), Err(Underivable), "{odd:?}");
        }
        // The user too, for every route that sends it (Remote-User, Basic credentials).
        let (_, plain_ru) = route(
            "[[routes]]\nupstream = \"app\"\n[routes.headers]\nremote_user = {}\nbasic_auth = {}\n",
        );
        for odd in ["alice\u{7}", "alice\u{a0}", "\talice"] {
            let mut c = claims();
            c.text = c.text.with(|p| p.subject = odd);
            assert_eq!(run(&plain_ru, &c), Err(Underivable), "{odd:?}");
        }

        let (_, named) = route(
            "[[routes]]\nupstream = \"app\"\n[routes.headers]\nremote_user = { claim = \"email\", pattern = \"^(?P<u>[^@]+)@(?P<d>.+)$\", replace = \"${d}\\\\${u}\", header = \"X-Remote-User\" }\n",
        );
        assert_eq!(
            get(&run(&named, &claims()).unwrap(), "x-remote-user"),
            Some("corp.example\\alice")
        );
        let (_, plain) =
            route("[[routes]]\nupstream = \"app\"\n[routes.headers]\nremote_user = {}\n");
        assert_eq!(
            get(&run(&plain, &claims()).unwrap(), "remote-user"),
            Some("alice")
        );
    }

    #[test]
    fn basic_auth_is_built_from_the_user() {
        let (_, rc) = route(
            "[[routes]]\nupstream = \"app\"\n[routes.headers]\nbasic_auth = { password = \"s3cret\" }\n",
        );
        let h = run(&rc, &claims()).unwrap();
        // base64("alice:s3cret")
        assert_eq!(get(&h, "authorization"), Some("Basic YWxpY2U6czNjcmV0"));
        let (_, ru) = route(
            "[[routes]]\nupstream = \"app\"\n[routes.headers]\nbasic_auth = {}\nremote_user = { claim = \"preferred_username\" }\n",
        );
        // base64("al:")
        assert_eq!(
            get(&run(&ru, &claims()).unwrap(), "authorization"),
            Some("Basic YWw6")
        );
        let mut c = claims();
        c.text = c.text.with(|p| p.subject = "a:b");
        assert_eq!(run(&rc, &c), Err(Underivable));
        assert!(rc.settings.owns_authorization());
        let v = basic(&HeaderValue::from_static("u"), "p", "r").unwrap();
        assert!(v.is_sensitive());
    }

    #[test]
    fn id_token_and_x_auth_request() {
        let (_, rc) = route(
            "[headers]\nid_token = \"OIDC_id_token\"\nx_auth_request = true\n[[routes]]\nupstream = \"app\"\n",
        );
        let h = run(&rc, &claims()).unwrap();
        assert_eq!(get(&h, "oidc_id_token"), Some("h.p.s"));
        assert_eq!(get(&h, "x-auth-request-user"), Some("alice"));
        assert_eq!(get(&h, "x-auth-request-email"), Some("alice@corp.example"));
        assert_eq!(get(&h, "x-auth-request-groups"), Some("admins,dev"));
        assert_eq!(get(&h, "x-auth-request-preferred-username"), Some("al"));
        assert!(!rc.settings.owns_authorization());
        let (_, bearer) =
            route("[headers]\nid_token = \"authorization\"\n[[routes]]\nupstream = \"app\"\n");
        assert_eq!(
            get(&run(&bearer, &claims()).unwrap(), "authorization"),
            Some("Bearer h.p.s")
        );
        assert!(bearer.settings.owns_authorization());
        assert!(bearer
            .exact_names()
            .iter()
            .any(|n| n.name() == "authorization"));
    }

    #[test]
    fn a_route_overrides_the_global_keys() {
        let c = config(
            "[headers]\nclaims = { \"X-Dept\" = \"department\", \"X-Level\" = \"level\" }\nclaim_separator = \";\"\nx_auth_request = true\n[[routes]]\npath = \"/a\"\nupstream = \"app\"\n[routes.headers]\nclaims = { \"x_dept\" = \"admin\" }\nx_auth_request = false\n[[routes]]\npath = \"/b\"\nupstream = \"app\"\n",
        );
        let a = c.routes[0].claim_headers.as_ref().unwrap();
        let claims: Vec<(&str, &str)> = a
            .claims
            .iter()
            .map(|(n, c)| (n.name().as_str(), c.as_str()))
            .collect();
        assert_eq!(claims, [("x_dept", "admin"), ("x-level", "level")]);
        assert!(!a.x_auth_request);
        assert_eq!(a.separator, ";");
        let b = c.routes[1].claim_headers.as_ref().unwrap();
        assert!(b.x_auth_request);
        assert_eq!(b.claims.len(), 2);
        // Nothing configured: nothing per request.
        assert!(config("[[routes]]\nupstream = \"app\"\n").routes[0]
            .claim_headers
            .is_none());
        assert!(
            config("[headers]\nclaim_separator = \";\"\nmax_claim_bytes = 100\n[[routes]]\nupstream = \"app\"\n")
                .routes[0]
                .claim_headers
                .is_none()
        );
    }

    #[test]
    fn every_settable_name_is_stripped_in_every_spelling() {
        let c = config(
            "[[routes]]\npath = \"/a\"\nupstream = \"app\"\npublic = true\n[[routes]]\npath = \"/b\"\nupstream = \"app\"\n[routes.headers]\nclaims = { \"X-Department\" = \"department\" }\nclaim_prefix = \"OIDC_CLAIM_\"\nid_token = \"OIDC_id_token\"\nremote_user = { header = \"REMOTE_USER_NAME\" }\nx_auth_request = true\nbasic_auth = {}\n",
        );
        let ns = crate::identity::IdentityNamespace::from_config(&c);
        for n in [
            "X-Department",
            "x_department",
            "x.department",
            "OIDC_CLAIM_email",
            "oidc-claim-email",
            "Oidc.Claim.Email",
            "oidc_claim_anything",
            "OIDC_id_token",
            "oidc-id-token",
            "remote_user_name",
            "Remote-User-Name",
            "X_Auth_Request_User",
            "x-auth-request-access-token",
        ] {
            assert!(ns.contains(n), "{n}");
        }
        assert!(!ns.contains("authorization"), "clients send it");
        assert!(!ns.contains("x-oidc-claim"));
    }

    fn errors(src: &str) -> Vec<String> {
        crate::config::parse(std::path::Path::new("t.toml"), &format!("{UP}{src}"))
            .unwrap_err()
            .0
            .iter()
            .map(|e| e.to_string())
            .collect()
    }

    #[test]
    fn check_refuses_what_cannot_work() {
        let route = |h: &str| format!("[[routes]]\nupstream = \"app\"\n[routes.headers]\n{h}\n");
        for (src, want) in [
            (route("claims = { \"Content-Length\" = \"x\" }"), "framing"),
            (
                route("claims = { \"Transfer_Encoding\" = \"x\" }"),
                "framing",
            ),
            (route("claims = { \"Proxy-Foo\" = \"x\" }"), "framing"),
            (route("claims = { \"Cookie\" = \"x\" }"), "framing"),
            (
                route("claims = { \"X-Original-URL\" = \"x\" }"),
                "forwarding",
            ),
            (route("claims = { \"x_client_ip\" = \"x\" }"), "forwarding"),
            (
                route("claims = { \"True-Client-IP\" = \"x\" }"),
                "forwarding",
            ),
            (
                route("claims = { \"X.Forwarded.Server\" = \"x\" }"),
                "forwarding",
            ),
            (
                route("claims = { \"X-Forwarded-User\" = \"x\" }"),
                "identity header",
            ),
            (
                route("claims = { \"x_forwarded_email\" = \"x\" }"),
                "identity header",
            ),
            (
                route("claims = { \"bad name\" = \"x\" }"),
                "not a valid header name",
            ),
            (
                route("claims = { \"X-A\" = \"x\", \"x_a\" = \"y\" }"),
                "same header",
            ),
            (route("claim_prefix = \"X-\""), "too short"),
            (
                route("claim_prefix = \"X-Authgate-\""),
                "would let a claim set",
            ),
            (
                route("claims = { \"X-Authgate-Cookie\" = \"x\" }"),
                "own namespace",
            ),
            (
                format!(
                    "[headers]\nuser = \"Remote-User\"\n{}",
                    route("remote_user = {}")
                ),
                "identity header",
            ),
            (
                route("claim_prefix = \"X-Forwarded-\""),
                "would let a claim set",
            ),
            (
                route("claim_prefix = \"Content-\""),
                "would let a claim set",
            ),
            (
                route("claim_prefix = \"bad prefix\""),
                "cannot start a header name",
            ),
            (
                route("claims = { \"X-HTTP-Method-Override\" = \"x\" }"),
                "no claim may set it",
            ),
            (
                route("claims = { \"x_http_method\" = \"x\" }"),
                "no claim may set it",
            ),
            (
                route("claims = { \"X-Method-Override\" = \"x\" }"),
                "no claim may set it",
            ),
            (
                route("claims = { \"Origin\" = \"x\" }"),
                "no claim may set it",
            ),
            (
                route("claims = { \"Referer\" = \"x\" }"),
                "no claim may set it",
            ),
            (
                route("claims = { \"Sec-Fetch-Site\" = \"x\" }"),
                "no claim may set it",
            ),
            (
                route("claims = { \"sec_ch_ua\" = \"x\" }"),
                "no claim may set it",
            ),
            (
                route("claims = { \"X-Request-Id\" = \"x\" }"),
                "no claim may set it",
            ),
            (
                route("claims = { \"X_Requested_With\" = \"x\" }"),
                "no claim may set it",
            ),
            (
                route("claims = { \"Accept\" = \"x\" }"),
                "no claim may set it",
            ),
            (
                route("claims = { \"CF-Connecting-IP\" = \"x\" }"),
                "no claim may set it",
            ),
            (
                route("claims = { \"X-Original-Method\" = \"x\" }"),
                "no claim may set it",
            ),
            (
                route("claim_prefix = \"X-Original-\""),
                "would let a claim set",
            ),
            (
                route("claim_prefix = \"X-Forwarded-M\""),
                "would let a claim set",
            ),
            (
                route("claim_prefix = \"Sec-Fetch-\""),
                "would let a claim set",
            ),
            (
                route("claim_prefix = \"Sec-\""),
                "would let a claim set",
            ),
            (
                route("claim_prefix = \"X-HTTP-\""),
                "would let a claim set",
            ),
            (
                route("claim_prefix = \"X-Method-\""),
                "would let a claim set",
            ),
            (
                route("claim_prefix = \"CF-Conn\""),
                "would let a claim set",
            ),
            (
                route("claim_prefix = \"X-Request-\""),
                "would let a claim set",
            ),
            (
                route("claim_prefix = \"X-Requested-\""),
                "would let a claim set",
            ),
            (
                route("claim_prefix = \"Orig\""),
                "would let a claim set",
            ),
            (
                route("claim_prefix_allow = [\"email\"]"),
                "without claim_prefix",
            ),
            (
                route("remote_user = { pattern = \"(\" }"),
                "invalid regular expression",
            ),
            (
                route("remote_user = { pattern = \"^(.+)@\", replace = \"$2\" }"),
                "group $2",
            ),
            (
                route("remote_user = { pattern = \"^(?P<u>.+)@\", replace = \"${v}\" }"),
                "group $v",
            ),
            (
                route("remote_user = { replace = \"$1\" }"),
                "needs a pattern",
            ),
            (route("remote_user = { header = \"Host\" }"), "framing"),
            (
                route("basic_auth = {}\nid_token = \"Authorization\""),
                "choose one",
            ),
            (
                route("id_token = \"Remote-User\"\nremote_user = {}"),
                "same header",
            ),
            (route("max_claim_bytes = 10"), "between"),
            (
                route("claims = { \"X-Auth-Request-Email\" = \"mail\" }"),
                "one header, one source",
            ),
            (
                route("x_auth_request = true\nremote_user = { header = \"X-Auth-Request-User\" }"),
                "one header, one source",
            ),
            (
                route("claims = { \"Remote-User-Name\" = \"name\" }\nremote_user = { header = \"remote_user_name\" }"),
                "one header, one source",
            ),
            (
                format!(
                    "[headers]\nclaims = {{ \"X-Level\" = \"level\" }}\n{}",
                    route("id_token = \"x_level\"")
                ),
                "one header, one source",
            ),
            (route("claim_separator = \"\\n\""), "control characters"),
            (
                format!(
                    "[headers]\nbasic_auth = {{ password = \"a\", password_file = \"/x\" }}\n{}",
                    route("")
                ),
                "not both",
            ),
        ] {
            let e = errors(&src);
            assert!(
                e.iter().any(|e| e.contains(want)),
                "{src}\nwant {want}, got {e:?}"
            );
            let with_line = |e: &String| {
                e.strip_prefix("t.toml:")
                    .is_some_and(|r| r.starts_with(|c: char| c.is_ascii_digit()))
            };
            assert!(e.iter().all(with_line), "{e:?}");
            assert!(e.iter().all(|e| !e.contains('\n')), "one line each: {e:?}");
        }
        // Accepted: group references that exist, `$$`, an empty password.
        config(&route(
            "remote_user = { pattern = \"^(?P<u>.+)@(.+)$\", replace = \"$$${u}-$2\" }\nbasic_auth = { password = \"\" }",
        ));
    }

    #[test]
    fn the_summary_names_the_headers_never_a_secret() {
        let c = config(
            "[[routes]]\nupstream = \"app\"\n[routes.headers]\nclaims = { \"X-Dept\" = \"department\" }\nbasic_auth = { password = \"hunter2\" }\nremote_user = { claim = \"email\" }\n",
        );
        let s = c.summary().join("\n");
        assert!(
            s.contains("sends x-dept (department), remote-user (email), authorization (Basic)"),
            "{s}"
        );
        assert!(!s.contains("hunter2"));
    }

    /// What `route` sends and decides for `id`: its claim headers, its policy's answer and
    /// each deny rule's.
    #[allow(clippy::type_complexity)]
    fn outcome(
        c: &Config,
        route: &crate::config::model::RouteSettings,
        id: &Claims,
    ) -> (
        Option<Result<Vec<(String, String)>, Underivable>>,
        Option<bool>,
        Vec<bool>,
    ) {
        let get = http::Method::GET;
        let headers =
            (route.claim_headers.as_ref()).map(|s| run(&RouteClaims::new(s.clone(), c), id));
        let allowed = (route.policy.as_ref()).map(|p| p.evaluate("p", id, &get).is_ok());
        let denied = (route.deny.iter())
            .map(|d| d.denies("p", id, &get, || None))
            .collect();
        (headers, allowed, denied)
    }

    /// A cached session keeps only the other claims its config reads
    /// (`Config::claims_read`): under every reader (claim paths whole, dotted and nested,
    /// `remote_user`, prefix mode with and without an allow list, policy and deny rules on
    /// claims and claim patterns), what a route sends and decides is the same with the copy
    /// as with every claim.
    #[test]
    fn a_session_keeping_only_the_claims_read_gets_the_same_headers_and_decisions() {
        use crate::claimmap::ClaimsRead;
        let routes = [
            "[routes.headers]\nclaims = { \"X-A\" = \"department\", \"X-B\" = \"realm_access.roles\", \"X-C\" = \"dotted.name\", \"X-D\" = \"realm_access.deep.x.y\", \"X-E\" = \"absent.x\" }\n",
            "[routes.headers]\nremote_user = { claim = \"realm_access.deep.x\" }\n",
            "[routes.headers]\nremote_user = { claim = \"email_hint\", pattern = \"^(.+)@\" }\nbasic_auth = {}\n",
            "[routes.headers]\nclaim_prefix = \"OIDC_CLAIM_\"\nclaim_prefix_allow = [\"level\", \"roles\", \"email\"]\n",
            "[routes.headers]\nclaim_prefix = \"OIDC_CLAIM_\"\n",
            "[routes.policy]\nclaims = { level = \"42\", roles = \"b,c\" }\n",
            "[routes.policy]\nclaim_patterns = { ratio = \"1\\\\..*\", mixed = \".*\", groups = \"dev\" }\n",
            "[[routes.deny]]\nclaims = { admin = \"true\" }\n[[routes.deny]]\nclaim_patterns = { \"dotted.name\" = \"wh.*\" }\n",
        ];
        let mut projected_some = 0;
        for r in routes {
            let c = config(&format!("[[routes]]\nupstream = \"app\"\n{r}"));
            let read = c.claims_read();
            let full = claims();
            let mut kept = full.clone();
            kept.extra.keep(&read);
            if read != ClaimsRead::All {
                assert!(kept.extra.len() < full.extra.len(), "{r}: {read:?}");
                projected_some += 1;
            }
            // Without any other claim the route behaves otherwise: each case reads some.
            let mut bare = full.clone();
            bare.extra = Default::default();
            let outcome = |id: &Claims| outcome(&c, &c.routes[0], id);
            assert_eq!(outcome(&kept), outcome(&full), "{r}");
            assert_ne!(
                outcome(&bare),
                outcome(&full),
                "{r}: the case reads other claims"
            );
        }
        assert_eq!(projected_some, routes.len() - 1);

        // All of them in one config, beside global claim headers and a provider whose user
        // and groups claims have their own names: every route decides and sends the same.
        let mut src = String::from(
            "[headers]\nclaims = { \"X-Global\" = \"realm_access.deep\" }\n[[providers]]\nid = \"p\"\nissuer = \"https://idp.example\"\nclient_id = \"c\"\nuser_claim = \"email_hint\"\ngroups_claim = \"roles\"\n",
        );
        for (i, r) in routes.iter().enumerate().filter(|(i, _)| *i != 4) {
            src.push_str(&format!(
                "[[routes]]\npath = \"/r{i}\"\nupstream = \"app\"\n{r}"
            ));
        }
        let c = config(&src);
        let read = c.claims_read();
        assert_ne!(read, ClaimsRead::All);
        let full = claims();
        let mut kept = full.clone();
        kept.extra.keep(&read);
        assert!(kept.extra.len() < full.extra.len());
        for (i, route) in c.routes.iter().enumerate() {
            assert_eq!(
                outcome(&c, route, &kept),
                outcome(&c, route, &full),
                "route {i}"
            );
        }
        // A route that reads no other claim keeps none; one that sends them all keeps all.
        let c = config("[[routes]]\nupstream = \"app\"\n");
        assert_eq!(c.claims_read(), ClaimsRead::named(Vec::<&str>::new()));
        let c = config("[headers]\nclaim_prefix = \"X-Claim-\"\n[[routes]]\nupstream = \"app\"\n");
        assert_eq!(c.claims_read(), ClaimsRead::All);
    }
}
