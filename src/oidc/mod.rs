//! OpenID Connect: providers ([`provider`]), the browser login flow and gateway endpoints
//! ([`flow`]), post-login/logout redirect validation ([`redirect`]), and bearer access
//! tokens for API clients ([`bearer`]).
//!
//! ID tokens are verified by [`crate::jwt`] with `jsonwebtoken` rather than `openidconnect`'s
//! verifier: one JWKS cache (with the bounded unknown-`kid` refetch of decision 9) then
//! serves ID tokens here and bearer access tokens on API routes, where `openidconnect`'s
//! verifier takes a fixed key set per client.

pub mod backchannel;
pub mod bearer;
pub mod flow;
pub mod provider;
pub mod redirect;
pub mod refresh;

pub use bearer::{BearerIdentity, BearerVerifier};
pub use flow::{Auth, Reply, RequestInfo};
pub use provider::Provider;
pub use redirect::RedirectPolicy;
pub use refresh::Refresher;

use serde_json::Value;

use crate::config::model::ClaimNames;
use crate::jwt::IdTokenClaims;
use crate::session::Claims;

fn string_claim(c: &IdTokenClaims, name: &str) -> Option<String> {
    if name == "sub" {
        return Some(c.sub.clone());
    }
    match c.other.get(name)? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

impl ClaimNames {
    /// Map a verified ID token's claims to the session's identity.
    pub fn map(&self, c: &IdTokenClaims) -> Claims {
        let groups = match c.other.get(&self.groups) {
            Some(Value::Array(a)) => a
                .iter()
                .filter_map(|v| match v {
                    Value::String(s) => Some(s.clone()),
                    _ => None,
                })
                .collect(),
            Some(Value::String(s)) => s
                .split(',')
                .map(|g| g.trim().to_string())
                .filter(|g| !g.is_empty())
                .collect(),
            _ => Vec::new(),
        };
        // Keep the other claims for policy rules, within a budget: a provider that stuffs
        // kilobytes into a token must not inflate every session record.
        const EXTRA_BUDGET: usize = 4096;
        let mapped: [&str; 6] = [
            &self.user,
            &self.email,
            &self.name,
            &self.groups,
            &self.preferred_username,
            "email_verified",
        ];
        let mut extra = std::collections::BTreeMap::new();
        let mut used = 0;
        for (k, v) in &c.other {
            if mapped.contains(&k.as_str())
                || matches!(
                    k.as_str(),
                    "nonce" | "at_hash" | "c_hash" | "sid" | "auth_time"
                )
            {
                continue;
            }
            let size = k.len() + v.to_string().len();
            if used + size > EXTRA_BUDGET {
                continue;
            }
            used += size;
            extra.insert(k.clone(), v.clone());
        }
        Claims {
            extra,
            subject: string_claim(c, &self.user).unwrap_or_else(|| c.sub.clone()),
            email: string_claim(c, &self.email),
            email_verified: c.other.get("email_verified").and_then(Value::as_bool),
            name: string_claim(c, &self.name),
            preferred_username: string_claim(c, &self.preferred_username),
            groups,
        }
    }
}
