//! The browser login flow and the gateway's own endpoints under the reserved prefix.
//!
//! - `login`: start an authorization-code flow with PKCE S256, `state` and `nonce`. The
//!   transaction (verifier, nonce, return URL) is stored server-side with a short TTL and
//!   bound to this browser by a short-lived cookie holding the `state`.
//! - `callback`: consume the transaction exactly once (atomic get-and-delete), exchange the
//!   code, verify the ID token, create a session with a fresh ID, set the cookie.
//! - `logout`: end the session everywhere, clear the cookie, then RP-initiated logout at the
//!   provider (a form POST, so the ID token hint never appears in a URL or a log).
//! - `userinfo`: the current identity as JSON (never tokens).
//!
//! Every handler returns a [`Reply`]; the proxy glue writes it.

use std::sync::Arc;
use std::time::Duration;

use cookie::{Cookie, SameSite};
use http::{header, HeaderValue};
use pingora::http::RequestHeader;
use serde::{Deserialize, Serialize};

use super::provider::{Discovery, Provider, ProviderError, TokenResponse};
use super::redirect::RedirectPolicy;
use crate::answer::{self, Choice, Field, Outcome, SignInFailure};
use crate::config::front::CsrfSettings;
use crate::config::model::LogoutMethod;
use crate::config::provider::Userinfo;
use crate::crypto;
use crate::host::Authority;
use crate::identity::Claims;
use crate::jwt::{self, IdTokenClaims, IdTokenRules, JwtError};
use crate::metrics::Metrics;
use crate::session::{IdHash, SessionManager, StoreError, Tokens};

pub(crate) use crate::answer::{CallbackFailure, Reply};

/// What the handlers need to know about the request beyond its header.
pub(crate) struct RequestInfo<'a> {
    pub(crate) req: &'a RequestHeader,
    pub(crate) https: bool,
    /// The Host the client used, in canonical form (for redirect URIs and origin checks).
    pub(crate) authority: &'a Authority,
    /// The request path in canonical form (the callback must arrive where it was sent).
    pub(crate) path: &'a str,
    pub(crate) request_id: &'a str,
}

impl RequestInfo<'_> {
    fn origin(&self) -> String {
        format!(
            "{}://{}",
            if self.https { "https" } else { "http" },
            self.authority.as_str()
        )
    }

    fn audience(&self) -> answer::Audience {
        answer::audience(&self.req.method, &self.req.headers)
    }

    fn query_pairs(&self) -> Vec<(String, String)> {
        self.req
            .uri
            .query()
            .map(|q| {
                url::form_urlencoded::parse(q.as_bytes())
                    .map(|(k, v)| (k.into_owned(), v.into_owned()))
                    .collect()
            })
            .unwrap_or_default()
    }

    fn cookie(&self, name: &str) -> Option<String> {
        self.req
            .headers
            .get_all(header::COOKIE)
            .iter()
            .find_map(|h| {
                let s = h.to_str().ok()?;
                Cookie::split_parse(s)
                    .flatten()
                    .find(|c| c.name() == name)
                    .map(|c| c.value().to_string())
            })
    }
}

/// The server-side half of a login in progress.
#[derive(Debug, Serialize, Deserialize)]
struct Transaction {
    provider: String,
    verifier: String,
    nonce: String,
    return_to: String,
    redirect_uri: String,
}

/// A redirect, by the one answer module.
fn redirect(location: &str) -> Reply {
    answer::respond(
        &Outcome::Redirect(location),
        answer::Audience::default(),
        "",
    )
}

/// A store error during a callback: the store is down (503), or our data is wrong (500).
fn store_failure(e: &StoreError) -> CallbackFailure {
    match e.fault() {
        answer::Fault::Bug => CallbackFailure::Internal,
        _ => CallbackFailure::StoreUnavailable,
    }
}

/// The sign-in flows, the gateway's endpoints, and the services the proxy asks about a
/// caller (see `oidc::services`). Its parts are private to `oidc`: the proxy, forward-auth and
/// the admin listener go through methods.
pub struct Auth {
    pub(super) assertion: Arc<crate::assertion::Signer>,
    pub(super) assertion_header: crate::out_header::OutName,
    pub(super) providers: Vec<Arc<Provider>>,
    pub(super) bearer: super::BearerVerifier,
    pub(super) sessions: Arc<SessionManager>,
    pub(super) refresher: Arc<super::Refresher>,
    pub(super) redirects: RedirectPolicy,
    pub(super) prefix: String,
    pub(super) login_ttl: Duration,
    /// `session.max_pending_logins`: past it the oldest pending login is dropped.
    pub(super) max_pending_logins: usize,
    /// `session.max_return_url_bytes`: a longer return URL is stored as `/`.
    pub(super) max_return_url_bytes: usize,
    pub(super) metrics: Arc<Metrics>,
}

/// What [`Auth`] is assembled from (by `server`, once per start).
pub(crate) struct AuthParts {
    pub(crate) assertion: Arc<crate::assertion::Signer>,
    pub(crate) assertion_header: crate::out_header::OutName,
    pub(crate) providers: Vec<Arc<Provider>>,
    pub(crate) bearer: super::BearerVerifier,
    pub(crate) sessions: Arc<SessionManager>,
    pub(crate) refresher: Arc<super::Refresher>,
    pub(crate) redirects: RedirectPolicy,
    pub(crate) prefix: String,
    pub(crate) login_ttl: Duration,
    pub(crate) max_pending_logins: usize,
    pub(crate) max_return_url_bytes: usize,
    pub(crate) metrics: Arc<Metrics>,
}

impl Auth {
    pub(crate) fn new(p: AuthParts) -> Self {
        Self {
            assertion: p.assertion,
            assertion_header: p.assertion_header,
            providers: p.providers,
            bearer: p.bearer,
            sessions: p.sessions,
            refresher: p.refresher,
            redirects: p.redirects,
            prefix: p.prefix,
            login_ttl: p.login_ttl,
            max_pending_logins: p.max_pending_logins,
            max_return_url_bytes: p.max_return_url_bytes,
            metrics: p.metrics,
        }
    }
}

impl Auth {
    pub(crate) fn provider(&self, id: &str) -> Option<&Arc<Provider>> {
        self.providers.iter().find(|p| p.id() == id)
    }

    /// The signed identity assertion for `claims` on `route`, naming the provider that
    /// vouched (`None`: that provider is no longer configured, or signing failed).
    pub(crate) fn assertion_for(
        &self,
        route: &str,
        provider: &str,
        claims: &Claims,
    ) -> Option<HeaderValue> {
        let p = self.provider(provider)?;
        let by = crate::assertion::Vouched {
            provider: p.id(),
            issuer: &p.settings.issuer,
        };
        self.assertion.assertion(route, by, claims)
    }

    fn tx_cookie_name(&self, state: &str, https: bool) -> String {
        let tag: String = crypto::sha256(state.as_bytes())[..8]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let name = format!("{}{tag}", self.sessions.tx_cookie_prefix());
        if https && self.sessions.cookie.secure {
            format!("__Host-{name}")
        } else {
            name
        }
    }

    /// The login transaction's cookie keeps `Path=/` (and so its `__Host-` name over HTTPS)
    /// and `SameSite=Lax` whatever `cookie_path` and `cookie_same_site` say: it is read only
    /// at the callback, which a browser reaches by a top-level GET from the provider (Lax
    /// sends it; Strict would not), and `cookie_path` must cover the gateway prefix anyway.
    fn tx_cookie(&self, name: String, value: String, max_age: Duration) -> String {
        Cookie::build((name, value))
            .path("/")
            .http_only(true)
            .secure(self.sessions.cookie.secure)
            // Lax: the callback is a top-level navigation from the provider's site.
            .same_site(SameSite::Lax)
            .max_age(cookie::time::Duration::seconds(max_age.as_secs() as i64))
            .build()
            .to_string()
    }

    /// A failed sign-in or sign-out, answered by the one answer module.
    fn page(&self, info: &RequestInfo, failure: SignInFailure) -> Reply {
        answer::respond(
            &Outcome::SignInFailed {
                failure: &failure,
                prefix: &self.prefix,
            },
            info.audience(),
            info.request_id,
        )
    }

    /// `GET {prefix}login?rd=…&provider=…`
    pub(crate) async fn login(&self, info: &RequestInfo<'_>) -> Reply {
        let q = info.query_pairs();
        let get = |k: &str| q.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        let mut return_to = self.redirects.validate_or_root(get("rd").unwrap_or("/"));
        if return_to.len() > self.max_return_url_bytes {
            tracing::debug!(
                request_id = info.request_id,
                bytes = return_to.len(),
                "return URL too long; / instead"
            );
            return_to = "/".to_string();
        }
        let provider = match get("provider") {
            Some(id) => self.provider(id),
            None if self.providers.len() == 1 => self.providers.first(),
            None => {
                // `providers=a,b`: the route's choice; otherwise every configured provider.
                let offered: Vec<&Arc<Provider>> = match get("providers") {
                    Some(list) => list.split(',').filter_map(|id| self.provider(id)).collect(),
                    None => self.providers.iter().collect(),
                };
                return self.chooser(info, &offered, &return_to);
            }
        };
        let Some(provider) = provider else {
            return self.page(info, SignInFailure::UnknownProvider);
        };
        // A provider that is down (or never reached) is not redirected to: the browser would
        // only find an error page there. 503 with Retry-After, here, until it is back.
        let Some(discovery) = provider.discovery().filter(|_| provider.is_ready()) else {
            let name = provider.settings.display_name.clone();
            return self.page(info, SignInFailure::ProviderDown(name));
        };
        let state = crypto::random_token();
        let verifier = crypto::random_token();
        let nonce = crypto::random_token();
        let redirect_uri = provider.settings.redirect_url.clone().unwrap_or_else(|| {
            format!(
                "{}{}{}",
                info.origin(),
                self.prefix,
                provider.settings.callback
            )
        });
        let url = match provider.authorize_url(
            &discovery,
            &redirect_uri,
            &state,
            &nonce,
            &crypto::pkce_challenge(&verifier),
        ) {
            Ok(u) => u,
            Err(e) => {
                tracing::error!(provider = provider.id(), error = %e, "cannot build authorization URL");
                return self.page(info, SignInFailure::ProviderMisconfigured);
            }
        };
        let tx = Transaction {
            provider: provider.id().to_string(),
            verifier,
            nonce,
            return_to,
            redirect_uri,
        };
        let key = IdHash(crypto::sha256(state.as_bytes())).hex();
        let raw = serde_json::to_vec(&tx).unwrap_or_default();
        let cap = self.max_pending_logins;
        let stored = (self.sessions.store).put_pending(&key, &raw, self.login_ttl, cap);
        if let Err(e) = stored.await {
            tracing::error!(error = %e, request_id = info.request_id, "cannot store login transaction");
            let failure = match e.fault() {
                answer::Fault::Bug => SignInFailure::Internal,
                _ => SignInFailure::LoginStoreDown,
            };
            return self.page(info, failure);
        }
        self.metrics.logins.with_label_values(&["started"]).inc();
        let cookie = self.tx_cookie(
            self.tx_cookie_name(&state, info.https),
            state,
            self.login_ttl,
        );
        redirect(&url).header(header::SET_COOKIE, &cookie)
    }

    /// The sign-in page when several providers could be used.
    fn chooser(&self, info: &RequestInfo, offered: &[&Arc<Provider>], return_to: &str) -> Reply {
        let providers: Vec<Choice> = offered
            .iter()
            .map(|p| Choice {
                id: p.id(),
                name: &p.settings.display_name,
                ready: p.is_ready(),
            })
            .collect();
        answer::respond(
            &Outcome::SignIn {
                providers: &providers,
                return_to,
            },
            info.audience(),
            info.request_id,
        )
    }

    fn fail(
        &self,
        info: &RequestInfo,
        f: CallbackFailure,
        detail: &str,
        clear: Option<String>,
    ) -> Reply {
        self.metrics
            .login_failures
            .with_label_values(&[f.reason()])
            .inc();
        tracing::warn!(
            request_id = info.request_id,
            reason = f.reason(),
            detail,
            "login callback failed"
        );
        let mut r = self.page(info, SignInFailure::Callback(f));
        if let Some(c) = clear {
            r = r.header(header::SET_COOKIE, &c);
        }
        r
    }

    /// `GET {prefix}callback?code=…&state=…` (or `error=…`): each step below either hands
    /// the next one what it needs or says why the sign-in stops ([`Failed`]).
    pub(crate) async fn callback(&self, info: &RequestInfo<'_>) -> Reply {
        let params = match CallbackParams::parse(&info.query_pairs()) {
            Ok(p) => p,
            Err(f) => return self.fail(info, f.failure, &f.detail, None),
        };
        let cookie_name = self.tx_cookie_name(&params.state, info.https);
        let clear = self.tx_cookie(cookie_name.clone(), String::new(), Duration::ZERO);
        match self.sign_in(info, &params, &cookie_name).await {
            Ok(reply) => reply.header(header::SET_COOKIE, &clear),
            Err(f) => {
                let clear = (!f.keep_cookie).then_some(clear);
                self.fail(info, f.failure, &f.detail, clear)
            }
        }
    }

    /// The callback's steps, from a well-formed query to the session cookie.
    async fn sign_in(
        &self,
        info: &RequestInfo<'_>,
        params: &CallbackParams,
        cookie_name: &str,
    ) -> Result<Reply, Failed> {
        bound_to_browser(info.cookie(cookie_name).as_deref(), &params.state)?;
        let tx = self.take_transaction(&params.state).await?;
        let (provider, discovery) = self.provider_of(&tx)?;
        let expected = Issuer {
            issuer: &provider.settings.issuer,
            always_named: discovery.authorization_response_iss_parameter_supported,
        };
        arrived_from(&tx.redirect_uri, info.path, params.iss.as_deref(), expected)?;
        let code = params.code()?;
        let tokens = exchange(provider, &discovery, code, &tx).await?;
        let (id_token, mut claims) = verify_id_token(provider, &tokens, &tx).await?;
        if provider.settings.userinfo == Userinfo::Merge {
            merge_userinfo(provider, &discovery, &tokens, &mut claims).await?;
        }
        let mapped = (provider.settings.claims.map(&claims))
            .map_err(|e| Failed::new(CallbackFailure::UnverifiedIdentity, e.to_string()))?;
        let cookie_value = self
            .start_session(provider, mapped, claims.sid.clone(), &tokens, id_token)
            .await?;
        self.metrics.logins.with_label_values(&["completed"]).inc();
        tracing::info!(request_id = info.request_id, provider = provider.id(), sub = %claims.sub, "login completed");
        let target = self.redirects.validate_or_root(&tx.return_to);
        let session_cookie = self.sessions.set_cookie(&cookie_value, info.https);
        Ok(redirect(&target).header(header::SET_COOKIE, &session_cookie))
    }

    /// The login transaction of `state`, consumed: a second callback with it finds nothing.
    async fn take_transaction(&self, state: &str) -> Result<Transaction, Failed> {
        let key = IdHash(crypto::sha256(state.as_bytes())).hex();
        match self.sessions.store.take_pending(&key).await {
            Ok(Some(raw)) => serde_json::from_slice(&raw)
                .map_err(|_| Failed::new(CallbackFailure::UnknownState, "unreadable transaction")),
            Ok(None) => Err(Failed::new(
                CallbackFailure::UnknownState,
                "transaction expired or already used",
            )),
            // The transaction may still be there: keep the cookie so a retry can finish.
            Err(e) => Err(Failed {
                keep_cookie: true,
                ..Failed::new(store_failure(&e), e.to_string())
            }),
        }
    }

    /// The provider the login was started with, and its metadata.
    fn provider_of(&self, tx: &Transaction) -> Result<(&Arc<Provider>, Arc<Discovery>), Failed> {
        let Some(provider) = self.provider(&tx.provider) else {
            return Err(Failed::new(
                CallbackFailure::UnknownState,
                "provider no longer configured",
            ));
        };
        let Some(discovery) = provider.discovery() else {
            return Err(Failed::new(
                CallbackFailure::ProviderUnavailable,
                "provider not ready",
            ));
        };
        Ok((provider, discovery))
    }

    /// Store the new session (its expiry on the store's clock, so a replica whose clock is
    /// off does not stretch or cut it for the others); the cookie value that names it.
    async fn start_session(
        &self,
        provider: &Provider,
        mapped: Claims,
        sid: Option<String>,
        tokens: &TokenResponse,
        id_token: &str,
    ) -> Result<String, Failed> {
        let now = self.sessions.store_now().await;
        let stored = Tokens {
            access_token: tokens.access_token.clone(),
            refresh_token: tokens.refresh_token.clone(),
            id_token: Some(id_token.to_string()),
            access_token_expires_at: tokens.expires_in.map(|s| now.saturating_add(s)),
        };
        (self
            .sessions
            .create(provider.id(), mapped, sid, &stored)
            .await)
            .map_err(|e| Failed::new(store_failure(&e), e.to_string()))
    }

    /// `GET|POST {prefix}logout?rd=…`
    pub(crate) async fn logout(&self, info: &RequestInfo<'_>) -> Reply {
        let q = info.query_pairs();
        let rd = q
            .iter()
            .find(|(k, _)| k == "rd")
            .map(|(_, v)| v.as_str())
            .unwrap_or("/");
        let return_to = self.redirects.validate_or_root(rd);
        let clear = self.sessions.clear_cookie(info.https);
        // Every session the cookies name, not only one that is believed: with a second valid
        // cookie planted beside the user's (a sibling subdomain can set one), neither is
        // believed, and a sign-out that ended none would look done while both live on.
        let ids = self
            .sessions
            .every_verified_cookie(&info.req.headers, info.https);
        if ids.is_empty() {
            return redirect(&return_to).header(header::SET_COOKIE, &clear);
        }
        // Only a same-origin POST ends a session: a bare GET (a link, an <img> on another
        // site) gets a page whose button makes that POST.
        match info.req.method {
            http::Method::GET | http::Method::HEAD => return self.logout_confirmation(info, rd),
            http::Method::POST => {}
            _ => return self.page(info, SignInFailure::SignOutMethod),
        }
        // No allow-list and no sibling subdomains here: only this origin's own page.
        if crate::csrf::is_cross_site(
            &CsrfSettings::default(),
            &info.req.headers,
            info.https,
            info.authority,
        ) {
            tracing::info!(request_id = info.request_id, "cross-site logout refused");
            return self.page(info, SignInFailure::SignOutCrossSite);
        }
        // Each record as the store holds it now, tokens included (a cached copy may lack
        // them): the ID token in it is the provider's logout hint. One read for both, so the
        // session ended and the hint sent are the same one. Any store failure is an error
        // page, never a success: some session may still live.
        let mut ended: Vec<(String, Option<String>)> = Vec::with_capacity(ids.len());
        for id in &ids {
            let session = match self.sessions.reload(&id.hash()).await {
                Ok(Some(s)) => s,
                Ok(None) => continue,
                Err(e) => return self.store_down(info, &e),
            };
            let tokens = self.sessions.tokens(&session).unwrap_or_default();
            if let Err(e) = self.sessions.destroy(&session.hash).await {
                return self.store_down(info, &e);
            }
            tracing::info!(request_id = info.request_id, sub = %session.record.claims.sub(), user = %session.record.claims.subject(), "logout");
            ended.push((session.record.provider.to_string(), tokens.id_token));
        }
        // One session: its provider, with its ID token as the hint. Several (one was planted):
        // whose is which is unknown, so no hint is sent; their provider, if they share one,
        // ends the browser's own session there.
        let at_provider = match ended.as_slice() {
            [(p, Some(hint))] => match self.provider(p) {
                Some(p) => self.end_at_provider(info, p, Some(hint), return_to),
                None => Err(return_to),
            },
            [(p, _), rest @ ..] if !rest.is_empty() && rest.iter().all(|(q, _)| q == p) => {
                match self.provider(p) {
                    Some(p) => self.end_at_provider(info, p, None, return_to),
                    None => Err(return_to),
                }
            }
            _ => Err(return_to),
        };
        // Without a way to end the provider's session: straight back.
        at_provider
            .unwrap_or_else(|return_to| redirect(&return_to))
            .header(header::SET_COOKIE, &clear)
    }

    /// RP-initiated logout at `provider` (a GET redirect, or by default a form auto-posted so
    /// the ID token hint appears in no URL or log), coming back to `return_to`; `Err` with the
    /// address to go back to when the provider has no end-session endpoint (or an unusable one).
    fn end_at_provider(
        &self,
        info: &RequestInfo,
        p: &Provider,
        hint: Option<&str>,
        return_to: String,
    ) -> Result<Reply, String> {
        let Some(endpoint) = p.discovery().and_then(|d| d.end_session_endpoint.clone()) else {
            return Err(return_to);
        };
        // post_logout_redirect_uri must be absolute and registered at the provider.
        let post_logout = if return_to.starts_with('/') {
            format!("{}{}", info.origin(), return_to)
        } else {
            return_to
        };
        if p.settings.logout_method == LogoutMethod::Get {
            let Ok(mut u) = url::Url::parse(&endpoint) else {
                return Err(post_logout);
            };
            let mut q = u.query_pairs_mut();
            if let Some(hint) = hint {
                q.append_pair("id_token_hint", hint);
            }
            q.append_pair("post_logout_redirect_uri", &post_logout)
                .append_pair("client_id", &p.settings.client_id);
            drop(q);
            return Ok(redirect(u.as_str()));
        }
        let fields = [
            Field {
                name: "id_token_hint",
                value: hint.unwrap_or_default(),
            },
            Field {
                name: "post_logout_redirect_uri",
                value: &post_logout,
            },
            Field {
                name: "client_id",
                value: &p.settings.client_id,
            },
        ];
        // Without a hint, no empty field: a provider may read one as a bad hint.
        let fields = if hint.is_some() {
            &fields[..]
        } else {
            &fields[1..]
        };
        let script_nonce = crypto::random_token();
        let outcome = Outcome::SigningOut {
            endpoint: &endpoint,
            fields,
            script_nonce: &script_nonce,
        };
        Ok(answer::respond(&outcome, info.audience(), info.request_id))
    }

    /// `GET {prefix}logout`: a page asking to confirm, whose form POSTs back here.
    fn logout_confirmation(&self, info: &RequestInfo, rd: &str) -> Reply {
        let action = format!(
            "{}logout?rd={}",
            self.prefix,
            url::form_urlencoded::byte_serialize(rd.as_bytes()).collect::<String>()
        );
        let outcome = Outcome::ConfirmSignOut { action: &action };
        answer::respond(&outcome, info.audience(), info.request_id)
    }

    fn store_down(&self, info: &RequestInfo, e: &StoreError) -> Reply {
        if e.fault() == answer::Fault::Bug {
            tracing::error!(request_id = info.request_id, error = %e, "session data cannot be encoded (a bug)");
            return self.page(info, SignInFailure::Internal);
        }
        if let Some(n) = crate::ratelimit_log::session_store_down(&e) {
            tracing::error!(request_id = info.request_id, error = %e, occurrences = n.count, "session store unavailable{n}");
        }
        self.page(info, SignInFailure::StoreDown)
    }

    /// `GET {prefix}jwks.json`: the public key of the identity assertion.
    pub(crate) fn jwks(&self) -> Reply {
        let keys = Outcome::AssertionKeys(self.assertion.jwks());
        answer::respond(&keys, answer::Audience::default(), "")
    }

    /// `GET {prefix}userinfo`: the caller's identity, no tokens.
    pub(crate) async fn userinfo(&self, info: &RequestInfo<'_>) -> Reply {
        let session = match self
            .sessions
            .read_cookie(&info.req.headers, info.https)
            .id()
        {
            None => None,
            Some(id) => match self.sessions.load(&id).await {
                Ok(s) => s,
                Err(e) => return self.store_down(info, &e),
            },
        };
        match session {
            None => answer::respond(&Outcome::NotSignedIn, info.audience(), info.request_id),
            Some(s) => {
                let outcome = Outcome::Identity {
                    claims: &s.record.claims,
                    provider: &s.record.provider,
                    expires_at: s.record.expires_at,
                };
                answer::respond(&outcome, info.audience(), info.request_id)
            }
        }
    }
}

/// Why a callback stops: the failure answered, the detail for the log line, and whether
/// the browser keeps its transaction cookie (only when the store could not be asked).
#[derive(Debug, PartialEq, Eq)]
struct Failed {
    failure: CallbackFailure,
    detail: String,
    keep_cookie: bool,
}

impl Failed {
    fn new(failure: CallbackFailure, detail: impl Into<String>) -> Self {
        Self {
            failure,
            detail: detail.into(),
            keep_cookie: false,
        }
    }
}

/// The callback's query, each parameter at most once and `state` present.
#[derive(Debug, PartialEq, Eq)]
struct CallbackParams {
    state: String,
    code: Option<String>,
    error: Option<String>,
    iss: Option<String>,
}

impl CallbackParams {
    fn parse(q: &[(String, String)]) -> Result<Self, Failed> {
        let mut duplicate = false;
        let mut one = |k: &str| {
            let mut all = q.iter().filter(|(n, _)| n == k).map(|(_, v)| v.clone());
            let first = all.next();
            duplicate |= all.next().is_some();
            first
        };
        let (state, code, error, iss) = (one("state"), one("code"), one("error"), one("iss"));
        if duplicate {
            return Err(Failed::new(
                CallbackFailure::DuplicateParameter,
                "repeated state/code/error/iss",
            ));
        }
        let Some(state) = state.filter(|s| !s.is_empty()) else {
            return Err(Failed::new(CallbackFailure::MissingParameter, "no state"));
        };
        Ok(Self {
            state,
            code,
            error,
            iss,
        })
    }

    /// The authorization code, unless the provider answered with an error instead.
    fn code(&self) -> Result<&str, Failed> {
        if let Some(err) = &self.error {
            // The provider's own words stay in the log; the page says something safe.
            let err: String = err
                .chars()
                .filter(|c| c.is_ascii_graphic())
                .take(64)
                .collect();
            return Err(Failed::new(
                CallbackFailure::ProviderError,
                format!("provider error {err}"),
            ));
        }
        match self.code.as_deref() {
            Some(code) if !code.is_empty() => Ok(code),
            _ => Err(Failed::new(CallbackFailure::MissingParameter, "no code")),
        }
    }
}

/// The state must come back to the browser that started the login (its transaction cookie).
fn bound_to_browser(cookie: Option<&str>, state: &str) -> Result<(), Failed> {
    match cookie {
        Some(v) if crypto::ct_eq(v, state) => Ok(()),
        _ => Err(Failed::new(
            CallbackFailure::UnboundState,
            "no matching transaction cookie",
        )),
    }
}

/// The issuer a login's provider answers as.
#[derive(Debug, Clone, Copy)]
struct Issuer<'a> {
    issuer: &'a str,
    /// The provider advertises `authorization_response_iss_parameter_supported`.
    always_named: bool,
}

/// Mix-up defence: the answer must arrive (at `path`) at the callback address this login's
/// provider was given (`redirect_uri`), and name that provider when it says who it is (RFC
/// 9207 §2.4: always when the provider advertises it).
fn arrived_from(
    redirect_uri: &str,
    path: &str,
    iss: Option<&str>,
    expected: Issuer,
) -> Result<(), Failed> {
    let wrong = |detail| Err(Failed::new(CallbackFailure::WrongProvider, detail));
    let arrived_where_sent = url::Url::parse(redirect_uri).is_ok_and(|u| u.path().ends_with(path));
    if !arrived_where_sent {
        return wrong("the answer arrived at another provider's callback");
    }
    match iss {
        Some(iss) if iss != expected.issuer => {
            wrong("the authorization response names another issuer (iss)")
        }
        None if expected.always_named => {
            wrong("the authorization response lacks the iss its provider advertises")
        }
        _ => Ok(()),
    }
}

/// The code for tokens, at the provider's token endpoint (with the PKCE verifier).
async fn exchange(
    provider: &Provider,
    discovery: &Discovery,
    code: &str,
    tx: &Transaction,
) -> Result<TokenResponse, Failed> {
    let exchanged = provider.exchange_code(discovery, code, &tx.verifier, &tx.redirect_uri);
    exchanged.await.map_err(|e| match e {
        ProviderError::Refused(e) => Failed::new(CallbackFailure::CodeRejected, e),
        e => Failed::new(CallbackFailure::ProviderUnavailable, e.to_string()),
    })
}

/// The ID token of the token response, verified (signature, issuer, audience, this login's
/// nonce, `at_hash`), and its claims.
async fn verify_id_token<'t>(
    provider: &Provider,
    tokens: &'t TokenResponse,
    tx: &Transaction,
) -> Result<(&'t str, IdTokenClaims), Failed> {
    let Some(id_token) = tokens.id_token.as_deref() else {
        return Err(Failed::new(
            CallbackFailure::BadIdToken,
            "no id_token in token response",
        ));
    };
    let algs = provider.algorithms();
    let rules = IdTokenRules {
        issuer: &provider.settings.issuer,
        client_id: &provider.settings.client_id,
        trusted_audiences: &provider.settings.trusted_audiences,
        nonce: Some(&tx.nonce),
        access_token: tokens.access_token.as_deref(),
        algorithms: &algs,
        leeway_secs: provider.settings.clock_skew.as_secs(),
    };
    match jwt::verify_id_token(&provider.jwks, id_token, &rules).await {
        Ok(c) => Ok((id_token, c)),
        Err(JwtError::InvalidNonce) => Err(Failed::new(CallbackFailure::NonceMismatch, "nonce")),
        // The keys could not be fetched: an outage (502), not a bad token.
        Err(e @ JwtError::JwksUnavailable(_)) => Err(Failed::new(
            CallbackFailure::ProviderUnavailable,
            e.to_string(),
        )),
        Err(e) => Err(Failed::new(CallbackFailure::BadIdToken, e.to_string())),
    }
}

/// `userinfo = "merge"`: the provider's userinfo answer joins the ID token's claims.
async fn merge_userinfo(
    provider: &Provider,
    discovery: &Discovery,
    tokens: &TokenResponse,
    claims: &mut IdTokenClaims,
) -> Result<(), Failed> {
    let fetched = match tokens.access_token.as_deref() {
        Some(at) => provider.userinfo(discovery, at, &claims.sub).await,
        None => Err(ProviderError::BadResponse(
            "no access token for the userinfo endpoint".into(),
        )),
    };
    match fetched {
        Ok(extra) => {
            super::merge_userinfo(&mut claims.other, &extra);
            Ok(())
        }
        Err(e) => Err(Failed::new(
            CallbackFailure::ProviderUnavailable,
            format!("userinfo: {e}"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn failure<T: std::fmt::Debug>(r: Result<T, Failed>) -> CallbackFailure {
        r.unwrap_err().failure
    }

    #[test]
    fn callback_query_each_parameter_once_and_a_state() {
        let p = CallbackParams::parse(&query(&[("state", "s"), ("code", "c"), ("x", "1")]));
        assert_eq!(
            p.unwrap(),
            CallbackParams {
                state: "s".into(),
                code: Some("c".into()),
                error: None,
                iss: None
            }
        );
        for dup in ["state", "code", "error", "iss"] {
            let q = query(&[("state", "s"), (dup, "a"), (dup, "b")]);
            assert_eq!(
                failure(CallbackParams::parse(&q)),
                CallbackFailure::DuplicateParameter,
                "{dup}"
            );
        }
        for q in [
            query(&[("code", "c")]),
            query(&[("state", ""), ("code", "c")]),
        ] {
            assert_eq!(
                failure(CallbackParams::parse(&q)),
                CallbackFailure::MissingParameter
            );
        }
        // Duplicates are reported before a missing state.
        let q = query(&[("code", "a"), ("code", "b")]);
        assert_eq!(
            failure(CallbackParams::parse(&q)),
            CallbackFailure::DuplicateParameter
        );
    }

    #[test]
    fn a_provider_error_wins_over_a_code_and_is_logged_tamed() {
        let parse = |q: &[(&str, &str)]| CallbackParams::parse(&query(q)).unwrap();
        assert_eq!(parse(&[("state", "s"), ("code", "c")]).code().unwrap(), "c");
        let f = parse(&[
            ("state", "s"),
            ("code", "c"),
            ("error", "access_denied\n<x> y"),
        ])
        .code()
        .unwrap_err();
        assert_eq!(f.failure, CallbackFailure::ProviderError);
        assert_eq!(f.detail, "provider error access_denied<x>y");
        assert!(!f.keep_cookie);
        let long = "e".repeat(100);
        let f = parse(&[("state", "s"), ("error", &long)])
            .code()
            .unwrap_err();
        assert_eq!(f.detail.len(), "provider error ".len() + 64);
        for q in [&[("state", "s")][..], &[("state", "s"), ("code", "")]] {
            assert_eq!(failure(parse(q).code()), CallbackFailure::MissingParameter);
        }
    }

    #[test]
    fn the_state_must_match_this_browsers_cookie() {
        assert!(bound_to_browser(Some("s1"), "s1").is_ok());
        for cookie in [None, Some(""), Some("s2"), Some("s1x")] {
            assert_eq!(
                failure(bound_to_browser(cookie, "s1")),
                CallbackFailure::UnboundState
            );
        }
    }

    #[test]
    fn mix_up_defence() {
        let uri = "https://app.example/.authgate/callback/a";
        let idp = |always_named| Issuer {
            issuer: "https://idp-a",
            always_named,
        };
        let path = "/.authgate/callback/a";
        assert!(arrived_from(uri, path, None, idp(false)).is_ok());
        assert!(arrived_from(uri, path, Some("https://idp-a"), idp(true)).is_ok());
        for (uri, path, iss, expected) in [
            (uri, "/.authgate/callback/b", None, idp(false)),
            ("not a url", path, None, idp(false)),
            (uri, path, Some("https://idp-b"), idp(false)),
            (uri, path, Some(""), idp(false)),
            (uri, path, None, idp(true)),
        ] {
            assert_eq!(
                failure(arrived_from(uri, path, iss, expected)),
                CallbackFailure::WrongProvider,
                "{uri} {path} {iss:?}"
            );
        }
    }
}
