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

use bytes::Bytes;
use cookie::{Cookie, SameSite};
use http::{header, HeaderValue, StatusCode};
use pingora::http::RequestHeader;
use serde::{Deserialize, Serialize};

use super::provider::{Provider, ProviderError};
use super::redirect::RedirectPolicy;
use crate::answer::{self, Choice, Field, Outcome, SignInFailure};
use crate::config::front::CsrfSettings;
use crate::config::model::LogoutMethod;
use crate::config::provider::Userinfo;
use crate::crypto;
use crate::host::Authority;
use crate::identity::Claims;
use crate::jwt::{self, IdTokenRules, JwtError};
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
        Reply::redirect(&url).header(header::SET_COOKIE, &cookie)
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

    /// `GET {prefix}callback?code=…&state=…` (or `error=…`)
    pub(crate) async fn callback(&self, info: &RequestInfo<'_>) -> Reply {
        let q = info.query_pairs();
        let all = |k: &str| {
            q.iter()
                .filter(|(n, _)| n == k)
                .map(|(_, v)| v.as_str())
                .collect::<Vec<_>>()
        };
        let (states, codes, errors, issuers) =
            (all("state"), all("code"), all("error"), all("iss"));
        if states.len() > 1 || codes.len() > 1 || errors.len() > 1 || issuers.len() > 1 {
            return self.fail(
                info,
                CallbackFailure::DuplicateParameter,
                "repeated state/code/error/iss",
                None,
            );
        }
        let Some(state) = states.first().copied().filter(|s| !s.is_empty()) else {
            return self.fail(info, CallbackFailure::MissingParameter, "no state", None);
        };
        let cookie_name = self.tx_cookie_name(state, info.https);
        let clear = self.tx_cookie(cookie_name.clone(), String::new(), Duration::ZERO);
        // The state must come back to the browser that started the login.
        match info.cookie(&cookie_name) {
            Some(v) if crypto::ct_eq(&v, state) => {}
            _ => {
                return self.fail(
                    info,
                    CallbackFailure::UnboundState,
                    "no matching transaction cookie",
                    Some(clear),
                )
            }
        }
        let key = IdHash(crypto::sha256(state.as_bytes())).hex();
        let tx: Transaction = match self.sessions.store.take_pending(&key).await {
            Ok(Some(raw)) => match serde_json::from_slice(&raw) {
                Ok(t) => t,
                Err(_) => {
                    return self.fail(
                        info,
                        CallbackFailure::UnknownState,
                        "unreadable transaction",
                        Some(clear),
                    )
                }
            },
            Ok(None) => {
                return self.fail(
                    info,
                    CallbackFailure::UnknownState,
                    "transaction expired or already used",
                    Some(clear),
                )
            }
            Err(e) => return self.fail(info, store_failure(&e), &e.to_string(), None),
        };
        let Some(provider) = self.provider(&tx.provider) else {
            return self.fail(
                info,
                CallbackFailure::UnknownState,
                "provider no longer configured",
                Some(clear),
            );
        };
        let Some(discovery) = provider.discovery() else {
            return self.fail(
                info,
                CallbackFailure::ProviderUnavailable,
                "provider not ready",
                Some(clear),
            );
        };
        // Mix-up defence: the answer must arrive at the callback address this login's provider
        // was given, and name that provider when it says who it is (RFC 9207 §2.4: always
        // when the provider advertises it).
        let arrived_where_sent =
            url::Url::parse(&tx.redirect_uri).is_ok_and(|u| u.path().ends_with(info.path));
        if !arrived_where_sent {
            return self.fail(
                info,
                CallbackFailure::WrongProvider,
                "the answer arrived at another provider's callback",
                Some(clear),
            );
        }
        match issuers.first() {
            Some(iss) if *iss != provider.settings.issuer => {
                return self.fail(
                    info,
                    CallbackFailure::WrongProvider,
                    "the authorization response names another issuer (iss)",
                    Some(clear),
                )
            }
            None if discovery.authorization_response_iss_parameter_supported => {
                return self.fail(
                    info,
                    CallbackFailure::WrongProvider,
                    "the authorization response lacks the iss its provider advertises",
                    Some(clear),
                )
            }
            _ => {}
        }
        if let Some(err) = errors.first() {
            // The provider's own words stay in the log; the page says something safe.
            let err: String = err
                .chars()
                .filter(|c| c.is_ascii_graphic())
                .take(64)
                .collect();
            return self.fail(
                info,
                CallbackFailure::ProviderError,
                &format!("provider error {err}"),
                Some(clear),
            );
        }
        let Some(code) = codes.first().copied().filter(|c| !c.is_empty()) else {
            return self.fail(
                info,
                CallbackFailure::MissingParameter,
                "no code",
                Some(clear),
            );
        };
        let tokens = match provider
            .exchange_code(&discovery, code, &tx.verifier, &tx.redirect_uri)
            .await
        {
            Ok(t) => t,
            Err(ProviderError::Refused(e)) => {
                return self.fail(info, CallbackFailure::CodeRejected, &e, Some(clear))
            }
            Err(e) => {
                return self.fail(
                    info,
                    CallbackFailure::ProviderUnavailable,
                    &e.to_string(),
                    Some(clear),
                )
            }
        };
        let Some(id_token) = tokens.id_token.as_deref() else {
            return self.fail(
                info,
                CallbackFailure::BadIdToken,
                "no id_token in token response",
                Some(clear),
            );
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
        let mut claims = match jwt::verify_id_token(&provider.jwks, id_token, &rules).await {
            Ok(c) => c,
            Err(JwtError::InvalidNonce) => {
                return self.fail(info, CallbackFailure::NonceMismatch, "nonce", Some(clear))
            }
            // The keys could not be fetched: an outage (502), not a bad token.
            Err(e @ JwtError::JwksUnavailable(_)) => {
                return self.fail(
                    info,
                    CallbackFailure::ProviderUnavailable,
                    &e.to_string(),
                    Some(clear),
                )
            }
            Err(e) => {
                return self.fail(
                    info,
                    CallbackFailure::BadIdToken,
                    &e.to_string(),
                    Some(clear),
                )
            }
        };
        if provider.settings.userinfo == Userinfo::Merge {
            let fetched = match tokens.access_token.as_deref() {
                Some(at) => provider.userinfo(&discovery, at, &claims.sub).await,
                None => Err(ProviderError::BadResponse(
                    "no access token for the userinfo endpoint".into(),
                )),
            };
            match fetched {
                Ok(extra) => super::merge_userinfo(&mut claims.other, &extra),
                Err(e) => {
                    return self.fail(
                        info,
                        CallbackFailure::ProviderUnavailable,
                        &format!("userinfo: {e}"),
                        Some(clear),
                    )
                }
            }
        }
        let mapped = match provider.settings.claims.map(&claims) {
            Ok(m) => m,
            Err(e) => {
                return self.fail(
                    info,
                    CallbackFailure::UnverifiedIdentity,
                    &e.to_string(),
                    Some(clear),
                )
            }
        };
        // The expiry goes into a record every replica reads: on the store's clock, so a
        // replica whose clock is off does not stretch or cut it for the others.
        let now = self.sessions.store_now().await;
        let stored = Tokens {
            access_token: tokens.access_token.clone(),
            refresh_token: tokens.refresh_token.clone(),
            id_token: Some(id_token.to_string()),
            access_token_expires_at: tokens.expires_in.map(|s| now + s),
        };
        let cookie_value = match self
            .sessions
            .create(provider.id(), mapped, claims.sid.clone(), &stored)
            .await
        {
            Ok(c) => c,
            Err(e) => return self.fail(info, store_failure(&e), &e.to_string(), Some(clear)),
        };
        self.metrics.logins.with_label_values(&["completed"]).inc();
        tracing::info!(request_id = info.request_id, provider = provider.id(), sub = %claims.sub, "login completed");
        let target = self.redirects.validate_or_root(&tx.return_to);
        Reply::redirect(&target)
            .header(
                header::SET_COOKIE,
                &self.sessions.set_cookie(&cookie_value, info.https),
            )
            .header(header::SET_COOKIE, &clear)
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
        let Some(id) = self
            .sessions
            .read_cookie(&info.req.headers, info.https)
            .id()
        else {
            return Reply::redirect(&return_to).header(header::SET_COOKIE, &clear);
        };
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
        let session = match self.sessions.load(&id).await {
            Ok(s) => s,
            Err(e) => return self.store_down(info, &e),
        };
        let Some(session) = session else {
            return Reply::redirect(&return_to).header(header::SET_COOKIE, &clear);
        };
        let tokens = self.sessions.tokens(&session).unwrap_or_default();
        if let Err(e) = self.sessions.destroy(&session.hash).await {
            return self.store_down(info, &e);
        }
        tracing::info!(request_id = info.request_id, sub = %session.record.claims.sub, user = %session.record.claims.subject, "logout");
        let provider = self.provider(&session.record.provider);
        let end_session = provider
            .and_then(|p| p.discovery())
            .and_then(|d| d.end_session_endpoint.clone());
        match (provider, end_session, tokens.id_token) {
            (Some(p), Some(endpoint), Some(hint)) => {
                // post_logout_redirect_uri must be absolute and registered at the provider.
                let post_logout = if return_to.starts_with('/') {
                    format!("{}{}", info.origin(), return_to)
                } else {
                    return_to
                };
                if p.settings.logout_method == LogoutMethod::Get {
                    let Ok(mut u) = url::Url::parse(&endpoint) else {
                        return Reply::redirect(&post_logout).header(header::SET_COOKIE, &clear);
                    };
                    u.query_pairs_mut()
                        .append_pair("id_token_hint", &hint)
                        .append_pair("post_logout_redirect_uri", &post_logout)
                        .append_pair("client_id", &p.settings.client_id);
                    return Reply::redirect(u.as_str()).header(header::SET_COOKIE, &clear);
                }
                let fields = [
                    Field {
                        name: "id_token_hint",
                        value: &hint,
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
                let script_nonce = crypto::random_token();
                let outcome = Outcome::SigningOut {
                    endpoint: &endpoint,
                    fields: &fields,
                    script_nonce: &script_nonce,
                };
                answer::respond(&outcome, info.audience(), info.request_id)
                    .header(header::SET_COOKIE, &clear)
            }
            _ => Reply::redirect(&return_to).header(header::SET_COOKIE, &clear),
        }
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
        // Public keys: cacheable, unlike every other gateway answer.
        Reply {
            status: StatusCode::OK,
            headers: vec![
                (
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/jwk-set+json"),
                ),
                (
                    header::CACHE_CONTROL,
                    HeaderValue::from_static("public, max-age=300"),
                ),
            ],
            body: Bytes::from(self.assertion.jwks().to_string()),
        }
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
                let c: &Claims = &s.record.claims;
                Reply::json(
                    StatusCode::OK,
                    serde_json::json!({
                        // The provider's sub (with `provider`, the user for good) and the
                        // user as headers show it (user_claim).
                        "sub": if c.sub.is_empty() { &c.subject } else { &c.sub },
                        "user": c.subject,
                        "email": c.email,
                        "email_verified": c.email_verified,
                        "name": c.name,
                        "preferred_username": c.preferred_username,
                        "groups": c.groups,
                        "provider": s.record.provider,
                        "expires_at": s.record.expires_at,
                    }),
                )
            }
        }
    }
}
