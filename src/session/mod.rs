//! Server-side sessions: cookie → cache → store → [`Session`].
//!
//! [`crypto`] makes IDs, cookie MACs and sealed tokens; [`store`] keeps records (memory or
//! Redis); [`cache`] keeps hot sessions in memory, coherent across replicas through Redis
//! pub/sub ([`SessionManager::run_invalidation_listener`]); [`model`] is the data. The
//! manager ties them together for the proxy glue and the login flow.

pub mod cache;
pub mod crypto;
pub mod model;
pub mod store;

use std::sync::Arc;
use std::time::{Duration, Instant};

use cookie::{Cookie, SameSite};
use futures_util::StreamExt;
use http::header;
use pingora::http::RequestHeader;

pub use cache::SessionCache;
pub use crypto::{IdHash, Keys, SessionId};
pub use model::{Claims, Session, SessionRecord, Tokens};
pub use store::{Store, StoreError};

use crate::identity::IdentityHeaders;
use crate::metrics::Metrics;

/// Cookie and lifetime settings, from `[session]`.
#[derive(Debug, Clone)]
pub struct CookieSettings {
    pub name: String,
    /// `__Host-` + name, used over HTTPS.
    pub host_name: String,
    pub secure: bool,
    pub same_site: SameSite,
    pub domain: Option<String>,
    pub idle_timeout: Duration,
    pub absolute_timeout: Duration,
}

pub struct SessionManager {
    pub store: Store,
    keys: Keys,
    pub cache: SessionCache,
    pub cookie: CookieSettings,
    headers: IdentityHeaders,
    metrics: Arc<Metrics>,
    /// Pre-resolved label children: no label hashing on the hot path.
    cache_hits: prometheus::IntCounter,
    cache_misses: prometheus::IntCounter,
}

fn session_key(hash: &IdHash) -> String {
    format!("s:{}", hash.hex())
}

impl SessionManager {
    pub fn new(
        store: Store,
        keys: Keys,
        cache: SessionCache,
        cookie: CookieSettings,
        headers: IdentityHeaders,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            store,
            keys,
            cache,
            cookie,
            headers,
            cache_hits: metrics.session_cache.with_label_values(&["hit"]),
            cache_misses: metrics.session_cache.with_label_values(&["miss"]),
            metrics,
        }
    }

    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    /// Header that carries the access token on routes with `pass_access_token`.
    pub fn access_token_header(&self) -> &http::HeaderName {
        &self.headers.access_token
    }

    /// The session ID from the request's cookies, if one of them carries a valid MAC. A
    /// forged cookie costs a MAC check, never a store round trip.
    pub fn read_cookie(&self, req: &RequestHeader) -> Option<SessionId> {
        for h in req.headers.get_all(header::COOKIE) {
            let Ok(s) = h.to_str() else { continue };
            for c in Cookie::split_parse(s).flatten() {
                if c.name() == self.cookie.name || c.name() == self.cookie.host_name {
                    if let Some(id) = self.keys.open_cookie(c.value()) {
                        return Some(id);
                    }
                }
            }
        }
        None
    }

    /// Prefix of login-transaction cookie names (one cookie per pending login).
    pub fn tx_cookie_prefix(&self) -> String {
        format!("{}_tx_", self.cookie.name)
    }

    fn is_tx_cookie(&self, name: &str) -> bool {
        let bare = name.strip_prefix("__Host-").unwrap_or(name);
        bare.starts_with(&self.cookie.name) && bare[self.cookie.name.len()..].starts_with("_tx_")
    }

    /// Remove the gateway's cookies (session and login transactions) from what the upstream
    /// receives; other cookies stay.
    pub fn strip_cookie(&self, req: &mut RequestHeader) -> pingora::Result<()> {
        let ours = |part: &str| {
            let name = part.split('=').next().unwrap_or("").trim();
            name == self.cookie.name || name == self.cookie.host_name || self.is_tx_cookie(name)
        };
        // Every request with cookies passes here: look first, allocate only when one of
        // ours (or an unreadable header) has to go.
        let found = req.headers.get_all(header::COOKIE).iter().any(|h| {
            // Not text: we cannot tell what it holds, so it does not go upstream.
            h.to_str().map_or(true, |s| s.split(';').any(ours))
        });
        if !found {
            return Ok(());
        }
        let kept = req
            .headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|h| h.to_str().ok())
            .flat_map(|s| s.split(';'))
            .map(str::trim)
            .filter(|p| !p.is_empty() && !ours(p))
            .collect::<Vec<_>>()
            .join("; ");
        req.remove_header(&header::COOKIE);
        if !kept.is_empty() {
            req.insert_header(header::COOKIE, kept)?;
        }
        Ok(())
    }

    /// Load a session: cache first, then the store (refreshing the idle timeout).
    pub async fn load(&self, id: &SessionId) -> Result<Option<Arc<Session>>, StoreError> {
        let hash = id.hash();
        let now = model::now_unix();
        if let Some(s) = self.cache.get(&hash) {
            if s.record.expires_at > now {
                self.cache_hits.inc();
                return Ok(Some(s));
            }
        }
        self.cache_misses.inc();
        let generation = self.cache.generation();
        let key = session_key(&hash);
        let started = Instant::now();
        let raw = self.store.get_touch(&key, self.cookie.idle_timeout).await;
        self.observe_store(started, raw.is_ok());
        let Some(raw) = raw? else {
            return Ok(None);
        };
        let record: SessionRecord = match serde_json::from_slice(&raw) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "unreadable session record; treating as signed out");
                return Ok(None);
            }
        };
        if record.expires_at <= now {
            let _ = self.store.delete(&key).await;
            return Ok(None);
        }
        let remaining = Duration::from_secs(record.expires_at - now);
        if remaining < self.cookie.idle_timeout {
            // Near the absolute limit the sliding TTL must not outlive it.
            let _ = self.store.put(&key, &raw, remaining).await;
        }
        let session = Arc::new(Session {
            hash,
            headers: self.headers.values(&record.claims),
            record,
            loaded_at: Instant::now(),
        });
        self.cache.insert(session.clone(), generation);
        Ok(Some(session))
    }

    fn observe_store(&self, started: Instant, ok: bool) {
        if self.store.is_redis() {
            self.metrics
                .redis_duration
                .observe(started.elapsed().as_secs_f64());
            if !ok {
                self.metrics.redis_errors.inc();
            }
        }
    }

    /// Create a session with a fresh ID (never one the client chose). Returns the cookie value.
    pub async fn create(
        &self,
        provider: &str,
        claims: Claims,
        tokens: &Tokens,
    ) -> Result<String, StoreError> {
        let id = SessionId::generate();
        let hash = id.hash();
        let now = model::now_unix();
        let sealed = self.keys.seal(
            &hash,
            &serde_json::to_vec(tokens).map_err(|e| StoreError::Unavailable(e.to_string()))?,
        );
        let record = SessionRecord {
            v: 1,
            provider: provider.to_string(),
            claims,
            created_at: now,
            expires_at: now + self.cookie.absolute_timeout.as_secs(),
            tokens: sealed,
        };
        let raw =
            serde_json::to_vec(&record).map_err(|e| StoreError::Unavailable(e.to_string()))?;
        let ttl = self.cookie.idle_timeout.min(self.cookie.absolute_timeout);
        let started = Instant::now();
        let r = self.store.put(&session_key(&hash), &raw, ttl).await;
        self.observe_store(started, r.is_ok());
        r?;
        Ok(self.keys.cookie_value(&id))
    }

    /// The session's tokens, decrypted.
    pub fn tokens(&self, s: &Session) -> Option<Tokens> {
        let plain = self.keys.open(&s.hash, &s.record.tokens)?;
        serde_json::from_slice(&plain).ok()
    }

    /// End a session everywhere: delete it, drop it from this cache, tell the other replicas.
    pub async fn destroy(&self, hash: &IdHash) -> Result<(), StoreError> {
        self.cache.invalidate(hash);
        self.store.delete(&session_key(hash)).await?;
        self.store.publish_invalidation(&hash.hex()).await
    }

    /// `Set-Cookie` value for a new session.
    pub fn set_cookie(&self, value: &str, https: bool) -> String {
        self.cookie_builder(value.to_string(), https)
            .max_age(cookie::time::Duration::seconds(
                self.cookie.absolute_timeout.as_secs() as i64,
            ))
            .build()
            .to_string()
    }

    /// `Set-Cookie` value that deletes the session cookie.
    pub fn clear_cookie(&self, https: bool) -> String {
        self.cookie_builder(String::new(), https)
            .max_age(cookie::time::Duration::ZERO)
            .build()
            .to_string()
    }

    fn cookie_builder(&self, value: String, https: bool) -> cookie::CookieBuilder<'static> {
        // __Host- needs Secure, Path=/ and no Domain; browsers only honour it over HTTPS.
        let use_host = https && self.cookie.secure && self.cookie.domain.is_none();
        let name = if use_host {
            self.cookie.host_name.clone()
        } else {
            self.cookie.name.clone()
        };
        let mut b = Cookie::build((name, value))
            .path("/")
            .http_only(true)
            .secure(self.cookie.secure)
            .same_site(self.cookie.same_site);
        if let Some(d) = &self.cookie.domain {
            b = b.domain(d.clone());
        }
        b
    }

    /// Keep the cache coherent with other replicas (Redis only): subscribe to invalidations,
    /// trust the cache only while subscribed, reconnect with backoff. Runs until dropped.
    pub async fn run_invalidation_listener(self: Arc<Self>) {
        let Store::Redis(redis) = &self.store else {
            return;
        };
        let channel = redis.channel();
        let mut backoff = Duration::from_millis(100);
        loop {
            match redis.client.get_async_pubsub().await {
                Ok(mut pubsub) => match pubsub.subscribe(&channel).await {
                    Ok(()) => {
                        backoff = Duration::from_millis(100);
                        self.cache.set_coherent(true);
                        tracing::info!("session cache coherent: invalidation channel subscribed");
                        let mut stream = pubsub.on_message();
                        while let Some(msg) = stream.next().await {
                            if let Ok(hex) = msg.get_payload::<String>() {
                                if let Some(hash) = parse_hex32(&hex) {
                                    self.cache.invalidate(&IdHash(hash));
                                }
                            }
                        }
                        self.cache.set_coherent(false);
                        tracing::warn!(
                            "invalidation channel lost: session cache bypassed until it is back"
                        );
                    }
                    Err(e) => tracing::warn!(error = %e, "cannot subscribe to invalidations"),
                },
                Err(e) => {
                    self.cache.set_coherent(false);
                    tracing::debug!(error = %e, "redis pub/sub unavailable");
                }
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(2));
        }
    }
}

fn parse_hex32(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(s.get(i * 2..i * 2 + 2)?, 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip() {
        let h = IdHash([0xab; 32]);
        assert_eq!(parse_hex32(&h.hex()), Some([0xab; 32]));
        assert_eq!(parse_hex32("zz"), None);
    }
}
