//! The provider's userinfo endpoint (OIDC Core §5.3), for providers configured with
//! `userinfo = "merge"`: groups and other claims that some providers keep out of ID tokens
//! (Okta's org server, Keycloak without a mapper, Entra ID's group overage) still reach
//! policy and headers. Called at login and at each refresh with the access token just issued.

use serde_json::{Map, Value};

use super::provider::{Discovery, Provider, ProviderError};

impl Provider {
    /// The userinfo claims for `access_token`, whose `sub` must be `sub` (§5.3.2: otherwise
    /// the answer is about someone else and must not be used).
    pub(crate) async fn userinfo(
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
        // Exactly `application/json` (parameters allowed): `application/jwt` would need its
        // own verification rules, `application/json-seq` is something else.
        let json = resp
            .headers()
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"));
        if !json {
            return Err(ProviderError::BadResponse(
                "userinfo answer is not application/json (signed userinfo is not supported)".into(),
            ));
        }
        let body = crate::fetch::read_capped(resp, crate::fetch::MAX_ANSWER)
            .await
            .map_err(|e| ProviderError::BadResponse(format!("userinfo: {e}")))?;
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
