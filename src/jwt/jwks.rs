//! The in-memory JWKS cache of one issuer.
//!
//! Keys are looked up by `kid` from the issuer's own JWKS only (never `jku`, `x5u` or an
//! embedded `jwk`: design decision 9). An unknown `kid` triggers at most one refetch per
//! cooldown, whatever the number of tokens naming bogus kids, so a flood of forged tokens
//! cannot turn into a flood of requests to the provider.
//!
//! A key that cannot be found is one of two answers: [`JwtError::NoMatchingKey`] (the keys
//! are fresh and none fits: the token is refused, 401) or [`JwtError::JwksUnavailable`] (no
//! key was ever fetched, or the last fetch failed: the gateway cannot tell, 503, and the
//! client keeps its token and retries).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use jsonwebtoken::jwk::{AlgorithmParameters, Jwk, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey};

use super::JwtError;

/// A verification key and what it may verify.
pub(crate) struct Key {
    pub(crate) decoding: DecodingKey,
    /// The `alg` the JWK pins, if any.
    pub(crate) alg: Option<Algorithm>,
    family: Family,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Family {
    Rsa,
    Ec,
    Okp,
}

fn family_of(alg: Algorithm) -> Option<Family> {
    use Algorithm::*;
    match alg {
        RS256 | RS384 | RS512 | PS256 | PS384 | PS512 => Some(Family::Rsa),
        ES256 | ES384 => Some(Family::Ec),
        EdDSA => Some(Family::Okp),
        // HMAC algorithms never verify with a published key.
        HS256 | HS384 | HS512 => None,
    }
}

impl Key {
    /// Whether this key may verify a token signed with `alg`.
    pub(crate) fn allows(&self, alg: Algorithm) -> bool {
        family_of(alg) == Some(self.family) && self.alg.is_none_or(|a| a == alg)
    }
}

#[derive(Default)]
struct KeySet {
    by_kid: HashMap<String, Arc<Key>>,
    all: Vec<Arc<Key>>,
}

/// Why keys of a JWKS were left out, for the warning when none is left.
#[derive(Default, Debug, PartialEq, Eq)]
struct Skipped {
    /// `use` other than `sig`, or `key_ops` without `verify`.
    not_signing: usize,
    /// `alg` that is not an asymmetric signature algorithm we verify, or not this key's.
    alg: usize,
    /// `oct` keys: a published secret is no verification key.
    symmetric: usize,
    /// Not a JWK we can read (unknown `kty` or curve, bad numbers).
    unparseable: usize,
}

/// The algorithm family of a key type, and the one algorithm its curve fixes (EC, OKP).
fn key_kind(params: &AlgorithmParameters) -> Option<(Family, Option<Algorithm>)> {
    use jsonwebtoken::jwk::EllipticCurve as C;
    match params {
        AlgorithmParameters::RSA(_) => Some((Family::Rsa, None)),
        AlgorithmParameters::EllipticCurve(p) => match p.curve {
            C::P256 => Some((Family::Ec, Some(Algorithm::ES256))),
            C::P384 => Some((Family::Ec, Some(Algorithm::ES384))),
            _ => None,
        },
        AlgorithmParameters::OctetKeyPair(p) => match p.curve {
            C::Ed25519 => Some((Family::Okp, Some(Algorithm::EdDSA))),
            _ => None,
        },
        AlgorithmParameters::OctetKey(_) => None,
    }
}

/// The verification key a JWK gives, or why it gives none.
fn parse_key(jwk: &Jwk, skipped: &mut Skipped) -> Option<Key> {
    use jsonwebtoken::jwk::{KeyOperations, PublicKeyUse};
    // Only signature keys: `use` is `sig` or absent, `key_ops` (if any) allows `verify`.
    let signing = matches!(
        jwk.common.public_key_use,
        None | Some(PublicKeyUse::Signature)
    ) && jwk
        .common
        .key_operations
        .as_ref()
        .is_none_or(|ops| ops.contains(&KeyOperations::Verify));
    if !signing {
        skipped.not_signing += 1;
        return None;
    }
    if matches!(jwk.algorithm, AlgorithmParameters::OctetKey(_)) {
        skipped.symmetric += 1;
        return None;
    }
    let Some((family, fixed)) = key_kind(&jwk.algorithm) else {
        skipped.unparseable += 1;
        return None;
    };
    // A present `alg` pins the key to it; an `alg` we do not verify with (RSA-OAEP, HS256,
    // anything unknown) makes the key no signature key of ours, never an "any alg" key.
    let alg = match jwk.common.key_algorithm {
        None => fixed,
        Some(a) => {
            let parsed = a
                .to_string()
                .parse::<Algorithm>()
                .ok()
                .filter(|a| super::ASYMMETRIC.contains(a))
                .filter(|a| family_of(*a) == Some(family) && fixed.is_none_or(|f| f == *a));
            if parsed.is_none() {
                skipped.alg += 1;
                return None;
            }
            parsed
        }
    };
    let Ok(decoding) = DecodingKey::from_jwk(jwk) else {
        skipped.unparseable += 1;
        return None;
    };
    Some(Key {
        decoding,
        alg,
        family,
    })
}

fn parse_set<'a>(keys: impl IntoIterator<Item = &'a Jwk>, skipped: &mut Skipped) -> KeySet {
    let mut ks = KeySet::default();
    for jwk in keys {
        let Some(key) = parse_key(jwk, skipped) else {
            continue;
        };
        let key = Arc::new(key);
        if let Some(kid) = &jwk.common.key_id {
            ks.by_kid.insert(kid.clone(), key.clone());
        }
        ks.all.push(key);
    }
    ks
}

/// A JWKS document, read key by key: one key we cannot read does not hide the others.
fn parse_document(body: &[u8]) -> Result<(KeySet, Skipped), String> {
    #[derive(serde::Deserialize)]
    struct Doc {
        keys: Vec<serde_json::Value>,
    }
    let doc: Doc = serde_json::from_slice(body).map_err(|e| format!("not a JWKS: {e}"))?;
    let mut skipped = Skipped::default();
    let mut jwks = Vec::with_capacity(doc.keys.len());
    for v in doc.keys {
        match serde_json::from_value::<Jwk>(v) {
            Ok(k) => jwks.push(k),
            Err(_) => skipped.unparseable += 1,
        }
    }
    let set = parse_set(&jwks, &mut skipped);
    Ok((set, skipped))
}

/// JWKS of one issuer, refreshed on demand and in the background.
pub struct Jwks {
    http: reqwest::Client,
    uri: ArcSwap<Option<String>>,
    keys: ArcSwap<KeySet>,
    /// Time of the last fetch attempt; the async mutex also makes concurrent refetches one.
    last_fetch: tokio::sync::Mutex<Option<Instant>>,
    cooldown: Duration,
    /// Why the last fetch failed; `None` once one succeeds.
    failing: ArcSwap<Option<String>>,
    /// Where fetches are counted, once the owning provider says (see [`Jwks::count_in`]).
    counts: std::sync::OnceLock<crate::metrics::FetchMetrics>,
}

/// Each JWKS request fails after this (the background refresh and a request waiting for an
/// unknown key alike).
pub(crate) const FETCH_TIMEOUT: Duration = Duration::from_secs(5);

impl Jwks {
    pub fn new(http: reqwest::Client, cooldown: Duration) -> Self {
        super::crypto::install();
        Self {
            http,
            uri: ArcSwap::from_pointee(None),
            keys: ArcSwap::from_pointee(KeySet::default()),
            last_fetch: tokio::sync::Mutex::new(None),
            cooldown,
            failing: ArcSwap::from_pointee(None),
            counts: std::sync::OnceLock::new(),
        }
    }

    /// Count every fetch from now on (`authgate_provider_fetches_total{document="jwks"}`).
    pub(crate) fn count_in(&self, counts: crate::metrics::FetchMetrics) {
        let _ = self.counts.set(counts);
    }

    pub(crate) fn set_uri(&self, uri: String) {
        self.uri.store(Arc::new(Some(uri)));
    }

    /// Replace the key set with `set` (keys served without HTTP, e.g. configured statically).
    pub fn load(&self, set: &JwkSet) {
        self.keys
            .store(Arc::new(parse_set(&set.keys, &mut Skipped::default())));
        self.failing.store(Arc::new(None));
    }

    pub(crate) fn key_count(&self) -> usize {
        self.keys.load().all.len()
    }

    /// Fetch now (background refresh and start-up).
    pub(crate) async fn fetch(&self) -> Result<usize, JwtError> {
        let mut last = self.last_fetch.lock().await;
        *last = Some(Instant::now());
        self.fetch_locked().await
    }

    async fn fetch_locked(&self) -> Result<usize, JwtError> {
        let Some(uri) = self.uri.load().as_ref().clone() else {
            // Nothing to fetch from (discovery never succeeded, or keys loaded statically):
            // not a failed fetch; an empty set is reported unavailable by `key_for` anyway.
            return Err(JwtError::JwksUnavailable("no jwks_uri yet".into()));
        };
        let outcome = self.fetch_from(&uri).await;
        if let Some(c) = self.counts.get() {
            c.jwks(outcome.is_ok());
        }
        self.failing.store(Arc::new(match &outcome {
            Ok(_) => None,
            Err(JwtError::JwksUnavailable(why)) => Some(why.clone()),
            Err(e) => Some(e.to_string()),
        }));
        outcome
    }

    async fn fetch_from(&self, uri: &str) -> Result<usize, JwtError> {
        let resp = self
            .http
            .get(uri)
            .timeout(FETCH_TIMEOUT)
            .send()
            .await
            .map_err(|e| JwtError::JwksUnavailable(e.without_url().to_string()))?;
        if !resp.status().is_success() {
            return Err(JwtError::JwksUnavailable(format!("HTTP {}", resp.status())));
        }
        let body = crate::fetch::read_capped(resp, crate::fetch::MAX_ANSWER)
            .await
            .map_err(|e| JwtError::JwksUnavailable(e.to_string()))?;
        // Only a set with a usable key replaces the cached one: an empty, encryption-only,
        // symmetric-only or unreadable answer keeps the last good keys in place.
        let (parsed, skipped) = match parse_document(&body) {
            Ok((set, skipped)) if !set.all.is_empty() => (set, skipped),
            Ok((_, skipped)) => {
                let why = format!("JWKS without a usable signature key (left out: {skipped:?})");
                tracing::warn!(jwks_uri = %uri, "{why}; keeping the previous keys");
                return Err(JwtError::JwksUnavailable(why));
            }
            Err(why) => {
                tracing::warn!(jwks_uri = %uri, error = %why, "bad JWKS answer; keeping the previous keys");
                return Err(JwtError::JwksUnavailable(why));
            }
        };
        if skipped != Skipped::default() {
            tracing::debug!(jwks_uri = %uri, ?skipped, "JWKS keys left out");
        }
        let n = parsed.all.len();
        self.keys.store(Arc::new(parsed));
        Ok(n)
    }

    fn lookup(&self, kid: Option<&str>, alg: Algorithm) -> Option<Arc<Key>> {
        let keys = self.keys.load();
        match kid {
            Some(kid) => keys.by_kid.get(kid).filter(|k| k.allows(alg)).cloned(),
            // No kid: only unambiguous when exactly one key fits the algorithm.
            None => {
                let mut fitting = keys.all.iter().filter(|k| k.allows(alg));
                match (fitting.next(), fitting.next()) {
                    (Some(k), None) => Some(k.clone()),
                    _ => None,
                }
            }
        }
    }

    /// The key for a token header, refetching the JWKS at most once per cooldown.
    pub(crate) async fn key_for(
        &self,
        kid: Option<&str>,
        alg: Algorithm,
    ) -> Result<Arc<Key>, JwtError> {
        if let Some(k) = self.lookup(kid, alg) {
            return Ok(k);
        }
        {
            let mut last = self.last_fetch.lock().await;
            // Another request may have refetched while we waited for the lock.
            if let Some(k) = self.lookup(kid, alg) {
                return Ok(k);
            }
            let due = last.is_none_or(|t| t.elapsed() >= self.cooldown);
            if due {
                *last = Some(Instant::now());
                if let Err(e) = self.fetch_locked().await {
                    tracing::warn!(error = %e, "JWKS refetch for an unknown key failed");
                }
            }
        }
        self.lookup(kid, alg).ok_or_else(|| self.no_key())
    }

    /// Why no key was found: none matches fresh keys (401), or the keys are not there or not
    /// fresh because fetching failed (503: an outage must not make clients drop good tokens).
    fn no_key(&self) -> JwtError {
        let failing = self.failing.load();
        if self.keys.load().all.is_empty() {
            let why = failing.as_deref().unwrap_or("no keys fetched yet");
            return JwtError::JwksUnavailable(why.to_string());
        }
        match failing.as_deref() {
            Some(why) => JwtError::JwksUnavailable(format!(
                "no cached key matches and the last fetch failed: {why}"
            )),
            None => JwtError::NoMatchingKey,
        }
    }

    #[cfg(test)]
    /// Whether the last fetch failed (the cached keys, if any, may be stale).
    pub(crate) fn is_failing(&self) -> bool {
        self.failing.load().is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// What the test JWKS endpoint answers: a status and a body, changeable mid-test.
    type Answer = Arc<std::sync::Mutex<(u16, String)>>;

    /// A JWKS endpoint that counts its fetches and answers whatever `Answer` holds.
    async fn answering_server(answer: Answer) -> (String, Arc<AtomicUsize>) {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let hits = Arc::new(AtomicUsize::new(0));
        let h = hits.clone();
        tokio::spawn(async move {
            while let Ok((s, _)) = l.accept().await {
                let (h, answer) = (h.clone(), answer.clone());
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |_req| {
                        h.fetch_add(1, Ordering::SeqCst);
                        let (status, body) = answer.lock().unwrap().clone();
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
        (format!("http://{addr}/jwks"), hits)
    }

    /// A JWKS endpoint that always serves `set` and counts its fetches.
    async fn jwks_server(set: String) -> (String, Arc<AtomicUsize>) {
        answering_server(Arc::new(std::sync::Mutex::new((200, set)))).await
    }

    /// A fresh P-256 public key as JWK JSON, with `kid` and `alg: ES256` (as providers publish).
    fn ec_jwk(kid: &str) -> serde_json::Value {
        let pair = rcgen::KeyPair::generate().unwrap();
        let key = jsonwebtoken::EncodingKey::from_ec_pem(pair.serialize_pem().as_bytes()).unwrap();
        let mut jwk = Jwk::from_encoding_key(&key, Algorithm::ES256).unwrap();
        jwk.common.key_id = Some(kid.into());
        serde_json::to_value(jwk).unwrap()
    }

    /// An RSA public key JWK (the modulus need not be a real one: nothing is verified here).
    fn rsa_jwk(kid: &str) -> serde_json::Value {
        use base64::Engine;
        let n = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode([0xc5u8; 256]);
        serde_json::json!({"kty": "RSA", "kid": kid, "n": n, "e": "AQAB"})
    }

    fn with(mut v: serde_json::Value, k: &str, val: serde_json::Value) -> serde_json::Value {
        v.as_object_mut().unwrap().insert(k.into(), val);
        v
    }

    fn doc(keys: Vec<serde_json::Value>) -> String {
        serde_json::json!({ "keys": keys }).to_string()
    }

    /// The kids a document yields as usable keys.
    fn usable(keys: Vec<serde_json::Value>) -> Vec<String> {
        let (set, _) = parse_document(doc(keys).as_bytes()).unwrap();
        let mut kids: Vec<_> = set.by_kid.keys().cloned().collect();
        kids.sort();
        kids
    }

    #[test]
    fn only_signature_keys_with_a_known_asymmetric_alg() {
        use serde_json::json;
        let ec = ec_jwk("ok-ec");
        let keys = vec![
            ec.clone(),
            rsa_jwk("ok-rsa"),
            with(rsa_jwk("ok-rsa-sig"), "use", json!("sig")),
            with(rsa_jwk("ok-rs256"), "alg", json!("RS256")),
            with(rsa_jwk("ok-ps512"), "alg", json!("PS512")),
            // Encryption keys, whatever else they say.
            with(rsa_jwk("enc"), "use", json!("enc")),
            with(
                with(rsa_jwk("enc-rs256"), "use", json!("enc")),
                "alg",
                json!("RS256"),
            ),
            with(rsa_jwk("use-other"), "use", json!("tls")),
            with(
                rsa_jwk("ops-encrypt"),
                "key_ops",
                json!(["encrypt", "wrapKey"]),
            ),
            // An alg we do not verify with is not "any alg".
            with(rsa_jwk("rsa-oaep"), "alg", json!("RSA-OAEP")),
            with(rsa_jwk("rsa-oaep-256"), "alg", json!("RSA-OAEP-256")),
            with(rsa_jwk("rsa1_5"), "alg", json!("RSA1_5")),
            with(rsa_jwk("hs256"), "alg", json!("HS256")),
            with(rsa_jwk("garbage"), "alg", json!("garbage")),
            with(rsa_jwk("none"), "alg", json!("none")),
            // An alg of another key type, or another curve.
            with(rsa_jwk("rsa-es256"), "alg", json!("ES256")),
            with(
                with(ec.clone(), "kid", json!("p256-es384")),
                "alg",
                json!("ES384"),
            ),
            // Symmetric keys, and keys we cannot read.
            json!({"kty": "oct", "kid": "oct", "k": "c2VjcmV0"}),
            json!({"kty": "oct", "kid": "oct-hs", "k": "c2VjcmV0", "alg": "HS256", "use": "sig"}),
            json!({"kty": "AKP", "kid": "unknown-kty", "pub": "AAAA"}),
            json!({"kty": "EC", "kid": "p521", "crv": "P-521", "x": "AA", "y": "AA"}),
            json!({"kty": "RSA", "kid": "no-n", "e": "AQAB"}),
            json!("not an object"),
        ];
        assert_eq!(
            usable(keys.clone()),
            ["ok-ec", "ok-ps512", "ok-rs256", "ok-rsa", "ok-rsa-sig"]
        );
        let (_, skipped) = parse_document(doc(keys).as_bytes()).unwrap();
        assert_eq!(
            skipped,
            Skipped {
                not_signing: 4,
                alg: 8,
                symmetric: 2,
                unparseable: 4,
            }
        );
        // A pinned alg is the only one the key verifies.
        let (set, _) =
            parse_document(doc(vec![with(rsa_jwk("k"), "alg", json!("PS256"))]).as_bytes())
                .unwrap();
        let k = &set.by_kid["k"];
        assert!(k.allows(Algorithm::PS256));
        assert!(!k.allows(Algorithm::RS256));
        // An EC key without alg verifies only its curve's algorithm.
        let mut bare = ec_jwk("bare");
        bare.as_object_mut().unwrap().remove("alg");
        let (set, _) = parse_document(doc(vec![bare]).as_bytes()).unwrap();
        assert!(set.by_kid["bare"].allows(Algorithm::ES256));
        assert!(!set.by_kid["bare"].allows(Algorithm::ES384));
    }

    #[tokio::test]
    async fn bad_answers_keep_the_last_good_keys() {
        use serde_json::json;
        let good = doc(vec![ec_jwk("k1")]);
        let answer: Answer = Arc::new(std::sync::Mutex::new((200, good.clone())));
        let (uri, hits) = answering_server(answer.clone()).await;
        let jwks = Jwks::new(reqwest::Client::new(), Duration::from_millis(0));
        jwks.set_uri(uri);
        assert_eq!(jwks.fetch().await.unwrap(), 1);
        let bad_answers: Vec<(&str, u16, String)> = vec![
            ("empty set", 200, doc(vec![])),
            (
                "encryption keys only",
                200,
                doc(vec![
                    with(rsa_jwk("e1"), "use", json!("enc")),
                    with(rsa_jwk("e2"), "alg", json!("RSA-OAEP")),
                ]),
            ),
            (
                "oct keys only",
                200,
                doc(vec![
                    json!({"kty": "oct", "kid": "s", "k": "c2VjcmV0", "alg": "HS256"}),
                ]),
            ),
            (
                "unparseable keys only",
                200,
                doc(vec![
                    json!({"kty": "AKP", "kid": "x"}),
                    json!({"kty": "RSA", "kid": "k1"}),
                    json!(42),
                ]),
            ),
            (
                "HS256 alg only",
                200,
                doc(vec![with(rsa_jwk("k1"), "alg", json!("HS256"))]),
            ),
            ("HTML", 200, "<html>maintenance</html>".into()),
            ("empty body", 200, String::new()),
            ("no keys member", 200, r#"{"issuer":"x"}"#.into()),
            ("keys not a list", 200, r#"{"keys":{}}"#.into()),
            ("null", 200, "null".into()),
            ("server error", 500, good.clone()),
            ("not found", 404, doc(vec![])),
        ];
        for (name, status, body) in bad_answers {
            *answer.lock().unwrap() = (status, body);
            let before = hits.load(Ordering::SeqCst);
            assert!(
                matches!(jwks.fetch().await, Err(JwtError::JwksUnavailable(_))),
                "{name}: counted as a good fetch"
            );
            assert_eq!(hits.load(Ordering::SeqCst), before + 1, "{name}");
            assert_eq!(jwks.key_count(), 1, "{name}: keys replaced");
            assert!(
                jwks.key_for(Some("k1"), Algorithm::ES256).await.is_ok(),
                "{name}: the last good key is gone"
            );
        }
        // A good set (one usable key among bad ones) replaces the old one.
        *answer.lock().unwrap() = (
            200,
            doc(vec![with(rsa_jwk("e1"), "use", json!("enc")), ec_jwk("k2")]),
        );
        assert_eq!(jwks.fetch().await.unwrap(), 1);
        assert!(jwks.key_for(Some("k2"), Algorithm::ES256).await.is_ok());
        assert!(jwks.lookup(Some("k1"), Algorithm::ES256).is_none());
    }

    /// "No keys could be fetched" (503) is told apart from "no key matches" (401).
    #[tokio::test]
    async fn an_outage_is_not_a_key_mismatch() {
        let unavailable =
            |r: Result<Arc<Key>, JwtError>| matches!(r, Err(JwtError::JwksUnavailable(_)));
        // Never fetched (provider down at start, no jwks_uri yet): unavailable.
        let never = Jwks::new(reqwest::Client::new(), Duration::from_millis(0));
        assert!(unavailable(
            never.key_for(Some("k1"), Algorithm::ES256).await
        ));
        assert!(unavailable(never.key_for(None, Algorithm::ES256).await));

        let good = doc(vec![ec_jwk("k1")]);
        let answer: Answer = Arc::new(std::sync::Mutex::new((503, String::new())));
        let (uri, _) = answering_server(answer.clone()).await;
        let jwks = Jwks::new(reqwest::Client::new(), Duration::from_millis(0));
        jwks.set_uri(uri);
        // Fetching fails from the start: unavailable, whatever the kid.
        assert!(jwks.fetch().await.is_err());
        assert!(unavailable(
            jwks.key_for(Some("k1"), Algorithm::ES256).await
        ));
        assert!(jwks.is_failing());

        // Fetched: a known kid verifies, an unknown one is no match.
        *answer.lock().unwrap() = (200, good);
        assert!(jwks.key_for(Some("k1"), Algorithm::ES256).await.is_ok());
        assert_eq!(
            jwks.key_for(Some("k9"), Algorithm::ES256).await.err(),
            Some(JwtError::NoMatchingKey)
        );
        assert!(!jwks.is_failing());

        // The provider goes away: the cached key still verifies; an unknown kid may be a key
        // we could not fetch, so it is unavailable rather than refused.
        *answer.lock().unwrap() = (502, String::new());
        assert!(jwks.fetch().await.is_err());
        assert!(jwks.key_for(Some("k1"), Algorithm::ES256).await.is_ok());
        assert!(unavailable(
            jwks.key_for(Some("k9"), Algorithm::ES256).await
        ));

        // Back: a mismatch is a mismatch again.
        *answer.lock().unwrap() = (200, doc(vec![ec_jwk("k1")]));
        assert_eq!(
            jwks.key_for(Some("k9"), Algorithm::ES256).await.err(),
            Some(JwtError::NoMatchingKey)
        );
    }

    #[tokio::test]
    async fn unknown_kid_flood_fetches_at_most_once_per_cooldown() {
        let pair = rcgen::KeyPair::generate().unwrap();
        let key = jsonwebtoken::EncodingKey::from_ec_pem(pair.serialize_pem().as_bytes()).unwrap();
        let mut jwk = jsonwebtoken::jwk::Jwk::from_encoding_key(&key, Algorithm::ES256).unwrap();
        jwk.common.key_id = Some("k1".into());
        let set = serde_json::to_string(&JwkSet { keys: vec![jwk] }).unwrap();
        let (uri, hits) = jwks_server(set).await;
        let jwks = Arc::new(Jwks::new(reqwest::Client::new(), Duration::from_secs(60)));
        jwks.set_uri(uri);
        jwks.fetch().await.unwrap();
        assert_eq!(hits.load(Ordering::SeqCst), 1);
        assert!(jwks.key_for(Some("k1"), Algorithm::ES256).await.is_ok());
        // The right kid with the wrong algorithm family is no match either.
        assert!(jwks.key_for(Some("k1"), Algorithm::RS256).await.is_err());

        // 200 tokens with bogus kids, concurrently: no refetch inside the cooldown.
        let tasks: Vec<_> = (0..200)
            .map(|i| {
                let j = jwks.clone();
                tokio::spawn(async move {
                    j.key_for(Some(&format!("bogus-{i}")), Algorithm::ES256)
                        .await
                })
            })
            .collect();
        for t in tasks {
            assert!(matches!(t.await.unwrap(), Err(JwtError::NoMatchingKey)));
        }
        assert_eq!(
            hits.load(Ordering::SeqCst),
            1,
            "refetched inside the cooldown"
        );

        // After the cooldown, one unknown kid may refetch once, and that starts the next
        // cooldown. The last fetch is moved back past the cooldown instead of sleeping it
        // out: no wall-clock margin between the sleep and the 20 requests.
        let last = Instant::now().checked_sub(Duration::from_secs(61)).unwrap();
        *jwks.last_fetch.lock().await = Some(last);
        let before = hits.load(Ordering::SeqCst);
        for i in 0..20 {
            let _ = jwks.key_for(Some(&format!("x{i}")), Algorithm::ES256).await;
        }
        assert_eq!(hits.load(Ordering::SeqCst), before + 1);
    }
}
