//! The in-memory session cache: the hot path answers from here.
//!
//! Coherent or absent (design decision 4): with Redis, entries are trusted only while the
//! invalidation subscription is connected; when it drops the cache is cleared and bypassed
//! until it is back. Every entry also has a short maximum age, so a lost invalidation cannot
//! keep a revoked session alive for long. A generation counter, bumped by every
//! invalidation, keeps a load that raced with an invalidation from inserting a stale entry.
//!
//! An entry too old to serve on its own (or every entry, with the cache off) stays for a while
//! as a [`SessionCache::candidate`]: the store is asked whether the record is still at that
//! entry's revision, and when it is, the entry is reused instead of decoding the record again.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use moka::future::Cache;
use moka::Expiry;

use super::crypto::IdHash;
use super::model::Session;

/// How long an entry stays as a revalidation candidate after the store last confirmed it
/// (at least; `max_age` when longer).
const CANDIDATE_KEEP: Duration = Duration::from_secs(60);

/// Why a single-flight load ([`SessionCache::load_once`]) has no session to share.
#[derive(Debug)]
pub enum Miss<E> {
    /// The store has no such session.
    Gone,
    /// The store could not answer (shared by every caller of the flight, never cached).
    Failed(E),
}

/// The bounding rule, per entry: kept as a candidate for `keep` after it was (re)inserted.
/// An entry past its session's deadline is never used (the readers check it) and goes at
/// the next [`SessionCache::sweep`].
struct Lifetime {
    keep: Duration,
}

impl Expiry<IdHash, Arc<Session>> for Lifetime {
    fn expire_after_create(&self, _: &IdHash, _: &Arc<Session>, _: Instant) -> Option<Duration> {
        Some(self.keep)
    }

    /// A re-insert after the store confirmed the entry keeps it for `keep` again.
    fn expire_after_update(
        &self,
        _: &IdHash,
        _: &Arc<Session>,
        _: Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        Some(self.keep)
    }
}

pub struct SessionCache {
    /// Bounded by `max_entries` (least-used entries give way) and [`Lifetime`].
    map: Cache<IdHash, Arc<Session>>,
    max_age: Duration,
    coherent: AtomicBool,
    generation: AtomicU64,
}

impl SessionCache {
    /// `max_age` zero: never answer without the store (entries are then only candidates).
    pub fn new(max_age: Duration, max_entries: usize, coherent: bool) -> Self {
        Self {
            map: Cache::builder()
                .max_capacity(max_entries as u64)
                .expire_after(Lifetime {
                    keep: max_age.max(CANDIDATE_KEEP),
                })
                .build(),
            max_age,
            coherent: AtomicBool::new(coherent),
            generation: AtomicU64::new(0),
        }
    }

    fn usable(&self) -> bool {
        !self.max_age.is_zero() && self.coherent.load(Ordering::Acquire)
    }

    pub async fn get(&self, hash: &IdHash) -> Option<Arc<Session>> {
        if !self.usable() {
            return None;
        }
        let s = self.map.get(hash).await?;
        // Too old to serve alone; kept as a candidate.
        (s.validated.elapsed() <= self.max_age).then_some(s)
    }

    /// An entry of any age for the store to confirm (see the module doc): never to be used
    /// without that confirmation.
    pub async fn candidate(&self, hash: &IdHash) -> Option<Arc<Session>> {
        let s = self.map.get(hash).await?;
        (s.deadline > Instant::now()).then_some(s)
    }

    /// Capture before reading the store; pass to [`SessionCache::insert`].
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    pub async fn insert(&self, session: Arc<Session>, generation_at_load: u64) {
        // Inserted even when not usable (cache off, or not coherent): then only a candidate.
        let hash = session.hash;
        self.map.insert(hash, session).await;
        self.drop_if_raced(&hash, generation_at_load).await;
    }

    /// Insert, then re-check: an invalidation between the store read and the insert bumps
    /// the generation, and the entry it might have missed is removed here.
    async fn drop_if_raced(&self, hash: &IdHash, generation_at_load: u64) {
        if self.generation.load(Ordering::Acquire) != generation_at_load {
            self.map.invalidate(hash).await;
        }
    }

    /// Load a session that has no entry here, once for every concurrent caller: the first
    /// runs `read`, the others wait for its answer. A session is inserted (a candidate, or
    /// servable, as by [`SessionCache::insert`]); a missing one or a failure is not, and the
    /// next caller reads again.
    pub async fn load_once<E, F>(
        &self,
        hash: IdHash,
        generation_at_load: u64,
        read: F,
    ) -> Result<Arc<Session>, Arc<Miss<E>>>
    where
        E: Send + Sync + 'static,
        F: Future<Output = Result<Arc<Session>, Miss<E>>>,
    {
        let s = self.map.try_get_with(hash, read).await?;
        self.drop_if_raced(&hash, generation_at_load).await;
        Ok(s)
    }

    pub async fn invalidate(&self, hash: &IdHash) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.map.invalidate(hash).await;
    }

    /// Called by the subscriber: `false` clears and bypasses the cache.
    pub fn set_coherent(&self, coherent: bool) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        // Both ways: entries inserted while incoherent may have missed invalidations, and
        // must not be served once the cache is trusted again.
        self.map.invalidate_all();
        self.coherent.store(coherent, Ordering::Release);
    }

    pub fn is_coherent(&self) -> bool {
        self.coherent.load(Ordering::Acquire)
    }

    /// Entries held, as of the last [`SessionCache::sweep`] (moka counts lazily).
    pub fn len(&self) -> usize {
        self.map.entry_count() as usize
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Drop entries no longer worth keeping as candidates, and expired sessions, now (moka
    /// also expires entries `keep` after their insert as it is used).
    pub async fn sweep(&self) {
        let keep = self.max_age.max(CANDIDATE_KEEP);
        let now = Instant::now();
        // Not moka's invalidation closures: while one is pending every read runs it.
        let gone: Vec<IdHash> = self
            .map
            .iter()
            .filter(|(_, s)| s.validated.elapsed() > keep || s.deadline <= now)
            .map(|(k, _)| *k)
            .collect();
        for k in &gone {
            self.map.invalidate(k).await;
        }
        self.map.run_pending_tasks().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::model::{Claims, SessionRecord, Validated};
    use std::time::Instant;

    fn session(b: u8) -> Arc<Session> {
        Arc::new(Session {
            hash: IdHash([b; 32]),
            record: SessionRecord {
                v: 1,
                provider: "p".into(),
                claims: Claims::default(),
                created_at: 0,
                expires_at: u64::MAX,
                sid: None,
                access_expires_at: None,
                refreshable: false,
                tokens: String::new(),
            },
            headers: vec![],
            validated: Validated::now(),
            rev: 1,
            deadline: Instant::now() + Duration::from_secs(3600),
        })
    }

    #[tokio::test]
    async fn hit_invalidate_and_incoherence() {
        let c = SessionCache::new(Duration::from_secs(30), 100, true);
        let g = c.generation();
        c.insert(session(1), g).await;
        assert!(c.get(&IdHash([1; 32])).await.is_some());
        c.invalidate(&IdHash([1; 32])).await;
        assert!(c.get(&IdHash([1; 32])).await.is_none());

        c.insert(session(2), c.generation()).await;
        c.set_coherent(false);
        assert!(c.get(&IdHash([2; 32])).await.is_none());
        c.insert(session(2), c.generation()).await;
        assert!(
            c.get(&IdHash([2; 32])).await.is_none(),
            "never served while incoherent"
        );
        assert!(
            c.candidate(&IdHash([2; 32])).await.is_some(),
            "kept to revalidate"
        );
        c.set_coherent(true);
        assert!(
            c.get(&IdHash([2; 32])).await.is_none(),
            "cleared on reconnect"
        );
        assert!(c.candidate(&IdHash([2; 32])).await.is_none());
    }

    #[tokio::test]
    async fn expired_session_is_no_candidate() {
        let c = SessionCache::new(Duration::from_secs(30), 100, true);
        let mut s = session(6);
        Arc::get_mut(&mut s).unwrap().deadline = Instant::now();
        c.insert(s, c.generation()).await;
        assert!(c.candidate(&IdHash([6; 32])).await.is_none());
        c.sweep().await;
        assert!(c.is_empty());
    }

    #[tokio::test]
    async fn stale_load_is_not_inserted() {
        let c = SessionCache::new(Duration::from_secs(30), 100, true);
        let g = c.generation();
        c.invalidate(&IdHash([3; 32])).await; // arrives while the load is in flight
        c.insert(session(3), g).await;
        assert!(c.get(&IdHash([3; 32])).await.is_none());
    }

    #[tokio::test]
    async fn max_age_and_disabled() {
        let c = SessionCache::new(Duration::from_millis(1), 100, true);
        c.insert(session(4), c.generation()).await;
        std::thread::sleep(Duration::from_millis(5));
        assert!(c.get(&IdHash([4; 32])).await.is_none());
        let old = c
            .candidate(&IdHash([4; 32]))
            .await
            .expect("still a candidate");
        old.validated.renew();
        assert!(
            c.get(&IdHash([4; 32])).await.is_some(),
            "fresh again once confirmed"
        );
        let off = SessionCache::new(Duration::ZERO, 100, true);
        off.insert(session(5), off.generation()).await;
        assert!(off.get(&IdHash([5; 32])).await.is_none());
        assert!(off.candidate(&IdHash([5; 32])).await.is_some());
        off.sweep().await;
        assert_eq!(off.len(), 1, "kept for CANDIDATE_KEEP");
    }

    /// A burst of loads for one cold session reads the store once; a failure or a missing
    /// session is shared with the burst but not cached: the next load reads again.
    #[tokio::test(start_paused = true)]
    async fn concurrent_cold_loads_read_the_store_once() {
        use std::sync::atomic::AtomicUsize;
        let c = SessionCache::new(Duration::from_secs(30), 100, true);
        let reads = AtomicUsize::new(0);
        let read = |answer: Result<(), bool>| {
            let reads = &reads;
            async move {
                reads.fetch_add(1, Ordering::SeqCst);
                // The store takes a while: the whole burst arrives during the read.
                tokio::time::sleep(Duration::from_millis(50)).await;
                match answer {
                    Ok(()) => Ok(session(7)),
                    Err(true) => Err(Miss::Failed("redis down")),
                    Err(false) => Err(Miss::Gone),
                }
            }
        };
        let burst = |answer| {
            futures_util::future::join_all(
                (0..50).map(|_| c.load_once(IdHash([7; 32]), c.generation(), read(answer))),
            )
        };

        let failed = burst(Err(true)).await;
        assert_eq!(reads.load(Ordering::SeqCst), 1);
        type Loaded = Result<Arc<Session>, Arc<Miss<&'static str>>>;
        fn miss(r: &Loaded) -> Option<&Miss<&'static str>> {
            r.as_ref().err().map(|e| &**e)
        }
        assert!(failed
            .iter()
            .all(|r| matches!(miss(r), Some(Miss::Failed("redis down")))));
        let gone = burst(Err(false)).await;
        assert_eq!(
            reads.load(Ordering::SeqCst),
            2,
            "the failure was not cached"
        );
        assert!(gone.iter().all(|r| matches!(miss(r), Some(Miss::Gone))));

        let loaded = burst(Ok(())).await;
        assert_eq!(
            reads.load(Ordering::SeqCst),
            3,
            "nor was the missing session"
        );
        let first = loaded[0].as_ref().unwrap();
        assert!(loaded
            .iter()
            .all(|r| Arc::ptr_eq(r.as_ref().unwrap(), first)));
        assert!(Arc::ptr_eq(&c.get(&IdHash([7; 32])).await.unwrap(), first));
    }
}
