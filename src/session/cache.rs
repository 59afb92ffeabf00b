//! The in-memory session cache: the hot path answers from here.
//!
//! Coherent or absent (product decision 4): with Redis, entries are trusted only while the
//! invalidation subscription is connected; when it drops the cache is cleared and bypassed
//! until it is back. Every entry also has a short maximum age, so a lost invalidation cannot
//! keep a revoked session alive for long. A generation counter, bumped by every
//! invalidation, keeps a load that raced with an invalidation from inserting a stale entry.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;

use super::crypto::IdHash;
use super::model::Session;

pub struct SessionCache {
    map: DashMap<IdHash, Arc<Session>>,
    max_age: Duration,
    max_entries: usize,
    coherent: AtomicBool,
    generation: AtomicU64,
}

impl SessionCache {
    /// `max_age` zero disables the cache.
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

    pub fn get(&self, hash: &IdHash) -> Option<Arc<Session>> {
        if !self.usable() {
            return None;
        }
        let s = self.map.get(hash)?.clone();
        if s.loaded_at.elapsed() > self.max_age {
            self.map.remove(hash);
            return None;
        }
        Some(s)
    }

    /// Capture before reading the store; pass to [`SessionCache::insert`].
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    pub fn insert(&self, session: Arc<Session>, generation_at_load: u64) {
        if !self.usable() || self.map.len() >= self.max_entries {
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

    pub fn invalidate(&self, hash: &IdHash) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.map.remove(hash);
    }

    /// Called by the subscriber: `false` clears and bypasses the cache.
    pub fn set_coherent(&self, coherent: bool) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        if !coherent {
            self.map.clear();
        }
        self.coherent.store(coherent, Ordering::Release);
    }

    pub fn is_coherent(&self) -> bool {
        self.coherent.load(Ordering::Acquire)
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Drop entries past their maximum age.
    pub fn sweep(&self) {
        let max = self.max_age;
        self.map.retain(|_, s| s.loaded_at.elapsed() <= max);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::model::{Claims, SessionRecord};
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
            loaded_at: Instant::now(),
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
        assert!(c.is_empty(), "no inserts while incoherent");
        c.set_coherent(true);
        assert!(c.get(&IdHash([2; 32])).is_none(), "cleared on disconnect");
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
        let off = SessionCache::new(Duration::ZERO, 100, true);
        off.insert(session(5), off.generation());
        assert!(off.get(&IdHash([5; 32])).is_none());
    }
}
