//! Access-token refresh for browser sessions: once per session, across all replicas.
//!
//! Inside a process, concurrent requests for one session share one refresh (a single-flight
//! future); across replicas a short lock in the store elects the refresher, which re-reads
//! the record under the lock (another replica may just have refreshed it) and writes the
//! result with a compare-and-set, so a rotated refresh token is never overwritten by a stale
//! copy and a revoked session is never resurrected.
//!
//! Requests whose access token is still valid never wait: inside the lead time they start
//! the refresh in the background and go on. Requests whose token has expired wait up to
//! `refresh_wait` for the result. The provider saying `invalid_grant` ends the session; a
//! provider that is down leaves it usable until the access token expires, then 503.

use std::sync::Arc;
use std::time::{Duration, Instant};

use dashmap::DashMap;
use futures_util::future::{BoxFuture, FutureExt, Shared};

use super::provider::{Discovery, Provider, ProviderError, TokenResponse};
use crate::cache::{Cache, Tick};
use crate::config::provider::Userinfo;
use crate::identity::Claims;
use crate::jwt::{self, IdTokenRules};
use crate::metrics::Metrics;
use crate::session::{
    IdHash, SessionManager, SessionRecord, SessionRef, Tokens, Update, UserSession,
};

/// Longer than the provider HTTP timeout, so a lock never lapses under a live refresh.
const LOCK_TTL: Duration = Duration::from_secs(15);
/// After a failed refresh, requests with a still-valid token do not retry for this long.
const FAILURE_BACKOFF: Duration = Duration::from_secs(2);
/// Sessions whose failed refresh is remembered at once, at most (past it a failure is not
/// remembered, and the next request tries again).
const FAILURES_KEPT: usize = 100_000;
/// How often a request waiting on another replica's refresh re-reads the record.
const POLL: Duration = Duration::from_millis(50);

/// Where a session stands with its access token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Need {
    /// Valid beyond the lead time, or nothing to refresh with.
    No,
    /// Inside the lead time but still valid: refresh without waiting.
    Soon,
    /// Expired: the request waits for a refresh.
    Now,
}

/// Pure decision, unit-tested.
pub(crate) fn need(record: &SessionRecord, now: u64, lead: Duration) -> Need {
    match record.access_expires_at.map(std::num::NonZeroU64::get) {
        Some(exp) if record.refreshable => {
            if exp <= now {
                Need::Now
            } else if exp <= now + lead.as_secs() {
                Need::Soon
            } else {
                Need::No
            }
        }
        _ => Need::No,
    }
}

/// Whether the access token is unexpired at `now` (the store's clock).
fn still_valid(s: &UserSession, now: u64) -> bool {
    s.record.access_expires_at.is_none_or(|exp| exp.get() > now)
}

/// How a refresh ended, shared by every request that waited for it.
#[derive(Clone)]
pub(crate) enum Outcome {
    /// Use this session (refreshed, or still valid).
    Fresh(SessionRef),
    /// The session is over: treat the request as signed out.
    Ended,
    /// Cannot tell: the provider or the store is down and the token has expired.
    Unavailable,
}

type Flight = Shared<BoxFuture<'static, Outcome>>;

pub(crate) struct Refresher {
    sessions: Arc<SessionManager>,
    providers: Vec<Arc<Provider>>,
    lead: Duration,
    wait: Duration,
    /// Refreshes under way here. Not a [`Cache`]: a refresh is spawned and runs to its end
    /// even when every request waiting for it has gone.
    inflight: DashMap<IdHash, Flight>,
    /// Sessions whose refresh just failed: not tried again before `FAILURE_BACKOFF`.
    failed: Cache<IdHash, ()>,
    metrics: Arc<Metrics>,
}

impl Refresher {
    pub(crate) fn new(
        sessions: Arc<SessionManager>,
        providers: Vec<Arc<Provider>>,
        lead: Duration,
        wait: Duration,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            sessions,
            providers,
            lead,
            wait,
            inflight: DashMap::new(),
            failed: Cache::new(FAILURES_KEPT),
            metrics,
        }
    }

    /// The session this request should use. `Ok(None)`: signed out (the refresh token was
    /// refused); `Err(())`: no usable token and no way to get one now (503).
    pub(crate) async fn ensure(self: &Arc<Self>, s: SessionRef) -> Result<Option<SessionRef>, ()> {
        // Expiries are on the store's clock (see `SessionManager::store_now`).
        let need = need(&s.record, self.sessions.store.now_unix(), self.lead);
        if need == Need::No {
            return Ok(Some(s));
        }
        let backing_off = self.failed.get(&s.hash).is_some();
        match need {
            Need::Soon => {
                if !backing_off {
                    // Spawned inside `flight`: it runs to the end without us.
                    drop(self.flight(s.clone()));
                }
                Ok(Some(s))
            }
            _ if backing_off => Err(()),
            _ => match tokio::time::timeout(self.wait, self.flight(s)).await {
                Ok(Outcome::Fresh(s)) => Ok(Some(s)),
                Ok(Outcome::Ended) => Ok(None),
                Ok(Outcome::Unavailable) | Err(_) => Err(()),
            },
        }
    }

    /// Join the session's refresh in this process, or start it.
    fn flight(self: &Arc<Self>, s: SessionRef) -> Flight {
        use dashmap::mapref::entry::Entry;
        match self.inflight.entry(s.hash) {
            Entry::Occupied(e) => e.get().clone(),
            Entry::Vacant(e) => {
                let me = self.clone();
                let hash = s.hash;
                let fut = async move {
                    let out = me.run(s).await;
                    me.inflight.remove(&hash);
                    out
                }
                .boxed()
                .shared();
                e.insert(fut.clone());
                tokio::spawn(fut.clone());
                fut
            }
        }
    }

    async fn run(&self, s: SessionRef) -> Outcome {
        let lock = match self.sessions.lock_refresh(&s.hash, LOCK_TTL).await {
            Ok(Some(lock)) => lock,
            Ok(None) => return self.await_other(s).await,
            Err(e) => {
                tracing::warn!(error = %e, "session store unavailable for refresh");
                return self.fallback(s);
            }
        };
        let out = self.refresh_locked(s).await;
        self.sessions.unlock_refresh(lock).await;
        out
    }

    /// Another replica holds the lock: keep a still-valid token, else watch the store for
    /// the new revision.
    async fn await_other(&self, s: SessionRef) -> Outcome {
        if still_valid(&s, self.sessions.store.now_unix()) {
            return Outcome::Fresh(s);
        }
        let until = Instant::now() + self.wait;
        while Instant::now() < until {
            tokio::time::sleep(POLL).await;
            match self.sessions.reload(&s.hash).await {
                Ok(None) => return Outcome::Ended,
                Ok(Some(n)) if n.rev != s.rev => return Outcome::Fresh(n),
                Ok(Some(_)) => {}
                Err(_) => return Outcome::Unavailable,
            }
        }
        Outcome::Unavailable
    }

    fn fallback(&self, s: SessionRef) -> Outcome {
        self.failed
            .insert(s.hash, (), Tick::now().after(FAILURE_BACKOFF));
        self.metrics.refreshes.with_label_values(&["failed"]).inc();
        if still_valid(&s, self.sessions.store.now_unix()) {
            Outcome::Fresh(s)
        } else {
            Outcome::Unavailable
        }
    }

    async fn end(&self, s: &SessionRef, why: &str) -> Outcome {
        tracing::info!(provider = %s.record.provider, sub = %s.record.claims.sub(), user = %s.record.claims.subject(), reason = why, "session ended at refresh");
        self.metrics.refreshes.with_label_values(&["ended"]).inc();
        match self.sessions.destroy(&s.hash).await {
            Ok(()) => Outcome::Ended,
            // Not destroyed: it must not be used either.
            Err(_) => Outcome::Unavailable,
        }
    }

    async fn refresh_locked(&self, s: SessionRef) -> Outcome {
        // Under the lock, decide on what the store has now: another replica may have
        // refreshed between our read and our lock.
        let current = match self.sessions.reload(&s.hash).await {
            Ok(Some(c)) => c,
            Ok(None) => return Outcome::Ended,
            Err(_) => return self.fallback(s),
        };
        if need(&current.record, self.sessions.store.now_unix(), self.lead) == Need::No {
            self.metrics.refreshes.with_label_values(&["skipped"]).inc();
            return Outcome::Fresh(current);
        }
        match self.refresh_current(&current).await {
            Ok(outcome) => outcome,
            Err(Stop::Keep) => Outcome::Fresh(current),
            Err(Stop::Fallback) => self.fallback(current),
            Err(Stop::End(why)) => self.end(&current, why).await,
        }
    }

    /// The refresh itself, on the record read under the lock: redeem the refresh token,
    /// check and map the identity again, store the new tokens.
    async fn refresh_current(&self, current: &SessionRef) -> Result<Outcome, Stop> {
        let provider = (self.providers.iter())
            .find(|p| p.id() == &*current.record.provider)
            .ok_or(Stop::End("provider no longer configured"))?;
        let discovery = provider.discovery().ok_or(Stop::Fallback)?;
        let tokens = (self.sessions.tokens(current)).ok_or(Stop::End("tokens unreadable"))?;
        let refresh_token = tokens.refresh_token.as_deref().ok_or(Stop::Keep)?;
        let resp = redeem(provider, &discovery, refresh_token).await?;
        let known_sub = current.record.claims.known_sub();
        let claims = match fresh_claims(provider, &discovery, &tokens, &resp, known_sub).await? {
            None => current.record.claims.clone(),
            Some(other) => (provider.settings.claims.map_claims(known_sub, &other))
                .map_err(|e| {
                    tracing::info!(provider = provider.id(), error = %e, "refreshed identity no longer vouched for");
                    Stop::End("identity no longer vouched for")
                })?,
        };
        let now = self.sessions.store_now().await;
        let fresh = Tokens {
            access_token: resp.access_token.or(tokens.access_token),
            // Rotation: the new one replaces the spent one; no rotation: keep it.
            refresh_token: resp.refresh_token.or(tokens.refresh_token),
            id_token: resp.id_token.or(tokens.id_token),
            access_token_expires_at: resp.expires_in.map(|s| now.saturating_add(s)),
        };
        self.store_refreshed(current, claims, &fresh).await
    }

    /// Write the refreshed session (compare-and-set) and read back what the store holds.
    async fn store_refreshed(
        &self,
        current: &SessionRef,
        claims: Claims,
        fresh: &Tokens,
    ) -> Result<Outcome, Stop> {
        // The old refresh token may be spent now: losing this write would strand the session,
        // so a store hiccup gets a few retries (well inside the lock TTL).
        let mut attempt = 0;
        let outcome = loop {
            match self.sessions.update(current, claims.clone(), fresh).await {
                Ok(o) => break o,
                Err(e) if attempt < 3 => {
                    attempt += 1;
                    tracing::warn!(error = %e, attempt, "storing refreshed tokens failed; retrying");
                    tokio::time::sleep(Duration::from_millis(200 * attempt)).await;
                }
                Err(e) => {
                    tracing::error!(error = %e, "refreshed tokens could not be stored");
                    return Err(Stop::Fallback);
                }
            }
        };
        match outcome {
            Update::Gone => return Ok(Outcome::Ended),
            Update::Done(_) => {
                self.metrics
                    .refreshes
                    .with_label_values(&["refreshed"])
                    .inc();
                self.failed.remove(&current.hash);
                tracing::debug!(sub = %claims.sub(), user = %claims.subject(), "session tokens refreshed");
            }
            Update::Conflict => {}
        }
        Ok(match self.sessions.reload(&current.hash).await {
            Ok(Some(n)) => Outcome::Fresh(n),
            Ok(None) => Outcome::Ended,
            Err(_) => Outcome::Unavailable,
        })
    }

    /// Forget failure marks that have run out.
    pub(crate) fn sweep(&self) {
        self.failed.sweep(|_| true);
    }
}

/// Why a refresh stopped short of new tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    /// Nothing to refresh with: the session goes on as it is.
    Keep,
    /// The provider or store failed for now: use the session while its token is valid.
    Fallback,
    /// The session cannot go on (why, for the log): end it.
    End(&'static str),
}

/// The refresh token for new tokens; `invalid_grant` ends the session.
async fn redeem(
    provider: &Provider,
    discovery: &Discovery,
    refresh_token: &str,
) -> Result<TokenResponse, Stop> {
    match provider.refresh_tokens(discovery, refresh_token).await {
        Ok(r) => Ok(r),
        Err(ProviderError::Refused(e)) if e == "invalid_grant" => {
            Err(Stop::End("refresh token refused"))
        }
        Err(e) => {
            tracing::warn!(provider = provider.id(), error = %e, "token refresh failed");
            Err(Stop::Fallback)
        }
    }
}

/// The claims to map again: the new ID token's (verified, same subject), or with
/// `userinfo = "merge"` those joined with the userinfo answer (on the stored ID token's
/// claims, verified when it was issued, if no new one came). `None`: keep the session's.
async fn fresh_claims(
    provider: &Provider,
    discovery: &Discovery,
    tokens: &Tokens,
    resp: &TokenResponse,
    known_sub: &str,
) -> Result<Option<ClaimMap>, Stop> {
    let mut fresh = match resp.id_token.as_deref() {
        Some(id_token) => Some(verify_refreshed(provider, id_token, resp, known_sub).await?),
        None => None,
    };
    if provider.settings.userinfo == Userinfo::Merge {
        let base = fresh
            .take()
            .or_else(|| tokens.id_token.as_deref().and_then(jwt::unverified_claims));
        let access_token = (resp.access_token.as_deref()).or(tokens.access_token.as_deref());
        let (Some(mut base), Some(at)) = (base, access_token) else {
            return Err(Stop::End("nothing to merge userinfo into"));
        };
        match provider.userinfo(discovery, at, known_sub).await {
            Ok(extra) => super::merge_userinfo(&mut base, &extra),
            Err(e) => {
                tracing::warn!(provider = provider.id(), error = %e, "userinfo at refresh failed");
                return Err(Stop::Fallback);
            }
        }
        fresh = Some(base);
    }
    Ok(fresh)
}

/// A refreshed ID token, verified; OIDC Core §12.2: same subject, or it is not this
/// session's user.
async fn verify_refreshed(
    provider: &Provider,
    id_token: &str,
    resp: &TokenResponse,
    known_sub: &str,
) -> Result<ClaimMap, Stop> {
    let algs = provider.algorithms();
    let rules = IdTokenRules {
        issuer: &provider.settings.issuer,
        client_id: &provider.settings.client_id,
        trusted_audiences: &provider.settings.trusted_audiences,
        nonce: None,
        access_token: resp.access_token.as_deref(),
        algorithms: &algs,
        leeway_secs: provider.settings.clock_skew.as_secs(),
    };
    match jwt::verify_id_token(&provider.jwks, id_token, &rules).await {
        Ok(c) if c.sub == known_sub => Ok(c.other),
        Ok(_) => Err(Stop::End("refreshed ID token for another subject")),
        Err(e) => {
            tracing::warn!(provider = provider.id(), error = %e, "refreshed ID token refused");
            Err(Stop::Fallback)
        }
    }
}

/// Claims other than the registered ones, as the provider sent them.
type ClaimMap = serde_json::Map<String, serde_json::Value>;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Claims;

    fn record(exp: Option<u64>, refreshable: bool) -> SessionRecord {
        SessionRecord {
            v: 2,
            provider: "p".into(),
            claims: Claims::default(),
            created_at: 0,
            expires_at: u64::MAX,
            sid: None,
            access_expires_at: exp.map(crate::session::unix_secs_nonzero),
            refreshable,
            tokens: Box::default(),
        }
    }

    #[test]
    fn refresh_decision() {
        let lead = Duration::from_secs(60);
        assert_eq!(need(&record(Some(1000), true), 900, lead), Need::No);
        assert_eq!(need(&record(Some(1000), true), 950, lead), Need::Soon);
        assert_eq!(need(&record(Some(1000), true), 1000, lead), Need::Now);
        assert_eq!(
            need(&record(Some(1000), false), 2000, lead),
            Need::No,
            "nothing to refresh with"
        );
        assert_eq!(
            need(&record(None, true), 2000, lead),
            Need::No,
            "no expiry known"
        );
    }
}
