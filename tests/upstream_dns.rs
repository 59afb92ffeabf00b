//! Upstreams that follow DNS (issue 15 point 3), through the real binary:
//!
//! - a server written as `localhost` gets every address the system resolver gives for it
//!   (each one is a server of the pool: requests reach all of them);
//! - a name that does not resolve does not stop the start: its upstream has no server and
//!   answers like a dead upstream (502), `/readyz` stays ready (one dead upstream is that
//!   upstream's problem, as when its server is down), and `check` accepts the config (online
//!   with a warning for the name);
//! - a named upstream added by SIGHUP serves from the first request after the reload, and 5
//!   SIGHUPs under load to a named upstream fail no request;
//! - an active health check (`health_path`) takes a server that answers 500 there out of the
//!   pool, and puts it back once it answers 200 (with `max_fails = 0`: no passive marking).
//!
//! How the pool changes when a name's addresses change (added, removed, health kept) is
//! unit-tested in `src/upstream.rs`: tests may not edit /etc/hosts and run no DNS server.

mod common;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// Public routes `/{id}` for each `(id, server URL)`.
fn routes(upstreams: &[(&str, String)]) -> String {
    upstreams
        .iter()
        .map(|(id, url)| {
            format!(
                "[upstreams.{id}]\nservers = [\"{url}\"]\nresolve_interval = \"1s\"\n\n[[routes]]\nid = \"{id}\"\npath = \"/{id}\"\nupstream = \"{id}\"\npublic = true\n\n"
            )
        })
        .collect()
}

/// An echo upstream on every address `localhost` has, on one port.
async fn echo_on_localhost() -> (u16, BTreeSet<SocketAddr>) {
    for _ in 0..20 {
        let port = free_port();
        let addrs: BTreeSet<SocketAddr> = tokio::net::lookup_host(("localhost", port))
            .await
            .expect("localhost resolves")
            .collect();
        let mut listeners = Vec::new();
        for a in &addrs {
            match TcpListener::bind(a).await {
                Ok(l) => listeners.push(l),
                Err(_) => break,
            }
        }
        if listeners.len() == addrs.len() {
            for l in listeners {
                tokio::spawn(authgate::demo::serve_echo(l));
            }
            return (port, addrs);
        }
    }
    panic!("no port free on every address of localhost");
}

/// The address of the echo server that answered `path`.
async fn served_by(gw: &Gateway, path: &str) -> (u16, Option<SocketAddr>) {
    let r = client().get(gw.url(path)).send().await.unwrap();
    let status = r.status().as_u16();
    let v: serde_json::Value = r.json().await.unwrap_or_default();
    (status, v["server"].as_str().and_then(|s| s.parse().ok()))
}

#[tokio::test]
async fn a_name_is_served_on_every_address_it_has() {
    let (port, addrs) = echo_on_localhost().await;
    let gw = Gateway::start(&routes(&[("app", format!("http://localhost:{port}"))])).await;
    gw.wait_ready().await;
    let mut seen = BTreeSet::new();
    for _ in 0..(4 * addrs.len()) {
        let (status, server) = served_by(&gw, "/app").await;
        assert_eq!(status, 200, "{}", gw.log());
        seen.insert(server.expect("echo answer"));
    }
    assert_eq!(
        seen, addrs,
        "every address of localhost is a server (round robin)"
    );
    println!("localhost resolved to {addrs:?}; every one served");
    assert!(gw.log().contains("server name resolved"), "{}", gw.log());
}

#[tokio::test]
async fn a_name_that_does_not_resolve_is_a_dead_upstream_not_a_failed_start() {
    let app = echo().await;
    let closed = format!("http://127.0.0.1:{}", free_port());
    let body = routes(&[
        ("app", format!("http://{app}")),
        ("dead", closed),
        ("nowhere", "http://no-such-upstream.invalid:8080".into()),
    ]);
    let gw = Gateway::start(&body).await;
    gw.wait_ready().await;
    assert_eq!(served_by(&gw, "/app").await.0, 200);
    let dead = served_by(&gw, "/dead").await.0;
    let nowhere = served_by(&gw, "/nowhere").await.0;
    assert_eq!(dead, 502, "a dead upstream: {}", gw.log());
    assert_eq!(nowhere, dead, "no address answers like a dead upstream");
    // Still not resolved at the next lookups: nothing changes, and the gateway stays ready.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(served_by(&gw, "/nowhere").await.0, 502);
    assert_eq!(served_by(&gw, "/app").await.0, 200);
    assert_eq!(gw.readyz().await["ready"], true, "{}", gw.readyz().await);
    assert!(
        gw.log().contains("no-such-upstream.invalid"),
        "{}",
        gw.log()
    );

    // `check` (online) accepts the config, with a warning for the name; offline, no lookup.
    for offline in [false, true] {
        let mut cmd = std::process::Command::new(BIN);
        cmd.arg("check");
        if offline {
            cmd.arg("--offline");
        }
        let out = cmd.arg("-c").arg(&gw.config_path).output().unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "{text}");
        let warned = text.contains(
            "warning: upstreams.nowhere.servers[0]: host \"no-such-upstream.invalid\" does not resolve from here",
        );
        assert_eq!(warned, !offline, "{text}");
        assert!(!text.contains("upstreams.app.servers"), "{text}");
    }
}

#[tokio::test]
async fn a_named_upstream_added_by_reload_serves_at_once() {
    let app = echo().await;
    let (port, _) = echo_on_localhost().await;
    let before = routes(&[("app", format!("http://{app}"))]);
    let gw = Gateway::start(&before).await;
    gw.wait_ready().await;
    let after = format!(
        "{before}{}",
        routes(&[("named", format!("http://localhost:{port}"))])
    );
    std::fs::write(&gw.config_path, gw.config_text(&after, &Opts::default())).unwrap();
    gw.signal("HUP");
    let reloaded = eventually(Duration::from_secs(10), || async {
        gw.log().contains("config reloaded")
    })
    .await;
    assert!(reloaded, "{}", gw.log());
    // The reload swapped the config in after its names were looked up: no 502 window.
    for _ in 0..5 {
        assert_eq!(served_by(&gw, "/named").await.0, 200, "{}", gw.log());
    }
}

#[test]
fn resolve_interval_is_checked_with_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("c.toml");
    std::fs::write(
        &p,
        "[upstreams.a]\nservers = [\"http://a.internal\"]\nresolve_interval = \"0s\"\n\n[upstreams.b]\nservers = [\"http://b.internal\"]\nresolve_interval = \"often\"\n",
    )
    .unwrap();
    let out = std::process::Command::new(BIN)
        .arg("check")
        .arg(&p)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    for expected in [
        "c.toml:3:20: upstreams.a.resolve_interval: must be between 1s and 1day",
        "c.toml:7:20: upstreams.b.resolve_interval: invalid duration",
    ] {
        assert!(text.contains(expected), "{expected}\n{text}");
    }
}

/// An upstream that answers `B` to every request, and 500 on `/healthz` while `sick` is set.
async fn sickly_server(sick: Arc<AtomicBool>) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                return;
            };
            let sick = sick.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 1024];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let health = buf.starts_with(b"GET /healthz ");
                let status = if health && sick.load(Ordering::SeqCst) {
                    "500 Internal Server Error"
                } else {
                    "200 OK"
                };
                let reply =
                    format!("HTTP/1.1 {status}\r\nContent-Length: 1\r\nConnection: close\r\n\r\nB");
                let _ = s.write_all(reply.as_bytes()).await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn an_active_health_check_takes_a_server_out_and_back() {
    let a = echo().await;
    let sick = Arc::new(AtomicBool::new(false));
    let b = sickly_server(sick.clone()).await;
    // max_fails = 0: only the active check can take a server out.
    let body = format!(
        "[upstreams.app]\nservers = [\"http://{a}\", \"http://{b}\"]\nmax_fails = 0\nhealth_path = \"/healthz\"\nhealth_interval = \"1s\"\nhealth_timeout = \"500ms\"\n\n[[routes]]\nid = \"app\"\npath = \"/\"\nupstream = \"app\"\npublic = true\n"
    );
    let gw = Gateway::start(&body).await;
    gw.wait_ready().await;
    let served_by_b = || async {
        let mut n = 0;
        for _ in 0..10 {
            let r = client().get(gw.url("/x")).send().await.unwrap();
            assert_eq!(r.status(), 200, "{}", gw.log());
            if r.text().await.unwrap() == "B" {
                n += 1;
            }
        }
        n
    };
    assert!(served_by_b().await > 0, "both servers serve");

    sick.store(true, Ordering::SeqCst);
    let out = eventually(Duration::from_secs(10), || async {
        gw.log().contains("server failed its health check: down")
    })
    .await;
    assert!(out, "{}", gw.log());
    assert_eq!(served_by_b().await, 0, "B is out while its check fails");

    sick.store(false, Ordering::SeqCst);
    let back = eventually(Duration::from_secs(10), || async {
        gw.log().contains("server passed its health check: up")
    })
    .await;
    assert!(back, "{}", gw.log());
    assert!(served_by_b().await > 0, "B is back");
}

/// SIGHUPs while requests run to an upstream written as a name: each new config has looked
/// the name up before it serves, so no request meets a pool without servers.
#[tokio::test]
async fn reloads_under_load_leave_no_named_upstream_without_servers() {
    let (port, _) = echo_on_localhost().await;
    let gw = Gateway::start(&routes(&[("app", format!("http://localhost:{port}"))])).await;
    gw.wait_ready().await;
    let stop = Arc::new(AtomicBool::new(false));
    let load: Vec<_> = (0..4)
        .map(|_| {
            let (url, stop) = (gw.url("/app"), stop.clone());
            tokio::spawn(async move {
                let (mut ok, mut failed) = (0, Vec::new());
                while !stop.load(Ordering::SeqCst) {
                    match client().get(&url).send().await {
                        Ok(r) if r.status() == 200 => ok += 1,
                        Ok(r) => failed.push(r.status().as_u16().to_string()),
                        Err(e) => failed.push(e.to_string()),
                    }
                }
                (ok, failed)
            })
        })
        .collect();
    for i in 1..=5 {
        gw.signal("HUP");
        let done = eventually(Duration::from_secs(10), || async {
            gw.log().matches("config reloaded").count() >= i
        })
        .await;
        assert!(done, "{}", gw.log());
        // Requests on the new config before the next reload.
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    stop.store(true, Ordering::SeqCst);
    let (mut ok, mut failed) = (0, Vec::new());
    for l in load {
        let (o, f) = l.await.unwrap();
        ok += o;
        failed.extend(f);
    }
    println!(
        "5 reloads under load: {ok} requests served, {} failed",
        failed.len()
    );
    assert!(ok > 0 && failed.is_empty(), "{failed:?}\n{}", gw.log());
}
