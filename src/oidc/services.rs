//! What the proxy, forward-auth, the admin listener and the server ask of [`Auth`]: who is
//! calling (bearer token or session cookie), what goes upstream about them, and the handles
//! operations need. The one interface to sessions, tokens and providers from outside `oidc`.

use std::sync::Arc;

use http::{HeaderMap, HeaderValue};
use pingora::http::{RequestHeader, ResponseHeader};

use super::flow::Auth;
use super::provider::Provider;
use super::BearerIdentity;
use crate::jwt::JwtError;
use crate::out_header::OutName;
use crate::session::{SessionManager, SessionRef, StoreError};

impl Auth {
    // --- Who is calling -------------------------------------------------------------------

    /// A bearer token, verified for `audiences` and issued by one of `accepted` (empty: any
    /// configured provider).
    pub(crate) async fn verify_bearer(
        &self,
        token: &str,
        audiences: &[String],
        accepted: &[String],
    ) -> Result<Arc<BearerIdentity>, JwtError> {
        self.bearer.verify(token, audiences, accepted).await
    }

    /// The session named by the request's session cookie (`None`: no valid cookie, or no
    /// such session). Store trouble is an error, never "no session".
    pub(crate) async fn session(
        &self,
        headers: &HeaderMap,
        https: bool,
    ) -> Result<Option<SessionRef>, StoreError> {
        match self.sessions.read_cookie(headers, https).id() {
            Some(id) => self.sessions.load(&id).await,
            None => Ok(None),
        }
    }

    /// `s` with a valid access token: refreshed once across replicas when it is near or
    /// past expiry (`Ok(None)`: the session ended; `Err`: the provider cannot refresh now).
    pub(crate) async fn fresh(&self, s: SessionRef) -> Result<Option<SessionRef>, ()> {
        self.refresher.ensure(s).await
    }

    /// Each provider's id and whether it can take a sign-in now.
    pub(crate) fn sign_in_states(&self) -> impl Iterator<Item = (&str, bool)> {
        self.providers.iter().map(|p| (p.id(), p.is_ready()))
    }

    // --- What goes upstream ---------------------------------------------------------------

    /// Remove the gateway's own cookies from a request bound upstream.
    pub(crate) fn strip_cookie(&self, upstream: &mut RequestHeader) -> pingora::Result<()> {
        self.sessions.strip_cookie(upstream)
    }

    /// The session's access token as a header value (for `pass_access_token` routes).
    pub(crate) fn access_token(&self, s: &SessionRef) -> Option<HeaderValue> {
        let token = self.sessions.tokens(s)?.access_token?;
        HeaderValue::from_str(&token).ok()
    }

    /// The session's ID token (for routes with `id_token`): unsealed per request, like the
    /// access token, never kept in clear.
    pub(crate) fn id_token(&self, s: &SessionRef) -> Option<String> {
        self.sessions.tokens(s)?.id_token
    }

    /// Where the access token goes.
    pub(crate) fn access_token_header(&self) -> &OutName {
        self.sessions.access_token_header()
    }

    /// Where the signed identity assertion goes.
    pub(crate) fn assertion_header(&self) -> &OutName {
        &self.assertion_header
    }

    /// The request's cookies without the gateway's own (forward-auth hands them back).
    pub(crate) fn foreign_cookies(&self, headers: &HeaderMap) -> String {
        self.sessions.foreign_cookies(headers)
    }

    /// Drop an upstream's `Set-Cookie` for a gateway cookie; returns how many were dropped.
    pub(crate) fn drop_set_cookie(&self, resp: &mut ResponseHeader) -> pingora::Result<usize> {
        self.sessions.drop_set_cookie(resp)
    }

    // --- Operations -----------------------------------------------------------------------

    /// The session manager (admin API: list and revoke; readiness: store and cache).
    pub(crate) fn sessions(&self) -> &SessionManager {
        &self.sessions
    }

    /// Every configured provider.
    pub(crate) fn providers(&self) -> &[Arc<Provider>] {
        &self.providers
    }

    /// The process's metrics.
    pub(crate) fn metrics(&self) -> &crate::metrics::Metrics {
        &self.metrics
    }

    /// Periodic upkeep: drop expired entries from the in-memory caches and the memory
    /// store; with Redis, keep its clock offset known (token expiries in shared records are
    /// on Redis' clock), even on a replica that signs nobody in.
    pub(crate) async fn sweep(&self) {
        self.sessions.cache.sweep();
        self.refresher.sweep();
        self.bearer.sweep();
        self.assertion.sweep();
        if let crate::session::Store::Memory(m) = &self.sessions.store {
            m.sweep();
        }
        if self.sessions.store.is_redis() {
            let _ = self.sessions.store.sync_clock().await;
        }
    }
}
