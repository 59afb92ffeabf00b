//! Sessions across replicas, measured with the real parts (three authgate processes, one
//! `redis-server`, the `oidc-provider` test IdP):
//!
//! - **revocation propagation**: a session cached on replica C is ended on A (logout) or B
//!   (admin API); the figure is the time from sending that request until C first refuses the
//!   session (C is polled back to back, so it includes up to one request round trip);
//! - **refresh under concurrency**: N requests for one session whose access token has just
//!   expired, spread over the three replicas: how many refreshes reach the provider, how many
//!   requests succeed, and their latency.
//!
//! `cargo bench --bench replicas` runs the full measurement and writes
//! `bench-results/replicas.{md,json}`. Under `cargo test` (no `--bench` flag) it runs a small
//! smoke version so the script cannot rot.

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::*;

fn pct(sorted: &[Duration], q: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * q).round() as usize]
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e5).round() / 100.0
}

struct Dist {
    name: String,
    samples: Vec<Duration>,
}

impl Dist {
    fn row(&self) -> (String, serde_json::Value) {
        let mut s = self.samples.clone();
        s.sort();
        let (p50, p99, max) = (pct(&s, 0.5), pct(&s, 0.99), s[s.len() - 1]);
        (
            format!(
                "| {} | {} | {:.2} | {:.2} | {:.2} |",
                self.name,
                s.len(),
                ms(p50),
                ms(p99),
                ms(max)
            ),
            serde_json::json!({"name": self.name, "n": s.len(), "p50_ms": ms(p50), "p99_ms": ms(p99), "max_ms": ms(max)}),
        )
    }
}

/// Poll `gw` with `cookie` until it answers 401; the time since `since`.
async fn until_refused(gw: &Gateway, cookie: &str, since: Instant) -> Duration {
    loop {
        if gw.get_as("/app", cookie).await.status() == 401 {
            return since.elapsed();
        }
        assert!(since.elapsed() < Duration::from_secs(5), "never refused");
    }
}

async fn propagation(rounds: usize) -> Vec<Dist> {
    let ports = [free_port(), free_port(), free_port()];
    let idp = Idp::start(true, &ports).await;
    let redis = Redis::start().await;
    let session = format!("{}cache_max_age = \"5m\"\n", redis_session(&redis.url()));
    let gws = replicas(&idp, &ports, &session, "").await;
    let (a, b, c) = (&gws[0], &gws[1], &gws[2]);
    let mut logout = Vec::new();
    let mut revoke = Vec::new();
    for i in 0..rounds * 2 {
        let (cookie, _) = http_login(a, "/").await;
        for _ in 0..2 {
            assert_eq!(c.get_as("/app", &cookie).await.status(), 200);
        }
        let started = Instant::now();
        let end = async {
            if i % 2 == 0 {
                client()
                    .post(a.url("/.authgate/logout"))
                    .header("cookie", &cookie)
                    .send()
                    .await
                    .unwrap();
            } else {
                let r = b
                    .admin_api(reqwest::Method::DELETE, "/sessions?subject=alice")
                    .await;
                assert!(r.status().is_success());
            }
        };
        let (_, took) = tokio::join!(end, until_refused(c, &cookie, started));
        if i % 2 == 0 {
            logout.push(took);
        } else {
            revoke.push(took);
        }
    }
    vec![
        Dist {
            name: "logout on A → refused on C".into(),
            samples: logout,
        },
        Dist {
            name: "admin revocation on B → refused on C".into(),
            samples: revoke,
        },
    ]
}

struct RefreshRun {
    requests: usize,
    ok: usize,
    refreshes: u64,
    latency: Dist,
}

async fn refresh_under_concurrency(sizes: &[usize]) -> Vec<RefreshRun> {
    let ports = [free_port(), free_port(), free_port()];
    let idp =
        Idp::start_with_env(free_port(), true, &ports, &[("IDP_ACCESS_TOKEN_TTL", "3")]).await;
    let redis = Redis::start().await;
    let session = format!("{}refresh_lead = \"1s\"\n", redis_session(&redis.url()));
    let gws = replicas(&idp, &ports, &session, "").await;
    let mut out = Vec::new();
    for &n in sizes {
        let (cookie, _) = http_login(&gws[0], "/").await;
        let _ = client()
            .post(format!("{}/__test/stats/reset", idp.issuer))
            .send()
            .await;
        tokio::time::sleep(Duration::from_millis(3300)).await;
        let mut tasks = Vec::new();
        for i in 0..n {
            let url = gws[i % 3].url("/app");
            let cookie = cookie.clone();
            tasks.push(tokio::spawn(async move {
                let t = Instant::now();
                let ok = client()
                    .get(url)
                    .header("cookie", cookie)
                    .send()
                    .await
                    .is_ok_and(|r| r.status() == 200);
                (ok, t.elapsed())
            }));
        }
        let mut ok = 0;
        let mut samples = Vec::new();
        for t in tasks {
            let (good, d) = t.await.unwrap();
            ok += usize::from(good);
            samples.push(d);
        }
        let stats = idp.stats().await;
        out.push(RefreshRun {
            requests: n,
            ok,
            refreshes: stats["token"]["refresh_token"].as_u64().unwrap_or(0),
            latency: Dist {
                name: format!("{n} requests at expiry"),
                samples,
            },
        });
    }
    out
}

#[tokio::main(flavor = "multi_thread", worker_threads = 4)]
async fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let (rounds, sizes): (usize, &[usize]) = if full {
        (100, &[100, 300, 1000])
    } else {
        (3, &[20])
    };

    let mut md = String::from("### Revocation propagation (3 replicas, one Redis)\n\n| path | n | p50 ms | p99 ms | max ms |\n|---|---|---|---|---|\n");
    let mut json = serde_json::json!({"propagation": [], "refresh": []});
    for d in propagation(rounds).await {
        let (row, v) = d.row();
        md.push_str(&row);
        md.push('\n');
        json["propagation"].as_array_mut().unwrap().push(v);
    }
    md.push_str("\n### Refresh at access-token expiry (3 replicas, requests spread evenly)\n\n| requests | served 200 | refreshes at the provider | p50 ms | p99 ms | max ms |\n|---|---|---|---|---|---|\n");
    for r in refresh_under_concurrency(sizes).await {
        let (_, v) = r.latency.row();
        md.push_str(&format!(
            "| {} | {} | {} | {:.2} | {:.2} | {:.2} |\n",
            r.requests, r.ok, r.refreshes, v["p50_ms"], v["p99_ms"], v["max_ms"]
        ));
        json["refresh"]
            .as_array_mut()
            .unwrap()
            .push(serde_json::json!({
                "requests": r.requests, "ok": r.ok, "refreshes": r.refreshes, "latency": v,
            }));
        assert_eq!(r.refreshes, 1, "exactly one refresh per expiry");
    }
    println!("{md}");
    if full {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("bench-results");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("replicas.md"), &md).unwrap();
        std::fs::write(
            dir.join("replicas.json"),
            serde_json::to_string_pretty(&json).unwrap(),
        )
        .unwrap();
        println!("written to bench-results/replicas.md and replicas.json");
    }
}
