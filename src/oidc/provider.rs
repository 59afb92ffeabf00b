//! One OpenID provider: discovery, JWKS, the token endpoint.
//!
//! Discovery (`/.well-known/openid-configuration`) and the JWKS are fetched at start and
//! refreshed in the background every `refresh_interval`; in between, a probe fetches
//! discovery and the JWKS (checked, not kept) about every [`PROBE_INTERVAL`] (up to 20 % sooner, so
//! replicas do not probe in step) to notice a provider, or only its keys endpoint, that went
//! away. After `max_refresh_failures` consecutive failed attempts (retried after 1 s, 2 s, 4 s,
//! then every [`RETRY_MAX`]), or as many failures among the last [`LIVENESS_WINDOW`] attempts
//! (a flapping provider), the provider is unavailable: reported not ready (`/readyz`),
//! sign-in through it answers 503 (never a redirect to a provider that is down), and it
//! recovers by itself after [`RECOVERY_SUCCESSES`] successful refreshes in a row (retried
//! after [`RETRY_FIRST`] while recovering). Sessions already established keep working, they do not need
//! the provider on every request; bearer tokens whose key is cached keep verifying.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use jsonwebtoken::Algorithm;
use serde::Deserialize;

use crate::config::model::ProviderSettings;
use crate::jwt::{self, Jwks};
use crate::ratelimit_log::Throttle;

/// Between full refreshes, discovery alone is fetched this often: how soon a provider that
/// went away is noticed (with `refresh_interval` shorter, every attempt is a full refresh).
pub(crate) const PROBE_INTERVAL: Duration = Duration::from_secs(5);
/// The first retry after a failed attempt; each next one waits twice as long, up to
/// [`RETRY_MAX`].
pub(crate) const RETRY_FIRST: Duration = Duration::from_secs(1);
/// The longest wait between attempts while the provider fails: how soon it is back in use.
pub(crate) const RETRY_MAX: Duration = Duration::from_secs(5);
/// Attempts (probes and refreshes) whose outcomes count for a flapping provider: it is
/// unavailable once `max_refresh_failures` of the last this many failed, even with
/// successes in between.
pub(crate) const LIVENESS_WINDOW: usize = 10;
/// Successful attempts in a row that bring an unavailable provider back (one success
/// between failures is a flapping provider, not a recovery). A provider never reached yet
/// is ready at its first success.
pub(crate) const RECOVERY_SUCCESSES: u32 = 2;
/// Each background request (discovery, JWKS) fails after this: a provider that accepts
/// connections but does not answer counts as down within seconds, not the client's 10 s.
pub(crate) const REFRESH_TIMEOUT: Duration = Duration::from_secs(5);

/// A provider's health as `/readyz` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ProviderStatus {
    /// Sign-in through it is possible: discovery and keys fetched, fewer than
    /// `max_refresh_failures` attempts failed in a row or among the last
    /// [`LIVENESS_WINDOW`] since, and (after an outage) [`RECOVERY_SUCCESSES`] in a row.
    pub(crate) ready: bool,
    pub(crate) consecutive_failures: u32,
    /// Failed attempts among the last [`LIVENESS_WINDOW`] (a flapping provider is
    /// unavailable once this reaches `max_refresh_failures`).
    pub(crate) recent_failures: u32,
    /// The last attempt's error, while failing.
    pub(crate) last_error: Option<String>,
    /// How long it has been unavailable (`None` while ready).
    pub(crate) unavailable_for: Option<Duration>,
}

/// What the refresh loop knows about failures, for the status and the log lines.
#[derive(Default)]
struct Liveness {
    last_error: Option<String>,
    /// When the current run of failures began.
    failing_since: Option<Instant>,
    /// When the provider was marked unavailable.
    unavailable_since: Option<Instant>,
    /// It was ready once (a later "ready" is a recovery, not the start).
    was_ready: bool,
    /// Outcomes of the last [`LIVENESS_WINDOW`] attempts (`true`: failed), oldest first.
    recent: std::collections::VecDeque<bool>,
    /// Successful attempts in a row.
    successes: u32,
}

impl Liveness {
    fn record(&mut self, failed: bool) {
        if self.recent.len() == LIVENESS_WINDOW {
            self.recent.pop_front();
        }
        self.recent.push_back(failed);
    }

    fn recent_failures(&self) -> u32 {
        self.recent.iter().filter(|f| **f).count() as u32
    }
}

/// `d` less up to 20 %: periodic requests of several replicas (and providers) do not line
/// up, and no wait is longer than its nominal value (the detection bounds hold).
fn jittered(d: Duration) -> Duration {
    d.mul_f64(rand::random_range(0.8..=1.0))
}

/// The discovery document fields we use.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct Discovery {
    pub(crate) issuer: String,
    pub(crate) authorization_endpoint: String,
    pub(crate) token_endpoint: String,
    pub(crate) jwks_uri: String,
    pub(crate) userinfo_endpoint: Option<String>,
    pub(crate) end_session_endpoint: Option<String>,
    pub(crate) introspection_endpoint: Option<String>,
    #[serde(default)]
    pub(crate) id_token_signing_alg_values_supported: Vec<String>,
    #[serde(default)]
    pub(crate) code_challenge_methods_supported: Vec<String>,
    /// RFC 9207: the provider names itself (`iss`) in every authorization response.
    #[serde(default)]
    pub(crate) authorization_response_iss_parameter_supported: bool,
}

/// Why talking to the provider failed.
#[derive(Debug, Clone, thiserror::Error)]
pub(crate) enum ProviderError {
    #[error("provider not ready (discovery has not succeeded)")]
    NotReady,
    #[error("provider unreachable: {0}")]
    Unreachable(String),
    #[error("provider answered with an invalid document: {0}")]
    BadResponse(String),
    #[error("provider refused the request: {0}")]
    Refused(String),
}

impl ProviderError {
    /// The kind of this error for rate-limited log lines: variant and message up to its
    /// varying values ([`crate::ratelimit_log::error_kind`]), so a new cause is logged at
    /// once while the same one repeats silently.
    pub(crate) fn kind(&self) -> String {
        let (variant, message) = match self {
            Self::NotReady => ("NotReady", ""),
            Self::Unreachable(m) => ("Unreachable", m.as_str()),
            Self::BadResponse(m) => ("BadResponse", m.as_str()),
            Self::Refused(m) => ("Refused", m.as_str()),
        };
        crate::ratelimit_log::error_kind(variant, message)
    }
}

/// The token endpoint's answer.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct TokenResponse {
    pub(crate) access_token: Option<String>,
    pub(crate) id_token: Option<String>,
    pub(crate) refresh_token: Option<String>,
    pub(crate) expires_in: Option<u64>,
}

#[derive(Debug, Deserialize)]
struct OAuthError {
    error: String,
}

pub(crate) struct Provider {
    pub(crate) settings: ProviderSettings,
    pub(super) http: reqwest::Client,
    pub(crate) jwks: Jwks,
    discovery: ArcSwap<Option<Arc<Discovery>>>,
    algorithms: ArcSwap<Vec<Algorithm>>,
    healthy: AtomicBool,
    /// Failed attempts in a row (0 after a success).
    failures: AtomicU32,
    liveness: Mutex<Liveness>,
    /// Refresh failures are logged once per [`crate::ratelimit_log::WINDOW`], with a count.
    failure_log: Throttle,
    /// Where discovery and JWKS fetches are counted (see [`Provider::count_in`]).
    counts: Option<crate::metrics::FetchMetrics>,
}

impl Provider {
    pub(crate) fn new(settings: ProviderSettings, http: reqwest::Client) -> Self {
        Self {
            jwks: Jwks::new(http.clone(), settings.jwks_refetch_cooldown),
            settings,
            http,
            discovery: ArcSwap::from_pointee(None),
            algorithms: ArcSwap::from_pointee(vec![Algorithm::RS256]),
            healthy: AtomicBool::new(false),
            failures: AtomicU32::new(0),
            liveness: Mutex::new(Liveness::default()),
            failure_log: Throttle::new(crate::ratelimit_log::WINDOW),
            counts: None,
        }
    }

    /// Count this provider's discovery and JWKS fetches in `metrics`.
    pub(crate) fn count_in(mut self, metrics: &crate::metrics::Metrics) -> Self {
        let counts = metrics.fetches(&self.settings.id);
        self.jwks.count_in(counts.clone());
        self.counts = Some(counts);
        self
    }

    pub(crate) fn id(&self) -> &str {
        &self.settings.id
    }

    /// Whether sign-in through this provider is possible now (see [`ProviderStatus::ready`]).
    pub(crate) fn is_ready(&self) -> bool {
        self.healthy.load(Ordering::Acquire)
    }

    /// Health details for `/readyz`.
    pub(crate) fn status(&self) -> ProviderStatus {
        let l = self.liveness.lock().unwrap_or_else(|e| e.into_inner());
        ProviderStatus {
            ready: self.is_ready(),
            consecutive_failures: self.failures.load(Ordering::Acquire),
            recent_failures: l.recent_failures(),
            last_error: l.last_error.clone(),
            unavailable_for: l.unavailable_since.map(|t| t.elapsed()),
        }
    }

    pub(crate) fn discovery(&self) -> Option<Arc<Discovery>> {
        self.discovery.load().as_ref().clone()
    }

    /// ID token algorithms: the configured list, or the provider's, always asymmetric only.
    pub(crate) fn algorithms(&self) -> Arc<Vec<Algorithm>> {
        self.algorithms.load_full()
    }

    /// Fetch discovery and JWKS, and keep them (the background loop, [`Provider::run_refresh`],
    /// decides readiness from the outcome).
    pub(crate) async fn refresh(&self) -> Result<(), ProviderError> {
        let (doc, algs) = self.fetch_discovery().await?;
        self.jwks.set_uri(doc.jwks_uri.clone());
        self.jwks
            .fetch()
            .await
            .map_err(|e| ProviderError::Unreachable(e.to_string()))?;
        self.algorithms.store(Arc::new(algs));
        self.discovery.store(Arc::new(Some(Arc::new(doc))));
        Ok(())
    }

    /// Is the provider still there? Discovery fetched and checked like a refresh, then the
    /// JWKS it names fetched (bounded, timed out) and checked to be a key set with keys;
    /// nothing kept. A keys endpoint that died alone is noticed here, not at the next full
    /// refresh (`refresh_interval`, 10 minutes by default).
    async fn probe(&self) -> Result<(), ProviderError> {
        let (doc, _) = self.fetch_discovery().await?;
        let outcome = self.probe_jwks(&doc.jwks_uri).await;
        if let Some(c) = &self.counts {
            c.jwks(outcome.is_ok());
        }
        outcome
    }

    /// The probe's JWKS fetch: a key set with keys, nothing kept.
    async fn probe_jwks(&self, uri: &str) -> Result<(), ProviderError> {
        let resp = self
            .http
            .get(uri)
            .timeout(REFRESH_TIMEOUT)
            .send()
            .await
            .map_err(|e| ProviderError::Unreachable(format!("jwks: {}", e.without_url())))?;
        if !resp.status().is_success() {
            return Err(ProviderError::BadResponse(format!(
                "jwks: HTTP {}",
                resp.status()
            )));
        }
        let body = crate::fetch::read_capped(resp, crate::fetch::MAX_ANSWER)
            .await
            .map_err(|e| ProviderError::BadResponse(format!("jwks: {e}")))?;
        #[derive(Deserialize)]
        struct KeySet {
            keys: Vec<serde::de::IgnoredAny>,
        }
        match serde_json::from_slice::<KeySet>(&body) {
            Ok(set) if !set.keys.is_empty() => Ok(()),
            Ok(_) => Err(ProviderError::BadResponse("jwks: no keys".into())),
            Err(e) => Err(ProviderError::BadResponse(format!("jwks: {e}"))),
        }
    }

    /// The discovery document, checked, and the ID token algorithms it leads to; counted.
    async fn fetch_discovery(&self) -> Result<(Discovery, Vec<Algorithm>), ProviderError> {
        let outcome = self.discover().await;
        if let Some(c) = &self.counts {
            c.discovery(outcome.is_ok());
        }
        outcome
    }

    async fn discover(&self) -> Result<(Discovery, Vec<Algorithm>), ProviderError> {
        let url = format!(
            "{}/.well-known/openid-configuration",
            self.settings.issuer.trim_end_matches('/')
        );
        let resp = self
            .http
            .get(&url)
            .timeout(REFRESH_TIMEOUT)
            .send()
            .await
            .map_err(|e| ProviderError::Unreachable(e.without_url().to_string()))?;
        if !resp.status().is_success() {
            return Err(ProviderError::BadResponse(format!(
                "discovery: HTTP {}",
                resp.status()
            )));
        }
        let body = crate::fetch::read_capped(resp, crate::fetch::MAX_ANSWER)
            .await
            .map_err(|e| ProviderError::BadResponse(format!("discovery: {e}")))?;
        let doc: Discovery = serde_json::from_slice(&body)
            .map_err(|e| ProviderError::BadResponse(format!("discovery: {e}")))?;
        // OIDC Discovery §4.3: the issuer must be exactly the one configured.
        if doc.issuer != self.settings.issuer {
            return Err(ProviderError::BadResponse(format!(
                "discovery issuer {:?} is not the configured {:?}",
                doc.issuer, self.settings.issuer
            )));
        }
        // Endpoints the gateway sends secrets to (client credentials, codes, tokens) or takes
        // keys from: https only, plain http only on this machine, like the issuer.
        let endpoints = [
            ("jwks_uri", Some(&doc.jwks_uri)),
            ("authorization_endpoint", Some(&doc.authorization_endpoint)),
            ("token_endpoint", Some(&doc.token_endpoint)),
            ("userinfo_endpoint", doc.userinfo_endpoint.as_ref()),
            (
                "introspection_endpoint",
                doc.introspection_endpoint.as_ref(),
            ),
            ("end_session_endpoint", doc.end_session_endpoint.as_ref()),
        ];
        for (name, value) in endpoints {
            let Some(value) = value else { continue };
            match url::Url::parse(value) {
                Ok(u) if u.scheme() == "https" => {}
                Ok(u) if u.scheme() == "http" && crate::config::provider::is_loopback(&u) => {}
                Ok(_) => {
                    return Err(ProviderError::BadResponse(format!(
                        "discovery {name} {value:?} is not https:// (plain http only on this machine: localhost, 127.0.0.1, [::1])"
                    )))
                }
                Err(e) => {
                    return Err(ProviderError::BadResponse(format!(
                        "discovery {name} {value:?} is not a URL: {e}"
                    )))
                }
            }
        }
        if !doc.code_challenge_methods_supported.is_empty()
            && !doc
                .code_challenge_methods_supported
                .iter()
                .any(|m| m == "S256")
        {
            // Not retried into success: sign-in through this provider stays off until its
            // metadata changes, and the log says why at every attempt.
            return Err(ProviderError::BadResponse(format!(
                "the provider does not support PKCE with S256 (code_challenge_methods_supported = {:?}); authgate requires it, so sign-in through this provider is off",
                doc.code_challenge_methods_supported
            )));
        }
        let algs = match &self.settings.algorithms {
            Some(configured) => jwt::allowed_algorithms(configured.iter().map(String::as_str)),
            None if doc.id_token_signing_alg_values_supported.is_empty() => vec![Algorithm::RS256],
            None => jwt::allowed_algorithms(
                doc.id_token_signing_alg_values_supported
                    .iter()
                    .map(String::as_str),
            ),
        };
        if algs.is_empty() {
            return Err(ProviderError::BadResponse(
                "no acceptable ID token signing algorithm".into(),
            ));
        }
        Ok((doc, algs))
    }

    /// Keep discovery and keys fresh, notice a provider that went away, retry quickly while
    /// it is down. Runs until dropped.
    pub(crate) async fn run_refresh(self: Arc<Self>) {
        let interval = self.settings.refresh_interval;
        let between = interval.clamp(Duration::from_millis(200), PROBE_INTERVAL);
        let mut retry = RETRY_FIRST;
        let mut last_full: Option<Instant> = None;
        loop {
            // A full refresh when due, and for every attempt of a provider not in use: it
            // may come back with new keys (a restarted provider usually does).
            let full = !self.is_ready() || last_full.is_none_or(|t| t.elapsed() >= interval);
            let outcome = if full {
                self.refresh().await
            } else {
                self.probe().await
            };
            match outcome {
                Ok(()) => {
                    if full {
                        last_full = Some(Instant::now());
                    }
                    self.succeeded();
                    retry = RETRY_FIRST;
                    // Recovering: confirm soon rather than a probe interval later.
                    let next = if self.is_ready() {
                        between
                    } else {
                        RETRY_FIRST
                    };
                    tokio::time::sleep(jittered(next)).await;
                }
                Err(e) => {
                    self.failed(&e, retry);
                    tokio::time::sleep(jittered(retry)).await;
                    retry = (retry * 2).min(RETRY_MAX);
                }
            }
        }
    }

    /// A successful attempt: ready (again).
    fn succeeded(&self) {
        let mut l = self.liveness.lock().unwrap_or_else(|e| e.into_inner());
        l.record(false);
        l.successes = l.successes.saturating_add(1);
        // Unavailable after having been in use: back only after a few successes in a row.
        // (The failures of the outage stay counted until then.)
        if l.unavailable_since.is_some() && l.was_ready && l.successes < RECOVERY_SUCCESSES {
            return;
        }
        let failures = self.failures.swap(0, Ordering::AcqRel);
        let down = l.unavailable_since.take();
        let failing = l.failing_since.take();
        l.last_error = None;
        let recovery = std::mem::replace(&mut l.was_ready, true);
        drop(l);
        if !self.healthy.swap(true, Ordering::AcqRel) {
            match down {
                Some(t) if recovery => tracing::warn!(
                    provider = %self.settings.id,
                    keys = self.jwks.key_count(),
                    unavailable_s = t.elapsed().as_secs_f64(),
                    failures,
                    "provider ready again after {:.1} s unavailable ({failures} failed attempts)",
                    t.elapsed().as_secs_f64()
                ),
                Some(t) => tracing::info!(
                    provider = %self.settings.id,
                    keys = self.jwks.key_count(),
                    "provider ready ({failures} failed attempts in {:.1} s since start)",
                    t.elapsed().as_secs_f64()
                ),
                None => {
                    tracing::info!(provider = %self.settings.id, keys = self.jwks.key_count(), "provider ready")
                }
            }
        } else if failures > 0 {
            let for_s = failing.map_or(0.0, |t| t.elapsed().as_secs_f64());
            tracing::info!(provider = %self.settings.id, failures, "provider answering again after {failures} failed attempts in {for_s:.1} s (never marked unavailable)");
        }
        // A new outage is reported at its first failure, without the old one's count.
        self.failure_log.clear();
    }

    /// A failed attempt: unavailable once `max_refresh_failures` failed in a row, or at once
    /// while the provider was never reached (nothing to sign in with).
    fn failed(&self, e: &ProviderError, retry: Duration) {
        let failures = self
            .failures
            .fetch_add(1, Ordering::AcqRel)
            .saturating_add(1);
        let never_reached = self.discovery().is_none();
        let limit = self.settings.max_refresh_failures;
        let mut l = self.liveness.lock().unwrap_or_else(|e| e.into_inner());
        l.record(true);
        l.successes = 0;
        let recent = l.recent_failures();
        l.last_error = Some(e.to_string());
        let failing_since = *l.failing_since.get_or_insert_with(Instant::now);
        let goes_down = (never_reached || failures >= limit || recent >= limit)
            && l.unavailable_since.is_none();
        if goes_down {
            l.unavailable_since = Some(Instant::now());
        }
        drop(l);
        if goes_down {
            self.healthy.store(false, Ordering::Release);
            if !never_reached {
                if failures >= limit {
                    tracing::error!(
                        provider = %self.settings.id,
                        failures,
                        error = %e,
                        "provider unavailable after {failures} failed refreshes in {:.1} s: sign-in through it answers 503 until it is back; sessions and cached keys keep working",
                        failing_since.elapsed().as_secs_f64()
                    );
                } else {
                    tracing::error!(
                        provider = %self.settings.id,
                        failures = recent,
                        error = %e,
                        "provider unavailable: {recent} of its last {LIVENESS_WINDOW} attempts failed (flapping): sign-in through it answers 503 until it answers {RECOVERY_SUCCESSES} times in a row; sessions and cached keys keep working"
                    );
                }
                return;
            }
        }
        if let Some(n) = self.failure_log.hit(&e.kind()) {
            tracing::warn!(provider = %self.settings.id, error = %e, occurrences = n.count, "provider refresh failed{n}; retrying in {retry:?}");
        }
    }

    /// The authorization request URL (code flow, PKCE S256, state, nonce).
    pub(crate) fn authorize_url(
        &self,
        d: &Discovery,
        redirect_uri: &str,
        state: &str,
        nonce: &str,
        code_challenge: &str,
    ) -> Result<String, ProviderError> {
        let mut u = url::Url::parse(&d.authorization_endpoint)
            .map_err(|e| ProviderError::BadResponse(format!("authorization_endpoint: {e}")))?;
        {
            let mut q = u.query_pairs_mut();
            q.append_pair("response_type", "code")
                .append_pair("client_id", &self.settings.client_id)
                .append_pair("redirect_uri", redirect_uri)
                .append_pair("scope", &self.settings.scopes.join(" "))
                .append_pair("state", state)
                .append_pair("nonce", nonce)
                .append_pair("code_challenge", code_challenge)
                .append_pair("code_challenge_method", "S256");
            for (k, v) in &self.settings.extra_auth_params {
                q.append_pair(k, v);
            }
        }
        Ok(u.to_string())
    }

    /// Client authentication for the token and introspection endpoints: HTTP Basic with the
    /// form-urlencoded credentials (RFC 6749 §2.3.1), or a public client's `client_id`.
    fn client_auth<'a>(
        &'a self,
        req: reqwest::RequestBuilder,
        form: &mut Vec<(&'a str, &'a str)>,
    ) -> reqwest::RequestBuilder {
        match &self.settings.client_secret {
            Some(secret) => {
                let enc = |s: &str| {
                    url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>()
                };
                req.basic_auth(enc(&self.settings.client_id), Some(enc(secret.expose())))
            }
            None => {
                form.push(("client_id", &self.settings.client_id));
                req
            }
        }
    }

    /// RFC 7662 introspection of an opaque access token. `Ok(None)`: the provider says the
    /// token is not active. A provider without an introspection endpoint is an error (a
    /// configuration that cannot work, so 503 and a log line), not "every token inactive".
    pub(crate) async fn introspect(
        &self,
        token: &str,
    ) -> Result<Option<serde_json::Map<String, serde_json::Value>>, ProviderError> {
        let Some(d) = self.discovery() else {
            return Err(ProviderError::NotReady);
        };
        let Some(endpoint) = &d.introspection_endpoint else {
            return Err(ProviderError::BadResponse(
                "introspect_opaque_tokens = true but discovery has no introspection_endpoint"
                    .into(),
            ));
        };
        let mut form = vec![("token", token), ("token_type_hint", "access_token")];
        let req = self.client_auth(self.http.post(endpoint), &mut form);
        let resp = req
            .form(&form)
            .send()
            .await
            .map_err(|e| ProviderError::Unreachable(e.without_url().to_string()))?;
        if !resp.status().is_success() {
            return Err(ProviderError::Unreachable(format!(
                "introspection: HTTP {}",
                resp.status()
            )));
        }
        let body = crate::fetch::read_capped(resp, crate::fetch::MAX_ANSWER)
            .await
            .map_err(|e| ProviderError::BadResponse(format!("introspection: {e}")))?;
        let v: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(&body)
            .map_err(|e| ProviderError::BadResponse(format!("introspection: {e}")))?;
        Ok((v.get("active") == Some(&serde_json::Value::Bool(true))).then_some(v))
    }

    /// Exchange an authorization code (with the PKCE verifier) for tokens.
    pub(crate) async fn exchange_code(
        &self,
        d: &Discovery,
        code: &str,
        verifier: &str,
        redirect_uri: &str,
    ) -> Result<TokenResponse, ProviderError> {
        self.token_request(
            d,
            vec![
                ("grant_type", "authorization_code"),
                ("code", code),
                ("redirect_uri", redirect_uri),
                ("code_verifier", verifier),
            ],
        )
        .await
    }

    /// Trade a refresh token for new tokens. `Refused("invalid_grant")`: the refresh token is
    /// spent, expired or revoked, so the session is over.
    pub(crate) async fn refresh_tokens(
        &self,
        d: &Discovery,
        refresh_token: &str,
    ) -> Result<TokenResponse, ProviderError> {
        self.token_request(
            d,
            vec![
                ("grant_type", "refresh_token"),
                ("refresh_token", refresh_token),
            ],
        )
        .await
    }

    async fn token_request(
        &self,
        d: &Discovery,
        mut form: Vec<(&str, &str)>,
    ) -> Result<TokenResponse, ProviderError> {
        let req = self.client_auth(self.http.post(&d.token_endpoint), &mut form);
        let resp = req
            .form(&form)
            .send()
            .await
            .map_err(|e| ProviderError::Unreachable(e.without_url().to_string()))?;
        let status = resp.status();
        let body = crate::fetch::read_capped(resp, crate::fetch::MAX_ANSWER)
            .await
            .map_err(|e| ProviderError::Unreachable(format!("token endpoint: {e}")))?;
        if !status.is_success() {
            let err = serde_json::from_slice::<OAuthError>(&body)
                .map(|e| e.error)
                .unwrap_or_else(|_| format!("HTTP {status}"));
            return if status.is_client_error() {
                Err(ProviderError::Refused(err))
            } else {
                Err(ProviderError::Unreachable(err))
            };
        }
        serde_json::from_slice(&body)
            .map_err(|e| ProviderError::BadResponse(format!("token response: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A provider serving discovery and a JWKS, or 503 for everything while `down` is set.
    async fn switchable_provider(down: Arc<AtomicBool>) -> String {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let issuer = format!("http://{}", l.local_addr().unwrap());
        let pair = rcgen::KeyPair::generate().unwrap();
        let key = jsonwebtoken::EncodingKey::from_ec_pem(pair.serialize_pem().as_bytes()).unwrap();
        let jwk = jsonwebtoken::jwk::Jwk::from_encoding_key(&key, Algorithm::ES256).unwrap();
        let jwks = serde_json::json!({ "keys": [jwk] }).to_string();
        let discovery = serde_json::json!({
            "issuer": issuer,
            "authorization_endpoint": format!("{issuer}/auth"),
            "token_endpoint": format!("{issuer}/token"),
            "jwks_uri": format!("{issuer}/jwks"),
            "id_token_signing_alg_values_supported": ["ES256"],
        })
        .to_string();
        tokio::spawn(async move {
            while let Ok((s, _)) = l.accept().await {
                let (down, jwks, discovery) = (down.clone(), jwks.clone(), discovery.clone());
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req: hyper::Request<_>| {
                        let (status, body) = if down.load(Ordering::SeqCst) {
                            (503, String::new())
                        } else if req.uri().path() == "/jwks" {
                            (200, jwks.clone())
                        } else {
                            (200, discovery.clone())
                        };
                        async move {
                            let mut r = hyper::Response::new(http_body_util::Full::new(
                                bytes::Bytes::from(body),
                            ));
                            *r.status_mut() = hyper::StatusCode::from_u16(status).unwrap();
                            Ok::<_, std::convert::Infallible>(r)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(s), svc)
                        .await;
                });
            }
        });
        issuer
    }

    async fn within(limit: Duration, cond: impl Fn() -> bool) -> Option<Duration> {
        let start = Instant::now();
        while start.elapsed() < limit {
            if cond() {
                return Some(start.elapsed());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        None
    }

    /// Unavailable after `max_refresh_failures` failures in a row, with the details `/readyz`
    /// shows; ready again at the first success; keys kept throughout.
    /// A provider failing every other attempt (SRE review of issue 13): the old counter of
    /// failures in a row never reached the limit, so it was reported ready; now the failures
    /// among the last attempts count, and one success between failures is no recovery.
    #[test]
    fn a_flapping_provider_is_unavailable() {
        let config = crate::config::parse(
            std::path::Path::new("t.toml"),
            "[[providers]]\nid = \"p\"\nissuer = \"https://idp.example\"\nclient_id = \"gw\"\n",
        )
        .unwrap();
        let limit = config.providers[0].max_refresh_failures;
        assert_eq!(limit, 3);
        let p = Provider::new(config.providers[0].clone(), reqwest::Client::new());
        let doc: Discovery = serde_json::from_value(serde_json::json!({
            "issuer": "https://idp.example",
            "authorization_endpoint": "https://idp.example/auth",
            "token_endpoint": "https://idp.example/token",
            "jwks_uri": "https://idp.example/jwks",
        }))
        .unwrap();
        p.discovery.store(Arc::new(Some(Arc::new(doc))));
        p.succeeded();
        assert!(p.is_ready());
        let e = ProviderError::BadResponse("discovery: HTTP 500".into());
        let mut ready_after = Vec::new();
        for i in 0..20 {
            if i % 2 == 0 {
                p.failed(&e, RETRY_FIRST);
            } else {
                p.succeeded();
            }
            ready_after.push(p.is_ready());
        }
        // Ready through the first two failures (each followed by a success), unavailable at
        // the third and from then on.
        assert_eq!(
            &ready_after[..4],
            &[true, true, true, true],
            "{ready_after:?}"
        );
        assert!(ready_after[4..].iter().all(|r| !r), "{ready_after:?}");
        let st = p.status();
        assert!(st.recent_failures >= limit, "{st:?}");
        // Back after RECOVERY_SUCCESSES in a row.
        p.failed(&e, RETRY_FIRST);
        for _ in 0..RECOVERY_SUCCESSES {
            assert!(!p.is_ready());
            p.succeeded();
        }
        assert!(p.is_ready());
    }

    #[tokio::test]
    async fn unavailable_after_consecutive_failures_then_back() {
        let down = Arc::new(AtomicBool::new(false));
        let issuer = switchable_provider(down.clone()).await;
        let config = crate::config::parse(
            std::path::Path::new("t.toml"),
            &format!("[[providers]]\nid = \"p\"\nissuer = \"{issuer}\"\nclient_id = \"gw\"\nrefresh_interval = \"1s\"\nmax_refresh_failures = 2\n"),
        )
        .unwrap();
        assert_eq!(config.providers[0].max_refresh_failures, 2);
        let p = Arc::new(Provider::new(
            config.providers[0].clone(),
            reqwest::Client::new(),
        ));
        let task = tokio::spawn(p.clone().run_refresh());
        assert!(within(Duration::from_secs(5), || p.is_ready())
            .await
            .is_some());
        let keys = p.jwks.key_count();
        assert_eq!(keys, 1);
        assert_eq!(p.status().unavailable_for, None);

        down.store(true, Ordering::SeqCst);
        // Next attempt within 1 s, the second failure 1 s later.
        let t = within(Duration::from_secs(5), || !p.is_ready())
            .await
            .expect("never marked unavailable");
        assert!(t >= Duration::from_millis(900), "after one failure: {t:?}");
        let st = p.status();
        assert!(!st.ready && st.consecutive_failures >= 2, "{st:?}");
        assert!(st.last_error.as_deref().unwrap().contains("503"), "{st:?}");
        assert!(st.unavailable_for.is_some());
        assert_eq!(p.jwks.key_count(), keys, "cached keys are kept");
        assert!(p.discovery().is_some());

        down.store(false, Ordering::SeqCst);
        within(RETRY_MAX + Duration::from_secs(1), || p.is_ready())
            .await
            .expect("not back within the longest retry");
        let st = p.status();
        assert_eq!(
            (st.consecutive_failures, st.last_error, st.unavailable_for),
            (0, None, None)
        );
        task.abort();
    }

    #[test]
    fn max_refresh_failures_is_validated() {
        let parse = |v: &str| {
            crate::config::parse(
                std::path::Path::new("t.toml"),
                &format!("[[providers]]\nid = \"p\"\nissuer = \"https://idp.example\"\nclient_id = \"gw\"\nmax_refresh_failures = {v}\n"),
            )
        };
        assert_eq!(parse("1").unwrap().providers[0].max_refresh_failures, 1);
        for bad in ["0", "-1", "101"] {
            let Err(e) = parse(bad) else {
                panic!("max_refresh_failures = {bad} accepted")
            };
            let e = format!("{e:?}");
            assert!(e.contains("max_refresh_failures"), "{bad}: {e}");
        }
        let default = crate::config::parse(
            std::path::Path::new("t.toml"),
            "[[providers]]\nid = \"p\"\nissuer = \"https://idp.example\"\nclient_id = \"gw\"\n",
        )
        .unwrap();
        assert_eq!(
            default.providers[0].max_refresh_failures,
            crate::config::provider::DEFAULT_MAX_REFRESH_FAILURES
        );
    }
}
