//! `[[providers]]`: the OpenID providers a user may sign in with, validated once.
//!
//! Everything the gateway later believes about a provider is decided here: which issuer it
//! must name, which audiences besides our client it may add, whether its `email` claim is
//! worth forwarding when it does not say `email_verified`, which CA its TLS certificate
//! chains to, whether its userinfo endpoint adds claims, and which opaque tokens are its to
//! introspect. Defaults are named constants in [`super::defaults`].

use std::collections::HashSet;
use std::time::Duration;

use url::Url;

use super::error::Reporter;
use super::fields::{duration, load_ca, secret_value, span};
use super::file;
use super::secret::Secret;

// Defaults live in `super::defaults`; the old names stay for their users.
pub(crate) use super::defaults::{
    CLOCK_SKEW as DEFAULT_CLOCK_SKEW, INTROSPECTION_CACHE_TTL as DEFAULT_INTROSPECTION_CACHE_TTL,
    INTROSPECTION_INACTIVE_TTL as DEFAULT_INTROSPECTION_INACTIVE_TTL,
    INTROSPECTION_REQUIRES_AUDIENCE as DEFAULT_INTROSPECTION_REQUIRES_AUDIENCE,
    JWKS_REFETCH_COOLDOWN as DEFAULT_JWKS_REFETCH_COOLDOWN, MAX_INTROSPECTION_INACTIVE_TTL,
    MAX_MAX_REFRESH_FAILURES, MAX_REFRESH_FAILURES as DEFAULT_MAX_REFRESH_FAILURES,
    REFRESH_INTERVAL as DEFAULT_REFRESH_INTERVAL, REQUIRE_AT_JWT as DEFAULT_REQUIRE_AT_JWT,
    SCOPES as DEFAULT_SCOPES, SYSTEM_TRUST_STORE as DEFAULT_SYSTEM_TRUST_STORE,
    TRUST_EMAIL as DEFAULT_TRUST_EMAIL,
};
/// Provider ids appear in callback paths and metrics labels.
const MAX_ID_LEN: usize = 64;

/// RP-initiated logout request style.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LogoutMethod {
    /// An auto-submitted form POST: the ID token hint stays out of URLs (the default).
    Post,
    /// A redirect with the hint in the query, for providers that only accept GET.
    Get,
}

/// Whether the userinfo endpoint adds to the ID token's claims.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum Userinfo {
    /// The ID token (and, on refresh, the new one) is the whole identity.
    #[default]
    Off,
    /// At login and at each refresh, claims from `userinfo_endpoint` (whose `sub` must be the
    /// ID token's) are merged over the ID token's: groups kept out of ID tokens still count.
    Merge,
}

/// How a provider's claims become the identity: which claims fill it, and whether its
/// `email` counts without an `email_verified` claim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ClaimNames {
    pub(crate) user: String,
    pub(crate) email: String,
    pub(crate) name: String,
    pub(crate) groups: String,
    pub(crate) preferred_username: String,
    /// Forward `email` when the provider sends no `email_verified` claim at all (providers that
    /// only hand out addresses they own). An `email_verified` that is anything but `true`
    /// still means unverified.
    pub(crate) trust_email: bool,
}

/// Which CAs the provider's TLS certificate may chain to.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct ProviderTls {
    /// DER certificates of `ca_file`: trusted instead of the bundled web roots.
    pub(crate) ca_der: Option<Vec<Vec<u8>>>,
    /// Also trust the operating system's store (`/etc/ssl/certs` and the like).
    pub(crate) system_trust_store: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ProviderSettings {
    pub(crate) id: String,
    pub(crate) display_name: String,
    /// Exactly as configured: discovery must return this very string (OIDC Discovery §4.3).
    pub(crate) issuer: String,
    pub(crate) client_id: String,
    pub(crate) client_secret: Option<Secret>,
    pub(crate) scopes: Vec<String>,
    /// Absolute callback URL; default: this request's origin + the gateway prefix + [`Self::callback`].
    pub(crate) redirect_url: Option<String>,
    /// The callback path below the gateway prefix: `callback` with one provider,
    /// `callback/<id>` with several, so each provider answers at its own address and a code
    /// one provider issued cannot be presented as another's (mix-up, RFC 9207 §1).
    pub(crate) callback: String,
    /// How to send the browser to `end_session_endpoint`.
    pub(crate) logout_method: LogoutMethod,
    /// Bearer tokens must carry `typ: at+jwt` (RFC 9068).
    pub(crate) require_at_jwt: bool,
    /// Send opaque bearer tokens to this provider's introspection endpoint (RFC 7662).
    pub(crate) introspect_opaque_tokens: bool,
    /// How long an "active" introspection answer is reused (never past the token's `exp`).
    pub(crate) introspection_cache_ttl: Duration,
    /// How long an "inactive" answer is reused, so one bogus value costs one call.
    pub(crate) introspection_inactive_ttl: Duration,
    /// Opaque tokens of this provider start with this (e.g. Okta's, GitHub's prefixes): with
    /// several introspecting providers on a route, it picks the one a token is sent to.
    pub(crate) opaque_token_prefix: Option<String>,
    /// Refuse an introspection answer without `aud` on routes that name `audiences`.
    pub(crate) introspection_requires_audience: bool,
    pub(crate) extra_auth_params: Vec<(String, String)>,
    /// ID token algorithms; default: the provider's, asymmetric only.
    pub(crate) algorithms: Option<Vec<String>>,
    pub(crate) clock_skew: Duration,
    pub(crate) refresh_interval: Duration,
    /// Failed background refreshes in a row before the provider is unavailable.
    pub(crate) max_refresh_failures: u32,
    pub(crate) jwks_refetch_cooldown: Duration,
    pub(crate) claims: ClaimNames,
    /// Audiences an ID token may name besides our `client_id` (OIDC Core §3.1.3.7 step 3).
    pub(crate) trusted_audiences: Vec<String>,
    pub(crate) userinfo: Userinfo,
    pub(crate) tls: ProviderTls,
}

impl ProviderSettings {
    /// What `authgate check` says about the identity this provider vouches for.
    pub fn describe(&self) -> Vec<String> {
        let mut out = Vec::new();
        out.push(if self.claims.email != "email" {
            format!(
                "provider {}: email_claim = {:?}: email_verified speaks of \"email\" only, so this claim is forwarded as an email only with trust_email = true (now {})",
                self.id, self.claims.email, self.claims.trust_email
            )
        } else if self.claims.trust_email {
            format!(
                "provider {}: email forwarded when the token says email_verified: true or says nothing about it (trust_email = true)",
                self.id
            )
        } else {
            format!(
                "provider {}: email forwarded only when the token says email_verified: true; set trust_email = true for a provider that never sends that claim",
                self.id
            )
        });
        if self.claims.user != "sub" {
            out.push(format!(
                "provider {}: headers show the {:?} claim as the user; sessions, refresh and logout stay keyed on the provider's sub",
                self.id, self.claims.user
            ));
        }
        if self.userinfo == Userinfo::Merge {
            out.push(format!(
                "provider {}: claims from the userinfo endpoint are merged at login and at each refresh",
                self.id
            ));
        }
        out
    }
}

/// Whether a URL's host is this machine: the only place plain `http` to a provider is safe.
pub(crate) fn is_loopback(u: &Url) -> bool {
    match u.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(d)) => {
            d.eq_ignore_ascii_case("localhost") || d.to_ascii_lowercase().ends_with(".localhost")
        }
        None => false,
    }
}

fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// Validate every `[[providers]]` table. `prefix`: the gateway prefix, where default
/// callbacks are.
pub(super) fn providers(
    rep: &mut Reporter,
    list: &[file::Provider],
    prefix: &str,
) -> Vec<ProviderSettings> {
    let mut out = Vec::new();
    let mut ids = HashSet::new();
    let several = list.len() > 1;
    let mut callbacks: Vec<(String, usize)> = Vec::new();
    for (i, p) in list.iter().enumerate() {
        let id = p.id.get_ref();
        if !valid_id(id) {
            rep.error(
                format!("providers[{i}].id"),
                span(&p.id),
                format!("provider id {id:?} must be 1 to {MAX_ID_LEN} of A-Z a-z 0-9 - _ . (it names the callback path)"),
            );
        } else if !ids.insert(id.clone()) {
            rep.error(
                format!("providers[{i}].id"),
                span(&p.id),
                format!("duplicate provider id {id:?}"),
            );
        }
        let at = Place { i, several, prefix };
        if let Some(settings) = provider(rep, &at, p, &mut callbacks) {
            out.push(settings);
        }
    }
    callback_clashes(rep, list, &callbacks);
    issuer_clashes(rep, list, &out);
    out
}

/// Where a provider is: its index, whether there are several, the gateway prefix.
struct Place<'a> {
    i: usize,
    several: bool,
    prefix: &'a str,
}

/// One provider; `None` when its issuer is unusable (reported). Its callback path is added
/// to `callbacks`.
fn provider(
    rep: &mut Reporter,
    at: &Place,
    p: &file::Provider,
    callbacks: &mut Vec<(String, usize)>,
) -> Option<ProviderSettings> {
    let i = at.i;
    let key = |k: &str| format!("providers[{i}].{k}");
    let id = p.id.get_ref();
    let issuer = issuer(rep, i, p);
    let client_secret = secret_value(
        rep,
        &key("client_secret"),
        &p.client_secret,
        &key("client_secret_file"),
        &p.client_secret_file,
    );
    let callback = if at.several {
        format!("callback/{id}")
    } else {
        "callback".to_string()
    };
    match &p.redirect_url {
        None => callbacks.push((format!("{}{callback}", at.prefix), i)),
        Some(r) => match Url::parse(r.get_ref()) {
            Ok(u) if matches!(u.scheme(), "http" | "https") => {
                callbacks.push((u.path().to_string(), i));
            }
            _ => rep.error(
                key("redirect_url"),
                span(r),
                "must be an absolute http(s) URL ending in the gateway prefix + \"callback\"",
            ),
        },
    }
    if let Some(algs) = &p.algorithms {
        for (j, a) in algs.iter().enumerate() {
            if !super::defaults::ALGORITHMS.contains(&a.get_ref().as_str()) {
                rep.error(format!("providers[{i}].algorithms[{j}]"), span(a), format!("{:?} is not an allowed algorithm (asymmetric only: RS256, PS256, ES256, EdDSA, ...)", a.get_ref()));
            }
        }
    }
    let scopes = p
        .scopes
        .clone()
        .unwrap_or_else(|| DEFAULT_SCOPES.iter().map(|s| s.to_string()).collect());
    if !scopes.iter().any(|s| s == "openid") {
        rep.error(key("scopes"), span(&p.id), "scopes must include \"openid\"");
    }
    let t = timings(rep, i, p);
    let opaque_token_prefix = opaque_token_prefix(rep, i, p);
    let (logout_method, userinfo) = modes(rep, i, p);
    let trusted_audiences = trusted_audiences(rep, i, p);
    let tls = ProviderTls {
        ca_der: p
            .ca_file
            .as_ref()
            .and_then(|f| load_ca(rep, &key("ca_file"), f)),
        system_trust_store: p.system_trust_store.unwrap_or(DEFAULT_SYSTEM_TRUST_STORE),
    };
    Some(ProviderSettings {
        id: id.clone(),
        display_name: p.display_name.clone().unwrap_or_else(|| id.clone()),
        issuer: issuer?,
        client_id: p.client_id.get_ref().clone(),
        client_secret,
        scopes,
        redirect_url: p.redirect_url.as_ref().map(|r| r.get_ref().clone()),
        callback,
        logout_method,
        require_at_jwt: p.require_at_jwt.unwrap_or(DEFAULT_REQUIRE_AT_JWT),
        introspect_opaque_tokens: p
            .introspect_opaque_tokens
            .unwrap_or(super::defaults::INTROSPECT_OPAQUE_TOKENS),
        introspection_cache_ttl: t.introspection_cache_ttl,
        introspection_inactive_ttl: t.introspection_inactive_ttl,
        opaque_token_prefix,
        introspection_requires_audience: p
            .introspection_requires_audience
            .unwrap_or(DEFAULT_INTROSPECTION_REQUIRES_AUDIENCE),
        extra_auth_params: p
            .extra_auth_params
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        algorithms: p
            .algorithms
            .as_ref()
            .map(|a| a.iter().map(|s| s.get_ref().clone()).collect()),
        clock_skew: t.clock_skew,
        refresh_interval: t.refresh_interval,
        max_refresh_failures: t.max_refresh_failures,
        jwks_refetch_cooldown: DEFAULT_JWKS_REFETCH_COOLDOWN,
        claims: claim_names(p),
        trusted_audiences,
        userinfo,
        tls,
    })
}

/// https, or http on this machine only.
fn issuer(rep: &mut Reporter, i: usize, p: &file::Provider) -> Option<String> {
    match Url::parse(p.issuer.get_ref()) {
        Ok(u) if u.scheme() == "https" || (u.scheme() == "http" && is_loopback(&u)) => {
            Some(p.issuer.get_ref().clone())
        }
        Ok(_) => {
            rep.error(
                format!("providers[{i}].issuer"),
                span(&p.issuer),
                "issuer must be an https:// URL (http:// only on this machine: localhost, 127.0.0.1, [::1])",
            );
            None
        }
        Err(e) => {
            rep.error(
                format!("providers[{i}].issuer"),
                span(&p.issuer),
                format!("invalid URL {:?}: {e}", p.issuer.get_ref()),
            );
            None
        }
    }
}

/// A provider's refresh and introspection timings.
struct Timings {
    clock_skew: Duration,
    refresh_interval: Duration,
    max_refresh_failures: u32,
    introspection_cache_ttl: Duration,
    introspection_inactive_ttl: Duration,
}

fn timings(rep: &mut Reporter, i: usize, p: &file::Provider) -> Timings {
    let key = |k: &str| format!("providers[{i}].{k}");
    let clock_skew = duration(rep, &key("clock_skew"), &p.clock_skew, DEFAULT_CLOCK_SKEW);
    let refresh_interval = duration(
        rep,
        &key("refresh_interval"),
        &p.refresh_interval,
        DEFAULT_REFRESH_INTERVAL,
    );
    let max_refresh_failures = match &p.max_refresh_failures {
        None => DEFAULT_MAX_REFRESH_FAILURES,
        Some(v) if (1..=MAX_MAX_REFRESH_FAILURES).contains(v.get_ref()) => *v.get_ref() as u32,
        Some(v) => {
            rep.error(
                key("max_refresh_failures"),
                span(v),
                format!("must be between 1 (the first failure) and {MAX_MAX_REFRESH_FAILURES}"),
            );
            DEFAULT_MAX_REFRESH_FAILURES
        }
    };
    let introspection_cache_ttl = duration(
        rep,
        &key("introspection_cache_ttl"),
        &p.introspection_cache_ttl,
        DEFAULT_INTROSPECTION_CACHE_TTL,
    );
    let introspection_inactive_ttl = duration(
        rep,
        &key("introspection_inactive_ttl"),
        &p.introspection_inactive_ttl,
        DEFAULT_INTROSPECTION_INACTIVE_TTL,
    );
    if introspection_inactive_ttl > MAX_INTROSPECTION_INACTIVE_TTL {
        rep.error(
            key("introspection_inactive_ttl"),
            p.introspection_inactive_ttl.as_ref().and_then(span),
            format!(
                "at most {}s: a token revoked and reissued must not wait longer",
                MAX_INTROSPECTION_INACTIVE_TTL.as_secs()
            ),
        );
    }
    Timings {
        clock_skew,
        refresh_interval,
        max_refresh_failures,
        introspection_cache_ttl,
        introspection_inactive_ttl,
    }
}

fn opaque_token_prefix(rep: &mut Reporter, i: usize, p: &file::Provider) -> Option<String> {
    let key = format!("providers[{i}].opaque_token_prefix");
    let prefix = p.opaque_token_prefix.as_ref().and_then(|v| {
        if v.get_ref().is_empty() {
            rep.error(&key, span(v), "must not be empty");
            None
        } else {
            Some(v.get_ref().clone())
        }
    });
    if prefix.is_some()
        && !p
            .introspect_opaque_tokens
            .unwrap_or(super::defaults::INTROSPECT_OPAQUE_TOKENS)
    {
        rep.error(
            &key,
            p.opaque_token_prefix.as_ref().and_then(span),
            "only used with introspect_opaque_tokens = true",
        );
    }
    prefix
}

/// `logout_method` and `userinfo`.
fn modes(rep: &mut Reporter, i: usize, p: &file::Provider) -> (LogoutMethod, Userinfo) {
    let logout_method = match p.logout_method.as_ref().map(|m| (m.get_ref().as_str(), m)) {
        None | Some(("post", _)) => LogoutMethod::Post,
        Some(("get", _)) => LogoutMethod::Get,
        Some((other, m)) => {
            rep.error(
                format!("providers[{i}].logout_method"),
                span(m),
                format!("{other:?}: expected \"post\" or \"get\""),
            );
            LogoutMethod::Post
        }
    };
    let userinfo = match p.userinfo.as_ref().map(|m| (m.get_ref().as_str(), m)) {
        None | Some(("off", _)) => Userinfo::Off,
        Some(("merge", _)) => Userinfo::Merge,
        Some((other, m)) => {
            rep.error(
                format!("providers[{i}].userinfo"),
                span(m),
                format!("{other:?}: expected \"off\" or \"merge\""),
            );
            Userinfo::Off
        }
    };
    (logout_method, userinfo)
}

fn trusted_audiences(rep: &mut Reporter, i: usize, p: &file::Provider) -> Vec<String> {
    let mut out = Vec::new();
    for (j, a) in p.trusted_audiences.iter().flatten().enumerate() {
        if a.get_ref().is_empty() || a.get_ref() == p.client_id.get_ref() {
            rep.error(
                format!("providers[{i}].trusted_audiences[{j}]"),
                span(a),
                "list the other audiences an ID token may name (not empty, not client_id)",
            );
        } else {
            out.push(a.get_ref().clone());
        }
    }
    out
}

/// Two providers answering at one callback address could not tell whose code came back.
fn callback_clashes(rep: &mut Reporter, list: &[file::Provider], callbacks: &[(String, usize)]) {
    // The callback accepts a request path that ends the login's redirect path (a front proxy
    // may strip a path prefix), so paths that end one another are one address.
    for (n, (path, i)) in callbacks.iter().enumerate() {
        let clash = callbacks[..n]
            .iter()
            .find(|(p, _)| p.ends_with(path.as_str()) || path.ends_with(p.as_str()));
        if let Some((other, first)) = clash {
            let at = list[*i]
                .redirect_url
                .as_ref()
                .or(list[*first].redirect_url.as_ref());
            rep.error(
                format!("providers[{i}].redirect_url"),
                at.and_then(span),
                format!("providers[{first}] answers at {other} and providers[{i}] at {path}: one callback address for two providers; give each its own (the default .../callback/<id>) so one provider's answer cannot be taken for another's"),
            );
        }
    }
}

/// Two providers with one issuer could not be told apart.
fn issuer_clashes(rep: &mut Reporter, list: &[file::Provider], out: &[ProviderSettings]) {
    // Back-channel logout tokens and bearer tokens name their issuer only: two providers with
    // one issuer could not be told apart (the first would always be taken).
    for (n, p) in out.iter().enumerate() {
        if let Some(first) = out[..n].iter().position(|q| q.issuer == p.issuer) {
            let i = list
                .iter()
                .position(|f| f.id.get_ref() == &p.id)
                .unwrap_or(n);
            rep.error(
                format!("providers[{i}].issuer"),
                span(&list[i].issuer),
                format!("providers[{first}] has the same issuer: logout and bearer tokens name only the issuer, so the two could not be told apart; use one provider per issuer"),
            );
        }
    }
}

fn claim_names(p: &file::Provider) -> ClaimNames {
    let or = |v: &Option<String>, d: &str| v.clone().unwrap_or_else(|| d.to_string());
    ClaimNames {
        user: or(&p.user_claim, super::defaults::USER_CLAIM),
        email: or(&p.email_claim, super::defaults::EMAIL_CLAIM),
        name: or(&p.name_claim, super::defaults::NAME_CLAIM),
        groups: or(&p.groups_claim, super::defaults::GROUPS_CLAIM),
        preferred_username: or(
            &p.preferred_username_claim,
            super::defaults::PREFERRED_USERNAME_CLAIM,
        ),
        trust_email: p.trust_email.unwrap_or(DEFAULT_TRUST_EMAIL),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts() {
        for ok in [
            "http://127.0.0.1:9/",
            "http://localhost/",
            "http://[::1]/",
            "http://a.localhost/",
        ] {
            assert!(is_loopback(&Url::parse(ok).unwrap()), "{ok}");
        }
        for no in [
            "http://10.0.0.1/",
            "http://keycloak/",
            "http://localhost.evil.example/",
            "http://127.0.0.1.nip.io/",
        ] {
            assert!(!is_loopback(&Url::parse(no).unwrap()), "{no}");
        }
    }

    #[test]
    fn provider_ids() {
        assert!(valid_id("keycloak-prod_1.eu"));
        for bad in ["", "a/b", "a b", "ü", &"x".repeat(65)] {
            assert!(!valid_id(bad), "{bad:?}");
        }
    }
}
