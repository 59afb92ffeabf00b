//! Bearer access tokens on API routes.
//!
//! `Authorization: Bearer <JWT>` is verified against the JWKS of the provider whose issuer
//! the token names (dispatch by `iss`, among the providers the route accepts), with the
//! rules of [`crate::jwt::verify_access_token`]. Verified tokens are cached by a hash of the
//! token until their `exp` at the latest, so a client repeating its token costs one hash and
//! one map lookup; the cache is bounded and swept. A token whose key is cached verifies
//! whatever the provider's state; one that cannot be checked because of an outage (the
//! provider never reached since start, or unavailable with the token's key not cached) is
//! [`JwtError::JwksUnavailable`], a 503, never a 401 that would make the client drop it.
//!
//! Opaque tokens are introspected (RFC 7662) at exactly one provider: the only introspecting
//! provider the route accepts, or the one whose `opaque_token_prefix` the token carries; a
//! token no provider can claim is refused without being sent anywhere. Answers are
//! remembered per (provider, token) in a bounded map, active ones for
//! `introspection_cache_ttl` (never past `exp`), inactive ones for
//! `introspection_inactive_ttl`, so a repeated bogus value costs one call per interval;
//! concurrent requests with one value share one call, and at most
//! [`MAX_INTROSPECTIONS_IN_FLIGHT`] calls per provider are in flight. A request that cannot
//! get one within [`INTROSPECTION_QUEUE_WAIT`], or an unreachable endpoint, is a 503, never
//! "allow". An answer without `aud` is refused on a route that names audiences unless the
//! provider has `introspection_requires_audience = false`.

use std::sync::Arc;
use std::time::Duration;

use http::HeaderValue;

use super::provider::Provider;
use crate::cache::{Cache, Tick};
use crate::crypto::now_unix;
use crate::identity::Claims;
use crate::identity::IdentityHeaders;
use crate::jwt::{self, AccessTokenRules, JwtError};

/// An introspection answer's NumericDate (RFC 7519 §2: any JSON number, `1000.0` too);
/// anything else is refused rather than ignored.
fn numeric_date(v: Option<&serde_json::Value>) -> Result<Option<u64>, JwtError> {
    match v {
        None => Ok(None),
        Some(serde_json::Value::Number(n)) => match (n.as_u64(), n.as_f64()) {
            (Some(u), _) => Ok(Some(u)),
            (None, Some(f)) if f.is_finite() && f >= 0.0 => Ok(Some(f as u64)),
            _ => Ok(Some(0)),
        },
        Some(_) => Err(JwtError::InvalidClaims("exp is not a number".into())),
    }
}

/// Why the request's credentials cannot be read as one bearer token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Presented {
    /// Two `Authorization` headers, or an `access_token` in the query (RFC 6750 §2.3 allows
    /// it, but a token in a URL ends up in logs and histories).
    Ambiguous,
    /// An `Authorization` header that is not `Bearer <token>`.
    NotBearer,
}

/// The bearer token of a request (its headers and query), if it presents one.
pub(crate) fn presented_token<'a>(
    headers: &'a http::HeaderMap,
    query: Option<&str>,
) -> Result<Option<&'a str>, Presented> {
    let mut authz = headers.get_all(http::header::AUTHORIZATION).iter();
    let (first, second) = (authz.next(), authz.next());
    let in_query = query.is_some_and(|q| {
        url::form_urlencoded::parse(q.as_bytes()).any(|(k, _)| k == "access_token")
    });
    if second.is_some() || in_query {
        return Err(Presented::Ambiguous);
    }
    let Some(value) = first else {
        return Ok(None);
    };
    value
        .to_str()
        .ok()
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, t)| t.trim())
        .filter(|t| !t.is_empty())
        .map(Some)
        .ok_or(Presented::NotBearer)
}

/// The identity a verified bearer token vouches for, headers ready to insert.
#[derive(Debug)]
pub(crate) struct BearerIdentity {
    pub(crate) provider: String,
    pub(crate) claims: Claims,
    pub(crate) headers: Box<[(crate::out_header::OutName, HeaderValue)]>,
}

/// Introspection calls in flight at one provider, at most: a flood of opaque values is
/// queued here, not passed on to the provider.
pub(crate) const MAX_INTROSPECTIONS_IN_FLIGHT: usize = 16;
/// How long a request waits for one of those calls before it is answered 503.
pub(crate) const INTROSPECTION_QUEUE_WAIT: Duration = Duration::from_secs(1);

/// A provider's introspection answer about one token, reused across routes.
#[derive(Clone)]
enum Answer {
    Active(Arc<serde_json::Map<String, serde_json::Value>>),
    Inactive,
}

pub(crate) struct BearerVerifier {
    providers: Vec<Arc<Provider>>,
    headers: IdentityHeaders,
    /// Verified tokens by (route audiences, accepted providers, token), until they expire.
    cache: Cache<[u8; 32], Arc<BearerIdentity>>,
    /// Introspection answers by (provider, token): active ones for `introspection_cache_ttl`
    /// (never past `exp`), inactive ones for `introspection_inactive_ttl`. Concurrent
    /// requests with the same value share one call (its `load`).
    answers: Cache<[u8; 32], Answer, Result<Answer, JwtError>>,
    /// Inactive answers, apart: a flood of made-up values fills this one, never the room
    /// that active tokens' answers need.
    inactive: Cache<[u8; 32], ()>,
    /// Per provider (same order as `providers`): introspection calls in flight.
    permits: Vec<Arc<tokio::sync::Semaphore>>,
}

/// The cache key of `token` for a route's `lists` (audiences, providers): SHA-256 over each
/// list as its length and each item as its length and bytes, then the token. Length-prefixed,
/// so no choice of strings makes two different lists hash alike; fed to the hash piece by
/// piece, so the token (~1 KB) is not copied into a buffer allocated per request.
fn cache_key(lists: &[&[String]], token: &str) -> [u8; 32] {
    let mut h = crate::crypto::PartsHash::new();
    for items in lists {
        h.word(items.len() as u64);
        for s in *items {
            h.part(s.as_bytes());
        }
    }
    h.last(token.as_bytes())
}

impl BearerVerifier {
    pub(crate) fn new(
        providers: Vec<Arc<Provider>>,
        headers: IdentityHeaders,
        max_entries: usize,
    ) -> Self {
        let permits = providers
            .iter()
            .map(|_| Arc::new(tokio::sync::Semaphore::new(MAX_INTROSPECTIONS_IN_FLIGHT)))
            .collect();
        Self {
            providers,
            headers,
            cache: Cache::new(max_entries),
            answers: Cache::new(max_entries),
            inactive: Cache::new(max_entries),
            permits,
        }
    }

    /// Verify `token` for a route that accepts `audiences` from `accepted` providers (empty:
    /// any configured provider). The cache key includes the route's audiences and providers:
    /// a token verified for one API is not thereby valid for another.
    pub(crate) async fn verify(
        &self,
        token: &str,
        audiences: &[String],
        accepted: &[String],
    ) -> Result<Arc<BearerIdentity>, JwtError> {
        let key = cache_key(&[audiences, accepted], token);
        if let Some(hit) = self.cache.get(&key) {
            return Ok(hit);
        }
        let Some(iss) = jwt::unverified_issuer(token) else {
            return self.introspect(key, token, audiences, accepted).await;
        };
        let provider = self
            .providers
            .iter()
            .find(|p| {
                p.settings.issuer == iss
                    && (accepted.is_empty() || accepted.contains(&p.settings.id))
            })
            .ok_or(JwtError::UnknownIssuer)?;
        // Never reached (down since the gateway started): neither its keys nor its algorithms
        // are known, so nothing can be said about the token: 503, not 401, or the client
        // would throw a good token away.
        if provider.discovery().is_none() {
            return Err(JwtError::JwksUnavailable(format!(
                "provider {} not reached yet",
                provider.id()
            )));
        }
        let algs = provider.algorithms();
        let rules = AccessTokenRules {
            issuer: &provider.settings.issuer,
            audiences,
            algorithms: &algs,
            leeway_secs: provider.settings.clock_skew.as_secs(),
            require_at_jwt: provider.settings.require_at_jwt,
        };
        let c = match jwt::verify_access_token(&provider.jwks, token, &rules).await {
            // A key we do not hold while the provider is unavailable may be one it rotated to
            // meanwhile: cannot tell, so 503. Tokens signed by a cached key keep verifying.
            Err(JwtError::NoMatchingKey) if !provider.is_ready() => {
                return Err(JwtError::JwksUnavailable(format!(
                    "provider {} unavailable and no cached key matches",
                    provider.id()
                )))
            }
            other => other?,
        };
        self.remember(key, provider, &c.sub, &c.other, c.exp)
    }

    /// The identity `provider` vouches for (`sub` and the token's other claims), cached under
    /// `key` until `expires_at` while the cache has room.
    fn remember(
        &self,
        key: [u8; 32],
        provider: &Provider,
        sub: &str,
        other: &serde_json::Map<String, serde_json::Value>,
        expires_at: u64,
    ) -> Result<Arc<BearerIdentity>, JwtError> {
        let claims = provider
            .settings
            .claims
            .map_claims(sub, other)
            .map_err(|e| JwtError::InvalidClaims(e.to_string()))?;
        let identity = Arc::new(BearerIdentity {
            provider: provider.settings.id.clone(),
            headers: self.headers.values(&provider.settings.id, &claims),
            claims,
        });
        self.cache
            .insert(key, identity.clone(), Tick::at_unix(expires_at));
        Ok(identity)
    }

    /// The one provider an opaque token may be shown to, among those the route accepts that
    /// introspect: the only one, or the one whose `opaque_token_prefix` the token starts
    /// with. Anything else is refused before the token leaves the gateway: handing it to
    /// every provider in turn would give one provider's tokens to another.
    fn introspector(&self, token: &str, accepted: &[String]) -> Result<usize, JwtError> {
        let prefixed = |p: &Provider| {
            p.settings
                .opaque_token_prefix
                .as_deref()
                .map(|prefix| token.starts_with(prefix))
        };
        let candidates: Vec<(usize, &Arc<Provider>)> = self
            .providers
            .iter()
            .enumerate()
            .filter(|(_, p)| {
                p.settings.introspect_opaque_tokens
                    && (accepted.is_empty() || accepted.contains(&p.settings.id))
            })
            .collect();
        match candidates.as_slice() {
            // No provider introspects for this route: an opaque value cannot be verified.
            [] => Err(JwtError::Malformed),
            // The only one, unless it has a prefix this token lacks.
            [(i, p)] if prefixed(p) != Some(false) => Ok(*i),
            [_] => Err(JwtError::UnknownIssuer),
            // Several: exactly one prefix must match (a provider without a prefix matches
            // nothing here; `authgate check` refuses such a route).
            several => {
                let mut matching = several.iter().filter(|(_, p)| prefixed(p) == Some(true));
                match (matching.next(), matching.next()) {
                    (Some((i, _)), None) => Ok(*i),
                    _ => Err(JwtError::UnknownIssuer),
                }
            }
        }
    }

    /// An opaque token: introspected at the one provider it belongs to (never any other),
    /// the answer remembered, then checked against this route.
    async fn introspect(
        &self,
        key: [u8; 32],
        token: &str,
        audiences: &[String],
        accepted: &[String],
    ) -> Result<Arc<BearerIdentity>, JwtError> {
        let at = self.introspector(token, accepted)?;
        let provider = &self.providers[at];
        let answer = self.answer(at, token).await?;
        let Answer::Active(answer) = answer else {
            return Err(JwtError::Inactive);
        };
        let str_of = |k: &str| answer.get(k).and_then(|v| v.as_str()).map(str::to_string);
        // A token bound to a key (DPoP, mTLS: `cnf`) is not a bearer token, nor is a
        // refresh token where the provider says so.
        if answer.contains_key("cnf")
            || str_of("token_type").is_some_and(|t| {
                !t.eq_ignore_ascii_case("bearer") && !t.eq_ignore_ascii_case("access_token")
            })
        {
            return Err(JwtError::NotAnAccessToken);
        }
        // RFC 7662: `aud` is optional; when present it must name this route's API, and when
        // absent the answer cannot show the token is for this API (unless the provider is
        // configured as not sending it: introspection_requires_audience = false).
        match answer.get("aud") {
            Some(aud) => {
                let aud: jwt::Audience =
                    serde_json::from_value(aud.clone()).map_err(|_| JwtError::InvalidAudience)?;
                if !audiences.iter().any(|a| aud.contains(a)) {
                    return Err(JwtError::InvalidAudience);
                }
            }
            None if !audiences.is_empty() && provider.settings.introspection_requires_audience => {
                return Err(JwtError::InvalidAudience);
            }
            None => {}
        }
        if str_of("iss").is_some_and(|iss| iss != provider.settings.issuer) {
            return Err(JwtError::InvalidIssuer);
        }
        let now = now_unix();
        let exp = numeric_date(answer.get("exp"))?;
        if exp.is_some_and(|e| e <= now) {
            return Err(JwtError::Expired);
        }
        let cache_until = now + provider.settings.introspection_cache_ttl.as_secs();
        let expires_at = exp.map_or(cache_until, |e| e.min(cache_until));
        // The user: `sub` (a number read as its digits, as ID tokens' string claims are);
        // a client's own token (client credentials) names no user, only `client_id`. Nobody
        // at all is not an identity.
        let sub = match answer.get("sub") {
            Some(serde_json::Value::String(s)) => s.clone(),
            Some(serde_json::Value::Number(n)) => n.to_string(),
            Some(_) => return Err(JwtError::InvalidClaims("sub is not a string".into())),
            None => str_of("client_id").unwrap_or_default(),
        };
        if sub.is_empty() {
            return Err(JwtError::InvalidClaims("neither sub nor client_id".into()));
        }
        self.remember(key, provider, &sub, &answer, expires_at)
    }

    /// What provider `at` says about `token`: remembered, joined to a call under way, or
    /// asked now (one call per value however many requests carry it at once).
    async fn answer(&self, at: usize, token: &str) -> Result<Answer, JwtError> {
        let provider = &self.providers[at];
        let key = cache_key(&[std::slice::from_ref(&provider.settings.id)], token);
        if let Some(r) = self.remembered(&key) {
            return Ok(r);
        }
        self.answers
            .load(&key, || async {
                // Answered while this request waited for the map?
                if let Some(r) = self.remembered(&key) {
                    return Ok(r);
                }
                let answer = self.ask(at, token).await?;
                let ttl = match &answer {
                    Answer::Active(_) => provider.settings.introspection_cache_ttl,
                    Answer::Inactive => provider.settings.introspection_inactive_ttl,
                };
                let mut until = Tick::now().after(ttl);
                if let Answer::Active(a) = &answer {
                    if let Ok(Some(exp)) = numeric_date(a.get("exp")) {
                        until = until.min(Tick::at_unix(exp));
                    }
                }
                match &answer {
                    Answer::Active(_) => self.answers.insert(key, answer.clone(), until),
                    Answer::Inactive => self.inactive.insert(key, (), until),
                };
                Ok(answer)
            })
            .await
    }

    fn remembered(&self, key: &[u8; 32]) -> Option<Answer> {
        if self.inactive.get(key).is_some() {
            return Some(Answer::Inactive);
        }
        self.answers.get(key)
    }

    /// One introspection call, within the provider's bound on calls in flight.
    async fn ask(&self, at: usize, token: &str) -> Result<Answer, JwtError> {
        let provider = &self.providers[at];
        let _permit =
            tokio::time::timeout(INTROSPECTION_QUEUE_WAIT, self.permits[at].acquire())
                .await
                .map_err(|_| {
                    JwtError::IntrospectionUnavailable(format!(
                        "{MAX_INTROSPECTIONS_IN_FLIGHT} introspection calls to provider {} already in flight",
                        provider.settings.id
                    ))
                })?
                .map_err(|_| JwtError::IntrospectionUnavailable("closed".into()))?;
        match provider.introspect(token).await {
            Ok(Some(a)) => Ok(Answer::Active(Arc::new(a))),
            Ok(None) => Ok(Answer::Inactive),
            Err(e) => Err(JwtError::IntrospectionUnavailable(e.to_string())),
        }
    }

    /// Drop expired entries.
    pub(crate) fn sweep(&self) {
        self.cache.sweep(|_| true);
        self.answers.sweep(|_| true);
        self.inactive.sweep(|_| true);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The key the cache had when it was built from one buffer: the same bytes, the same
    /// key, so a verified token stays verified for exactly the routes it was.
    #[test]
    fn cache_keys_are_the_hash_of_the_lists_and_the_token() {
        fn concatenated(lists: &[&[String]], token: &str) -> [u8; 32] {
            let mut buf = Vec::new();
            for items in lists {
                buf.extend_from_slice(&(items.len() as u64).to_le_bytes());
                for s in *items {
                    buf.extend_from_slice(&(s.len() as u64).to_le_bytes());
                    buf.extend_from_slice(s.as_bytes());
                }
            }
            buf.extend_from_slice(token.as_bytes());
            crate::crypto::sha256(&buf)
        }
        let v = |xs: &[&str]| xs.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        let cases = [
            (v(&[]), v(&[]), "t"),
            (v(&["api"]), v(&[]), "h.p.s"),
            (v(&["a", "b"]), v(&["corp"]), "h.p.s"),
            (v(&["ab"]), v(&["corp"]), "h.p.s"),
            (v(&["corp"]), v(&["a", "b"]), "h.p.s"),
            (v(&[""]), v(&[]), "h.p.s"),
            (v(&[]), v(&[""]), "h.p.s"),
        ];
        let mut seen = std::collections::HashSet::new();
        for (aud, acc, token) in &cases {
            let key = cache_key(&[aud, acc], token);
            assert_eq!(key, concatenated(&[aud, acc], token));
            assert!(seen.insert(key), "{aud:?} {acc:?}: a split of another case");
        }
        assert_eq!(
            cache_key(&[&v(&["corp"])], "opaque"),
            concatenated(&[&v(&["corp"])], "opaque")
        );
    }

    fn req(authz: &[&str], uri: &str) -> pingora::http::RequestHeader {
        let mut r = pingora::http::RequestHeader::build("GET", uri.as_bytes(), None).unwrap();
        for a in authz {
            r.append_header("authorization", *a).unwrap();
        }
        r
    }

    fn tok(r: &pingora::http::RequestHeader) -> Result<Option<&str>, Presented> {
        presented_token(&r.headers, r.uri.query())
    }

    #[test]
    fn introspection_dates() {
        let d = |v: serde_json::Value| numeric_date(Some(&v));
        assert_eq!(d(serde_json::json!(1000)), Ok(Some(1000)));
        assert_eq!(d(serde_json::json!(1000.0)), Ok(Some(1000)));
        assert_eq!(d(serde_json::json!(1000.9)), Ok(Some(1000)));
        assert_eq!(
            d(serde_json::json!(-5)),
            Ok(Some(0)),
            "a negative date is long past"
        );
        assert!(d(serde_json::json!("1000")).is_err());
        assert!(d(serde_json::json!(null)).is_err());
        assert_eq!(numeric_date(None), Ok(None));
    }

    #[test]
    fn presented_tokens() {
        assert_eq!(tok(&req(&[], "/")), Ok(None));
        assert_eq!(tok(&req(&["Bearer abc"], "/")), Ok(Some("abc")));
        assert_eq!(tok(&req(&["bearer  abc "], "/")), Ok(Some("abc")));
        assert_eq!(tok(&req(&["Basic YTpi"], "/")), Err(Presented::NotBearer));
        assert_eq!(tok(&req(&["Bearer"], "/")), Err(Presented::NotBearer));
        assert_eq!(
            tok(&req(&["Bearer a", "Bearer b"], "/")),
            Err(Presented::Ambiguous)
        );
        assert_eq!(
            tok(&req(&[], "/x?access_token=abc")),
            Err(Presented::Ambiguous)
        );
    }

    use std::sync::atomic::{AtomicUsize, Ordering};

    /// What a fake provider's introspection endpoint saw.
    #[derive(Default)]
    struct Seen {
        calls: AtomicUsize,
        in_flight: AtomicUsize,
        max_in_flight: AtomicUsize,
        tokens: std::sync::Mutex<Vec<String>>,
    }

    /// A provider with discovery, a JWKS and an introspection endpoint that answers by the
    /// token's name: `*active*` active with `aud: api`, `*noaud*` active without `aud`,
    /// `*refresh*` a refresh token, `*bound*` a DPoP-bound token, `*slow*` inactive after
    /// 1.5 s, anything else inactive.
    async fn fake_provider() -> (String, Arc<Seen>) {
        fake_provider_with(|_| {}).await
    }

    /// [`fake_provider`] with its discovery document edited.
    async fn fake_provider_with(edit: impl FnOnce(&mut serde_json::Value)) -> (String, Arc<Seen>) {
        use http_body_util::BodyExt;
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let issuer = format!("http://{}", l.local_addr().unwrap());
        let seen = Arc::new(Seen::default());
        let pair = rcgen::KeyPair::generate().unwrap();
        let key = jsonwebtoken::EncodingKey::from_ec_pem(pair.serialize_pem().as_bytes()).unwrap();
        let jwk = jsonwebtoken::jwk::Jwk::from_encoding_key(&key, jsonwebtoken::Algorithm::ES256)
            .unwrap();
        let jwks = serde_json::json!({ "keys": [jwk] }).to_string();
        let discovery = serde_json::json!({
            "issuer": issuer,
            "authorization_endpoint": format!("{issuer}/auth"),
            "token_endpoint": format!("{issuer}/token"),
            "jwks_uri": format!("{issuer}/jwks"),
            "introspection_endpoint": format!("{issuer}/introspect"),
            "id_token_signing_alg_values_supported": ["ES256"],
        });
        let mut discovery = discovery;
        edit(&mut discovery);
        let discovery = discovery.to_string();
        let (s2, iss2) = (seen.clone(), issuer.clone());
        tokio::spawn(async move {
            while let Ok((s, _)) = l.accept().await {
                let (seen, issuer, jwks, discovery) =
                    (s2.clone(), iss2.clone(), jwks.clone(), discovery.clone());
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(
                        move |req: hyper::Request<hyper::body::Incoming>| {
                            let (seen, issuer, jwks, discovery) = (
                                seen.clone(),
                                issuer.clone(),
                                jwks.clone(),
                                discovery.clone(),
                            );
                            async move {
                                let body = match req.uri().path() {
                                    "/.well-known/openid-configuration" => discovery,
                                    "/jwks" => jwks,
                                    _ => {
                                        let form = req.into_body().collect().await.unwrap();
                                        let token = url::form_urlencoded::parse(&form.to_bytes())
                                            .find(|(k, _)| k == "token")
                                            .map(|(_, v)| v.into_owned())
                                            .unwrap_or_default();
                                        seen.calls.fetch_add(1, Ordering::SeqCst);
                                        let now = seen.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                                        seen.max_in_flight.fetch_max(now, Ordering::SeqCst);
                                        seen.tokens.lock().unwrap().push(token.clone());
                                        if token.contains("slow") {
                                            tokio::time::sleep(Duration::from_millis(1500)).await;
                                        }
                                        seen.in_flight.fetch_sub(1, Ordering::SeqCst);
                                        let exp = now_unix() + 300;
                                        let active = serde_json::json!({
                                            "active": true, "sub": "svc", "iss": issuer,
                                            "exp": exp, "client_id": "c", "token_type": "Bearer",
                                        });
                                        let mut a = active.as_object().unwrap().clone();
                                        if token.contains("active") {
                                            a.insert("aud".into(), "api".into());
                                        } else if token.contains("refresh") {
                                            a.insert("aud".into(), "api".into());
                                            a.insert("token_type".into(), "refresh_token".into());
                                        } else if token.contains("bound") {
                                            a.insert("aud".into(), "api".into());
                                            a.insert("cnf".into(), serde_json::json!({"jkt": "x"}));
                                        } else if !token.contains("noaud") {
                                            a = serde_json::json!({"active": false})
                                                .as_object()
                                                .unwrap()
                                                .clone();
                                        }
                                        serde_json::Value::Object(a).to_string()
                                    }
                                };
                                Ok::<_, std::convert::Infallible>(hyper::Response::new(
                                    http_body_util::Full::new(bytes::Bytes::from(body)),
                                ))
                            }
                        },
                    );
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(s), svc)
                        .await;
                });
            }
        });
        (issuer, seen)
    }

    /// A verifier over `[[providers]]` tables (each `(issuer, extra keys)`, ids p0, p1, ...),
    /// every provider refreshed (discovery and keys) before it is returned.
    async fn verifier(providers: &[(&str, &str)], max_entries: usize) -> BearerVerifier {
        let mut src = String::from("[session]\nstore = \"memory\"\n");
        for (i, (issuer, extra)) in providers.iter().enumerate() {
            src.push_str(&format!(
                "\n[[providers]]\nid = \"p{i}\"\nissuer = \"{issuer}\"\nclient_id = \"gw\"\nclient_secret = \"s\"\n{extra}\n"
            ));
        }
        let config = crate::config::parse(std::path::Path::new("t.toml"), &src)
            .unwrap_or_else(|e| panic!("{e:?}"));
        let mut list = Vec::new();
        for s in config.providers {
            let p = Arc::new(Provider::new(s, reqwest::Client::new()));
            p.refresh().await.unwrap();
            list.push(p);
        }
        BearerVerifier::new(list, config.identity_headers.clone(), max_entries)
    }

    fn calls(s: &Seen) -> usize {
        s.calls.load(Ordering::SeqCst)
    }

    fn api() -> Vec<String> {
        vec!["api".to_string()]
    }

    #[tokio::test]
    async fn opaque_tokens_go_to_their_own_provider_only() {
        let ((a, sa), (b, sb), (c, sc)) = (
            fake_provider().await,
            fake_provider().await,
            fake_provider().await,
        );
        let v = verifier(
            &[
                (
                    &a,
                    "introspect_opaque_tokens = true\nopaque_token_prefix = \"a_\"\n",
                ),
                (
                    &b,
                    "introspect_opaque_tokens = true\nopaque_token_prefix = \"b_\"\n",
                ),
                (&c, ""),
            ],
            100,
        )
        .await;
        let api = api();
        // By prefix, among all providers (the route names none).
        assert_eq!(
            v.verify("a_1", &api, &[]).await.unwrap_err(),
            JwtError::Inactive
        );
        assert_eq!(
            v.verify("b_1", &api, &[]).await.unwrap_err(),
            JwtError::Inactive
        );
        assert_eq!((calls(&sa), calls(&sb), calls(&sc)), (1, 1, 0));
        assert_eq!(*sa.tokens.lock().unwrap(), ["a_1"]);
        assert_eq!(*sb.tokens.lock().unwrap(), ["b_1"]);
        // No prefix matches: refused, sent nowhere.
        for t in ["c_1", "x", "A_1", "_a_1"] {
            assert_eq!(
                v.verify(t, &api, &[]).await.unwrap_err(),
                JwtError::UnknownIssuer,
                "{t}"
            );
        }
        // A route accepting b only: a's token is not b's to see.
        let only_b = vec!["p1".to_string()];
        assert_eq!(
            v.verify("a_2", &api, &only_b).await.unwrap_err(),
            JwtError::UnknownIssuer
        );
        assert_eq!(
            v.verify("b_2", &api, &only_b).await.unwrap_err(),
            JwtError::Inactive
        );
        // A route whose providers do not introspect: nothing to ask.
        let only_c = vec!["p2".to_string()];
        assert_eq!(
            v.verify("a_3", &api, &only_c).await.unwrap_err(),
            JwtError::Malformed
        );
        assert_eq!((calls(&sa), calls(&sb), calls(&sc)), (1, 2, 0));
        // Active tokens, each at its own provider.
        let id = v.verify("a_active", &api, &[]).await.unwrap();
        assert_eq!(id.provider, "p0");
        assert_eq!(id.claims.sub(), "svc");
        assert_eq!(
            v.verify("b_active", &api, &[]).await.unwrap().provider,
            "p1"
        );
        assert_eq!((calls(&sa), calls(&sb)), (2, 3));
    }

    #[tokio::test]
    async fn one_introspecting_provider_still_honours_its_prefix() {
        let (a, sa) = fake_provider().await;
        let v = verifier(
            &[(
                &a,
                "introspect_opaque_tokens = true\nopaque_token_prefix = \"a_\"\n",
            )],
            100,
        )
        .await;
        assert_eq!(
            v.verify("zz", &api(), &[]).await.unwrap_err(),
            JwtError::UnknownIssuer
        );
        assert_eq!(calls(&sa), 0);
        let (b, sb) = fake_provider().await;
        let v = verifier(&[(&b, "introspect_opaque_tokens = true\n")], 100).await;
        assert_eq!(
            v.verify("zz", &api(), &[]).await.unwrap_err(),
            JwtError::Inactive
        );
        assert_eq!(calls(&sb), 1);
    }

    /// Move the caches' clock on without waiting (the provider here is real, on loopback:
    /// time runs again at once, so its calls are not timed out by a paused clock).
    async fn skip(d: Duration) {
        tokio::time::pause();
        tokio::time::advance(d).await;
        tokio::time::resume();
    }

    #[tokio::test]
    async fn answers_are_remembered_and_bounded() {
        let (a, sa) = fake_provider().await;
        let v = verifier(
            &[(
                &a,
                "introspect_opaque_tokens = true\nintrospection_inactive_ttl = \"1s\"\n",
            )],
            4,
        )
        .await;
        let (api, other) = (api(), vec!["other".to_string()]);
        // One bogus value, 50 times in a row and 50 times at once: one call.
        for _ in 0..50 {
            assert_eq!(
                v.verify("bogus", &api, &[]).await.unwrap_err(),
                JwtError::Inactive
            );
        }
        let v = Arc::new(v);
        let tasks: Vec<_> = (0..50)
            .map(|_| {
                let v = v.clone();
                tokio::spawn(async move { v.verify("bogus-2", &["api".to_string()], &[]).await })
            })
            .collect();
        for t in tasks {
            assert_eq!(t.await.unwrap().unwrap_err(), JwtError::Inactive);
        }
        assert_eq!(calls(&sa), 2);
        assert_eq!(v.answers.loading(), 0, "finished flights left behind");
        // The answer is the provider's, reused across routes; the route's checks are not.
        assert!(v.verify("active", &api, &[]).await.is_ok());
        assert_eq!(
            v.verify("active", &other, &[]).await.unwrap_err(),
            JwtError::InvalidAudience
        );
        assert_eq!(calls(&sa), 3);
        // After the inactive TTL, one more call.
        skip(Duration::from_millis(1100)).await;
        assert_eq!(
            v.verify("bogus", &api, &[]).await.unwrap_err(),
            JwtError::Inactive
        );
        assert_eq!(calls(&sa), 4);
        // Bounded: distinct values beyond max_entries are answered, not remembered.
        for i in 0..10 {
            assert_eq!(
                v.verify(&format!("x{i}"), &api, &[]).await.unwrap_err(),
                JwtError::Inactive
            );
        }
        assert!(v.inactive.len() <= 4, "{}", v.inactive.len());
        assert_eq!(calls(&sa), 14);
        // That flood of made-up values leaves the active answers' room alone.
        assert!(v.verify("active-2", &api, &[]).await.is_ok());
        assert!(v.verify("active-2", &api, &[]).await.is_ok());
        assert_eq!(
            calls(&sa),
            15,
            "an active answer is remembered after the flood"
        );
        skip(Duration::from_millis(1100)).await;
        v.sweep();
        assert!(v.inactive.len() <= 1, "inactive answers outlived their TTL");
    }

    #[tokio::test]
    async fn answers_without_aud_and_non_bearer_tokens() {
        let ((a, _), (b, _)) = (fake_provider().await, fake_provider().await);
        let v = verifier(
            &[
                (&a, "introspect_opaque_tokens = true\nopaque_token_prefix = \"a_\"\n"),
                (&b, "introspect_opaque_tokens = true\nopaque_token_prefix = \"b_\"\nintrospection_requires_audience = false\n"),
            ],
            100,
        )
        .await;
        let api = api();
        assert_eq!(
            v.verify("a_noaud", &api, &[]).await.unwrap_err(),
            JwtError::InvalidAudience
        );
        assert_eq!(v.verify("b_noaud", &api, &[]).await.unwrap().provider, "p1");
        for t in ["a_refresh", "a_bound", "b_refresh", "b_bound"] {
            assert_eq!(
                v.verify(t, &api, &[]).await.unwrap_err(),
                JwtError::NotAnAccessToken,
                "{t}"
            );
        }
    }

    #[tokio::test]
    async fn introspection_calls_in_flight_are_bounded() {
        let (a, sa) = fake_provider().await;
        let v = Arc::new(verifier(&[(&a, "introspect_opaque_tokens = true\n")], 1000).await);
        // 40 distinct slow values at once: 16 calls, the other requests 503 after ~1 s.
        let started = std::time::Instant::now();
        let tasks: Vec<_> = (0..40)
            .map(|i| {
                let v = v.clone();
                tokio::spawn(async move {
                    v.verify(&format!("slow-{i}"), &["api".to_string()], &[])
                        .await
                })
            })
            .collect();
        let mut unavailable = 0;
        for t in tasks {
            match t.await.unwrap() {
                Err(JwtError::Inactive) => {}
                Err(JwtError::IntrospectionUnavailable(_)) => unavailable += 1,
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(
            sa.max_in_flight.load(Ordering::SeqCst),
            MAX_INTROSPECTIONS_IN_FLIGHT
        );
        assert_eq!(calls(&sa), MAX_INTROSPECTIONS_IN_FLIGHT);
        assert_eq!(unavailable, 40 - MAX_INTROSPECTIONS_IN_FLIGHT);
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    /// Discovery (Provider::refresh) takes no endpoint over plain http to another machine:
    /// client secrets, codes and tokens would cross the network in the clear.
    #[tokio::test]
    async fn discovery_endpoints_must_be_https_off_this_machine() {
        for name in [
            "jwks_uri",
            "token_endpoint",
            "authorization_endpoint",
            "userinfo_endpoint",
            "introspection_endpoint",
            "end_session_endpoint",
        ] {
            for (value, ok) in [
                ("http://idp.example/x", false),
                ("http://10.0.0.1/x", false),
                ("ftp://idp.example/x", false),
                ("not a url", false),
                ("https://idp.example/x", true),
                ("http://localhost:1/x", true),
            ] {
                let (issuer, _) = fake_provider_with(|d| {
                    d[name] = value.into();
                })
                .await;
                let config = crate::config::parse(
                    std::path::Path::new("t.toml"),
                    &format!(
                        "[[providers]]\nid = \"p\"\nissuer = \"{issuer}\"\nclient_id = \"gw\"\n"
                    ),
                )
                .unwrap();
                let p = Provider::new(config.providers[0].clone(), reqwest::Client::new());
                let r = p.refresh().await;
                if ok && name != "jwks_uri" {
                    assert!(r.is_ok(), "{name} = {value}: {r:?}");
                } else if !ok {
                    let Err(super::super::provider::ProviderError::BadResponse(m)) = r else {
                        panic!("{name} = {value}: {r:?}");
                    };
                    assert!(m.contains(name), "{m}");
                }
            }
        }
    }
}
