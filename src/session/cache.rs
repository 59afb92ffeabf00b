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

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::crypto::IdHash;
use super::model::{SessionRef, UserSession};
use super::store::StoreError;
use crate::cache::{Cache, Tick};

/// How long an entry stays as a revalidation candidate after the store last confirmed it
/// (at least; `max_age` when longer).
const CANDIDATE_KEEP: Duration = Duration::from_secs(60);

/// What a load of a missed session answers: the session, absent, or why the store could not say.
pub(crate) type Loaded = Result<Option<SessionRef>, StoreError>;

pub struct SessionCache {
    /// Entries live until their session's absolute deadline; freshness (`max_age`) is
    /// judged here, on top.
    /// Keyed by the first half of the hash (`IdHash::halves`); every lookup checks the
    /// other half, which the copy keeps.
    map: Cache<u128, Arc<UserSession>, Loaded>,
    max_age: Duration,
    coherent: AtomicBool,
    generation: AtomicU64,
}

impl SessionCache {
    /// `max_age` zero: never answer without the store (entries are then only candidates).
    pub fn new(max_age: Duration, max_entries: usize, coherent: bool) -> Self {
        Self {
            map: Cache::new(max_entries),
            max_age,
            coherent: AtomicBool::new(coherent),
            generation: AtomicU64::new(0),
        }
    }

    fn usable(&self) -> bool {
        !self.max_age.is_zero() && self.coherent.load(Ordering::Acquire)
    }

    /// A session the cache may answer with alone: live, and confirmed by the store within
    /// `max_age` (one clock reading for both).
    #[inline]
    pub(crate) fn get(&self, hash: &IdHash) -> Option<SessionRef> {
        if !self.usable() {
            return None;
        }
        let now = Tick::now();
        let (key, tail) = hash.halves();
        let s = self.map.get_at(&key, now).filter(|s| s.hash_tail == tail)?;
        // Too old to serve alone; kept as a candidate.
        (s.validated.age(now) <= self.max_age).then_some(SessionRef {
            hash: *hash,
            copy: s,
        })
    }

    /// An entry of any age for the store to confirm (see the module doc): never to be used
    /// without that confirmation.
    pub(crate) fn candidate(&self, hash: &IdHash) -> Option<SessionRef> {
        let (key, tail) = hash.halves();
        let copy = self.map.get(&key).filter(|s| s.hash_tail == tail)?;
        Some(SessionRef { hash: *hash, copy })
    }

    /// A missed session, loaded by `load` once for every caller asking meanwhile.
    pub(crate) async fn load<F, Fut>(&self, hash: &IdHash, load: F) -> Loaded
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Loaded>,
    {
        match self.map.load(&hash.halves().0, &load).await {
            // Another session's load, met under the same half hash (never seen: see
            // `IdHash::halves`): not this caller's answer, so it loads its own.
            Ok(Some(s)) if s.hash != *hash => load().await,
            loaded => loaded,
        }
    }

    /// Capture before reading the store; pass to [`SessionCache::insert`].
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    pub fn insert(&self, session: SessionRef, generation_at_load: u64) {
        // Inserted even when not usable (cache off, or not coherent): then only a candidate.
        // Insert, then re-check: an invalidation between the check and the insert bumps the
        // generation, and the entry it might have missed is removed here.
        let SessionRef { hash, copy } = session;
        let (key, tail) = hash.halves();
        if copy.hash_tail != tail {
            // Built for another hash (a bug): never cached.
            return;
        }
        let until = copy.deadline;
        if self.map.insert(key, copy, until)
            && self.generation.load(Ordering::Acquire) != generation_at_load
        {
            self.map.remove(&key);
        }
    }

    pub(crate) fn invalidate(&self, hash: &IdHash) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.map.remove(&hash.halves().0);
    }

    /// Forget every entry (a reload that may change what a loaded session carries, such as
    /// its identity header names); coherence is the subscriber's to say.
    pub(crate) fn clear(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.map.clear();
    }

    /// Called by the subscriber: `false` clears and bypasses the cache.
    pub(crate) fn set_coherent(&self, coherent: bool) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        // Both ways: entries inserted while incoherent may have missed invalidations, and
        // must not be served once the cache is trusted again.
        self.map.clear();
        self.coherent.store(coherent, Ordering::Release);
    }

    pub(crate) fn is_coherent(&self) -> bool {
        self.coherent.load(Ordering::Acquire)
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Drop entries no longer worth keeping as candidates, and expired sessions.
    pub(crate) fn sweep(&self) {
        let keep = self.max_age.max(CANDIDATE_KEEP);
        let now = Tick::now();
        self.map.sweep(|s| s.validated.age(now) <= keep);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Claims;
    use crate::session::model::{SessionRecord, Validated};
    use std::time::Instant;

    fn session(b: u8) -> SessionRef {
        let copy = Arc::new(UserSession {
            record: SessionRecord {
                v: 1,
                provider: "p".into(),
                claims: Claims::default(),
                created_at: 0,
                expires_at: u64::MAX,
                sid: None,
                access_expires_at: None,
                refreshable: false,
                tokens: Box::default(),
            },
            headers: Box::default(),
            validated: Validated::now(),
            rev: 1,
            deadline: Tick::at(Instant::now() + Duration::from_secs(3600)),
            epoch: 0,
            whole: true,
            hash_tail: [b; 16],
        });
        SessionRef {
            hash: IdHash([b; 32]),
            copy,
        }
    }

    /// The key is half the hash; the other half, kept in the copy, is checked on every
    /// lookup and load, so a copy is only ever found under its own whole hash.
    #[tokio::test]
    async fn a_lookup_checks_the_whole_hash() {
        let c = SessionCache::new(Duration::from_secs(30), 100, true);
        c.insert(session(1), c.generation());
        let mut twin = [1u8; 32];
        twin[31] = 9;
        let twin = IdHash(twin);
        assert_eq!(twin.halves().0, IdHash([1; 32]).halves().0, "same key");
        assert!(c.get(&IdHash([1; 32])).is_some());
        assert!(c.get(&twin).is_none() && c.candidate(&twin).is_none());
        // A load answered with another hash's session (the leader of a load under the same
        // key) is not this caller's: it loads its own.
        let twin_copy = || SessionRef {
            hash: twin,
            copy: Arc::new(UserSession {
                hash_tail: twin.halves().1,
                ..Arc::try_unwrap(session(1).copy).unwrap()
            }),
        };
        let calls = std::sync::atomic::AtomicUsize::new(0);
        let loaded = c
            .load(&twin, || {
                let n = calls.fetch_add(1, Ordering::Relaxed);
                async move { Ok(Some(if n == 0 { session(1) } else { twin_copy() })) }
            })
            .await;
        assert!(matches!(loaded, Ok(Some(s)) if s.hash == twin));
        assert_eq!(calls.load(Ordering::Relaxed), 2);
        // Under the shared key the twin replaces the entry, and invalidating either drops it:
        // the other is then a miss, never the wrong session.
        c.insert(twin_copy(), c.generation());
        assert!(c.get(&IdHash([1; 32])).is_none() && c.get(&twin).is_some());
        c.invalidate(&IdHash([1; 32]));
        assert!(c.get(&twin).is_none() && c.candidate(&twin).is_none());
        let loaded = c
            .load(&IdHash([1; 32]), || async { Ok(Some(session(1))) })
            .await;
        assert!(matches!(loaded, Ok(Some(s)) if s.hash == IdHash([1; 32])));
        // A copy built for another hash is never inserted.
        let c = SessionCache::new(Duration::from_secs(30), 100, true);
        let wrong = SessionRef {
            hash: IdHash([2; 32]),
            copy: session(3).copy,
        };
        c.insert(wrong, c.generation());
        assert!(c.is_empty());
    }

    #[test]
    fn hit_invalidate_and_incoherence() {
        let c = SessionCache::new(Duration::from_secs(30), 100, true);
        let g = c.generation();
        c.insert(session(1), g);
        assert!(c.get(&IdHash([1; 32])).is_some());
        c.invalidate(&IdHash([1; 32]));
        assert!(c.get(&IdHash([1; 32])).is_none());

        c.insert(session(2), c.generation());
        c.set_coherent(false);
        assert!(c.get(&IdHash([2; 32])).is_none());
        c.insert(session(2), c.generation());
        assert!(
            c.get(&IdHash([2; 32])).is_none(),
            "never served while incoherent"
        );
        assert!(
            c.candidate(&IdHash([2; 32])).is_some(),
            "kept to revalidate"
        );
        c.set_coherent(true);
        assert!(c.get(&IdHash([2; 32])).is_none(), "cleared on reconnect");
        assert!(c.candidate(&IdHash([2; 32])).is_none());
    }

    #[test]
    fn expired_session_is_no_candidate() {
        let c = SessionCache::new(Duration::from_secs(30), 100, true);
        let mut s = session(6);
        Arc::get_mut(&mut s.copy).unwrap().deadline = Tick::at(Instant::now());
        c.insert(s, c.generation());
        assert!(c.candidate(&IdHash([6; 32])).is_none());
        c.sweep();
        assert!(c.is_empty());
    }

    #[test]
    fn stale_load_is_not_inserted() {
        let c = SessionCache::new(Duration::from_secs(30), 100, true);
        let g = c.generation();
        c.invalidate(&IdHash([3; 32])); // arrives while the load is in flight
        c.insert(session(3), g);
        assert!(c.get(&IdHash([3; 32])).is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn max_age_and_disabled() {
        let c = SessionCache::new(Duration::from_millis(1), 100, true);
        c.insert(session(4), c.generation());
        tokio::time::advance(Duration::from_millis(5)).await;
        assert!(c.get(&IdHash([4; 32])).is_none());
        let old = c.candidate(&IdHash([4; 32])).expect("still a candidate");
        old.validated.renew();
        assert!(
            c.get(&IdHash([4; 32])).is_some(),
            "fresh again once confirmed"
        );
        let off = SessionCache::new(Duration::ZERO, 100, true);
        off.insert(session(5), off.generation());
        assert!(off.get(&IdHash([5; 32])).is_none());
        assert!(off.candidate(&IdHash([5; 32])).is_some());
        off.sweep();
        assert_eq!(off.len(), 1, "kept for CANDIDATE_KEEP");
        tokio::time::advance(CANDIDATE_KEEP + Duration::from_secs(1)).await;
        off.sweep();
        assert!(off.is_empty(), "dropped once no longer worth revalidating");
    }

    #[test]
    fn bounded() {
        let c = SessionCache::new(Duration::from_secs(30), 2, true);
        for b in 0..5 {
            c.insert(session(b), c.generation());
        }
        assert_eq!(c.len(), 2);
    }
}
