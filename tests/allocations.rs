//! Allocations per request on the cached session path must not grow.
//!
//! Timings are no CI check (they depend on the machine); the number of heap allocations the
//! per-request auth work makes is exact and machine-independent, so it is the in-process figure
//! CI holds. The work is the library half of a browser request with a cached session, as
//! `benches/hot_path.rs` (`session/auth_path`) measures it: read the cookie among unrelated
//! ones, MAC check, session cache hit, policy, strip client identity headers, remove the gateway
//! cookie, insert the identity headers. A change that adds an allocation here fails this test;
//! one that removes some should lower [`BUDGET`]. Counted by `allocation-counter`, whose
//! global allocator is linked into this test binary only (it counts the calling thread's
//! allocations, so other test threads do not count).

use std::time::Duration;

use futures_util::FutureExt;
use pingora::http::RequestHeader;

/// Allocations per request (debug build, as CI runs tests), measured when it was set. Lower it
/// when a change saves some; never raise it to make a change pass.
const BUDGET: u64 = 14;

#[test]
fn cached_session_path_allocations_do_not_grow() {
    use authgate::identity::{Claims, IdentityHeaders, IdentityNamespace};
    use authgate::metrics::Metrics;
    use authgate::policy::Policy;
    use authgate::session::{CookieSettings, Keys, SessionCache, SessionManager, Store, Tokens};

    let mgr = SessionManager::new(
        Store::memory(),
        Keys::derive(&[7u8; 32]),
        SessionCache::new(Duration::from_secs(3600), 1_000, true),
        CookieSettings {
            name: "authgate_session".into(),
            host_name: "__Host-authgate_session".into(),
            secure: true,
            same_site: cookie::SameSite::Lax,
            domain: None,
            persistent: true,
            path: "/".into(),
            idle_timeout: Duration::from_secs(3600),
            absolute_timeout: Duration::from_secs(12 * 3600),
            touch_interval: Duration::from_secs(3600),
        },
        IdentityHeaders::default(),
        std::sync::Arc::new(Metrics::new()),
    );
    let claims = Claims {
        subject: "erin".into(),
        email: Some("erin@example.com".into()),
        email_verified: Some(true),
        preferred_username: Some("erin".into()),
        groups: ["staff", "payments"].into_iter().collect(),
        ..Claims::default()
    };
    let tokens = Tokens {
        access_token: Some("a".repeat(800)),
        refresh_token: Some("r".repeat(100)),
        id_token: Some("i".repeat(900)),
        access_token_expires_at: Some(u64::MAX / 2),
    };
    let cookie = mgr
        .create("corp", claims, None, &tokens)
        .now_or_never()
        .expect("the memory store answers at once")
        .unwrap();
    let policy = Policy {
        groups: ["admins", "payments"]
            .iter()
            .map(|s| s.to_string())
            .collect(),
        ..Policy::default()
    };
    let ns = IdentityNamespace::default();
    // A browser navigation's headers, the session cookie among unrelated ones.
    let mut req = RequestHeader::build("GET", b"/reports?period=30d", None).unwrap();
    for (k, v) in [
        ("Host", "app.example.com"),
        ("Accept", "text/html,application/xhtml+xml,*/*;q=0.8"),
        ("Accept-Language", "en-GB,en;q=0.9"),
        ("Sec-Fetch-Mode", "navigate"),
        ("Sec-Fetch-Site", "same-origin"),
        (
            "User-Agent",
            "Mozilla/5.0 (X11; Linux x86_64) Chrome/156.0.0.0",
        ),
        ("Referer", "https://app.example.com/"),
        ("X-Forwarded-User", "forged"),
    ] {
        req.append_header(k, v).unwrap();
    }
    req.append_header(
        "Cookie",
        format!("_ga=GA1.1.1; theme=dark; authgate_session={cookie}; consent=yes"),
    )
    .unwrap();

    let auth = |r: &mut RequestHeader| {
        let id = mgr.read_cookie(&r.headers, false).id().expect("cookie");
        let s = mgr
            .load(&id)
            .now_or_never()
            .expect("a cache hit answers at once")
            .unwrap()
            .expect("session");
        policy
            .evaluate(&s.record.provider, &s.record.claims, &http::Method::GET)
            .unwrap();
        ns.strip(r);
        mgr.strip_cookie(r).unwrap();
        for (k, v) in &s.headers {
            k.insert(r, v.clone()).unwrap();
        }
    };
    // The first request fills the cache and any lazily built state.
    auth(&mut req.clone());

    const N: u64 = 1_000;
    let mut reqs: Vec<RequestHeader> = (0..N).map(|_| req.clone()).collect();
    let counted = allocation_counter::measure(|| {
        for r in &mut reqs {
            auth(r);
        }
    });
    let per_request = counted.count_total as f64 / N as f64;
    println!("allocations per request on the cached session path: {per_request:.2}");
    assert!(
        per_request <= BUDGET as f64,
        "{per_request:.2} allocations per request on the cached session path, the budget is {BUDGET}: \
         find the new allocation (e.g. `valgrind --tool=dhat`) rather than raising the budget"
    );
}
