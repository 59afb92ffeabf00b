//! Forward-auth mode behind a real nginx (`auth_request`), configured with the README's
//! snippet (`docs/forward-auth/nginx.conf`) as users paste it: nginx proxies to the app and
//! asks the gateway about every request. Each case asserts what the app actually received.

mod common;

use common::forwarding::{assert_proxy_account, forged_lines, EVIL_IP};
use common::{
    auth_config, client, echo, free_port, http_login_via, raw_get, snippet, Gateway, Idp, Nginx,
    Opts, RawResponse, Seen,
};

/// Headers a client forges on every request: none may reach the app.
const FORGED: &[(&str, &str)] = &[
    ("X-Forwarded-User", "mallory"),
    ("X-Forwarded-Email", "mallory@evil.example"),
    ("X-Forwarded-Groups", "mallory-group"),
    ("X-Forwarded-Preferred-Username", "mallory"),
    ("X-Forwarded-Access-Token", "forged"),
    ("X-Authgate-Assertion", "forged"),
    ("X-Authgate-Cookie", "authgate_session=forged"),
    ("X-Auth-Request-User", "mallory"),
    ("Remote-User", "mallory"),
    ("X-Remote-User", "mallory"),
    ("X-User", "mallory"),
    ("X-Email", "mallory@evil.example"),
    ("X_Forwarded_User", "mallory"),
];

/// The names the gateway answers with, then the rest of the namespace the snippets clear.
const CLEARED: &[&str] = &[
    "x-authgate-cookie",
    "x-auth-request-user",
    "remote-user",
    "x-remote-user",
    "x-user",
    "x-email",
    "x_forwarded_user",
];

fn identity() -> impl Iterator<Item = &'static str> {
    common::ANSWERED_IDENTITY
        .into_iter()
        .chain(CLEARED.iter().copied())
}

fn forged(rb: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
    FORGED.iter().fold(rb, |rb, (k, v)| rb.header(*k, *v))
}

/// Nothing of the client's forged identity, and none of the gateway's cookies, reached the app.
fn assert_clean(seen: &Seen, user: Option<&str>) {
    for h in identity() {
        let v = seen.all(h);
        match (h, user) {
            ("x-forwarded-user", Some(u)) => assert_eq!(v, vec![u], "{h}"),
            (
                "x-forwarded-email" | "x-forwarded-groups" | "x-forwarded-preferred-username",
                Some(_),
            ) => {
                assert!(
                    !v.iter()
                        .any(|x| x.contains("mallory") || x.contains("forged")),
                    "{h}: {v:?}"
                )
            }
            _ => assert!(v.is_empty(), "{h} reached the app: {v:?}"),
        }
    }
    for c in seen.all("cookie") {
        assert!(
            !c.contains("authgate_session"),
            "the gateway's cookie reached the app: {c}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_auth_request_snippet() {
    // nginx cannot report a port it picked: its own is chosen before the start. The gateway
    // binds port 0 and nginx's config is written after it started.
    let nginx_port = free_port();
    // The browser talks to nginx, so the provider sends it back to nginx's callback.
    let idp = Idp::start(true, &[nginx_port]).await;
    let app = echo().await;
    let gw = common::forward_auth_gateway(&idp, app, common::ANY_PORT, "nginx").await;
    let server = snippet(
        "docs/forward-auth/nginx.conf",
        &[
            ("127.0.0.1:8080", gw.addr.to_string()),
            ("127.0.0.1:3000", app.to_string()),
        ],
    );
    let nginx = Nginx::start(nginx_port, &server).await;
    let c = client();

    // Public route: passes without a session, with no forged identity and no gateway cookie.
    let r = forged(c.get(nginx.url("/public/x")))
        .header("cookie", "authgate_session=forged; theme=dark")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let seen: Seen = r.json().await.unwrap();
    assert_clean(&seen, None);
    assert_eq!(seen.all("cookie"), vec!["theme=dark"]);

    // Protected: a browser is sent to sign in, an API client gets 401; the app sees nothing.
    let r = c
        .get(nginx.url("/app?x=1"))
        .header("accept", "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 302);
    let location = r.headers()["location"].to_str().unwrap();
    assert!(
        location.ends_with("/.authgate/login?rd=%2Fapp%3Fx%3D1"),
        "{location}"
    );
    let r = forged(c.get(nginx.url("/app")))
        .header("accept", "application/json")
        .send()
        .await
        .unwrap();
    assert_ne!(r.status(), 200);

    // Sign in through nginx; the app then gets the gateway's identity, never the forged one.
    let cookie = http_login_via(&format!("http://127.0.0.1:{nginx_port}"), "/app").await;
    let r = forged(c.get(nginx.url("/app")))
        .header("cookie", format!("{cookie}; theme=dark"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let seen: Seen = r.json().await.unwrap();
    assert_clean(&seen, Some("alice"));
    assert_eq!(seen.header("x-forwarded-email"), Some("alice@example.com"));
    assert_eq!(seen.all("cookie"), vec!["theme=dark"]);

    // Policy on the same normalised path: /public/../admin is /admin, only bob may.
    for path in [
        "/admin",
        "/public/../admin",
        "/public/%2e%2e/admin",
        "//admin",
        "/admin?_method=GET",
    ] {
        let r = c
            .get(nginx.url(path))
            .header("cookie", &cookie)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 403, "{path}");
    }
    // A client's own description of the request changes nothing: nginx's headers win, and
    // a second value of them is refused (nginx turns the 400 into 500).
    for (k, v) in [
        ("X-Forwarded-Uri", "/public/x"),
        ("X-Original-URL", "/public/x"),
        ("X-Forwarded-Method", "GET"),
        ("X-Forwarded-Host", "other.example"),
    ] {
        let r = c
            .get(nginx.url("/admin"))
            .header("cookie", &cookie)
            .header(k, v)
            .send()
            .await
            .unwrap();
        assert_ne!(r.status(), 200, "{k}: {v}");
    }
    let r = c
        .get(nginx.url("/public/%2e%2e/admin"))
        .send()
        .await
        .unwrap();
    assert_ne!(
        r.status(),
        200,
        "a bypass reached the app without a session"
    );

    // The check endpoint is nginx's alone: asked through nginx, it answers nothing.
    for path in ["/.authgate/auth", "/.authgate/%61uth", "/.authgate//auth?x"] {
        let r = c
            .get(nginx.url(path))
            .header("cookie", &cookie)
            .header("x-original-uri", "/app")
            .header("x-original-method", "GET")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404, "{path}");
        assert!(r.headers().get("x-forwarded-user").is_none(), "{path}");
    }

    // Cross-site POST with the session cookie: refused before the app.
    let r = c
        .post(nginx.url("/app"))
        .header("cookie", &cookie)
        .header("origin", "https://evil.example")
        .header("sec-fetch-site", "cross-site")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);

    // The endpoint refuses peers that are not trusted proxies.
    // It trusts another address only (a documentation one: no traffic goes there).
    let untrusted = Gateway::start_with(
        &format!(
            "{}[forward_auth]\nproxy = \"nginx\"\n",
            auth_config(&idp, app, "store = \"memory\"")
        ),
        Opts {
            server_extra: "trusted_proxies = [\"192.0.2.1\"]".into(),
            ..Opts::default()
        },
    )
    .await;
    let r = c
        .get(untrusted.url("/.authgate/auth"))
        .header("x-original-uri", "/public/x")
        .header("x-original-method", "GET")
        .header("x-forwarded-host", "h")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
}

/// The snippets that cannot run here (no Traefik or Envoy package, no Kubernetes) are still
/// the README's text, and each names every identity header the gateway answers with and the
/// cookie replacement, so none lets a client's copy through.
#[test]
fn every_snippet_covers_the_identity_headers() {
    for (file, all) in [
        ("docs/forward-auth/nginx.conf", true),
        ("docs/forward-auth/ingress-nginx.yaml", true),
        ("docs/forward-auth/envoy.yaml", true),
    ] {
        let text = snippet(file, &[]).to_ascii_lowercase();
        let names: Vec<&str> = if all {
            identity().collect()
        } else {
            common::ANSWERED_IDENTITY.to_vec()
        };
        for name in names.iter().filter(|n| !n.contains('_')) {
            assert!(text.contains(name), "{file} does not set or clear {name}");
        }
        assert!(
            text.contains("cookie"),
            "{file} does not replace the cookie"
        );
    }
    // Traefik's regex strips and copies every spelling at once.
    let traefik = snippet("docs/forward-auth/traefik.yaml", &[]);
    for part in [
        "x[-_.]forwarded[-_.](user|email|groups|preferred[-_.]username|access[-_.]token)",
        "x[-_.]authgate[-_.].*",
        "(x[-_.])?remote[-_.]user",
        "cookie",
    ] {
        assert!(traefik.contains(part), "traefik.yaml lacks {part}");
    }
    // Envoy: the method overrides reach the check (in every spelling), and the guide says to
    // drop `_` spellings, which Envoy passes by default and the gateway never sees.
    let envoy = snippet("docs/forward-auth/envoy.yaml", &[]);
    let re = envoy
        .lines()
        .find_map(|l| l.trim().strip_prefix("regex: "))
        .expect("a method-override regex in envoy.yaml");
    let re = regex::Regex::new(&format!("^(?:{})$", re.trim_matches('"'))).unwrap();
    for name in [
        "x-http-method-override",
        "x-http-method",
        "x-method-override",
        "x_http_method_override",
        "x.method.override",
    ] {
        assert!(
            re.is_match(name),
            "envoy.yaml does not send {name} to the check"
        );
    }
    assert!(!re.is_match("x-http-methods"));
    assert!(envoy.contains("headers_with_underscores_action: DROP_HEADER"));
}

/// A raw GET through nginx (header names go out exactly as written), off the runtime.
async fn raw_via(addr: std::net::SocketAddr, path: &str, lines: Vec<String>) -> RawResponse {
    let path = path.to_string();
    tokio::task::spawn_blocking(move || {
        let h: Vec<&str> = lines.iter().map(String::as_str).collect();
        raw_get(addr, &path, &h)
    })
    .await
    .unwrap()
}

/// The app behind nginx gets nginx's account of the request, as it gets the gateway's in
/// proxy mode: a client that sends every forwarding header (each name of
/// `FORWARDING_HEADERS`, in other cases, with `_` and `.`, some twice) on a public route and,
/// signed in, on a protected one is allowed on the real host and path, and the app sees one
/// X-Forwarded-For (the client's address), -Proto and -Host (the host the check was made on)
/// and no other forwarding header.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_snippet_gives_the_app_nginx_account_only() {
    let nginx_port = free_port();
    let idp = Idp::start(true, &[nginx_port]).await;
    let app = echo().await;
    let gw = common::forwarding::gateway(&idp, app, "nginx").await;
    let server = snippet(
        "docs/forward-auth/nginx.conf",
        &[
            ("127.0.0.1:8080", gw.addr.to_string()),
            ("127.0.0.1:3000", app.to_string()),
        ],
    );
    let _nginx = Nginx::start(nginx_port, &server).await;
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], nginx_port));
    let host = addr.to_string();

    let r = raw_via(addr, "/public/x", forged_lines()).await;
    assert_eq!(r.status, 200, "{}", r.head);
    assert_proxy_account(&r.seen(), "127.0.0.1", "http", &host);

    let cookie = http_login_via(&format!("http://{host}"), "/app").await;
    let mut lines = forged_lines();
    lines.push(format!("Cookie: {cookie}"));
    let r = raw_via(addr, "/app/x", lines).await;
    assert_eq!(r.status, 200, "{}", r.head);
    let seen = r.seen();
    assert_eq!(seen.all("x-forwarded-user"), ["alice"]);
    assert_proxy_account(&seen, "127.0.0.1", "http", &host);

    // The check is told the same client as the app: 127.0.0.1 (trusted here, as a client
    // inside trusted_proxies is), never the address it claims.
    let xff = format!("X-Forwarded-For: {EVIL_IP}");
    let r = raw_via(addr, "/lan/x", vec![xff.clone()]).await;
    assert_eq!(r.status, 403, "{}", r.head);
    let r = raw_via(addr, "/lan/x", forged_lines()).await;
    assert_eq!(r.status, 403, "{}", r.head);
}

/// The proxy's own account of the request, which every snippet gives the app.
const OWN: [&str; 3] = ["x-forwarded-for", "x-forwarded-proto", "x-forwarded-host"];

/// `name` in other spellings: Go's canonical case (Traefik's header keys), with `_`, with `.`,
/// and with one `_` among dashes.
fn spellings(name: &str) -> Vec<String> {
    let title: Vec<String> = name
        .split('-')
        .map(|w| w[..1].to_ascii_uppercase() + &w[1..])
        .collect();
    let mut v = vec![
        title.join("-"),
        title.join("_"),
        name.replace('-', "."),
        name.to_ascii_uppercase().replace('-', "_"),
    ];
    if let Some(i) = name.rfind('-') {
        v.push(format!("{}_{}", &name[..i], &name[i + 1..]));
    }
    v
}

/// Each snippet, read as text (Traefik's, ingress-nginx's and Envoy's are not run here),
/// leaves the app none of a client's forwarding headers (`FORWARDING_HEADERS`, in every
/// spelling the proxy passes), only the proxy's own X-Forwarded-For, -Proto and -Host; nginx's
/// tells the check and the app the same.
#[test]
fn every_snippet_clears_the_forwarding_headers() {
    use authgate::forwarded::FORWARDING_HEADERS;
    // nginx: each name set in the app's location, and the check told what the app is told.
    let nginx = snippet("docs/forward-auth/nginx.conf", &[]).to_ascii_lowercase();
    let block = |start: &str| -> Vec<(String, String)> {
        let from = nginx.find(start).unwrap_or_else(|| panic!("no {start}"));
        let body = &nginx[from..from + nginx[from..].find("\n}").unwrap()];
        body.lines()
            .filter_map(|l| l.trim().strip_prefix("proxy_set_header "))
            .filter_map(|l| {
                let (k, v) = l.split_once(' ')?;
                let v = v.split(';').next()?.trim();
                Some((k.to_string(), v.to_string()))
            })
            .collect()
    };
    let (check, app) = (block("location = /_authgate {"), block("location / {"));
    let value = |set: &[(String, String)], name: &str| -> Vec<String> {
        set.iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .collect()
    };
    for name in FORWARDING_HEADERS {
        let v = value(&app, name);
        if OWN.contains(name) {
            assert_eq!(
                v,
                value(&check, name),
                "nginx.conf: {name} to the app and the check"
            );
            assert_ne!(v, ["$proxy_add_x_forwarded_for"], "nginx.conf: {name}");
        } else {
            assert_eq!(v, ["\"\""], "nginx.conf does not clear {name} for the app");
        }
    }
    assert_eq!(value(&app, "x-forwarded-for"), ["$remote_addr"]);
    assert_eq!(value(&app, "x-forwarded-proto"), ["$scheme"]);
    assert_eq!(
        value(&app, "x-forwarded-host"),
        value(&check, "x-forwarded-host")
    );

    // ingress-nginx: every name it does not write itself (from the connection) is an
    // auth-response-header, so the client's copy is dropped; nginx drops `_` and `.` names.
    let ingress: serde_yaml::Value =
        serde_yaml::from_str(&snippet("docs/forward-auth/ingress-nginx.yaml", &[])).unwrap();
    let listed: Vec<String> = ingress["metadata"]["annotations"]
        ["nginx.ingress.kubernetes.io/auth-response-headers"]
        .as_str()
        .unwrap()
        .split(',')
        .map(|n| n.trim().to_ascii_lowercase())
        .collect();
    let written = [
        "x-forwarded-for",
        "x-forwarded-host",
        "x-forwarded-proto",
        "x-forwarded-port",
        "x-forwarded-scheme",
        "x-real-ip",
    ];
    for name in FORWARDING_HEADERS {
        assert_eq!(
            listed.iter().any(|n| n == name),
            !written.contains(name),
            "ingress-nginx.yaml: {name}"
        );
    }

    // Traefik: the regex removes every name in every spelling but its own three, exactly
    // spelled (the entryPoint writes them; Go folds case into one canonical key).
    let traefik = snippet("docs/forward-auth/traefik.yaml", &[]);
    let re = traefik
        .lines()
        .find_map(|l| l.trim().strip_prefix("authResponseHeadersRegex: "))
        .expect("authResponseHeadersRegex in traefik.yaml");
    let re = regex::Regex::new(re.trim_matches('"')).unwrap();
    for name in FORWARDING_HEADERS {
        let canonical = &spellings(name)[0];
        assert_eq!(
            re.is_match(canonical),
            !OWN.contains(name),
            "traefik.yaml: {canonical}"
        );
        for s in &spellings(name)[1..] {
            if s.contains(['_', '.']) {
                assert!(re.is_match(s), "traefik.yaml keeps {s}");
            }
        }
    }
    for name in [
        "Accept",
        "Host",
        "Authorization",
        "Content-Type",
        "User-Agent",
        "Origin",
    ] {
        assert!(!re.is_match(name), "traefik.yaml removes {name}");
    }

    // Envoy: the app's virtual host overwrites X-Forwarded-For (Envoy appends to the
    // client's list) and -Host, and removes every other name (`_` spellings are dropped by
    // headers_with_underscores_action, `.` ones cannot be: the README says so).
    let envoy = snippet("docs/forward-auth/envoy.yaml", &[]);
    let docs: Vec<serde_yaml::Value> = serde_yaml::Deserializer::from_str(&envoy)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .collect();
    let vhost = &docs[1];
    let removed: Vec<&str> = vhost["request_headers_to_remove"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    for name in FORWARDING_HEADERS {
        if !OWN.contains(name) {
            assert!(removed.contains(name), "envoy.yaml does not remove {name}");
        }
    }
    for name in CLEARED.iter().filter(|n| !n.contains('_')) {
        assert!(removed.contains(name), "envoy.yaml does not remove {name}");
    }
    let added: Vec<(&str, &str, &str)> = vhost["request_headers_to_add"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|h| {
            (
                h["header"]["key"].as_str().unwrap(),
                h["header"]["value"].as_str().unwrap(),
                h["append_action"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        added,
        [
            (
                "x-forwarded-for",
                "%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%",
                "OVERWRITE_IF_EXISTS_OR_ADD"
            ),
            (
                "x-forwarded-host",
                "%REQ(:AUTHORITY)%",
                "OVERWRITE_IF_EXISTS_OR_ADD"
            ),
        ]
    );
    assert!(envoy.contains("use_remote_address: true"));
}
