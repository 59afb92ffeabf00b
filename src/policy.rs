//! Per-route authorization: who may, once we know who is.
//!
//! A policy is evaluated on the verified identity (session or bearer token) after
//! authentication. Semantics, kept deliberately simple:
//!
//! - **all of** the keys that are set must match (users AND groups AND methods ...);
//! - **any of** the values within one key (users = ["a", "b"]: a or b);
//! - a route without a policy admits every authenticated caller; `authgate check` refuses an
//!   empty `[routes.policy]` table and a policy on a public route, both ambiguous.
//!
//! `providers` names whose users a route admits (two providers can both vouch for a user
//! called `alice`). Emails compare case-insensitively and only verified ones exist here
//! (`crate::oidc::ClaimNames::map` drops the rest); an email is still checked to be
//! `email_verified == Some(true)`. Email domains match the part after the single `@` exactly: no
//! suffix matching (`corp.com.evil.com`), no multi-`@` confusion (`a@evil.com@corp.com`).
//! Everything is pre-normalised at config load; evaluation allocates nothing (but for a number
//! claim compared as its JSON text).
//!
//! Patterns (`email_patterns`, `claim_patterns`) are regexes anchored at load to match a
//! whole value: `corp\.example` never matches `evil-corp.example.org`. Emails match
//! case-insensitively (as `emails` compare); claims exactly. `claim_patterns` (like `claims`)
//! reads the provider's other claims, and else the standard names the identity keeps apart:
//! `sub`, `email` (verified only), `name`, `preferred_username`, `groups` (any element).
//!
//! `source_ips` is the client address as established through `server.trusted_proxies`
//! ([`crate::forwarded::ClientAddr`]), IPv4-mapped IPv6 as IPv4. An unknown address (a front
//! proxy that did not say, an `X-Forwarded-For` entry that is not an address) never matches
//! an allow rule, and always matches a deny rule's `source_ips`: both fail closed.
//!
//! `[[routes.deny]]` rules use the same keys; a rule matches when all of its keys match, and
//! the rules are evaluated, in order, before the policy: a match is a 403.

use std::net::IpAddr;

use http::Method;
use serde_json::Value;

use crate::identity::Claims;

/// The rules of a `[routes.policy]`, validated by `config` as plain data; evaluated here.
pub use crate::config::model::{ClaimPattern, ClaimRule, Pattern, Policy};

/// Why a request was denied (for the log; the caller sees 403).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denial {
    Provider,
    User,
    Email,
    EmailDomain,
    Group,
    Method,
    Claim,
    EmailPattern,
    ClaimPattern,
    SourceIp,
}

impl Denial {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Denial::Provider => "provider not allowed",
            Denial::User => "user not allowed",
            Denial::Email => "email not allowed",
            Denial::EmailDomain => "email domain not allowed",
            Denial::Group => "no allowed group",
            Denial::Method => "method not allowed",
            Denial::Claim => "claim requirement not met",
            Denial::EmailPattern => "email matches no allowed pattern",
            Denial::ClaimPattern => "claim matches no allowed pattern",
            Denial::SourceIp => "client address not allowed",
        }
    }
}

/// The domain of a well-formed address: exactly one `@`, non-empty local part and domain.
fn email_domain(email: &str) -> Option<&str> {
    let (local, domain) = email.split_once('@')?;
    if local.is_empty() || domain.is_empty() || domain.contains('@') {
        return None;
    }
    Some(domain)
}

fn claim_matches(v: &Value, want: &str) -> bool {
    match v {
        Value::String(s) => s == want,
        Value::Array(a) => a.iter().any(|x| matches!(x, Value::String(s) if s == want)),
        Value::Bool(b) => (want == "true" && *b) || (want == "false" && !*b),
        Value::Number(n) => n.to_string() == want,
        _ => false,
    }
}

/// Whether claim `name` of `id` (a string, or an element of an array claim; numbers and
/// booleans as their JSON text) satisfies `ok`. See the module comment for where it is read.
fn claim_any(id: &Claims, name: &str, mut ok: impl FnMut(&str) -> bool) -> bool {
    let mut scalar = |v: &Value| match v {
        Value::String(s) => ok(s),
        Value::Bool(b) => ok(if *b { "true" } else { "false" }),
        Value::Number(n) => ok(&n.to_string()),
        _ => false,
    };
    if let Some(v) = id.extra.get(name) {
        return match v {
            Value::Array(a) => a.iter().any(scalar),
            v => scalar(v),
        };
    }
    match name {
        "sub" => !id.sub().is_empty() && ok(id.sub()),
        "email" => verified_email(id).is_some_and(ok),
        "name" => id.name().is_some_and(ok),
        "preferred_username" => id.preferred_username().is_some_and(ok),
        "groups" => id.groups.iter().any(ok),
        _ => false,
    }
}

/// Only an address the provider verified counts, whatever put one in the claims.
fn verified_email(id: &Claims) -> Option<&str> {
    id.email().filter(|_| id.email_verified == Some(true))
}

/// Whether the client address (worked out only when asked) is in one of `nets`; an unknown
/// address is `unknown`.
fn source_in(
    nets: &[ipnet::IpNet],
    client: impl FnOnce() -> Option<IpAddr>,
    unknown: bool,
) -> bool {
    match client() {
        Some(ip) => {
            let ip = crate::forwarded::unmap(ip);
            nets.iter().any(|n| n.contains(&ip))
        }
        None => unknown,
    }
}

/// Headers through which frameworks (Rails, Express, Symfony...) let a request claim another
/// method, in canonical spelling: [`claims_method_override`] matches them in every spelling
/// (case, `_` or `.` for `-`), as CGI/WSGI upstreams read them. Where a policy restricts
/// methods, a request carrying one would be judged as GET here and run as DELETE upstream, so
/// it is refused.
pub(crate) const METHOD_OVERRIDE_HEADERS: &[&str] = &[
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
];

/// The query parameter Rails, Laravel and Symfony read as the method (`?_method=DELETE`).
const METHOD_PARAM: &[u8] = b"method";

/// Whether the request claims another method than its own: one of
/// [`METHOD_OVERRIDE_HEADERS`] in any spelling, or a `_method` parameter in the query
/// (`query` without the `?`).
///
/// The query is read strictly, as the most permissive framework would: parameters split at
/// `&` and `;`; the name percent-decoded (twice, so `%255F` counts) with `+` as space; leading
/// and trailing whitespace ignored (PHP drops leading spaces); `_`, `.` or `[` before
/// `method` (PHP turns the last two into `_`); `method` in any ASCII case; and an array suffix (`_method[]`,
/// `_method[0]`) allowed. A parameter without a value counts too. `x_method` or `my_method`
/// do not match. Allocates nothing.
pub(crate) fn claims_method_override(headers: &http::HeaderMap, query: Option<&str>) -> bool {
    let header = headers.keys().any(|n| {
        METHOD_OVERRIDE_HEADERS
            .iter()
            .any(|h| crate::forwarded::canonical_eq(n.as_str(), h))
    });
    header
        || query.is_some_and(|q| {
            q.split(['&', ';']).any(|param| {
                let name = param.split_once('=').map_or(param, |(n, _)| n);
                is_method_param(PercentDecode::new(PercentDecode::new(name.bytes())))
            })
        })
}

/// Whether a decoded parameter name is `_method` in one of the spellings above.
fn is_method_param(name: impl Iterator<Item = u8>) -> bool {
    let mut name = name.skip_while(u8::is_ascii_whitespace).peekable();
    if !matches!(name.next(), Some(b'_' | b'.' | b'[')) {
        return false;
    }
    for want in METHOD_PARAM {
        match name.next() {
            Some(b) if b.eq_ignore_ascii_case(want) => {}
            _ => return false,
        }
    }
    match name.next() {
        None | Some(b'[') => true,
        Some(b) if b.is_ascii_whitespace() => name.all(|b| b.is_ascii_whitespace()),
        Some(_) => false,
    }
}

/// Percent-decoding (`+` as space) over bytes, without allocating. A `%` not followed by two
/// hex digits stays as it is.
struct PercentDecode<I: Iterator<Item = u8>> {
    inner: std::iter::Peekable<I>,
    /// A hex digit read ahead after a `%` that did not start an escape.
    pending: Option<u8>,
}

impl<I: Iterator<Item = u8>> PercentDecode<I> {
    fn new(inner: I) -> Self {
        Self {
            inner: inner.peekable(),
            pending: None,
        }
    }
}

impl<I: Iterator<Item = u8>> Iterator for PercentDecode<I> {
    type Item = u8;

    fn next(&mut self) -> Option<u8> {
        if let Some(b) = self.pending.take() {
            return Some(b);
        }
        match self.inner.next()? {
            b'+' => Some(b' '),
            b'%' => {
                let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
                let Some(hi) = self.inner.next_if(|b| b.is_ascii_hexdigit()) else {
                    return Some(b'%');
                };
                match self.inner.next_if(|b| b.is_ascii_hexdigit()) {
                    Some(lo) => Some((hex(hi).unwrap_or(0) << 4) | hex(lo).unwrap_or(0)),
                    None => {
                        self.pending = Some(hi);
                        Some(b'%')
                    }
                }
            }
            b => Some(b),
        }
    }
}

impl Policy {
    /// Whether this policy depends on the method (and so must refuse method overrides).
    pub(crate) fn restricts_methods(&self) -> bool {
        !self.methods.is_empty()
    }

    /// `Ok(())` to allow, `Err(reason)` to deny. Without a client address: see
    /// [`Policy::evaluate_from`].
    pub fn evaluate(&self, provider: &str, id: &Claims, method: &Method) -> Result<(), Denial> {
        self.evaluate_from(provider, id, method, || None)
    }

    /// `Ok(())` to allow, `Err(reason)` to deny. `client` is asked only if the policy has
    /// `source_ips`; an unknown address does not match them.
    pub fn evaluate_from(
        &self,
        provider: &str,
        id: &Claims,
        method: &Method,
        client: impl FnOnce() -> Option<IpAddr>,
    ) -> Result<(), Denial> {
        self.check(provider, id, method, client, false)
    }

    /// As a `[[routes.deny]]` rule: whether every key it sets matches (an unknown client
    /// address matches its `source_ips`: fail closed).
    pub(crate) fn denies(
        &self,
        provider: &str,
        id: &Claims,
        method: &Method,
        client: impl FnOnce() -> Option<IpAddr>,
    ) -> bool {
        self.check(provider, id, method, client, true).is_ok()
    }

    /// Whether the client address passes this policy's `source_ips` (no `source_ips`: yes;
    /// an unknown address: no).
    pub(crate) fn admits_source(&self, client: impl FnOnce() -> Option<IpAddr>) -> bool {
        self.source_ips.is_empty() || source_in(&self.source_ips, client, false)
    }

    /// Whether the method passes this policy's `methods` (none: yes).
    pub(crate) fn admits_method(&self, method: &Method) -> bool {
        self.methods.is_empty() || self.methods.contains(method)
    }

    /// The keys this rule sets, for a log line (`groups, methods`).
    pub(crate) fn keys(&self) -> String {
        let set = [
            ("providers", !self.providers.is_empty()),
            ("users", !self.users.is_empty()),
            ("emails", !self.emails.is_empty()),
            ("email_domains", !self.email_domains.is_empty()),
            ("email_patterns", !self.email_patterns.is_empty()),
            ("groups", !self.groups.is_empty()),
            ("methods", !self.methods.is_empty()),
            ("claims", !self.claims.is_empty()),
            ("claim_patterns", !self.claim_patterns.is_empty()),
            ("source_ips", !self.source_ips.is_empty()),
        ];
        let keys: Vec<&str> = set.iter().filter(|(_, on)| *on).map(|(k, _)| *k).collect();
        keys.join(", ")
    }

    /// Every key that is set must hold (`unknown`: whether an unknown client address is in
    /// `source_ips`). Cheap keys first; the client address is worked out last, if at all.
    fn check(
        &self,
        provider: &str,
        id: &Claims,
        method: &Method,
        client: impl FnOnce() -> Option<IpAddr>,
        unknown: bool,
    ) -> Result<(), Denial> {
        // A deny rule on GET covers HEAD: an app answers HEAD with its GET handler.
        let head_as_get =
            || unknown && method == Method::HEAD && self.methods.contains(&Method::GET);
        if !(self.methods.is_empty() || self.methods.contains(method) || head_as_get()) {
            return Err(Denial::Method);
        }
        if !self.providers.is_empty() && !self.providers.contains(provider) {
            return Err(Denial::Provider);
        }
        if !self.users.is_empty() && !self.users.contains(id.subject()) {
            return Err(Denial::User);
        }
        let verified_email = verified_email(id);
        if !self.emails.is_empty() {
            let ok = verified_email.is_some_and(|e| {
                // Compare without allocating: ASCII case-insensitively against each entry.
                self.emails.iter().any(|a| a.eq_ignore_ascii_case(e))
            });
            if !ok {
                return Err(Denial::Email);
            }
        }
        if !self.email_domains.is_empty() {
            let ok = verified_email
                .and_then(email_domain)
                .is_some_and(|d| self.email_domains.iter().any(|a| a.eq_ignore_ascii_case(d)));
            if !ok {
                return Err(Denial::EmailDomain);
            }
        }
        if !self.email_patterns.is_empty() {
            let ok =
                verified_email.is_some_and(|e| self.email_patterns.iter().any(|p| p.0.is_match(e)));
            if !ok {
                return Err(Denial::EmailPattern);
            }
        }
        if !self.groups.is_empty() && !id.groups.iter().any(|g| self.groups.contains(g)) {
            return Err(Denial::Group);
        }
        for rule in &self.claims {
            let ok = id
                .extra
                .get(&rule.claim)
                .is_some_and(|v| claim_matches(v, &rule.value));
            if !ok {
                return Err(Denial::Claim);
            }
        }
        for rule in &self.claim_patterns {
            if !claim_any(id, &rule.claim, |v| {
                rule.patterns.iter().any(|p| p.0.is_match(v))
            }) {
                return Err(Denial::ClaimPattern);
            }
        }
        if !self.source_ips.is_empty() && !source_in(&self.source_ips, client, unknown) {
            return Err(Denial::SourceIp);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn method_override_in_the_query() {
        let claims = |q: &str| claims_method_override(&http::HeaderMap::new(), Some(q));
        for q in [
            "_method=DELETE",
            "_method=",
            "_method",
            "a=1&_method=DELETE",
            "a=1;_method=DELETE",
            ";_method=PUT",
            "&_method=PUT",
            "%5Fmethod=DELETE",
            "%5fmethod=DELETE",
            "%255Fmethod=DELETE",
            "_%6Dethod=DELETE",
            "_METHOD=DELETE",
            "_Method=DELETE",
            "_method[]=DELETE",
            "_method%5B%5D=DELETE",
            "_method[0]=DELETE",
            "+_method=DELETE",
            "%20_method=DELETE",
            "_method+=DELETE",
            ".method=DELETE",
            "[method=DELETE",
            "a=b=c&_method=x=y",
        ] {
            assert!(claims(q), "{q}");
        }
        for q in [
            "",
            "method=DELETE",
            "x_method=1",
            "my_method=1",
            "_methods=1",
            "_method_=1",
            "_method.x=1",
            "__method=1",
            "-method=1",
            "+method=1",
            "_meth=1",
            "a=_method",
            "a=1&b=_method",
            "q=%26_method%3DDELETE",
            "_method%=1",
            "%5_method=1",
            "payment_method=card",
        ] {
            assert!(!claims(q), "{q}");
        }
        assert!(!claims_method_override(&http::HeaderMap::new(), None));
    }

    #[test]
    fn method_override_headers_in_any_spelling() {
        for name in [
            "x-http-method-override",
            "X-HTTP-Method-Override",
            "x_http_method_override",
            "X.HTTP.Method",
            "x-method_override",
        ] {
            let mut h = http::HeaderMap::new();
            h.insert(
                http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                http::HeaderValue::from_static("DELETE"),
            );
            assert!(claims_method_override(&h, None), "{name}");
        }
        for name in [
            "x-http-methods",
            "x-method",
            "accept",
            "x-http-method-overrides",
        ] {
            let mut h = http::HeaderMap::new();
            h.insert(
                http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                http::HeaderValue::from_static("DELETE"),
            );
            assert!(!claims_method_override(&h, Some("a=1")), "{name}");
        }
    }

    #[test]
    fn percent_decoding() {
        let dec = |s: &str| String::from_utf8(PercentDecode::new(s.bytes()).collect()).unwrap();
        assert_eq!(dec("a%5Fb+c"), "a_b c");
        assert_eq!(dec("%"), "%");
        assert_eq!(dec("%4"), "%4");
        assert_eq!(dec("%4g"), "%4g");
        assert_eq!(dec("%%41"), "%A");
        assert_eq!(dec("%2541"), "%41");
    }

    fn alice() -> Claims {
        let mut extra = serde_json::Map::new();
        extra.insert("tenant".into(), "acme".into());
        extra.insert("roles".into(), serde_json::json!(["reader", "admin"]));
        Claims {
            text: crate::identity::UserText::from_parts(crate::identity::UserParts {
                sub: "",
                subject: "alice",
                email: Some("Alice@Corp.com"),
                ..Default::default()
            }),
            email_verified: Some(true),
            groups: ["dev", "admins"].into_iter().collect(),
            extra: extra.into_iter().collect(),
        }
    }

    fn set(v: &[&str]) -> HashSet<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn empty_policy_allows_any_authenticated_caller() {
        assert!(Policy::default()
            .evaluate("corp", &alice(), &Method::DELETE)
            .is_ok());
    }

    #[test]
    fn any_of_within_all_of_across() {
        let p = Policy {
            users: set(&["bob", "alice"]),
            groups: set(&["admins"]),
            methods: vec![Method::GET, Method::HEAD],
            ..Policy::default()
        };
        assert!(p.evaluate("corp", &alice(), &Method::GET).is_ok());
        assert_eq!(
            p.evaluate("corp", &alice(), &Method::POST),
            Err(Denial::Method)
        );
        let mut bob = alice();
        bob.text = bob.text.with(|p| p.subject = "carol");
        assert_eq!(p.evaluate("corp", &bob, &Method::GET), Err(Denial::User));
        let mut nogroup = alice();
        nogroup.groups = ["dev"].into_iter().collect();
        assert_eq!(
            p.evaluate("corp", &nogroup, &Method::GET),
            Err(Denial::Group)
        );
    }

    #[test]
    fn email_domains_are_exact() {
        let p = Policy {
            email_domains: set(&["corp.com"]),
            ..Policy::default()
        };
        assert!(p.evaluate("corp", &alice(), &Method::GET).is_ok());
        for bad in [
            "a@evil.com@corp.com",
            "a@corp.com.evil.com",
            "a@evilcorp.com",
            "a@sub.corp.com",
            "corp.com",
            "@corp.com",
            "a@corp.com@",
        ] {
            let mut c = alice();
            c.text = c.text.with(|p| p.email = Some(bad));
            assert_eq!(
                p.evaluate("corp", &c, &Method::GET),
                Err(Denial::EmailDomain),
                "{bad}"
            );
        }
        // Only `Some(true)` counts, whatever put an address here.
        for verdict in [Some(false), None] {
            let mut unverified = alice();
            unverified.email_verified = verdict;
            assert_eq!(
                p.evaluate("corp", &unverified, &Method::GET),
                Err(Denial::EmailDomain)
            );
        }
    }

    #[test]
    fn providers_name_whose_users_are_admitted() {
        let p = Policy {
            providers: set(&["corp"]),
            users: set(&["alice"]),
            ..Policy::default()
        };
        assert!(p.evaluate("corp", &alice(), &Method::GET).is_ok());
        assert_eq!(
            p.evaluate("partner", &alice(), &Method::GET),
            Err(Denial::Provider),
            "alice at another provider is another user"
        );
    }

    #[test]
    fn emails_and_claims() {
        let p = Policy {
            emails: set(&["alice@corp.com"]),
            claims: vec![
                ClaimRule {
                    claim: "tenant".into(),
                    value: "acme".into(),
                },
                ClaimRule {
                    claim: "roles".into(),
                    value: "admin".into(),
                },
            ],
            ..Policy::default()
        };
        assert!(p.evaluate("corp", &alice(), &Method::GET).is_ok());
        let mut other = alice();
        other.extra.insert("tenant".into(), "globex".into());
        assert_eq!(p.evaluate("corp", &other, &Method::GET), Err(Denial::Claim));
        let mut missing = alice();
        missing.extra.remove("roles");
        assert_eq!(
            p.evaluate("corp", &missing, &Method::GET),
            Err(Denial::Claim)
        );
        let mut wrong = alice();
        wrong.text = wrong.text.with(|p| p.email = Some("alice@corp.com.evil"));
        assert_eq!(p.evaluate("corp", &wrong, &Method::GET), Err(Denial::Email));
    }

    fn pat(p: &str, email: bool) -> Pattern {
        Pattern(
            regex::RegexBuilder::new(&format!("^(?:{p})$"))
                .case_insensitive(email)
                .build()
                .unwrap(),
        )
    }

    /// Through config validation, so the patterns are anchored as at load.
    fn loaded(policy: &str) -> Policy {
        let cfg = crate::config::parse(
            std::path::Path::new("t.toml"),
            &format!("[upstreams.app]\nservers = [\"http://127.0.0.1:1\"]\n[[routes]]\nupstream = \"app\"\n[routes.policy]\n{policy}\n"),
        )
        .unwrap();
        cfg.routes[0].policy.clone().unwrap()
    }

    #[test]
    fn email_patterns_match_whole_addresses_case_insensitively() {
        let p = loaded(r#"email_patterns = ['[^@]+@corp\.com', 'admin@(eng|ops)\.corp\.com']"#);
        let with = |email: &str, verified: Option<bool>| {
            let mut c = alice();
            c.text = c.text.with(|p| p.email = Some(email));
            c.email_verified = verified;
            p.evaluate("corp", &c, &Method::GET)
        };
        for ok in ["alice@corp.com", "ALICE@CORP.COM", "Admin@Eng.Corp.Com"] {
            assert_eq!(with(ok, Some(true)), Ok(()), "{ok}");
        }
        for bad in [
            "alice@corp.com.evil.org",
            "alice@evil-corp.com",
            "alice@corp.com\nx@evil.org",
            "alice@corp.com\n",
            "a@b@corp.com",
            "admin@dev.corp.com",
        ] {
            assert_eq!(with(bad, Some(true)), Err(Denial::EmailPattern), "{bad:?}");
        }
        assert_eq!(
            with("alice@corp.com", Some(false)),
            Err(Denial::EmailPattern)
        );
        assert_eq!(with("alice@corp.com", None), Err(Denial::EmailPattern));
        // An unanchored-looking pattern is anchored all the same.
        let p = loaded(r#"email_patterns = ['corp\.example']"#);
        let mut c = alice();
        c.text = c.text.with(|p| p.email = Some("x@evil-corp.example.org"));
        assert_eq!(
            p.evaluate("corp", &c, &Method::GET),
            Err(Denial::EmailPattern)
        );
        // Written with anchors: still the same meaning.
        let p = loaded(r#"email_patterns = ['^[^@]+@corp\.com$']"#);
        assert_eq!(p.evaluate("corp", &alice(), &Method::GET), Ok(()));
    }

    #[test]
    fn claim_patterns_on_strings_arrays_numbers_and_standard_names() {
        let mut c = alice();
        c.extra.insert("department".into(), "eng-platform".into());
        c.extra.insert("level".into(), serde_json::json!(42));
        c.extra.insert("staff".into(), serde_json::json!(true));
        c.extra
            .insert("nested".into(), serde_json::json!({"a": "eng-x"}));
        let eval = |rules: &[(&str, &[&str])]| {
            let p = Policy {
                claim_patterns: rules
                    .iter()
                    .map(|(claim, pats)| ClaimPattern {
                        claim: claim.to_string(),
                        patterns: pats.iter().map(|p| pat(p, false)).collect(),
                        written: pats.iter().map(|p| p.to_string()).collect(),
                    })
                    .collect(),
                ..Policy::default()
            };
            p.evaluate("corp", &c, &Method::GET)
        };
        assert_eq!(eval(&[("department", &["eng-.*"])]), Ok(()));
        assert_eq!(
            eval(&[("department", &["eng-"])]),
            Err(Denial::ClaimPattern),
            "whole value"
        );
        assert_eq!(
            eval(&[("department", &["ENG-.*"])]),
            Err(Denial::ClaimPattern),
            "claims are case-sensitive"
        );
        assert_eq!(
            eval(&[("department", &["ops-.*", "eng-.*"])]),
            Ok(()),
            "any of a list"
        );
        assert_eq!(eval(&[("roles", &["adm.*"])]), Ok(()), "an array element");
        assert_eq!(eval(&[("roles", &["read"])]), Err(Denial::ClaimPattern));
        assert_eq!(eval(&[("level", &["4[0-9]"])]), Ok(()));
        assert_eq!(eval(&[("staff", &["true"])]), Ok(()));
        assert_eq!(
            eval(&[("nested", &[".*"])]),
            Err(Denial::ClaimPattern),
            "objects never match"
        );
        assert_eq!(eval(&[("missing", &[".*"])]), Err(Denial::ClaimPattern));
        // Standard names kept outside `extra`.
        assert_eq!(eval(&[("groups", &["adm.*"])]), Ok(()));
        assert_eq!(
            eval(&[("email", &[".*@corp\\.com"])]),
            Err(Denial::ClaimPattern),
            "case-sensitive"
        );
        assert_eq!(eval(&[("email", &[".*@Corp\\.com"])]), Ok(()));
        assert_eq!(
            eval(&[("sub", &[".*"])]),
            Err(Denial::ClaimPattern),
            "no sub in this identity"
        );
        // Every entry must hold.
        assert_eq!(
            eval(&[("department", &["eng-.*"]), ("level", &["1"])]),
            Err(Denial::ClaimPattern)
        );
    }

    fn sources(nets: &[&str]) -> Policy {
        Policy {
            source_ips: nets.iter().map(|n| n.parse().unwrap()).collect(),
            ..Policy::default()
        }
    }

    #[test]
    fn source_ips_edges() {
        let from = |p: &Policy, ip: Option<&str>| {
            let ip: Option<IpAddr> = ip.map(|i| i.parse().unwrap());
            p.evaluate_from("corp", &alice(), &Method::GET, || ip)
        };
        let all4 = sources(&["0.0.0.0/0"]);
        assert_eq!(from(&all4, Some("203.0.113.9")), Ok(()));
        assert_eq!(
            from(&all4, Some("::ffff:203.0.113.9")),
            Ok(()),
            "v4-mapped is v4"
        );
        assert_eq!(from(&all4, Some("2001:db8::1")), Err(Denial::SourceIp));
        assert_eq!(
            from(&all4, None),
            Err(Denial::SourceIp),
            "unknown never allows"
        );
        let all6 = sources(&["::/0"]);
        assert_eq!(from(&all6, Some("2001:db8::1")), Ok(()));
        assert_eq!(from(&all6, Some("::ffff:10.0.0.1")), Err(Denial::SourceIp));
        let host = sources(&["192.0.2.7/32", "2001:db8::7/128"]);
        assert_eq!(from(&host, Some("192.0.2.7")), Ok(()));
        assert_eq!(from(&host, Some("192.0.2.8")), Err(Denial::SourceIp));
        assert_eq!(from(&host, Some("2001:db8::7")), Ok(()));
        assert_eq!(from(&host, Some("2001:db8::8")), Err(Denial::SourceIp));
        let net = sources(&["10.0.0.0/8"]);
        assert_eq!(from(&net, Some("10.255.255.255")), Ok(()));
        assert_eq!(from(&net, Some("11.0.0.0")), Err(Denial::SourceIp));
        // The address is asked only when the other keys passed.
        let mut p = sources(&["10.0.0.0/8"]);
        p.users = set(&["bob"]);
        let asked = std::cell::Cell::new(false);
        let r = p.evaluate_from("corp", &alice(), &Method::GET, || {
            asked.set(true);
            None
        });
        assert_eq!(r, Err(Denial::User));
        assert!(!asked.get());
    }

    #[test]
    fn deny_rules_match_all_their_keys_and_unknown_addresses() {
        let mut rule = sources(&["192.0.2.0/24"]);
        rule.methods = vec![Method::DELETE];
        let d = |m: &Method, ip: Option<&str>| {
            let ip: Option<IpAddr> = ip.map(|i| i.parse().unwrap());
            rule.denies("corp", &alice(), m, || ip)
        };
        assert!(d(&Method::DELETE, Some("192.0.2.1")));
        assert!(!d(&Method::GET, Some("192.0.2.1")), "all keys must match");
        assert!(!d(&Method::DELETE, Some("198.51.100.1")));
        assert!(
            d(&Method::DELETE, None),
            "unknown address: may be that network"
        );
        assert_eq!(rule.keys(), "methods, source_ips");
        let groups = Policy {
            groups: set(&["admins"]),
            ..Policy::default()
        };
        assert!(groups.denies("corp", &alice(), &Method::GET, || None));
        let mut bob = alice();
        bob.groups = ["dev"].into_iter().collect();
        assert!(!groups.denies("corp", &bob, &Method::GET, || None));
    }
}
