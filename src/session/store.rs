//! Where sessions and login transactions live: in process memory or in Redis.
//!
//! One enum, two backends, the same semantics: values with a TTL, an atomic get-and-delete
//! for one-time login transactions, get-and-refresh-TTL for sliding idle timeouts, and a
//! publish of cache invalidations (a no-op in memory, where the cache is invalidated
//! directly). Every Redis call has a deadline: a slow Redis becomes a 503, never a pile-up.

use std::sync::Arc;
use std::time::{Duration, Instant};

use dashmap::DashMap;
use redis::aio::ConnectionManager;
use redis::AsyncCommands;

/// Why the store could not answer. Maps to 503: we cannot tell who the caller is.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("session store unavailable: {0}")]
    Unavailable(String),
}

impl From<redis::RedisError> for StoreError {
    fn from(e: redis::RedisError) -> Self {
        StoreError::Unavailable(e.to_string())
    }
}

/// In-process store: the embedded default (single instance, nothing to run).
#[derive(Debug, Default)]
pub struct MemoryStore {
    map: DashMap<String, (Vec<u8>, Instant)>,
}

impl MemoryStore {
    fn get_live(&self, key: &str) -> Option<Vec<u8>> {
        let now = Instant::now();
        let hit = self.map.get(key).map(|e| (e.0.clone(), e.1));
        match hit {
            Some((v, exp)) if exp > now => Some(v),
            Some(_) => {
                self.map.remove_if(key, |_, (_, exp)| *exp <= now);
                None
            }
            None => None,
        }
    }

    /// Drop expired entries; run periodically so abandoned logins do not accumulate.
    pub fn sweep(&self) {
        let now = Instant::now();
        self.map.retain(|_, (_, exp)| *exp > now);
    }
}

/// Redis-backed store shared by replicas.
#[derive(Clone)]
pub struct RedisStore {
    conn: ConnectionManager,
    pub client: redis::Client,
    prefix: String,
    timeout: Duration,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The client holds the URL, which may hold a password.
        f.debug_struct("RedisStore")
            .field("prefix", &self.prefix)
            .finish()
    }
}

impl RedisStore {
    /// Connects lazily: a Redis that is down at start makes requests 503 until it is back,
    /// it does not stop the gateway from starting. Must run inside a Tokio runtime.
    pub fn new(url: &str, prefix: &str, timeout: Duration) -> Result<Self, StoreError> {
        let client = redis::Client::open(url)?;
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_secs(2));
        let conn = client.get_connection_manager_lazy(config)?;
        Ok(Self {
            conn,
            client,
            prefix: prefix.to_string(),
            timeout,
        })
    }

    fn key(&self, key: &str) -> String {
        format!("{}{}", self.prefix, key)
    }

    pub fn channel(&self) -> String {
        format!("{}invalidate", self.prefix)
    }

    /// Run a command under the store deadline.
    async fn call<T>(
        &self,
        f: impl std::future::Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, StoreError> {
        match tokio::time::timeout(self.timeout, f).await {
            Ok(r) => Ok(r?),
            Err(_) => Err(StoreError::Unavailable("timed out".into())),
        }
    }
}

/// The session store.
#[derive(Clone, Debug)]
pub enum Store {
    Memory(Arc<MemoryStore>),
    Redis(Box<RedisStore>),
}

fn ttl_secs(ttl: Duration) -> u64 {
    ttl.as_secs().max(1)
}

impl Store {
    pub fn memory() -> Self {
        Store::Memory(Arc::new(MemoryStore::default()))
    }

    pub async fn put(&self, key: &str, value: &[u8], ttl: Duration) -> Result<(), StoreError> {
        match self {
            Store::Memory(m) => {
                m.map
                    .insert(key.to_string(), (value.to_vec(), Instant::now() + ttl));
                Ok(())
            }
            Store::Redis(r) => {
                let mut c = r.conn.clone();
                let k = r.key(key);
                r.call(c.set_ex::<_, _, ()>(k, value, ttl_secs(ttl))).await
            }
        }
    }

    /// Read a value and restart its TTL (sliding idle timeout) in one round trip.
    pub async fn get_touch(&self, key: &str, ttl: Duration) -> Result<Option<Vec<u8>>, StoreError> {
        match self {
            Store::Memory(m) => {
                let v = m.get_live(key);
                if v.is_some() {
                    if let Some(mut e) = m.map.get_mut(key) {
                        e.1 = Instant::now() + ttl;
                    }
                }
                Ok(v)
            }
            Store::Redis(r) => {
                let mut c = r.conn.clone();
                let k = r.key(key);
                r.call(async move {
                    redis::cmd("GETEX")
                        .arg(k)
                        .arg("EX")
                        .arg(ttl_secs(ttl))
                        .query_async::<Option<Vec<u8>>>(&mut c)
                        .await
                })
                .await
            }
        }
    }

    /// Atomically read and delete: a login transaction is consumed exactly once.
    pub async fn take(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        match self {
            Store::Memory(m) => {
                let now = Instant::now();
                Ok(m.map
                    .remove(key)
                    .and_then(|(_, (v, exp))| (exp > now).then_some(v)))
            }
            Store::Redis(r) => {
                let mut c = r.conn.clone();
                let k = r.key(key);
                r.call(async move {
                    redis::cmd("GETDEL")
                        .arg(k)
                        .query_async::<Option<Vec<u8>>>(&mut c)
                        .await
                })
                .await
            }
        }
    }

    pub async fn delete(&self, key: &str) -> Result<(), StoreError> {
        match self {
            Store::Memory(m) => {
                m.map.remove(key);
                Ok(())
            }
            Store::Redis(r) => {
                let mut c = r.conn.clone();
                let k = r.key(key);
                r.call(c.del::<_, ()>(k)).await
            }
        }
    }

    /// Tell every replica to drop a cached session.
    pub async fn publish_invalidation(&self, cache_key: &str) -> Result<(), StoreError> {
        match self {
            Store::Memory(_) => Ok(()),
            Store::Redis(r) => {
                let mut c = r.conn.clone();
                let ch = r.channel();
                r.call(c.publish::<_, _, ()>(ch, cache_key)).await
            }
        }
    }

    /// Round-trip check for readiness.
    pub async fn ping(&self) -> Result<Duration, StoreError> {
        let start = Instant::now();
        match self {
            Store::Memory(_) => Ok(Duration::ZERO),
            Store::Redis(r) => {
                let mut c = r.conn.clone();
                r.call(async move { redis::cmd("PING").query_async::<String>(&mut c).await })
                    .await?;
                Ok(start.elapsed())
            }
        }
    }

    pub fn is_redis(&self) -> bool {
        matches!(self, Store::Redis(_))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn memory_semantics() {
        let s = Store::memory();
        s.put("a", b"1", Duration::from_secs(60)).await.unwrap();
        assert_eq!(
            s.get_touch("a", Duration::from_secs(60))
                .await
                .unwrap()
                .as_deref(),
            Some(&b"1"[..])
        );
        assert_eq!(s.take("a").await.unwrap().as_deref(), Some(&b"1"[..]));
        assert_eq!(s.take("a").await.unwrap(), None, "taken exactly once");
        s.put("b", b"2", Duration::from_millis(1)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(5)).await;
        assert_eq!(
            s.get_touch("b", Duration::from_secs(1)).await.unwrap(),
            None,
            "expired"
        );
        s.put("c", b"3", Duration::from_secs(60)).await.unwrap();
        s.delete("c").await.unwrap();
        assert_eq!(s.take("c").await.unwrap(), None);
    }
}
