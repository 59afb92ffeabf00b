//! Allocations per request on the cached session path must not grow, nor what each cached
//! session keeps on the heap.
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
        text: authgate::identity::UserText::from_parts(authgate::identity::UserParts {
            sub: "",
            subject: "erin",
            email: Some("erin@example.com"),
            preferred_username: Some("erin"),
            ..Default::default()
        }),
        email_verified: Some(true),
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

/// Heap blocks and bytes a cached session keeps, built as a replica builds it from the store
/// (the record read from its JSON: 20 groups, email, name and the four other claims of a
/// Keycloak ID token, trimmed as the cache keeps it under a config that reads none of those,
/// and under one that keeps them all; identity headers ready to insert, their values cloned
/// once as a served request clones them). Exact and machine-independent like the count above; the RSS figures
/// are `benches/memory.rs`'. Lower these when a change saves some; raise them only for a
/// per-session cost a feature needs, and say so in its commit. (Requested bytes: the
/// allocator's rounding is the bench's to show, and `UserSession`'s own size class is held by
/// a unit test beside it.)
const SESSION_BLOCKS: u64 = 7;
const SESSION_BYTES: u64 = 772;
/// The same with every other claim kept (prefix mode without an allow list).
const ALL_CLAIMS_BLOCKS: u64 = 16;
const ALL_CLAIMS_BYTES: u64 = 1_055;

#[test]
fn a_cached_session_holds_no_more_than_it_did() {
    use authgate::claimmap::ClaimsRead;
    use authgate::identity::IdentityHeaders;
    use authgate::session::{SessionRecord, Tick, UserSession, Validated};
    use std::sync::Arc;

    let record = concat!(
        r#"{"v":2,"provider":"corp","claims":{"sub":"f1e2d3c4-0000-4a5b-9c8d-7e6f5a4b3c2d","#,
        r#""subject":"user-00123456","email":"user-00123456@example.com","email_verified":true,"#,
        r#""name":"User Number 123456","preferred_username":"user123456","groups":["team-00","#,
        r#""team-01","team-02","team-03","team-04","team-05","team-06","team-07","team-08","#,
        r#""team-09","team-10","team-11","team-12","team-13","team-14","team-15","team-16","#,
        r#""team-17","team-18","team-19"],"extra":{"acr":"1","family_name":"Number 123456","#,
        r#""given_name":"User","session_state":"0001e240-1c2d-4e5f-8a9b-0c1d2e3f4a5b"}},"#,
        r#""created_at":1800000000,"expires_at":1800043200,"sid":"sid-000000000001e240","#,
        r#""access_expires_at":1800000300,"refreshable":true,"tokens":""}"#
    );
    let headers = IdentityHeaders::default();
    // As a config whose rules and headers read none of the other claims caches it, and as
    // one with prefix mode (every other claim kept).
    let copies = [
        (
            "default",
            ClaimsRead::named(Vec::<&str>::new()),
            SESSION_BLOCKS,
            SESSION_BYTES,
        ),
        (
            "every claim",
            ClaimsRead::All,
            ALL_CLAIMS_BLOCKS,
            ALL_CLAIMS_BYTES,
        ),
    ];
    for (copy, read, max_blocks, max_bytes) in copies {
        const N: u64 = 100;
        let mut kept: Vec<Arc<UserSession>> = Vec::with_capacity(N as usize);
        let counted = allocation_counter::measure(|| {
            for _ in 0..N {
                let mut record: SessionRecord = serde_json::from_str(record).unwrap();
                record.trim_for_cache(false, &read);
                let s = Arc::new(UserSession {
                    headers: headers.values(&record.provider, &record.claims),
                    record,
                    validated: Validated::now(),
                    rev: 1,
                    deadline: Tick::at(std::time::Instant::now()),
                    epoch: 0,
                    whole: false,
                    hash_tail: [1; 16],
                });
                for (_, v) in s.headers.iter() {
                    drop(v.clone());
                }
                kept.push(s);
            }
        });
        let (blocks, bytes) = (
            counted.count_current as f64 / N as f64,
            counted.bytes_current as f64 / N as f64,
        );
        println!("a cached session ({copy}) keeps {blocks:.1} heap blocks, {bytes:.0} bytes");
        assert!(
            blocks <= max_blocks as f64 && bytes <= max_bytes as f64,
            "a cached session ({copy}) keeps {blocks:.1} heap blocks and {bytes:.0} bytes, the \
             budget is {max_blocks} and {max_bytes}: a per-session cost grew (every cached \
             session pays it; see README, Memory)"
        );
        drop(kept);
    }
}
