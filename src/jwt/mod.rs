//! JWT verification against a provider's cached JWKS (design decision 9).
//!
//! The algorithm comes from an allow-list (config ∩ provider metadata, asymmetric only:
//! never `none`, never HMAC with a public key), the key from the issuer's JWKS by `kid`,
//! and `iss`, `aud`, `exp`, `iat`, `nbf` are checked with a small configured skew.
//! [`verify_id_token`] adds the OpenID Connect ID token rules (`azp`, `nonce`).

pub mod crypto;
pub(crate) mod jwks;

use std::collections::HashSet;

use jsonwebtoken::{Algorithm, Validation};
use serde::Deserialize;

pub use jwks::Jwks;

/// Why a token was refused. All map to 401 for the caller; the variant goes to the log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwtError {
    #[error("malformed token")]
    Malformed,
    #[error("algorithm {0} not allowed")]
    AlgorithmNotAllowed(String),
    #[error("no key in the issuer's JWKS matches the token")]
    NoMatchingKey,
    #[error("bad signature")]
    BadSignature,
    #[error("token expired")]
    Expired,
    #[error("token not yet valid")]
    NotYetValid,
    #[error("wrong issuer")]
    InvalidIssuer,
    #[error("wrong audience")]
    InvalidAudience,
    #[error("authorized party (azp) is not this client")]
    InvalidAuthorizedParty,
    #[error("an audience besides this client that is not in trusted_audiences")]
    UntrustedAudience,
    #[error("at_hash does not match the access token")]
    InvalidAccessTokenHash,
    #[error("nonce mismatch")]
    InvalidNonce,
    #[error("issued in the future")]
    IssuedInFuture,
    #[error("invalid claims: {0}")]
    InvalidClaims(String),
    #[error("JWKS unavailable: {0}")]
    JwksUnavailable(String),
    #[error("not an access token (ID tokens are not accepted as bearer tokens)")]
    NotAnAccessToken,
    #[error("no accepted issuer for this token")]
    UnknownIssuer,
    #[error("the provider says the token is not active")]
    Inactive,
    #[error("token introspection unavailable: {0}")]
    IntrospectionUnavailable(String),
}

impl JwtError {
    /// A refused token (401) or a check that cannot be made now (503): `answer` maps each to
    /// its status, so the client keeps a good token through a provider outage.
    pub(crate) fn fault(&self) -> crate::fault::Fault {
        match self {
            JwtError::JwksUnavailable(_) | JwtError::IntrospectionUnavailable(_) => {
                crate::fault::Fault::Unavailable
            }
            _ => crate::fault::Fault::Rejected,
        }
    }
}

/// Asymmetric algorithms we verify. HMAC is excluded: a JWKS publishes public keys, and an
/// HMAC "verified" with a public key as secret is the classic key-confusion forgery.
pub(crate) const ASYMMETRIC: &[Algorithm] = &[
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];

/// Parse algorithm names, keeping only asymmetric ones.
pub(crate) fn allowed_algorithms<'a>(names: impl IntoIterator<Item = &'a str>) -> Vec<Algorithm> {
    names
        .into_iter()
        .filter_map(|n| n.parse::<Algorithm>().ok())
        .filter(|a| ASYMMETRIC.contains(a))
        .collect()
}

/// `aud` is a string or an array of strings.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub(crate) enum Audience {
    One(String),
    Many(Vec<String>),
}

impl Audience {
    pub(crate) fn contains(&self, s: &str) -> bool {
        match self {
            Audience::One(a) => a == s,
            Audience::Many(v) => v.iter().any(|a| a == s),
        }
    }

    pub(crate) fn len(&self) -> usize {
        match self {
            Audience::One(_) => 1,
            Audience::Many(v) => v.len(),
        }
    }
}

/// The registered claims of an ID token, plus everything else for claim mapping.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct IdTokenClaims {
    #[allow(
        dead_code,
        reason = "required: a token without it does not parse (jsonwebtoken checks its value)"
    )]
    pub(crate) iss: String,
    pub(crate) sub: String,
    pub(crate) aud: Audience,
    #[allow(
        dead_code,
        reason = "required: a token without it does not parse (jsonwebtoken checks its value)"
    )]
    pub(crate) exp: u64,
    pub(crate) iat: u64,
    pub(crate) nonce: Option<String>,
    pub(crate) azp: Option<String>,
    /// The provider's session ID, for back-channel logout.
    pub(crate) sid: Option<String>,
    #[serde(flatten)]
    pub(crate) other: serde_json::Map<String, serde_json::Value>,
}

/// What an ID token must satisfy.
pub(crate) struct IdTokenRules<'a> {
    pub(crate) issuer: &'a str,
    pub(crate) client_id: &'a str,
    /// Audiences the token may name besides `client_id` (OIDC Core §3.1.3.7 step 3).
    pub(crate) trusted_audiences: &'a [String],
    /// The login's nonce; `None` for an ID token from a refresh, which carries none of
    /// ours to check (OIDC Core §12.2).
    pub(crate) nonce: Option<&'a str>,
    /// The access token issued with the ID token: its `at_hash`, when present, must match.
    pub(crate) access_token: Option<&'a str>,
    pub(crate) algorithms: &'a [Algorithm],
    pub(crate) leeway_secs: u64,
}

/// `at_hash` / `c_hash` (OIDC Core §3.1.3.6): the left half of the hash the JWS algorithm
/// uses, base64url. Ed25519 hashes with SHA-512 (as its signatures do).
pub(crate) fn half_hash(alg: Algorithm, value: &str) -> Option<String> {
    use ring::digest::{digest, SHA256, SHA384, SHA512};
    let d = match alg {
        Algorithm::RS256 | Algorithm::PS256 | Algorithm::ES256 => digest(&SHA256, value.as_bytes()),
        Algorithm::RS384 | Algorithm::PS384 | Algorithm::ES384 => digest(&SHA384, value.as_bytes()),
        Algorithm::RS512 | Algorithm::PS512 | Algorithm::EdDSA => digest(&SHA512, value.as_bytes()),
        _ => return None,
    };
    let d = d.as_ref();
    Some(crate::crypto::b64url(&d[..d.len() / 2]))
}

fn map_error(e: jsonwebtoken::errors::Error) -> JwtError {
    use jsonwebtoken::errors::ErrorKind as K;
    match e.kind() {
        K::InvalidSignature => JwtError::BadSignature,
        K::ExpiredSignature => JwtError::Expired,
        K::ImmatureSignature => JwtError::NotYetValid,
        K::InvalidIssuer => JwtError::InvalidIssuer,
        K::InvalidAudience => JwtError::InvalidAudience,
        K::InvalidAlgorithm => JwtError::AlgorithmNotAllowed("key/algorithm mismatch".into()),
        K::MissingRequiredClaim(c) => JwtError::InvalidClaims(format!("missing {c}")),
        K::Json(_) => JwtError::InvalidClaims("wrong claim types".into()),
        _ => JwtError::Malformed,
    }
}

/// The claims of a JWT access token (RFC 9068), plus everything else for claim mapping.
#[derive(Debug, Clone, Deserialize)]
pub struct AccessTokenClaims {
    #[allow(
        dead_code,
        reason = "required: a token without it does not parse (jsonwebtoken checks its value)"
    )]
    pub(crate) iss: String,
    pub(crate) sub: String,
    #[allow(
        dead_code,
        reason = "required: a token without it does not parse (jsonwebtoken checks its value)"
    )]
    pub(crate) aud: Audience,
    pub(crate) exp: u64,
    pub(crate) iat: Option<u64>,
    #[serde(flatten)]
    pub(crate) other: serde_json::Map<String, serde_json::Value>,
}

/// What a bearer access token must satisfy.
pub struct AccessTokenRules<'a> {
    pub issuer: &'a str,
    /// The token's `aud` must contain one of these.
    pub audiences: &'a [String],
    pub algorithms: &'a [Algorithm],
    pub leeway_secs: u64,
    /// Require `typ: at+jwt` (RFC 9068). Off only for providers that issue plain `JWT`.
    pub require_at_jwt: bool,
}

/// The header's explicit type is what the caller expects (RFC 8725 §3.11). Checked before
/// any key lookup: a token of the wrong kind must not even cost a JWKS refetch.
type TypCheck = fn(&jsonwebtoken::Header) -> Result<(), JwtError>;

/// Signature, algorithm allow-list, `iss`, `aud`, `exp`/`nbf` (with leeway) and required
/// claims: the checks every JWT we accept goes through. Returns the header and the claims.
#[allow(clippy::too_many_arguments)]
async fn decode_checked<T: serde::de::DeserializeOwned>(
    jwks: &Jwks,
    token: &str,
    typ: TypCheck,
    algorithms: &[Algorithm],
    issuer: &str,
    audiences: &[String],
    leeway_secs: u64,
    required: &[&str],
) -> Result<(jsonwebtoken::Header, T), JwtError> {
    // Decoded once here; jsonwebtoken decodes it again for the signature check.
    let header = jsonwebtoken::decode_header(token).map_err(|_| JwtError::Malformed)?;
    typ(&header)?;
    if !algorithms.contains(&header.alg) {
        return Err(JwtError::AlgorithmNotAllowed(format!("{:?}", header.alg)));
    }
    let key = jwks.key_for(header.kid.as_deref(), header.alg).await?;
    let mut v = Validation::new(header.alg);
    v.algorithms = vec![header.alg];
    v.leeway = leeway_secs;
    v.validate_exp = true;
    v.validate_nbf = true;
    v.set_issuer(&[issuer]);
    v.set_audience(audiences);
    v.required_spec_claims = required
        .iter()
        .map(|s| s.to_string())
        .collect::<HashSet<_>>();
    let data = jsonwebtoken::decode::<T>(token, &key.decoding, &v).map_err(map_error)?;
    Ok((header, data.claims))
}

/// The issuer a token claims, read without verification: only to pick whose keys verify it.
pub(crate) fn unverified_issuer(token: &str) -> Option<String> {
    use base64::Engine;
    #[derive(Deserialize)]
    struct Iss {
        iss: String,
    }
    let payload = token.split('.').nth(1)?;
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .ok()?;
    serde_json::from_slice::<Iss>(&raw).ok().map(|i| i.iss)
}

/// The claims of a JWT read without verification: only for a token verified when it was
/// received and kept sealed since (the session's ID token).
pub(crate) fn unverified_claims(token: &str) -> Option<serde_json::Map<String, serde_json::Value>> {
    use base64::Engine;
    let payload = token.split('.').nth(1)?;
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .ok()?;
    serde_json::from_slice(&raw).ok()
}

/// Verify a bearer access token (RFC 9068, RFC 8725 §3.11): never an ID token.
pub async fn verify_access_token(
    jwks: &Jwks,
    token: &str,
    rules: &AccessTokenRules<'_>,
) -> Result<AccessTokenClaims, JwtError> {
    fn at_jwt(header: &jsonwebtoken::Header) -> Result<(), JwtError> {
        match header.typ.as_deref() {
            Some(t) if t.eq_ignore_ascii_case("at+jwt") => Ok(()),
            Some(t) if t.eq_ignore_ascii_case("application/at+jwt") => Ok(()),
            _ => Err(JwtError::NotAnAccessToken),
        }
    }
    let (_, c): (_, AccessTokenClaims) = decode_checked(
        jwks,
        token,
        if rules.require_at_jwt {
            at_jwt
        } else {
            |_| Ok(())
        },
        rules.algorithms,
        rules.issuer,
        rules.audiences,
        rules.leeway_secs,
        &["exp", "iss", "aud", "sub"],
    )
    .await?;
    // An ID token carries a nonce or hashes of the code/access token; an access token does not.
    if ["nonce", "at_hash", "c_hash"]
        .iter()
        .any(|k| c.other.contains_key(*k))
    {
        return Err(JwtError::NotAnAccessToken);
    }
    if c.iat
        .is_some_and(|iat| iat > crate::crypto::now_unix() + rules.leeway_secs)
    {
        return Err(JwtError::IssuedInFuture);
    }
    Ok(c)
}

/// Verify an ID token from `jwks` (OIDC Core §3.1.3.7).
pub(crate) async fn verify_id_token(
    jwks: &Jwks,
    token: &str,
    rules: &IdTokenRules<'_>,
) -> Result<IdTokenClaims, JwtError> {
    let (header, c): (_, IdTokenClaims) = decode_checked(
        jwks,
        token,
        |_| Ok(()),
        rules.algorithms,
        rules.issuer,
        &[rules.client_id.to_string()],
        rules.leeway_secs,
        &["exp", "iat", "iss", "aud", "sub"],
    )
    .await?;
    let now = crate::crypto::now_unix();
    if c.iat > now + rules.leeway_secs {
        return Err(JwtError::IssuedInFuture);
    }
    // Every other audience must be one we were told to trust: a token minted for several
    // parties is one any of them could replay to us.
    let untrusted = |a: &String| a != rules.client_id && !rules.trusted_audiences.contains(a);
    let extra_untrusted = match &c.aud {
        Audience::One(a) => untrusted(a),
        Audience::Many(v) => v.iter().any(untrusted),
    };
    if extra_untrusted {
        return Err(JwtError::UntrustedAudience);
    }
    if let (Some(at_hash), Some(access_token)) = (c.other.get("at_hash"), rules.access_token) {
        let expected = half_hash(header.alg, access_token);
        let ok = match (at_hash.as_str(), expected) {
            (Some(got), Some(want)) => crate::crypto::ct_eq(got, &want),
            _ => false,
        };
        if !ok {
            return Err(JwtError::InvalidAccessTokenHash);
        }
    }
    // With several audiences, azp must be present and be us; if present, always us.
    if (c.aud.len() > 1 && c.azp.is_none())
        || c.azp.as_deref().is_some_and(|azp| azp != rules.client_id)
    {
        return Err(JwtError::InvalidAuthorizedParty);
    }
    if let Some(expected) = rules.nonce {
        match &c.nonce {
            Some(n) if crate::crypto::ct_eq(n, expected) => {}
            _ => return Err(JwtError::InvalidNonce),
        }
    }
    Ok(c)
}

/// The `events` member that makes a JWT a back-channel logout token.
pub(crate) const BACKCHANNEL_LOGOUT_EVENT: &str =
    "http://schemas.openid.net/event/backchannel-logout";

/// The claims of an OIDC Back-Channel Logout token (§2.4).
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct LogoutTokenClaims {
    pub(crate) iss: String,
    pub(crate) sub: Option<String>,
    pub(crate) sid: Option<String>,
    pub(crate) iat: u64,
    pub(crate) exp: Option<u64>,
    pub(crate) jti: String,
    pub(crate) events: serde_json::Map<String, serde_json::Value>,
    /// Must be absent: its presence marks an ID token (§2.6 step 5).
    pub(crate) nonce: Option<serde_json::Value>,
}

/// What a logout token must satisfy.
pub(crate) struct LogoutTokenRules<'a> {
    pub(crate) issuer: &'a str,
    pub(crate) client_id: &'a str,
    pub(crate) algorithms: &'a [Algorithm],
    pub(crate) leeway_secs: u64,
    /// Tokens without `exp` are refused once their `iat` is older than this.
    pub(crate) max_age_secs: u64,
}

/// Back-Channel Logout 1.0 §2.6: signature, `iss`, `aud`, `iat`, `exp` when present, explicit
/// `typ` when present, the logout event, no `nonce`, and a `sid` or `sub`.
pub(crate) async fn verify_logout_token(
    jwks: &Jwks,
    token: &str,
    rules: &LogoutTokenRules<'_>,
) -> Result<LogoutTokenClaims, JwtError> {
    // Explicit typing (§2.4, RFC 8725 §3.11): a token typed as anything else is not ours.
    // Checked before the signature, so the value is the sender's: it is not echoed into the
    // log line or the answer.
    fn logout_typ(header: &jsonwebtoken::Header) -> Result<(), JwtError> {
        match &header.typ {
            Some(typ)
                if !typ.eq_ignore_ascii_case("logout+jwt") && !typ.eq_ignore_ascii_case("JWT") =>
            {
                Err(JwtError::InvalidClaims(
                    "typ is neither logout+jwt nor JWT".into(),
                ))
            }
            _ => Ok(()),
        }
    }
    let (_, c): (_, LogoutTokenClaims) = decode_checked(
        jwks,
        token,
        logout_typ,
        rules.algorithms,
        rules.issuer,
        &[rules.client_id.to_string()],
        rules.leeway_secs,
        &["iss", "aud", "iat"],
    )
    .await?;
    if c.nonce.is_some() {
        return Err(JwtError::InvalidClaims("nonce in a logout token".into()));
    }
    if !c
        .events
        .get(BACKCHANNEL_LOGOUT_EVENT)
        .is_some_and(|v| v.is_object())
    {
        return Err(JwtError::InvalidClaims(
            "no back-channel logout event".into(),
        ));
    }
    if c.sid.is_none() && c.sub.is_none() {
        return Err(JwtError::InvalidClaims("neither sid nor sub".into()));
    }
    let now = crate::crypto::now_unix();
    if c.iat > now + rules.leeway_secs {
        return Err(JwtError::IssuedInFuture);
    }
    if c.exp.is_none() && c.iat + rules.max_age_secs + rules.leeway_secs < now {
        return Err(JwtError::Expired);
    }
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::jwk::{Jwk, JwkSet};
    use jsonwebtoken::{EncodingKey, Header};
    use std::time::Duration;

    struct Signer {
        key: EncodingKey,
        jwks: Jwks,
    }

    /// An ES256 key (rcgen makes P-256 by default) published under kid "k1".
    fn signer() -> Signer {
        // The ring verifier is what the gateway runs: install it before the first key.
        crypto::install();
        let pair = rcgen::KeyPair::generate().unwrap();
        let key = EncodingKey::from_ec_pem(pair.serialize_pem().as_bytes()).unwrap();
        let mut jwk = Jwk::from_encoding_key(&key, Algorithm::ES256).unwrap();
        jwk.common.key_id = Some("k1".into());
        let jwks = Jwks::new(reqwest::Client::new(), Duration::from_secs(30));
        jwks.load(&JwkSet { keys: vec![jwk] });
        Signer { key, jwks }
    }

    fn claims(over: serde_json::Value) -> serde_json::Value {
        let now = crate::crypto::now_unix();
        let mut c = serde_json::json!({
            "iss": "https://idp.example", "sub": "alice", "aud": "client",
            "exp": now + 300, "iat": now, "nonce": "n-1", "email": "alice@example.com",
        });
        for (k, v) in over.as_object().unwrap() {
            if v.is_null() {
                c.as_object_mut().unwrap().remove(k);
            } else {
                c[k] = v.clone();
            }
        }
        c
    }

    fn sign(s: &Signer, c: &serde_json::Value) -> String {
        let mut h = Header::new(Algorithm::ES256);
        h.kid = Some("k1".into());
        jsonwebtoken::encode(&h, c, &s.key).unwrap()
    }

    const RULES: IdTokenRules<'static> = IdTokenRules {
        issuer: "https://idp.example",
        client_id: "client",
        trusted_audiences: &[],
        nonce: Some("n-1"),
        access_token: Some("at-1"),
        algorithms: &[Algorithm::ES256, Algorithm::RS256],
        leeway_secs: 60,
    };

    fn verify_with(
        s: &Signer,
        token: &str,
        rules: &IdTokenRules<'_>,
    ) -> Result<IdTokenClaims, JwtError> {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(verify_id_token(&s.jwks, token, rules))
    }

    fn verify(s: &Signer, token: &str) -> Result<IdTokenClaims, JwtError> {
        verify_with(s, token, &RULES)
    }

    #[test]
    fn half_hashes() {
        // Computed independently: base64url(sha256(token)[..16]) with Python's hashlib. The
        // real provider's at_hash is checked at every login of the integration tests.
        assert_eq!(
            half_hash(
                Algorithm::RS256,
                "jHkWEdUXMU1BwAsC4vtUsZwnNzPVAB5aIPz7AgeKRL2"
            )
            .as_deref(),
            Some("1P3yGRGiEQI1KKxu4zLNKA")
        );
        assert_eq!(half_hash(Algorithm::ES384, "x").map(|h| h.len()), Some(32));
        assert_eq!(half_hash(Algorithm::EdDSA, "x").map(|h| h.len()), Some(43));
        assert_eq!(half_hash(Algorithm::HS256, "x"), None);
    }

    #[test]
    fn at_hash_and_extra_audiences() {
        let s = signer();
        let good = half_hash(Algorithm::ES256, "at-1").unwrap();
        assert!(verify(&s, &sign(&s, &claims(serde_json::json!({"at_hash": good}))),).is_ok());
        for bad in [
            serde_json::json!(half_hash(Algorithm::ES256, "at-2").unwrap()),
            serde_json::json!(half_hash(Algorithm::RS384, "at-1").unwrap()),
            serde_json::json!(""),
            serde_json::json!(42),
            serde_json::json!(null),
        ] {
            let token = sign(&s, &claims(serde_json::json!({"at_hash": bad.clone()})));
            let got = verify(&s, &token).err();
            if bad.is_null() {
                assert_eq!(got, None, "no at_hash: nothing to check");
            } else {
                assert_eq!(got, Some(JwtError::InvalidAccessTokenHash), "{bad}");
            }
        }
        // Without the access token (a refresh that issued none) at_hash cannot be checked.
        let token = sign(&s, &claims(serde_json::json!({"at_hash": "zzz"})));
        let no_at = IdTokenRules {
            access_token: None,
            ..RULES
        };
        assert!(verify_with(&s, &token, &no_at).is_ok());

        // Extra audiences: each must be trusted, azp must be us.
        let trusted = ["other".to_string()];
        let rules = IdTokenRules {
            trusted_audiences: &trusted,
            ..RULES
        };
        let multi = |aud: serde_json::Value, azp: Option<&str>| {
            let mut c = claims(serde_json::json!({ "aud": aud }));
            if let Some(azp) = azp {
                c["azp"] = azp.into();
            }
            verify_with(&s, &sign(&s, &c), &rules).err()
        };
        assert_eq!(
            multi(serde_json::json!(["client", "other"]), Some("client")),
            None
        );
        assert_eq!(
            multi(serde_json::json!(["client", "other"]), None),
            Some(JwtError::InvalidAuthorizedParty)
        );
        assert_eq!(
            multi(
                serde_json::json!(["client", "other", "third"]),
                Some("client")
            ),
            Some(JwtError::UntrustedAudience)
        );
        assert_eq!(
            multi(serde_json::json!(["client", "Other"]), Some("client")),
            Some(JwtError::UntrustedAudience),
            "audiences compare exactly"
        );
        assert_eq!(
            multi(serde_json::json!(["other"]), Some("client")),
            Some(JwtError::InvalidAudience),
            "a trusted audience does not replace our own"
        );
    }

    #[test]
    fn valid_id_token() {
        let s = signer();
        let c = verify(&s, &sign(&s, &claims(serde_json::json!({})))).unwrap();
        assert_eq!(c.sub, "alice");
        assert_eq!(c.other["email"], "alice@example.com");
    }

    #[test]
    fn every_bad_id_token_is_refused() {
        let s = signer();
        let now = crate::crypto::now_unix();
        let cases = [
            (
                serde_json::json!({"iss": "https://evil.example"}),
                JwtError::InvalidIssuer,
            ),
            (
                serde_json::json!({"aud": "other"}),
                JwtError::InvalidAudience,
            ),
            (serde_json::json!({"exp": now - 3600}), JwtError::Expired),
            (
                serde_json::json!({"nbf": now + 3600}),
                JwtError::NotYetValid,
            ),
            (
                serde_json::json!({"iat": now + 3600}),
                JwtError::IssuedInFuture,
            ),
            (serde_json::json!({"nonce": "n-2"}), JwtError::InvalidNonce),
            (serde_json::json!({"nonce": null}), JwtError::InvalidNonce),
            (
                serde_json::json!({"aud": ["client", "other"]}),
                JwtError::UntrustedAudience,
            ),
            (
                serde_json::json!({"aud": ["client", "other"], "azp": "client"}),
                JwtError::UntrustedAudience,
            ),
            (
                serde_json::json!({"azp": "other"}),
                JwtError::InvalidAuthorizedParty,
            ),
            (
                serde_json::json!({"exp": "tomorrow"}),
                JwtError::InvalidClaims("wrong claim types".into()),
            ),
            (
                serde_json::json!({"sub": 42}),
                JwtError::InvalidClaims("wrong claim types".into()),
            ),
        ];
        for (over, want) in cases {
            let got = verify(&s, &sign(&s, &claims(over.clone())));
            assert_eq!(got.err(), Some(want), "{over}");
        }
        // A token without exp is refused (missing claim or unparseable, either way refused).
        assert!(matches!(
            verify(&s, &sign(&s, &claims(serde_json::json!({"exp": null})))).err(),
            Some(JwtError::InvalidClaims(_))
        ));
    }

    fn verify_at(
        s: &Signer,
        token: &str,
        require_at_jwt: bool,
    ) -> Result<AccessTokenClaims, JwtError> {
        let auds = ["urn:api".to_string()];
        let rules = AccessTokenRules {
            issuer: "https://idp.example",
            audiences: &auds,
            algorithms: &[Algorithm::ES256],
            leeway_secs: 60,
            require_at_jwt,
        };
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(verify_access_token(&s.jwks, token, &rules))
    }

    fn sign_typ(s: &Signer, c: &serde_json::Value, typ: Option<&str>) -> String {
        let mut h = Header::new(Algorithm::ES256);
        h.kid = Some("k1".into());
        h.typ = typ.map(str::to_string);
        jsonwebtoken::encode(&h, c, &s.key).unwrap()
    }

    #[test]
    fn access_tokens_but_never_id_tokens() {
        let s = signer();
        let at = |over: serde_json::Value| {
            let mut c =
                claims(serde_json::json!({"aud": "urn:api", "nonce": null, "scope": "read"}));
            for (k, v) in over.as_object().unwrap() {
                c[k] = v.clone();
            }
            c
        };
        let good = sign_typ(&s, &at(serde_json::json!({})), Some("at+jwt"));
        assert_eq!(verify_at(&s, &good, true).unwrap().sub, "alice");
        assert_eq!(
            unverified_issuer(&good).as_deref(),
            Some("https://idp.example")
        );
        // An ID token (nonce, aud = client) is not an access token, typed or not.
        let id_token = sign_typ(
            &s,
            &claims(serde_json::json!({"aud": "urn:api"})),
            Some("JWT"),
        );
        assert_eq!(
            verify_at(&s, &id_token, true).err(),
            Some(JwtError::NotAnAccessToken)
        );
        assert_eq!(
            verify_at(&s, &id_token, false).err(),
            Some(JwtError::NotAnAccessToken)
        );
        let with_hash = sign_typ(&s, &at(serde_json::json!({"at_hash": "x"})), Some("at+jwt"));
        assert_eq!(
            verify_at(&s, &with_hash, true).err(),
            Some(JwtError::NotAnAccessToken)
        );
        // Untyped tokens only where the provider is configured to issue them.
        let untyped = sign_typ(&s, &at(serde_json::json!({})), None);
        assert_eq!(
            verify_at(&s, &untyped, true).err(),
            Some(JwtError::NotAnAccessToken)
        );
        assert!(verify_at(&s, &untyped, false).is_ok());
        let wrong_aud = sign_typ(
            &s,
            &at(serde_json::json!({"aud": "urn:other"})),
            Some("at+jwt"),
        );
        assert_eq!(
            verify_at(&s, &wrong_aud, true).err(),
            Some(JwtError::InvalidAudience)
        );
        let expired = sign_typ(&s, &at(serde_json::json!({"exp": 1000})), Some("at+jwt"));
        assert_eq!(verify_at(&s, &expired, true).err(), Some(JwtError::Expired));
        // RFC 9068's media type in any ASCII case, with or without `application/`; nothing else.
        for typ in [
            "AT+JWT",
            "At+Jwt",
            "application/at+jwt",
            "Application/AT+JWT",
        ] {
            let t = sign_typ(&s, &at(serde_json::json!({})), Some(typ));
            assert!(verify_at(&s, &t, true).is_ok(), "{typ}");
        }
        for typ in [
            "JWT",
            "at+jwt ",
            " at+jwt",
            "at_jwt",
            "application/at+jwt;x",
            "",
            "logout+jwt",
        ] {
            let t = sign_typ(&s, &at(serde_json::json!({})), Some(typ));
            assert_eq!(
                verify_at(&s, &t, true).err(),
                Some(JwtError::NotAnAccessToken),
                "{typ:?}"
            );
        }
        // Where untyped tokens are allowed, any typ is.
        let jwt = sign_typ(&s, &at(serde_json::json!({})), Some("JWT"));
        assert!(verify_at(&s, &jwt, false).is_ok());
        // The type is checked before the key is looked up: a mistyped token with an unknown
        // key and a broken signature is refused as mistyped, without a key lookup.
        let mut h = Header::new(Algorithm::ES256);
        h.kid = Some("unknown-kid".into());
        h.typ = Some("JWT".into());
        let forged = jsonwebtoken::encode(&h, &at(serde_json::json!({})), &s.key).unwrap();
        let forged = format!("{}AAAA", &forged[..forged.rfind('.').unwrap() + 1]);
        assert_eq!(
            verify_at(&s, &forged, true).err(),
            Some(JwtError::NotAnAccessToken)
        );
    }

    #[test]
    fn forged_signatures_and_algorithms_are_refused() {
        let s = signer();
        let other = signer();
        let good = sign(&s, &claims(serde_json::json!({})));
        // Signed by another key under the same kid.
        assert_eq!(
            verify(&s, &sign(&other, &claims(serde_json::json!({})))).err(),
            Some(JwtError::BadSignature)
        );
        // Tampered payload.
        let parts: Vec<&str> = good.split('.').collect();
        let evil_payload = crate::crypto::b64url(
            serde_json::to_string(&claims(serde_json::json!({"sub": "root"})))
                .unwrap()
                .as_bytes(),
        );
        assert_eq!(
            verify(&s, &format!("{}.{}.{}", parts[0], evil_payload, parts[2])).err(),
            Some(JwtError::BadSignature)
        );
        // alg none, and HS256 "signed" with a public key: refused before any key lookup.
        for alg in ["none", "HS256"] {
            let header =
                crate::crypto::b64url(format!("{{\"alg\":\"{alg}\",\"kid\":\"k1\"}}").as_bytes());
            let t = format!("{header}.{}.{}", parts[1], parts[2]);
            assert!(
                matches!(
                    verify(&s, &t).err(),
                    Some(JwtError::AlgorithmNotAllowed(_) | JwtError::Malformed)
                ),
                "{alg}"
            );
        }
        // Unknown kid (no refetch possible here: no JWKS URI) → no matching key.
        let mut h = Header::new(Algorithm::ES256);
        h.kid = Some("nope".into());
        let t = jsonwebtoken::encode(&h, &claims(serde_json::json!({})), &s.key).unwrap();
        assert_eq!(verify(&s, &t).err(), Some(JwtError::NoMatchingKey));
        assert_eq!(verify(&s, "not.a.jwt").err(), Some(JwtError::Malformed));
    }

    #[test]
    fn logout_tokens() {
        let s = signer();
        let rules = LogoutTokenRules {
            issuer: "https://idp.example",
            client_id: "client",
            algorithms: &[Algorithm::ES256],
            leeway_secs: 60,
            max_age_secs: 300,
        };
        let now = crate::crypto::now_unix();
        let event = serde_json::json!({ BACKCHANNEL_LOGOUT_EVENT: {} });
        let base = serde_json::json!({"nonce": null, "email": null, "jti": "j1", "sid": "s1", "events": event});
        let check = |over: serde_json::Value, typ: &str| {
            let mut c = claims(base.clone());
            for (k, v) in over.as_object().unwrap() {
                if v.is_null() {
                    c.as_object_mut().unwrap().remove(k);
                } else {
                    c[k] = v.clone();
                }
            }
            let mut h = Header::new(Algorithm::ES256);
            h.kid = Some("k1".into());
            h.typ = Some(typ.into());
            let t = jsonwebtoken::encode(&h, &c, &s.key).unwrap();
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(verify_logout_token(&s.jwks, &t, &rules))
        };
        let ok = check(serde_json::json!({}), "logout+jwt").unwrap();
        assert_eq!(
            (ok.sid.as_deref(), ok.sub.as_deref()),
            (Some("s1"), Some("alice"))
        );
        assert!(check(serde_json::json!({"exp": null}), "logout+jwt").is_ok());
        let refused = [
            (
                serde_json::json!({"nonce": "n"}),
                "logout+jwt",
                "nonce: an ID token",
            ),
            (
                serde_json::json!({"events": {}}),
                "logout+jwt",
                "no logout event",
            ),
            (
                serde_json::json!({"events": {BACKCHANNEL_LOGOUT_EVENT: "x"}}),
                "logout+jwt",
                "event not an object",
            ),
            (
                serde_json::json!({"sid": null, "sub": null}),
                "logout+jwt",
                "neither sid nor sub",
            ),
            (serde_json::json!({"jti": null}), "logout+jwt", "no jti"),
            (serde_json::json!({"iat": null}), "logout+jwt", "no iat"),
            (serde_json::json!({}), "at+jwt", "an access token"),
            (
                serde_json::json!({"aud": "other"}),
                "logout+jwt",
                "another audience",
            ),
            (
                serde_json::json!({"exp": null, "iat": now - 1000}),
                "logout+jwt",
                "old, no exp",
            ),
            (
                serde_json::json!({"iat": now + 1000}),
                "logout+jwt",
                "issued in the future",
            ),
        ];
        for (over, typ, why) in refused {
            assert!(check(over, typ).is_err(), "{why}");
        }
        // Either accepted type, in any case; absent is allowed (§2.4: "SHOULD" be typed).
        for typ in ["LOGOUT+JWT", "Logout+Jwt", "jwt"] {
            assert!(check(serde_json::json!({}), typ).is_ok(), "{typ}");
        }
        // A mistyped token is refused before its key is looked up or its signature checked,
        // and the sender's typ is not repeated in the error (it reaches the log line).
        let mut h = Header::new(Algorithm::ES256);
        h.kid = Some("unknown-kid".into());
        h.typ = Some("at+jwt\u{1b}[31m".into());
        let t = jsonwebtoken::encode(&h, &claims(base.clone()), &s.key).unwrap();
        let t = format!("{}AAAA", &t[..t.rfind('.').unwrap() + 1]);
        let err = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(verify_logout_token(&s.jwks, &t, &rules))
            .unwrap_err();
        assert_eq!(
            err,
            JwtError::InvalidClaims("typ is neither logout+jwt nor JWT".into())
        );
    }

    #[test]
    fn only_asymmetric_algorithms_are_allowed() {
        let a = allowed_algorithms(["RS256", "HS256", "none", "ES256", "bogus"]);
        assert_eq!(a, vec![Algorithm::RS256, Algorithm::ES256]);
    }

    #[test]
    fn audience_forms() {
        let one: Audience = serde_json::from_str("\"a\"").unwrap();
        let many: Audience = serde_json::from_str("[\"a\",\"b\"]").unwrap();
        assert!(one.contains("a") && !one.contains("b"));
        assert!(many.contains("b") && many.len() == 2);
    }
}
