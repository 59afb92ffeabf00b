//! One computation per key at a time: callers that ask for a key while its computation is
//! running wait for that result instead of repeating the work (a burst of requests for one
//! cold session reads the store once). Results are shared with the callers of that one
//! flight and never kept: the first caller after it lands starts a new one, so an error is
//! not remembered either.

use std::hash::Hash;
use std::sync::Arc;

use dashmap::DashMap;
use tokio::sync::OnceCell;

/// The flights in progress, by key. Holds an entry only while its computation runs.
pub(crate) struct SingleFlight<K, V> {
    flights: DashMap<K, Arc<OnceCell<V>>>,
}

impl<K: Hash + Eq + Clone, V: Clone> Default for SingleFlight<K, V> {
    fn default() -> Self {
        Self {
            flights: DashMap::new(),
        }
    }
}

impl<K: Hash + Eq + Clone, V: Clone> SingleFlight<K, V> {
    /// `work`'s result for `key`: computed here, or taken from the flight already running.
    /// If the caller running it is cancelled, one of the waiters runs `work` in its place.
    pub(crate) async fn run<F, Fut>(&self, key: &K, work: F) -> V
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = V>,
    {
        let flight = self.flights.entry(key.clone()).or_default().clone();
        let leave = Leave {
            flights: &self.flights,
            key,
            flight,
        };
        leave.flight.get_or_init(work).await.clone()
    }

    /// Flights in progress (for tests and bounds: one entry per key being computed).
    #[cfg(test)]
    pub(crate) fn in_flight(&self) -> usize {
        self.flights.len()
    }
}

/// A caller leaving its flight, done or cancelled. The entry goes once the flight has
/// landed (later callers start afresh), or when the last caller of an unfinished flight is
/// cancelled: nothing is left behind for a key that is never asked for again.
struct Leave<'a, K: Hash + Eq, V> {
    flights: &'a DashMap<K, Arc<OnceCell<V>>>,
    key: &'a K,
    flight: Arc<OnceCell<V>>,
}

impl<K: Hash + Eq, V> Drop for Leave<'_, K, V> {
    fn drop(&mut self) {
        let mine = &self.flight;
        // Under the shard lock: a caller joining now either already holds a clone (counted)
        // or finds the entry gone and starts a new flight. 2 = the map's and this caller's.
        self.flights.remove_if(self.key, |_, current| {
            Arc::ptr_eq(current, mine) && (mine.initialized() || Arc::strong_count(current) <= 2)
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn concurrent_callers_share_one_computation() {
        let flights: Arc<SingleFlight<u32, Result<u32, String>>> = Arc::default();
        let runs = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..50 {
            let (flights, runs) = (flights.clone(), runs.clone());
            tasks.push(tokio::spawn(async move {
                flights
                    .run(&7, || async {
                        runs.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        Ok(42)
                    })
                    .await
            }));
        }
        for t in tasks {
            assert_eq!(t.await.unwrap(), Ok(42));
        }
        assert_eq!(
            runs.load(Ordering::SeqCst),
            1,
            "one computation for 50 callers"
        );
        assert_eq!(flights.in_flight(), 0, "nothing kept once landed");
        // Other keys are other flights.
        let other = flights.run(&8, || async { Ok(1) }).await;
        assert_eq!(other, Ok(1));
    }

    #[tokio::test(start_paused = true)]
    async fn errors_are_shared_by_one_flight_and_never_kept() {
        let flights: SingleFlight<u32, Result<u32, String>> = SingleFlight::default();
        let runs = AtomicUsize::new(0);
        let slow_failure = || async {
            runs.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(100)).await;
            Err::<u32, _>("store down".to_string())
        };
        let (a, b) = tokio::join!(flights.run(&1, slow_failure), flights.run(&1, slow_failure));
        assert_eq!(
            (a.clone(), b),
            (Err("store down".into()), Err("store down".into()))
        );
        assert_eq!(runs.load(Ordering::SeqCst), 1, "one attempt for both");
        // The next caller tries again.
        let c = flights.run(&1, || async { Ok(5) }).await;
        assert_eq!(c, Ok(5));
        assert_eq!(runs.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_cancelled_leader_hands_the_work_on() {
        let flights: Arc<SingleFlight<u32, u32>> = Arc::default();
        let leader = {
            let flights = flights.clone();
            tokio::spawn(async move {
                flights
                    .run(&1, || async {
                        tokio::time::sleep(Duration::from_secs(3600)).await;
                        0
                    })
                    .await
            })
        };
        tokio::time::sleep(Duration::from_millis(10)).await;
        let waiter = {
            let flights = flights.clone();
            tokio::spawn(async move { flights.run(&1, || async { 9 }).await })
        };
        tokio::time::sleep(Duration::from_millis(10)).await;
        leader.abort();
        assert_eq!(waiter.await.unwrap(), 9);
        assert_eq!(flights.in_flight(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_flight_abandoned_by_every_caller_leaves_nothing() {
        let flights: Arc<SingleFlight<u32, u32>> = Arc::default();
        let mut callers = Vec::new();
        for _ in 0..3 {
            let flights = flights.clone();
            callers.push(tokio::spawn(async move {
                flights
                    .run(&1, || async {
                        tokio::time::sleep(Duration::from_secs(3600)).await;
                        0
                    })
                    .await
            }));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(flights.in_flight(), 1);
        for c in &callers {
            c.abort();
        }
        for c in callers {
            let _ = c.await;
        }
        assert_eq!(
            flights.in_flight(),
            0,
            "no entry left for a key never asked again"
        );
    }
}
