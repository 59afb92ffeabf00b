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
        let lifetime = remembered_for(claims.exp, provider.settings.clock_skew, crypto::now_unix());
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

/// Longest a jti is remembered. A logout token lives minutes; an `exp` years ahead (the
/// provider's value) must not overflow the store's clock arithmetic. Replaying a logout past
/// this only ends the same provider session again.
const MAX_REMEMBERED: Duration = Duration::from_secs(7 * 24 * 3600);

/// How long to remember the jti: as long as the token could be accepted, at most
/// [`MAX_REMEMBERED`].
fn remembered_for(exp: Option<u64>, skew: Duration, now: u64) -> Duration {
    let left = exp.map_or(MAX_AGE.as_secs(), |exp| exp.saturating_sub(now));
    Duration::from_secs(left.saturating_add(skew.as_secs()).saturating_add(1)).min(MAX_REMEMBERED)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_jti_is_remembered_while_its_token_lives_and_never_overflows() {
        let skew = Duration::from_secs(60);
        let now = 1_700_000_000;
        assert_eq!(
            remembered_for(Some(now + 120), skew, now),
            Duration::from_secs(181)
        );
        assert_eq!(
            remembered_for(None, skew, now),
            MAX_AGE + Duration::from_secs(61)
        );
        assert_eq!(
            remembered_for(Some(now - 5), skew, now),
            Duration::from_secs(61)
        );
        for exp in [
            u64::MAX,
            u64::MAX - 1,
            10_000_000_000_000_000_000,
            now + 365 * 24 * 3600,
        ] {
            assert_eq!(
                remembered_for(Some(exp), skew, now),
                MAX_REMEMBERED,
                "{exp}"
            );
        }
        assert_eq!(
            remembered_for(Some(u64::MAX), Duration::MAX, 0),
            MAX_REMEMBERED
        );
    }

    #[test]
    fn exactly_one_logout_token() {
        assert_eq!(logout_token(b"logout_token=a.b.c").unwrap(), "a.b.c");
        assert_eq!(logout_token(b"x=1&logout_token=a%2Bb").unwrap(), "a+b");
        for body in [&b""[..], b"token=x", b"logout_token=a&logout_token=a"] {
            assert!(logout_token(body).is_err(), "{body:?}");
        }
    }
}
