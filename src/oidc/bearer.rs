//! Bearer access tokens on API routes.
//!
//! `Authorization: Bearer <JWT>` is verified against the JWKS of the provider whose issuer
//! the token names (dispatch by `iss`, among the providers the route accepts), with the
//! rules of [`crate::jwt::verify_access_token`]. Verified tokens are cached by a hash of the
//! token until their `exp` at the latest, so a client repeating its token costs one hash and
//! one map lookup; the cache is bounded and swept. Opaque tokens are introspected (RFC 7662)
//! at providers configured for it; an active answer is cached for `introspection_cache_ttl`
//! at most, an inactive one never, and an unreachable endpoint is a 503, never "allow".

use std::sync::Arc;

use dashmap::DashMap;
use http::HeaderValue;

use super::provider::Provider;
use crate::identity::IdentityHeaders;
use crate::jwt::{self, AccessTokenRules, JwtError};
use crate::session::crypto::sha256;
use crate::session::model::now_unix;
use crate::session::Claims;

/// Why the request's credentials cannot be read as one bearer token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Presented {
    /// Two `Authorization` headers, or an `access_token` in the query (RFC 6750 §2.3 allows
    /// it, but a token in a URL ends up in logs and histories).
    Ambiguous,
    /// An `Authorization` header that is not `Bearer <token>`.
    NotBearer,
}

/// The bearer token of a request (its headers and query), if it presents one.
pub fn presented_token<'a>(
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
pub struct BearerIdentity {
    pub provider: String,
    pub claims: Claims,
    pub headers: Vec<(crate::out_header::OutName, HeaderValue)>,
    pub expires_at: u64,
}

pub struct BearerVerifier {
    providers: Vec<Arc<Provider>>,
    headers: IdentityHeaders,
    cache: DashMap<[u8; 32], Arc<BearerIdentity>>,
    max_entries: usize,
}

impl BearerVerifier {
    pub fn new(
        providers: Vec<Arc<Provider>>,
        headers: IdentityHeaders,
        max_entries: usize,
    ) -> Self {
        Self {
            providers,
            headers,
            cache: DashMap::new(),
            max_entries,
        }
    }

    /// Verify `token` for a route that accepts `audiences` from `accepted` providers (empty:
    /// any configured provider). The cache key includes the route's audiences and providers:
    /// a token verified for one API is not thereby valid for another.
    pub async fn verify(
        &self,
        token: &str,
        audiences: &[String],
        accepted: &[String],
    ) -> Result<Arc<BearerIdentity>, JwtError> {
        let mut keyed = Vec::with_capacity(token.len() + 64);
        keyed.extend_from_slice(token.as_bytes());
        for a in audiences.iter().chain(accepted) {
            keyed.push(0);
            keyed.extend_from_slice(a.as_bytes());
        }
        let key = sha256(&keyed);
        let now = now_unix();
        if let Some(hit) = self.cache.get(&key) {
            if hit.expires_at > now {
                return Ok(hit.clone());
            }
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
        let algs = provider.algorithms();
        let rules = AccessTokenRules {
            issuer: &provider.settings.issuer,
            audiences,
            algorithms: &algs,
            leeway_secs: provider.settings.clock_skew.as_secs(),
            require_at_jwt: provider.settings.require_at_jwt,
        };
        let c = jwt::verify_access_token(&provider.jwks, token, &rules).await?;
        let as_id = jwt::IdTokenClaims {
            iss: c.iss.clone(),
            sub: c.sub.clone(),
            aud: c.aud.clone(),
            exp: c.exp,
            iat: c.iat.unwrap_or(0),
            nonce: None,
            azp: None,
            sid: None,
            other: c.other.clone(),
        };
        let claims = provider.settings.claims.map(&as_id);
        let identity = Arc::new(BearerIdentity {
            provider: provider.settings.id.clone(),
            headers: self.headers.values(&provider.settings.id, &claims),
            claims,
            expires_at: c.exp,
        });
        if self.cache.len() < self.max_entries {
            self.cache.insert(key, identity.clone());
        }
        Ok(identity)
    }

    /// An opaque token: ask the providers configured for introspection (never any other:
    /// that would hand a token to a party it was not issued by).
    async fn introspect(
        &self,
        key: [u8; 32],
        token: &str,
        audiences: &[String],
        accepted: &[String],
    ) -> Result<Arc<BearerIdentity>, JwtError> {
        let candidates = self.providers.iter().filter(|p| {
            p.settings.introspect_opaque_tokens
                && (accepted.is_empty() || accepted.contains(&p.settings.id))
        });
        let mut last = JwtError::Malformed;
        for provider in candidates {
            let answer = match provider.introspect(token).await {
                Ok(Some(a)) => a,
                Ok(None) => {
                    last = JwtError::Inactive;
                    continue;
                }
                Err(e) => return Err(JwtError::IntrospectionUnavailable(e.to_string())),
            };
            let str_of = |k: &str| answer.get(k).and_then(|v| v.as_str()).map(str::to_string);
            // RFC 7662: `aud` is optional; when present it must name this route's API.
            if let Some(aud) = answer.get("aud") {
                let aud: jwt::Audience =
                    serde_json::from_value(aud.clone()).map_err(|_| JwtError::InvalidAudience)?;
                if !audiences.iter().any(|a| aud.contains(a)) {
                    return Err(JwtError::InvalidAudience);
                }
            }
            if str_of("iss").is_some_and(|iss| iss != provider.settings.issuer) {
                return Err(JwtError::InvalidIssuer);
            }
            let now = now_unix();
            let exp = answer.get("exp").and_then(|v| v.as_u64());
            if exp.is_some_and(|e| e <= now) {
                return Err(JwtError::Expired);
            }
            let cache_until = now + provider.settings.introspection_cache_ttl.as_secs();
            let expires_at = exp.map_or(cache_until, |e| e.min(cache_until));
            let sub = str_of("sub")
                .or_else(|| str_of("client_id"))
                .unwrap_or_default();
            let as_id = jwt::IdTokenClaims {
                iss: provider.settings.issuer.clone(),
                sub,
                aud: jwt::Audience::Many(Vec::new()),
                exp: expires_at,
                iat: 0,
                nonce: None,
                azp: None,
                sid: None,
                other: answer.clone(),
            };
            let claims = provider.settings.claims.map(&as_id);
            let identity = Arc::new(BearerIdentity {
                provider: provider.settings.id.clone(),
                headers: self.headers.values(&provider.settings.id, &claims),
                claims,
                expires_at,
            });
            if self.cache.len() < self.max_entries {
                self.cache.insert(key, identity.clone());
            }
            return Ok(identity);
        }
        Err(last)
    }

    /// Drop expired entries.
    pub fn sweep(&self) {
        let now = now_unix();
        self.cache.retain(|_, v| v.expires_at > now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
