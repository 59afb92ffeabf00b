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
use std::time::{Duration, Instant};

use dashmap::DashMap;

use super::crypto::IdHash;
use super::model::UserSession;

/// How long an entry stays as a revalidation candidate after the store last confirmed it
/// (at least; `max_age` when longer).
const CANDIDATE_KEEP: Duration = Duration::from_secs(60);

pub struct SessionCache {
    map: DashMap<IdHash, Arc<UserSession>>,
    max_age: Duration,
    max_entries: usize,
    coherent: AtomicBool,
    generation: AtomicU64,
}

impl SessionCache {
    /// `max_age` zero: never answer without the store (entries are then only candidates).
    pub fn new(max_age: Duration, max_entries: usize, coherent: bool) -> Self {
        Self {
            map: DashMap::new(),
            max_age,
            max_entries,
            coherent: AtomicBool::new(coherent),
            generation: AtomicU64::new(0),
        }
    }

    fn usable(&self) -> bool {
        !self.max_age.is_zero() && self.coherent.load(Ordering::Acquire)
    }

    pub(crate) fn get(&self, hash: &IdHash) -> Option<Arc<UserSession>> {
        if !self.usable() {
            return None;
        }
        let s = self.map.get(hash)?.clone();
        // Too old to serve alone; kept as a candidate.
        (s.validated.elapsed() <= self.max_age).then_some(s)
    }

    /// An entry of any age for the store to confirm (see the module doc): never to be used
    /// without that confirmation.
    pub(crate) fn candidate(&self, hash: &IdHash) -> Option<Arc<UserSession>> {
        let s = self.map.get(hash)?.clone();
        (s.deadline > Instant::now()).then_some(s)
    }

    /// Capture before reading the store; pass to [`SessionCache::insert`].
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    pub fn insert(&self, session: Arc<UserSession>, generation_at_load: u64) {
        // Inserted even when not usable (cache off, or not coherent): then only a candidate.
        if self.map.len() >= self.max_entries {
            return;
        }
        // Insert, then re-check: an invalidation between the check and the insert bumps the
        // generation, and the entry it might have missed is removed here.
        let hash = session.hash;
        self.map.insert(hash, session);
        if self.generation.load(Ordering::Acquire) != generation_at_load {
            self.map.remove(&hash);
        }
    }

    pub(crate) fn invalidate(&self, hash: &IdHash) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.map.remove(hash);
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
        let now = Instant::now();
        self.map
            .retain(|_, s| s.validated.elapsed() <= keep && s.deadline > now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Claims;
    use crate::session::model::{SessionRecord, Validated};
    use std::time::Instant;

    fn session(b: u8) -> Arc<UserSession> {
        Arc::new(UserSession {
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
        Arc::get_mut(&mut s).unwrap().deadline = Instant::now();
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

    #[test]
    fn max_age_and_disabled() {
        let c = SessionCache::new(Duration::from_millis(1), 100, true);
        c.insert(session(4), c.generation());
        std::thread::sleep(Duration::from_millis(5));
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
    }
}
