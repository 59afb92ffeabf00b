//! Finer access through the real binary and the real provider (issue 16 point 4):
//! `auth = "optional"` (anonymous vs signed in, stale cookie, bad bearer token, CSRF),
//! `[[routes.deny]]`, and `source_ips` on the client address as established through
//! `server.trusted_proxies`, in proxy mode and in forward-auth mode (the same decisions).

use std::net::IpAddr;

use crate::common::{self, free_port, http_login, snippet, Gateway, Idp, Nginx, Opts, Seen};

/// The routes under test, besides the harness's `/public` and protected `/`.
const ROUTES: &str = r#"
[[routes]]
id = "home"
path = "/home"
upstream = "app"
auth = "optional"

[[routes]]
id = "home-api"
path = "/home-api"
upstream = "app"
auth = "optional"
bearer = true
audiences = ["urn:authgate:api"]

[[routes]]
id = "office"
path = "/office"
upstream = "app"
auth = "optional"
[routes.policy]
source_ips = ["192.0.2.0/24", "2001:db8::/32"]

[[routes]]
id = "lan"
path = "/lan"
upstream = "app"
auth = "optional"
[routes.policy]
source_ips = ["127.0.0.2"]

[[routes]]
id = "no-delete"
path = "/no-delete"
upstream = "app"
[[routes.deny]]
groups = ["admins"]
methods = ["DELETE"]
[[routes.deny]]
source_ips = ["198.51.100.0/24"]

[[routes]]
id = "kiosk"
path = "/kiosk"
upstream = "app"
public_methods = ["GET", "OPTIONS"]
[routes.policy]
groups = ["admins"]
source_ips = ["192.0.2.0/24", "198.51.100.0/24"]
[[routes.deny]]
source_ips = ["198.51.100.0/24"]
[[routes.deny]]
methods = ["GET"]
groups = ["contractors"]
"#;

/// A gateway trusting 127.0.0.1 (the "front proxy") only: clients bound to 127.0.0.2 are
/// untrusted peers. `front` adds the forward-auth section.
async fn start(idp: &Idp, port: u16, front: &str) -> Gateway {
    let e = common::echo().await;
    let gw = Gateway::start_with(
        &format!(
            "{front}{}{ROUTES}",
            common::auth_config(idp, e, "store = \"memory\"")
        ),
        Opts {
            port: Some(port),
            server_extra: "trusted_proxies = [\"127.0.0.1\"]".into(),
            ..Opts::default()
        },
    )
    .await;
    gw.wait_ready().await;
    gw
}

/// A client connecting from `local` (127.0.0.1: the trusted proxy; 127.0.0.2: anyone).
fn client_from(local: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .local_address(local.parse::<IpAddr>().unwrap())
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn optional_routes_identify_signed_in_users_and_pass_anonymous_ones() {
    let port = free_port();
    let idp = Idp::start(true, &[port]).await;
    let gw = start(&idp, port, "").await;
    let anyone = client_from("127.0.0.2");

    // Anonymous: passes, never a redirect (a browser navigation is not sent to sign in)...
    let r = anyone
        .get(gw.url("/home/x"))
        .header("accept", "text/html")
        .header("sec-fetch-mode", "navigate")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers().get("location").is_none());
    // ... and forged identity headers never reach the app.
    let r = anyone
        .get(gw.url("/home/x"))
        .header("x-forwarded-user", "mallory")
        .header("X_Forwarded_Email", "mallory@evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let seen: Seen = r.json().await.unwrap();
    assert_eq!(seen.header("x-forwarded-user"), None);
    assert!(seen.all("x-forwarded-email").is_empty());
    assert!(seen.all("x_forwarded_email").is_empty());

    // A cookie for no session (expired, revoked, forged) is no session: anonymous.
    let r = anyone
        .get(gw.url("/home/x"))
        .header("cookie", "authgate_session=v1.forged.forged")
        .header("x-forwarded-user", "mallory")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let seen: Seen = r.json().await.unwrap();
    assert_eq!(seen.header("x-forwarded-user"), None);

    // Signed in: the same page now names the user, the forged header still gone.
    let (cookie, _) = http_login(&gw, "/").await;
    assert!(!cookie.is_empty());
    let r = anyone
        .get(gw.url("/home/x"))
        .header("cookie", &cookie)
        .header("x-forwarded-user", "mallory")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let seen: Seen = r.json().await.unwrap();
    assert_eq!(seen.all("x-forwarded-user"), ["alice"]);
    assert_eq!(seen.header("x-forwarded-email"), Some("alice@example.com"));

    // The cookie still authenticates, so a cross-site unsafe request with it is refused as
    // on a protected route (the cross-site page would act as alice).
    let r = anyone
        .post(gw.url("/home/x"))
        .header("cookie", &cookie)
        .header("sec-fetch-site", "cross-site")
        .header("origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    // Without the cookie the same request is just anonymous.
    let r = anyone
        .post(gw.url("/home/x"))
        .header("sec-fetch-site", "cross-site")
        .header("origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    // Bearer on an optional route: a valid token identifies, none is anonymous, a bad one
    // is 401 (never silently anonymous).
    let token = idp.client_token("urn:authgate:api").await;
    let r = anyone
        .get(gw.url("/home-api/x"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let seen: Seen = r.json().await.unwrap();
    assert_eq!(seen.header("x-forwarded-user"), Some("authgate"));
    let r = anyone.get(gw.url("/home-api/x")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let seen: Seen = r.json().await.unwrap();
    assert_eq!(seen.header("x-forwarded-user"), None);
    for bad in [format!("{token}x"), "not-a-jwt".to_string()] {
        let r = anyone
            .get(gw.url("/home-api/x"))
            .bearer_auth(&bad)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401);
    }

    // A protected route on the same gateway still sends anonymous callers to sign in.
    let r = anyone
        .get(gw.url("/x"))
        .header("accept", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deny_rules_and_source_ips_through_trusted_proxies() {
    let port = free_port();
    let idp = Idp::start(true, &[port]).await;
    let gw = start(&idp, port, "").await;
    let (cookie, _) = http_login(&gw, "/").await;
    let proxy = client_from("127.0.0.1");
    let anyone = client_from("127.0.0.2");

    // Deny: alice is in admins, so DELETE is refused; GET passes (no policy: anyone else).
    let call = |c: &reqwest::Client, m: reqwest::Method, xff: Option<&str>| {
        let mut b = c
            .request(m, gw.url("/no-delete/x"))
            .header("cookie", &cookie);
        if let Some(v) = xff {
            b = b.header("x-forwarded-for", v);
        }
        b.send()
    };
    assert_eq!(
        call(&anyone, reqwest::Method::GET, None)
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        call(&anyone, reqwest::Method::DELETE, None)
            .await
            .unwrap()
            .status(),
        403
    );
    // The second rule: a network, as the trusted proxy says; the client's own claim to be
    // elsewhere (left of the proxy's entry) changes nothing.
    assert_eq!(
        call(
            &proxy,
            reqwest::Method::GET,
            Some("203.0.113.1, 198.51.100.9")
        )
        .await
        .unwrap()
        .status(),
        403
    );
    assert_eq!(
        call(
            &proxy,
            reqwest::Method::GET,
            Some("198.51.100.9, 203.0.113.1")
        )
        .await
        .unwrap()
        .status(),
        200
    );
    // An untrusted peer's header is not believed (it is the client: 127.0.0.2).
    assert_eq!(
        call(&anyone, reqwest::Method::GET, Some("198.51.100.9"))
            .await
            .unwrap()
            .status(),
        200
    );
    // An entry that is not an address: unknown, and an unknown address may be that network.
    assert_eq!(
        call(&proxy, reqwest::Method::GET, Some("unknown"))
            .await
            .unwrap()
            .status(),
        403
    );

    // source_ips on an optional route: held for anonymous callers too.
    let office = |c: &reqwest::Client, xff: Option<&str>| {
        let mut b = c.get(gw.url("/office/x"));
        if let Some(v) = xff {
            b = b.header("x-forwarded-for", v);
        }
        b.send()
    };
    for (xff, status) in [
        (Some("192.0.2.7"), 200),
        (Some("6.6.6.6, 192.0.2.7"), 200),
        (Some("::ffff:192.0.2.7"), 200),
        (Some("2001:db8::5"), 200),
        (Some("192.0.2.7, 203.0.113.1"), 403),
        (Some("not-an-address"), 403),
        // All hops trusted (the proxy's own request): 127.0.0.1 is no office address.
        (None, 403),
    ] {
        let r = office(&proxy, xff).await.unwrap();
        assert_eq!(r.status(), status, "{xff:?}");
    }
    // The same header straight from a client is not believed: 127.0.0.2 is not the office.
    assert_eq!(
        office(&anyone, Some("192.0.2.7")).await.unwrap().status(),
        403
    );
    // A public method: nobody signs in, but the policy's source_ips and the deny rules
    // hold (they did not, and every address passed).
    let kiosk = |c: &reqwest::Client, m: &str, xff: Option<&str>| {
        let mut b = c.request(m.parse().unwrap(), gw.url("/kiosk/x"));
        if let Some(v) = xff {
            b = b.header("x-forwarded-for", v);
        }
        b.send()
    };
    for (m, xff, status) in [
        ("GET", Some("192.0.2.7"), 200),
        ("OPTIONS", Some("192.0.2.7"), 200),
        ("GET", Some("203.0.113.1"), 403),
        ("OPTIONS", Some("203.0.113.1"), 403),
        ("GET", Some("198.51.100.9"), 403),
        ("GET", Some("unknown"), 403),
        ("GET", None, 403),
    ] {
        let r = kiosk(&proxy, m, xff).await.unwrap();
        assert_eq!(r.status(), status, "{m} {xff:?}");
    }
    assert_eq!(kiosk(&anyone, "GET", None).await.unwrap().status(), 403);

    // A method in lower case is 400 everywhere: to many frameworks `delete` is DELETE.
    for m in ["delete", "Delete", "get"] {
        let r = call(&anyone, m.parse().unwrap(), None).await.unwrap();
        assert_eq!(r.status(), 400, "{m}");
        let r = kiosk(&proxy, m, Some("192.0.2.7")).await.unwrap();
        assert_eq!(r.status(), 400, "{m}");
    }

    // The refusals are logged with their reason, without the session or a token.
    let log = gw.log();
    assert!(log.contains("denied by a deny rule"), "{log}");
    assert!(
        log.contains("deny_rule=1") || log.contains("\"deny_rule\":1"),
        "{log}"
    );
    assert!(!log.contains(cookie.split('=').nth(1).unwrap()));
}

/// Forward-auth: the front proxy (127.0.0.1, trusted) asks about each request and says who
/// the client is in `X-Forwarded-For` (nginx: `$proxy_add_x_forwarded_for`); the decisions
/// are those of proxy mode.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forward_auth_makes_the_same_decisions() {
    let port = free_port();
    let idp = Idp::start(true, &[port]).await;
    let gw = start(&idp, port, "[forward_auth]\nproxy = \"nginx\"\n\n").await;
    let (cookie, _) = http_login(&gw, "/").await;
    let front = client_from("127.0.0.1");
    let check = |method: &str, uri: &str, cookie: Option<&str>, xff: Option<&str>| {
        let mut b = front
            .get(gw.url("/.authgate/auth"))
            .header("x-original-method", method)
            .header("x-original-uri", uri)
            .header("x-forwarded-host", gw.addr.to_string())
            .header("x-forwarded-user", "mallory");
        if let Some(c) = cookie {
            b = b.header("cookie", c);
        }
        if let Some(v) = xff {
            b = b.header("x-forwarded-for", v);
        }
        b.send()
    };
    let user = |r: &reqwest::Response| {
        r.headers()
            .get("x-forwarded-user")
            .map(|v| v.to_str().unwrap().to_string())
    };

    // Optional: anonymous passes with an empty identity, signed in with alice's.
    let r = check("GET", "/home/x", None, Some("203.0.113.1"))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(user(&r).as_deref(), Some(""));
    let r = check("GET", "/home/x", Some(&cookie), Some("203.0.113.1"))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(user(&r).as_deref(), Some("alice"));
    // Protected: still 401 for nobody.
    let r = check("GET", "/x", None, None).await.unwrap();
    assert_eq!(r.status(), 401);

    // Deny rules.
    let r = check("DELETE", "/no-delete/x", Some(&cookie), Some("203.0.113.1"))
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let r = check("GET", "/no-delete/x", Some(&cookie), Some("203.0.113.1"))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = check("GET", "/no-delete/x", Some(&cookie), Some("198.51.100.9"))
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    // No X-Forwarded-For: the client is unknown (the front proxy's own address is not the
    // client's), which a deny rule on addresses refuses.
    let r = check("GET", "/no-delete/x", Some(&cookie), None)
        .await
        .unwrap();
    assert_eq!(r.status(), 403);

    // A public method: the address rules and deny rules hold in forward-auth too.
    for (m, xff, status) in [
        ("GET", Some("192.0.2.7"), 200),
        ("OPTIONS", Some("192.0.2.7"), 200),
        ("GET", Some("203.0.113.1"), 403),
        ("GET", Some("198.51.100.9"), 403),
        ("GET", None, 403),
        ("get", Some("192.0.2.7"), 400),
        ("delete", Some("203.0.113.1"), 400),
    ] {
        let r = check(m, "/kiosk/x", None, xff).await.unwrap();
        assert_eq!(r.status(), status, "{m} {xff:?}");
    }

    // source_ips: the client as the front proxy reports it.
    for (xff, status) in [
        (Some("192.0.2.7"), 200),
        (Some("6.6.6.6, 192.0.2.7"), 200),
        (Some("192.0.2.7, 203.0.113.1"), 403),
        (None, 403),
    ] {
        let r = check("GET", "/office/x", None, xff).await.unwrap();
        assert_eq!(r.status(), status, "{xff:?}");
    }
    // The same check from an untrusted peer is refused outright, whatever it claims.
    let r = client_from("127.0.0.2")
        .get(gw.url("/.authgate/auth"))
        .header("x-original-method", "GET")
        .header("x-original-uri", "/office/x")
        .header("x-forwarded-host", gw.addr.to_string())
        .header("x-forwarded-for", "192.0.2.7")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
}

/// The README's nginx snippet, verbatim, in front of the gateway: nginx tells the gateway
/// who the client is (`$proxy_add_x_forwarded_for`), so `source_ips` holds in forward-auth
/// mode, and what the client itself writes in `X-Forwarded-For` does not count.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_snippet_tells_the_gateway_who_the_client_is() {
    let nginx_port = free_port();
    let idp = Idp::start(true, &[nginx_port]).await;
    let app = common::echo().await;
    let gw = Gateway::start_with(
        &format!(
            "[forward_auth]\nproxy = \"nginx\"\n\n{}{ROUTES}",
            common::auth_config(&idp, app, "store = \"memory\"")
        ),
        Opts {
            port: Some(common::ANY_PORT),
            server_extra: "trusted_proxies = [\"127.0.0.1\"]".into(),
            ..Opts::default()
        },
    )
    .await;
    gw.wait_ready().await;
    let server = snippet(
        "docs/forward-auth/nginx.conf",
        &[
            ("127.0.0.1:8080", gw.addr.to_string()),
            ("127.0.0.1:3000", app.to_string()),
        ],
    );
    let nginx = Nginx::start(nginx_port, &server).await;
    let lan = |from: &str, xff: Option<&str>| {
        let mut b = client_from(from).get(nginx.url("/lan/x"));
        if let Some(v) = xff {
            b = b.header("x-forwarded-for", v);
        }
        b.send()
    };
    assert_eq!(lan("127.0.0.2", None).await.unwrap().status(), 200);
    assert_eq!(
        lan("127.0.0.2", Some("203.0.113.1"))
            .await
            .unwrap()
            .status(),
        200,
        "the client's own entries are left of nginx's"
    );
    assert_eq!(lan("127.0.0.3", None).await.unwrap().status(), 403);
    assert_eq!(
        lan("127.0.0.3", Some("127.0.0.2")).await.unwrap().status(),
        403,
        "a forged entry is not the client"
    );
}

/// `authgate check` names each mistake with file:line:column, before anything runs.
#[test]
fn check_refuses_ambiguous_access_rules_with_positions() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("c.toml");
    std::fs::write(
        &p,
        r#"[[providers]]
id = "corp"
issuer = "https://idp.example"
client_id = "gw"
client_secret = "s"

[upstreams.app]
servers = ["http://127.0.0.1:3000"]

[[routes]]
id = "home"
path = "/home"
upstream = "app"
public = true
auth = "optional"

[[routes]]
id = "open"
path = "/open"
upstream = "app"
auth = "optional"
[routes.policy]
groups = ["admins"]

[[routes]]
id = "app"
upstream = "app"
[routes.policy]
email_patterns = ["(unclosed"]
source_ips = ["10.0.0.1/8"]
[[routes.deny]]
source_ips = ["example.com"]
"#,
    )
    .unwrap();
    let out = std::process::Command::new(common::BIN)
        .args(["check", "--offline"])
        .arg(&p)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let text =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    for want in [
        "c.toml:15:8: routes[0].auth: public = true contradicts auth = \"optional\"",
        "c.toml:22:1: routes[1].policy: an optional route lets anonymous callers pass",
        "c.toml:29:19: routes[2].policy.email_patterns[0]: \"(unclosed\" is not a valid regex",
        "c.toml:30:15: routes[2].policy.source_ips[0]: \"10.0.0.1/8\" has host bits set",
        "c.toml:32:15: routes[2].deny[0].source_ips[0]: \"example.com\" is not an IP address",
    ] {
        assert!(text.contains(want), "{want}\n{text}");
    }
    assert!(!text.contains("empty"), "{text}");
}
