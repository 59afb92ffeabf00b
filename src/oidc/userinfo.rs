//! The provider's userinfo endpoint (OIDC Core §5.3), for providers configured with
//! `userinfo = "merge"`: groups and other claims that some providers keep out of ID tokens
//! (Okta's org server, Keycloak without a mapper, Entra ID's group overage) still reach
//! policy and headers. Called at login and at each refresh with the access token just issued.

use serde_json::{Map, Value};

use super::provider::{Discovery, Provider, ProviderError};

/// Userinfo answers are small; a provider sending more is not answering userinfo.
const MAX_BODY: usize = 64 * 1024;

impl Provider {
    /// The userinfo claims for `access_token`, whose `sub` must be `sub` (§5.3.2: otherwise
    /// the answer is about someone else and must not be used).
    pub async fn userinfo(
        &self,
        d: &Discovery,
        access_token: &str,
        sub: &str,
    ) -> Result<Map<String, Value>, ProviderError> {
        let Some(endpoint) = &d.userinfo_endpoint else {
            return Err(ProviderError::BadResponse(
                "discovery names no userinfo_endpoint".into(),
            ));
        };
        let resp = self
            .http
            .get(endpoint)
            .bearer_auth(access_token)
            .header(http::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(|e| ProviderError::Unreachable(e.without_url().to_string()))?;
        let status = resp.status();
        if !status.is_success() {
            return Err(if status.is_client_error() {
                ProviderError::Refused(format!("userinfo: HTTP {status}"))
            } else {
                ProviderError::Unreachable(format!("userinfo: HTTP {status}"))
            });
        }
        let json = resp
            .headers()
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.to_ascii_lowercase().starts_with("application/json"));
        if !json {
            // A signed (application/jwt) answer would need its own verification rules.
            return Err(ProviderError::BadResponse(
                "userinfo answer is not application/json (signed userinfo is not supported)".into(),
            ));
        }
        if resp.content_length().is_some_and(|n| n > MAX_BODY as u64) {
            return Err(ProviderError::BadResponse(
                "userinfo answer too large".into(),
            ));
        }
        let body = resp
            .bytes()
            .await
            .map_err(|e| ProviderError::Unreachable(e.without_url().to_string()))?;
        if body.len() > MAX_BODY {
            return Err(ProviderError::BadResponse(
                "userinfo answer too large".into(),
            ));
        }
        let claims: Map<String, Value> = serde_json::from_slice(&body)
            .map_err(|e| ProviderError::BadResponse(format!("userinfo: {e}")))?;
        match claims.get("sub") {
            Some(Value::String(s)) if s == sub => Ok(claims),
            _ => Err(ProviderError::BadResponse(
                "userinfo sub is not the ID token's".into(),
            )),
        }
    }
}
