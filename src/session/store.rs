//! Where sessions and login transactions live: in process memory or in Redis.
//!
//! One enum, two backends, the same semantics:
//! - plain values with a TTL, and an atomic get-and-delete for one-time login transactions
//!   and `jti` replay markers;
//! - session records ([`StoredSession`]) with a revision for compare-and-set updates (token
//!   refresh), a sliding idle TTL that is written at most once per touch interval, and an
//!   absolute deadline kept *in Redis time*: every replica's view of "expired" comes from
//!   Redis, so a replica with a skewed clock can neither extend nor shorten a session;
//! - per-subject and per-`sid` indexes (sorted sets scored by the absolute deadline), pruned
//!   as they are read, for revocation and back-channel logout;
//! - a short refresh lock per session, so one replica refreshes tokens at a time;
//! - a publish of cache invalidations (a no-op in memory, where the cache is invalidated
//!   directly);
//! - pending logins ([`Store::put_pending`], [`Store::take_pending`]): one-time login
//!   transactions, at most `cap` of them, the oldest dropped first. Anonymous clients start
//!   them, so they are bounded apart from sessions and can never push a session out.
//!
//! Redis keys carry hash tags (`s:{<id hash>}`) so a session's record and its lock share one
//! Cluster slot; every session script touches exactly one key. Pending logins all share the
//! tag `tx:{pending}:` (one slot) with their order, a sorted set, so one script keeps both. Every Redis call has a deadline: a
//! slow Redis becomes a 503, never a pile-up.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
// Tokio's clock (the system's monotonic one, unless a test pauses it): the memory store's
// expiry tests move time instead of sleeping.
use tokio::time::Instant;

use dashmap::DashMap;

use super::redis_conn::{dead_connection, RedisConn, RedisOptions};

/// Why the store could not answer. Maps to 503: we cannot tell who the caller is.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("session store unavailable: {0}")]
    Unavailable(String),
    /// Session data of ours cannot be encoded or decoded: a bug, not an outage (500, never
    /// "try again later"). A stored record that cannot be read is "signed out", not this.
    #[error("session data cannot be encoded or decoded: {0}")]
    Corrupt(String),
}

impl StoreError {
    /// Outage (503) or bug (500): `answer` maps each to its status.
    pub(crate) fn fault(&self) -> crate::fault::Fault {
        match self {
            StoreError::Unavailable(_) => crate::fault::Fault::Unavailable,
            StoreError::Corrupt(_) => crate::fault::Fault::Bug,
        }
    }
}

impl From<redis::RedisError> for StoreError {
    fn from(e: redis::RedisError) -> Self {
        StoreError::Unavailable(e.to_string())
    }
}

/// A session record as read from the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StoredSession {
    /// The serialized [`super::SessionRecord`].
    pub(crate) record: Vec<u8>,
    /// Bumped by every update; the compare-and-set token for [`Store::session_update`].
    pub(crate) rev: u64,
    /// Time left until the absolute deadline, as the store's clock sees it.
    pub(crate) remaining: Duration,
    /// The absolute deadline, unix milliseconds (store clock): metadata and index score.
    pub(crate) deadline_unix_ms: u64,
}

/// What a [`Store::session_check`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Checked {
    /// Still at the caller's revision: the record was not sent.
    Unchanged,
    /// Changed since: the record as it is now.
    Changed(StoredSession),
}

/// What a compare-and-set update found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Update {
    /// Written; the new revision.
    Done(u64),
    /// Somebody else updated the record first: re-read it.
    Conflict,
    /// The session is gone (revoked, logged out, expired): never resurrect it.
    Gone,
}

#[derive(Debug)]
struct MemSession {
    record: Vec<u8>,
    rev: u64,
    deadline: Instant,
    deadline_unix_ms: u64,
    expires: Instant,
}

/// Pending logins in memory: by id, and by insertion sequence (oldest first) for O(log n)
/// eviction and expiry.
#[derive(Debug, Default)]
struct PendingQueue {
    entries: HashMap<String, PendingEntry>,
    order: BTreeMap<u64, String>,
    next: u64,
}

#[derive(Debug)]
struct PendingEntry {
    seq: u64,
    value: Vec<u8>,
    expires: Instant,
}

impl PendingQueue {
    fn remove(&mut self, id: &str) -> Option<PendingEntry> {
        let e = self.entries.remove(id)?;
        self.order.remove(&e.seq);
        Some(e)
    }

    /// Drop the oldest entry; `false` when there is none.
    fn pop_oldest(&mut self) -> bool {
        match self.order.pop_first() {
            Some((_, id)) => {
                self.entries.remove(&id);
                true
            }
            None => false,
        }
    }

    /// Drop expired entries from the old end (every login has the same TTL, so they are
    /// the oldest); [`MemoryStore::sweep`] catches any other.
    fn expire_oldest(&mut self, now: Instant) {
        while let Some((_, id)) = self.order.first_key_value() {
            match self.entries.get(id) {
                Some(e) if e.expires > now => return,
                _ => {
                    self.pop_oldest();
                }
            }
        }
    }

    fn sweep(&mut self, now: Instant) {
        let before = self.entries.len();
        self.entries.retain(|_, e| e.expires > now);
        if self.entries.len() != before {
            let entries = &self.entries;
            self.order.retain(|_, id| entries.contains_key(id));
        }
    }
}

/// In-process store: the embedded default (single instance, nothing to run).
///
/// Not a cache: it holds the only copy of every session, and evicting one to make room would
/// sign its user out silently. Its bounding rule is expiry alone: sessions leave at their idle
/// or absolute timeout, other entries at their TTL (read as absent from then on; the sweeper
/// frees them every 30 s); pending logins are also capped by `session.max_pending_logins`,
/// oldest dropped first.
#[derive(Debug, Default)]
pub struct MemoryStore {
    map: DashMap<String, (Vec<u8>, Instant)>,
    sessions: DashMap<String, MemSession>,
    /// Index key → member → deadline (unix ms).
    indexes: DashMap<String, std::collections::HashMap<String, u64>>,
    pending: Mutex<PendingQueue>,
    pending_metrics: OnceLock<crate::metrics::PendingMetrics>,
}

impl MemoryStore {
    fn pending(&self) -> std::sync::MutexGuard<'_, PendingQueue> {
        // The queue is consistent after every statement: a panic elsewhere cannot break it.
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn report_pending(&self, pending: usize, evicted: u64) {
        if let Some(m) = self.pending_metrics.get() {
            m.report(pending as u64, evicted);
        }
    }

    /// Drop expired entries; run periodically so abandoned logins do not accumulate.
    pub(crate) fn sweep(&self) {
        let now = Instant::now();
        let pending = {
            let mut q = self.pending();
            q.sweep(now);
            q.entries.len()
        };
        self.report_pending(pending, 0);
        self.map.retain(|_, (_, exp)| *exp > now);
        self.sessions
            .retain(|_, s| s.expires > now && s.deadline > now);
        let now_ms = unix_ms();
        self.indexes.retain(|_, members| {
            members.retain(|_, deadline| *deadline > now_ms);
            !members.is_empty()
        });
    }

    fn live_session(
        &self,
        key: &str,
    ) -> Option<dashmap::mapref::one::RefMut<'_, String, MemSession>> {
        let now = Instant::now();
        match self.sessions.get_mut(key) {
            Some(s) if s.expires > now && s.deadline > now => Some(s),
            Some(s) => {
                drop(s);
                self.sessions.remove(key);
                None
            }
            None => None,
        }
    }
}

/// Redis-backed store shared by replicas.
#[derive(Clone)]
pub struct RedisStore {
    pub(crate) conn: RedisConn,
    prefix: String,
    pub(crate) timeout: Duration,
    pending_metrics: Arc<OnceLock<crate::metrics::PendingMetrics>>,
    /// Redis' clock minus this process's, in ms, as last measured (`TIME`): times written
    /// into shared records (a token's expiry) are the store's, so a replica whose clock is
    /// off neither stretches nor cuts them for the others.
    clock_offset_ms: Arc<std::sync::atomic::AtomicI64>,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The connections hold URLs, which may hold passwords.
        f.debug_struct("RedisStore")
            .field("prefix", &self.prefix)
            .finish()
    }
}

impl RedisStore {
    /// Connects lazily: a Redis that is down at start makes requests 503 until it is back,
    /// it does not stop the gateway from starting. Must run inside a Tokio runtime.
    pub(crate) fn new(options: &RedisOptions<'_>, prefix: &str) -> Result<Self, StoreError> {
        Ok(Self {
            conn: RedisConn::new(options)?,
            prefix: prefix.to_string(),
            timeout: options.timeout,
            pending_metrics: Arc::default(),
            clock_offset_ms: Arc::default(),
        })
    }

    fn key(&self, key: &str) -> String {
        format!("{}{}", self.prefix, key)
    }

    /// Every pending-login key starts with this: one hash tag, so one Cluster slot.
    fn pending_prefix(&self) -> String {
        self.key("tx:{pending}:")
    }

    fn report_pending(&self, pending: u64, evicted: u64) {
        if let Some(m) = self.pending_metrics.get() {
            m.report(pending, evicted);
        }
    }

    /// `SET key value NX PX ttl`: `true` if the key was new. Retried once on a dead connection,
    /// and then it matters whether the first try ran before the connection died: the key
    /// holding `value` is our own write when `value` is one nobody else writes (a lock token);
    /// with any other value (an empty replay marker) there is no telling, and the answer is an
    /// error rather than a wrong "it existed".
    async fn set_new(&self, key: &str, value: &[u8], ttl: Duration) -> Result<bool, StoreError> {
        let deadline = tokio::time::Instant::now() + self.timeout;
        let k = self.key(key);
        let mut set = redis::cmd("SET");
        set.arg(&k).arg(value).arg("NX").arg("PX").arg(ms(ttl));
        let mut c = self.conn.clone();
        let first = set.query_async::<Option<String>>(&mut c);
        let e = match tokio::time::timeout_at(deadline, first).await {
            Ok(Ok(v)) => return Ok(v.is_some()),
            Ok(Err(e)) if dead_connection(&e) => e,
            Ok(Err(e)) => return Err(e.into()),
            Err(_) => return Err(StoreError::Unavailable("timed out".into())),
        };
        tracing::debug!(error = %e, "Redis connection was dead; retrying once on a fresh one");
        let mut c = self.conn.clone();
        let mut inv = scripts::SET_NEW.prepare_invoke();
        inv.key(&k).arg(value).arg(ms(ttl));
        let again = inv.invoke_async::<(i64, Option<Vec<u8>>)>(&mut c);
        match tokio::time::timeout_at(deadline, again).await {
            Ok(Ok((1, _))) => Ok(true),
            Ok(Ok((_, Some(held)))) if held == value => {
                if value.is_empty() {
                    Err(StoreError::Unavailable(format!(
                        "unknown whether the write before the connection failed ({e}) ran"
                    )))
                } else {
                    Ok(true)
                }
            }
            Ok(Ok(_)) => Ok(false),
            Ok(Err(e)) => Err(e.into()),
            Err(_) => Err(StoreError::Unavailable("timed out".into())),
        }
    }

    pub(crate) fn channel(&self) -> String {
        format!("{}invalidate", self.prefix)
    }

    /// Run a command that is safe to run twice (each caller says why) under the store
    /// deadline. When it failed because its connection was dead (Redis restarted, closed an
    /// idle connection, failed over: the command did not run where it should have), it runs
    /// once more on a fresh connection within the same deadline, so one dropped connection
    /// never fails a request. A timeout is not retried: the deadline is spent.
    async fn twice<T, F, Fut>(&self, f: F) -> Result<T, StoreError>
    where
        F: Fn(RedisConn) -> Fut,
        Fut: std::future::Future<Output = redis::RedisResult<T>>,
    {
        let deadline = tokio::time::Instant::now() + self.timeout;
        let e = match tokio::time::timeout_at(deadline, f(self.conn.clone())).await {
            Ok(Ok(v)) => return Ok(v),
            Ok(Err(e)) if dead_connection(&e) => e,
            Ok(Err(e)) => return Err(e.into()),
            Err(_) => return Err(StoreError::Unavailable("timed out".into())),
        };
        tracing::debug!(error = %e, "Redis connection was dead; retrying once on a fresh one");
        match tokio::time::timeout_at(deadline, f(self.conn.clone())).await {
            Ok(r) => Ok(r?),
            Err(_) => Err(StoreError::Unavailable(format!(
                "timed out retrying after: {e}"
            ))),
        }
    }

    /// [`Self::twice`] for one command.
    async fn query<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T, StoreError> {
        self.twice(|mut c| async move { cmd.query_async::<T>(&mut c).await })
            .await
    }

    /// [`Self::twice`] for a script (a script Redis lost in a restart is loaded again by
    /// redis-rs on `NOSCRIPT`, and the call repeated).
    async fn invoke<T: redis::FromRedisValue>(
        &self,
        inv: &redis::ScriptInvocation<'_>,
    ) -> Result<T, StoreError> {
        self.twice(|mut c| async move { inv.invoke_async::<T>(&mut c).await })
            .await
    }
}

/// The session store.
#[derive(Clone, Debug)]
pub enum Store {
    Memory(Arc<MemoryStore>),
    Redis(Box<RedisStore>),
}

#[cfg(test)]
fn ttl_secs(ttl: Duration) -> u64 {
    ttl.as_secs().max(1)
}

impl Store {
    pub fn memory() -> Self {
        Store::Memory(Arc::new(MemoryStore::default()))
    }

    #[cfg(test)]
    pub(crate) async fn put(
        &self,
        key: &str,
        value: &[u8],
        ttl: Duration,
    ) -> Result<(), StoreError> {
        match self {
            Store::Memory(m) => {
                m.map.insert(
                    key.to_string(),
                    (value.to_vec(), expiry(Instant::now(), ttl)),
                );
                Ok(())
            }
            Store::Redis(r) => {
                // Same value, same TTL: a repeat changes nothing.
                let mut cmd = redis::cmd("SET");
                cmd.arg(r.key(key)).arg(value).arg("EX").arg(ttl_secs(ttl));
                r.query::<()>(&cmd).await
            }
        }
    }

    /// Atomically read and delete: a login transaction is consumed exactly once.
    #[cfg(test)]
    pub(crate) async fn take(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        match self {
            Store::Memory(m) => {
                let now = Instant::now();
                Ok(m.map
                    .remove(key)
                    .and_then(|(_, (v, exp))| (exp > now).then_some(v)))
            }
            Store::Redis(r) => {
                // A repeat can never hand the value out twice: at worst (the first ran and
                // its answer was lost with the connection) it reads as gone, which is what
                // failing would have meant too.
                let mut cmd = redis::cmd("GETDEL");
                cmd.arg(r.key(key));
                r.query(&cmd).await
            }
        }
    }

    /// Delete a key so that it stays deleted: with Redis, `Ok` only once the primary (its role
    /// checked on the connection) ran the `DEL` and the required replicas acknowledged it
    /// (`redis_min_replicas_ack`, `WAIT`), so a failover cannot bring the key back; a delete
    /// that raced a failover is redone on the new primary within `redis_timeout`. Otherwise an
    /// error (503): the caller must not report the session as ended.
    pub(crate) async fn delete(&self, key: &str) -> Result<(), StoreError> {
        match self {
            Store::Memory(m) => {
                m.map.remove(key);
                m.sessions.remove(key);
                Ok(())
            }
            Store::Redis(r) => {
                let mut del = redis::cmd("DEL");
                del.arg(r.key(key));
                r.conn
                    .write_durably(&[del], r.timeout)
                    .await
                    .map_err(StoreError::Unavailable)
            }
        }
    }

    /// Tell every replica to drop a cached session.
    pub(crate) async fn publish_invalidation(&self, cache_key: &str) -> Result<(), StoreError> {
        match self {
            Store::Memory(_) => Ok(()),
            Store::Redis(r) => {
                // A second invalidation of the same session is as good as one.
                let mut cmd = redis::cmd("PUBLISH");
                cmd.arg(r.channel()).arg(cache_key);
                r.query::<()>(&cmd).await
            }
        }
    }

    /// Round-trip check for readiness; it also measures the store's clock (`TIME`).
    pub(crate) async fn ping(&self) -> Result<Duration, StoreError> {
        let start = Instant::now();
        match self {
            Store::Memory(_) => Ok(Duration::ZERO),
            Store::Redis(_) => {
                // Readiness asks with the same one retry: a dropped idle connection is not an
                // outage, and must not flap `/readyz`.
                self.sync_clock().await?;
                Ok(start.elapsed())
            }
        }
    }

    /// The store's time, unix seconds, from the last measured offset (no round trip): what
    /// shared records' times are compared with.
    pub(crate) fn now_unix(&self) -> u64 {
        let local = unix_ms() as i64;
        let offset = match self {
            Store::Memory(_) => 0,
            Store::Redis(r) => r.clock_offset_ms.load(std::sync::atomic::Ordering::Relaxed),
        };
        (local.saturating_add(offset).max(0) / 1000) as u64
    }

    /// Ask the store for its time now (one round trip) and remember the offset; unix
    /// seconds. For the times a record is written with (a sign-in, a refresh).
    pub(crate) async fn sync_clock(&self) -> Result<u64, StoreError> {
        let Store::Redis(r) = self else {
            return Ok(self.now_unix());
        };
        let before = unix_ms() as i64;
        let (secs, micros): (i64, i64) = r.query(&redis::cmd("TIME")).await?;
        let after = unix_ms() as i64;
        let redis_ms = secs * 1000 + micros / 1000;
        // The answer was made about halfway through the round trip.
        let offset = redis_ms - (before + after) / 2;
        r.clock_offset_ms
            .store(offset, std::sync::atomic::Ordering::Relaxed);
        Ok((redis_ms / 1000).max(0) as u64)
    }

    pub(crate) fn is_redis(&self) -> bool {
        matches!(self, Store::Redis(_))
    }
}

/// Pending logins: one-time login transactions, bounded.
impl Store {
    /// Report pending logins to these metrics. Call once, before the store is cloned.
    pub(crate) fn observe_pending(&self, metrics: crate::metrics::PendingMetrics) {
        let _ = match self {
            Store::Memory(m) => m.pending_metrics.set(metrics),
            Store::Redis(r) => r.pending_metrics.set(metrics),
        };
    }

    /// Store a login transaction under `id` (a hash, in hex) for `ttl`. At most `cap` are
    /// kept: past it the oldest are dropped (their callback then finds nothing, as if they had
    /// expired). Expired ones are dropped on the way. Nothing but pending logins is ever
    /// dropped: in Redis they live under their own keys (`<prefix>tx:{pending}:<id>`, ordered
    /// by the sorted set `<prefix>tx:{pending}:order`, scored by deadline).
    pub(crate) async fn put_pending(
        &self,
        id: &str,
        value: &[u8],
        ttl: Duration,
        cap: usize,
    ) -> Result<(), StoreError> {
        let cap = cap.max(1);
        match self {
            Store::Memory(m) => {
                let now = Instant::now();
                let (pending, evicted) = {
                    let mut q = m.pending();
                    q.expire_oldest(now);
                    q.remove(id);
                    let mut evicted = 0;
                    while q.entries.len() >= cap && q.pop_oldest() {
                        evicted += 1;
                    }
                    let seq = q.next;
                    q.next += 1;
                    q.order.insert(seq, id.to_string());
                    q.entries.insert(
                        id.to_string(),
                        PendingEntry {
                            seq,
                            value: value.to_vec(),
                            expires: now + ttl,
                        },
                    );
                    (q.entries.len(), evicted)
                };
                m.report_pending(pending, evicted);
                Ok(())
            }
            Store::Redis(r) => {
                let prefix = r.pending_prefix();
                let mut inv = scripts::PENDING_PUT.prepare_invoke();
                inv.key(format!("{prefix}{id}"))
                    .key(format!("{prefix}order"))
                    .arg(value)
                    .arg(ms(ttl))
                    .arg(cap)
                    .arg(id)
                    .arg(&prefix);
                // A repeat sets the same key again and re-scores it in the order: no second
                // login, no extra eviction.
                let (pending, evicted) = r.invoke::<(u64, u64)>(&inv).await?;
                r.report_pending(pending, evicted);
                Ok(())
            }
        }
    }

    /// Atomically read and delete a pending login: it is consumed exactly once. `None` when
    /// it never existed, expired, was taken or was dropped for newer ones.
    pub(crate) async fn take_pending(&self, id: &str) -> Result<Option<Vec<u8>>, StoreError> {
        match self {
            Store::Memory(m) => {
                let now = Instant::now();
                let (taken, pending) = {
                    let mut q = m.pending();
                    (q.remove(id), q.entries.len())
                };
                m.report_pending(pending, 0);
                Ok(taken.and_then(|e| (e.expires > now).then_some(e.value)))
            }
            Store::Redis(r) => {
                let prefix = r.pending_prefix();
                let mut inv = scripts::PENDING_TAKE.prepare_invoke();
                inv.key(format!("{prefix}{id}"))
                    .key(format!("{prefix}order"))
                    .arg(id);
                // As `take`: never handed out twice.
                let (value, pending) = r.invoke::<(Option<Vec<u8>>, u64)>(&inv).await?;
                r.report_pending(pending, 0);
                Ok(value)
            }
        }
    }
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn ms(d: Duration) -> u64 {
    // Redis takes a signed 64-bit count; a longer lifetime is "for ever" all the same.
    (d.as_millis().min(i64::MAX as u128) as u64).max(1)
}

/// When a memory-store entry put at `now` for `ttl` expires. Callers bound their lifetimes;
/// one past the monotonic clock's range stays "for ever" (100 years) instead of panicking.
fn expiry(now: Instant, ttl: Duration) -> Instant {
    const FOREVER: Duration = Duration::from_secs(100 * 365 * 24 * 3600);
    now.checked_add(ttl).unwrap_or(now + FOREVER)
}

/// Redis-side session logic. Each session script touches one key, and the pending-login
/// scripts only keys of one hash tag, so they run unchanged on a Cluster; `TIME` makes Redis
/// the only clock that decides expiry.
mod scripts {
    use std::sync::LazyLock;

    /// KEYS[1] session; ARGV record, idle ms, absolute ms → deadline (unix ms).
    pub(crate) static CREATE: LazyLock<redis::Script> = LazyLock::new(|| {
        redis::Script::new(
            r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local deadline = now + tonumber(ARGV[3])
redis.call('HSET', KEYS[1], 'r', ARGV[1], 'rev', 1, 'abs', deadline)
redis.call('PEXPIRE', KEYS[1], math.min(tonumber(ARGV[2]), tonumber(ARGV[3])))
return deadline",
        )
    });

    /// KEYS[1] session; ARGV idle ms, touch interval ms (-1: read only), the revision the
    /// caller already holds ("" for none) → nil | {record, rev, ms left, deadline}, with an
    /// empty record when it is still at the caller's revision. The idle TTL is rewritten only
    /// when the last write is at least one touch interval old, and never past the absolute
    /// deadline.
    pub(crate) static LOAD: LazyLock<redis::Script> = LazyLock::new(|| {
        redis::Script::new(
            r"
local v = redis.call('HMGET', KEYS[1], 'r', 'rev', 'abs')
if not v[1] then return false end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local left = tonumber(v[3]) - now
if left <= 0 then
  redis.call('DEL', KEYS[1])
  return false
end
local touch = tonumber(ARGV[2])
if touch >= 0 then
  local want = math.min(tonumber(ARGV[1]), left)
  if want - redis.call('PTTL', KEYS[1]) >= touch then
    redis.call('PEXPIRE', KEYS[1], want)
  end
end
local rec = v[1]
if v[2] == ARGV[3] then rec = '' end
return {rec, tonumber(v[2]), left, tonumber(v[3])}",
        )
    });

    /// KEYS[1] session; ARGV expected rev, record → new rev | 0 (conflict) | -1 (gone).
    /// The TTL is left alone: an update never extends a session.
    pub(crate) static UPDATE: LazyLock<redis::Script> = LazyLock::new(|| {
        redis::Script::new(
            r"
local rev = redis.call('HGET', KEYS[1], 'rev')
if not rev then return -1 end
if rev ~= ARGV[1] then return 0 end
local next = tonumber(rev) + 1
redis.call('HSET', KEYS[1], 'r', ARGV[2], 'rev', next)
return next",
        )
    });

    /// KEYS[1] index; ARGV member, deadline (unix ms). Drops expired members and keeps the
    /// index alive exactly as long as its longest-lived session.
    pub(crate) static INDEX_ADD: LazyLock<redis::Script> = LazyLock::new(|| {
        redis::Script::new(
            r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
redis.call('PEXPIREAT', KEYS[1], last[2])
return 1",
        )
    });

    /// KEYS[1] index → members whose absolute deadline is still ahead.
    pub(crate) static INDEX_READ: LazyLock<redis::Script> = LazyLock::new(|| {
        redis::Script::new(
            r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
return redis.call('ZRANGE', KEYS[1], 0, -1)",
        )
    });

    /// KEYS[1] pending login, KEYS[2] their order (both under the `tx:{pending}:` tag);
    /// ARGV value, ttl ms, cap, id, the key prefix of pending logins → {count, evicted}.
    /// Drops expired members, then the oldest (never the new one) while past the cap, with
    /// their keys: only keys under the prefix are ever deleted. At most 1000 are dropped per
    /// call, so a cap lowered by a restart shrinks the set over a few logins instead of
    /// blocking Redis.
    pub(crate) static PENDING_PUT: LazyLock<redis::Script> = LazyLock::new(|| {
        redis::Script::new(
            r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[2])
redis.call('SET', KEYS[1], ARGV[1], 'PX', ttl)
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
redis.call('ZADD', KEYS[2], now + ttl, ARGV[4])
local n = redis.call('ZCARD', KEYS[2])
local over = math.min(n - tonumber(ARGV[3]), 1000)
local evicted = 0
if over > 0 then
  for _, m in ipairs(redis.call('ZRANGE', KEYS[2], 0, over)) do
    if evicted < over and m ~= ARGV[4] then
      redis.call('DEL', ARGV[5] .. m)
      redis.call('ZREM', KEYS[2], m)
      evicted = evicted + 1
    end
  end
end
local last = redis.call('ZRANGE', KEYS[2], -1, -1, 'WITHSCORES')
redis.call('PEXPIREAT', KEYS[2], last[2])
return {n - evicted, evicted}",
        )
    });

    /// KEYS[1] pending login, KEYS[2] their order; ARGV id → {value or nil, count left}.
    pub(crate) static PENDING_TAKE: LazyLock<redis::Script> = LazyLock::new(|| {
        redis::Script::new(
            r"
local v = redis.call('GET', KEYS[1])
if v then redis.call('DEL', KEYS[1]) end
redis.call('ZREM', KEYS[2], ARGV[1])
return {v, redis.call('ZCARD', KEYS[2])}",
        )
    });

    /// KEYS[1]; ARGV value, ttl ms → {1, nil} when set, {0, value held} when the key existed:
    /// `SET NX` that also says what is there (a retry must tell its own write from another's).
    pub(crate) static SET_NEW: LazyLock<redis::Script> = LazyLock::new(|| {
        redis::Script::new(
            r"
local old = redis.call('GET', KEYS[1])
if old then return {0, old} end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return {1, false}",
        )
    });

    /// KEYS[1] lock; ARGV token: delete only our own lock.
    pub(crate) static UNLOCK: LazyLock<redis::Script> = LazyLock::new(|| {
        redis::Script::new(
            r"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0",
        )
    });
}

/// Session records, indexes and locks.
impl Store {
    /// Store a new session record. Returns its absolute deadline (unix ms, store clock).
    pub(crate) async fn session_create(
        &self,
        key: &str,
        record: &[u8],
        idle: Duration,
        absolute: Duration,
    ) -> Result<u64, StoreError> {
        match self {
            Store::Memory(m) => {
                let now = Instant::now();
                let deadline_unix_ms = unix_ms() + ms(absolute);
                m.sessions.insert(
                    key.to_string(),
                    MemSession {
                        record: record.to_vec(),
                        rev: 1,
                        deadline: now + absolute,
                        deadline_unix_ms,
                        expires: now + idle.min(absolute),
                    },
                );
                Ok(deadline_unix_ms)
            }
            Store::Redis(r) => {
                let mut inv = scripts::CREATE.prepare_invoke();
                inv.key(r.key(key))
                    .arg(record)
                    .arg(ms(idle))
                    .arg(ms(absolute));
                // A fresh key nobody else knows yet: a repeat writes the same record.
                r.invoke::<u64>(&inv).await
            }
        }
    }

    /// Read a session record. `touch`: restart the idle TTL if the last restart is at least
    /// this old (`None`: read only, for refresh re-reads and the admin API).
    pub(crate) async fn session_load(
        &self,
        key: &str,
        idle: Duration,
        touch: Option<Duration>,
    ) -> Result<Option<StoredSession>, StoreError> {
        Ok(match self.session_check(key, idle, touch, None).await? {
            Some(Checked::Changed(s)) => Some(s),
            // No revision was held, so nothing can be unchanged.
            Some(Checked::Unchanged) | None => None,
        })
    }

    /// As [`Store::session_load`], for a caller that holds the record at revision `known`:
    /// when it is still current, the store answers [`Checked::Unchanged`] and sends (and the
    /// caller decodes) nothing. The touch and every expiry check happen either way.
    pub(crate) async fn session_check(
        &self,
        key: &str,
        idle: Duration,
        touch: Option<Duration>,
        known: Option<u64>,
    ) -> Result<Option<Checked>, StoreError> {
        match self {
            Store::Memory(m) => Ok(m.live_session(key).map(|mut s| {
                let now = Instant::now();
                let left = s.deadline - now;
                if touch.is_some() {
                    s.expires = now + idle.min(left);
                }
                if known == Some(s.rev) {
                    return Checked::Unchanged;
                }
                Checked::Changed(StoredSession {
                    record: s.record.clone(),
                    rev: s.rev,
                    remaining: left,
                    deadline_unix_ms: s.deadline_unix_ms,
                })
            })),
            Store::Redis(r) => {
                let mut inv = scripts::LOAD.prepare_invoke();
                inv.key(r.key(key))
                    .arg(ms(idle))
                    .arg(touch.map_or(-1, |t| t.as_millis() as i64))
                    .arg(known.map_or(String::new(), |k| k.to_string()));
                // A read; its idle touch sets the TTL to a bound computed from Redis' clock,
                // the same on a repeat.
                let v = r.invoke::<Option<(Vec<u8>, u64, u64, u64)>>(&inv).await?;
                Ok(v.map(|(record, rev, left, deadline)| {
                    // A stored record is never empty (it is JSON): empty means unchanged.
                    if record.is_empty() && known == Some(rev) {
                        return Checked::Unchanged;
                    }
                    Checked::Changed(StoredSession {
                        record,
                        rev,
                        remaining: Duration::from_millis(left),
                        deadline_unix_ms: deadline,
                    })
                }))
            }
        }
    }

    /// Replace a session record if its revision is still `rev`.
    pub(crate) async fn session_update(
        &self,
        key: &str,
        rev: u64,
        record: &[u8],
    ) -> Result<Update, StoreError> {
        match self {
            Store::Memory(m) => Ok(match m.live_session(key) {
                None => Update::Gone,
                Some(s) if s.rev != rev => Update::Conflict,
                Some(mut s) => {
                    s.rev += 1;
                    s.record = record.to_vec();
                    Update::Done(s.rev)
                }
            }),
            Store::Redis(r) => {
                let mut inv = scripts::UPDATE.prepare_invoke();
                inv.key(r.key(key)).arg(rev).arg(record);
                // Compare-and-set: a repeat of an update that ran answers "conflict", and the
                // caller re-reads the record, which is the one it wrote.
                let n = r.invoke::<i64>(&inv).await?;
                Ok(match n {
                    -1 => Update::Gone,
                    0 => Update::Conflict,
                    n => Update::Done(n as u64),
                })
            }
        }
    }

    /// Add a session to an index (per subject, per provider `sid`).
    pub(crate) async fn index_add(
        &self,
        index: &str,
        member: &str,
        deadline_unix_ms: u64,
    ) -> Result<(), StoreError> {
        match self {
            Store::Memory(m) => {
                m.indexes
                    .entry(index.to_string())
                    .or_default()
                    .insert(member.to_string(), deadline_unix_ms);
                Ok(())
            }
            Store::Redis(r) => {
                let mut inv = scripts::INDEX_ADD.prepare_invoke();
                inv.key(r.key(index)).arg(member).arg(deadline_unix_ms);
                // The same member with the same score: idempotent.
                r.invoke::<()>(&inv).await
            }
        }
    }

    /// The members of an index whose absolute deadline has not passed. Members whose record
    /// already ended (logout, idle timeout) may still be listed: callers check the record.
    pub(crate) async fn index_members(&self, index: &str) -> Result<Vec<String>, StoreError> {
        match self {
            Store::Memory(m) => {
                let now = unix_ms();
                Ok(m.indexes.get(index).map_or_else(Vec::new, |members| {
                    members
                        .iter()
                        .filter(|(_, d)| **d > now)
                        .map(|(k, _)| k.clone())
                        .collect()
                }))
            }
            Store::Redis(r) => {
                let mut inv = scripts::INDEX_READ.prepare_invoke();
                inv.key(r.key(index));
                r.invoke::<Vec<String>>(&inv).await
            }
        }
    }

    pub(crate) async fn index_remove(&self, index: &str, member: &str) -> Result<(), StoreError> {
        match self {
            Store::Memory(m) => {
                m.indexes.remove_if_mut(index, |_, members| {
                    members.remove(member);
                    members.is_empty()
                });
                Ok(())
            }
            Store::Redis(r) => {
                let mut cmd = redis::cmd("ZREM");
                cmd.arg(r.key(index)).arg(member);
                r.query::<()>(&cmd).await
            }
        }
    }

    /// Take a short lock (`SET NX PX`); `token` identifies the holder for [`Store::unlock`].
    /// In memory the caller's single-flight is the lock: one process, one refresher.
    pub(crate) async fn lock(
        &self,
        key: &str,
        token: &str,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        match self {
            Store::Memory(_) => Ok(true),
            Store::Redis(r) => r.set_new(key, token.as_bytes(), ttl).await,
        }
    }

    pub(crate) async fn unlock(&self, key: &str, token: &str) -> Result<(), StoreError> {
        match self {
            Store::Memory(_) => Ok(()),
            Store::Redis(r) => {
                let mut inv = scripts::UNLOCK.prepare_invoke();
                inv.key(r.key(key)).arg(token);
                // Deletes only our own lock: idempotent.
                r.invoke::<()>(&inv).await
            }
        }
    }

    /// Set a value only if the key is new: `false` when it already existed (replay).
    pub(crate) async fn put_new(
        &self,
        key: &str,
        value: &[u8],
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        match self {
            Store::Memory(m) => {
                let now = Instant::now();
                let until = expiry(now, ttl);
                let mut fresh = false;
                m.map
                    .entry(key.to_string())
                    .and_modify(|e| {
                        if e.1 <= now {
                            *e = (value.to_vec(), until);
                            fresh = true;
                        }
                    })
                    .or_insert_with(|| {
                        fresh = true;
                        (value.to_vec(), until)
                    });
                Ok(fresh)
            }
            Store::Redis(r) => r.set_new(key, value, ttl).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn memory_semantics() {
        let s = Store::memory();
        s.put("a", b"1", Duration::from_secs(60)).await.unwrap();
        assert_eq!(s.take("a").await.unwrap().as_deref(), Some(&b"1"[..]));
        assert_eq!(s.take("a").await.unwrap(), None, "taken exactly once");
        s.put("b", b"2", Duration::from_millis(1)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(5)).await;
        assert_eq!(s.take("b").await.unwrap(), None, "expired");
        s.put("c", b"3", Duration::from_secs(60)).await.unwrap();
        s.delete("c").await.unwrap();
        assert_eq!(s.take("c").await.unwrap(), None);
        assert!(s.put_new("j", b"", Duration::from_secs(60)).await.unwrap());
        assert!(
            !s.put_new("j", b"", Duration::from_secs(60)).await.unwrap(),
            "replay"
        );
    }

    fn observed() -> (Store, crate::metrics::Metrics) {
        let s = Store::memory();
        let m = crate::metrics::Metrics::new();
        s.observe_pending(m.pending());
        (s, m)
    }

    #[tokio::test]
    async fn memory_pending_cap_drops_the_oldest_first() {
        let (s, m) = observed();
        let ttl = Duration::from_secs(60);
        for i in 0..5 {
            s.put_pending(&format!("id{i}"), format!("v{i}").as_bytes(), ttl, 3)
                .await
                .unwrap();
        }
        assert_eq!(m.pending_logins.get(), 3);
        assert_eq!(m.pending_logins_evicted.get(), 2);
        for i in 0..2 {
            assert_eq!(s.take_pending(&format!("id{i}")).await.unwrap(), None);
        }
        for i in 2..5 {
            let v = s.take_pending(&format!("id{i}")).await.unwrap();
            assert_eq!(v, Some(format!("v{i}").into_bytes()), "id{i} kept");
            assert_eq!(
                s.take_pending(&format!("id{i}")).await.unwrap(),
                None,
                "once"
            );
        }
        assert_eq!(m.pending_logins.get(), 0);

        // A taken login frees its place; the order is insertion order, not key order.
        for id in ["c", "a", "b"] {
            s.put_pending(id, b"x", ttl, 3).await.unwrap();
        }
        s.take_pending("a").await.unwrap().unwrap();
        s.put_pending("d", b"x", ttl, 3).await.unwrap();
        assert_eq!(
            m.pending_logins_evicted.get(),
            2,
            "room was made by the take"
        );
        s.put_pending("e", b"x", ttl, 3).await.unwrap();
        assert_eq!(m.pending_logins_evicted.get(), 3);
        assert_eq!(s.take_pending("c").await.unwrap(), None, "c was the oldest");
        for id in ["b", "d", "e"] {
            assert!(s.take_pending(id).await.unwrap().is_some(), "{id}");
        }
        assert_eq!(m.pending_logins.get(), 0);
    }

    #[test]
    fn memory_expiry_never_overflows_the_clock() {
        let now = Instant::now();
        assert_eq!(
            expiry(now, Duration::from_secs(5)),
            now + Duration::from_secs(5)
        );
        for ttl in [Duration::MAX, Duration::from_secs(u64::MAX)] {
            assert!(expiry(now, ttl) > now + Duration::from_secs(50 * 365 * 24 * 3600));
        }
    }

    #[tokio::test(start_paused = true)]
    async fn memory_pending_expiry() {
        let (s, m) = observed();
        let short = Duration::from_millis(20);
        let long = Duration::from_secs(60);
        s.put_pending("gone", b"1", short, 10).await.unwrap();
        tokio::time::sleep(Duration::from_millis(40)).await;
        assert_eq!(s.take_pending("gone").await.unwrap(), None, "expired");

        // Expired logins make room without counting as evictions.
        for i in 0..3 {
            s.put_pending(&format!("old{i}"), b"1", short, 3)
                .await
                .unwrap();
        }
        tokio::time::sleep(Duration::from_millis(40)).await;
        s.put_pending("new", b"2", long, 3).await.unwrap();
        assert_eq!(m.pending_logins_evicted.get(), 0);
        assert_eq!(m.pending_logins.get(), 1);

        // The sweep finds expired ones anywhere in the order.
        s.put_pending("brief", b"3", short, 3).await.unwrap();
        s.put_pending("later", b"4", long, 3).await.unwrap();
        assert_eq!(m.pending_logins.get(), 3);
        tokio::time::sleep(Duration::from_millis(40)).await;
        let Store::Memory(mem) = &s else {
            unreachable!()
        };
        mem.sweep();
        assert_eq!(m.pending_logins.get(), 2);
        assert_eq!(s.take_pending("brief").await.unwrap(), None);
        assert_eq!(
            s.take_pending("new").await.unwrap().as_deref(),
            Some(&b"2"[..])
        );
        assert_eq!(
            s.take_pending("later").await.unwrap().as_deref(),
            Some(&b"4"[..])
        );
    }

    #[tokio::test]
    async fn memory_pending_flood_leaves_sessions_and_values_alone() {
        let (s, m) = observed();
        let long = Duration::from_secs(60);
        s.session_create("s", b"r", long, long).await.unwrap();
        s.put("v", b"1", long).await.unwrap();
        for i in 0..1000 {
            s.put_pending(&format!("{i:064x}"), b"tx", long, 10)
                .await
                .unwrap();
        }
        assert_eq!(m.pending_logins.get(), 10);
        assert_eq!(m.pending_logins_evicted.get(), 990);
        assert!(s.session_load("s", long, None).await.unwrap().is_some());
        assert_eq!(s.take("v").await.unwrap().as_deref(), Some(&b"1"[..]));
    }

    #[tokio::test(start_paused = true)]
    async fn memory_sessions() {
        let s = Store::memory();
        let idle = Duration::from_secs(60);
        s.session_create("s", b"r1", idle, Duration::from_millis(200))
            .await
            .unwrap();
        let got = s
            .session_load("s", idle, Some(idle))
            .await
            .unwrap()
            .unwrap();
        assert_eq!((got.record.as_slice(), got.rev), (&b"r1"[..], 1));
        assert!(got.remaining <= Duration::from_millis(200));
        assert_eq!(
            s.session_update("s", 0, b"x").await.unwrap(),
            Update::Conflict
        );
        assert_eq!(
            s.session_update("s", 1, b"r2").await.unwrap(),
            Update::Done(2)
        );
        let got = s.session_load("s", idle, None).await.unwrap().unwrap();
        assert_eq!((got.record.as_slice(), got.rev), (&b"r2"[..], 2));
        assert_eq!(
            s.session_check("s", idle, None, Some(2)).await.unwrap(),
            Some(Checked::Unchanged)
        );
        match s.session_check("s", idle, None, Some(1)).await.unwrap() {
            Some(Checked::Changed(now)) => assert_eq!((now.record, now.rev), (got.record, 2)),
            other => panic!("{other:?}"),
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
        assert_eq!(
            s.session_load("s", idle, None).await.unwrap(),
            None,
            "absolute"
        );
        assert_eq!(s.session_update("s", 2, b"r3").await.unwrap(), Update::Gone);

        s.index_add("u", "a", unix_ms() + 60_000).await.unwrap();
        s.index_add("u", "b", unix_ms() - 1).await.unwrap();
        assert_eq!(s.index_members("u").await.unwrap(), vec!["a".to_string()]);
        s.index_remove("u", "a").await.unwrap();
        assert!(s.index_members("u").await.unwrap().is_empty());
    }
}
