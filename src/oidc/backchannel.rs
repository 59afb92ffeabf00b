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
use crate::answer::{self, Audience, BackChannel, Outcome};
use crate::crypto;
use crate::jwt::{self, LogoutTokenRules};
use crate::session::IdHash;

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
    pub(crate) async fn backchannel_logout(&self, body: &[u8]) -> Reply {
        let token = url::form_urlencoded::parse(body)
            .filter(|(k, _)| k == "logout_token")
            .map(|(_, v)| v.into_owned())
            .collect::<Vec<_>>();
        let [token] = token.as_slice() else {
            return refused("exactly one logout_token is required");
        };
        let Some(provider) = jwt::unverified_issuer(token)
            .and_then(|iss| self.providers.iter().find(|p| p.settings.issuer == iss))
        else {
            tracing::warn!("back-channel logout from an unknown issuer");
            return refused("unknown issuer");
        };
        let algs = provider.algorithms();
        let rules = LogoutTokenRules {
            issuer: &provider.settings.issuer,
            client_id: &provider.settings.client_id,
            algorithms: &algs,
            leeway_secs: provider.settings.clock_skew.as_secs(),
            max_age_secs: MAX_AGE.as_secs(),
        };
        let claims = match jwt::verify_logout_token(&provider.jwks, token, &rules).await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(provider = provider.id(), error = %e, "logout token refused");
                return refused(&e.to_string());
            }
        };
        // Remember the jti for as long as the token could be accepted.
        let now = crate::crypto::now_unix();
        let lifetime = claims
            .exp
            .map_or(MAX_AGE.as_secs(), |exp| exp.saturating_sub(now))
            + provider.settings.clock_skew.as_secs()
            + 1;
        let marker = format!(
            "jti:{{{}}}",
            IdHash(crypto::sha256(
                [claims.iss.as_bytes(), b"\0", claims.jti.as_bytes()]
                    .concat()
                    .as_slice()
            ))
            .hex()
        );
        let sessions = &self.sessions;
        let ended = match sessions
            .store
            .put_new(&marker, b"", Duration::from_secs(lifetime))
            .await
        {
            Ok(false) => {
                tracing::warn!(provider = provider.id(), "replayed logout token ignored");
                return refused("logout token already used");
            }
            Ok(true) => match (&claims.sid, &claims.sub) {
                (Some(sid), _) => sessions.revoke_sid(provider.id(), sid).await,
                (None, Some(sub)) => sessions.revoke_user(provider.id(), sub).await,
                (None, None) => Ok(0),
            },
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
}
