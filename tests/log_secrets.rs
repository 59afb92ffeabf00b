//! No secret in any log line, at any level: the real binary at `RUST_LOG=trace` (JSON once,
//! text once) in front of the real test provider runs a login, requests with the session
//! cookie, a `pass_access_token` route, a background token refresh, a bearer call, a failed
//! callback carrying a code and state, a query with `access_token=`, and a logout; then none
//! of the secrets it handled may appear in anything the gateway wrote to stdout or stderr.
//!
//! The provider traffic goes through a recording forward proxy in this test (`HTTP_PROXY`,
//! honoured by the gateway's provider client), so the test knows every secret the gateway
//! saw: the authorization codes, the client credentials and every access, refresh and ID
//! token the provider issued, refreshed ones included.

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use common::{
    auth_config, client, echo, eventually, http_login, set_cookies, Gateway, Idp, Opts, Seen,
    ANY_PORT, SESSION_SECRET,
};

/// Requests and responses that went through [`recording_proxy`], as text.
type Exchanges = Arc<Mutex<Vec<(String, String)>>>;

/// A plain-HTTP forward proxy (absolute-form requests, one exchange per connection) that
/// keeps a copy of everything it relays.
async fn recording_proxy() -> (SocketAddr, Exchanges) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let seen: Exchanges = Arc::default();
    let log = seen.clone();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            tokio::spawn(relay(s, log.clone()));
        }
    });
    (addr, seen)
}

async fn relay(mut c: TcpStream, seen: Exchanges) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16384];
    let head_end = loop {
        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break p + 4;
        }
        match c.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let len: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
        .unwrap_or(0);
    while buf.len() < head_end + len {
        match c.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    let mut lines = head.split("\r\n");
    let request_line = lines.next().unwrap_or_default();
    let mut parts = request_line.split(' ');
    let (method, target) = (
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
    );
    let Ok(url) = url::Url::parse(target) else {
        let _ = c
            .write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
            .await;
        return;
    };
    let origin_form = match url.query() {
        Some(q) => format!("{}?{q}", url.path()),
        None => url.path().to_string(),
    };
    let mut out = format!("{method} {origin_form} HTTP/1.1\r\n");
    for l in lines.filter(|l| !l.is_empty()) {
        let name = l.split(':').next().unwrap_or_default().to_ascii_lowercase();
        if !matches!(
            name.as_str(),
            "connection" | "proxy-connection" | "keep-alive" | "proxy-authorization"
        ) {
            out.push_str(l);
            out.push_str("\r\n");
        }
    }
    out.push_str("Connection: close\r\n\r\n");
    let body = &buf[head_end..head_end + len];
    let host = url.host_str().unwrap_or_default();
    let port = url.port_or_known_default().unwrap_or(80);
    let Ok(mut up) = TcpStream::connect((host, port)).await else {
        let _ = c
            .write_all(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
            .await;
        return;
    };
    let mut request = out.into_bytes();
    request.extend_from_slice(body);
    if up.write_all(&request).await.is_err() {
        return;
    }
    let mut response = Vec::new();
    let _ = up.read_to_end(&mut response).await;
    let _ = c.write_all(&response).await;
    let _ = c.shutdown().await;
    seen.lock().unwrap().push((
        String::from_utf8_lossy(&request).into_owned(),
        String::from_utf8_lossy(&response).into_owned(),
    ));
}

/// The body of an HTTP message (everything after the head).
fn body_of(message: &str) -> &str {
    message.split_once("\r\n\r\n").map_or("", |(_, b)| b)
}

/// Every secret the provider exchanges carried: authorization codes and refresh tokens sent
/// to the token endpoint, the client's Basic credentials, and every token in the answers.
fn provider_secrets(seen: &Exchanges) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (req, resp) in seen.lock().unwrap().iter() {
        for (k, v) in url::form_urlencoded::parse(body_of(req).as_bytes()) {
            if matches!(&*k, "code" | "refresh_token" | "token" | "client_secret") {
                out.push((format!("{k} sent to the provider"), v.into_owned()));
            }
        }
        for l in req.lines() {
            if let Some((k, v)) = l.split_once(':') {
                if k.eq_ignore_ascii_case("authorization") {
                    let v = v.trim();
                    out.push(("client authorization header".into(), v.to_string()));
                    if let Some(b) = v.strip_prefix("Basic ") {
                        out.push(("client basic credentials".into(), b.to_string()));
                    }
                }
            }
        }
        // A chunked answer: the JSON is the longest line of the body.
        let body = body_of(resp);
        let json = body
            .lines()
            .max_by_key(|l| l.len())
            .and_then(|l| serde_json::from_str::<serde_json::Value>(l).ok());
        if let Some(v) = json {
            for k in ["access_token", "refresh_token", "id_token"] {
                if let Some(t) = v[k].as_str() {
                    out.push((format!("{k} from the provider"), t.to_string()));
                }
            }
        }
    }
    out
}

const ROUTES: &str = r#"
[[routes]]
id = "token"
path = "/token"
upstream = "app"
pass_access_token = true

[[routes]]
id = "api"
path = "/api"
upstream = "app"
bearer = true
audiences = ["urn:authgate:api"]
"#;

/// A user agent with the characters a log format must escape.
const USER_AGENT: &str = "log-test/1.0 (\"quoted\" \\ back)";

/// The access log line of the bearer call has every field, each value plain (an address, not
/// `Some(...)`), and the credentials nowhere (checked with every other secret).
fn access_line_fields(log: &str, format: &str, bytes_out: usize) {
    let line = log
        .lines()
        .find(|l| l.contains("authgate::access") && l.contains("/api/things"))
        .unwrap_or_else(|| panic!("no access line for the bearer call:\n{log}"));
    assert!(!line.contains("Some("), "{line}");
    assert!(
        !line.contains("page=2"),
        "the query is in the access log: {line}"
    );
    if format == "json" {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        assert!(v["timestamp"].is_string(), "{line}");
        assert_eq!(v["request_id"].as_str().unwrap().len(), 32, "{line}");
        assert_eq!(v["client"], "127.0.0.1", "{line}");
        assert_eq!(v["method"], "POST", "{line}");
        assert!(
            v["host"].as_str().unwrap().starts_with("127.0.0.1:"),
            "{line}"
        );
        assert_eq!(v["path"], "/api/things", "{line}");
        assert_eq!(v["status"], 200, "{line}");
        assert_eq!(v["route"], "api", "{line}");
        assert_eq!(v["upstream"], "app", "{line}");
        assert!(
            v["upstream_server"]
                .as_str()
                .unwrap()
                .starts_with("127.0.0.1:"),
            "{line}"
        );
        assert!(v["upstream_ms"].as_f64().unwrap() > 0.0, "{line}");
        assert!(
            v["duration_ms"].as_f64().unwrap() >= v["upstream_ms"].as_f64().unwrap(),
            "{line}"
        );
        assert_eq!(v["bytes_in"], 10, "{line}");
        assert_eq!(v["bytes_out"], bytes_out as u64, "{line}");
        assert!(v["user"].is_string(), "{line}");
        assert!(v["provider"].is_string(), "{line}");
        assert_eq!(v["user_agent"], USER_AGENT, "{line}");
        // Unknown values are absent, not placeholders.
        assert!(
            v.get("refusal").is_none() && v.get("error").is_none(),
            "{line}"
        );
    } else {
        for field in [
            "client=127.0.0.1 ",
            "method=\"POST\"",
            "path=\"/api/things\"",
            "status=200",
            "route=\"api\"",
            "upstream=\"app\"",
            "upstream_ms=",
            "duration_ms=",
            "bytes_in=10 ",
            &format!("bytes_out={bytes_out}"),
            "user=",
            "provider=",
            "user_agent=\"log-test/1.0 (\\\"quoted\\\" \\\\ back)\"",
        ] {
            assert!(line.contains(field), "no {field} in {line}");
        }
    }
    // A refused request names its refusal and no user.
    let refused = log
        .lines()
        .find(|l| {
            l.contains("authgate::access")
                && l.contains("/.authgate/callback")
                && (l.contains("status=400") || l.contains("\"status\":400"))
        })
        .unwrap_or_else(|| panic!("no access line for the failed callback:\n{log}"));
    assert!(refused.contains("refusal"), "{refused}");
    assert!(
        !refused.contains("user=") && !refused.contains("\"user\""),
        "{refused}"
    );
}

async fn no_secret_in_logs(format: &str) {
    let port = ANY_PORT;
    // Access tokens live 30 s and refresh_lead is 60 s: the first request after the login
    // starts a background refresh.
    let idp = Idp::start_with_env(0, true, &[port], &[("IDP_ACCESS_TOKEN_TTL", "30")]).await;
    let (proxy, exchanges) = recording_proxy().await;
    let e = echo().await;
    let session =
        format!("store = \"memory\"\nsecret = \"{SESSION_SECRET}\"\nrefresh_lead = \"60s\"");
    let mut env: Vec<(String, Option<String>)> = [
        "HTTPS_PROXY",
        "https_proxy",
        "http_proxy",
        "ALL_PROXY",
        "all_proxy",
        "NO_PROXY",
        "no_proxy",
        "REQUEST_METHOD",
    ]
    .iter()
    .map(|k| (k.to_string(), None))
    .collect();
    env.push(("RUST_LOG".into(), Some("trace".into())));
    env.push(("HTTP_PROXY".into(), Some(format!("http://{proxy}"))));
    let gw = Gateway::start_with(
        &format!("{}{ROUTES}", auth_config(&idp, e, &session)),
        Opts {
            port: Some(port),
            env,
            log_extra: format!("format = \"{format}\"\n"),
            ..Opts::default()
        },
    )
    .await;
    gw.wait_ready().await;

    let mut secrets: Vec<(String, String)> = vec![
        ("session.secret".into(), SESSION_SECRET.into()),
        ("client secret".into(), "authgate-secret".into()),
    ];

    // Login (authorization code, PKCE, state) and the session cookie.
    let (cookie, resp) = http_login(&gw, "/app/page?x=1").await;
    assert_eq!(resp.status(), 302);
    let cookie_value = cookie.split_once('=').unwrap().1.to_string();
    secrets.push(("session cookie".into(), cookie_value));

    // Requests with the cookie; the first one starts the background refresh.
    assert_eq!(gw.get_as("/app/page?q=1", &cookie).await.status(), 200);
    let refreshed = eventually(Duration::from_secs(10), || async {
        idp.stats().await["token"]["refresh_token"]
            .as_u64()
            .unwrap_or(0)
            >= 1
    })
    .await;
    assert!(refreshed, "no refresh at the provider:\n{}", gw.log());
    // The route that forwards the access token, after the refresh has been stored.
    let forwarded = eventually(Duration::from_secs(10), || async {
        gw.log().contains("session tokens refreshed")
    })
    .await;
    assert!(forwarded, "refresh never stored:\n{}", gw.log());
    let seen: Seen = gw.get_as("/token", &cookie).await.json().await.unwrap();
    let forwarded = seen.header("x-forwarded-access-token").unwrap().to_string();
    secrets.push(("forwarded access token".into(), forwarded));

    // A query string that carries a token, on a protected route.
    let leaky = "querytokenvalue0123456789abcdef";
    let r = gw
        .get_as(
            &format!("/app/x?access_token={leaky}&id_token_hint={leaky}"),
            &cookie,
        )
        .await;
    assert_eq!(r.status(), 200);
    secrets.push(("access_token in a query".into(), leaky.into()));

    // A bearer call.
    let bearer = idp.client_token("urn:authgate:api").await;
    let r = client()
        .post(gw.url("/api/things?page=2"))
        .header("accept", "application/json")
        .header("user-agent", USER_AGENT)
        .bearer_auth(&bearer)
        .body("0123456789")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let bytes_out = r.bytes().await.unwrap().len();
    secrets.push(("bearer token".into(), bearer));

    // A callback that fails (no transaction cookie), with a code and state of its own.
    let (code, state) = (
        "forgedcode0123456789abcdefXYZ",
        "forgedstate0123456789abcdefXYZ",
    );
    let r = client()
        .get(gw.url(&format!("/.authgate/callback?code={code}&state={state}")))
        .header("accept", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    secrets.push(("code of a failed callback".into(), code.into()));
    secrets.push(("state of a failed callback".into(), state.into()));

    // Logout: a same-origin POST; the page carries the ID token hint for the provider.
    let r = client()
        .post(gw.url("/.authgate/logout"))
        .header("cookie", &cookie)
        .header("origin", format!("http://{}", gw.addr))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(!set_cookies(&r).is_empty());
    let page = r.text().await.unwrap();
    let hint = page
        .split("name=\"id_token_hint\" value=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .expect("id_token_hint in the logout page")
        .to_string();
    secrets.push(("id_token_hint".into(), hint));
    assert_eq!(gw.get_as("/app", &cookie).await.status(), 401);

    let from_provider = provider_secrets(&exchanges);
    for kind in [
        "code sent to the provider",
        "refresh_token sent to the provider",
        "client basic credentials",
        "access_token from the provider",
        "refresh_token from the provider",
        "id_token from the provider",
    ] {
        assert!(
            from_provider.iter().any(|(k, _)| k == kind),
            "the recording proxy saw no {kind}: {:?}",
            exchanges.lock().unwrap()
        );
    }
    secrets.extend(from_provider);

    // Every line the gateway wrote, at trace level: our own debug lines are there...
    let log = gw.log();
    assert!(
        log.contains("session tokens refreshed"),
        "RUST_LOG=trace not in effect:\n{log}"
    );
    if format == "json" {
        for l in log.lines().filter(|l| l.starts_with('{')) {
            serde_json::from_str::<serde_json::Value>(l)
                .unwrap_or_else(|e| panic!("not JSON ({e}): {l}"));
        }
    }
    access_line_fields(&log, format, bytes_out);
    // ...and no secret, whole or (for JWTs) its signature.
    for (what, secret) in &secrets {
        assert!(
            secret.len() >= 12,
            "{what} too short to look for: {secret:?}"
        );
        let mut needles = vec![secret.as_str()];
        if let Some(sig) = secret.rsplit('.').next().filter(|s| s.len() >= 16) {
            needles.push(sig);
        }
        for needle in needles {
            if let Some(line) = log.lines().find(|l| l.contains(needle)) {
                panic!("the {what} is in the gateway's log (format {format}):\n{line}");
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_in_json_logs_at_trace() {
    no_secret_in_logs("json").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_in_text_logs_at_trace() {
    no_secret_in_logs("text").await;
}
