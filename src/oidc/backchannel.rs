//! OIDC Back-Channel Logout 1.0: the provider tells us, server to server, that a user's
//! session there ended; we end the matching gateway sessions on every replica.
//!
//! `POST {prefix}backchannel-logout` with a form body `logout_token=<JWT>`. The token is
//! verified against the issuing provider's JWKS (§2.6), its `jti` is remembered until it
//! expires so a replayed token does nothing, and then every session created from that
//! provider session (`sid`), or failing a `sid` every session of that user (the provider's
//! `sub`, whatever `user_claim` shows) at that provider, is revoked: deleted in the store and invalidated in every replica's cache.

use std::time::Duration;

use super::flow::{Auth, Reply};
use super::provider::Provider;
use crate::answer::{self, Audience, BackChannel, Outcome};
use crate::crypto;
use crate::jwt::{self, LogoutTokenClaims, LogoutTokenRules};
use crate::session::{IdHash, StoreError};

/// Logout tokens are tiny; anything larger is not one.
pub(crate) const MAX_BODY: usize = 16 * 1024;
/// Age limit for tokens without `exp`, and the replay memory for them.
const MAX_AGE: Duration = Duration::from_secs(300);

/// The answer to the provider, by the one answer module (server to server: no request ID).
fn reply(outcome: BackChannel) -> Reply {
    answer::respond(&Outcome::BackChannel(outcome), Audience::default(), "")
}

/// §2.8: 400 with an OAuth error body for a token we refuse.
fn refused(why: &str) -> Reply {
    reply(BackChannel::Refused(why))
}

impl Auth {
    /// `POST {prefix}backchannel-logout`: verify the logout token, then end its sessions.
    pub(crate) async fn backchannel_logout(&self, body: &[u8]) -> Reply {
        let token = match logout_token(body) {
            Ok(t) => t,
            Err(why) => return refused(why),
        };
        let Some(provider) = jwt::unverified_issuer(&token)
            .and_then(|iss| self.providers.iter().find(|p| p.settings.issuer == iss))
        else {
            tracing::warn!("back-channel logout from an unknown issuer");
            return refused("unknown issuer");
        };
        let claims = match verify(provider, &token).await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(provider = provider.id(), error = %e, "logout token refused");
                return refused(&e.to_string());
            }
        };
        let marker = replay_marker(&claims);
        let lifetime = remembered_for(&claims, provider, crypto::now_unix());
        let sessions = &self.sessions;
        let ended = match sessions.store.put_new(&marker, b"", lifetime).await {
            Ok(false) => {
                tracing::warn!(provider = provider.id(), "replayed logout token ignored");
                return refused("logout token already used");
            }
            Ok(true) => self.end_sessions(provider, &claims).await,
            Err(e) => Err(e),
        };
        match ended {
            Ok(n) => {
                self.metrics
                    .revocations
                    .with_label_values(&["backchannel"])
                    .inc_by(n as u64);
                tracing::info!(
                    provider = provider.id(),
                    sub = claims.sub.as_deref().unwrap_or(""),
                    sessions = n,
                    "back-channel logout"
                );
                reply(BackChannel::LoggedOut)
            }
            Err(e) => {
                // §2.8: the logout could not be performed; the provider may retry. A retry
                // with the same jti is refused only if the marker was written, and then the
                // sessions were the part that failed: forget the marker so it can succeed.
                let _ = sessions.store.delete(&marker).await;
                tracing::error!(provider = provider.id(), error = %e, "back-channel logout failed: session store unavailable");
                reply(BackChannel::NotPerformed)
            }
        }
    }

    /// Every session of the token's provider session (`sid`), or failing one, of its user.
    async fn end_sessions(
        &self,
        provider: &Provider,
        claims: &LogoutTokenClaims,
    ) -> Result<usize, StoreError> {
        match (&claims.sid, &claims.sub) {
            (Some(sid), _) => self.sessions.revoke_sid(provider.id(), sid).await,
            (None, Some(sub)) => self.sessions.revoke_user(provider.id(), sub).await,
            (None, None) => Ok(0),
        }
    }
}

/// The one `logout_token` of the form body.
fn logout_token(body: &[u8]) -> Result<String, &'static str> {
    let mut tokens = url::form_urlencoded::parse(body)
        .filter(|(k, _)| k == "logout_token")
        .map(|(_, v)| v.into_owned());
    match (tokens.next(), tokens.next()) {
        (Some(token), None) => Ok(token),
        _ => Err("exactly one logout_token is required"),
    }
}

/// The token verified against its provider's keys and rules (§2.6).
async fn verify(provider: &Provider, token: &str) -> Result<LogoutTokenClaims, jwt::JwtError> {
    let algs = provider.algorithms();
    let rules = LogoutTokenRules {
        issuer: &provider.settings.issuer,
        client_id: &provider.settings.client_id,
        algorithms: &algs,
        leeway_secs: provider.settings.clock_skew.as_secs(),
        max_age_secs: MAX_AGE.as_secs(),
    };
    jwt::verify_logout_token(&provider.jwks, token, &rules).await
}

/// The store key that remembers a token's `jti` (per issuer), so a replay does nothing.
fn replay_marker(claims: &LogoutTokenClaims) -> String {
    let id = [claims.iss.as_bytes(), b"\0", claims.jti.as_bytes()].concat();
    format!("jti:{{{}}}", IdHash(crypto::sha256(&id)).hex())
}

/// How long to remember the jti: as long as the token could be accepted.
fn remembered_for(claims: &LogoutTokenClaims, provider: &Provider, now: u64) -> Duration {
    let skew = provider.settings.clock_skew.as_secs();
    let left = (claims.exp).map_or(MAX_AGE.as_secs(), |exp| exp.saturating_sub(now));
    Duration::from_secs(left + skew + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exactly_one_logout_token() {
        assert_eq!(logout_token(b"logout_token=a.b.c").unwrap(), "a.b.c");
        assert_eq!(logout_token(b"x=1&logout_token=a%2Bb").unwrap(), "a+b");
        for body in [&b""[..], b"token=x", b"logout_token=a&logout_token=a"] {
            assert!(logout_token(body).is_err(), "{body:?}");
        }
    }
}
