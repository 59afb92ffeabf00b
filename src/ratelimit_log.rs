//! Rate-limited log lines: one line per cause per window, with a count of what it stands for.
//!
//! During an outage every refused request has the same cause (Redis down, a provider
//! unreachable); a line per request drowns the log (hundreds per minute per replica) and says
//! nothing the first one did not. A [`Throttle`] lets the first occurrence of a cause through
//! at once, counts the following ones silently for [`WINDOW`], and lets the next one after
//! that through with the count: `session store unavailable (12 times in the last 10 s)`.
//! Each refused request still has its own access-log line (status, refusal code, request ID);
//! only the error line with the cause is thinned out.
//!
//! ```
//! use authgate::ratelimit_log::Throttle;
//! static STORE_DOWN: Throttle = Throttle::new(authgate::ratelimit_log::WINDOW);
//! if let Some(n) = STORE_DOWN.hit("") {
//!     tracing::error!(occurrences = n.count, "session store unavailable{n}");
//! }
//! ```

use std::fmt;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The window of the gateway's throttled lines: at most one line per cause per 10 s.
pub(crate) const WINDOW: Duration = Duration::from_secs(10);

/// "Session store unavailable", wherever a request finds it so (proxied requests, sign-in,
/// logout, userinfo): one count per kind of failure ([`session_store_down`]).
pub(crate) static SESSION_STORE_DOWN: Throttle = Throttle::new(WINDOW);

/// A session-store failure, counted by its kind ([`error_kind`]): a connection refused and
/// then a timeout are two lines, each repeat of one of them is counted.
pub(crate) fn session_store_down(e: &dyn fmt::Display) -> Option<Repeats> {
    SESSION_STORE_DOWN.hit(&error_kind("store", &e.to_string()))
}

/// Distinct keys one throttle tracks at most. Keys come from the configuration (provider and
/// route ids) or from the gateway's own error texts ([`error_kind`]), never from requests;
/// past this bound, further keys share one slot.
const MAX_KEYS: usize = 64;

/// What a line that is let through stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Repeats {
    /// Occurrences since the previous line of this cause, this one included (1: the first).
    pub(crate) count: u64,
    /// Time since the previous line of this cause (zero for the first).
    pub(crate) over: Duration,
}

/// Empty for a first occurrence, else ` (N times in the last S s)`: appended to a message.
impl fmt::Display for Repeats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.count <= 1 {
            return Ok(());
        }
        let secs = self.over.as_secs_f64().round().max(1.0) as u64;
        write!(f, " ({} times in the last {secs} s)", self.count)
    }
}

struct Slot {
    key: String,
    /// When the last line of this key was let through.
    since: Instant,
    /// Occurrences swallowed since then.
    suppressed: u64,
}

/// One cause's (or one family of keyed causes') log-line limiter. `const`, so it can be a
/// `static` next to the line it guards.
pub(crate) struct Throttle {
    window: Duration,
    slots: Mutex<Vec<Slot>>,
}

impl Throttle {
    pub(crate) const fn new(window: Duration) -> Self {
        Self {
            window,
            slots: Mutex::new(Vec::new()),
        }
    }

    /// Record an occurrence of `key` now: `Some` when a line should be written.
    pub(crate) fn hit(&self, key: &str) -> Option<Repeats> {
        self.hit_at(key, Instant::now())
    }

    /// [`Throttle::hit`] at a given time (tests).
    pub(crate) fn hit_at(&self, key: &str, now: Instant) -> Option<Repeats> {
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        let at = match slots.iter().position(|s| s.key == key) {
            Some(i) => i,
            None if slots.len() < MAX_KEYS => {
                slots.push(Slot {
                    key: key.to_string(),
                    since: now,
                    suppressed: 0,
                });
                return Some(Repeats {
                    count: 1,
                    over: Duration::ZERO,
                });
            }
            // Full: the last slot is shared by every further key.
            None => slots.len() - 1,
        };
        let slot = &mut slots[at];
        let over = now.saturating_duration_since(slot.since);
        if over < self.window {
            slot.suppressed += 1;
            return None;
        }
        let r = Repeats {
            count: slot.suppressed + 1,
            over,
        };
        slot.since = now;
        slot.suppressed = 0;
        Some(r)
    }

    #[cfg(test)]
    /// Forget `key`: its next occurrence is logged at once, as a first one (after a recovery,
    /// so that a new outage is reported without delay and without the old one's count).
    pub(crate) fn reset(&self, key: &str) {
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        slots.retain(|s| s.key != key);
    }

    /// Forget every key (after a recovery: the next failure, whatever its kind, is new).
    pub(crate) fn clear(&self) {
        self.slots.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }
}

/// The kind of an error message, for a throttle key: what stays the same while the same
/// thing is wrong, without what varies per occurrence. `prefix` is the error's variant (or
/// any fixed category). The message is kept up to the first quoted or bracketed value (URLs,
/// issuers, addresses, ids), digits are kept (an HTTP status is part of the kind: a 500 then
/// a 404 are two causes), and it is cut at [`KIND_MAX`] characters. Keys stay few because
/// the messages come from the gateway's own error texts; the throttle bounds them anyway.
///
/// ```
/// use authgate::ratelimit_log::error_kind;
/// assert_eq!(error_kind("BadResponse", "discovery: HTTP 500 Internal Server Error"),
///            error_kind("BadResponse", "discovery: HTTP 500 Internal Server Error"));
/// assert_ne!(error_kind("BadResponse", "discovery: HTTP 500"),
///            error_kind("BadResponse", "discovery issuer \"x\" is not the configured \"y\""));
/// ```
pub(crate) fn error_kind(prefix: &str, message: &str) -> String {
    let cut = message
        .find(['"', '\'', '(', '[', '{', '<'])
        .unwrap_or(message.len());
    let kind: String = message[..cut].trim_end().chars().take(KIND_MAX).collect();
    format!("{prefix}: {kind}")
}

/// Characters of a message kept in an [`error_kind`].
pub(crate) const KIND_MAX: usize = 48;

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn first_through_then_one_line_per_window_with_the_count() {
        let t = Throttle::new(10 * S);
        let t0 = Instant::now();
        let first = t.hit_at("store", t0).unwrap();
        assert_eq!(first.count, 1);
        assert_eq!(
            first.to_string(),
            "",
            "a first occurrence says nothing more"
        );
        // 11 more inside the window: all swallowed.
        for i in 1..=11 {
            assert_eq!(t.hit_at("store", t0 + i * S / 2), None);
        }
        // The next after the window: through, standing for itself and the 11.
        let r = t.hit_at("store", t0 + 10 * S).unwrap();
        assert_eq!(
            r,
            Repeats {
                count: 12,
                over: 10 * S
            }
        );
        assert_eq!(r.to_string(), " (12 times in the last 10 s)");
        // A new window starts there.
        assert_eq!(t.hit_at("store", t0 + 15 * S), None);
        let r = t.hit_at("store", t0 + 21 * S).unwrap();
        assert_eq!((r.count, r.over), (2, 11 * S));
        // A lone occurrence after a long quiet time is one line, saying so.
        let r = t.hit_at("store", t0 + 1000 * S).unwrap();
        assert_eq!(r.to_string(), "");
    }

    #[test]
    fn keys_are_counted_apart_and_bounded() {
        let t = Throttle::new(10 * S);
        let t0 = Instant::now();
        assert!(t.hit_at("a", t0).is_some());
        assert!(
            t.hit_at("b", t0).is_some(),
            "another cause is not swallowed"
        );
        assert!(t.hit_at("a", t0 + S).is_none());
        assert_eq!(t.hit_at("b", t0 + 10 * S).unwrap().count, 1);
        assert_eq!(t.hit_at("a", t0 + 10 * S).unwrap().count, 2);
        // Many keys: the map stays bounded, and every line is still counted somewhere.
        for i in 0..1000 {
            t.hit_at(&format!("k{i}"), t0);
        }
        assert_eq!(t.slots.lock().unwrap().len(), MAX_KEYS);
    }

    #[test]
    fn a_new_kind_of_error_within_the_window_is_not_swallowed() {
        let t = Throttle::new(10 * S);
        let t0 = Instant::now();
        let http500 = error_kind("BadResponse", "discovery: HTTP 500 Internal Server Error");
        let issuer = error_kind(
            "BadResponse",
            "discovery issuer \"https://a\" is not the configured \"https://b\"",
        );
        let refused = error_kind("Unreachable", "error sending request: connection refused");
        assert!(t.hit_at(&http500, t0).is_some());
        assert!(t.hit_at(&http500, t0 + S).is_none(), "same kind: swallowed");
        assert!(t.hit_at(&issuer, t0 + 2 * S).is_some(), "new cause: logged");
        assert!(
            t.hit_at(&refused, t0 + 3 * S).is_some(),
            "new variant: logged"
        );
        // Another status is another kind; the varying values are not.
        assert_ne!(
            http500,
            error_kind("BadResponse", "discovery: HTTP 404 Not Found")
        );
        assert_eq!(
            issuer,
            error_kind(
                "BadResponse",
                "discovery issuer \"https://c\" is not the configured \"https://b\""
            )
        );
        assert!(error_kind("X", &"y".repeat(10_000)).len() <= KIND_MAX + 3);
        t.clear();
        assert!(t.hit_at(&http500, t0 + 4 * S).is_some(), "cleared");
    }

    #[test]
    fn reset_reports_the_next_occurrence_at_once() {
        let t = Throttle::new(10 * S);
        let t0 = Instant::now();
        assert!(t.hit_at("p", t0).is_some());
        assert!(t.hit_at("p", t0 + S).is_none());
        t.reset("p");
        assert_eq!(t.hit_at("p", t0 + 2 * S).unwrap().count, 1);
    }

    #[test]
    fn a_clock_that_does_not_move_forward_swallows() {
        let t = Throttle::new(10 * S);
        let t0 = Instant::now() + 100 * S;
        assert!(t.hit_at("x", t0).is_some());
        // An earlier instant (another thread's `now`, taken before the lock): inside the window.
        assert!(t.hit_at("x", t0 - 5 * S).is_none());
    }

    #[test]
    fn concurrent_hits_count_every_occurrence() {
        let t = std::sync::Arc::new(Throttle::new(Duration::from_secs(3600)));
        let handles: Vec<_> = (0..8)
            .map(|_| {
                let t = t.clone();
                std::thread::spawn(move || (0..1000).filter(|_| t.hit("k").is_some()).count())
            })
            .collect();
        let through: usize = handles.into_iter().map(|h| h.join().unwrap()).sum();
        assert_eq!(through, 1, "one line for 8000 occurrences in one window");
        let slots = t.slots.lock().unwrap();
        assert_eq!(slots[0].suppressed, 7999);
    }
}
