//! Reloads through the real binary (issue 15, point 1): all of the config or none of it.
//! A provider added by SIGHUP signs users in, with the header names and prefix of the same
//! file; a change that needs a restart is refused whole (the running config keeps serving,
//! the route added beside it too is not applied); `--watch` follows the file without a
//! signal; a renewed TLS certificate is served without a restart; a broken file changes
//! nothing. Reload under load: tests/fault_scenarios.rs.

mod common;

use std::time::Duration;

use common::{
    auth_config, client, echo, eventually, http_login, metric_value, test_pki, write, Gateway, Idp,
    Opts, Seen, ANY_PORT,
};

/// A route table with `/` protected and `/public` public, in front of `app`.
fn routes(app: std::net::SocketAddr, extra: &str) -> String {
    format!(
        "[upstreams.app]\nservers = [\"http://{app}\"]\n\n[[routes]]\nid = \"public\"\npath = \"/public\"\nupstream = \"app\"\npublic = true\n\n[[routes]]\nid = \"app\"\npath = \"/\"\nupstream = \"app\"\n{extra}"
    )
}

async fn reloads(gw: &Gateway, result: &str) -> f64 {
    metric_value(
        &gw.metrics().await,
        &format!("authgate_config_reloads_total{{result=\"{result}\"}}"),
    )
    .unwrap_or(0.0)
}

/// Write `body` as the gateway's config (harness parts included) and send SIGHUP; wait
/// until the reload counted under `result` went up.
async fn reload(gw: &Gateway, opts: &Opts, body: &str, result: &str) {
    let before = reloads(gw, result).await;
    std::fs::write(&gw.config_path, gw.config_text(body, opts)).unwrap();
    gw.signal("HUP");
    assert!(
        eventually(Duration::from_secs(10), || async {
            reloads(gw, result).await > before
        })
        .await,
        "no reload counted as {result}:\n{}",
        gw.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_added_by_sighup_signs_users_in_with_the_new_header_names() {
    let idp = Idp::start(true, &[ANY_PORT]).await;
    let app = echo().await;
    let opts = Opts::default;
    let gw = Gateway::start_with(&routes(app, ""), opts()).await;
    let c = client();
    // No provider: nobody can sign in.
    assert_eq!(
        c.get(gw.url("/.authgate/login"))
            .send()
            .await
            .unwrap()
            .status(),
        503
    );

    // One file: a provider, renamed identity headers and another prefix.
    let with_provider = format!(
        "{}\n[headers]\nuser = \"x-reloaded-user\"\n\n[gateway]\nprefix = \"/.authgate/\"\n\n{}",
        idp.provider_toml(),
        routes(app, "")
    );
    reload(&gw, &opts(), &with_provider, "ok").await;
    // The new provider's discovery runs after the swap; until it answers, sign-in is a 503
    // with Retry-After (seen in CI on a loaded machine, right after the IdP restarted).
    gw.wait_ready().await;
    let (cookie, _) = http_login(&gw, "/").await;
    assert!(
        !cookie.is_empty(),
        "no session after the reload:\n{}",
        gw.log()
    );
    let seen: Seen = gw.get_as("/", &cookie).await.json().await.unwrap();
    assert_eq!(seen.header("x-reloaded-user"), Some("alice"), "{seen:?}");
    assert_eq!(
        seen.header("x-forwarded-user"),
        None,
        "the old name is gone"
    );
    // A client's own value under the new name is stripped like the old one was.
    let forged: Seen = c
        .get(gw.url("/public"))
        .header("x-reloaded-user", "mallory")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(forged.header("x-reloaded-user"), None);

    // A restart-only key beside a route change: refused whole, the running config stays.
    let needs_restart = Opts {
        server_extra: "max_connections = 77".into(),
        ..opts()
    };
    let with_new_route = format!(
        "{with_provider}\n[[routes]]\nid = \"new\"\npath = \"/new\"\nupstream = \"app\"\npublic = true\n"
    );
    reload(&gw, &needs_restart, &with_new_route, "restart_required").await;
    assert!(
        gw.log()
            .contains("restart required: server.max_connections"),
        "{}",
        gw.log()
    );
    // /new falls under the protected `/` route: the new public route was not applied.
    assert_eq!(
        c.get(gw.url("/new")).send().await.unwrap().status(),
        401,
        "half a reload was applied"
    );
    let seen: Seen = gw.get_as("/", &cookie).await.json().await.unwrap();
    assert_eq!(seen.header("x-reloaded-user"), Some("alice"));

    // A broken file: rejected, nothing changes.
    reload(
        &gw,
        &opts(),
        "[[routes]]\nupstream = \"missing\"\n",
        "error",
    )
    .await;
    assert_eq!(gw.get_as("/", &cookie).await.status(), 200);

    // The same change without the restart-only key applies.
    reload(&gw, &opts(), &with_new_route, "ok").await;
    assert_eq!(c.get(gw.url("/new")).send().await.unwrap().status(), 200);

    // The provider removed again: its sessions end with it (nobody vouches for them), and
    // sign-in is unavailable.
    reload(&gw, &opts(), &routes(app, ""), "ok").await;
    assert_eq!(
        c.get(gw.url("/.authgate/login"))
            .send()
            .await
            .unwrap()
            .status(),
        503
    );
    assert_ne!(gw.get_as("/", &cookie).await.status(), 200);
}

/// A cached session keeps only the other claims its config reads (rules and claim headers);
/// a reload whose new route reads others (a claim rule, claim headers, prefix mode) reads the
/// session again, so the route decides and sends on every claim the provider gave.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_that_reads_more_claims_reads_the_session_again() {
    let users = serde_json::json!({"alice": {
        "email": "alice@corp.example", "email_verified": true, "name": "Alice Corp",
        "preferred_username": "alice", "groups": ["dev"],
        "department": "eng", "employee_number": 4711, "active": true,
        "realm_access": {"roles": ["r1", "r2"]}, "nicknames": ["al", "ally"]
    }});
    let idp = Idp::start_with_env(0, true, &[ANY_PORT], &[("IDP_USERS", &users.to_string())]).await;
    let app = echo().await;
    let dept = "[[routes]]\nid = \"dept\"\npath = \"/dept\"\nupstream = \"app\"\n[routes.policy]\nclaims = { department = \"eng\" }\n[routes.headers]\nclaims = { \"X-Roles\" = \"realm_access.roles\" }\n";
    let emp = "[[routes]]\nid = \"emp\"\npath = \"/emp\"\nupstream = \"app\"\n[routes.policy]\nclaim_patterns = { active = \"true\", employee_number = \"47.*\" }\n[routes.headers]\nclaims = { \"X-Employee\" = \"employee_number\" }\n";
    let every = "[[routes]]\nid = \"all\"\npath = \"/all\"\nupstream = \"app\"\n[routes.headers]\nclaim_prefix = \"OIDC_CLAIM_\"\n";
    let base = auth_config(&idp, app, "store = \"memory\"");
    let gw = Gateway::start_with(&format!("{base}\n{dept}"), Opts::default()).await;
    gw.wait_ready().await;
    let c = client();
    let get = |path: &'static str, cookie: String| {
        let c = c.clone();
        let url = gw.url(path);
        async move {
            let r = c.get(url).header("cookie", cookie).send().await.unwrap();
            let status = r.status().as_u16();
            (status, r.json::<Seen>().await.ok())
        }
    };
    let (cookie, r) = http_login(&gw, "/dept/x").await;
    assert!(!cookie.is_empty(), "login failed: {}", r.status());
    // Twice: the second from the cached copy.
    for _ in 0..2 {
        let (status, seen) = get("/dept/x", cookie.clone()).await;
        assert_eq!(status, 200, "{}", gw.log());
        assert_eq!(seen.unwrap().header("x-roles"), Some("r1,r2"));
    }

    let with_emp = format!("{base}\n{dept}\n{emp}");
    reload(&gw, &Opts::default(), &with_emp, "ok").await;
    for _ in 0..2 {
        let (status, seen) = get("/emp/x", cookie.clone()).await;
        assert_eq!(
            status, 200,
            "the new route's rules read claims the old copy did not keep"
        );
        assert_eq!(seen.unwrap().header("x-employee"), Some("4711"));
        let (status, _) = get("/dept/x", cookie.clone()).await;
        assert_eq!(status, 200);
    }

    let with_every = format!("{with_emp}\n{every}");
    reload(&gw, &Opts::default(), &with_every, "ok").await;
    let (status, seen) = get("/all/x", cookie.clone()).await;
    assert_eq!(status, 200);
    let seen = seen.unwrap();
    for (name, value) in [
        ("oidc_claim_nicknames", "al,ally"),
        ("oidc_claim_department", "eng"),
        ("oidc_claim_active", "true"),
    ] {
        assert_eq!(seen.header(name), Some(value), "{name}: {seen:?}");
    }

    // And back: a route table that reads none of them still decides as before.
    reload(&gw, &Opts::default(), &format!("{base}\n{dept}"), "ok").await;
    let (status, _) = get("/dept/x", cookie.clone()).await;
    assert_eq!(status, 200);
    let (status, seen) = get("/emp/x", cookie).await;
    assert_eq!(status, 200, "now the catch-all route");
    assert_eq!(seen.unwrap().header("x-employee"), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_follows_the_file_and_the_files_it_names() {
    let app = echo().await;
    let opts = || Opts {
        run_args: vec!["--watch".into()],
        ..Opts::default()
    };
    let gw = Gateway::start_with(&routes(app, ""), opts()).await;
    let c = client();
    assert_eq!(c.get(gw.url("/new")).send().await.unwrap().status(), 401);

    // No signal: the file changing is enough.
    let before = reloads(&gw, "ok").await;
    let body = routes(
        app,
        "\n[[routes]]\nid = \"new\"\npath = \"/new\"\nupstream = \"app\"\npublic = true\n",
    );
    std::fs::write(&gw.config_path, gw.config_text(&body, &opts())).unwrap();
    assert!(
        eventually(Duration::from_secs(10), || async {
            c.get(gw.url("/new")).send().await.unwrap().status() == 200
        })
        .await,
        "the change was not picked up:\n{}",
        gw.log()
    );
    assert_eq!(reloads(&gw, "ok").await, before + 1.0);
    assert!(gw.log().contains("cause=\"watch\"") || gw.log().contains("cause=watch"));
}

/// A client that trusts `ca_pem` only, on a fresh connection each time.
fn trusting(ca_pem: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(ca_pem.as_bytes()).unwrap())
        .tls_built_in_root_certs(false)
        .pool_max_idle_per_host(0)
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renewed_listener_certificate_is_served_without_a_restart() {
    let app = echo().await;
    let (old, new) = (test_pki(), test_pki());
    let dir = tempfile::tempdir().unwrap();
    let cert = write(dir.path(), "tls.crt", &old.cert_pem);
    let key = write(dir.path(), "tls.key", &old.key_pem);
    let body = format!(
        "[[listeners]]\naddress = \"127.0.0.1:0\"\ntls_cert_file = \"{}\"\ntls_key_file = \"{}\"\n\n{}",
        cert.display(),
        key.display(),
        routes(
            app,
            "\n[[routes]]\nid = \"open\"\npath = \"/open\"\nupstream = \"app\"\npublic = true\n"
        )
    );
    let opts = || Opts {
        run_args: vec!["--watch".into()],
        ..Opts::default()
    };
    let gw = Gateway::start_with(&body, opts()).await;
    let url = format!("https://localhost:{}/open", gw.listener(1).port());
    let ok = |ca: &str| {
        let (c, url) = (trusting(ca), url.clone());
        async move { c.get(&url).send().await.is_ok_and(|r| r.status() == 200) }
    };
    assert!(ok(&old.ca_pem).await);
    assert!(!ok(&new.ca_pem).await);

    // Renewed in place (as cert-manager or certbot do): picked up by --watch, no signal.
    std::fs::write(&key, &new.key_pem).unwrap();
    std::fs::write(&cert, &new.cert_pem).unwrap();
    assert!(
        eventually(Duration::from_secs(10), || ok(&new.ca_pem)).await,
        "the renewed certificate is not served:\n{}",
        gw.log()
    );
    assert!(
        !ok(&old.ca_pem).await,
        "the old certificate is still served"
    );

    // A key that is not the certificate's: the reload is refused, the running pair stays.
    let before = reloads(&gw, "error").await;
    std::fs::write(&key, &old.key_pem).unwrap();
    gw.signal("HUP");
    assert!(
        eventually(Duration::from_secs(10), || async {
            reloads(&gw, "error").await > before
        })
        .await,
        "{}",
        gw.log()
    );
    assert!(ok(&new.ca_pem).await);
    assert!(
        gw.log().contains("TLS listener certificate"),
        "{}",
        gw.log()
    );
}

/// Reloads under load (issue 15 point 1): valid ones (a route added and removed, identity
/// headers renamed), broken files and restart-only changes, one after another while
/// signed-in and public clients keep reading. Not one request may fail, and every reload is
/// counted as what it was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloads_valid_broken_and_refused_under_load_fail_no_request() {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::Arc;

    let idp = Idp::start(true, &[ANY_PORT]).await;
    let app = echo().await;
    let base = format!("{}\n{}", idp.provider_toml(), routes(app, ""));
    let gw = Gateway::start_with(&base, Opts::default()).await;
    gw.wait_ready().await;
    let (cookie, _) = http_login(&gw, "/").await;
    assert!(!cookie.is_empty());

    let opts = Opts::default();
    let route =
        "\n[[routes]]\nid = \"extra\"\npath = \"/extra\"\nupstream = \"app\"\npublic = true\n";
    let restart = Opts {
        server_extra: "max_connections = 77".into(),
        ..Opts::default()
    };
    // (config text, expected result)
    let steps = [
        (gw.config_text(&format!("{base}{route}"), &opts), "ok"),
        (
            gw.config_text(
                &format!("{base}\n[[routes]]\nupstream = \"missing\"\n"),
                &opts,
            ),
            "error",
        ),
        (
            gw.config_text(&format!("{base}{route}"), &restart),
            "restart_required",
        ),
        (
            gw.config_text(
                &format!("[headers]\nuser = \"x-renamed-user\"\n{base}"),
                &opts,
            ),
            "ok",
        ),
        (gw.config_text(&base, &opts), "ok"),
    ];

    let stop = Arc::new(AtomicBool::new(false));
    let (done, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let failures = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut load = Vec::new();
    for (path, signed_in, fresh_connection) in [
        ("/app", true, false),
        ("/public/x", false, false),
        ("/public/y", false, true),
    ] {
        let (stop, done, failed, failures) =
            (stop.clone(), done.clone(), failed.clone(), failures.clone());
        let (url, cookie) = (gw.url(path), cookie.clone());
        load.push(tokio::spawn(async move {
            let keep = client();
            while !stop.load(Ordering::Relaxed) {
                let c = if fresh_connection {
                    reqwest::Client::builder()
                        .no_proxy()
                        .pool_max_idle_per_host(0)
                        .timeout(Duration::from_secs(15))
                        .build()
                        .unwrap()
                } else {
                    keep.clone()
                };
                let mut req = c.get(&url).header("accept", "application/json");
                if signed_in {
                    req = req.header("cookie", &cookie);
                }
                done.fetch_add(1, Ordering::Relaxed);
                match req.send().await {
                    Ok(r) if r.status() == 200 => {}
                    other => {
                        failed.fetch_add(1, Ordering::Relaxed);
                        failures
                            .lock()
                            .unwrap()
                            .push(format!("{path}: {:?}", other.map(|r| r.status())));
                    }
                }
            }
        }));
    }
    let mut expected = std::collections::HashMap::new();
    for round in 0..4 {
        for (text, result) in &steps {
            let before = reloads(&gw, result).await;
            std::fs::write(&gw.config_path, text).unwrap();
            gw.signal("HUP");
            assert!(
                eventually(Duration::from_secs(10), || async {
                    reloads(&gw, result).await > before
                })
                .await,
                "round {round}: no reload counted as {result}:\n{}",
                gw.log()
            );
            *expected.entry(*result).or_insert(0.0) += 1.0;
            // Once the reload is counted, the upstream sees the running config's names only
            // (a session cached under the previous names is never served).
            if *result == "ok" {
                let (now, gone) = if text.contains("x-renamed-user") {
                    ("x-renamed-user", "x-forwarded-user")
                } else {
                    ("x-forwarded-user", "x-renamed-user")
                };
                for _ in 0..3 {
                    let seen: Seen = gw.get_as("/", &cookie).await.json().await.unwrap();
                    assert_eq!(seen.header(now), Some("alice"), "round {round}: {seen:?}");
                    assert_eq!(seen.header(gone), None, "round {round}: {seen:?}");
                }
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    for t in load {
        t.await.unwrap();
    }
    let (done, failed) = (done.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    eprintln!(
        "20 reloads (12 ok, 4 broken, 4 restart-only) under load: {done} requests, {failed} failed"
    );
    assert_eq!(failed, 0, "{:?}", failures.lock().unwrap());
    assert!(done >= 100, "too little load: {done} requests");
    for (result, n) in expected {
        assert_eq!(reloads(&gw, result).await, n, "{result}");
    }
}
