//! OpenID Connect: providers ([`provider`]), the browser login flow and gateway endpoints
//! ([`flow`]), post-login/logout redirect validation ([`redirect`]), bearer access
//! tokens for API clients ([`bearer`]), claims from the userinfo endpoint ([`userinfo`]), and
//! how a provider's claims become the identity the gateway vouches for ([`ClaimNames::map`]).
//!
//! ID tokens are verified by [`crate::jwt`] with `jsonwebtoken` rather than `openidconnect`'s
//! verifier: one JWKS cache (with the bounded unknown-`kid` refetch of decision 9) then
//! serves ID tokens here and bearer access tokens on API routes, where `openidconnect`'s
//! verifier takes a fixed key set per client.

pub(crate) mod backchannel;
pub(crate) mod bearer;
pub(crate) mod client;
pub(crate) mod flow;
pub(crate) mod provider;
pub(crate) mod redirect;
pub(crate) mod refresh;
mod services;
pub(crate) mod userinfo;

pub(crate) use bearer::{BearerIdentity, BearerVerifier};
pub(crate) use flow::{Auth, AuthParts, Reply, RequestInfo};
pub(crate) use provider::Provider;
pub(crate) use redirect::RedirectPolicy;
pub(crate) use refresh::Refresher;

/// The running config's [`Auth`] (`None`: no provider configured), replaced whole by a
/// reload: for the admin listener and the sweeper, which outlive any one config.
pub(crate) type SharedAuth = std::sync::Arc<arc_swap::ArcSwapOption<Auth>>;

use serde_json::{Map, Value};

use crate::config::model::ClaimNames;
use crate::identity::Claims;
use crate::jwt::IdTokenClaims;

/// Why a provider's claims cannot become an identity: the login (or bearer token) is refused
/// rather than forwarded with a user the provider did not vouch for.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ClaimError {
    #[error("the token has no {0:?} claim to name the user (user_claim)")]
    MissingUser(String),
    #[error("the user claim {0:?} is an email the provider did not verify")]
    UnverifiedUser(String),
    #[error("the user claim {0:?} is empty, or has a control character or whitespace at an end: sent as a header it would name another user")]
    UserNotSendable(String),
}

/// Claims that describe the token, not the user: never taken from userinfo, never kept as
/// policy claims.
const PROTOCOL_CLAIMS: &[&str] = &[
    "iss",
    "sub",
    "aud",
    "exp",
    "iat",
    "nbf",
    "jti",
    "nonce",
    "azp",
    "at_hash",
    "c_hash",
    "s_hash",
    "sid",
    "auth_time",
    "typ",
];

fn string_claim(sub: &str, other: &Map<String, Value>, name: &str) -> Option<String> {
    if name == "sub" {
        return Some(sub.to_string());
    }
    match other.get(name)? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Merge a userinfo answer over an ID token's claims (OIDC Core §5.3.2: its `sub` was
/// already checked to be the token's). Protocol claims stay the token's. An `email` from
/// userinfo brings its own `email_verified` or none: the token's verdict was about the
/// token's address. (A renamed email claim never borrows that verdict: see
/// [`ClaimNames::map_claims`].)
pub(crate) fn merge_userinfo(other: &mut Map<String, Value>, userinfo: &Map<String, Value>) {
    if userinfo.contains_key("email") {
        other.remove("email_verified");
    }
    for (k, v) in userinfo {
        if !PROTOCOL_CLAIMS.contains(&k.as_str()) {
            other.insert(k.clone(), v.clone());
        }
    }
}

impl ClaimNames {
    /// Whether the provider vouches for the standard `email` claim: `email_verified` exactly
    /// `true` (a string `"true"` is not), or absent from a provider configured with
    /// `trust_email`.
    fn standard_email_verified(&self, other: &Map<String, Value>) -> bool {
        match other.get("email_verified") {
            Some(Value::Bool(true)) => true,
            None => self.trust_email,
            Some(_) => false,
        }
    }

    /// Whether the configured email claim is verified. `email_verified` speaks of `email`
    /// only: another claim (`upn`, `preferred_username`) counts as an email only for a
    /// provider configured with `trust_email`.
    fn email_verified(&self, other: &Map<String, Value>) -> bool {
        if self.email == "email" {
            self.standard_email_verified(other)
        } else {
            self.trust_email
        }
    }

    /// Map a verified token's claims to the identity the gateway vouches for.
    pub(crate) fn map(&self, c: &IdTokenClaims) -> Result<Claims, ClaimError> {
        self.map_claims(&c.sub, &c.other)
    }

    /// [`Self::map`] from the token's `sub` and its other claims.
    pub(crate) fn map_claims(
        &self,
        sub: &str,
        other: &Map<String, Value>,
    ) -> Result<Claims, ClaimError> {
        let verified = self.email_verified(other);
        // What goes into headers goes as the provider wrote it or not at all (see
        // `identity::is_sendable`): the user must, so a user that cannot is no sign-in;
        // the optional parts are left out.
        let sendable = |v: Option<String>| v.filter(|v| crate::identity::is_sendable(v));
        let email = sendable(string_claim(sub, other, &self.email));
        let subject = string_claim(sub, other, &self.user)
            .ok_or_else(|| ClaimError::MissingUser(self.user.clone()))?;
        if !crate::identity::is_sendable(&subject) {
            return Err(ClaimError::UserNotSendable(self.user.clone()));
        }
        // An email as the user name is only as good as its verification, whatever
        // `email_claim` says.
        if self.user == "email" && !self.standard_email_verified(other) {
            return Err(ClaimError::UnverifiedUser(self.user.clone()));
        }
        let groups = match other.get(&self.groups) {
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
        // kilobytes into a token must not inflate every session record. Emails never go
        // there: policy sees an address only through the verified `email` above.
        const EXTRA_BUDGET: usize = 4096;
        let mapped: [&str; 7] = [
            &self.user,
            &self.email,
            &self.name,
            &self.groups,
            &self.preferred_username,
            "email",
            "email_verified",
        ];
        // A header name folds case and `_`/`-` (CGI reads `OIDC_CLAIM_Email` as
        // `OIDC_CLAIM_email`): a claim spelled like a mapped one is its twin, not another.
        let twins: Vec<String> = (mapped.iter().chain(PROTOCOL_CLAIMS))
            .map(|m| crate::identity::canonical_name(m))
            .collect();
        let mut extra = std::collections::BTreeMap::new();
        let mut used = 0;
        for (k, v) in other {
            if PROTOCOL_CLAIMS.contains(&k.as_str())
                || twins.contains(&crate::identity::canonical_name(k))
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
        Ok(Claims {
            extra: extra.into_iter().collect(),
            text: crate::identity::UserText::from_parts(crate::identity::UserParts {
                sub,
                subject: &subject,
                email: email.as_deref().filter(|_| verified),
                name: sendable(string_claim(sub, other, &self.name)).as_deref(),
                preferred_username: sendable(string_claim(sub, other, &self.preferred_username))
                    .as_deref(),
            }),
            email_verified: email.as_ref().map(|_| verified),
            groups: groups.into_iter().collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn names(user: &str, trust_email: bool) -> ClaimNames {
        ClaimNames {
            user: user.into(),
            email: "email".into(),
            name: "name".into(),
            groups: "groups".into(),
            preferred_username: "preferred_username".into(),
            trust_email,
        }
    }

    fn other(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap()
    }

    #[test]
    fn email_only_when_verified() {
        let n = names("sub", false);
        let cases = [
            (json!({"email": "a@x", "email_verified": true}), Some("a@x")),
            (json!({"email": "a@x", "email_verified": false}), None),
            (json!({"email": "a@x", "email_verified": "true"}), None),
            (json!({"email": "a@x", "email_verified": "false"}), None),
            (json!({"email": "a@x", "email_verified": 1}), None),
            (json!({"email": "a@x", "email_verified": null}), None),
            (json!({"email": "a@x", "email_verified": [true]}), None),
            (json!({"email": "a@x"}), None),
        ];
        for (claims, want) in &cases {
            let c = n.map_claims("u1", &other(claims.clone())).unwrap();
            assert_eq!(c.email(), *want, "{claims}");
            assert_eq!(c.email_verified, Some(want.is_some()), "{claims}");
            assert!(!c.extra.contains_key("email") && !c.extra.contains_key("email_verified"));
        }
        // trust_email: an absent claim counts as verified, anything but `true` still does not.
        let t = names("sub", true);
        let got = |v: Value| {
            t.map_claims("u1", &other(v))
                .unwrap()
                .email()
                .map(str::to_string)
        };
        assert_eq!(got(json!({"email": "a@x"})).as_deref(), Some("a@x"));
        assert_eq!(got(json!({"email": "a@x", "email_verified": false})), None);
        assert_eq!(got(json!({"email": "a@x", "email_verified": "true"})), None);
        assert_eq!(got(json!({})), None);
    }

    #[test]
    fn user_claim_other_than_sub() {
        let n = names("email", false);
        let c = n
            .map_claims(
                "u1",
                &other(json!({"email": "a@x", "email_verified": true})),
            )
            .unwrap();
        assert_eq!((c.sub(), c.subject()), ("u1", "a@x"));
        assert_eq!(
            n.map_claims("u1", &other(json!({"email": "a@x"}))),
            Err(ClaimError::UnverifiedUser("email".into()))
        );
        assert_eq!(
            n.map_claims(
                "u1",
                &other(json!({"email": "a@x", "email_verified": "true"}))
            ),
            Err(ClaimError::UnverifiedUser("email".into()))
        );
        assert_eq!(
            names("upn", false).map_claims("u1", &other(json!({}))),
            Err(ClaimError::MissingUser("upn".into()))
        );
        let c = names("upn", false)
            .map_claims("u1", &other(json!({"upn": "alice@corp", "email": "x@y"})))
            .unwrap();
        assert_eq!((c.subject(), c.email()), ("alice@corp", None));
    }

    /// What goes into headers goes as the provider wrote it: a user that cannot is no
    /// sign-in, the optional parts that cannot are left out; a claim spelled like a mapped or
    /// protocol one (`Email`, `Email_Verified`, `ISS`) is not kept beside it.
    #[test]
    fn values_that_headers_would_change_are_not_kept() {
        let n = names("preferred_username", false);
        for user in [
            "alice\u{7}",
            "alice\u{a0}",
            " alice",
            "alice\r\n",
            "\u{2003}alice",
        ] {
            assert_eq!(
                n.map_claims("u1", &other(json!({ "preferred_username": user }))),
                Err(ClaimError::UserNotSendable("preferred_username".into())),
                "{user:?}"
            );
        }
        assert_eq!(
            names("sub", false).map_claims("u1\u{0}", &other(json!({}))),
            Err(ClaimError::UserNotSendable("sub".into()))
        );
        let c = names("sub", true)
            .map_claims(
                "u1",
                &other(json!({
                    "email": "a@x ", "name": "\tAnn", "preferred_username": "ann\u{1}",
                    "Email": "ceo@x", "Email_Verified": true, "EMAIL.VERIFIED": "true",
                    "Preferred_Username": "ceo", "ISS": "https://evil.example", "Sub": "ceo",
                    "Groups": ["admins"], "department": "eng",
                })),
            )
            .unwrap();
        assert_eq!((c.subject(), c.email()), ("u1", None));
        assert_eq!((c.name(), c.preferred_username()), (None, None));
        let kept: Vec<&str> = c.extra.iter().map(|(k, _)| k).collect();
        assert_eq!(kept, ["department"]);
    }

    #[test]
    fn email_verified_speaks_of_email_only() {
        // email_claim renamed: the token's verdict about `email` says nothing about it.
        let mut n = names("sub", false);
        n.email = "preferred_username".into();
        let token = other(json!({
            "email": "me@gmail.example", "email_verified": true,
            "preferred_username": "ceo@corp.example"
        }));
        assert_eq!(n.map_claims("u1", &token).unwrap().email(), None);
        n.trust_email = true;
        assert_eq!(
            n.map_claims("u1", &token).unwrap().email(),
            Some("ceo@corp.example"),
            "only a provider marked trust_email vouches for another claim"
        );
        // user_claim = "email" needs a verified `email`, whatever email_claim names.
        let mut n = names("email", false);
        n.email = "upn".into();
        let token = other(json!({
            "email": "ceo@corp.example", "email_verified": false, "upn": "a@partner.example"
        }));
        assert_eq!(
            n.map_claims("u1", &token),
            Err(ClaimError::UnverifiedUser("email".into()))
        );
        n.trust_email = true;
        assert_eq!(
            n.map_claims("u1", &token),
            Err(ClaimError::UnverifiedUser("email".into())),
            "trust_email does not override an explicit false"
        );
        // user_claim = upn is the provider's own identifier, not an email to verify.
        let n = names("upn", false);
        assert_eq!(
            n.map_claims("u1", &other(json!({"upn": "alice@corp"})))
                .unwrap()
                .subject(),
            "alice@corp"
        );
    }

    #[test]
    fn userinfo_merge_keeps_protocol_claims_and_email_verdicts_together() {
        let mut o =
            other(json!({"email": "a@x", "email_verified": true, "nonce": "n", "groups": []}));
        merge_userinfo(
            &mut o,
            &other(
                json!({"sub": "other", "email": "b@x", "groups": ["admins"], "nonce": "m", "iss": "evil"}),
            ),
        );
        assert_eq!(o["nonce"], "n");
        assert!(!o.contains_key("iss") && !o.contains_key("sub"));
        assert_eq!(o["groups"], json!(["admins"]));
        let c = names("sub", false).map_claims("u1", &o).unwrap();
        assert_eq!(c.email(), None, "the token verified a@x, not b@x");
        let mut o = other(json!({"email": "a@x", "email_verified": true}));
        merge_userinfo(&mut o, &other(json!({"groups": ["g"]})));
        assert_eq!(
            names("sub", false).map_claims("u1", &o).unwrap().email(),
            Some("a@x")
        );
    }
}
