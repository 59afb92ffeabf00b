//! The in-memory JWKS cache of one issuer.
//!
//! Keys are looked up by `kid` from the issuer's own JWKS only (never `jku`, `x5u` or an
//! embedded `jwk`: design decision 9). An unknown `kid` triggers at most one refetch per
//! cooldown, whatever the number of tokens naming bogus kids, so a flood of forged tokens
//! cannot turn into a flood of requests to the provider.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use jsonwebtoken::jwk::{AlgorithmParameters, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey};

use super::JwtError;

/// A verification key and what it may verify.
pub struct Key {
    pub decoding: DecodingKey,
    /// The `alg` the JWK pins, if any.
    pub alg: Option<Algorithm>,
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
    pub fn allows(&self, alg: Algorithm) -> bool {
        family_of(alg) == Some(self.family) && self.alg.is_none_or(|a| a == alg)
    }
}

#[derive(Default)]
struct KeySet {
    by_kid: HashMap<String, Arc<Key>>,
    all: Vec<Arc<Key>>,
}

fn parse_set(set: &JwkSet) -> KeySet {
    let mut ks = KeySet::default();
    for jwk in &set.keys {
        // Only signature keys.
        if matches!(
            jwk.common.public_key_use,
            Some(jsonwebtoken::jwk::PublicKeyUse::Encryption)
        ) {
            continue;
        }
        let family = match &jwk.algorithm {
            AlgorithmParameters::RSA(_) => Family::Rsa,
            AlgorithmParameters::EllipticCurve(_) => Family::Ec,
            AlgorithmParameters::OctetKeyPair(_) => Family::Okp,
            // Symmetric keys in a JWKS are never used for verification.
            AlgorithmParameters::OctetKey(_) => continue,
        };
        let Ok(decoding) = DecodingKey::from_jwk(jwk) else {
            continue;
        };
        let alg = jwk
            .common
            .key_algorithm
            .and_then(|a| a.to_string().parse::<Algorithm>().ok());
        let key = Arc::new(Key {
            decoding,
            alg,
            family,
        });
        if let Some(kid) = &jwk.common.key_id {
            ks.by_kid.insert(kid.clone(), key.clone());
        }
        ks.all.push(key);
    }
    ks
}

/// JWKS of one issuer, refreshed on demand and in the background.
pub struct Jwks {
    http: reqwest::Client,
    uri: ArcSwap<Option<String>>,
    keys: ArcSwap<KeySet>,
    /// Time of the last fetch attempt; the async mutex also makes concurrent refetches one.
    last_fetch: tokio::sync::Mutex<Option<Instant>>,
    cooldown: Duration,
}

impl Jwks {
    pub fn new(http: reqwest::Client, cooldown: Duration) -> Self {
        super::crypto::install();
        Self {
            http,
            uri: ArcSwap::from_pointee(None),
            keys: ArcSwap::from_pointee(KeySet::default()),
            last_fetch: tokio::sync::Mutex::new(None),
            cooldown,
        }
    }

    pub fn set_uri(&self, uri: String) {
        self.uri.store(Arc::new(Some(uri)));
    }

    /// Replace the key set with `set` (keys served without HTTP, e.g. configured statically).
    pub fn load(&self, set: &JwkSet) {
        self.keys.store(Arc::new(parse_set(set)));
    }

    pub fn key_count(&self) -> usize {
        self.keys.load().all.len()
    }

    /// Fetch now (background refresh and start-up).
    pub async fn fetch(&self) -> Result<usize, JwtError> {
        let mut last = self.last_fetch.lock().await;
        *last = Some(Instant::now());
        self.fetch_locked().await
    }

    async fn fetch_locked(&self) -> Result<usize, JwtError> {
        let Some(uri) = self.uri.load().as_ref().clone() else {
            return Err(JwtError::JwksUnavailable("no jwks_uri yet".into()));
        };
        let resp = self
            .http
            .get(&uri)
            .send()
            .await
            .map_err(|e| JwtError::JwksUnavailable(e.without_url().to_string()))?;
        if !resp.status().is_success() {
            return Err(JwtError::JwksUnavailable(format!("HTTP {}", resp.status())));
        }
        let set: JwkSet = resp
            .json()
            .await
            .map_err(|e| JwtError::JwksUnavailable(format!("bad JWKS: {}", e.without_url())))?;
        let parsed = parse_set(&set);
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
    pub async fn key_for(&self, kid: Option<&str>, alg: Algorithm) -> Result<Arc<Key>, JwtError> {
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
        self.lookup(kid, alg).ok_or(JwtError::NoMatchingKey)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A JWKS endpoint that counts its fetches.
    async fn jwks_server(set: String) -> (String, Arc<AtomicUsize>) {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let hits = Arc::new(AtomicUsize::new(0));
        let h = hits.clone();
        tokio::spawn(async move {
            while let Ok((s, _)) = l.accept().await {
                let (h, set) = (h.clone(), set.clone());
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |_req| {
                        h.fetch_add(1, Ordering::SeqCst);
                        let body = set.clone();
                        async move {
                            Ok::<_, std::convert::Infallible>(hyper::Response::new(
                                http_body_util::Full::new(bytes::Bytes::from(body)),
                            ))
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

        // After the cooldown, one unknown kid may refetch once.
        let quick = Jwks::new(reqwest::Client::new(), Duration::from_millis(50));
        quick.set_uri(jwks.uri.load().as_ref().clone().unwrap());
        quick.fetch().await.unwrap();
        tokio::time::sleep(Duration::from_millis(60)).await;
        let before = hits.load(Ordering::SeqCst);
        for i in 0..20 {
            let _ = quick
                .key_for(Some(&format!("x{i}")), Algorithm::ES256)
                .await;
        }
        assert_eq!(hits.load(Ordering::SeqCst), before + 1);
    }
}
