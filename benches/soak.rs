//! Soak: a gateway (Redis store, the real test provider, an echo upstream) under a steady
//! hostile mix for a long time, its resident memory and open file descriptors sampled
//! throughout. Flat is the pass mark: after warm-up, the last third of the run may not hold
//! more than the middle third (plus a small allowance for allocator noise).
//!
//! The mix, every second, all on loopback and bounded:
//! - signed-in users (real logins) reading a protected page, over keep-alive connections;
//! - forged session cookies (random and truncated values, two cookies at once);
//! - bearer JWTs naming unknown `kid`s (the bounded JWKS refetch) and garbage tokens;
//! - spoofed identity and forwarding headers in odd spellings;
//! - anonymous logins (pending-login transactions, capped by `max_pending_logins`);
//! - idle connections opened, held and dropped (a pool churning a tenth of itself a second).
//!
//! `cargo bench --bench soak` runs 30 minutes (`SOAK_SECS` overrides) and writes
//! `bench-results/soak.md`; under `cargo test` it runs 20 seconds as a smoke test.

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;

/// Open file descriptors of `pid`.
fn fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

fn forged_jwt(i: u64) -> String {
    use base64::Engine;
    let e = |v: serde_json::Value| {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
    };
    format!(
        "{}.{}.{}",
        e(serde_json::json!({"alg": "RS256", "typ": "at+jwt", "kid": format!("kid-{i}")})),
        e(
            serde_json::json!({"iss": "http://127.0.0.1:1", "sub": "x", "aud": "urn:authgate:api", "exp": 4_000_000_000u64})
        ),
        e(serde_json::json!("sig"))
    )
}

#[derive(Default, Clone, Copy)]
struct Counts {
    sent: u64,
    /// Answers other than the class's expected ones (e.g. a 200 for a forged cookie).
    wrong: u64,
    errors: u64,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let secs: u64 = std::env::var("SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(if full { 1800 } else { 20 });
    let redis = common::Redis::start().await;
    let port = common::free_port();
    let idp = common::Idp::start(true, &[port]).await;
    let session = format!(
        "{}max_pending_logins = 2000\n",
        common::redis_session(&redis.url())
    );
    let api = "\n[[routes]]\nid = \"api\"\npath = \"/api\"\nupstream = \"app\"\nbearer = true\naudiences = [\"urn:authgate:api\"]\n";
    let gw = common::auth_gateway_with(&idp, port, &session, api).await;
    let mut users = Vec::new();
    for _ in 0..20 {
        users.push(common::http_login(&gw, "/app").await.0);
    }
    let pid = gw.pid();
    let addr = gw.addr;
    let base = format!("http://{addr}");
    let client = common::client();
    let started = Instant::now();
    let deadline = started + Duration::from_secs(secs);
    let mut samples: Vec<(u64, u64, usize)> = Vec::new();
    let mut classes = [Counts::default(); 6];
    let names = [
        "signed-in users",
        "forged cookies",
        "unknown-kid bearer tokens",
        "spoofed headers",
        "anonymous logins",
        "idle connections",
    ];
    let mut idle: Vec<tokio::net::TcpStream> = Vec::new();
    let mut tick = 0u64;
    let mut next_sample = Instant::now();
    while Instant::now() < deadline {
        let second = Instant::now();
        tick += 1;
        let mut jobs = Vec::new();
        // (class, request builder, expected statuses)
        for (i, cookie) in users.iter().enumerate().take(10) {
            let r = client
                .get(format!("{base}/app?u={i}"))
                .header("cookie", cookie.clone());
            jobs.push((0usize, r, &[200u16][..]));
        }
        for i in 0..10u64 {
            let v = match i % 3 {
                0 => format!("authgate_session=v1.{tick}{i}.forged"),
                1 => "authgate_session=v1.".to_string(),
                _ => format!("authgate_session=v1.a.b; authgate_session=v1.{i}.c"),
            };
            let r = client.get(format!("{base}/app")).header("cookie", v);
            jobs.push((1, r, &[401u16][..]));
        }
        for i in 0..10u64 {
            let token = if i % 2 == 0 {
                forged_jwt(tick * 100 + i)
            } else {
                format!("garbage-{tick}-{i}")
            };
            let r = client.get(format!("{base}/api")).bearer_auth(token);
            jobs.push((2, r, &[401u16][..]));
        }
        for (i, name) in [
            "X-Forwarded-User",
            "X_Forwarded_User",
            "x-forwarded-email",
            "X-Authgate-Assertion",
            "Remote-User",
        ]
        .iter()
        .enumerate()
        {
            let r = client
                .get(format!("{base}/public/x{i}"))
                .header(*name, "admin")
                .header("X-Forwarded-For", "1.2.3.4");
            jobs.push((3, r, &[200u16, 404][..]));
        }
        for _ in 0..5 {
            let r = client.get(format!("{base}/.authgate/login?rd=%2F"));
            jobs.push((4, r, &[302u16][..]));
        }
        let results =
            futures_util::future::join_all(jobs.into_iter().map(|(class, r, ok)| async move {
                (class, r.send().await.map(|r| r.status().as_u16()), ok)
            }))
            .await;
        for (class, got, ok) in results {
            let c = &mut classes[class];
            c.sent += 1;
            match got {
                Ok(s) if ok.contains(&s) => {}
                Ok(_) => c.wrong += 1,
                Err(_) => c.errors += 1,
            }
        }
        // Idle connections: a pool of 200, a tenth replaced every second; some hold a
        // partial head (slow-loris style), which the gateway must time out by itself.
        let churn = if idle.len() >= 200 { 20 } else { 200 };
        if idle.len() >= 200 {
            idle.drain(..churn);
        }
        for i in 0..churn {
            classes[5].sent += 1;
            match tokio::net::TcpStream::connect(addr).await {
                Ok(mut s) => {
                    if i % 4 == 0 {
                        let _ = s.write_all(b"GET /app HTTP/1.1\r\nHost: x\r\n").await;
                    }
                    idle.push(s);
                }
                Err(_) => classes[5].errors += 1,
            }
        }
        if Instant::now() >= next_sample {
            samples.push((
                started.elapsed().as_secs(),
                common::rss_bytes(pid),
                fds(pid),
            ));
            next_sample += Duration::from_secs(if full { 30 } else { 2 });
        }
        if let Some(rest) = Duration::from_secs(1).checked_sub(second.elapsed()) {
            tokio::time::sleep(rest).await;
        }
    }
    drop(idle);

    // Flat: skip the first third (warm-up: caches, pools, allocator arenas), then the last
    // third may not exceed the middle third by more than 10 % (+4 MiB) in RSS or by more
    // than 50 descriptors.
    let n = samples.len();
    let third = (n / 3).max(1);
    let max_of = |s: &[(u64, u64, usize)]| {
        (
            s.iter().map(|x| x.1).max().unwrap_or(0),
            s.iter().map(|x| x.2).max().unwrap_or(0),
        )
    };
    let (mid_rss, mid_fds) = max_of(&samples[third..(2 * third).min(n)]);
    let (end_rss, end_fds) = max_of(&samples[(2 * third).min(n)..]);
    let mib = |b: u64| b as f64 / 1048576.0;
    let mut md = format!(
        "Soak: {secs} s, {} build, Redis store, real provider; every second 10 signed-in reads, 10 forged cookies, 10 unknown-kid or garbage bearer tokens, 5 spoofed-header requests, 5 anonymous logins, and a pool of 200 idle connections (a quarter holding a partial head) churning 20 a second.\n\n| class | sent | unexpected status | errors |\n|---|---:|---:|---:|\n",
        if cfg!(debug_assertions) { "debug" } else { "release" }
    );
    for (name, c) in names.iter().zip(classes) {
        md.push_str(&format!(
            "| {name} | {} | {} | {} |\n",
            c.sent, c.wrong, c.errors
        ));
    }
    md.push_str(&format!(
        "\n| third of the run | max RSS | max open fds |\n|---|---:|---:|\n| middle | {:.1} MiB | {mid_fds} |\n| last | {:.1} MiB | {end_fds} |\n",
        mib(mid_rss),
        mib(end_rss)
    ));
    md.push_str("\nSamples (s, RSS MiB, fds): ");
    md.push_str(
        &samples
            .iter()
            .map(|(t, r, f)| format!("{t}:{:.0}:{f}", mib(*r)))
            .collect::<Vec<_>>()
            .join(" "),
    );
    md.push('\n');
    println!("{md}");
    if full {
        let out = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("bench-results");
        let _ = std::fs::create_dir_all(&out);
        let _ = std::fs::write(out.join("soak.md"), &md);
    }
    for (name, c) in names.iter().zip(classes) {
        assert_eq!(c.wrong, 0, "{name}: unexpected answers\n{}", gw.log());
    }
    assert!(
        classes[0].errors == 0,
        "signed-in users saw transport errors\n{}",
        gw.log()
    );
    assert!(
        end_rss <= mid_rss + mid_rss / 10 + (4 << 20),
        "RSS grew: {:.1} MiB in the middle third, {:.1} MiB in the last",
        mib(mid_rss),
        mib(end_rss)
    );
    assert!(
        end_fds <= mid_fds + 50,
        "descriptors grew: {mid_fds} in the middle third, {end_fds} in the last"
    );
}
