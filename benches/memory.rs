//! Memory: resident memory per cached session (at 100 000 and 1 000 000 sessions), the
//! idle RSS of a running gateway, and what a flood of anonymous logins costs it.
//!
//! Sessions are built as a replica builds them from the store (identity as Keycloak gives it:
//! a UUID `sub` that is also the user, email, name, 20 groups, a `sid`, and the four other
//! claims of a Keycloak ID token; the record read back from its JSON;
//! identity headers ready to insert), their header values cloned once as a served request
//! clones them, and inserted into a [`SessionCache`]; the figure is the growth of this
//! process's RSS divided by the number of sessions. Three kinds of cached copy: the default,
//! without the tokens and without the other claims no rule or claim header of the config
//! reads; the one a config with claim headers in prefix mode caches, with every other claim;
//! and the one a config that also has a `pass_access_token` or `id_token` route caches, which
//! holds the sealed ID, access and refresh tokens (~1.8 KB) besides.
//! With the Redis store that cache is all a replica holds; the memory store keeps the
//! serialized record besides.
//!
//! Pending logins: a gateway (memory store, the real `oidc-provider` test IdP) takes 100 000
//! `GET /.authgate/login` over 4 keep-alive connections; the figure is the growth of its RSS,
//! once with the cap out of reach (the cost of one pending login) and once with the default
//! `max_pending_logins` (10 000).
//!
//! `cargo bench --bench memory` (writes `bench-results/memory.md`); under `cargo test` it runs
//! with 10 000 sessions and 2 000 logins as a smoke test.

#[path = "../tests/common/mod.rs"]
mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use authgate::claimmap::ClaimsRead;
use authgate::identity::Claims;
use authgate::identity::IdentityHeaders;
use authgate::session::{
    IdHash, SessionCache, SessionRecord, SessionRef, Tick, UserSession, Validated,
};

// The allocator the authgate binary ships with, so these figures are the binary's.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn rss_bytes(pid: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// A distinct UUID-shaped ID per session and kind, as Keycloak's IDs look.
fn uuid(i: u64, kind: u64) -> String {
    format!(
        "{i:08x}-{kind:04x}-4e5f-8a9b-{:012x}",
        i.wrapping_mul(0x9e37_79b9)
    )
}

fn session(i: u64, headers: &IdentityHeaders, tokens: bool, all: bool) -> SessionRef {
    let mut hash = [0u8; 32];
    hash[..8].copy_from_slice(&i.to_le_bytes());
    let claims = Claims {
        // A Keycloak user ID, and the user as headers show it (`user_claim = "sub"`, the
        // default).
        text: authgate::identity::UserText::from_parts(authgate::identity::UserParts {
            sub: &uuid(i, 1),
            subject: &uuid(i, 1),
            email: Some(&*format!("user-{i:08}@example.com")),
            name: Some(&*format!("User Number {i}")),
            preferred_username: Some(&*format!("user{i}")),
        }),
        email_verified: Some(true),
        groups: (0..20).map(|g| format!("team-{g:02}")).collect(),
        // What a Keycloak ID token carries besides the mapped and protocol claims, kept for
        // policy rules and claim headers.
        extra: [
            ("given_name", serde_json::json!("User")),
            ("family_name", serde_json::json!(format!("Number {i}"))),
            ("acr", serde_json::json!("1")),
            ("session_state", serde_json::json!(uuid(i, 3))),
        ]
        .into_iter()
        .collect(),
    };
    let record = SessionRecord {
        v: 2,
        provider: "corp".into(),
        claims,
        created_at: 1_800_000_000,
        expires_at: 1_800_043_200,
        sid: Some(uuid(i, 2).into()),
        access_expires_at: Some(authgate::session::unix_secs_nonzero(1_800_000_300)),
        refreshable: true,
        // Sealed tokens as stored: ~1.8 KB of base64 for an ID token, a JWT access token
        // and a refresh token; a copy that does not hold them has none.
        tokens: "t".repeat(1800).into(),
    };
    // Read back from its stored form, as a replica loads it from the store: what a cached
    // session holds is what deserializing makes, not what this function's `format!`s made.
    let mut record: SessionRecord =
        serde_json::from_str(&serde_json::to_string(&record).unwrap()).unwrap();
    // As the session manager trims it for its cache. The other claims kept: those the config
    // reads (none, in a config without claim rules or claim headers on them), or every one
    // (prefix mode).
    let read = if all {
        ClaimsRead::All
    } else {
        ClaimsRead::named(Vec::<&str>::new())
    };
    record.trim_for_cache(tokens, &read);
    let copy = Arc::new(UserSession {
        headers: headers.values("idp", &record.claims),
        record,
        validated: Validated::now(),
        rev: 1,
        deadline: Tick::at(Instant::now() + Duration::from_secs(3600)),
        epoch: 0,
        whole: false,
        hash_tail: IdHash(hash).halves().1,
    });
    SessionRef {
        hash: IdHash(hash),
        copy,
    }
}

/// Per-session bytes and RSS growth for `n` cached sessions, measured in a fresh process:
/// memory the allocator kept from an earlier measurement would be reused and hide the cost.
fn per_session(n: u64, tokens: bool, all: bool) -> (f64, u64) {
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--per-session",
            &n.to_string(),
            &tokens.to_string(),
            &all.to_string(),
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let grown: u64 = (text.trim().parse()).unwrap_or_else(|_| panic!("measurement: {text:?}"));
    (grown as f64 / n as f64, grown)
}

fn measure_per_session(n: u64, tokens: bool, all: bool) -> u64 {
    let headers = IdentityHeaders::default();
    let cache = SessionCache::new(Duration::from_secs(3600), usize::MAX, true);
    let before = rss_bytes("self");
    for i in 0..n {
        let s = session(i, &headers, tokens, all);
        // As after the session's first request: inserting a header value clones it, and the
        // first clone of a value's bytes allocates their shared count.
        for (_, v) in s.headers.iter() {
            drop(v.clone());
        }
        cache.insert(s, cache.generation());
    }
    assert_eq!(cache.len() as u64, n);
    rss_bytes("self").saturating_sub(before)
}

fn idle_gateway_rss() -> u64 {
    let dir = std::env::temp_dir().join(format!("authgate-mem-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let port = |_: ()| {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    };
    let (listen, admin) = (port(()), port(()));
    let config = dir.join("config.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nthreads = 2\npid_file = \"{d}/pid\"\nupgrade_socket = \"{d}/sock\"\ngrace_period = \"0s\"\nshutdown_timeout = \"1s\"\n[[listeners]]\naddress = \"127.0.0.1:{listen}\"\n[admin]\naddress = \"127.0.0.1:{admin}\"\n[upstreams.app]\nservers = [\"http://127.0.0.1:9\"]\n[[routes]]\nid = \"app\"\npath = \"/\"\nupstream = \"app\"\npublic = true\n",
            d = dir.display()
        ),
    )
    .unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_authgate"))
        .args(["run", "-c"])
        .arg(&config)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", listen)).is_err() {
        assert!(Instant::now() < deadline, "gateway did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(500));
    let rss = rss_bytes(&child.id().to_string());
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
    rss
}

/// RSS growth of a gateway for `n` started logins with `max_pending_logins = cap`: (bytes,
/// seconds, pending logins left, evicted).
fn pending_logins(n: usize, cap: u64) -> (u64, f64, u64, u64) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let port = common::free_port();
        let idp = common::Idp::start(false, &[port]).await;
        let session = format!("store = \"memory\"\nmax_pending_logins = {cap}\n");
        let gw = common::auth_gateway(&idp, port, &session).await;
        common::login_flood(gw.addr, 100, 4).await;
        let before = common::rss_bytes(gw.pid());
        let took = common::login_flood(gw.addr, n, 4).await;
        let grown = common::rss_bytes(gw.pid()).saturating_sub(before);
        let m = gw.metrics().await;
        let value = |name| common::metric_value(&m, name).unwrap_or(0.0) as u64;
        (
            grown,
            took.as_secs_f64(),
            value("authgate_pending_logins"),
            value("authgate_pending_logins_evicted_total"),
        )
    })
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let [_, flag, n, tokens, all, ..] = &args[..] {
        if flag == "--per-session" {
            println!(
                "{}",
                measure_per_session(n.parse().unwrap(), tokens == "true", all == "true")
            );
            return;
        }
    }
    let full = args.iter().any(|a| a == "--bench");
    let sizes: &[u64] = if full {
        &[100_000, 1_000_000]
    } else {
        &[10_000]
    };
    let mut md = String::from(
        "| sessions in the cache | cached copy | RSS growth | per session |\n|---:|---|---:|---:|\n",
    );
    for &n in sizes {
        for (tokens, all, kind) in [
            (false, false, "default"),
            (false, true, "every other claim (prefix mode)"),
            (true, true, "with tokens and every other claim"),
        ] {
            let (per, grown) = per_session(n, tokens, all);
            println!(
                "{n} cached sessions ({kind}): RSS +{:.1} MiB, {per:.0} bytes per session",
                grown as f64 / 1048576.0
            );
            md.push_str(&format!(
                "| {n} | {kind} | {:.1} MiB | {per:.0} B |\n",
                grown as f64 / 1048576.0
            ));
        }
    }
    let idle = idle_gateway_rss();
    println!(
        "idle gateway ({} build, 2 threads, no providers): RSS {:.1} MiB",
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        },
        idle as f64 / 1048576.0
    );
    md.push_str(&format!(
        "\nIdle gateway RSS (2 worker threads, no providers): {:.1} MiB\n",
        idle as f64 / 1048576.0
    ));
    let logins = if full { 100_000 } else { 2_000 };
    md.push_str(&format!(
        "\n{logins} anonymous logins (memory store, 4 keep-alive connections):\n\n| max_pending_logins | RSS growth | per login | pending after | evicted | time |\n|---:|---:|---:|---:|---:|---:|\n"
    ));
    for cap in [10_000_000, 10_000] {
        let (grown, secs, pending, evicted) = pending_logins(logins, cap);
        let per = grown as f64 / logins as f64;
        println!(
            "{logins} logins, max_pending_logins {cap}: RSS +{:.1} MiB ({per:.0} B per login), {pending} pending, {evicted} evicted, {secs:.1} s",
            grown as f64 / 1048576.0
        );
        md.push_str(&format!(
            "| {cap} | {:.1} MiB | {per:.0} B | {pending} | {evicted} | {secs:.1} s |\n",
            grown as f64 / 1048576.0
        ));
    }
    if full {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("bench-results");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("memory.md"), md).unwrap();
    }
}
