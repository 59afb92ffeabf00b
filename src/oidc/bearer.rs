//! Bearer access tokens on API routes.
//!
//! `Authorization: Bearer <JWT>` is verified against the JWKS of the provider whose issuer
//! the token names (dispatch by `iss`, among the providers the route accepts), with the
//! rules of [`crate::jwt::verify_access_token`]. Verified tokens are cached by a hash of the
//! token until their `exp` at the latest, so a client repeating its token costs one hash and
//! one map lookup; the cache is bounded and swept.

use std::sync::Arc;

use dashmap::DashMap;
use http::{HeaderName, HeaderValue};

use super::provider::Provider;
use crate::identity::IdentityHeaders;
use crate::jwt::{self, AccessTokenRules, JwtError};
use crate::session::crypto::sha256;
use crate::session::model::now_unix;
use crate::session::Claims;

/// The identity a verified bearer token vouches for, headers ready to insert.
#[derive(Debug)]
pub struct BearerIdentity {
    pub provider: String,
    pub claims: Claims,
    pub headers: Vec<(HeaderName, HeaderValue)>,
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
        let iss = jwt::unverified_issuer(token).ok_or(JwtError::Malformed)?;
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
            other: c.other.clone(),
        };
        let claims = provider.settings.claims.map(&as_id);
        let identity = Arc::new(BearerIdentity {
            provider: provider.settings.id.clone(),
            headers: self.headers.values(&claims),
            claims,
            expires_at: c.exp,
        });
        if self.cache.len() < self.max_entries {
            self.cache.insert(key, identity.clone());
        }
        Ok(identity)
    }

    /// Drop expired entries.
    pub fn sweep(&self) {
        let now = now_unix();
        self.cache.retain(|_, v| v.expires_at > now);
    }
}
