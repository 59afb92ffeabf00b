//! The gateway's one bounded cache: sessions, verified bearer tokens, introspection answers
//! and signed assertions all live in a [`Cache`].
//!
//! One set of rules for all of them, so a stranger cannot make any of them grow:
//! - every entry has a deadline on one monotonic clock ([`Tick`]) and is never served past it;
//! - the size is bounded: when full, expired entries are dropped first (at most once a
//!   second, so a full cache does not scan on every insert) and if that frees nothing, the
//!   new entry is not kept (the caller still gets its answer, it is just not remembered);
//!   evicting a live entry instead would let a flood of new keys push out every user's;
//! - the sweeper drops expired entries every 30 s;
//! - a miss is loaded once however many callers ask at the same time ([`Cache::load`]).
//!
//! `moka` does all this too, but measured on the session hit path it doubled the cost of a
//! hit (299 → 639 ns): a DashMap lookup and one clock read is all a hit needs here.
//!
//! The clock is the process's monotonic clock; unit tests run it on tokio's, so they move
//! time with `tokio::time::advance` instead of sleeping.

use std::future::Future;
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::LazyLock;
use std::time::{Duration, Instant};

use dashmap::DashMap;

use crate::flight::SingleFlight;

/// A point on the caches' clock: microseconds since the process's first reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Tick(u64);

/// The zero of [`Tick`].
static EPOCH: LazyLock<Instant> = LazyLock::new(|| {
    let now = Instant::now();
    // Under test, a paused tokio clock may start before this first reading, and every tick
    // before it would read 0: an hour earlier keeps them apart.
    #[cfg(test)]
    let now = now.checked_sub(Duration::from_secs(3600)).unwrap_or(now);
    now
});

impl Tick {
    /// Now. Under `cfg(test)`, tokio's clock (pausable); otherwise the system's monotonic one.
    #[inline]
    pub(crate) fn now() -> Self {
        #[cfg(test)]
        let now = tokio::time::Instant::now().into_std();
        #[cfg(not(test))]
        let now = Instant::now();
        Self::at(now)
    }

    /// `instant` on this clock (the epoch, for an instant before it).
    pub fn at(instant: Instant) -> Self {
        Self::from_duration(instant.saturating_duration_since(*EPOCH))
    }

    /// A duration in micros, saturating (`as u64` would wrap a huge one to a small one).
    fn from_duration(d: Duration) -> Self {
        Self(u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
    }

    /// `d` after `self`, saturating.
    pub(crate) fn after(self, d: Duration) -> Self {
        Self(self.0.saturating_add(Self::from_duration(d).0))
    }

    /// A deadline given in unix seconds (a token's `exp`), on this clock, to the microsecond:
    /// the entry ends when the wall clock reaches it, not up to a second later.
    pub(crate) fn at_unix(unix_secs: u64) -> Self {
        let now_micros = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as u64);
        let left = unix_secs
            .saturating_mul(1_000_000)
            .saturating_sub(now_micros);
        Self::now().after(Duration::from_micros(left))
    }

    /// Time from `earlier` to `self` (zero if `earlier` is later).
    pub(crate) fn since(self, earlier: Tick) -> Duration {
        Duration::from_micros(self.0.saturating_sub(earlier.0))
    }

    pub(crate) fn micros(self) -> u64 {
        self.0
    }

    pub(crate) fn from_micros(micros: u64) -> Self {
        Self(micros)
    }
}

struct Entry<V> {
    value: V,
    until: Tick,
}

/// A bounded map whose entries expire; see the module doc for the rules. `R` is what a
/// [`Cache::load`] of a missing key answers (errors included), shared by concurrent callers.
pub(crate) struct Cache<K, V, R = ()> {
    map: DashMap<K, Entry<V>>,
    capacity: usize,
    /// When a full cache last dropped its expired entries (micros on [`Tick`]'s clock).
    last_purge: AtomicU64,
    loads: SingleFlight<K, R>,
}

impl<K: Hash + Eq + Clone, V: Clone, R: Clone> Cache<K, V, R> {
    /// A cache of at most `capacity` entries.
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            map: DashMap::new(),
            capacity,
            last_purge: AtomicU64::new(0),
            loads: SingleFlight::default(),
        }
    }

    /// The entry for `key` if it is still live.
    #[inline]
    pub(crate) fn get(&self, key: &K) -> Option<V> {
        self.get_at(key, Tick::now())
    }

    /// [`Cache::get`] with the caller's reading of the clock (one reading per request).
    #[inline]
    pub(crate) fn get_at(&self, key: &K, now: Tick) -> Option<V> {
        let e = self.map.get(key)?;
        (e.until > now).then(|| e.value.clone())
    }

    /// Keep `value` under `key` until `until`. Returns whether it was kept: not when already
    /// expired, nor when the cache is full of live entries.
    pub(crate) fn insert(&self, key: K, value: V, until: Tick) -> bool {
        let now = Tick::now();
        if until <= now {
            return false;
        }
        if self.map.len() >= self.capacity && !self.map.contains_key(&key) {
            self.purge_when_full(now);
            if self.map.len() >= self.capacity {
                return false;
            }
        }
        self.map.insert(key, Entry { value, until });
        true
    }

    /// A full cache drops its expired entries, at most once a second.
    fn purge_when_full(&self, now: Tick) {
        let last = self.last_purge.load(Ordering::Relaxed);
        if now.since(Tick(last)) < Duration::from_secs(1)
            || self
                .last_purge
                .compare_exchange(last, now.0, Ordering::AcqRel, Ordering::Relaxed)
                .is_err()
        {
            return;
        }
        self.map.retain(|_, e| e.until > now);
    }

    pub(crate) fn remove(&self, key: &K) {
        self.map.remove(key);
    }

    pub(crate) fn clear(&self) {
        self.map.clear();
    }

    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Drop expired entries, and live ones `keep` rejects.
    pub(crate) fn sweep(&self, keep: impl Fn(&V) -> bool) {
        let now = Tick::now();
        self.map.retain(|_, e| e.until > now && keep(&e.value));
    }

    /// `load`'s answer for `key`, computed once for every caller asking meanwhile. The
    /// loader decides what to [`Cache::insert`] (it knows the deadline, and what is worth
    /// keeping); nothing about the load itself is remembered, errors included.
    pub(crate) async fn load<F, Fut>(&self, key: &K, load: F) -> R
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = R>,
    {
        self.loads.run(key, load).await
    }

    /// Loads in progress (one per key being loaded).
    #[cfg(test)]
    pub(crate) fn loading(&self) -> usize {
        self.loads.in_flight()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::sync::Arc;

    fn secs(s: u64) -> Tick {
        Tick::now().after(Duration::from_secs(s))
    }

    #[tokio::test(start_paused = true)]
    async fn entries_expire_on_the_clock() {
        let c: Cache<u32, &str> = Cache::new(10);
        assert!(c.insert(1, "a", secs(5)));
        assert_eq!(c.get(&1), Some("a"));
        tokio::time::advance(Duration::from_secs(5)).await;
        assert_eq!(c.get(&1), None, "never served at or past its deadline");
        assert_eq!(c.len(), 1, "until swept");
        c.sweep(|_| true);
        assert!(c.is_empty());
        assert!(!c.insert(2, "b", Tick::now()), "already expired: not kept");
    }

    #[tokio::test(start_paused = true)]
    async fn full_means_expired_out_first_then_nothing_added() {
        let c: Cache<u32, u32> = Cache::new(3);
        for k in 0..3 {
            assert!(c.insert(k, k, secs(10 + k as u64)));
        }
        assert!(!c.insert(9, 9, secs(60)), "full of live entries");
        assert_eq!(c.get(&0), Some(0), "no live entry evicted");
        assert!(c.insert(1, 11, secs(60)), "replacing a key needs no room");
        tokio::time::advance(Duration::from_secs(11)).await;
        // Key 0 expired: a full cache makes room from the expired ones.
        assert!(c.insert(9, 9, secs(60)));
        assert_eq!(c.len(), 3);
        // ... at most once a second: a full cache of live entries is not scanned per insert.
        assert!(!c.insert(10, 10, secs(60)));
        tokio::time::advance(Duration::from_secs(2)).await; // key 2 expires at 12
        assert!(c.insert(10, 10, secs(60)));
        assert_eq!(
            (c.get(&1), c.get(&9), c.get(&10)),
            (Some(11), Some(9), Some(10))
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_flood_of_keys_stays_within_the_bound() {
        let c: Cache<u32, u32> = Cache::new(100);
        for k in 0..10_000 {
            c.insert(k, k, secs(1 + (k % 7) as u64));
            if k % 1000 == 0 {
                tokio::time::advance(Duration::from_millis(1500)).await;
            }
        }
        assert!(c.len() <= 100, "{}", c.len());
    }

    #[tokio::test(start_paused = true)]
    async fn sweep_keeps_what_the_owner_wants() {
        let c: Cache<u32, u32> = Cache::new(10);
        for k in 0..6 {
            c.insert(k, k, secs(60));
        }
        c.sweep(|v| v % 2 == 0);
        assert_eq!(c.len(), 3);
        c.remove(&0);
        assert_eq!(c.get(&0), None);
        c.clear();
        assert!(c.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn a_miss_is_loaded_once_for_concurrent_callers() {
        let c: Arc<Cache<u32, u32, Result<u32, String>>> = Arc::new(Cache::new(10));
        let runs = Arc::new(AtomicUsize::new(0));
        let callers: Vec<_> = (0..20)
            .map(|_| {
                let (c, runs) = (c.clone(), runs.clone());
                tokio::spawn(async move {
                    if let Some(v) = c.get(&1) {
                        return Ok(v);
                    }
                    c.load(&1, || async {
                        runs.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        c.insert(1, 7, secs(60));
                        Ok(7)
                    })
                    .await
                })
            })
            .collect();
        for t in callers {
            assert_eq!(t.await.unwrap(), Ok(7));
        }
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        assert_eq!(c.loading(), 0, "nothing kept once landed");
        assert_eq!(c.get(&1), Some(7));
    }

    #[test]
    fn ticks() {
        let unix = crate::crypto::now_unix();
        assert!(
            Tick::at_unix(unix) <= Tick::now(),
            "a deadline this second has passed or is now"
        );
        let later = Tick::at_unix(unix + 10).since(Tick::now());
        assert!(later > Duration::from_secs(9) && later <= Duration::from_secs(10));
        let t = Tick::from_micros(1_000_000);
        assert_eq!(
            t.after(Duration::from_secs(1)).since(t),
            Duration::from_secs(1)
        );
        assert_eq!(t.since(t.after(Duration::from_secs(1))), Duration::ZERO);
        assert_eq!(
            Tick::from_micros(u64::MAX)
                .after(Duration::from_secs(1))
                .micros(),
            u64::MAX
        );
        assert!(Tick::at(Instant::now()) >= Tick::from_micros(0));
        // A duration beyond u64 micros saturates instead of wrapping to a near deadline (a
        // session with an enormous absolute timeout must not leave the cache at once).
        let huge = Duration::from_micros(u64::MAX) + Duration::from_secs(1);
        assert_eq!(t.after(huge).micros(), u64::MAX);
        assert_eq!(Tick::from_micros(0).after(Duration::MAX).micros(), u64::MAX);
        assert_eq!(Tick::now().after(Duration::MAX).micros(), u64::MAX);
    }
}
