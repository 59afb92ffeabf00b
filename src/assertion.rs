//! The signed identity assertion: a short-lived ES256 JWT the upstream can verify.
//!
//! Identity headers are only as trustworthy as the network between gateway and upstream. On
//! routes with `identity_assertion = true` the gateway also sends a JWT (`iss` = the gateway,
//! `aud` = the route id, `sub`, `email`, `groups`, `iat`, `exp`, and who vouched: `idp` (the
//! provider id), `idp_iss` (its issuer) and `idp_sub` (its `sub` for the user, which with
//! `idp_iss` names the user for good) signed with its own key,
//! whose public half is published at `{prefix}jwks.json`. The key comes from a PEM file, or
//! is generated at start (and written to that file when one is configured, so restarts and
//! replicas sharing the file keep it). Signing costs tens of microseconds, so an assertion is
//! reused for the same identity and route until shortly before it expires.

use std::time::Duration;

use http::HeaderValue;
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use ring::signature::{EcdsaKeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};

use crate::cache::{Cache, Tick};
use crate::crypto::now_unix;
use crate::crypto::{b64url, sha256};
use crate::identity::Claims;

/// Why the assertion key could not be set up (a start-up error).
#[derive(Debug, thiserror::Error)]
pub(crate) enum AssertionError {
    #[error("assertion key {0}: {1}")]
    Key(String, String),
}

/// Identities × routes whose assertions are kept for reuse (a bound, not a target: past
/// it, assertions are signed per request).
const ASSERTION_CACHE_ENTRIES: usize = 100_000;

pub(crate) struct Signer {
    key: EncodingKey,
    kid: String,
    issuer: String,
    ttl: Duration,
    jwks: String,
    /// Signed assertions by (route, provider, identity), until 10 s before they expire.
    cache: Cache<[u8; 32], HeaderValue>,
}

fn pem_pkcs8(der: &[u8]) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let lines: Vec<&str> = b64
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).unwrap_or(""))
        .collect();
    format!(
        "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
        lines.join("\n")
    )
}

impl Signer {
    /// Load the P-256 key from `key_file` (PKCS#8 PEM), or generate one (and save it there).
    pub(crate) fn new(
        key_file: Option<&str>,
        issuer: &str,
        ttl: Duration,
    ) -> Result<Self, AssertionError> {
        crate::jwt::crypto::install();
        let err = |what: &str, e: String| AssertionError::Key(what.to_string(), e);
        let pem = match key_file.map(std::fs::read_to_string) {
            Some(Ok(pem)) => pem,
            Some(Err(e)) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(err(key_file.unwrap_or(""), e.to_string()))
            }
            _ => {
                let rng = ring::rand::SystemRandom::new();
                let doc = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
                    .map_err(|e| err("generate", e.to_string()))?;
                let pem = pem_pkcs8(doc.as_ref());
                if let Some(path) = key_file {
                    write_private(path, &pem).map_err(|e| err(path, e.to_string()))?;
                    tracing::info!(path, "generated the identity assertion signing key");
                }
                pem
            }
        };
        let key = EncodingKey::from_ec_pem(pem.as_bytes())
            .map_err(|e| err(key_file.unwrap_or("generated"), e.to_string()))?;
        let mut jwk = Jwk::from_encoding_key(&key, Algorithm::ES256)
            .map_err(|e| err("public key", e.to_string()))?;
        // kid = a hash of the public key: stable across restarts with the same key.
        let public = serde_json::to_vec(&jwk.algorithm).unwrap_or_default();
        let kid = b64url(&sha256(&public)[..12]);
        jwk.common.key_id = Some(kid.clone());
        jwk.common.public_key_use = Some(jsonwebtoken::jwk::PublicKeyUse::Signature);
        let jwks = serde_json::to_string(&JwkSet { keys: vec![jwk] })
            .map_err(|e| err("jwks", e.to_string()))?;
        Ok(Self {
            key,
            kid,
            issuer: issuer.to_string(),
            ttl,
            jwks,
            cache: Cache::new(ASSERTION_CACHE_ENTRIES),
        })
    }

    /// The JWKS document to publish.
    pub(crate) fn jwks(&self) -> &str {
        &self.jwks
    }

    /// Drop assertions too close to expiry to be reused.
    pub(crate) fn sweep(&self) {
        self.cache.sweep(|_| true);
    }

    /// The assertion for `claims` on `route`, reused until 10 s before it expires.
    pub(crate) fn assertion(
        &self,
        route: &str,
        by: Vouched,
        claims: &Claims,
    ) -> Option<HeaderValue> {
        // Every part after its length (an absent email apart from an empty one): claims may
        // hold any byte, and joined with a separator two identities could spell one key.
        let mut h = crate::crypto::PartsHash::new();
        for p in [
            route,
            by.provider,
            by.issuer,
            claims.sub(),
            claims.subject(),
        ] {
            h.part(p.as_bytes());
        }
        match claims.email() {
            Some(e) => h.part(e.as_bytes()),
            None => h.word(u64::MAX),
        };
        for g in claims.groups.iter() {
            h.part(g.as_bytes());
        }
        let key = h.finish();
        let now = now_unix();
        if let Some(hit) = self.cache.get(&key) {
            return Some(hit);
        }
        let exp = now + self.ttl.as_secs().max(15);
        let body = serde_json::json!({
            "iss": self.issuer,
            "aud": route,
            "sub": claims.subject(),
            "idp": by.provider,
            "idp_iss": by.issuer,
            // Unknown for sessions older than `sub` keeping: absent, never "".
            "idp_sub": (!claims.sub().is_empty()).then_some(&claims.sub()),
            "email": claims.email(),
            "groups": claims.groups,
            "iat": now,
            "exp": exp,
        });
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(self.kid.clone());
        let token = match jsonwebtoken::encode(&header, &body, &self.key) {
            Ok(t) => t,
            Err(e) => {
                tracing::error!(error = %e, "cannot sign the identity assertion");
                return None;
            }
        };
        let value = HeaderValue::from_str(&token).ok()?;
        self.cache
            .insert(key, value.clone(), Tick::at_unix(exp.saturating_sub(10)));
        Some(value)
    }
}

/// Write a private key readable by the owner only.
fn write_private(path: &str, pem: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(pem.as_bytes())
}

/// The provider that vouched for an identity.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Vouched<'a> {
    /// The configured provider id.
    pub(crate) provider: &'a str,
    pub(crate) issuer: &'a str,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signs_verifiable_cached_assertions_and_persists_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("assertion.pem");
        let path = path.to_str().unwrap();
        let s = Signer::new(Some(path), "authgate", Duration::from_secs(60)).unwrap();
        let by = Vouched {
            provider: "corp",
            issuer: "https://idp.example",
        };
        let claims = Claims {
            text: crate::identity::UserText::from_parts(crate::identity::UserParts {
                sub: "u-1",
                subject: "alice",
                email: Some("alice@example.com"),
                ..Default::default()
            }),
            groups: ["dev"].into_iter().collect(),
            ..Claims::default()
        };
        let a = s.assertion("app", by, &claims).unwrap();
        assert_eq!(s.assertion("app", by, &claims).unwrap(), a, "not reused");
        assert_ne!(
            s.assertion("other", by, &claims).unwrap(),
            a,
            "audience must differ per route"
        );
        let elsewhere = Vouched {
            provider: "partner",
            issuer: "https://partner.example",
        };
        assert_ne!(
            s.assertion("app", elsewhere, &claims).unwrap(),
            a,
            "the same user name from another provider is another user"
        );

        // Verify with the published key.
        let set: JwkSet = serde_json::from_str(s.jwks()).unwrap();
        let key = jsonwebtoken::DecodingKey::from_jwk(&set.keys[0]).unwrap();
        let mut v = jsonwebtoken::Validation::new(Algorithm::ES256);
        v.set_audience(&["app"]);
        v.set_issuer(&["authgate"]);
        let c = jsonwebtoken::decode::<serde_json::Value>(a.to_str().unwrap(), &key, &v).unwrap();
        assert_eq!(c.claims["sub"], "alice");
        assert_eq!(c.claims["groups"], serde_json::json!(["dev"]));
        assert_eq!(c.claims["idp"], "corp");
        assert_eq!(c.claims["idp_iss"], "https://idp.example");
        assert_eq!(c.claims["idp_sub"], "u-1");

        // Identities that joined with a separator would spell one key get their own assertion.
        let with = |sub: &str, user: &str, email: Option<&str>, groups: &[&str]| Claims {
            text: crate::identity::UserText::from_parts(crate::identity::UserParts {
                sub,
                subject: user,
                email,
                ..Default::default()
            }),
            groups: groups.iter().collect(),
            ..Claims::default()
        };
        let twins = [
            [
                with("u", "alice\0x", Some(""), &[]),
                with("u", "alice", Some("x\0"), &[]),
            ],
            [with("u", "a", None, &[]), with("u", "a", Some(""), &[])],
            [
                with("u", "a", Some("e"), &["g\0h"]),
                with("u", "a", Some("e"), &["g", "h"]),
            ],
            [with("u\0a", "", None, &[]), with("u", "\0a", None, &[])],
        ];
        for [x, y] in &twins {
            let (ax, ay) = (
                s.assertion("app", by, x).unwrap(),
                s.assertion("app", by, y).unwrap(),
            );
            let payload = |a: &HeaderValue| {
                jsonwebtoken::decode::<serde_json::Value>(a.to_str().unwrap(), &key, &v)
                    .unwrap()
                    .claims
            };
            assert_eq!(payload(&ax)["sub"], x.subject(), "{x:?}");
            assert_eq!(payload(&ay)["sub"], y.subject(), "{y:?}");
            assert_eq!(payload(&ay)["email"], serde_json::json!(y.email()), "{y:?}");
            assert_eq!(payload(&ay)["groups"], serde_json::json!(y.groups), "{y:?}");
        }

        // The same file gives the same key (and kid) after a restart.
        let again = Signer::new(Some(path), "authgate", Duration::from_secs(60)).unwrap();
        assert_eq!(again.jwks(), s.jwks());
    }
}
