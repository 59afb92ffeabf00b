//! Header hygiene: identity headers stripped in every spelling on every route and method,
//! `Connection:` cannot remove what the gateway adds, forwarding headers only from trusted
//! proxies, request IDs.

use crate::common::{echo, raw, raw_get, Gateway, Opts, Seen};

fn public_app(e: std::net::SocketAddr) -> String {
    format!("[upstreams.app]\nservers = [\"http://{e}\"]\n\n[[routes]]\nupstream = \"app\"\npublic = true\n")
}

const FORGED: &[&str] = &[
    "X-Forwarded-User: mallory",
    "x-forwarded-user: mallory2",
    "X_Forwarded_User: mallory3",
    "X-FORWARDED-EMAIL: m@evil.example",
    "X-Forwarded-Groups: admins",
    "X-Forwarded-Preferred-Username: root",
    "X-Auth-Request-User: mallory",
    "X_Auth_Request_Email: m@evil.example",
    "X-Authgate-User: mallory",
    "x-authgate-anything: 1",
    "Remote-User: mallory",
    "Remote_User: mallory",
];

/// True when a header name belongs to the default identity namespace in any spelling.
fn is_identity(name: &str) -> bool {
    let canon: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    authgate::identity::IdentityNamespace::default().contains(&canon)
        || canon.starts_with("x-auth-request-")
        || canon.starts_with("x-authgate-")
        || canon == "remote-user"
}

fn assert_clean(seen: &Seen) {
    for (k, v) in &seen.headers {
        assert!(
            !is_identity(k),
            "upstream saw client identity header {k}: {v}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identity_headers_stripped_in_every_spelling_and_method() {
    let e = echo().await;
    let gw = Gateway::start(&public_app(e)).await;
    for method in ["GET", "POST", "OPTIONS", "DELETE"] {
        let mut req = format!(
            "{method} /x HTTP/1.1\r\nHost: {}\r\nContent-Length: 0\r\n",
            gw.addr
        );
        for h in FORGED {
            req.push_str(h);
            req.push_str("\r\n");
        }
        req.push_str("Connection: close\r\n\r\n");
        let r = raw(gw.addr, &req);
        assert_eq!(r.status, 200, "{method}: {}", r.head);
        let seen = r.seen();
        assert_eq!(seen.method, method);
        assert_clean(&seen);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configured_namespace_is_stripped_too() {
    let e = echo().await;
    let gw = Gateway::start(&format!(
        "[headers]\nidentity_headers = [\"x-webauth-user\"]\nidentity_prefixes = [\"x-corp-id-\"]\n\n{}",
        public_app(e)
    ))
    .await;
    let r = raw_get(
        gw.addr,
        "/x",
        &[
            "X-Webauth-User: m",
            "X_WEBAUTH_USER: m",
            "X-Corp-Id-Groups: g",
            "X-Authgate-User: m",
            "X-Other: kept",
        ],
    );
    let seen = r.seen();
    for name in [
        "x-webauth-user",
        "x_webauth_user",
        "x-corp-id-groups",
        "x-authgate-user",
    ] {
        assert!(seen.header(name).is_none(), "{name} reached the upstream");
    }
    assert_eq!(seen.header("x-other"), Some("kept"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_header_cannot_remove_gateway_headers() {
    let e = echo().await;
    let gw = Gateway::start(&public_app(e)).await;
    // Nominating a forwarding header or Host is refused outright.
    for nominated in [
        "close, X-Forwarded-For",
        "keep-alive, X-Forwarded-Proto",
        "X-Forwarded-Host",
        "Host",
        "\"X-Forwarded-For\"",
    ] {
        let r = raw_get(gw.addr, "/x", &[&format!("Connection: {nominated}")]);
        assert_eq!(r.status, 400, "{nominated}: {}", r.head);
    }
    // Anything else nominated is removed before the gateway adds its headers.
    for nominated in [
        "X-Request-Id",
        "x-request-id, X-Forwarded-User",
        "keep-alive, X-Authgate-User",
    ] {
        let r = raw_get(
            gw.addr,
            "/x",
            &[
                &format!("Connection: {nominated}"),
                "X-Forwarded-User: mallory",
                "X-Request-Id: client",
            ],
        );
        assert_eq!(r.status, 200, "{nominated}: {}", r.head);
        let seen = r.seen();
        let id = r.header("x-request-id").expect("request id on response");
        assert_ne!(id, "client");
        assert_eq!(
            seen.header("x-request-id"),
            Some(id.as_str()),
            "{nominated}"
        );
        assert_eq!(
            seen.header("x-forwarded-for"),
            Some("127.0.0.1"),
            "{nominated}"
        );
        assert_eq!(
            seen.header("x-forwarded-proto"),
            Some("http"),
            "{nominated}"
        );
        assert!(seen.header("x-forwarded-host").is_some(), "{nominated}");
        assert_clean(&seen);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarding_headers_only_from_trusted_proxies() {
    let e = echo().await;
    let untrusted = Gateway::start(&public_app(e)).await;
    let spoof = [
        "X-Forwarded-For: 203.0.113.9",
        "X-Forwarded-Proto: https",
        "X-Forwarded-Host: evil.example",
        "Forwarded: for=203.0.113.9;proto=https",
        "X-Real-IP: 203.0.113.9",
        "X-Original-URL: /admin",
        "X-Rewrite-URL: /admin",
        "X-Request-Id: chosen-by-client",
    ];
    let r = raw_get(untrusted.addr, "/x", &spoof);
    let seen = r.seen();
    assert_eq!(seen.all("x-forwarded-for"), vec!["127.0.0.1"]);
    assert_eq!(seen.header("x-forwarded-proto"), Some("http"));
    assert_eq!(
        seen.header("x-forwarded-host"),
        Some(untrusted.addr.to_string().as_str())
    );
    for h in ["forwarded", "x-real-ip", "x-original-url", "x-rewrite-url"] {
        assert!(
            seen.header(h).is_none(),
            "{h} from an untrusted client reached the upstream"
        );
    }
    let id = seen.header("x-request-id").unwrap();
    assert_ne!(id, "chosen-by-client");
    assert_eq!(id.len(), 32);
    assert_eq!(r.header("x-request-id").as_deref(), Some(id));

    let trusted = Gateway::start_with(
        &public_app(e),
        Opts {
            server_extra: "trusted_proxies = [\"127.0.0.0/8\"]".into(),
            ..Opts::default()
        },
    )
    .await;
    // Its X-Forwarded-Host must name the host the route is chosen on: another one is a
    // second account of the request (a proxy that does not set it passes the client's on).
    let r = raw_get(trusted.addr, "/x", &spoof);
    assert_eq!(r.status, 400, "{}", r.head);
    assert!(String::from_utf8_lossy(&r.body).contains("ambiguous_host"));
    let own_host = format!("X-Forwarded-Host: {}", trusted.addr);
    let mut spoof = spoof.to_vec();
    spoof[2] = &own_host;
    let seen = raw_get(trusted.addr, "/x", &spoof).seen();
    assert_eq!(
        seen.header("x-forwarded-for"),
        Some("203.0.113.9, 127.0.0.1")
    );
    assert_eq!(seen.header("x-forwarded-proto"), Some("https"));
    assert_eq!(
        seen.header("x-forwarded-host"),
        Some(trusted.addr.to_string().as_str())
    );
    assert_eq!(seen.header("x-request-id"), Some("chosen-by-client"));
    // The client address it names is the gateway's reading too; what restates the request
    // (a URL, a method, `Forwarded`) does not go on even from a trusted proxy: the gateway
    // decided on the request line.
    assert_eq!(seen.header("x-real-ip"), Some("203.0.113.9"));
    for h in ["forwarded", "x-original-url", "x-rewrite-url"] {
        assert!(seen.header(h).is_none(), "{h} went upstream");
    }
    // Trust never extends to identity headers.
    let seen = raw_get(trusted.addr, "/x", FORGED).seen();
    assert_clean(&seen);
}
