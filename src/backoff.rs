//! The one retry pause of the gateway's loops: doubling from a first pause up to a cap, back
//! to the first pause after a success.
//!
//! Accept loops use it so that an error that persists (EMFILE: out of file descriptors) does
//! not turn the loop into a busy spin that takes a core away from the requests in flight,
//! while a one-off error costs only the first, short pause.

use std::time::Duration;

/// Accept loops: 10 ms, doubling up to 1 s.
pub(crate) const ACCEPT_FIRST: Duration = Duration::from_millis(10);
pub(crate) const ACCEPT_MAX: Duration = Duration::from_secs(1);

/// The pause after `failures` consecutive failures (1: the first): `first · 2^(failures-1)`,
/// at most `max`; zero when nothing failed.
pub(crate) fn delay(failures: u32, first: Duration, max: Duration) -> Duration {
    if failures == 0 {
        return Duration::ZERO;
    }
    // Past 2^20 the cap has long been reached (and the shift must stay in range).
    let factor = 1u32 << (failures - 1).min(20);
    first.saturating_mul(factor).min(max)
}

/// Consecutive failures of one loop and the pause each one earns.
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    first: Duration,
    max: Duration,
    failures: u32,
}

impl Backoff {
    pub(crate) const fn new(first: Duration, max: Duration) -> Self {
        Self {
            first,
            max,
            failures: 0,
        }
    }

    /// The policy of accept loops ([`ACCEPT_FIRST`], [`ACCEPT_MAX`]).
    pub(crate) const fn accept() -> Self {
        Self::new(ACCEPT_FIRST, ACCEPT_MAX)
    }

    /// A failure: the pause to take before trying again.
    pub(crate) fn failed(&mut self) -> Duration {
        self.failures = self.failures.saturating_add(1);
        delay(self.failures, self.first, self.max)
    }

    /// A success: the next failure pauses only `first` again.
    pub(crate) fn succeeded(&mut self) {
        self.failures = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn doubles_up_to_the_cap() {
        let got: Vec<Duration> = (0..10)
            .map(|n| delay(n, ACCEPT_FIRST, ACCEPT_MAX))
            .collect();
        let want = [0, 10, 20, 40, 80, 160, 320, 640, 1000, 1000].map(|m| m * MS);
        assert_eq!(got, want);
        assert_eq!(delay(u32::MAX, ACCEPT_FIRST, ACCEPT_MAX), ACCEPT_MAX);
        assert_eq!(delay(u32::MAX, Duration::MAX, Duration::MAX), Duration::MAX);
    }

    #[test]
    fn success_resets() {
        let mut b = Backoff::accept();
        assert_eq!(b.failed(), 10 * MS);
        assert_eq!(b.failed(), 20 * MS);
        assert_eq!(b.failed(), 40 * MS);
        b.succeeded();
        assert_eq!(b.failed(), 10 * MS);
        for _ in 0..100 {
            b.failed();
        }
        assert_eq!(b.failed(), ACCEPT_MAX);
    }
}
