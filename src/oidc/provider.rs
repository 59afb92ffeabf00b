//! One OpenID provider: discovery, JWKS, the token endpoint.
//!
//! Discovery (`/.well-known/openid-configuration`) and the JWKS are fetched at start and
//! refreshed in the background. A provider that is down is reported not ready (`/readyz`),
//! logins through it answer 503, and it recovers by itself; sessions already established
//! keep working, they do not need the provider on every request.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use jsonwebtoken::Algorithm;
use serde::Deserialize;

use crate::config::model::ProviderSettings;
use crate::jwt::{self, Jwks};

/// The discovery document fields we use.
#[derive(Debug, Clone, Deserialize)]
pub struct Discovery {
    pub issuer: String,
    pub authorization_endpoint: String,
    pub token_endpoint: String,
    pub jwks_uri: String,
    pub userinfo_endpoint: Option<String>,
    pub end_session_endpoint: Option<String>,
    pub introspection_endpoint: Option<String>,
    #[serde(default)]
    pub id_token_signing_alg_values_supported: Vec<String>,
    #[serde(default)]
    pub code_challenge_methods_supported: Vec<String>,
    /// RFC 9207: the provider names itself (`iss`) in every authorization response.
    #[serde(default)]
    pub authorization_response_iss_parameter_supported: bool,
}

/// Why talking to the provider failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ProviderError {
    #[error("provider not ready (discovery has not succeeded)")]
    NotReady,
    #[error("provider unreachable: {0}")]
    Unreachable(String),
    #[error("provider answered with an invalid document: {0}")]
    BadResponse(String),
    #[error("provider refused the request: {0}")]
    Refused(String),
}

/// The token endpoint's answer.
#[derive(Debug, Clone, Deserialize)]
pub struct TokenResponse {
    pub access_token: Option<String>,
    pub id_token: Option<String>,
    pub refresh_token: Option<String>,
    pub expires_in: Option<u64>,
    pub token_type: Option<String>,
}

#[derive(Debug, Deserialize)]
struct OAuthError {
    error: String,
}

pub struct Provider {
    pub settings: ProviderSettings,
    pub(super) http: reqwest::Client,
    pub jwks: Jwks,
    discovery: ArcSwap<Option<Arc<Discovery>>>,
    algorithms: ArcSwap<Vec<Algorithm>>,
    healthy: AtomicBool,
}

impl Provider {
    pub fn new(settings: ProviderSettings, http: reqwest::Client) -> Self {
        Self {
            jwks: Jwks::new(http.clone(), settings.jwks_refetch_cooldown),
            settings,
            http,
            discovery: ArcSwap::from_pointee(None),
            algorithms: ArcSwap::from_pointee(vec![Algorithm::RS256]),
            healthy: AtomicBool::new(false),
        }
    }

    pub fn id(&self) -> &str {
        &self.settings.id
    }

    pub fn is_ready(&self) -> bool {
        self.healthy.load(Ordering::Acquire)
    }

    pub fn discovery(&self) -> Option<Arc<Discovery>> {
        self.discovery.load().as_ref().clone()
    }

    /// ID token algorithms: the configured list, or the provider's, always asymmetric only.
    pub fn algorithms(&self) -> Arc<Vec<Algorithm>> {
        self.algorithms.load_full()
    }

    /// Fetch discovery and JWKS; on success the provider is ready.
    pub async fn refresh(&self) -> Result<(), ProviderError> {
        let url = format!(
            "{}/.well-known/openid-configuration",
            self.settings.issuer.trim_end_matches('/')
        );
        let resp = self
            .http
            .get(&url)
            .send()
            .await
            .map_err(|e| ProviderError::Unreachable(e.without_url().to_string()))?;
        if !resp.status().is_success() {
            return Err(ProviderError::BadResponse(format!(
                "discovery: HTTP {}",
                resp.status()
            )));
        }
        let doc: Discovery = resp
            .json()
            .await
            .map_err(|e| ProviderError::BadResponse(format!("discovery: {}", e.without_url())))?;
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
        self.jwks.set_uri(doc.jwks_uri.clone());
        self.jwks
            .fetch()
            .await
            .map_err(|e| ProviderError::Unreachable(e.to_string()))?;
        self.algorithms.store(Arc::new(algs));
        self.discovery.store(Arc::new(Some(Arc::new(doc))));
        Ok(())
    }

    /// Keep discovery and keys fresh; retry quickly while down. Runs until dropped.
    pub async fn run_refresh(self: Arc<Self>) {
        let mut retry = Duration::from_secs(1);
        loop {
            match self.refresh().await {
                Ok(()) => {
                    if !self.healthy.swap(true, Ordering::AcqRel) {
                        tracing::info!(provider = %self.settings.id, keys = self.jwks.key_count(), "provider ready");
                    }
                    retry = Duration::from_secs(1);
                    tokio::time::sleep(self.settings.refresh_interval).await;
                }
                Err(e) => {
                    // Keys already fetched stay usable; only a provider never reached is not ready.
                    if self.discovery().is_none() {
                        self.healthy.store(false, Ordering::Release);
                    }
                    tracing::warn!(provider = %self.settings.id, error = %e, "provider refresh failed; retrying in {retry:?}");
                    tokio::time::sleep(retry).await;
                    retry = (retry * 2).min(Duration::from_secs(30));
                }
            }
        }
    }

    /// The authorization request URL (code flow, PKCE S256, state, nonce).
    pub fn authorize_url(
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
    pub async fn introspect(
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
        let v: serde_json::Map<String, serde_json::Value> = resp.json().await.map_err(|e| {
            ProviderError::BadResponse(format!("introspection: {}", e.without_url()))
        })?;
        Ok((v.get("active") == Some(&serde_json::Value::Bool(true))).then_some(v))
    }

    /// Exchange an authorization code (with the PKCE verifier) for tokens.
    pub async fn exchange_code(
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
    pub async fn refresh_tokens(
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
        let body = resp
            .bytes()
            .await
            .map_err(|e| ProviderError::Unreachable(e.without_url().to_string()))?;
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
